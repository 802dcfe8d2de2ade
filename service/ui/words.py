"""Rule conditions in words, for the rule browser: ``vitals.sbp_mmhg < 70`` reads "SBP (mmHg) is
below 70". Presentation only: the labels come from the patient form (the schema) and the derived
facts' own descriptions; the logic shown is the pack's, leaf for leaf."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pressor.engine.model import All, Compare, Condition, Not, RulePack

from .forms import FormSpec, humanize, unit_and_stem

_OPS = {"<": "is below", "<=": "is at most", ">": "is above", ">=": "is at least", "==": "is", "!=": "is not",
        "in": "is one of", "includes": "includes", "known": "is known", "unknown": "is unknown"}


@dataclass(frozen=True)
class Phrase:
    """One line of a condition in words: its depth, the words, and the rule-file text it stands for."""

    depth: int
    words: str
    code: str
    fact: str | None = None


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(_value(v) for v in value)
    return str(value).replace("_", " ") if isinstance(value, str) else f"{value:g}" if isinstance(value, float) else str(value)


class Wording:
    """Names facts as the form does and derived facts by their descriptions."""

    def __init__(self, pack: RulePack, form: FormSpec) -> None:
        self.form = form
        self.derived = {d.name if d.name.startswith("derived.") else f"derived.{d.name}": d for d in pack.derived}

    def name(self, fact: str) -> str:
        """``SBP (mmHg)``; a derived fact by its description."""
        field = self.form.fields.get(fact)
        if field is not None:
            label = field.label
            group = humanize(fact.split(".")[0])
            if field.kind == "choice" and "." in fact and group.lower() not in label.lower():
                label = f"{group} {label.lower()}"  # "Shock type", "Order drug": a bare "Type" says too little
            return f"{label} ({field.unit})" if field.unit else label
        if fact.startswith("derived."):
            unit, stem = unit_and_stem(fact[len("derived."):], {})
            return humanize(stem) + (f" ({unit})" if unit else "")
        return fact

    def leaf(self, leaf: Compare) -> str:
        """One comparison in words."""
        subject = self.name(leaf.fact)
        if leaf.op in ("known", "unknown"):
            return f"{subject} {_OPS[leaf.op]}"
        if leaf.value_fact is not None:
            return f"{subject} {_OPS.get(leaf.op, leaf.op)} {self.name(leaf.value_fact)}"
        if leaf.op == "==" and isinstance(leaf.value, bool):
            return f"{subject}: {'yes' if leaf.value else 'no'}"
        if leaf.op == "!=" and isinstance(leaf.value, bool):
            return f"{subject}: not {'yes' if leaf.value else 'no'}"
        return f"{subject} {_OPS.get(leaf.op, leaf.op)} {_value(leaf.value)}"

    def phrases(self, cond: Condition, depth: int = 0) -> list[Phrase]:
        """The condition as indented lines of words."""
        if isinstance(cond, Compare):
            return [Phrase(depth, self.leaf(cond), cond.describe(), cond.fact)]
        if isinstance(cond, Not):
            return [Phrase(depth, "not:", "not")] + self.phrases(cond.child, depth + 1)
        head = "all of:" if isinstance(cond, All) else "any of:"
        out = [Phrase(depth, head, head.split()[0])]
        for child in cond.children:
            out += self.phrases(child, depth + 1)
        return out

    def derived_used(self, cond: Condition) -> list[tuple[str, str, list[Phrase]]]:
        """Every derived fact the condition reads, directly or through other derived facts:
        ``(name, description, definition in words)``."""
        from pressor.engine.model import leaves

        seen: list[str] = []
        todo = [leaf for leaf in leaves(cond)]
        out = []
        while todo:
            leaf = todo.pop(0)
            for fact in leaf.facts():
                derived = self.derived.get(fact)
                if derived is None or fact in seen:
                    continue
                seen.append(fact)
                if derived.when is not None:
                    definition = self.phrases(derived.when)
                    todo += leaves(derived.when)
                elif derived.cases:
                    definition = []
                    for case, value in derived.cases:
                        definition.append(Phrase(0, f"{_value(value)} when:", "case"))
                        definition += self.phrases(case, 1)
                        todo += leaves(case)
                    definition.append(Phrase(0, f"otherwise {_value(derived.default)}", "default"))
                elif derived.product:
                    a, b = derived.product
                    definition = [Phrase(0, f"{self.name(a)} × {self.name(b)}", f"{a} * {b}")]
                else:
                    definition = []
                out.append((fact, derived.description, definition))
        return out
