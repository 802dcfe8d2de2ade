"""Load check of ``pressor serve`` (not a test): p50/p99 latency and errors under concurrent clients.

Starts the server on 127.0.0.1 (a free port) with 1, then 2 workers, a trusted ES384 key
made for the run, and sends the septic-adult patient-view call (each with a fresh signed
token) from N concurrent asyncio clients for a fixed time. Bounded in time and count;
talks to the loopback address only. Client and server share this machine's cores, so the
figures are a floor, not a capacity.

    python bench/load.py                      # 50 clients, 30 s, 1 and 2 workers
    python bench/load.py --clients 10 --duration 5 --workers 1 --json
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
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


def start(workers: int, key, tmp: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    config = tmp / f"serve-{workers}.json"
    config.write_text(json.dumps({"base_url": base, "issuers": [{"iss": ISS, "keys": [{"kid": KID, "pem": pem}]}],
                                  "audit_db": str(tmp / f"audit-{workers}.db")}))
    exe = str(Path(sys.executable).with_name("pressor"))
    proc = subprocess.Popen([exe, "serve", "--port", str(port), "--workers", str(workers), "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return proc, base
        except httpx.TransportError:
            time.sleep(0.2)
    proc.terminate()
    raise SystemExit("server did not start within 60 s")


def sign(key, base: str) -> str:
    now = int(time.time())
    return jwt.encode({"iss": ISS, "aud": base + SERVICE, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())},
                      key, algorithm="ES384", headers={"kid": KID})


async def run(base: str, key, clients: int, duration: float, body: bytes) -> dict:
    # Tokens are signed before the clock starts (each is single-use): signing in the loop
    # would measure the client's CPU, which shares the machine with the server.
    tokens = [sign(key, base) for _ in range(min(int(duration * 700), MAX_REQUESTS))]
    latencies: list[float] = []
    errors = 0
    statuses: dict[str, int] = {}
    stop = time.monotonic() + duration

    async def one_client() -> None:
        # One client, one connection each: a shared httpx pool serialises 50 coroutines on its
        # own bookkeeping and would be measured instead of the server.
        nonlocal errors
        async with httpx.AsyncClient(base_url=base, timeout=10, limits=httpx.Limits(max_connections=1)) as client:
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
    await asyncio.gather(*(one_client() for _ in range(clients)))
    elapsed = time.monotonic() - started
    q = statistics.quantiles(latencies, n=100) if len(latencies) >= 2 else [float("nan")] * 99
    return {"requests": len(latencies) + errors, "ok": len(latencies), "errors": errors, "statuses": statuses,
            "seconds": round(elapsed, 1), "rps": round(len(latencies) / elapsed, 1),
            "p50_ms": round(q[49] * 1000, 1), "p99_ms": round(q[98] * 1000, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()
    if not (1 <= args.clients <= 500 and 0 < args.duration <= 600):
        raise SystemExit("--clients 1..500 and --duration up to 600 s")
    key = ec.generate_private_key(ec.SECP384R1())
    body = request_body()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in args.workers:
            proc, base = start(workers, key, Path(tmp))
            try:
                asyncio.run(run(base, key, min(args.clients, 5), 2.0, body))  # warm-up, not counted
                results[workers] = asyncio.run(run(base, key, args.clients, args.duration, body))
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    if args.json:
        print(json.dumps({"clients": args.clients, "duration_s": args.duration, "cpus": os.cpu_count(),
                          "by_workers": results}, indent=2))
        return
    print(f"{args.clients} clients, {args.duration:g} s each, {os.cpu_count()} CPUs (client and server share them)")
    print(f"{'workers':>7} {'requests':>9} {'rps':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for workers, r in results.items():
        print(f"{workers:>7} {r['requests']:>9} {r['rps']:>8} {r['p50_ms']:>8} {r['p99_ms']:>8} {r['errors']:>7}")


if __name__ == "__main__":
    main()
