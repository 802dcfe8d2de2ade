"""Small readings of FHIR values shared by the converters: codings, times, numbers, ages, and the statuses
that decide whether a resource counts (:mod:`.convert` for the patient, :mod:`.medications` for infusions)."""
from __future__ import annotations

from datetime import date, datetime, timezone, tzinfo
from typing import Any

UCUM = "http://unitsofmeasure.org"
ACTIVE_CONDITION = {"active", "recurrence", "relapse"}
VOID = {"entered-in-error"}
ORDER_INTENTS = {"order", "original-order", "instance-order"}
STOPPED = {"stopped", "completed"}
UNUSABLE_OBS = {"cancelled", "entered-in-error"}


def codings(concept: Any) -> list[tuple[str, str]]:
    """(system, code) pairs of a shape-checked CodeableConcept."""
    if not isinstance(concept, dict):
        return []
    return [(c.get("system"), c.get("code")) for c in concept.get("coding") or []]


def parse_time(text: Any, zone: tzinfo = timezone.utc, zoneless: list[str] | None = None) -> datetime | None:
    """A FHIR date, dateTime or instant as an aware datetime (a date alone is midnight UTC); None if unreadable.

    FHIR requires a zone on a time; one without is read in ``zone`` (the site's) and appended to ``zoneless``."""
    if not isinstance(text, str):
        return None
    try:
        if len(text) == 10:
            d = date.fromisoformat(text)
            return datetime(d.year, d.month, d.day, tzinfo=timezone.utc)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo:
        return parsed
    if zoneless is not None:
        zoneless.append(text)
    return parsed.replace(tzinfo=zone)


def iso(t: datetime) -> str:
    """UTC ISO 8601 with Z."""
    return t.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def tidy(x: float) -> float | int:
    """Rounded to 6 places, an int when whole."""
    r = round(float(x) + 0.0, 6)
    return int(r) if r == int(r) else r


def age_years(birth: date, now: datetime) -> float:
    """Completed years; for children under 2, completed months as a fraction of a year."""
    today = now.astimezone(timezone.utc).date()
    years = today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))
    if years >= 2:
        return years
    months = (today.year - birth.year) * 12 + today.month - birth.month - (today.day < birth.day)
    return round(max(months, 0) / 12.0, 2)
