"""What the web app holds for its whole life: the pack, the access policy, the audit log's path,
and the authoring reports (lint, scenario run, loaded comparison packs), computed once each."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from pressor.engine.errors import AuditError
from pressor.engine.model import RulePack

from .auth import Auth
from .forms import FormSpec


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Example:
    """One example patient shipped with pressor (package ``pressor.examples``)."""

    name: str
    kind: str  # "state" (YAML) | "fhir" (a FHIR R4 Bundle, JSON) | "timeline" (YAML with ``timeline:``)
    description: str
    text: str


def load_examples() -> tuple[Example, ...]:
    """The bundled examples: patient states (``*.yaml``), FHIR bundles (``fhir/*.json``), timelines (``timeline/*.yaml``)."""
    try:
        root = resources.files("pressor.examples")
    except ModuleNotFoundError:
        return ()
    out: list[Example] = []
    for kind, folder, suffix in (("state", root, ".yaml"), ("fhir", root / "fhir", ".json"),
                                 ("timeline", root / "timeline", ".yaml")):
        if not folder.is_dir():
            continue
        for item in sorted(folder.iterdir(), key=lambda p: p.name):
            if not item.name.endswith(suffix):
                continue
            text = item.read_text(encoding="utf-8")
            comment = " ".join(line.lstrip("# ").strip() for line in text.splitlines()
                               if line.startswith("#")) if suffix == ".yaml" else ""
            stem = item.name[: -len(suffix)]
            out.append(Example(stem if kind == "state" else f"{kind}/{stem}", kind, comment, text))
    return tuple(out)


@dataclass
class UiContext:
    """Everything the views need; one per app."""

    pack: RulePack
    auth: Auth
    audit_path: Path
    input_mode: str = "full"
    include_draft: bool = False
    compare_dirs: tuple[str, ...] = ()
    scenario_paths: tuple[str, ...] = ()
    clock: Callable[[], datetime] = _utc_now
    banner: str | None = None
    #: The app's outside URL (served behind a proxy: the config's base_url); None: as each request says.
    base_url: str | None = None
    #: SMART App Launch (``pressor serve --ui`` with ``ui.smart``): the launcher, and ``smart_record(tokens)``
    #: (async) reading the launched patient's record into ``(state, notes)``.
    smart: Any = None
    smart_record: Any = None
    #: Origins allowed to embed the app (``ui.frame_ancestors``: the EHR); none by default.
    frame_ancestors: tuple[str, ...] = ()
    form: FormSpec = field(default_factory=FormSpec)
    examples: tuple[Example, ...] = field(default_factory=load_examples)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def origin(self) -> str | None:
        """``scheme://host[:port]`` of :attr:`base_url`: what a browser sends as ``Origin``."""
        if not self.base_url:
            return None
        parts = urlsplit(self.base_url)
        return f"{parts.scheme}://{parts.netloc}"

    def _cached(self, key: str, make: Callable[[], Any]) -> Any:
        with self._lock:
            if key not in self._cache:
                self._cache[key] = make()
            return self._cache[key]

    def lint(self) -> Any:
        """The pack's lint report (computed on first use)."""
        from pressor.engine.authoring.lint import lint_pack

        return self._cached("lint", lambda: lint_pack(self.pack.directory))

    def fhir_mapping(self) -> Any:
        """The bundled FHIR mapping (loaded on first use)."""
        from pressor.engine.ehr.fhir import load_mapping

        return self._cached("fhir_mapping", load_mapping)

    def test_run(self) -> Any:
        """Every rule example and scenario file run against the pack, with coverage."""
        from pressor.engine.authoring.scenarios import example_scenarios, load_scenarios, run

        def make() -> Any:
            scenarios = example_scenarios(self.pack)
            paths = [p for p in self.scenario_paths if Path(p).exists()]
            if paths:
                scenarios += load_scenarios(paths, self.pack)
            return run(self.pack, scenarios, with_coverage=True)

        return self._cached("test_run", make)

    def example(self, name: str) -> Example | None:
        """The bundled example of this name."""
        return next((e for e in self.examples if e.name == name), None)

    # -- packs to compare -----------------------------------------------------
    def comparable_packs(self) -> list[tuple[str, str]]:
        """``(key, label)`` of every pack the diff view can compare: this one, the ``--compare``
        directories, and every pack stored in the audit log with each site profile records were made
        under it with (key ``stored:{pack sha}`` or ``stored:{pack sha}:{profile sha}``)."""
        from pressor.engine.audit import AuditLog

        out = [("current", f"{self.pack.name} {self.pack.version} (serving, {self.pack.sha256[:12]}"
                           f"{_profile_label(self.pack.profile.to_dict()) if self.pack.profile else ''})")]
        out += [(f"dir:{i}", f"{d}") for i, d in enumerate(self.compare_dirs)]
        try:
            with AuditLog.open(self.audit_path, create=False) as log:
                seen: dict[str, str] = {}
                for record in log.records():
                    # only a Result that names a profile is parsed: most records of a long log are not
                    profile = record.profile if '"profile"' in record.result_json else None
                    seen.setdefault(stored_key(record.pack_sha256, profile),
                                    f"{record.pack_name} {record.pack_version} (audit log, {record.pack_sha256[:12]}"
                                    f"{_profile_label(profile) if profile else ''})")
        except AuditError:
            seen = {}
        serving = stored_key(self.pack.sha256, self.pack.profile.to_dict() if self.pack.profile else None)
        out += [(key, label) for key, label in seen.items() if key != serving]
        return out

    def pack_by_key(self, key: str) -> RulePack:
        """Load (once) the pack a :meth:`comparable_packs` key names. KeyError for an unknown key."""
        from pressor.engine.evaluation.pack import load_pack

        if key == "current":
            return self.pack
        if key.startswith("dir:"):
            index = int(key[4:]) if key[4:].isdigit() else -1
            if not 0 <= index < len(self.compare_dirs):
                raise KeyError(key)
            return self._cached(key, lambda: load_pack(self.compare_dirs[index]))
        if key.startswith("stored:"):
            pack_sha, _, profile_sha = key[7:].partition(":")
            if not _is_sha256(pack_sha) or (profile_sha and not _is_sha256(profile_sha)):
                raise KeyError(key)
            return self._cached(key, lambda: self._stored_pack(pack_sha, profile_sha or None))
        raise KeyError(key)

    def _stored_pack(self, pack_sha: str, profile_sha: str | None) -> RulePack:
        from pressor.engine.audit import AuditLog

        with AuditLog.open(self.audit_path, create=False) as log:
            return log.stored_pack_under(pack_sha, profile_sha)


def stored_key(pack_sha: str, profile: dict[str, Any] | None) -> str:
    """The diff view's key of a stored pack with the site profile a record names (None: no profile)."""
    return f"stored:{pack_sha}" + (f":{profile['sha256']}" if profile else "")


def _profile_label(profile: dict[str, Any]) -> str:
    return f", site profile {profile.get('name')} {profile['sha256'][:12]}"


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)
