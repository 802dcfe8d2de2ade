"""The server's settings (what ``pressor serve`` hands each worker) and its configuration file, checked."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pressor.engine.audit.records import PATIENT_KEY_ENV  # the key of audit_patient: keyed-hash, unless a file is named
from pressor.engine.errors import InputError, Problem
from pressor.engine.evaluation.load import Document, load_document, loads_json
from pressor.engine.evaluation.validate import schema_problems

from .outbound import url_problem

#: Environment variable through which ``pressor serve`` hands its options to every worker.
SETTINGS_ENV = "PRESSOR_SERVE_SETTINGS"
DEFAULT_ALGORITHMS = ("ES384", "RS384")
CONFIG_SCHEMA = "serve-config.schema.json"
#: Prefetch keys without which nothing useful can be said: when they are neither prefetched
#: nor fetchable the call is answered 412 (the others stay unknown, and a card says so).
DEFAULT_REQUIRED = ("patient", "observations")


@dataclass(frozen=True)
class Settings:
    """What ``pressor serve`` passes to each worker (JSON in ``PRESSOR_SERVE_SETTINGS``)."""

    config_path: str | None = None
    rules_dir: str | None = None
    insecure: bool = False

    @classmethod
    def from_env(cls) -> "Settings":
        """The settings of this worker (defaults if the variable is unset)."""
        raw = os.environ.get(SETTINGS_ENV)
        return cls(**loads_json(raw, file=SETTINGS_ENV)) if raw else cls()

    def to_env(self) -> str:
        """JSON for ``PRESSOR_SERVE_SETTINGS``."""
        return json.dumps(self.__dict__)


@dataclass(frozen=True)
class Issuer:
    """A CDS Client trusted to call: its keys given in the config, its JWKS URL, the ``jku`` URLs it may name."""

    iss: str
    keys: dict[str, Any] = field(default_factory=dict)
    jwks_url: str | None = None
    jku: tuple[str, ...] = ()


@dataclass(frozen=True)
class JwksSettings:
    """How published key sets are fetched and cached."""

    cache_s: float = 300.0
    min_refetch_s: float = 30.0
    timeout_s: float = 5.0


@dataclass(frozen=True)
class FetchSettings:
    """Bounds on fetching what the prefetch did not carry from the caller's ``fhirServer``."""

    enabled: bool = True
    timeout_s: float = 10.0
    deadline_s: float = 20.0
    page_size: int = 100
    max_pages: int = 10
    max_page_bytes: int = 8_388_608
    required: tuple[str, ...] = DEFAULT_REQUIRED
    #: Base URLs allowed as fhirServer (scheme, host, port and the paths under its path, compared after
    #: normalisation: service/outbound.py); empty: any https URL (http to the loopback only).
    servers: tuple[str, ...] = ()


@dataclass(frozen=True)
class MetricsSettings:
    """``GET /metrics`` (Prometheus): off unless enabled; with ``bearer_token_env`` only for that token."""

    enabled: bool = False
    bearer_token_env: str | None = None


@dataclass(frozen=True)
class RepeatWindowSettings:
    """``repeat_window``: an unchanged plan card is not shown again to the same patient within it (service/repeats.py)."""

    enabled: bool = True
    critical_s: float = 3600.0
    others_s: float = 14400.0
    max_entries: int = 100_000


@dataclass
class Config:
    """The server configuration file, checked."""

    base_url: str | None = None
    issuers: dict[str, Issuer] = field(default_factory=dict)
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    max_token_lifetime_s: int = 600
    clock_skew_s: int = 60
    max_body_bytes: int = 1_048_576
    #: Seconds a connection may stay open without sending a request (before its first one, and between them).
    idle_timeout_s: float = 10.0
    audit_db: str | None = None
    #: Where accepted token ids are kept: None (this process), a postgresql:// URL or a SQLite file (shared).
    replay_cache: str | None = None
    audit_input: str = "full"
    #: What a record keeps of the patient: "reference", "keyed-hash" (with audit_patient_key) or "none".
    audit_patient: str = "reference"
    audit_patient_key: bytes | None = None
    require_audit: bool = False
    #: A call is answered only once its audit records are committed (always so with require_audit); false: the
    #: answer does not wait for the commit, says "recorded": "queued", and a crash may lose those records.
    audit_wait: bool = True
    fhir_mapping: str | None = None
    lookback_hours: dict[str, float] = field(default_factory=dict)
    include_draft: bool = False
    profile: str | None = None  # a site profile file for the pack's parameters
    jwks: JwksSettings = field(default_factory=JwksSettings)
    fhir_fetch: FetchSettings = field(default_factory=FetchSettings)
    cors_origins: tuple[str, ...] = ()
    log_file: str | None = None
    openapi: bool = True
    ui_base_url: str | None = None
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    repeat_window: RepeatWindowSettings = field(default_factory=RepeatWindowSettings)


def load_config(path: str | None) -> Config:
    """Read and check the configuration file (YAML or JSON); every problem is reported, with its line."""
    if path is None:
        return Config()
    doc = load_document(path)
    if not isinstance(doc.data, dict):
        raise InputError.single("the configuration must be a mapping", file=doc.file)
    problems = schema_problems(doc, CONFIG_SCHEMA)
    if problems:
        raise InputError(problems)
    data = doc.data
    issuers: dict[str, Issuer] = {}
    for i, item in enumerate(data.get("issuers", [])):
        keys: dict[str, Any] = {}
        for j, spec in enumerate(item.get("keys", [])):
            key, kid = _public_key(spec, doc, f"/issuers/{i}/keys/{j}")
            keys[kid] = key
        urls = [("jwks_url", item["jwks_url"])] if "jwks_url" in item else []
        urls += [(f"jku/{j}", url) for j, url in enumerate(item.get("jku", ()))]
        for where, url in urls:
            problem = url_problem(url)
            if problem:
                raise InputError([Problem(f"{problem}: key sets are fetched over https only", **doc.where(f"/issuers/{i}/{where}"),
                                          suggestion="give the key set's https URL (plain http is for 127.0.0.1/localhost)")])
        if item["iss"] in issuers:
            raise InputError([Problem(f"issuer {item['iss']!r} is listed twice", **doc.where(f"/issuers/{i}/iss"))])
        issuers[item["iss"]] = Issuer(item["iss"], keys, item.get("jwks_url"), tuple(item.get("jku", ())))
    here = Path(doc.file).parent

    def beside(value: str | None) -> str | None:
        """A relative file path in the configuration is relative to the configuration file (URLs unchanged)."""
        if value is None or "://" in value or Path(value).is_absolute():
            return value
        return str(here / value)

    base = data.get("base_url")
    ui = data.get("ui_base_url")
    fetch = data.get("fhir_fetch", {})
    for j, server in enumerate(fetch.get("servers", ())):
        problem = url_problem(server)
        if problem:
            raise InputError([Problem(f"{problem}: a FHIR server the service may fetch from", **doc.where(f"/fhir_fetch/servers/{j}"),
                                      suggestion="give the server's https base URL, e.g. https://ehr.example.org/fhir")])
    fetch_settings: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in fetch.items()}
    return Config(
        base_url=base.rstrip("/") if base else None, issuers=issuers,
        algorithms=tuple(data.get("algorithms", DEFAULT_ALGORITHMS)),
        max_token_lifetime_s=data.get("max_token_lifetime_s", 600), clock_skew_s=data.get("clock_skew_s", 60),
        max_body_bytes=data.get("max_body_bytes", 1_048_576), idle_timeout_s=data.get("idle_timeout_s", 10.0), audit_db=beside(data.get("audit_db")), replay_cache=beside(data.get("replay_cache")),
        audit_input=data.get("audit_input", "full"), require_audit=data.get("require_audit", False),
        audit_wait=data.get("audit_wait", True),
        audit_patient=data.get("audit_patient", "reference"),
        audit_patient_key=_patient_key(data, beside(data.get("audit_patient_key_file")), doc),
        fhir_mapping=beside(data.get("fhir_mapping")), lookback_hours=dict(data.get("lookback_hours", {})),
        include_draft=data.get("include_draft", False), profile=beside(data.get("profile")),
        jwks=JwksSettings(**data.get("jwks", {})),
        fhir_fetch=FetchSettings(**fetch_settings),
        cors_origins=tuple(data.get("cors_origins", ())), log_file=beside(data.get("log_file")),
        openapi=data.get("openapi", True), ui_base_url=ui.rstrip("/") if ui else None,
        metrics=MetricsSettings(**data.get("metrics", {})),
        repeat_window=RepeatWindowSettings(**data.get("repeat_window", {})),
    )




def _patient_key(data: dict[str, Any], key_file: str | None, doc: Document) -> bytes | None:
    """The key of ``audit_patient: keyed-hash`` (at least 16 bytes), from its file or the environment; refused if absent."""
    if data.get("audit_patient") != "keyed-hash":
        return None
    try:
        key = Path(key_file).read_bytes().strip() if key_file else os.environ.get(PATIENT_KEY_ENV, "").encode()
    except OSError as exc:
        raise InputError([Problem(f"cannot read the patient key file: {exc.strerror or exc}",
                                  **doc.where("/audit_patient_key_file"))]) from exc
    if len(key) < 16:
        raise InputError([Problem(f"audit_patient: keyed-hash needs a key of at least 16 bytes (in {key_file or '$' + PATIENT_KEY_ENV})",
                                  **doc.where("/audit_patient"), suggestion="e.g. openssl rand -hex 32")])
    return key


def _public_key(spec: dict[str, Any], doc: Document, pointer: str) -> tuple[Any, str]:
    import jwt
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        if "pem" in spec:
            key = load_pem_public_key(spec["pem"].encode("ascii"))
            kid = spec.get("kid")
        else:
            jwk = jwt.PyJWK(spec["jwk"])
            key, kid = jwk.key, spec.get("kid") or spec["jwk"].get("kid")
    except (ValueError, TypeError, jwt.PyJWTError) as exc:
        raise InputError([Problem(f"unreadable public key: {exc}", **doc.where(pointer))]) from exc
    if not kid:
        raise InputError([Problem("a key needs a 'kid' (tokens name their key with it)", **doc.where(pointer))])
    if not hasattr(key, "public_numbers") or hasattr(key, "private_bytes"):
        raise InputError([Problem("give the issuer's public key (RSA or EC) only", **doc.where(pointer))])
    return key, kid
