"""What evaluating a pack builds once and keeps with it (:attr:`RulePack.cache <pressor.engine.model.RulePack>`).

Each slot is built on first use by the module that owns it (named beside the slot) and then shared by every
thread. Two slots are plain data that loading prepared and that the on-disk pack cache keeps
(:meth:`PackMemo.kept`): the engine's ruleset JSON and the residual analysis's probes. The others are runtime
objects, rebuilt after a load. None of it is part of the pack's identity.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..model import Compare, RulePack
    from .compiled import CompiledPack
    from .completion import Completion
    from .evaluate import EngineSlot
    from .residual import ResidualContext

#: Held while a slot is filled, so that every thread gets the same object (re-entrant: building one slot may
#: fill another, as the completion does with the compiled pack). Slots are filled once per pack, at load.
BUILD_LOCK = threading.RLock()


@dataclass(eq=False)
class PackMemo:
    """The per-pack objects evaluation builds on first use, by name and type."""

    #: The conditions compiled to Python (:func:`.compiled.compiled_pack`).
    compiled: CompiledPack | None = None
    #: The durable-rules evaluator, rebuilt after an engine failure (:func:`.evaluate.engine_slot`).
    engine: EngineSlot | None = None
    #: The engine's rulesets as made from the rules' conditions (kept in the pack cache).
    rulesets: tuple[tuple[tuple[str, ...], str], ...] | None = None
    #: Rule id -> every rule that supersedes it, directly or through a chain (:func:`.evaluate.superseded_by`).
    superseded_by: dict[str, frozenset[str]] | None = None
    #: The rules that supersede every other, ``supersedes: ["*"]`` (:func:`.plan.scope_rules`).
    scope_rules: frozenset[str] | None = None
    #: What completes a patient state from what it holds (:func:`.evaluate.completion_of`).
    completion: Completion | None = None
    #: The residual analysis of undecided rules (:func:`.residual.context`).
    residual: ResidualContext | None = None
    #: The comparisons the residuals can depend on, and their index (kept in the pack cache).
    residual_probes: tuple[list[tuple[Compare, tuple[Any, ...] | None]], dict[str, Any]] | None = None

    def kept(self) -> PackMemo:
        """What the on-disk pack cache stores: the plain data, none of the runtime objects."""
        return PackMemo(rulesets=self.rulesets, residual_probes=self.residual_probes)


def superseded_by(pack: RulePack) -> dict[str, frozenset[str]]:
    """Rule id -> every rule that supersedes it (built on first use, kept with the pack)."""
    found = pack.cache.superseded_by
    if found is None:  # plain data: two threads that both build it build equal ones
        found = pack.cache.superseded_by = pack.superseded_by()
    return found
