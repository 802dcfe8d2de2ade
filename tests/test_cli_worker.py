"""The warm CLI worker (issue 21, item 4): opt-in, per-user, private socket; the same bytes and exit
code as the command answered in-process; pack files re-hashed on every request; a stale worker (pressor's
code changed) is not used."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRESSOR = str(Path(sys.executable).with_name("pressor"))
EXAMPLE = str(ROOT / "examples" / "septic-shock-adult.yaml")
NOW = ["--now", "2026-01-01T00:00:00Z"]


@pytest.fixture(scope="module")
def runtime():
    """A private runtime directory (short: a socket's path is limited to 108 bytes) with a worker running."""
    where = tempfile.mkdtemp(prefix="pw-")
    os.chmod(where, 0o700)
    env = {**os.environ, "XDG_RUNTIME_DIR": where}
    env.pop("PRESSOR_WORKER", None)
    started = subprocess.run([PRESSOR, "worker", "start"], env=env, capture_output=True, text=True, timeout=60)
    assert started.returncode == 0, started.stderr
    yield env
    subprocess.run([PRESSOR, "worker", "stop"], env=env, capture_output=True, timeout=60)
    shutil.rmtree(where, ignore_errors=True)


def run(env: dict, args: list[str], *, worker: bool, stdin: bytes | None = None) -> tuple[int, bytes, bytes]:
    env = {**env, "PRESSOR_WORKER": "require"} if worker else env
    done = subprocess.run([PRESSOR, *args], env=env, input=stdin, capture_output=True, timeout=120, cwd=ROOT)
    return done.returncode, done.stdout, done.stderr


@pytest.mark.parametrize("args", [
    ["recommend", EXAMPLE, "--json", "--no-audit", *NOW],
    ["recommend", EXAMPLE, "--no-audit", *NOW],
    ["recommend", "examples/septic-no-infusions.yaml", "--json", "--no-audit", "--include-draft", *NOW],
    ["recommend", "no-such-file.yaml", "--json", "--no-audit"],
    ["recommend", "--help"],
], ids=["json", "text", "relative-path-drafts", "missing-file", "help"])
def test_the_worker_answers_with_the_same_bytes_and_exit_code(runtime, args):
    assert run(runtime, args, worker=True) == run(runtime, args, worker=False)


def test_stdin_and_a_bad_state_are_answered_the_same(runtime):
    bad = json.dumps({"vitals": {"map_mmhg": "low"}}).encode()
    good = Path(EXAMPLE).read_bytes()
    for data in (bad, good):
        args = ["recommend", "-", "--json", "--no-audit", *NOW]
        assert run(runtime, args, worker=True, stdin=data) == run(runtime, args, worker=False, stdin=data)


def test_the_socket_is_private(runtime):
    (sock,) = Path(runtime["XDG_RUNTIME_DIR"], "pressor").glob("worker-*.sock")
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700


def test_an_edited_rule_file_is_read_again(runtime, tmp_path):
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules)
    args = ["recommend", EXAMPLE, "--json", "--no-audit", "--rules", str(rules), *NOW]
    before = run(runtime, args, worker=True)
    target = next(p for p in sorted(rules.glob("*.yaml")) if "summary:" in p.read_text())
    text = target.read_text()
    line = next(x for x in text.splitlines() if x.strip().startswith("summary:"))
    target.write_text(text.replace(line, line + " (edited)", 1))
    after = run(runtime, args, worker=True)
    assert after == run(runtime, args, worker=False)
    assert after[1] != before[1] and b"(edited)" in after[1]


def installed_module() -> Path:
    """A module of the pressor that the ``pressor`` command runs (the source tree, or an installed wheel)."""
    where = subprocess.run([sys.executable, "-c", "import pressor.engine.evaluation.units as m; print(m.__file__)"],
                           capture_output=True, text=True, timeout=60, check=True, cwd=tempfile.gettempdir())
    return Path(where.stdout.strip())


def test_a_stale_worker_is_not_used_and_no_worker_means_in_process(runtime):
    args = ["recommend", EXAMPLE, "--json", "--no-audit", *NOW]
    expected = run(runtime, args, worker=False)
    module = installed_module()
    st = module.stat()
    try:  # pressor's code "changed": the worker says it is stale and exits
        os.utime(module, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        code, out, err = run(runtime, args, worker=True)
        assert code == 70 and b"stale" in err and out == b""
        assert run({**runtime, "PRESSOR_WORKER": "1"}, args, worker=False) == expected  # answered in-process
    finally:
        os.utime(module, ns=(st.st_atime_ns, st.st_mtime_ns))
    # the in-process run above started a new worker in the background
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if subprocess.run([PRESSOR, "worker", "status"], env=runtime, capture_output=True).returncode == 0:
            break
        time.sleep(0.1)
    else:
        pytest.fail("no worker was started in the background")
    # (it may have read the code while the module looked changed: start one that surely matches)
    subprocess.run([PRESSOR, "worker", "stop"], env=runtime, capture_output=True, timeout=60)
    assert subprocess.run([PRESSOR, "worker", "start"], env=runtime, capture_output=True, timeout=60).returncode == 0
    assert run(runtime, args, worker=True) == expected


def _spares(env: dict) -> list[int]:
    status = subprocess.run([PRESSOR, "worker", "status", "--json"], env=env, capture_output=True, text=True, timeout=60)
    pid = json.loads(status.stdout)["pid"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if children:
            return [int(c) for c in children]
        time.sleep(0.05)
    return []


def test_the_spare_child_answers_and_a_dead_one_is_replaced(runtime):
    """The worker forks the child for the next request ahead of it (warmed up, waiting): requests in a row are
    answered by spares with the same bytes; a spare that died is replaced and the request still answered."""
    args = ["recommend", EXAMPLE, "--json", "--no-audit", *NOW]
    expected = run(runtime, args, worker=False)
    for _ in range(3):
        assert run(runtime, args, worker=True) == expected
    spares = _spares(runtime)
    assert len(spares) == 1
    os.kill(spares[0], 9)
    assert run(runtime, args, worker=True) == expected
    assert run(runtime, args, worker=True) == expected
