"""How a pack turns a per-kg dose into an amount for one patient: which weight each drug's dose uses,
and which patient-state fact gives the bag in use for each drug (``dosing:`` in the pack's files)."""
from __future__ import annotations

from dataclasses import dataclass, field

from .rule_pack import Citation

#: The weights a per-kg dose can use. ``ideal``: Devine's ideal body weight (needs height and sex);
#: ``adjusted``: ideal plus 40% of the excess over it; ``dry``: the recorded dry (oedema-free) weight.
BASES = ("actual", "ideal", "adjusted", "dry")


@dataclass(frozen=True)
class WeightBasis:
    """The weight one drug's per-kg doses use, for one population, from a BMI (below it: actual weight)."""

    drug: str
    basis: str
    population: str = "all"  # adult | pediatric | all
    from_bmi: float | None = None
    fallback: str | None = None  # used when ``basis`` cannot be computed (dry weight not recorded)
    reason: str = ""
    citations: tuple[Citation, ...] = ()


@dataclass(frozen=True)
class DosingFacts:
    """The facts dose arithmetic reads, as the pack names them (``dosing.facts``); these defaults serve a pack
    without a dosing section (the bundled pack declares every one)."""

    weight: str = "patient.weight_kg"
    height: str = "patient.height_cm"
    sex: str = "patient.sex"
    dry_weight: str = "patient.dry_weight_kg"
    #: true for a child dosed as a child (the paediatric bags and weight bases), false for adult dosing
    pediatric: str = "derived.pediatric_dosing"


@dataclass(frozen=True)
class DosingPolicy:
    """The pack's dosing section: the fact giving each drug's bag in use, and each drug's weight basis."""

    bags_in_use: dict[str, str] = field(default_factory=dict)
    weights: tuple[WeightBasis, ...] = ()
    facts: DosingFacts = DosingFacts()
    #: No adult is taller than this (cm): at or above ``from_bmi`` at this height, the BMI is decided without one.
    tallest_adult_cm: float = 210.0
    #: Below this height (cm) Devine's formula gives no usable ideal weight (near 0 kg at 100 cm): the actual weight is used.
    shortest_adult_cm: float = 120.0

    def basis_for(self, drug: str, pediatric: bool | None) -> WeightBasis | None:
        """The declared basis for ``drug`` in this population (None: actual weight, nothing declared).

        A population-specific entry applies only when the population is known."""
        for entry in self.weights:
            if entry.drug != drug:
                continue
            if entry.population == "all" or (pediatric is not None and (entry.population == "pediatric") == pediatric):
                return entry
        return None
