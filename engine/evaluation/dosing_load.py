"""Read the pack's ``dosing:`` section (at most one) into a :class:`DosingPolicy`, checking that every
fact it names is a patient-state fact of the right kind and every drug has at most one basis per population."""
from __future__ import annotations

from typing import Any, Callable

from ..dosing_policy import DosingFacts, DosingPolicy, WeightBasis
from ..errors import Problem
from ..model import Citation
from .compile import FactType
from .load import Document

Cite = Callable[[Document, str, list[dict[str, Any]]], tuple[Citation, ...]]


def load_dosing(sections: list[tuple[Document, Any]], vocab: dict[str, FactType], problems: list[Problem], cite: Cite) -> DosingPolicy:
    """The policy from the ``dosing:`` sections found (an empty policy when the pack declares none)."""
    if not sections:
        return DosingPolicy()
    if len(sections) > 1:
        problems.append(Problem(f"the pack may declare one 'dosing' section, found {len(sections)}",
                                suggestion="keep one dosing: section", **sections[1][0].where("/dosing")))
    doc, data = sections[0]
    bags: dict[str, str] = {}
    for i, item in enumerate(data.get("bags_in_use", [])):
        ptr = f"/dosing/bags_in_use/{i}"
        fact = vocab.get(item["fact"])
        if fact is None or fact.kind != "number" or fact.derived:
            problems.append(Problem(f"'{item['fact']}' is not a numeric patient-state fact", fact_path=item["fact"],
                                    suggestion="name the state fact that gives the concentration of the bag in use",
                                    **doc.where(f"{ptr}/fact")))
        if item["drug"] in bags:
            problems.append(Problem(f"drug '{item['drug']}' has two bags in use", **doc.where(f"{ptr}/drug")))
        bags[item["drug"]] = item["fact"]
    weights: list[WeightBasis] = []
    seen: set[tuple[str, str]] = set()
    for i, item in enumerate(data.get("weights", [])):
        ptr = f"/dosing/weights/{i}"
        key = (item["drug"], item.get("population", "all"))
        if key in seen or (item["drug"], "all") in seen or (key[1] == "all" and any(d == item["drug"] for d, _ in seen)):
            problems.append(Problem(f"drug '{item['drug']}' has more than one weight basis for population '{key[1]}'",
                                    suggestion="one basis per drug and population", **doc.where(f"{ptr}/drug")))
        seen.add(key)
        if item.get("fallback") and item["basis"] != "dry":
            problems.append(Problem("only a dry-weight basis has a fallback (a dry weight may not be recorded)",
                                    **doc.where(f"{ptr}/fallback")))
        weights.append(WeightBasis(
            drug=item["drug"], basis=item["basis"], population=key[1], from_bmi=item.get("from_bmi"),
            fallback=item.get("fallback"), reason=" ".join(item.get("reason", "").split()),
            citations=cite(doc, f"{ptr}/citations", item.get("citations", [])),
        ))
    roles = data.get("facts", {})
    for role, fact in roles.items():
        if fact.startswith("derived."):  # derived facts load after this section: pack.py checks these
            continue
        ft = vocab.get(fact)
        wanted = "boolean" if role == "pediatric" else ("enum" if role == "sex" else "number")
        if ft is None or ft.kind != wanted:
            problems.append(Problem(f"dosing fact '{role}' names '{fact}', which is not a {wanted} fact", fact_path=fact,
                                    suggestion=f"name the {wanted} fact that gives the patient's {role.replace('_', ' ')}",
                                    **doc.where(f"/dosing/facts/{role}")))
    return DosingPolicy(bags_in_use=bags, weights=tuple(weights), facts=DosingFacts(**roles),
                        tallest_adult_cm=float(data.get("tallest_adult_cm", DosingPolicy.tallest_adult_cm)),
                        shortest_adult_cm=float(data.get("shortest_adult_cm", DosingPolicy.shortest_adult_cm)))
