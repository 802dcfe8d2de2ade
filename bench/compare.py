"""pressor beside hand-written Python and GoRules' zen engine, on the same generated rules and states.

For 32, 128 and 512 rules (conjunctions of 2-4 comparisons over the patient-state facts:
numbers against thresholds, booleans, enums and ``in`` lists), the same rule set is

* written as a pressor pack (rule files with full provenance) and run through ``evaluate()``:
  state check, derived facts, durable-rules match, the reference check of every fired rule,
  evidence, unknown-vs-false with the missing facts, recommendations;
* hand-written Python: one function over the nested state, a guarded comparison per leaf;
* zen's expression evaluator: one compiled expression listing the rules that hold
  (``filter([(a != null and a < 65 and ...) ? "id" : null, ...], # != null)``: zen refuses to
  compare null), so the state crosses into Rust once per evaluation, as it does for the others;
* zen's decision engine: one decision table, hit policy ``collect``, one row per rule.

Every engine must fire exactly the same rules on every state (checked before timing). All run in
this one process, over the same states; the table gives median µs per state and ratios. Then
``pressor recommend --json --no-audit`` beside ``python -c pass``, and ``recommend --batch``
throughput with --jobs 1 and 2 on the bundled pack. Shared machines are noisy: read the ratios.

    pip install -e '.[bench]'      # zen-engine
    python bench/compare.py [--states 3000] [--sizes 32,128,512] [--cli-runs 15] [--batch-states 20000] [--venv DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

from pressor.engine.evaluation.compile import state_vocabulary
from pressor.engine.evaluation.evaluate import _engine_fact, evaluate, flatten_state, release
from pressor.engine.evaluation.pack import default_rules_dir, load_pack
from pressor.engine.evaluation.validate import STATE_SCHEMA, schema

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
TARGETS = {"zen expression at 32 rules": 3.0, "zen expression at 512 rules": 2.0, "hand-written Python": 5.0,
           "cli": 6.0, "batch states/s": 20_000}


# --- the rule set and the states ------------------------------------------------

def _vocabulary() -> dict:
    vocab = state_vocabulary(schema(STATE_SCHEMA))
    return {p: ft for p, ft in vocab.items() if ft.kind in ("number", "boolean", "enum")}


def _grid(ft) -> list[float]:
    lo, hi = ft.minimum or 0, ft.maximum if ft.maximum is not None else 100
    return [round(lo + (hi - lo) * q, 2) for q in (0.05, 0.1, 0.2, 0.3, 0.5, 0.7)]


def generate_rules(n: int, seed: int = 14) -> list[dict]:
    """``n`` rules: ``{"id", "leaves": [(fact, op, value), ...]}``, each an all() of 2-4 distinct facts."""
    rng = random.Random(seed)
    vocab = _vocabulary()
    paths = sorted(vocab)
    rules = []
    for i in range(n):
        leaves = []
        for path in rng.sample(paths, rng.randint(2, 4)):
            ft = vocab[path]
            if ft.kind == "number":
                leaves.append((path, rng.choice(["<", "<=", ">", ">="]), rng.choice(_grid(ft))))
            elif ft.kind == "boolean":
                leaves.append((path, "==", rng.random() < 0.5))
            elif rng.random() < 0.5:
                leaves.append((path, "==", rng.choice(ft.values)))
            else:
                leaves.append((path, "in", sorted(rng.sample(ft.values, min(2, len(ft.values))))))
        rules.append({"id": f"bench.rule-{i:03d}", "leaves": leaves})
    return rules


def generate_states(n: int, seed: int = 15) -> list[dict]:
    """``n`` valid states; each fact present with probability 0.9, numbers mostly on the rules' grid."""
    rng = random.Random(seed)
    vocab = state_vocabulary(schema(STATE_SCHEMA))
    out = []
    for _ in range(n):
        state: dict = {}
        for path, ft in vocab.items():
            if rng.random() > 0.9 or ft.kind == "array":
                continue
            if ft.kind == "number":
                lo, hi = ft.minimum or 0, ft.maximum if ft.maximum is not None else 100
                value = rng.choice(_grid(ft)) if rng.random() < 0.5 else round(rng.uniform(lo, hi), 2)
            elif ft.kind == "boolean":
                value = rng.random() < 0.5
            else:
                value = rng.choice(ft.values)
            section, _, key = path.partition(".")
            state.setdefault(section, {})[key] = value
        vitals = state.get("vitals", {})
        vitals.pop("map_mmhg", None)
        if "sbp_mmhg" in vitals and "dbp_mmhg" in vitals and vitals["dbp_mmhg"] >= vitals["sbp_mmhg"]:
            vitals.pop("dbp_mmhg")
        out.append(state)
    return out


class _NoAliases(yaml.SafeDumper):
    """Shared objects written out in full (pressor refuses YAML aliases)."""

    def ignore_aliases(self, data) -> bool:
        return True


def write_pack(rules: list[dict], directory: Path) -> Path:
    """The rules as a pressor pack: the bundled pack's pack and references files, and one rule file."""
    bundled = default_rules_dir()
    for name in ("pack.yaml", "references.yaml"):
        shutil.copy(bundled / name, directory / name)
    template = next(r for r in load_pack(bundled).rules if r.status == "approved").raw
    keep = ("version", "status", "author", "reviewers", "effective", "status_history", "source", "citations")
    items = []
    for rule in rules:
        when = {"all": [{"fact": f, "op": op, "value": v} for f, op, v in rule["leaves"]]}
        items.append({"id": rule["id"], "title": f"Generated rule {rule['id'][-3:]}", "when": when,
                      "recommend": {"kind": "consider", "severity": "info", "summary": "A generated benchmark rule.",
                                    "detail": "Generated by bench/compare.py; it has no clinical meaning."},
                      **{k: template[k] for k in keep}})
    (directory / "rules.yaml").write_text(yaml.dump({"rules": items}, Dumper=_NoAliases, sort_keys=False))
    return directory


# --- the engines ---------------------------------------------------------------

def handwritten(rules: list[dict]):
    """What a programmer would write: one function, a guarded comparison per leaf, over the nested state."""
    sections = sorted({f.split(".")[0] for r in rules for f, _, _ in r["leaves"]})
    lines = ["def fired(s):", "    out = []"]
    lines += [f"    {sec} = s.get({sec!r}) or {{}}" for sec in sections]
    for rule in rules:
        tests = []
        for i, (path, op, value) in enumerate(rule["leaves"]):
            sec, key = path.split(".")
            lhs = f"(x{i} := {sec}.get({key!r}))"
            rhs = repr(tuple(value)) if op == "in" else repr(value)
            tests.append(f"{lhs} is not None and x{i} {op} {rhs}")
        lines.append(f"    if {' and '.join(tests)}: out.append({rule['id']!r})")
    lines.append("    return out")
    namespace: dict = {}
    exec("\n".join(lines), namespace)  # noqa: S102 - our own generated source
    return namespace["fired"]


def _zen_leaf(path: str, op: str, value) -> str:
    if op == "in":
        return f"{path} in [{', '.join(json.dumps(v) for v in value)}]"
    return f"{path} != null and {path} {op} {json.dumps(value)}"


def zen_expressions(rules: list[dict]):
    """One compiled zen expression for the whole rule set (the state crosses into Rust once per call)."""
    import zen

    tests = ", ".join(f"({' and '.join(_zen_leaf(*leaf) for leaf in r['leaves'])}) ? {json.dumps(r['id'])} : null"
                      for r in rules)
    expression = zen.compile_expression(f"filter([{tests}], # != null)")
    return expression.evaluate


def zen_table(rules: list[dict]):
    import zen

    facts = sorted({f for r in rules for f, _, _ in r["leaves"]})
    column = {f: f"i{n}" for n, f in enumerate(facts)}
    rows = []
    for rule in rules:
        row = {"_id": rule["id"], "o": json.dumps(rule["id"]), **{c: "" for c in column.values()}}
        for path, op, value in rule["leaves"]:
            row[column[path]] = (f"$ in [{', '.join(json.dumps(v) for v in value)}]" if op == "in"
                                 else f"$ != null and $ {op} {json.dumps(value)}")
        rows.append(row)
    content = {
        "nodes": [
            {"id": "in", "type": "inputNode", "name": "state", "position": {"x": 0, "y": 0}},
            {"id": "table", "type": "decisionTableNode", "name": "rules", "position": {"x": 200, "y": 0},
             "content": {"hitPolicy": "collect", "rules": rows,
                         "inputs": [{"id": c, "name": f, "field": f} for f, c in column.items()],
                         "outputs": [{"id": "o", "name": "rule", "field": "rule"}]}},
            {"id": "out", "type": "outputNode", "name": "fired", "position": {"x": 400, "y": 0}},
        ],
        "edges": [{"id": "a", "sourceId": "in", "targetId": "table", "type": "edge"},
                  {"id": "b", "sourceId": "table", "targetId": "out", "type": "edge"}],
    }
    decision = zen.ZenEngine().create_decision(json.dumps(content))

    def fired(state):
        return [row["rule"] for row in decision.evaluate(state)["result"]]

    return fired


# --- measuring -----------------------------------------------------------------

def median_us(fn, items) -> float:
    """Median CPU time of ``fn(item)`` in this thread: on a shared machine, time spent preempted is not counted."""
    samples = []
    clock = time.thread_time_ns
    for item in items:
        t0 = clock()
        fn(item)
        samples.append(clock() - t0)
    return statistics.median(samples) / 1000


def compare(size: int, states: list[dict]) -> dict[str, float]:
    rules = generate_rules(size)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PRESSOR_CACHE_DIR"] = "off"  # a throw-away pack: nothing to keep in the user's cache
        try:
            pack = load_pack(write_pack(rules, Path(tmp)))
        finally:
            os.environ.pop("PRESSOR_CACHE_DIR")
    engines = {
        "hand-written Python": handwritten(rules),
        "zen expression": zen_expressions(rules),
        "zen decision table": zen_table(rules),
        "pressor evaluate()": lambda s: evaluate(pack, s, now=NOW).fired_ids(),
    }
    fired_counts = []
    for state in states:  # every engine fires exactly the same rules
        answers = {name: sorted(fn(state)) for name, fn in engines.items()}
        first = answers["hand-written Python"]
        if any(a != first for a in answers.values()):
            raise SystemExit(f"engines disagree on {json.dumps(state)}: {answers}")
        fired_counts.append(len(first))
    matcher = pack.cache["engine"].get(pack).matcher
    engine_facts = [_engine_fact(flatten_state(s), pack.array_members) for s in states]
    for fn in engines.values():  # warm-up
        for s in states[:200]:
            fn(s)
    times = {name: median_us(fn, states) for name, fn in engines.items()}
    times["pressor: durable-rules match alone"] = median_us(matcher.match, engine_facts)
    times.update(parts(pack, states))
    times["_fired"] = statistics.mean(fired_counts)
    times["_shards"] = len(matcher.shard_sizes)
    release(pack)
    return times


def parts(pack, states: list[dict]) -> dict[str, float]:
    """Median µs of each step of ``evaluate()``, measured apart (where the time goes)."""
    from pressor.engine.evaluation.compiled import compiled_pack
    from pressor.engine.evaluation.evaluate import ACTIVE_BY_DEFAULT
    from pressor.engine.evaluation.validate import check_state

    compiled = compiled_pack(pack)
    active = compiled.active(ACTIVE_BY_DEFAULT)
    matcher = pack.cache["engine"].get(pack).matcher
    prepared = []
    for state in states:
        facts = flatten_state(state)
        derivation = compiled.derive(facts)
        prepared.append((facts, derivation, matcher.match(_engine_fact(facts, pack.array_members))))

    def fired(p):
        facts, derivation, keys = p
        for rule in active.fired(keys):
            rule.recommendation(derivation.expand(rule.verdict(facts)[1]), facts, pack)

    def undecided(p):
        facts, derivation, keys = p
        for rule in active.reading_absent(facts.keys()):
            if rule.id not in keys and rule.truth(facts) is None:
                rule.not_evaluable(rule.missing(facts, derivation.missing_of))

    return {
        "_part: state check": median_us(check_state, states),
        "_part: flatten and derived facts": median_us(lambda s: compiled.derive(flatten_state(s)), states),
        "_part: engine fact and match": median_us(lambda p: matcher.match(_engine_fact(p[0], pack.array_members)), prepared),
        "_part: fired rules: check, evidence, recommendations": median_us(fired, prepared),
        "_part: unknown vs false, missing facts": median_us(undecided, prepared),
    }


def wall_ms(cmd: list[str], runs: int, env: dict | None = None) -> float:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def batch_rate(pressor: str, states_file: Path, jobs: int) -> tuple[float, float]:
    """States per second through ``recommend --batch`` (process start included), and output bytes per state."""
    t0 = time.perf_counter()
    with open(states_file) as fh, tempfile.TemporaryFile() as out:
        subprocess.run([pressor, "recommend", "--batch", "-", "--jobs", str(jobs), "--no-audit", "--now", "2026-01-01T00:00:00Z"],
                       stdin=fh, stdout=out, stderr=subprocess.DEVNULL, check=False)
        elapsed = time.perf_counter() - t0
        size = out.tell()
    count = sum(1 for _ in open(states_file))
    return count / elapsed, size / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--states", type=int, default=3000)
    parser.add_argument("--sizes", default="32,128,512")
    parser.add_argument("--cli-runs", type=int, default=15)
    parser.add_argument("--venv", action="append", default=[],
                        help="also time the CLI in this venv (e.g. one with the wheel installed: an editable install's "
                             "import hook makes `python -c pass` slower there); repeatable")
    parser.add_argument("--batch-states", type=int, default=20_000)
    args = parser.parse_args()

    states = generate_states(args.states)
    print(f"{args.states} generated states; every engine fires the same rules on each (checked)\n")
    head = f"{'rules':>5}  {'engine':36}{'median µs':>10}{'x zen expr':>12}{'x hand-written':>16}"
    print(head + "\n" + "-" * len(head))
    verdicts = []
    for size in (int(s) for s in args.sizes.split(",")):
        t = compare(size, states)
        zen_expr, hand = t["zen expression"], t["hand-written Python"]
        for name, us in t.items():
            if not name.startswith("_"):
                print(f"{size:>5}  {name:36}{us:>10.1f}{us / zen_expr:>12.2f}{us / hand:>16.2f}")
        print(f"{'':7}({t['_fired']:.1f} rules fire per state on average; pressor: {t['_shards']} engine shards)")
        print(f"{'':7}pressor evaluate(), its steps measured apart (median µs, share of evaluate()):")
        for name, us in t.items():
            if name.startswith("_part: "):
                print(f"{'':9}{name[7:]:52}{us:>8.1f}{us / t['pressor evaluate()']:>8.0%}")
        print()
        ratio = t["pressor evaluate()"] / zen_expr
        if size in (32, 512):
            target = TARGETS[f"zen expression at {size} rules"]
            verdicts.append(f"evaluate() / zen expression at {size} rules: {ratio:.2f} (target <= {target}: "
                            f"{'met' if ratio <= target else 'MISSED'})")
        if size == 32:
            ratio = t["pressor evaluate()"] / hand
            verdicts.append(f"evaluate() / hand-written Python at 32 rules: {ratio:.2f} (target <= 5: "
                            f"{'met' if ratio <= 5 else 'MISSED'})")

    example = str(ROOT / "examples" / "septic-shock-adult.yaml")
    venvs = {"this venv": Path(sys.executable).parent} | {f"venv {v}": Path(v) / "bin" for v in args.venv}
    for label, bin_dir in venvs.items():
        pressor, python = str(bin_dir / "pressor"), str(bin_dir / "python")
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "PRESSOR_CACHE_DIR": cache}
            env.pop("PYTHONDONTWRITEBYTECODE", None)  # set on some machines: every start would recompile
            cmd = [pressor, "recommend", example, "--json", "--no-audit"]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)  # fills the cache
            bare = wall_ms([python, "-c", "pass"], args.cli_runs, env)
            warm = wall_ms(cmd, args.cli_runs, env)
            bare = (bare + wall_ms([python, "-c", "pass"], args.cli_runs, env)) / 2  # before and after
            off = wall_ms(cmd, max(3, args.cli_runs // 3), {**env, "PRESSOR_CACHE_DIR": "off"})
        print(f"cli ({label}): `pressor recommend --json --no-audit` {warm:.0f} ms (pack cache on; {off:.0f} ms with it off); "
              f"`python -c pass` {bare:.0f} ms: {warm / bare:.1f}x")
        verdicts.append(f"recommend / python -c pass ({label}): {warm / bare:.1f} (target <= 6: {'met' if warm / bare <= 6 else 'MISSED'})")

    pressor = str(Path(sys.executable).parent / "pressor")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from conditional import states as states_with  # the bundled pack's benchmark states
    from evaluate import varied_states

    sets = {"varied (each fact present with p=0.85: nearly every state has conditional advice)": varied_states,
            "complete (every fact present)": lambda n: states_with(n, 1.0, 3)}
    for label, make in sets.items():
        with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as fh:
            for state in make(args.batch_states):
                fh.write(json.dumps(state) + "\n")
        try:
            rates = {jobs: batch_rate(pressor, Path(fh.name), jobs) for jobs in (1, 2)}
        finally:
            os.unlink(fh.name)
        print(f"batch: `pressor recommend --batch - --no-audit` over {args.batch_states:,} {label} states of the bundled pack: "
              f"{rates[1][0]:,.0f} states/s with --jobs 1, {rates[2][0]:,.0f} with --jobs 2 (process start included); "
              f"{rates[2][1] / 1000:,.1f} KB of JSON out per state")
        kind = label.split(" ")[0]
        verdicts.append(f"batch --jobs 2, {kind} states: {rates[2][0]:,.0f} states/s "
                        f"(target >= 20,000: {'met' if rates[2][0] >= 20_000 else 'MISSED'})")
    print("\ntargets:\n  " + "\n  ".join(verdicts))


if __name__ == "__main__":
    main()
