"""The service's audit writer (issue 21, item 6): records prepared on the calling threads, in parallel, and
committed in the order of submit, several calls' records in one transaction (group commit), byte for byte what
one context compressing alone stores, and nothing acknowledged lost when the service is killed (SIGKILL) under
load. The load is bounded (a fixed number of calls, a deadline) and on 127.0.0.1."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import httpx
import pytest

import zstandard

from pressor.engine.audit import AuditLog, canonical_json
from pressor.engine.audit.compression import PackCodec, compression_parameters, pack_dictionary
from pressor.engine.audit.records import COLUMNS, pack_files, stored_sha256
from pressor.engine.evaluation.evaluate import evaluate
from pressor.engine.evaluation.pack import load_pack
from pressor.engine.model import Result
from pressor.service.app import AuditSink
from pressor.service.card_parts import dict_of

from .test_cds_service import PATIENT_VIEW, PRESSOR, configured_server, free_port, hook_request, public_pem, signing_key, token  # noqa: F401

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)
STATE = {"patient": {"age_years": 60, "weight_kg": 70}, "vitals": {"map_mmhg": 58}}


@pytest.fixture(scope="module")
def pack():
    return load_pack()


def test_concurrent_calls_share_commits_and_chain_in_one_valid_log(tmp_path, pack, monkeypatch):
    db = tmp_path / "audit.db"
    sink = AuditSink(db, "full")
    sink.open()
    commits = []
    real = AuditLog.append_prepared

    def counted(self, prepared):
        commits.append(len(prepared))
        time.sleep(0.005)  # a slow disk: calls queue up behind the commit in progress
        return real(self, prepared)

    monkeypatch.setattr(AuditLog, "append_prepared", counted)
    result = evaluate(pack, STATE, now=NOW)
    calls = 40

    def one(i: int) -> list[str]:
        ids, pending = sink.submit(pack, [(STATE, result)], now=NOW, user=f"user-{i}", hook_instance=f"hook-{i}")
        assert pending.result(timeout=30) == ids
        return ids

    with ThreadPoolExecutor(8) as pool:
        answered = [i for ids in pool.map(one, range(calls)) for i in ids]
    sink.close()
    assert sum(commits) == calls and len(commits) < calls  # some commits carried several calls' records
    with AuditLog.open(db, create=False) as log:
        assert log.verify().ok
        assert sorted(r.id for r in log.records()) == sorted(answered)
        # the record holds the same serialisation the cards were made from
        assert json.loads(log.record(answered[0]).result_json) == json.loads(json.dumps(result.to_dict()))


def test_one_result_serialised_once_for_cards_and_record(pack, monkeypatch):
    result = evaluate(pack, STATE, now=NOW)
    made = []
    real = Result.to_dict
    monkeypatch.setattr(Result, "to_dict", lambda self: made.append(1) or real(self))
    assert dict_of(result) is dict_of(result) and len(made) == 1


def test_a_failed_call_does_not_take_the_batch_with_it(tmp_path, pack):
    sink = AuditSink(tmp_path / "audit.db", "full")
    result = evaluate(pack, STATE, now=NOW)
    _, bad = sink.submit(pack, [(object(), result)], now=NOW, user="u", hook_instance="h-bad")  # not JSON
    ids, good = sink.submit(pack, [(STATE, result)], now=NOW, user="u", hook_instance="h-good")
    assert good.result(timeout=30) == ids
    with pytest.raises(Exception):  # noqa: B017 (whatever the store raised, the future carries it)
        bad.result(timeout=30)
    sink.close()
    with AuditLog.open(tmp_path / "audit.db", create=False) as log:
        assert [r.id for r in log.records()] == ids and log.verify().ok


@pytest.mark.parametrize("preparing", [1, 2])
def test_records_chain_in_the_order_of_submit_whichever_is_prepared_first(tmp_path, pack, monkeypatch, preparing):
    """A call queued first but prepared last still takes its place first: the calls behind it wait for it."""
    sink = AuditSink(tmp_path / "audit.db", "full")
    sink.PREPARING = preparing
    result = evaluate(pack, STATE, now=NOW)
    release = threading.Event()
    real = AuditLog.prepare

    def slow_for_first(self, *args, **kwargs):
        if kwargs["user"] == "first":
            release.wait(timeout=30)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(AuditLog, "prepare", slow_for_first)

    def call(user: str) -> threading.Thread:
        thread = threading.Thread(target=sink.submit, args=(pack, [(STATE, result)]),
                                  kwargs={"now": NOW, "user": user, "hook_instance": user})
        thread.start()
        return thread

    callers = [call("first")]
    while not sink._queue:  # the first call is queued (and preparing)
        time.sleep(0.001)
    callers += [call(f"later-{i}") for i in range(3)]
    while len(sink._queue) < 4:
        time.sleep(0.001)
    queued = list(sink._queue)
    assert not any(job.future.done() for job in queued)  # all behind the first call
    release.set()
    ids = [job.future.result(timeout=30)[0] for job in queued]
    for thread in callers:
        thread.join(timeout=30)
    sink.close()
    with AuditLog.open(tmp_path / "audit.db", create=False) as log:
        assert [r.id for r in log.records()] == ids and [r.user for r in log.records()][0] == "first"
        assert log.verify().ok


def test_calls_from_many_threads_store_what_one_context_compressing_alone_stores(tmp_path, pack):
    """Records prepared at once on several threads (each compressing in its own zstd context, on one reading
    connection) are stored byte for byte as format 6 defines them: each text one frame of the pack's dictionary
    with :func:`compression_parameters`, as a context of its own made from the recipe makes it, and the record's
    hashes over those bytes; the chain verifies."""
    sink = AuditSink(tmp_path / "audit.db", "full")
    sink.PREPARING = 4
    states = [{**STATE, "vitals": {"map_mmhg": 50 + i % 20}} for i in range(48)]
    results = [evaluate(pack, state, now=NOW) for state in states]

    def one(i: int) -> str:
        ids, pending = sink.submit(pack, [(states[i], results[i])], now=NOW, user=f"u{i}", hook_instance=f"h{i}")
        pending.result(timeout=30)
        return ids[0]

    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(one, range(len(states))))
    sink.close()
    raw = pack_dictionary(pack_files(pack)["files"])
    alone = zstandard.ZstdCompressor(compression_params=compression_parameters(len(raw)),
                                     dict_data=zstandard.ZstdCompressionDict(raw, dict_type=zstandard.DICT_TYPE_RAWCONTENT))
    by_id = dict(zip(ids, range(len(states))))
    with AuditLog.open(tmp_path / "audit.db", create=False) as log:
        assert log.verify().ok
        rows = [dict(zip(COLUMNS, row)) for row in log.stored_rows()]
    assert sorted(row["id"] for row in rows) == sorted(ids)
    for row in rows:
        i = by_id[row["id"]]
        texts = (canonical_json(states[i]), canonical_json(results[i].to_dict()))
        assert (bytes(row["input_json"]), bytes(row["result_json"])) == tuple(alone.compress(t.encode()) for t in texts)
        assert row["stored_sha256"] == stored_sha256(bytes(row["input_json"]), bytes(row["result_json"]))


def test_a_codec_compresses_from_many_threads_as_from_one(pack):
    codec = PackCodec(pack_files(pack)["files"])
    texts = [canonical_json({"n": i, "text": "norepinephrine " * (i * 200)}) for i in range(64)]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(codec.compress, texts))
    assert together == [PackCodec(pack_files(pack)["files"]).compress(t) for t in texts]
    assert [codec.decompress(frame) for frame in together] == texts


@pytest.mark.slow
def test_sigkill_under_load_loses_no_acknowledged_record(tmp_path, signing_key):
    """``require_audit``: a 200 means the call's records are committed. Kill the service with SIGKILL while
    calls are in flight; every record id a 200 named is in the log afterwards, and the chain verifies."""
    port = free_port()
    db = tmp_path / "audit.db"
    srv = configured_server(tmp_path, public_pem(signing_key), port=port, audit_db=str(db), require_audit=True)
    srv.stop()  # only its configuration file is wanted: this test starts (and kills) its own server
    config = tmp_path / f"serve-{port}.json"
    proc = subprocess.Popen([PRESSOR, "serve", "--port", str(port), "--config", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "PRESSOR_AUDIT_DB": str(db)})
    base = f"http://127.0.0.1:{port}"
    path = f"/cds-services/{PATIENT_VIEW}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        body = json.dumps(hook_request("septic-adult"))
        acknowledged: list[str] = []
        lock = threading.Lock()
        stop = threading.Event()
        stop_at = time.monotonic() + 60  # bounded in time as well as in count

        def client(n: int) -> None:
            with httpx.Client(base_url=base, timeout=10) as http:
                for _ in range(n):
                    if stop.is_set() or time.monotonic() > stop_at:
                        return
                    try:
                        r = http.post(path, content=body, headers={"Authorization": f"Bearer {token(signing_key, base + path)}",
                                                                   "Content-Type": "application/json"})
                    except httpx.TransportError:
                        return
                    if r.status_code == 200:
                        with lock:
                            acknowledged.extend(r.json()["extension"]["pressor"]["audit"]["records"])

        threads = [threading.Thread(target=client, args=(60,)) for _ in range(6)]
        for t in threads:
            t.start()
        while time.monotonic() < stop_at:  # kill once enough calls were answered, mid-load
            with lock:
                if len(acknowledged) >= 40:
                    break
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        stop.set()
        for t in threads:
            t.join(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    assert len(acknowledged) >= 40
    with AuditLog.open(db, create=False) as log:
        assert log.verify().ok
        stored = {r.id for r in log.records()}
    assert set(acknowledged) <= stored, f"{len(set(acknowledged) - stored)} acknowledged records lost"
