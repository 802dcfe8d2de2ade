"""The web app (``pressor ui``, ``pressor serve --ui``): clinician, informaticist and auditor views,
server-rendered from the engine's public functions; see :mod:`.app`."""
