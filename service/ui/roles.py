"""Who may do what in the web app: four roles, where they come from, and which views each opens.

- **clinician**: the clinician view (advice for a patient) and recording it; the rule pages.
- **informaticist**: the clinician view (to try rules, without recording), rules, lint, coverage, diff.
- **auditor**: the audit views (records, verify, replay) and the only role that exports the log.
- **admin**: everything but the export (an export of patient data is an auditor's act, and logged as one).

Roles come from the ID token (``ui.roles.claim``, default ``roles``: a list or a space-separated
string, each value mapped through ``ui.roles.map`` or taken as it is when it names a role) and from a
local mapping by user (``ui.roles.users``: ``iss|sub`` or ``sub`` -> roles), the two together. A user
with none gets ``ui.roles.default`` (default: clinician). ``pressor ui`` (one local user, a one-time
link) and ``--insecure-no-auth`` give every role.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

ROLES = ("clinician", "informaticist", "auditor", "admin")
EVERY_ROLE = frozenset(ROLES)
PREFIX = "/ui"

#: (path prefix, roles allowed), the first match wins; a path under none of them is open to every role.
ACCESS: tuple[tuple[str, frozenset[str]], ...] = (
    (f"{PREFIX}/audit/export", frozenset({"auditor"})),
    (f"{PREFIX}/audit", frozenset({"auditor", "admin"})),
    (f"{PREFIX}/lint", frozenset({"informaticist", "admin"})),
    (f"{PREFIX}/coverage", frozenset({"informaticist", "admin"})),
    (f"{PREFIX}/diff", frozenset({"informaticist", "admin"})),
    (f"{PREFIX}/rules", EVERY_ROLE),
    (f"{PREFIX}/logout", EVERY_ROLE),
    (f"{PREFIX}/static", EVERY_ROLE),
    (f"{PREFIX}/launch", EVERY_ROLE),  # SMART launch: before any session
    (f"{PREFIX}/", frozenset({"clinician", "informaticist", "admin"})),  # the clinician view, advice, documents
)
#: Who may record advice in the audit log (an informaticist tries rules without recording).
RECORDERS = frozenset({"clinician", "admin"})


def allowed(path: str, roles: Iterable[str]) -> bool:
    """Whether a user with ``roles`` may open ``path``."""
    have = set(roles)
    for prefix, who in ACCESS:
        if path == prefix or path.startswith(prefix if prefix.endswith("/") else prefix + "/") or (
                prefix.endswith("/") and path == prefix.rstrip("/")):
            return bool(have & who)
    return True


@dataclass(frozen=True)
class RolePolicy:
    """``ui.roles`` of the configuration."""

    claim: str = "roles"
    map: Mapping[str, str] = field(default_factory=dict)
    users: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    default: tuple[str, ...] = ("clinician",)

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None) -> "RolePolicy":
        """From ``ui.roles`` (checked by the configuration schema)."""
        section = section or {}
        return cls(claim=section.get("claim", "roles"), map=dict(section.get("map", {})),
                   users={k: tuple(v) for k, v in (section.get("users") or {}).items()},
                   default=tuple(section.get("default", ("clinician",))))

    def roles_of(self, user: str, claims: Mapping[str, Any]) -> tuple[str, ...]:
        """The roles of ``user`` (``iss|sub``) signed in with ID token ``claims``."""
        raw = claims.get(self.claim)
        values = raw.split() if isinstance(raw, str) else [v for v in raw if isinstance(v, str)] if isinstance(raw, list) else []
        found = [self.map.get(v, v) for v in values]
        found += list(self.users.get(user, ())) + list(self.users.get(user.split("|", 1)[-1], ()))
        roles = tuple(r for r in ROLES if r in found)
        return roles or tuple(r for r in ROLES if r in self.default)
