"""The uuid a recommendation's CDS Hooks card gets: what clinicians' feedback names, and what links
that feedback back to the audit record of the call (which keeps ``hook_instance``).

It lives beside the audit log, not in the service, because ``pressor audit feedback`` recomputes it
from records alone."""
from __future__ import annotations

import uuid

#: Namespace of card and suggestion uuids: uuid5(hookInstance | rule | version | pack), so the
#: same call always yields the same ids and an auditor can recompute them.
CARD_NAMESPACE = uuid.UUID("7d0b8f0e-3c8a-4b8e-9a53-0f6f3c2e6b1d")


def stable_uuid(*parts: str) -> str:
    """A uuid5 under :data:`CARD_NAMESPACE` of ``parts`` joined by ``|``."""
    return str(uuid.uuid5(CARD_NAMESPACE, "|".join(parts)))


def card_uuid(hook_instance: str, rule_id: str, rule_version: str, pack_sha256: str) -> str:
    """The uuid of the card a recommendation becomes in one call; what feedback names, and
    what links it back to the audit record of that call (which keeps ``hook_instance``)."""
    return stable_uuid(hook_instance, rule_id, rule_version, pack_sha256)
