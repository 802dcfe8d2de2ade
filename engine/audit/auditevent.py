"""An audit record as a FHIR R4 AuditEvent, for a hospital's audit repository (``audit export --format
fhir-auditevent``: one AuditEvent a line, NDJSON).

Each record becomes an ``execute`` event of the decision-support application: the clinician who asked
(``user``) as the requesting human agent, pressor as the source, the patient (a ``Patient/...``
reference, or the keyed hash as an identifier) and the record itself as entities; the record's id,
hash, chain link, pack and the rules that fired are entity details, so that an event can be traced back
to the record ``pressor audit verify`` vouches for. No input and no Result are copied into it.
"""
from __future__ import annotations

from typing import Any

from .records import AuditRecord

RECORD_SYSTEM = "urn:pressor:audit-record"
EVENT_TYPE = {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110100", "display": "Application Activity"}
EVENT_SUBTYPE = {"system": "urn:pressor:audit-event", "code": "evaluation", "display": "Protocol evaluation (decision support)"}


def audit_event(record: AuditRecord, database_id: str) -> dict[str, Any]:
    """The AuditEvent of one record (R4: type, recorded, agent with requestor, source.observer, entity)."""
    user = record.user
    clinician, _, via = user.partition(" via ")
    who: dict[str, Any] = ({"reference": clinician} if clinician.split("/")[0] in ("Practitioner", "PractitionerRole",
                                                                                      "Patient", "RelatedPerson")
                           and clinician.count("/") == 1 else {"identifier": {"value": clinician}})
    agents = [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/extra-security-role-type",
                                    "code": "humanuser", "display": "human user"}]},
               "who": who, "requestor": True}]
    if via:
        agents.append({"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/extra-security-role-type",
                                            "code": "dataprocessor", "display": "data processor"}]},
                       "who": {"identifier": {"value": via}}, "requestor": False,
                       "name": "the CDS Hooks client that called"})
    fired = [f"{r}" for r in record.fired()]
    details = [("record_id", record.id), ("seq", str(record.seq)), ("record_hash", record.record_hash),
               ("prev_hash", record.prev_hash), ("database_id", database_id),
               ("pack", f"{record.pack_name} {record.pack_version} sha256:{record.pack_sha256}"),
               ("engine_version", record.engine_version), ("input_sha256", record.input_sha256),
               ("rules_fired", ", ".join(fired) or "none")]
    if record.hook_instance:
        details.append(("hookInstance", record.hook_instance))
    entities: list[dict[str, Any]] = []
    if record.patient:
        what = ({"reference": record.patient} if record.patient.startswith("Patient/")
                else {"identifier": {"system": "urn:pressor:patient-keyed-hash", "value": record.patient}})
        entities.append({"what": what,
                         "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1", "display": "Person"},
                         "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1", "display": "Patient"}})
    entities.append({"what": {"identifier": {"system": RECORD_SYSTEM, "value": record.id}},
                     "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2",
                              "display": "System Object"},
                     "description": f"pressor audit record #{record.seq}: {len(fired)} recommendation(s)",
                     "detail": [{"type": k, "valueString": v} for k, v in details]})
    return {
        "resourceType": "AuditEvent",
        "id": record.id,
        "type": EVENT_TYPE,
        "subtype": [EVENT_SUBTYPE],
        "action": "E",
        "recorded": record.recorded_at,
        "outcome": "0",
        "agent": agents,
        "source": {"observer": {"display": f"pressor {record.engine_version}"},
                   "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4",
                             "display": "Application Server"}]},
        "entity": entities,
    }
