"""Compact batch output (``recommend --batch --compact``): what repeats from one result to the next is
written once, as a definition, and referred to by key.

The stream is JSON lines. The first is ``{"format": "pressor-batch-compact", "version": 1}``. A line
``{"defs": {KEY: VALUE, ...}}`` defines keys; it comes before the first line that uses them (each batch
process defines, in its own lines, every key it uses, so a key may be defined twice, always with the same
value). Every other line is a batch line as without ``--compact`` (``index``, ``source``, ``ok``, and
``result`` or the error) whose result refers to definitions:

* ``recommendations[i]`` and ``conditional[i]``: ``{"ref": "rule:ID@VERSION", ...}``: the rule's texts and
  citations (rule_id, rule_version, status, kind, severity, title, summary, detail, citations,
  source_section) are the definition; evidence, dose, drug and shown stay in the line;
* ``conditional[i]["if"]``, each ``ask_next`` entry (without ``shown``), each ``not_evaluable`` entry's
  ``missing`` list, each plan item and ban: ``{"ref": KEY}`` (``"if:…"``, ``"ask:…"``, ``"missing:…"``,
  ``"item:…"``, ``"ban:…"``: keys made from the content's SHA-256) with any ``shown`` beside it;
* ``not_evaluable[i]``: ``{"ref": "rule-title:ID@VERSION", "missing": {"ref": "missing:…"}}``;
* each evidence item: ``[KEY, value, holds]``, ``"ev:…"`` defining its fact and test.

:func:`expand` turns a compact result back into the full one (``json.loads`` of the line without
``--compact`` gives the same value: tests/test_compact_batch.py checks it).
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

import orjson

HEADER = {"format": "pressor-batch-compact", "version": 1}
STATIC = ("rule_id", "rule_version", "status", "kind", "severity", "title", "summary", "detail", "citations",
          "source_section")
_SORTED = orjson.OPT_SORT_KEYS
#: Content keys a writer remembers as written, least recently used dropped first: a long batch of varied
#: states meets new contents (plan items with doses, residuals) without end, and one dropped and met again
#: is simply defined again (the format allows a key to be defined twice, always with the same value).
REMEMBERED = 8192


class CompactWriter:
    """Per batch process: the keys it has defined, and the compact form of each result."""

    def __init__(self) -> None:
        self._defined: dict[str, bytes] = {}  # rule keys (as many as the pack has rules): their texts
        self._written: OrderedDict[str, None] = OrderedDict()  # content keys, bounded (see REMEMBERED)
        self._new: dict[str, Any] = {}
        self._tests: dict[tuple[str, str], tuple[str, dict[str, str]]] = {}  # evidence (fact, test) -> key, value

    def __call__(self, result: Any) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """(the definitions this result needs that this writer has not written yet, or None; the compact result)."""
        self._new = {}
        data = result.to_dict()
        data["recommendations"] = [self._rule_entry(r) for r in data["recommendations"]]
        conditional = []
        for c in data["conditional"]:
            entry = self._rule_entry(c)
            entry["if"] = self._content("if", entry["if"])
            conditional.append(entry)
        data["conditional"] = conditional
        data["ask_next"] = [self._shown_content("ask", q) for q in data["ask_next"]]
        data["not_evaluable"] = [self._not_evaluable(n) for n in data["not_evaluable"]]
        plan = data.get("plan")
        if plan is not None:
            plan = dict(plan)
            plan["items"] = [self._content("item", i) for i in plan.get("items", [])]
            plan["bans"] = [self._content("ban", b) for b in plan.get("bans", [])]
            data["plan"] = plan
        new, self._new = self._new, {}
        return (new or None), data

    def _define(self, key: str, value: Any, text: bytes) -> str:
        known = self._defined.get(key)
        if known is None:
            self._defined[key] = text
            self._new[key] = value
            return key
        if known == text:
            return key
        # the same rule and version with other texts (never expected within one pack): keyed by content instead
        return self._define(f"{key}#{hashlib.sha256(text).hexdigest()[:16]}", value, text)

    def _content(self, kind: str, value: Any) -> dict[str, str]:
        key = f"{kind}:{hashlib.sha256(orjson.dumps(value, option=_SORTED)).hexdigest()[:20]}"
        self._written_once(key, value)
        return {"ref": key}

    def _written_once(self, key: str, value: Any) -> None:
        """Define content ``key`` unless this writer has (and still remembers that it has)."""
        written = self._written
        if key in written:
            written.move_to_end(key)
            return
        written[key] = None
        self._new[key] = value
        if len(written) > REMEMBERED:
            written.popitem(last=False)

    def _shown_content(self, kind: str, entry: dict[str, Any]) -> dict[str, Any]:
        rest = {k: v for k, v in entry.items() if k != "shown"}
        out = self._content(kind, rest)
        if "shown" in entry:
            out["shown"] = entry["shown"]
        return out

    def _rule_entry(self, entry: dict[str, Any]) -> dict[str, Any]:
        static = {k: entry[k] for k in STATIC if k in entry}
        key = self._define(f"rule:{entry['rule_id']}@{entry['rule_version']}", static, orjson.dumps(static, option=_SORTED))
        out = {"ref": key, **{k: v for k, v in entry.items() if k not in STATIC}}
        if "evidence" in out:
            out["evidence"] = [self._evidence(e) for e in out["evidence"]]
        return out

    def _evidence(self, e: dict[str, Any]) -> list[Any]:
        """``[KEY, value, holds]``, KEY defining the item's fact and test."""
        pair = (e["fact"], e["test"])
        found = self._tests.get(pair)
        if found is None:
            value = {"fact": e["fact"], "test": e["test"]}
            found = self._tests[pair] = (self._content("ev", value)["ref"], value)
        else:
            self._written_once(*found)
        return [found[0], e["value"], e["holds"]]

    def _not_evaluable(self, entry: dict[str, Any]) -> dict[str, Any]:
        static = {k: v for k, v in entry.items() if k != "missing"}
        key = self._define(f"rule-title:{entry['rule_id']}@{entry['rule_version']}", static,
                           orjson.dumps(static, option=_SORTED))
        return {"ref": key, "missing": self._content("missing", entry["missing"])}


def expand(result: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """The full result of a compact one, given every definition read so far."""
    out = dict(result)

    def ref(entry: dict[str, Any]) -> dict[str, Any]:
        return {**defs[entry["ref"]], **{k: v for k, v in entry.items() if k != "ref"}}

    def evidence(entry: dict[str, Any]) -> dict[str, Any]:
        full = ref(entry)
        if "evidence" in full:
            full["evidence"] = [{**defs[k], "value": value, "holds": holds} for k, value, holds in full["evidence"]]
        return full

    out["recommendations"] = [evidence(r) for r in result["recommendations"]]
    out["conditional"] = [{**ref(c), "if": defs[c["if"]["ref"]]} for c in result["conditional"]]
    out["ask_next"] = [ref(q) for q in result["ask_next"]]
    out["not_evaluable"] = [{**defs[n["ref"]], "missing": defs[n["missing"]["ref"]]} for n in result["not_evaluable"]]
    if result.get("plan") is not None:
        plan = dict(result["plan"])
        plan["items"] = [defs[i["ref"]] for i in plan["items"]]
        plan["bans"] = [defs[b["ref"]] for b in plan["bans"]]
        out["plan"] = plan
    return out


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()
