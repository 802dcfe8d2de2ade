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

Every engine must fire exactly the same rules on every state (checked before timing, on states
that are then never timed). Timing is split, because caches hide cost:

* first sight: states generated with other seeds, new to this process (the pack's analysis caches
  still hold what earlier states of the same shape left there, as in a long-running process; their
  sizes are printed), each state timed once per engine, the engines taking turns state by state;
* warm: the same states again.

Each pressor variant gets its own fresh states, timed beside zen's expression engine and the
hand-written function on those same states: ``evaluate()``; "decide" (advice not asked: no
conditional advice, questions or not-applicable list); and pressor's floor (state check, derived
facts, engine fact and match, verdicts and evidence of the fired rules, unknown versus false of the
others: the steps every answer needs with durable-rules kept, at today's costs). Ratios are taken
within one run only. Then ``pressor recommend --json --no-audit`` beside ``python -c pass`` (cold,
and with the warm worker when the install has one), and ``recommend --batch`` throughput (wall and
per CPU-second) with --jobs 1 and 2 on the bundled pack. Times are thread CPU time (medians); the
load average is printed at the start and the end.

    pip install -e '.[bench]'      # zen-engine
    python bench/compare.py [--states 2000] [--fresh 2000] [--sizes 32,128,512] [--cli-runs 15]
                            [--batch-states 20000] [--venv DIR] [--skip engines,cli,batch]
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
from pressor.engine.evaluation.evaluate import _engine_fact, engine_slot, evaluate, flatten_state, freeze_long_lived, release
from pressor.engine.evaluation.pack import default_rules_dir, load_pack
from pressor.engine.evaluation.validate import STATE_SCHEMA, schema

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


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
    """The rules as a pressor pack: the bundled pack's pack and references files, and rule files of 100 rules."""
    bundled = default_rules_dir()
    for name in ("pack.yaml", "references.yaml"):
        shutil.copy(bundled / name, directory / name)
    pack = load_pack(bundled)
    template = next(r for r in pack.rules if r.status in pack.in_force).raw  # in review in a validation release
    keep = ("version", "status", "author", "reviewers", "effective", "status_history", "source", "citations")
    items = []
    for rule in rules:
        when = {"all": [{"fact": f, "op": op, "value": v} for f, op, v in rule["leaves"]]}
        items.append({"id": rule["id"], "title": f"Generated rule {rule['id'][-3:]}", "when": when,
                      "recommend": {"kind": "consider", "severity": "info", "summary": "A generated benchmark rule.",
                                    "detail": "Generated by bench/compare.py; it has no clinical meaning."},
                      **{k: template[k] for k in keep}})
    # files of 100 rules: each rule carries the bundled rule's sign-off history, and a rule file may not pass 1 MB
    for i in range(0, len(items), 100):
        (directory / f"rules-{i // 100:03d}.yaml").write_text(
            yaml.dump({"rules": items[i:i + 100]}, Dumper=_NoAliases, sort_keys=False))
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


def interleaved_us(engines: dict, items: list) -> dict[str, float]:
    """Median CPU µs per item of each engine, the engines taking turns item by item (so that a change in the
    machine's speed hits them alike); each engine sees each item once, in this call."""
    samples: dict[str, list[int]] = {name: [] for name in engines}
    clock = time.thread_time_ns
    order = list(engines.items())
    for n, item in enumerate(items):
        for name, fn in order[n % len(order):] + order[:n % len(order)]:  # rotate who goes first
            t0 = clock()
            fn(item)
            samples[name].append(clock() - t0)
    return {name: statistics.median(s) / 1000 for name, s in samples.items()}


def _caches(pack) -> str:
    """How many entries the pack's analysis caches hold (a first-sight state may still meet an analysis
    that an earlier state with the same shape left there: that is what a long-running process sees)."""
    from pressor.engine.evaluation.residual import context

    ctx = context(pack)
    return (f"{len(ctx.outcomes):,} rule outcomes, {len(ctx.analyses):,} analyses, "
            f"{len(ctx.assembled):,} assembled advice lists")


def decide_fn(pack):
    """``evaluate()`` without the advice (conditional advice, questions, not-applicable list): the keyword
    when ``evaluate`` has it (advice on demand), else the analysis switched off the way bench/conditional.py does."""
    import inspect
    from pressor.engine.evaluation import evaluate as module

    if "advice" in inspect.signature(evaluate).parameters:
        return lambda s: evaluate(pack, s, now=NOW, advice=False).fired_ids()
    real = module._when_missing

    def decide(s):
        module._when_missing = _NO_ADVICE
        try:
            return evaluate(pack, s, now=NOW).fired_ids()
        finally:
            module._when_missing = real
    return decide


def _NO_ADVICE(*args, **kwargs):
    return (), (), ()


def floor_fn(pack):
    """pressor's floor with durable-rules kept: the steps every answer needs, at today's costs: the state
    check, flattening and derived facts, the engine fact and match, the fired rules' verdicts, evidence and
    recommendations, and unknown versus false (the three-valued verdict) of the rules not fired."""
    from pressor.engine.evaluation.compiled import compiled_pack
    from pressor.engine.evaluation.validate import check_state

    compiled = compiled_pack(pack)
    active = compiled.active(pack.in_force)
    matcher = engine_slot(pack).get(pack).matcher
    members = pack.array_members

    def floor(state):
        check_state(state)
        facts = flatten_state(state)
        derivation = compiled.derive(facts)
        keys = matcher.match(_engine_fact(facts, members))
        for rule in active.fired(keys):
            evidence = rule.verdict(facts)[1]
            rule.recommendation(evidence if rule.plain_evidence else derivation.expand(evidence), facts, pack)
        for rule in active.reading_absent(facts.keys()):
            if rule.id not in keys and rule.truth(facts) is None:
                rule.not_evaluable(rule.missing(facts, derivation.missing_of))
        return keys
    return floor


def compare(size: int, states: list[dict], fresh: int, seed: int) -> dict[str, float]:
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
    # As pressor's evaluating processes do once their pack is loaded (batch workers, the service, the CLI
    # worker): the pack and everything built so far out of the garbage collector's reach, fewer collections.
    # zen and the hand-written function are timed in the same process, under the same settings.
    freeze_long_lived()
    times: dict = {}
    # First sight: states this process has never evaluated (generated with other seeds than the check's
    # states), one fresh set per pressor variant, each timed beside zen and hand-written Python on the same
    # states, interleaved. Then warm: the same states again (every per-state cache hit).
    baselines = {"hand-written Python": engines["hand-written Python"], "zen expression": engines["zen expression"]}
    variants = {"evaluate()": engines["pressor evaluate()"], "decide (advice not asked)": decide_fn(pack),
                "floor": floor_fn(pack)}
    for k, (label, fn) in enumerate(variants.items()):
        first_states = generate_states(fresh, seed=seed + 1000 * size + k)
        run = {**baselines, label: fn}
        times[("first", label)] = interleaved_us(run, first_states)
        times[("warm", label)] = interleaved_us(run, first_states)
    times["_caches"] = _caches(pack)
    matcher = engine_slot(pack).get(pack).matcher
    engine_facts = [_engine_fact(flatten_state(s), pack.array_members) for s in states]
    times["pressor: durable-rules match alone"] = median_us(matcher.match, engine_facts)
    times["zen decision table (warm)"] = median_us(engines["zen decision table"], states)
    times.update(parts(pack, states))
    times["_fired"] = statistics.mean(fired_counts)
    times["_shards"] = len(matcher.shard_sizes)
    release(pack)
    return times


def parts(pack, states: list[dict]) -> dict[str, float]:
    """Median µs of each step of ``evaluate()``, measured apart (where the time goes)."""
    from pressor.engine.evaluation.compiled import compiled_pack
    from pressor.engine.evaluation.validate import check_state

    compiled = compiled_pack(pack)
    active = compiled.active(pack.in_force)
    matcher = engine_slot(pack).get(pack).matcher
    prepared = []
    for state in states:
        facts = flatten_state(state)
        derivation = compiled.derive(facts)
        prepared.append((facts, derivation, matcher.match(_engine_fact(facts, pack.array_members))))

    def fired(p):
        facts, derivation, keys = p
        for rule in active.fired(keys):
            evidence = rule.verdict(facts)[1]
            rule.recommendation(evidence if rule.plain_evidence else derivation.expand(evidence), facts, pack)

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


def wall_ms(cmd: list[str], runs: int, env: dict | None = None) -> tuple[float, float]:
    """Median wall ms of ``cmd``, and the median CPU ms its processes used (user + system, from
    ``getrusage(RUSAGE_CHILDREN)``; a worker's CPU, when one answers, is not in it)."""
    import resource

    samples, cpu = [], []
    for _ in range(runs):
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        samples.append((time.perf_counter() - t0) * 1000)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append((r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime) * 1000)
    return statistics.median(samples), statistics.median(cpu)


def batch_rate(pressor: str, states_file: Path, jobs: int, extra: tuple[str, ...] = ()) -> tuple[float, float, float]:
    """States per wall second through ``recommend --batch`` (process start included), states per CPU second
    (all its processes), and output bytes per state."""
    import resource

    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with open(states_file) as fh, tempfile.TemporaryFile() as out:
        subprocess.run([pressor, "recommend", "--batch", "-", "--jobs", str(jobs), "--no-audit", "--now", "2026-01-01T00:00:00Z",
                        *extra], stdin=fh, stdout=out, stderr=subprocess.DEVNULL, check=False)
        elapsed = time.perf_counter() - t0
        size = out.tell()
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime
    count = sum(1 for _ in open(states_file))
    return count / elapsed, count / cpu, size / count


def _verdict(label: str, value: float, target: float, *, at_most: bool = True, unit: str = "x") -> str:
    met = value <= target if at_most else value >= target
    return f"{label}: {value:,.2f}{unit} (target {'<=' if at_most else '>='} {target:,g}{unit}: {'met' if met else 'MISSED'})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--states", type=int, default=2000, help="states for the check that every engine agrees")
    parser.add_argument("--fresh", type=int, default=2000, help="first-sight states per measurement (new to the process)")
    parser.add_argument("--sizes", default="32,128,512")
    parser.add_argument("--cli-runs", type=int, default=15)
    parser.add_argument("--venv", action="append", default=[],
                        help="also time the CLI in this venv (e.g. one with the wheel installed: an editable install's "
                             "import hook makes `python -c pass` slower there); repeatable")
    parser.add_argument("--batch-states", type=int, default=20_000)
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: engines, cli, batch")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    print(f"load average at start: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} "
          f"on {os.cpu_count()} cores (CPU time of this thread is what is timed: preemption is not counted)")

    verdicts = []
    if "engines" not in skip:
        states = generate_states(args.states)
        print(f"{args.states} generated states; every engine fires the same rules on each (checked); "
              f"{args.fresh} new states per first-sight measurement\n")
        head = f"{'rules':>5}  {'what':46}{'median µs':>10}{'x zen expr':>12}{'x hand-written':>16}"
        print(head + "\n" + "-" * len(head))
        for size in (int(s) for s in args.sizes.split(",")):
            t = compare(size, states, args.fresh, seed=21)
            ratios = {}
            for (when, label), run in ((k, v) for k, v in t.items() if isinstance(k, tuple)):
                zen_expr, hand = run["zen expression"], run["hand-written Python"]
                ratios[(when, label)] = run[label] / zen_expr
                for name in (label, "zen expression", "hand-written Python"):
                    shown = f"{when}: {'pressor ' + name if name == label else name}"
                    print(f"{size:>5}  {shown:46}{run[name]:>10.1f}{run[name] / zen_expr:>12.2f}{run[name] / hand:>16.2f}")
            for name in ("pressor: durable-rules match alone", "zen decision table (warm)"):
                print(f"{size:>5}  {name:46}{t[name]:>10.1f}")
            floor = {when: t[(when, "floor")]["floor"] / t[(when, "floor")]["zen expression"] for when in ("first", "warm")}
            print(f"{'':7}({t['_fired']:.1f} rules fire per state on average; pressor: {t['_shards']} engine shards; "
                  f"caches after the run: {t['_caches']})")
            print(f"{'':7}evaluate() / its floor (each as a multiple of zen on its own states): first sight "
                  f"{ratios[('first', 'evaluate()')] / floor['first']:.2f}x, warm {ratios[('warm', 'evaluate()')] / floor['warm']:.2f}x")
            print(f"{'':7}pressor evaluate(), its steps measured apart on warm states (median µs):")
            for name, us in t.items():
                if isinstance(name, str) and name.startswith("_part: "):
                    print(f"{'':9}{name[7:]:52}{us:>8.1f}")
            print()
            if size in (32, 512):
                verdicts.append(_verdict(f"decide, first sight, / zen expression at {size} rules",
                                         ratios[("first", "decide (advice not asked)")], 3.0 if size == 32 else 2.5))
                verdicts.append(_verdict(f"evaluate(), first sight, / zen expression at {size} rules",
                                         ratios[("first", "evaluate()")], 6.0))
                verdicts.append(_verdict(f"evaluate(), warm, / zen expression at {size} rules", ratios[("warm", "evaluate()")], 4.0))
                verdicts.append(_verdict(f"evaluate() / its floor at {size} rules, first sight",
                                         ratios[("first", "evaluate()")] / floor["first"], 1.5))

    if "cli" not in skip:
        example = str(ROOT / "examples" / "septic-shock-adult.yaml")
        unseen = str(ROOT / "examples" / "cardiogenic-on-norepinephrine.yaml")
        venvs = {"this venv": Path(sys.executable).parent} | {f"venv {v}": Path(v) / "bin" for v in args.venv}
        for label, bin_dir in venvs.items():
            pressor, python = str(bin_dir / "pressor"), str(bin_dir / "python")
            with tempfile.TemporaryDirectory() as cache:
                env = {**os.environ, "PRESSOR_CACHE_DIR": cache}
                env.pop("PYTHONDONTWRITEBYTECODE", None)  # set on some machines: every start would recompile
                env.pop("PRESSOR_WORKER", None)
                cmd = [pressor, "recommend", example, "--json", "--no-audit"]
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)  # fills the cache
                bare = wall_ms([python, "-c", "pass"], args.cli_runs, env)
                cold = wall_ms(cmd, args.cli_runs, env)
                warm = seen = None
                if _has_worker(pressor, env):
                    wenv = {**env, "PRESSOR_WORKER": "1", "XDG_RUNTIME_DIR": cache}
                    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=wenv)  # starts the worker
                    time.sleep(3)  # its warm-up
                    # The worker warms up on the bundled example: timed on it, and on a state it never saw (the verdict).
                    seen = wall_ms(cmd, args.cli_runs, wenv)
                    warm = wall_ms([pressor, "recommend", unseen, "--json", "--no-audit"], args.cli_runs, wenv)
                    subprocess.run([pressor, "worker", "stop"], check=False, env=wenv, stdout=subprocess.DEVNULL)
                again = wall_ms([python, "-c", "pass"], args.cli_runs, env)
                bare = ((bare[0] + again[0]) / 2, (bare[1] + again[1]) / 2)  # before and after
            print(f"cli ({label}): `python -c pass` {bare[0]:.0f} ms wall ({bare[1]:.0f} ms CPU); "
                  f"`pressor recommend --json --no-audit` cold {cold[0]:.0f} ms ({cold[1]:.0f} ms CPU): {cold[0] / bare[0]:.1f}x"
                  + (f"; with the warm worker, on a state it never saw ({Path(unseen).name}) {warm[0]:.0f} ms ({warm[1]:.0f} ms "
                     f"CPU in the client): {warm[0] / bare[0]:.1f}x; on the example it warmed up with {seen[0]:.0f} ms: "
                     f"{seen[0] / bare[0]:.1f}x" if warm and seen else "; no worker in this install"))
            verdicts.append(_verdict(f"recommend cold / python -c pass ({label})", cold[0] / bare[0], 8.0))
            if warm:
                verdicts.append(_verdict(f"recommend, warm worker, / python -c pass ({label})", warm[0] / bare[0], 3.0))

    if "batch" not in skip:
        pressor = str(Path(sys.executable).parent / "pressor")
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from conditional import states as states_with  # the bundled pack's benchmark states
        from evaluate import varied_states

        compact = ("--compact",) if _has_option(pressor, "--compact") else ()
        sets = {"varied (each fact present with p=0.85: nearly every state has conditional advice)": (varied_states, 2_000, 10_000),
                "complete (every fact present)": (lambda n: states_with(n, 1.0, 3), 8_000, 4_000)}
        for label, (make, rate_target, size_target) in sets.items():
            with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as fh:
                for state in make(args.batch_states):
                    fh.write(json.dumps(state) + "\n")
            try:
                rates = {jobs: batch_rate(pressor, Path(fh.name), jobs, compact) for jobs in (1, 2)}
            finally:
                os.unlink(fh.name)
            print(f"batch: `pressor recommend --batch - --no-audit {' '.join(compact)}` over {args.batch_states:,} {label} "
                  f"states of the bundled pack (each new to its process): {rates[1][0]:,.0f} states/s with --jobs 1, "
                  f"{rates[2][0]:,.0f} with --jobs 2 (wall, process start included); {rates[1][1]:,.0f} and {rates[2][1]:,.0f} "
                  f"states per CPU-second; {rates[2][2] / 1000:,.1f} KB out per state")
            kind = label.split(" ")[0]
            verdicts.append(_verdict(f"batch --jobs 2, {kind} states (wall; needs an idle machine)", rates[2][0], rate_target,
                                     at_most=False, unit=" states/s"))
            verdicts.append(_verdict(f"batch, {kind} states, bytes per line{' (--compact)' if compact else ''}", rates[2][2],
                                     size_target, unit=" B"))
    print(f"\nload average at end: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    print("targets (issue 21):\n  " + "\n  ".join(verdicts))


def _has_worker(pressor: str, env: dict) -> bool:
    return subprocess.run([pressor, "worker", "--help"], env=env, capture_output=True).returncode == 0


def _has_option(pressor: str, option: str) -> bool:
    return option in subprocess.run([pressor, "recommend", "--help"], capture_output=True, text=True).stdout


if __name__ == "__main__":
    main()
