"""Load check of ``pressor serve`` (not a test): p50/p99 latency and errors under concurrent clients.

Starts the server on 127.0.0.1 (a free port) with 1, then 2 workers, a trusted ES384 key
made for the run, and sends the septic-adult patient-view call (each with a fresh signed
token) from N concurrent asyncio clients for a fixed time. Bounded in time and count;
talks to the loopback address only. Client and server share this machine's cores, so the
figures are a floor, not a capacity.

With ``--instances 2 --postgres URL`` (or ``--postgres auto``: a throwaway PostgreSQL cluster
started here with initdb/pg_ctl on a free port) it runs two instances sharing one PostgreSQL
audit log and replay cache, as behind a load balancer (one base_url, clients spread over both),
checks that a token accepted by one instance is refused by the other, and runs
``pressor audit verify`` on the shared log after the run.

    python bench/load.py                      # 50 clients, 30 s, 1 and 2 workers
    python bench/load.py --clients 10 --duration 5 --workers 1 --json
    python bench/load.py --instances 2 --postgres auto --workers 1
    python bench/load.py --instances 2 --workers 1   # no PostgreSQL: one SQLite file, replay cache per process
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "fhir" / "septic-adult.json"
EXAMPLE_NOW = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)
SERVICE = "/cds-services/pressor-patient-view"
ISS, KID = "https://ehr.load.invalid", "load-key"
MAX_REQUESTS = 500_000  # a hard bound whatever the duration


def shifted(data, delta: timedelta):
    """The example with its date-times moved to the present (the server reads the wall clock)."""
    if isinstance(data, dict):
        return {k: shifted(v, delta) for k, v in data.items()}
    if isinstance(data, list):
        return [shifted(v, delta) for v in data]
    if isinstance(data, str) and len(data) > 10 and data[10:11] == "T":
        return (datetime.fromisoformat(data.replace("Z", "+00:00")) + delta).isoformat().replace("+00:00", "Z")
    return data


def request_body() -> bytes:
    res = [e["resource"] for e in shifted(json.loads(EXAMPLE.read_text()), datetime.now(timezone.utc) - EXAMPLE_NOW)["entry"]]

    def bundle(kind):
        found = [r for r in res if r["resourceType"] == kind]
        return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in found]} if found else None

    patient = next(r for r in res if r["resourceType"] == "Patient")
    return json.dumps({"hook": "patient-view", "hookInstance": "load", "context": {"patientId": patient["id"]},
                       "prefetch": {"patient": patient, "observations": bundle("Observation"), "conditions": bundle("Condition"),
                                    "medicationAdministrations": None, "medicationRequests": None}}).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PRESSOR = os.environ.get("PRESSOR_BENCH_PRESSOR") or str(Path(sys.executable).with_name("pressor"))  # another build, for an A/B


def start(workers: int, key, tmp: Path, *, audit_db: str | None = None, aud_base: str | None = None,
          name: str | None = None, replay_cache: str | None = None) -> tuple[subprocess.Popen, str]:
    """One ``pressor serve``; its URL. ``aud_base``: the base_url shared by instances behind one balancer;
    ``replay_cache``: a token replay cache shared with other instances (default: this process's own)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    name = name or f"w{workers}"
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    config = tmp / f"serve-{name}.json"
    config.write_text(json.dumps({"base_url": aud_base or url, "issuers": [{"iss": ISS, "keys": [{"kid": KID, "pem": pem}]}],
                                  "audit_db": audit_db or str(tmp / f"audit-{name}.db"), "log_file": str(tmp / f"{name}.log"),
                                  **({"replay_cache": replay_cache} if replay_cache else {})}))
    proc = subprocess.Popen([PRESSOR, "serve", "--port", str(port), "--workers", str(workers), "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=open(tmp / f"{name}.err", "w"))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
    proc.terminate()
    raise SystemExit(f"server did not start within 60 s: {(tmp / f'{name}.err').read_text()[-2000:]}")


def server_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by the server process and its live children (uvicorn's workers,
    the audit writer's thread included): what a call costs the server, whatever the machine's load."""
    tick = os.sysconf("SC_CLK_TCK")

    def own(p: str) -> tuple[int, float]:
        with open(f"/proc/{p}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return int(fields[1]), (int(fields[11]) + int(fields[12])) / tick  # ppid, utime + stime

    total = own(str(pid))[1]
    for entry in os.listdir("/proc"):
        if entry.isdigit() and entry != str(pid):
            try:
                ppid, used = own(entry)
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                total += used
    return total


def sign(key, base: str) -> str:
    now = int(time.time())
    return jwt.encode({"iss": ISS, "aud": base + SERVICE, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())},
                      key, algorithm="ES384", headers={"kid": KID})


@contextlib.contextmanager
def throwaway_postgres(tmp: Path):
    """A PostgreSQL cluster for this run only (initdb, pg_ctl) on 127.0.0.1 and a free port; its URL."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if not (initdb and pg_ctl):
        raise SystemExit("--postgres auto needs PostgreSQL's initdb and pg_ctl on PATH")
    data = tmp / "pgdata"
    data.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the cluster as the postgres user
        shutil.chown(data, "postgres")
        shutil.chown(tmp, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    subprocess.run([*as_user, initdb, "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync"], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run([*as_user, pg_ctl, "-D", str(data), "-l", str(tmp / "pg.log"), "-w", "-o",
                    f"-h 127.0.0.1 -p {port} -k {tmp} -c fsync=on -c max_connections=200", "start"], check=True,
                   stdout=subprocess.DEVNULL)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "fast", "stop"], stdout=subprocess.DEVNULL)


async def run(targets: list[str], key, clients: int, duration: float, body: bytes, aud_base: str | None = None) -> dict:
    """``clients`` concurrent clients spread over ``targets`` (instance URLs); tokens for ``aud_base`` (default: the target)."""
    # Tokens are signed before the clock starts (each is single-use): signing in the loop
    # would measure the client's CPU, which shares the machine with the server.
    base = aud_base or targets[0]
    tokens = [sign(key, base) for _ in range(min(int(duration * 700), MAX_REQUESTS))]
    latencies: list[float] = []
    errors = 0
    statuses: dict[str, int] = {}
    stop = time.monotonic() + duration

    async def one_client(target: str) -> None:
        # One client, one connection each: a shared httpx pool serialises 50 coroutines on its
        # own bookkeeping and would be measured instead of the server.
        nonlocal errors
        async with httpx.AsyncClient(base_url=target, timeout=10, limits=httpx.Limits(max_connections=1)) as client:
            while time.monotonic() < stop and len(latencies) + errors < MAX_REQUESTS:
                token = tokens.pop() if tokens else sign(key, base)
                t0 = time.perf_counter()
                try:
                    r = await client.post(SERVICE, content=body, headers={"Authorization": f"Bearer {token}",
                                                                          "Content-Type": "application/json"})
                    ok = r.status_code == 200 and b'"cards":[{' in r.content
                    statuses[str(r.status_code)] = statuses.get(str(r.status_code), 0) + 1
                except httpx.HTTPError as exc:
                    ok = False
                    statuses[type(exc).__name__] = statuses.get(type(exc).__name__, 0) + 1
                if ok:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1

    started = time.monotonic()
    await asyncio.gather(*(one_client(targets[i % len(targets)]) for i in range(clients)))
    elapsed = time.monotonic() - started
    q = statistics.quantiles(latencies, n=100) if len(latencies) >= 2 else [float("nan")] * 99
    return {"requests": len(latencies) + errors, "ok": len(latencies), "errors": errors, "statuses": statuses,
            "seconds": round(elapsed, 1), "rps": round(len(latencies) / elapsed, 1),
            "p50_ms": round(q[49] * 1000, 1), "p99_ms": round(q[98] * 1000, 1)}


def replayed_across(targets: list[str], key, aud_base: str, body: bytes) -> dict:
    """One token sent to the first instance, then to the second: the second must refuse it."""
    token = sign(key, aud_base)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    first = httpx.post(targets[0] + SERVICE, content=body, headers=headers, timeout=10)
    second = httpx.post(targets[1] + SERVICE, content=body, headers=headers, timeout=10)
    return {"first": first.status_code, "second": second.status_code,
            "refused": second.status_code == 401 and "replayed" in second.text}


def verify(audit_db: str) -> dict:
    """``pressor audit verify --json`` on the shared log."""
    out = subprocess.run([PRESSOR, "audit", "verify", "--json", "--audit-db", audit_db], capture_output=True, text=True,
                         timeout=600)
    try:
        report = json.loads(out.stdout)
    except ValueError:
        report = {"stderr": out.stderr.strip()[-500:]}
    return {"exit": out.returncode, **{k: report[k] for k in ("ok", "records", "feedback", "stderr") if k in report}}


def shared(args, key, body: bytes, tmp: Path, audit_db: str) -> dict:
    """``args.instances`` instances sharing ``audit_db`` behind one base_url: load, replay across, verify."""
    aud_base = "https://pressor.bench.invalid"
    # One replay cache for all instances: the PostgreSQL database itself, or a SQLite file beside the log.
    replay_cache = audit_db if audit_db.startswith("postgresql://") else str(tmp / "replay-cache.db")
    procs, targets = [], []
    try:
        for i in range(args.instances):
            proc, url = start(args.workers[0], key, tmp, audit_db=audit_db, aud_base=aud_base, name=f"instance-{i + 1}",
                              replay_cache=replay_cache)
            procs.append(proc)
            targets.append(url)
        asyncio.run(run(targets, key, min(args.clients, 5), 2.0, body, aud_base))  # warm-up, not counted
        figures = asyncio.run(run(targets, key, args.clients, args.duration, body, aud_base))
        figures["replay_across_instances"] = replayed_across(targets, key, aud_base, body)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)
    figures["verify"] = verify(audit_db)
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--instances", type=int, default=1,
                    help="instances sharing one audit log (PostgreSQL with --postgres, else one SQLite file here)")
    ap.add_argument("--postgres", metavar="URL|auto", help="the shared audit log and replay cache (auto: a throwaway cluster)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()
    if not (1 <= args.clients <= 500 and 0 < args.duration <= 600 and 1 <= args.instances <= 8):
        raise SystemExit("--clients 1..500, --duration up to 600 s, --instances 1..8")
    key = ec.generate_private_key(ec.SECP384R1())
    body = request_body()
    if args.instances > 1 or args.postgres:
        if args.postgres:
            import importlib.util
            if importlib.util.find_spec("pressor.engine.audit.store_postgres") is None:
                raise SystemExit("this build has no PostgreSQL audit backend (pressor.engine.audit.store_postgres)")
        with tempfile.TemporaryDirectory() as tmp:
            if args.postgres == "auto":
                store = throwaway_postgres(Path(tmp))
            else:  # without PostgreSQL: one SQLite file on this machine (instances on one disk only)
                store = contextlib.nullcontext(args.postgres or str(Path(tmp) / "shared-audit.db"))
            with store as audit_db:
                figures = shared(args, key, body, Path(tmp), audit_db)
        backend = "PostgreSQL" if args.postgres else "one SQLite file"
        figures.update(instances=args.instances, workers_each=args.workers[0], clients=args.clients, duration_s=args.duration,
                       cpus=os.cpu_count(), audit_backend=backend)
        if args.json:
            print(json.dumps(figures, indent=2))
            return
        print(f"{args.instances} instances x {args.workers[0]} worker(s) sharing {backend}, {args.clients} clients, "
              f"{args.duration:g} s, {os.cpu_count()} CPUs (client, servers and database share them)")
        print(f"requests {figures['requests']}  rps {figures['rps']}  p50 {figures['p50_ms']} ms  p99 {figures['p99_ms']} ms  "
              f"errors {figures['errors']} {figures['statuses']}")
        print(f"token replayed across instances refused: {figures['replay_across_instances']}")
        print(f"audit verify on the shared log: {figures['verify']}")
        return
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in args.workers:
            proc, base = start(workers, key, Path(tmp))
            try:
                asyncio.run(run([base], key, min(args.clients, 5), 2.0, body))  # warm-up, not counted
                cpu0 = server_cpu(proc.pid)
                results[workers] = asyncio.run(run([base], key, args.clients, args.duration, body))
                used = server_cpu(proc.pid) - cpu0
                ok = results[workers]["ok"]
                results[workers].update(cpu_ms_per_call=round(used / max(ok, 1) * 1000, 2),
                                        calls_per_cpu_second=round(ok / used, 1) if used else None,
                                        load_average=round(os.getloadavg()[0], 2))
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    if args.json:
        print(json.dumps({"clients": args.clients, "duration_s": args.duration, "cpus": os.cpu_count(),
                          "by_workers": results}, indent=2))
        return
    print(f"{args.clients} clients, {args.duration:g} s each, {os.cpu_count()} CPUs (client and server share them)")
    print(f"{'workers':>7} {'requests':>9} {'rps':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'CPU ms/call':>12} "
          f"{'calls/CPU-s':>12} {'load':>6}")
    for workers, r in results.items():
        print(f"{workers:>7} {r['requests']:>9} {r['rps']:>8} {r['p50_ms']:>8} {r['p99_ms']:>8} {r['errors']:>7} "
              f"{r['cpu_ms_per_call']:>12} {r['calls_per_cpu_second']:>12} {r['load_average']:>6}")


if __name__ == "__main__":
    main()
