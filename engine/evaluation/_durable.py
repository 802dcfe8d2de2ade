"""The only module that talks to durable-rules.

It drives durable-rules' C module directly (never ``durable.lang``'s ``Host``). That module is
built with pressor from durable-rules 2.0.28's C sources in ``third_party/durable-rules`` (one
patch, so that it compiles and imports on Python 3.13 and later) as
``pressor.engine.evaluation.durable_rules_engine``; no ``durable_rules`` distribution is installed.
It is used following the pattern measured to hold up on this machine:

* every rule is ``{"all": [{"m": {"$and": [{"_ps": 1}, <condition>]}}]}``; the
  ``_ps`` guard keeps rules off the engine's own state records;
* one session per shard, created once; per evaluation the state is asserted as
  one fact with a fixed id, the actions are drained, and the fact is retracted in
  ``finally`` by session and id alone (the engine finds the stored fact by them, so the
  state is not parsed twice); no Python actions, no per-evaluation sessions, no ``delete_state``;
* rules are sharded so that no ruleset nears the engine's limits (error 303 past 64
  alpha tests matching one fact; hangs past 512 conditions under one node);
* numbers are written without a bare exponent (error 204), NaN/Infinity never reach
  it, facts are type-checked upstream, and 32-bit FNV-1a name hashes are checked
  for collisions when a matcher is built;
* any engine failure discards the matcher (its rulesets may be unusable, and a later
  call into them can segfault: they are never touched again) and is raised as
  :class:`~pressor.engine.errors.EvaluationError`;
* ``delete_state`` is never called: measured here, it corrupts the heap ("double free
  or corruption", "free(): invalid pointer") on our rulesets as soon as PyYAML is
  imported in the same process. :meth:`Matcher.close` frees rulesets with
  ``delete_ruleset`` only, which leaves the one session per shard behind (about
  0.65 MB per rebuild of the bundled pack); rebuilds happen only on pack reload;
* one lock per matcher: the C extension's state is not safe for concurrent use.

Conditions arrive here already in *positive* form: negation pushed down to the
leaves, so that "fact absent ⇒ comparison false" gives exactly the facts for
which the condition is TRUE under Kleene logic.
"""
from __future__ import annotations

import itertools
import json
import math
import re
import threading
from typing import Any, Iterable, Mapping

from . import durable_rules_engine as _dre  # type: ignore[attr-defined]  # the C engine setup.py builds: no stub

from ..errors import EvaluationError, RuleFileError

#: Distinct leaf comparisons per shard. Upstream, the engine fails past 64 alpha tests matching one
#: fact (error 303: a fixed traversal stack of 64 in events.c); pressor's build raises that stack to 1,024
#: (third_party/durable-rules/patches/0002), and the engine never returns from building a ruleset with
#: more than 511 distinct conditions under one node (a next-node table of 512 entries, rules.h:
#: measured, 511 build and all fire on one fact, 520 hang). A shard's distinct tests, plus the shared
#: ``_ps`` guard, bound both, so 400 leaves a margin under each. Every shard costs one JSON parse, assert
#: and retract per evaluation (about 7 µs even for a shard that matches nothing), which is why few large
#: shards beat many small ones (issue 21: 17 shards of 512 generated rules became 2).
MAX_TESTS_PER_SHARD = 400
#: Rules per shard: each rule adds its own first test under the shared guard, so this stays well below
#: the 511 conditions one node takes.
MAX_RULES_PER_SHARD = 256
#: ``$and``/``$or`` groups per rule. The engine writes two entries (open, close) per group of a
#: rule into a fixed sequence that refuses its 32nd entry (``MAX_SEQUENCE_EXPRESSIONS`` in
#: rete.c: error 113), and the ``_ps`` guard is one group: measured, 14 groups compile, 15 fail.
#: Leaf comparisons with constants take no entry (40 of them under one group compile).
MAX_GROUPS_PER_RULE = 14
#: Properties of the one fact the engine matches (every state fact, each member of an array fact, every
#: derived fact, and the three of the trailer: sid, id, _ps). The engine refuses a fact of more than 254
#: with error 302 (``ERR_EVENT_MAX_PROPERTIES``; ``MAX_OBJECT_PROPERTIES`` 255 in state.h, one kept by the
#: engine): measured, 251 facts and the trailer assert, 252 give 302. This, not the length of a chain of
#: derived facts, is what a pack of ~200 derived facts ran into (issue 24: 200 unchained fail the same).
ENGINE_MAX_FACTS = 251
#: What pressor allows a pack (checked at load): the engine's limit less a margin for the state schema
#: to grow without a pack that loads today failing on a complete patient tomorrow.
MAX_FACTS = 224
#: What the engine's error codes mean, for the ones a pack can provoke (durable-rules' rules.h).
ENGINE_ERRORS = {
    113: f"more all/any groups than the engine takes in one rule, at most {MAX_GROUPS_PER_RULE}",
    302: f"the fact matched has more properties than the engine takes, at most {ENGINE_MAX_FACTS} facts",
    303: "more comparisons match one fact than the engine takes, at most 64",
}
_GROUPS_FIX = ("count each all, any, negated all/any and 'in' list of two or more values as one group; "
               "move part of the condition into a derived fact in derived.yaml, or split the rule")

_SESSION = "pressor"
_FACT_ID = "pressor-state"
_names = itertools.count()
_OPS = {"<": "$lt", "<=": "$lte", ">": "$gt", ">=": "$gte", "!=": "$neq"}


def fnv1a_32(name: str) -> int:
    """The 32-bit FNV-1a hash durable-rules identifies property names by."""
    h = 0x811C9DC5
    for byte in name.encode("utf-8"):
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h


def check_name_hashes(names: Iterable[str]) -> list[tuple[str, str]]:
    """Pairs of property names whose FNV-1a hashes collide (durable-rules would confuse them)."""
    seen: dict[int, str] = {}
    clashes = []
    for name in sorted(set(names) | {"_ps", "sid", "id"}):
        h = fnv1a_32(name)
        if h in seen:
            clashes.append((seen[h], name))
        else:
            seen[h] = name
    return clashes


def number_json(x: float | int) -> str:
    """JSON for a number that durable-rules accepts: never a bare exponent (``1e-05``)."""
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, int):
        return str(x)
    if not math.isfinite(x):
        raise ValueError(f"non-finite number {x!r} cannot reach the engine")
    text = repr(x)
    if "e" in text or "E" in text:
        mantissa, exp = text.lower().split("e")
        if "." not in mantissa:
            mantissa += ".0"
        text = f"{mantissa}e{exp}"
    return text


#: A number written with an exponent and no dot, right after a key: ``"x":1e-05``.
_BARE_EXPONENT = re.compile(r'(":-?\d+)([eE][-+]?\d+)')
_TRAILER = f',"sid":"{_SESSION}","id":"{_FACT_ID}","_ps":1}}'
#: What retracting the fact sends: the engine finds a fact to retract by session and id alone (``retractFact``
#: in durable-rules' events.c looks the stored message up by ``sid`` and ``id`` and unlinks the frames it
#: recorded), so the state is not parsed a second time.
_RETRACT = f'{{"sid":"{_SESSION}","id":"{_FACT_ID}"}}'


from orjson import dumps as _orjson_dumps  # noqa: E402

#: The fallback encoder (``json.dumps`` with options builds a new one per call).
_encode_fact = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def fact_json(flat: Mapping[str, Any]) -> str:
    """Serialise one flat fact (name -> bool, number or string) the way the engine needs it.

    One orjson call (a third of the match's time went to ``json``'s encoder), then (only if the text holds
    an exponent) every bare exponent (which the engine refuses with error 204) gets a ``.0``; the pattern is
    anchored after a key, so strings are never touched. orjson writes NaN and infinities as ``null``: a
    ``null`` (which a valid state never holds) sends the fact through ``json``'s encoder, which refuses them,
    as does an integer orjson cannot write.
    """
    try:
        text = _orjson_dumps(flat).decode()
    except TypeError:  # orjson.JSONEncodeError: an integer beyond 64 bits, a key that is not a string
        text = "null"
    if "null" in text:
        text = _encode_fact(flat)
    if "e-" in text or "e+" in text:  # repr() writes every exponent with its sign; names never hold - or +
        text = _BARE_EXPONENT.sub(r"\1.0\2", text)
    return (text[:-1] + _TRAILER) if len(text) > 2 else _TRAILER.replace(",", "{", 1)


def leaf(name: str, op: str, value: Any) -> dict[str, Any]:
    """One engine comparison: ``name op value`` in durable-rules' JSON form."""
    if op == "==":
        return {name: value}
    if op == "exists":
        return {"$ex": {name: 1}}
    if op == "absent":
        return {"$nex": {name: 1}}
    return {_OPS[op]: {name: value}}


def group(kind: str, children: list[dict[str, Any]]) -> dict[str, Any]:
    """``$and``/``$or`` of at least one child; a one-child group collapses to the child."""
    if not children:
        raise ValueError("empty group: durable-rules would match every fact")
    if len(children) == 1:
        return children[0]
    return {kind: children}


def distinct_tests(cond: dict[str, Any]) -> set[str]:
    """The distinct leaf comparisons of an engine condition (the engine shares identical ones)."""
    for key in ("$and", "$or"):
        if key in cond:
            return set().union(*(distinct_tests(c) for c in cond[key]))
    return {_dumps(cond)}


def engine_groups(cond: dict[str, Any]) -> int:
    """How many ``$and``/``$or`` groups an engine condition holds (counted without recursion)."""
    count, todo = 0, [cond]
    while todo:
        node = todo.pop()
        for key in ("$and", "$or"):
            if key in node:
                count += 1
                todo.extend(node[key])
    return count


def limit_problem(key: str, cond: dict[str, Any]) -> tuple[str, str] | None:
    """Why the engine would refuse rule ``key``'s condition, predicted without asking it:
    ``(message, what to change)``, or None when it fits."""
    groups = engine_groups(cond)
    if groups > MAX_GROUPS_PER_RULE:
        return (f"rule '{key}' is too complex for durable-rules: its condition compiles to {groups} all/any groups, "
                f"and the engine takes at most {MAX_GROUPS_PER_RULE} per rule (error 113)", _GROUPS_FIX)
    tests = len(distinct_tests(cond))
    if tests > MAX_TESTS_PER_SHARD:
        return (f"rule '{key}' is too complex for durable-rules: its condition compiles to {tests} distinct comparisons, "
                f"and pressor gives the engine at most {MAX_TESTS_PER_SHARD} per rule (past 511 under one node it never finishes building)",
                "move part of the condition into a derived fact in derived.yaml, or split the rule")
    return None


def _engine_refusal(definition: Mapping[str, dict[str, Any]], exc: Exception) -> RuleFileError:
    """The engine refused a shard: find the rule it refuses alone, and say what its error means."""
    for key, cond in definition.items():
        try:
            handle = _dre.create_ruleset(f"pressor-probe-{next(_names)}", _dumps({key: _guarded(cond)}))
        except Exception as alone:  # durable-rules raises its own bare error type
            code, meaning = _engine_error(alone)
            return RuleFileError.single(
                f"durable-rules refused rule '{key}' ({meaning})", rule_id=key,
                suggestion=_GROUPS_FIX if code == 113 else "simplify the rule's condition, or split the rule",
            )
        _dre.delete_ruleset(handle)
    return RuleFileError.single(f"durable-rules refused the compiled rules ({_engine_error(exc)[1]})",
                               suggestion="every rule compiles alone; report this with the pack")


def _engine_error(exc: Exception) -> tuple[int | None, str]:
    """The engine's error code in ``exc`` and what it means (its own text when the code is not known here)."""
    match = re.search(r"error code: (\d+)", str(exc))
    code = int(match.group(1)) if match else None
    return code, f"error {code}: {ENGINE_ERRORS[code]}" if code in ENGINE_ERRORS else str(exc)


def _guarded(cond: dict[str, Any]) -> dict[str, Any]:
    """One rule as the engine gets it: the condition behind the ``_ps`` guard."""
    return {"all": [{"m": {"$and": [{"_ps": 1}, cond]}}]}


def _dumps(obj: Any) -> str:
    """JSON for a ruleset definition with engine-safe numbers."""
    if isinstance(obj, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{_dumps(v)}" for k, v in obj.items()) + "}"
    if isinstance(obj, list):
        return "[" + ",".join(_dumps(v) for v in obj) + "]"
    if isinstance(obj, (bool, int, float)):
        return number_json(obj)
    return json.dumps(obj, ensure_ascii=False)


def shard(conditions: Mapping[str, dict[str, Any]]) -> list[dict[str, dict[str, Any]]]:
    """Split ``{key: condition}`` into as few shards as the engine's limits allow, balanced.

    Every shard costs one assert/drain/retract per evaluation, so the number of shards is
    what matters. Rules are packed first-fit-decreasing into the fewest shards whose
    distinct comparisons stay under :data:`MAX_TESTS_PER_SHARD`, each rule going to the
    shard where it adds the fewest new comparisons.
    """
    tests = {}
    for key, cond in conditions.items():
        tests[key] = distinct_tests(cond)
        if len(tests[key]) > MAX_TESTS_PER_SHARD:
            problem = limit_problem(key, cond)
            message, fix = problem if problem else (f"rule '{key}' has too many distinct tests for the engine", None)
            raise RuleFileError.single(message, rule_id=key, suggestion=fix)
    order = sorted(tests, key=lambda k: -len(tests[k]))
    everything = set().union(*tests.values()) if tests else set()
    count = max(1, -(-len(everything) // MAX_TESTS_PER_SHARD), -(-len(tests) // MAX_RULES_PER_SHARD))
    while True:
        bins: list[set[str]] = [set() for _ in range(count)]
        members: list[list[str]] = [[] for _ in range(count)]
        for key in order:
            fits = [i for i in range(count)
                    if len(bins[i] | tests[key]) <= MAX_TESTS_PER_SHARD and len(members[i]) < MAX_RULES_PER_SHARD]
            if not fits:
                break
            target = min(fits, key=lambda i: (len(tests[key] - bins[i]), len(bins[i])))
            bins[target] |= tests[key]
            members[target].append(key)
        else:
            chosen = [set(m) for m in members if m]
            return [{key: conditions[key] for key in conditions if key in group} for group in chosen]
        count += 1


def rulesets(conditions: Mapping[str, dict[str, Any]]) -> tuple[tuple[tuple[str, ...], str], ...]:
    """What the engine is given for ``{key: condition}``: per shard, its rule keys and its ruleset JSON.

    Checks the fact names' hashes and shards the rules first. Plain data: a pack keeps it in the pack
    cache, so that a start builds the engine from it without redoing this (see :class:`Matcher`).
    """
    clashes = check_name_hashes(_names_in(conditions.values()))
    if clashes:
        a, b = clashes[0]
        raise RuleFileError.single(
            f"fact names '{a}' and '{b}' share a 32-bit hash in durable-rules and would be confused",
            suggestion="rename one of the facts",
        )
    return tuple((tuple(definition), _dumps({key: _guarded(cond) for key, cond in definition.items()}))
                 for definition in shard(conditions))


class Matcher:
    """Compiled durable-rules rulesets for one pack; ``match(flat_fact)`` gives the keys that fire.

    Build once per pack (and per draft setting), from the conditions or from what :func:`rulesets`
    made of them; call :meth:`close` to free the engine's memory.
    """

    def __init__(self, conditions: Mapping[str, dict[str, Any]] | None = None, *,
                 prepared: tuple[tuple[tuple[str, ...], str], ...] | None = None) -> None:
        if prepared is None:
            prepared = rulesets(conditions or {})
        self._lock = threading.Lock()
        self.rulesets = prepared
        self._handles: list[int] | None = []
        self.keys = tuple(key for keys, _ in prepared for key in keys)
        for keys, definition in prepared:
            try:
                self._handles.append(_dre.create_ruleset(f"pressor-{next(_names)}", definition))
            except Exception as exc:  # durable-rules raises its own bare error type
                self._handles = None  # a half-built set is abandoned, never touched again
                raise _engine_refusal({k: v for k, v in (conditions or {}).items() if k in keys}, exc) from exc

    @property
    def shard_sizes(self) -> list[int]:
        """Number of rules in each shard (for tests and the benchmark)."""
        return [len(keys) for keys, _ in self.rulesets]

    def match(self, flat: Mapping[str, Any]) -> set[str]:
        """Keys of every rule whose condition the fact satisfies (de-duplicated)."""
        payload = fact_json(flat)
        fired: set[str] = set()
        with self._lock:
            if self._handles is None:
                raise EvaluationError.single("the matcher was closed after an engine failure")
            for handle in self._handles:
                try:
                    code, state = _dre.assert_fact(handle, payload)
                    try:
                        if code == 0:
                            message = _dre.start_action_for_state(handle, state)
                            while message:
                                fired.add(_rule_key(message[1]))
                                nxt = _dre.complete_and_start_action(handle, state)
                                message = (None, nxt) if nxt else None
                    finally:
                        _dre.retract_fact(handle, _RETRACT)
                except Exception as exc:  # engine state may now be unusable: abandon it untouched
                    self._handles = None
                    raise EvaluationError.single(f"durable-rules failed during evaluation ({_engine_error(exc)[1]})") from exc
        return fired

    def close(self) -> None:
        """Free the engine's rulesets (not their sessions: see the module notes). Safe to call twice."""
        handles, self._handles = self._handles, None
        for handle in handles or ():
            _dre.delete_ruleset(handle)


def _rule_key(message: str) -> str:
    """The rule key of an action message ``{"<key>":{"m":{...}}}``; keys never hold quotes or escapes."""
    start = message.index('"') + 1
    return message[start:message.index('"', start)]


def _names_in(conditions: Iterable[dict[str, Any]]) -> set[str]:
    names: set[str] = set()

    def walk(c: Any) -> None:
        if isinstance(c, dict):
            for k, v in c.items():
                if k.startswith("$"):
                    walk(v)
                else:
                    names.add(k)
        elif isinstance(c, list):
            for v in c:
                walk(v)

    for cond in conditions:
        walk(cond)
    return names
