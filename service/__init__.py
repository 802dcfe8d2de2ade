"""The CDS Hooks 2.0 service: FastAPI app, cards, authentication. `pressor serve` is its thin CLI wrapper."""
