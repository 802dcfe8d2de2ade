"""The small, closed unit vocabulary of dose quantities, parsed once when the pack loads.

A unit is ``<amount>[/kg][/<time>]`` with amount in mcg, mg, g, units, mL or L and
time in min, h or day. Conversion factors are plain numbers computed here, so no
unit library sits on the per-evaluation path (the lint's arithmetic check uses pint).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

_AMOUNTS = {"mcg": ("mass", 1.0), "mg": ("mass", 1000.0), "g": ("mass", 1_000_000.0),
            "units": ("units", 1.0), "mL": ("volume", 1.0), "L": ("volume", 1000.0)}
_TIMES = {"min": 1.0, "h": 60.0, "day": 1440.0}
_UNIT = re.compile(r"^(?P<amount>mcg|mg|g|units|mL|L)(?P<kg>/kg)?(?:/(?P<time>min|h|day))?$")
#: The unit a quantity of each dimension is shown in once multiplied out for a weight.
BASE_AMOUNT = {"mass": "mcg", "units": "units", "volume": "mL"}


class UnitError(ValueError):
    """A unit outside the vocabulary."""


@dataclass(frozen=True)
class Unit:
    """A parsed unit: amount (and its factor to mcg / units / mL), per kg, per time (factor to per minute)."""

    text: str
    amount: str
    dimension: str
    to_base: float
    per_kg: bool
    per_time: str | None

    @property
    def per_minute_factor(self) -> float | None:
        """Multiply a per-``per_time`` figure by this to get per minute."""
        return None if self.per_time is None else 1.0 / _TIMES[self.per_time]

    def without_kg(self) -> str:
        """The unit once multiplied by a weight (``mcg/kg/min`` -> ``mcg/min``)."""
        return self.amount + (f"/{self.per_time}" if self.per_time else "")


@lru_cache(maxsize=None)
def parse_unit(text: str) -> Unit:
    """Parse a dose unit; raise :class:`UnitError` naming the vocabulary if it is not in it."""
    m = _UNIT.match(text)
    if not m:
        raise UnitError(f"unknown unit '{text}' (expected amount[/kg][/time], amount in "
                        f"{', '.join(_AMOUNTS)}, time in {', '.join(_TIMES)})")
    dim, factor = _AMOUNTS[m["amount"]]
    return Unit(text, m["amount"], dim, factor, bool(m["kg"]), m["time"])
