"""Reading FHIR input: bounded parsing, located resources, shape checks, and one patient.

Every resource pressor reads is checked against ``schemas/fhir-read.schema.json`` (the subset of
R4 it reads) before use. A resource that does not fit is *rejected*: never read, its facts left
unknown, with a note naming it and the JSON pointer of the offending element. A resource about
another patient is an error (never used); so are two Patients in one input.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import InputError, Problem
from ..evaluation.load import Document, escape_pointer_token, load_document
from ..evaluation.validate import schema

READ_SCHEMA = "fhir-read.schema.json"
#: Resource types whose content pressor reads (others are skipped unread).
READ_TYPES = ("Patient", "Observation", "Condition", "MedicationAdministration", "MedicationRequest",
              "Medication", "Procedure", "Device", "OperationOutcome")
#: Resource types that must be about the one patient, and the element naming it.
SUBJECT_OF = {"Observation": "subject", "Condition": "subject", "MedicationAdministration": "subject",
              "MedicationRequest": "subject", "Procedure": "subject", "Device": "patient"}


class FhirError(InputError):
    """A FHIR input that cannot be turned into a patient state (not a bundle, another patient's data)."""

    kind = "fhir_error"


def read_bundle(path: str | Path, *, max_bytes: int) -> Document:
    """Read a FHIR JSON file (``-`` is stdin) under its own size limit; no line map (bundles are large)."""
    return load_document(path, max_bytes=max_bytes, what="FHIR bundle", positions=False)


@dataclass(frozen=True)
class Located:
    """A resource, the JSON pointer to it, and the ``fullUrl`` of its entry (if any)."""

    resource: dict[str, Any]
    pointer: str
    full_url: str | None = None

    @property
    def type(self) -> str:
        """``resourceType``."""
        return self.resource["resourceType"]

    @property
    def label(self) -> str:
        """``Observation/bp-1`` (or the type alone when it has no usable id)."""
        rid = self.resource.get("id")
        return f"{self.type}/{rid}" if isinstance(rid, str) and rid else f"{self.type} (no id)"

    def where(self, sub: str = "") -> str:
        """``Observation/bp-1 at /entry/2/resource/valueQuantity``."""
        return f"{self.label} at {self.pointer}{sub}"


@dataclass
class Sources:
    """What the input holds, which parts are complete, and what was rejected."""

    resources: list[Located] = field(default_factory=list)
    orders: list[Located] = field(default_factory=list)
    conditions_complete: bool = True
    medications_complete: bool = True
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rejected: list[tuple[Located, str, str]] = field(default_factory=list)
    patient_id: str | None = None
    patient_urls: set[str] = field(default_factory=set)
    #: The FHIR server's base (normalised): an absolute reference is this patient's only under it.
    base: str | None = None
    stale: dict[str, list[str]] = field(default_factory=dict)


@lru_cache(maxsize=1)
def _validators() -> dict[str, Callable[[Any], Any]]:
    import fastjsonschema

    defs = schema(READ_SCHEMA)["$defs"]
    return {t: fastjsonschema.compile({"$defs": defs, "$ref": f"#/$defs/{t}"}) for t in READ_TYPES}


def shape_problem(resource: dict[str, Any]) -> tuple[str, str] | None:
    """(JSON pointer within the resource, message) if the resource does not fit the read subset, else None."""
    import fastjsonschema

    check = _validators().get(resource["resourceType"])
    if check is None:
        return None
    try:
        check(resource)
    except fastjsonschema.JsonSchemaValueException as exc:
        parts = list(exc.path[1:]) if exc.path else []
        pointer = "".join("/" + escape_pointer_token(p) for p in parts)
        return pointer, exc.message.replace("data.", "").replace("data ", "")
    return None


def entries(container: Any, pointer: str, src: Sources, problems: list[Problem], file: str, what: str) -> Iterator[Located]:
    """Resources of a Bundle (recursively) or a single resource, located; an incomplete result is noted."""
    if not isinstance(container, dict) or not isinstance(container.get("resourceType"), str):
        problems.append(Problem("expected a FHIR resource (an object with resourceType)", file=file, pointer=pointer))
        return
    if container["resourceType"] == "OperationOutcome":
        src.notes.append(f"{what} at {pointer or '/'} is an OperationOutcome, not a result: read as not supplied")
        src.missing.append(what)
        return
    if container["resourceType"] != "Bundle":
        yield Located(container, pointer)
        return
    entry_list, links = container.get("entry", []), container.get("link", [])
    if not isinstance(entry_list, list) or not all(isinstance(e, dict) for e in entry_list):
        problems.append(Problem("Bundle.entry must be an array of objects", file=file, pointer=f"{pointer}/entry"))
        return
    if not isinstance(links, list) or not all(isinstance(link, dict) for link in links):
        problems.append(Problem("Bundle.link must be an array of objects", file=file, pointer=f"{pointer}/link"))
        return
    for link in links:
        if link.get("relation") == "next":
            src.notes.append(f"{what} at {pointer or '/'} is one page of a paginated result (a 'next' link): "
                             "read as incomplete")
            src.missing.append(what)
            break
    for i, entry in enumerate(entry_list):
        res = entry.get("resource")
        ptr = f"{pointer}/entry/{i}/resource"
        if not isinstance(res, dict) or not isinstance(res.get("resourceType"), str):
            problems.append(Problem("entry has no resource with a resourceType", file=file, pointer=f"{pointer}/entry/{i}"))
            continue
        if res["resourceType"] == "Bundle":
            yield from entries(res, ptr, src, problems, file, what)
        else:
            url = entry.get("fullUrl")
            yield Located(res, ptr, url if isinstance(url, str) else None)


def admit(loc: Located, src: Sources, problems: list[Problem], file: str,
          relevant: Callable[[Located, Sources], bool] | None = None) -> bool:
    """Shape-check one resource and check its subject; True if it may be read.

    ``relevant`` (a cheap, shape-tolerant look at codes and time) skips what would never be read,
    such as observations of codes the mapping does not know or older than every look-back window.
    """
    if loc.type not in READ_TYPES:
        return False
    if relevant is not None and not relevant(loc, src):
        return False
    bad = shape_problem(loc.resource)
    if bad is not None:
        src.rejected.append((loc, loc.pointer + bad[0], bad[1]))
        return False
    key = SUBJECT_OF.get(loc.type)
    if key is not None and src.patient_id is not None:
        ref = (loc.resource.get(key) or {}).get("reference")
        if ref is None:
            src.notes.append(f"{loc.label} names no patient ({key}); not used")
            return False
        if not _is_patient(ref, src):
            problems.append(Problem(f"{loc.label} is about {ref}, not this patient (Patient/{src.patient_id}); refused",
                                    file=file, pointer=f"{loc.pointer}/{key}/reference",
                                    suggestion="send one patient's record only: every resource's subject must be its Patient"))
            return False
    return True


def _is_patient(ref: str, src: Sources) -> bool:
    """Whether ``ref`` names the one patient: a URL the input gave it (``fullUrl``), ``Patient/{id}``, or an
    absolute ``{base}/Patient/{id}`` on the FHIR server the record came from. Another server's URL with
    the same id is another patient (issue 24)."""
    if ref in src.patient_urls:
        return True
    bare = ref.split("/_history")[0].rstrip("/")
    if bare in src.patient_urls:
        return True
    if ":" in bare.split("/")[0]:  # absolute (http:, https:, urn:)
        if src.base is None or src.patient_id is None:
            return False
        head, _, tail = bare.rpartition("/Patient/")
        return tail == src.patient_id and normal_base(head) == src.base
    return bare == f"Patient/{src.patient_id}"


def normal_base(url: str) -> str | None:
    """A FHIR server base compared as scheme, host, port and path: case of scheme and host, a default port and
    a trailing slash do not matter; userinfo, a query, a fragment or a dot segment make it no base (None)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname or "@" in parts.netloc \
            or parts.query or parts.fragment:
        return None
    path = parts.path.rstrip("/")
    if any(seg in (".", "..") or seg.lower() in ("%2e", "%2e%2e", ".%2e", "%2e.") for seg in path.split("/")):
        return None
    scheme = parts.scheme.lower()
    default = {"http": 80, "https": 443}[scheme]
    host = parts.hostname.lower()
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != default:
        netloc += f":{port}"
    return f"{scheme}://{netloc}{path}"


def identify_patient(candidates: list[Located], src: Sources, problems: list[Problem], file: str,
                     context_id: str | None = None) -> Located | None:
    """The one Patient: two (with different identities) are an error; ``context_id`` must agree."""
    if context_id is not None:
        src.patient_id = context_id
        src.patient_urls.add(f"Patient/{context_id}")
    distinct: dict[Any, Any] = {}
    for loc in candidates:
        rid = loc.resource.get("id")
        distinct.setdefault(rid if isinstance(rid, str) else id(loc), loc)
    if len(distinct) > 1:
        problems.append(Problem(f"{len(distinct)} Patient resources ({', '.join(l.label for l in distinct.values())}); "
                                "one record is one patient", file=file, pointer=candidates[1].pointer,
                                suggestion="send one patient's record"))
        return None
    if not candidates:
        return None
    loc = candidates[0]
    rid = loc.resource.get("id")
    if not isinstance(rid, str) or not rid:
        # Without an id nothing ties the subjects of the other resources, nor context.patientId, to it: its
        # birth date would be another patient's as easily as this one's (issue 24).
        problems.append(Problem(f"{loc.label}: a Patient without an id cannot be tied to the record's other resources; "
                                "refused", file=file, pointer=f"{loc.pointer}/id",
                                suggestion="send the Patient as the FHIR server holds it, with its id"))
        return None
    if isinstance(rid, str):
        if context_id is not None and rid != context_id:
            problems.append(Problem(f"{loc.label} is not the patient of the call (context.patientId {context_id}); refused",
                                    file=file, pointer=f"{loc.pointer}/id"))
            return None
        src.patient_id = rid
        src.patient_urls.add(f"Patient/{rid}")
    if loc.full_url:
        src.patient_urls.add(loc.full_url)
        head, _, tail = loc.full_url.split("/_history")[0].rstrip("/").rpartition("/Patient/")
        if src.base is None and tail == src.patient_id:
            src.base = normal_base(head)
    return loc


def collect(located: list[Located], src: Sources, problems: list[Problem], file: str, *, context_id: str | None = None,
            orders: list[Located] | None = None, relevant: Callable[[Located, Sources], bool] | None = None) -> None:
    """Admit the input's resources into ``src`` (one patient; shape-checked); draft MedicationRequests become orders."""
    patients = [loc for loc in located if loc.type == "Patient"]
    patient = identify_patient(patients, src, problems, file, context_id)
    if src.patient_id is None:
        # No Patient and no context: the first subject named is the patient, and every other must agree.
        for loc in located:
            ref = (loc.resource.get(SUBJECT_OF.get(loc.type, "")) or {}) if loc.type in SUBJECT_OF else {}
            ref = ref.get("reference") if isinstance(ref, dict) else None
            if isinstance(ref, str):
                src.patient_urls.add(ref)
                tail = ref.split("/_history")[0].rstrip("/").split("/")
                src.patient_id = tail[-1]
                break
    for loc in located:
        if loc.type == "Patient":
            if loc is patient and admit(loc, src, problems, file):
                src.resources.append(loc)
            elif loc is patient:
                pass
            continue
        if not admit(loc, src, problems, file, relevant):
            continue
        if loc.type == "MedicationRequest" and loc.resource.get("status") == "draft" and orders is None:
            src.orders.append(loc)
        else:
            src.resources.append(loc)
    for loc in orders or []:
        if loc.type == "MedicationRequest" and admit(loc, src, problems, file):
            src.orders.append(loc)


def pointer_key(key: str) -> str:
    """A prefetch key as a JSON pointer token."""
    return escape_pointer_token(key)
