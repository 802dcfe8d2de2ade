"""Helpers shared by the service tests: the small EHR process (FHIR server and JWKS) and forged tokens."""
from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import httpx
from jwt.utils import base64url_encode

HERE = Path(__file__).resolve().parent
FHIR_EXAMPLES = HERE.parent / "examples" / "fhir"
EXAMPLES_NOW = "2026-11-24T12:00:00Z"


class Ehr:
    """``tests/ehr_server.py`` running as its own process; ``base`` is its root URL."""

    def __init__(self, *args: str) -> None:
        bundles = [str(p) for p in sorted(FHIR_EXAMPLES.glob("*.json"))]
        self.proc = subprocess.Popen([sys.executable, str(HERE / "ehr_server.py"), *bundles, "--shift-to-now", EXAMPLES_NOW,
                                      *args], stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("port "):
            self.proc.kill()
            raise RuntimeError(f"the EHR did not start: {line!r}")
        self.base = f"http://127.0.0.1:{int(line.split()[1])}"
        self.fhir = f"{self.base}/fhir"
        self.http = httpx.Client(base_url=self.base, timeout=10)

    def control(self, **fail) -> None:
        self.http.post("/_control", json={"fail": fail}).raise_for_status()

    def reset(self) -> None:
        self.http.post("/_reset", json={}).raise_for_status()

    def requests(self, path_prefix: str = "") -> list[dict]:
        return [r for r in self.http.get("/_requests").json() if r["path"].startswith(path_prefix)]

    def publish(self, name: str, jwks: dict) -> str:
        self.http.put(f"/jwks/{name}.json", json=jwks).raise_for_status()
        return f"{self.base}/jwks/{name}.json"

    def stop(self) -> None:
        self.http.close()
        self.proc.terminate()
        self.proc.wait(timeout=10)


def public_jwk(key, kid: str, alg: str) -> dict:
    """The public JWK of ``key`` (EC or RSA) with its kid and alg."""
    from jwt.algorithms import ECAlgorithm, RSAAlgorithm

    algo = ECAlgorithm if hasattr(key.public_key(), "curve") else RSAAlgorithm
    jwk = json.loads(algo.to_jwk(key.public_key()))
    return {**jwk, "kid": kid, "alg": alg, "use": "sig"}


def forged(header: object, claims: object, signature: bytes = b"garbage-signature") -> str:
    """A token with any header and payload (JSON-encoded, or raw bytes) and a signature that is not one."""
    def part(x: object) -> str:
        raw = x if isinstance(x, bytes) else json.dumps(x).encode()
        return base64url_encode(raw).decode()
    return f"{part(header)}.{part(claims)}.{base64.urlsafe_b64encode(signature).decode().rstrip('=')}"
