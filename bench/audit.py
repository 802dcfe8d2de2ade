"""What the audit log costs: append, concurrent append, verify, replay, `recommend` with and
without it, bytes per record on the project's scenarios, and (``--records N``) the commands
on a log of N records.

Run: .venv/bin/python bench/audit.py                  (writes only into a temporary directory)
     .venv/bin/python bench/audit.py --size           (bytes a record and compression costs only)
     .venv/bin/python bench/audit.py --group-commit 3000   (the service's audit writer only)
     .venv/bin/python bench/audit.py --records 1000000 [--keep DIR]

The large log is generated efficiently: each of the project's scenarios (tests/scenarios) is
evaluated once and its texts compressed once; record i then takes scenario i mod n with its own
id, ``recorded_at`` (one a second), user, seq and hashes (see :func:`generate`).
Records go through the log's own compression, chaining and insert (triggers, hashes, rule
index), 10,000 to a transaction instead of one each: the same rows, without an fsync each.
The commands are then timed as subprocesses (`pressor audit ...`), each one's peak memory
(maximum resident set) read from its rusage.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pressor.engine.audit import AuditLog, AuditRecord, canonical_json, sha256_text, utc_text
from pressor.engine.audit.records import V6_ONLY, legacy_canonical_json, with_v6_fields
from pressor.engine.authoring.scenarios import load_scenarios
from pressor.engine.evaluation.evaluate import evaluate
from pressor.engine.evaluation.load import load_document
from pressor.engine.evaluation.pack import load_pack

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / "examples" / "septic-shock-adult.yaml"
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)
PRESSOR = Path(sys.executable).parent / "pressor"


def _writer(path, pack, state, result, count, start):
    start.wait()
    with AuditLog.open(path) as log:
        for _ in range(count):
            log.append(pack, state, result, now=NOW, user="bench")


def scenario_texts(pack):
    """``(input text, result dict, rule ids)`` of every scenario of the project."""
    out = []
    for s in load_scenarios([ROOT / "tests" / "scenarios"], pack):
        result = evaluate(pack, s.state, now=s.now, include_draft=s.include_draft).to_dict()
        out.append((canonical_json(s.state), s.state, result, sorted({r["rule_id"] for r in result["recommendations"]}),
                    canonical_json(result)))
    return out


def bytes_per_record(pack, tmp: Path) -> None:
    """Stored bytes a record on the scenarios (the whole file: rows, stored texts, indexes, the
    stored pack), each scenario recorded ten times; and the texts as format 2 kept them."""
    texts = scenario_texts(pack)
    path = tmp / "scenarios.db"
    with AuditLog.open(path) as log:
        for _ in range(10):
            for _, state, result, _, _ in texts:
                log.append(pack, state, _Fixed(result), now=NOW, user="bench")
    AuditLog.open(path).close()
    n = 10 * len(texts)
    before = sum(len(legacy_canonical_json(s).encode()) + len(legacy_canonical_json(r).encode()) for _, s, r, _, _ in texts) / len(texts)
    print(f"scenarios ({len(texts)}): file {path.stat().st_size / n:,.0f} B a record, all included (texts as format 2 stored them: "
          f"{before:,.0f} B of input and result JSON alone)")
    compression_costs(pack, texts)


def compression_costs(pack, texts) -> None:
    """Bytes and time per record's texts (input and result) on the scenarios: zstd against the pack at
    several levels (the one in use marked), zlib 6 (format 3) as the baseline, measured here, now."""
    import zlib

    import zstandard

    from pressor.engine.audit import compression
    from pressor.engine.audit.records import pack_files

    pairs = [(i.encode(), t.encode()) for i, _, _, _, t in texts]
    raw = statistics.mean(len(a) + len(b) for a, b in pairs)

    def measure(pack_text, unpack_text) -> tuple[float, float, float]:
        sizes, packing, unpacking = [], [], []
        for _ in range(3):
            for a, b in pairs:
                t = time.perf_counter()
                stored = (pack_text(a), pack_text(b))
                packing.append(time.perf_counter() - t)
                t = time.perf_counter()
                assert (unpack_text(stored[0]), unpack_text(stored[1])) == (a, b)
                unpacking.append(time.perf_counter() - t)
                sizes.append(len(stored[0]) + len(stored[1]))
        return statistics.mean(sizes), statistics.mean(packing) * 1e3, statistics.mean(unpacking) * 1e3

    base = measure(lambda d: zlib.compress(d, 6), zlib.decompress)
    print(f"texts a record ({raw:,.0f} B of canonical JSON), per record (input + result), mean of {len(pairs)} x 3:")
    print(f"  zlib 6 (format 3, baseline): {base[0]:,.0f} B, compress {base[1]:.2f} ms, decompress {base[2]:.2f} ms")
    dictionary = compression.pack_dictionary(pack_files(pack)["files"])
    for level in sorted({1, 3, 5, 7, compression.LEVEL, 12}):
        zdict = zstandard.ZstdCompressionDict(dictionary, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
        zdict.precompute_compress(level=level)
        packer = zstandard.ZstdCompressor(level=level, dict_data=zdict, write_checksum=True)
        unpacker = zstandard.ZstdDecompressor(dict_data=zdict)
        size, ct, dt = measure(packer.compress, unpacker.decompress)
        print(f"  zstd {level:2d} + pack dictionary ({len(dictionary) / 1e3:.0f} KB): {size:,.0f} B ({size / base[0]:.2f}x zlib), "
              f"compress {ct:.2f} ms ({ct / base[1]:.2f}x), decompress {dt:.2f} ms ({dt / base[2]:.2f}x)")
    codec = compression.PackCodec(pack_files(pack)["files"])
    size, ct, dt = measure(lambda d: codec.compress(d.decode()), lambda b: codec.decompress(b).encode())
    print(f"  in use, zstd {compression.LEVEL} with tables of 2**{compression.TABLE_LOG}, lazy, matches of "
          f"{compression.MIN_MATCH}+ bytes: {size:,.0f} B ({size / base[0]:.2f}x zlib), "
          f"compress {ct:.2f} ms ({ct / base[1]:.2f}x), decompress {dt:.2f} ms ({dt / base[2]:.2f}x)")


class _Fixed:
    """A Result stand-in whose to_dict is a stored dict."""

    def __init__(self, data):
        self._data = data

    def to_dict(self):
        return self._data


def generate(path: Path, pack, count: int, record_format: int = 6, texts=None) -> tuple[float, float]:
    """``count`` records of the scenarios, chained and inserted by the log itself; (wall, CPU) seconds taken.

    Record i takes scenario i mod n, with its own id, ``recorded_at`` (one a second), user, seq and
    hashes; its input and Result texts are the scenario's, compressed once per scenario (compressing
    a 97 KB Result at level 9 takes 1.3 ms: 22 minutes of a million records, for bytes that are
    the same whether compressed once or a million times). Reading costs the same per record
    whether texts repeat or not: nothing is cached from one record to the next. ``record_format`` 5
    writes records as pressor did before format 6 (hashed over their texts): the baseline.
    """
    texts = texts or scenario_texts(pack)
    start, cpu = time.perf_counter(), time.process_time()
    with AuditLog.open(path) as log:
        log.write_format = record_format
        log.append(pack, texts[0][1], _Fixed(texts[0][2]), now=NOW, user="bench")  # stores the pack
        stored: dict[int, tuple[bytes | None, bytes]] = {}
        done = 1
        while done < count:
            with log._translated("generate"), log._write() as tx:
                for _ in range(min(10_000, count - done)):
                    k = done % len(texts)
                    input_text, _, result, rules, result_text = texts[k]
                    moment = NOW + timedelta(seconds=done)
                    record = AuditRecord(
                        seq=0, id=str(uuid.uuid4()), recorded_at=utc_text(moment), user=f"user{done % 40}",
                        input_mode="full", input_json=input_text, input_sha256=sha256_text(input_text),
                        pack_name=pack.name, pack_version=pack.version, pack_sha256=pack.sha256,
                        engine_version=result["engine_version"], include_draft=bool(result["include_draft"]),
                        result_json=result_text, prev_hash="", record_hash="")
                    if k not in stored:
                        stored[k] = log.stored_texts(record)
                    if record_format >= 6:  # what AuditLog.prepare adds (the texts' hashes once per scenario, as above)
                        record = replace(record, **{name: getattr(sealed(k, record, stored[k], result), name) for name in V6_ONLY})
                    log._insert(tx, [(record, rules, stored[k])])
                    done += 1
            if sys.stderr.isatty():
                print(f"\r  generated {done:,}/{count:,}", end="", file=sys.stderr, flush=True)
    if sys.stderr.isatty():
        print("\r\x1b[K", end="", file=sys.stderr)
    return time.perf_counter() - start, time.process_time() - cpu


_SEALED: dict[int, AuditRecord] = {}


def sealed(k, record, stored, result):
    """Scenario ``k``'s format-6 fields (the same for every record of it: hashes of its texts and their stored bytes)."""
    if k not in _SEALED:
        _SEALED[k] = with_v6_fields(record, stored, result)
    return _SEALED[k]


#: Runs one command a line (JSON: argv, env, output) and answers its wall seconds, peak resident
#: memory, exit code and CPU seconds. A child's peak (ru_maxrss) includes the memory of the process it was
#: forked from, so the commands are started from this small launcher, made before the log is
#: generated, not from the benchmark itself (which grows past 100 MB generating it).
_LAUNCHER = r"""
import json, os, subprocess, sys, time
for line in sys.stdin:
    job = json.loads(line)
    with open(job["output"], "w") as out:
        t = time.perf_counter()
        proc = subprocess.Popen(job["argv"], stdout=out, stderr=subprocess.DEVNULL, env=job["env"])
        _, status, usage = os.wait4(proc.pid, 0)
    print(json.dumps([time.perf_counter() - t, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status),
                      usage.ru_utime + usage.ru_stime]), flush=True)
"""


class Launcher:
    """The small process the timed commands are started from (see :data:`_LAUNCHER`)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _LAUNCHER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def timed(self, args: list[str], env: dict[str, str], output: str | None = None) -> tuple[float, float, int, float]:
        """Wall seconds, peak resident MB, exit code and CPU seconds of ``pressor ARGS`` (stdout to ``output`` or discarded)."""
        import json

        self.proc.stdin.write(json.dumps({"argv": [str(PRESSOR), *args], "env": env, "output": output or os.devnull}) + "\n")
        self.proc.stdin.flush()
        took, peak, code, cpu = json.loads(self.proc.stdout.readline())
        return took, peak, code, cpu

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


#: Records in the logs the two formats are compared on (format 5 costs ~1 ms a record to write and read: a
#: million of them would take an hour for a rate that is the same at 20,000).
BASELINE_RECORDS = 20_000
#: What each command must reach (issue 24 item 7), in records per wall second.
TARGETS = {"verify": 20_000, "list --json": 10_000, "export --texts stored": 10_000, "export (clear)": 10_000}


def _commands(tmp: Path, tag: str, clear: bool) -> list[tuple[str, list[str], str | None]]:
    out = [("verify", ["audit", "verify", "--json"], None),
           ("list --json", ["audit", "list", "--json"], None),
           ("export --texts stored", ["audit", "export", "--texts", "stored", "--output", str(tmp / f"{tag}-stored.jsonl")], None)]
    if clear:  # every Result in full (about 100 KB each here): 2 GB a 20,000 records
        out.append(("export (clear)", ["audit", "export", "--output", str(tmp / f"{tag}-clear.jsonl")], None))
    return out


def _measure(launcher: "Launcher", path: Path, commands, count: int) -> dict[str, tuple[float, float, int, float]]:
    env = dict(os.environ, PRESSOR_AUDIT_DB=str(path))
    measured = {}
    for label, args, output in commands:
        took, peak, code, cpu = launcher.timed(args, env, output)
        measured[label] = (count / took, peak, code, cpu)
        print(f"  {label:<22} {took:8.1f} s {count / took:>9,.0f} records/s  CPU {cpu:7.1f} s ({count / max(cpu, 1e-9):>9,.0f}/CPU-s)  "
              f"peak {peak:5.0f} MB  exit {code}  (load {_load()})")
        for _, a, _ in [(label, args, output)]:
            if "--output" in a:
                Path(a[a.index("--output") + 1]).unlink(missing_ok=True)
    return measured


def at_scale(count: int, keep: str | None) -> None:
    """Format 5 (the baseline) and format 6 on :data:`BASELINE_RECORDS` records each, the ratios; then format 6 on
    ``count`` records (built here: the build time is printed), with peak memory against the small log's."""
    launcher = Launcher()  # before this process grows
    pack = load_pack()
    tmp = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="pressor-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    print(f"load average at start: {_load()} ({os.cpu_count()} cores)")
    texts = scenario_texts(pack)
    small = min(count, BASELINE_RECORDS)
    runs = {}
    for fmt in (5, 6):
        path = tmp / f"format{fmt}-{small}.db"
        if not path.exists():
            took, cpu = generate(path, pack, small, fmt, texts)
            print(f"format {fmt}: built {small:,} records in {took:.1f} s ({small / took:,.0f} records/s, CPU {cpu:.1f} s)")
        print(f"format {fmt}, {small:,} records ({path.stat().st_size / small:,.0f} B a record):")
        runs[fmt] = _measure(launcher, path, _commands(tmp, f"f{fmt}", clear=True), small)
    print(f"format 6 / format 5 on {small:,} records (records per wall second; per CPU second in brackets):")
    for label, (rate, _, _, cpu) in runs[6].items():
        base, _, _, base_cpu = runs[5][label]
        print(f"  {label:<22} {rate / base:6.1f}x ({(small / cpu) / (small / base_cpu):5.1f}x CPU)   target {TARGETS[label]:,}/s: "
              f"{'met' if rate >= TARGETS[label] else 'NOT met'} ({rate:,.0f}/s)")
    if count > small:
        path = tmp / "audit.db"
        if not path.exists():
            took, cpu = generate(path, pack, count, 6, texts)
            print(f"format 6: built {count:,} records in {took:.0f} s ({count / took:,.0f} records/s, CPU {cpu:.0f} s); "
                  f"target under 600 s: {'met' if took < 600 else 'NOT met'}")
        with AuditLog.open(path, create=False) as log:  # a kept log may have grown by earlier runs' appends
            count = log.head()[0]
        size = path.stat().st_size
        print(f"format 6, {count:,} records: file {size / 1e9:.2f} GB, {size / count:,.0f} B a record")
        big = _measure(launcher, path, _commands(tmp, "big", clear=False), count)
        for label, (rate, peak, _, _) in big.items():
            print(f"  {label:<22} peak memory {peak:.0f} MB at {count:,} against {runs[6][label][1]:.0f} MB at {small:,} "
                  f"({peak / runs[6][label][1]:.2f}x); target {TARGETS[label]:,}/s: {'met' if rate >= TARGETS[label] else 'NOT met'}")
    launcher.close()
    print(f"load average at end: {_load()}")
    if not keep:
        import shutil

        shutil.rmtree(tmp)


def group_commit(pack, state, result, tmp: Path, records: int = 3000) -> None:
    """The service's audit writer (``AuditSink``): calls from several threads, their records committed in
    groups, beside one append per transaction in the same run; appends per wall second, CPU per record
    (this process's CPU time: the writer thread and the callers, who prepare their records) and the cores
    that CPU kept busy (CPU per wall second), each with the load average as it started."""
    from concurrent.futures import ThreadPoolExecutor

    from pressor.service.app import AuditSink

    def cpu() -> float:
        return time.process_time()

    load = _load()
    with AuditLog.open(tmp / "single.db") as log:
        c0, t0 = cpu(), time.perf_counter()
        for _ in range(records // 3):
            log.append(pack, state, result, now=NOW, user="bench")
        single = (records // 3 / (time.perf_counter() - t0), (cpu() - c0) / (records // 3) * 1e3)
    rows = [f"one append per transaction: {single[0]:,.0f} appends/s, {single[1]:.2f} ms CPU each (load {load})"]
    for threads in (1, 8, 32):
        sink = AuditSink(tmp / f"group-{threads}.db", "full")
        sink.open()
        dicts = [result.to_dict()]

        def call(_):
            return sink.submit(pack, [(state, result)], now=NOW, user="bench", hook_instance="h", dicts=dicts)[1].result()  # noqa: B023 (called in this iteration)

        load = _load()
        c0, t0 = cpu(), time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            for _ in pool.map(call, range(records)):
                pass
        took, used = time.perf_counter() - t0, cpu() - c0
        sink.close()
        with AuditLog.open(tmp / f"group-{threads}.db", create=False) as log:
            ok = log.verify().ok
        rows.append(f"group commit, {threads:>2} calling threads: {records / took:,.0f} appends/s, {used / records * 1e3:.2f} ms CPU "
                    f"each, {used / took:.2f} cores busy ({records / took / single[0]:.1f}x one per transaction; chain ok={ok}; "
                    f"load {load})")
    print(f"SQLite audit log, {records:,} records of the example ({os.cpu_count()} cores):\n  " + "\n  ".join(rows)
          + f"\n  load average at end: {_load()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=0, help="also measure the commands on a log of this many records")
    parser.add_argument("--keep", metavar="DIR", help="generate into (or reuse) DIR/audit.db and keep it")
    parser.add_argument("--size", action="store_true", help="only the bytes a record and the compression costs")
    parser.add_argument("--group-commit", type=int, metavar="N", default=0,
                        help="only the service's audit writer (group commit), on N records a run")
    options = parser.parse_args()
    if options.records:
        at_scale(options.records, options.keep)
        return
    pack = load_pack()
    if options.size:
        with tempfile.TemporaryDirectory(prefix="pressor-bench-") as tmp:
            bytes_per_record(pack, Path(tmp))
        return
    state = load_document(STATE).data
    result = evaluate(pack, state, now=NOW)
    if options.group_commit:
        with tempfile.TemporaryDirectory(prefix="pressor-bench-") as tmp:
            group_commit(pack, state, result, Path(tmp), options.group_commit)
        return
    with tempfile.TemporaryDirectory(prefix="pressor-bench-") as tmp:
        bytes_per_record(pack, Path(tmp))
        path = Path(tmp, "audit.db")
        with AuditLog.open(path) as log:
            times = []
            for _ in range(2000):
                t = time.perf_counter()
                log.append(pack, state, result, now=NOW, user="bench")
                times.append(time.perf_counter() - t)
            print(f"append, one process: median {statistics.median(times) * 1e6:.0f} µs, "
                  f"p99 {sorted(times)[int(len(times) * 0.99)] * 1e6:.0f} µs ({len(result.to_dict()['recommendations'])} recommendations, "
                  f"{len(log.record(log.head()[1]).result_json)} B of result JSON)")
            t = time.perf_counter()
            outcome = log.verify()
            print(f"verify {outcome.records} records: {(time.perf_counter() - t) * 1e3:.0f} ms (ok={outcome.ok})")
            rid = log.head()[1]
            t = time.perf_counter()
            log.replay(rid)
            first = time.perf_counter() - t
            t = time.perf_counter()
            log.replay(rid)
            print(f"replay: first {first * 1e3:.0f} ms (rebuilds and compiles the pack), then {(time.perf_counter() - t) * 1e3:.1f} ms")
        print(f"file size for 2,000 records of the example: {path.stat().st_size / 1e6:.1f} MB")

        fork = multiprocessing.get_context("fork")
        path2 = Path(tmp, "concurrent.db")
        start = fork.Event()
        writers = [fork.Process(target=_writer, args=(path2, pack, state, result, 1000, start)) for _ in range(2)]
        for w in writers:
            w.start()
        t = time.perf_counter()
        start.set()
        for w in writers:
            w.join()
        took = time.perf_counter() - t
        with AuditLog.open(path2, create=False) as log:
            ok = log.verify().ok
        print(f"two processes x 1,000 appends: {took:.2f} s, {2000 / took:.0f} records/s (chain ok={ok})")

        group_commit(pack, state, result, Path(tmp))

        env = dict(os.environ, PRESSOR_AUDIT_DB=str(Path(tmp, "cli.db")))
        for label, extra in (("recommend --no-audit", ["--no-audit"]), ("recommend (recorded)", [])):
            runs = []
            for _ in range(7):
                t = time.perf_counter()
                subprocess.run([str(PRESSOR), "recommend", str(STATE), "--json", *extra], env=env, check=True, capture_output=True)
                runs.append(time.perf_counter() - t)
            print(f"{label}: median {statistics.median(runs) * 1e3:.0f} ms wall")


if __name__ == "__main__":
    main()
