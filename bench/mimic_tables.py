"""The MIMIC-IV demo's tables as bench/mimic_hourly.py reads them: look-back windows, item ids, physiological
limits, and readers for the CSV files (see that script's docstring for what each fact is made of)."""
from __future__ import annotations

import bisect
import csv
import gzip
import math
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

# --- Look-back windows and limits (a value older than its window is not "current") --------------
VITALS_LOOKBACK = timedelta(hours=2)          # MAP, SBP/DBP, heart rate: charted at most 2 h before t
ARTERIAL_LINE_LOOKBACK = timedelta(hours=2)   # an arterial pressure this recent implies the catheter
LACTATE_LOOKBACK = timedelta(hours=6)         # lactate drawn at most 6 h before t (and resulted by t)
LACTATE_PREVIOUS_LOOKBACK = timedelta(hours=24)  # the previous lactate, for lactate_rising
URINE_LOOKBACK = timedelta(hours=2)           # the latest urine charting at most 2 h before t
URINE_MAX_INTERVAL = timedelta(hours=4)       # ...covering at most 4 h since the previous charting
WEIGHT_OMR_MAX_AGE = timedelta(days=180)      # an outpatient (omr) weight older than this is stale
HEIGHT_MAX_AGE = timedelta(days=365)          # a height older than this is stale (rules/mimic/mapping.yaml: 8760 h)
PAUSE_MAX = timedelta(days=7)                 # norepinephrine_paused_minutes: the schema's 10080 minutes at most
RECOGNITION_MAX = timedelta(days=30)          # hours_since_recognition: the schema's 720 h at most
VASOPRESSOR_EPISODE_GAP = timedelta(hours=1)  # infusion gaps up to this are one vasopressor episode
HOUR = timedelta(hours=1)

# --- Item ids ------------------------------------------------------------------------------------
HEART_RATE = 220045
ART = {"map": 220052, "sbp": 220050, "dbp": 220051}      # arterial line
ART2 = {"map": 225312, "sbp": 225309, "dbp": 225310}     # second arterial line ("ART BP")
NIBP = {"map": 220181, "sbp": 220179, "dbp": 220180}     # non-invasive
BP_SOURCES = {"arterial": ART, "arterial2": ART2, "nibp": NIBP}
BP_ITEM = {item: (source, key) for source, items in BP_SOURCES.items() for key, item in items.items()}
ARTERIAL_ITEMS = set(ART.values()) | set(ART2.values())
WEIGHT_CHART = {226512, 224639}                          # admission weight, daily weight (kg)
HEIGHT_CHART = {226730: 1.0, 226707: 2.54}               # Height (cm); Height (inches, x 2.54); cm preferred
HEIGHT_OMR = ("Height (Inches)", 2.54)                   # hosp/omr, dated only
LACTATE = 50813
# Urine output as in mimic-code's urine_output concept; 227488 (GU irrigant in) counts negative.
URINE_ITEMS = {226559, 226560, 226561, 226584, 226563, 226564, 226565, 226567, 226557, 226558, 227489}
URINE_NEGATIVE = {227488}
# NaCl 0.9% and Lactated Ringer's (225158, 225828), their retired "Saline 0,9%" and "Ringers
# Lactate" items (220954, 220955), and the OR / PACU crystalloid totals charted on arrival in the ICU
# (226364, 226375: crystalloid of unnamed type, counted at their charted time); only rows where the
# fluid is the order's main parameter (not a drug's diluent).
CRYSTALLOID_ITEMS = {225158, 225828, 220954, 220955, 226364, 226375}
DRUGS = {  # itemid -> (state key, unit the schema wants)
    221906: ("norepinephrine_mcg_kg_min", "mcg/kg/min"),
    222315: ("vasopressin_units_min", "units/min"),
    221289: ("epinephrine_mcg_kg_min", "mcg/kg/min"),
    221749: ("phenylephrine_mcg_kg_min", "mcg/kg/min"),
    221662: ("dopamine_mcg_kg_min", "mcg/kg/min"),
    221653: ("dobutamine_mcg_kg_min", "mcg/kg/min"),
}
VASOPRESSOR_EPISODE_DRUGS = {221906, 221289, 222315}  # as the schema defines vasopressor_hours
# The bag in use (while its row runs): the drug in the bag over the volume of the solution row that shares
# its orderid ("Mixed solution"), both as `originalamount`, what the bag held when the row started.
BAGS = {  # itemid -> (state key, unit); dopamine has no bag fact in the schema
    221906: ("norepinephrine_concentration_mcg_ml", "mcg/mL"),
    222315: ("vasopressin_concentration_units_ml", "units/mL"),
    221289: ("epinephrine_concentration_mcg_ml", "mcg/mL"),
    221749: ("phenylephrine_concentration_mcg_ml", "mcg/mL"),
    221653: ("dobutamine_concentration_mcg_ml", "mcg/mL"),
}
BAG_SOLUTION = "Mixed solution"
NOREPINEPHRINE = 221906
# Shock recognised: the first start of any of these in the stay (a floor; see rules/mimic/mapping.yaml).
RECOGNITION_DRUGS = {221906, 221289, 222315, 221749, 221662}
LINES = {  # procedureevents item -> access fact
    224263: "central_venous",   # Multi Lumen
    224264: "central_venous",   # PICC Line
    224267: "central_venous",   # Cordis/Introducer
    224268: "central_venous",   # Trauma line
    224560: "central_venous",   # PA Catheter
    224269: "central_venous",   # CCO PAC
    229532: "central_venous",   # Indwelling Port
    225202: "central_venous",   # Indwelling Port (PortaCath)
    225752: "arterial_line",    # Arterial Line
    228286: "intraosseous",     # Intraosseous Device
}
HYPERTENSION_ICD9 = ("401", "402", "403", "404", "405")
HYPERTENSION_ICD10 = ("I10", "I11", "I12", "I13", "I15")  # I14 does not exist
SEPTIC_SHOCK = {("9", "78552"), ("10", "R6521")}

# Physiological limits (the schema's ranges, narrowed where a value inside them is impossible).
LIMITS = {
    "map_mmhg": (10, 250), "sbp_mmhg": (20, 300), "dbp_mmhg": (5, 200), "heart_rate_bpm": (10, 300),
    "weight_kg": (20, 350),  # MIMIC-IV has adults only: below 20 kg is a charting error
    "height_cm": (120, 230),  # adults only: the demo's 61 and 70 cm are charting errors
    "lactate_mmol_l": (0, 40), "urine_output_ml_kg_h": (0, 50), "crystalloid_ml_kg": (0, 500),
    "norepinephrine_mcg_kg_min": (0, 10), "vasopressin_units_min": (0, 1), "epinephrine_mcg_kg_min": (0, 10),
    "dobutamine_mcg_kg_min": (0, 40), "dopamine_mcg_kg_min": (0, 50), "phenylephrine_mcg_kg_min": (0, 20),
    "vasopressor_hours": (0, 2160), "age_years": (0, 120),
    "norepinephrine_concentration_mcg_ml": (1, 1000), "vasopressin_concentration_units_ml": (0.01, 2),
    "epinephrine_concentration_mcg_ml": (1, 1000), "phenylephrine_concentration_mcg_ml": (1, 1000),
    "dobutamine_concentration_mcg_ml": (100, 10000),
}


# --- Reading -------------------------------------------------------------------------------------
def table_path(demo: Path, name: str) -> Path | None:
    for suffix in (".csv.gz", ".csv"):
        path = demo / f"{name}{suffix}"
        if path.exists():
            return path
    return None


def rows(demo: Path, name: str, required: bool = True) -> Iterator[dict[str, str]]:
    path = table_path(demo, name)
    if path is None:
        if required:
            raise SystemExit(f"error: {demo}/{name}.csv.gz not found (is {demo} the demo's top directory?)")
        return
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="", encoding="utf-8") as handle:
        yield from csv.DictReader(handle)


def ts(text: str) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def num(text: str) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def outside(key: str, value: float) -> str | None:
    low, high = LIMITS[key]
    if value < low:
        return f"below {low}"
    if value > high:
        return f"above {high}"
    return None


class Series:
    """Time-ordered values; ``before(t)`` gives the index just past the last entry at or before t."""

    def __init__(self, entries: list[tuple]):
        self.entries = sorted(entries, key=lambda e: e[0])
        self.times = [e[0] for e in self.entries]

    def before(self, t: datetime) -> int:
        return bisect.bisect_right(self.times, t)
