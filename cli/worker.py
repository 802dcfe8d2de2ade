"""The warm CLI worker: an opt-in, per-user fork-server that answers ``pressor recommend`` without paying
for the start (imports, the pack, the first evaluation) every time.

Opt in with ``PRESSOR_WORKER=1``: the command is then handed to the user's worker if one is running (its
output is the same bytes, written by the worker's child straight to this process's own stdout and stderr,
whose descriptors are passed over the socket), and answered in this process otherwise, after which a
worker is started in the background for the next command. ``PRESSOR_WORKER=require`` fails (exit 70)
instead of answering in-process (for tests). ``pressor worker start|stop|status`` manage it by hand.

* The socket is ``$XDG_RUNTIME_DIR/pressor/worker-<venv>.sock`` (else ``/tmp/pressor-<uid>/``), in a
  directory only the user can enter (0700), itself 0600; the worker also checks each caller's uid
  (``SO_PEERCRED``), and a client refuses a directory that is not the user's own and private.
* Every request names the install's fingerprint (pressor's version, the interpreter, and the size and
  mtime of every module and schema file of pressor): a worker whose code differs answers "stale" and
  exits, and the command is answered in-process.
* The pack's files are re-read and re-hashed on every request (``load_pack`` does so); the worker keeps
  the loaded packs in memory under the same key as the pack cache (the SHA-256 of the files, their
  labels, pressor's code), so an edited rule file is a miss and is loaded from its files.
* Each request is answered by a child forked from the worker: the child takes the caller's working
  directory, environment, umask and descriptors 0-2, runs the click command as this process would, and
  sends back the exit code. A worker unused for ``PRESSOR_WORKER_IDLE`` seconds (default 900) exits.

This module is imported by every ``pressor`` run that opted in, before anything else: it imports only
the standard library's small modules.
"""
from __future__ import annotations

import marshal
import os
import struct
import sys
import zlib

import _socket  # the C module: socket.py builds its enums at import, a few ms of every start

TYPE_CHECKING = False  # not typing's: importing typing costs a few ms of every start (checkers read it as true)
if TYPE_CHECKING:
    import socket

#: Commands a worker answers (``--batch`` starts its own processes: answered in-process).
ROUTED = ("recommend",)
_ACCEPTED, _STALE = b"A", b"S"
_wanted = False  # this run was eligible but no worker answered: start one when done


def runtime_dir() -> str:
    """The directory holding the user's worker sockets (created private if missing)."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    where = os.path.join(base, "pressor") if base else f"/tmp/pressor-{os.getuid()}"
    try:
        os.mkdir(where, 0o700)
    except FileExistsError:
        pass
    return where


def _private(where: str) -> bool:
    """The directory is the user's own, a real directory, and nobody else may enter or write it."""
    import stat

    try:
        st = os.lstat(where)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and (st.st_mode & 0o077) == 0


def socket_path() -> str:
    venv = f"{zlib.crc32(sys.executable.encode()):08x}"
    return os.path.join(runtime_dir(), f"worker-{venv}.sock")


def fingerprint() -> str:
    """What the worker's code must match: the interpreter, each module and schema file's path, size and mtime
    (a few hundred microseconds of ``stat``; a checksum, not a digest: it detects change, it guards nothing)."""
    here = os.path.dirname(os.path.abspath(__file__))
    top = os.path.dirname(here)
    parts = [sys.executable]
    for name in ("cli", "engine", "schemas", "service"):
        stack = [os.path.join(top, name)]
        while stack:
            try:
                entries = sorted(os.scandir(stack.pop()), key=lambda e: e.name)
            except OSError:
                continue
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    if entry.name != "__pycache__":
                        stack.append(entry.path)
                elif entry.name.endswith((".py", ".json", ".so")):
                    st = entry.stat()
                    parts.append(f"{entry.path}\0{st.st_size}\0{st.st_mtime_ns}")
    text = "\n".join(parts).encode()
    return f"{len(parts)}-{zlib.crc32(text):08x}-{zlib.adler32(text):08x}"


def _eligible(argv: list[str]) -> bool:
    return bool(argv) and argv[0] in ROUTED and "--batch" not in argv


def _recv_exact(conn: "_socket.socket", n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def answer_with_worker(argv: list[str]) -> int | None:
    """The exit code of ``pressor ARGV`` as answered by the user's worker, or None to answer in this process
    (not a routed command, no worker, a stale one)."""
    global _wanted
    if not _eligible(argv):
        return None
    required = os.environ.get("PRESSOR_WORKER") == "require"
    _wanted = True
    try:
        path = socket_path()
        if not _private(os.path.dirname(path)):
            return _unanswered(required, "the worker's directory is not private to this user")
        conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            conn.connect(path)
        except OSError:
            conn.close()
            raise
    except OSError:
        return _unanswered(required, "no worker is running")
    try:
        umask = os.umask(0)
        os.umask(umask)
        # marshal: built in (json would import re); the worker reads it only from this user's processes
        request = marshal.dumps({
            "argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "umask": umask, "fingerprint": fingerprint(),
            "streams": [[getattr(s, "encoding", None) or "utf-8", getattr(s, "errors", None) or "strict"]
                        for s in (sys.stdin, sys.stdout, sys.stderr)],
        })
        try:
            conn.sendmsg([struct.pack("!I", len(request)) + request],
                         [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, struct.pack("3i", 0, 1, 2))])
            first = conn.recv(1)
        except OSError:
            return _unanswered(required, "the worker did not take the request")
        if first != _ACCEPTED:
            return _unanswered(required, "the worker is stale (pressor changed)" if first == _STALE else "the worker refused")
        _wanted = False
        try:
            code = _recv_exact(conn, 4)
        except KeyboardInterrupt:  # the child sees its socket close; its output so far stays written
            return 130
    finally:
        conn.close()
    if len(code) < 4:
        sys.stderr.write("pressor: the worker stopped before finishing the command (see `pressor worker status`)\n")
        return 70
    return struct.unpack("!i", code)[0]


def _unanswered(required: bool, why: str) -> int | None:
    if required:
        sys.stderr.write(f"pressor: PRESSOR_WORKER=require: {why}\n")
        return 70
    return None


def start_in_background(argv: list[str]) -> None:
    """Start the user's worker, detached, if this run wanted one and none answered."""
    if not _wanted:
        return
    import subprocess

    try:
        subprocess.Popen([sys.executable, "-m", "pressor.cli.worker", "serve"], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, cwd="/",
                         close_fds=True)
    except OSError:
        pass


# --- the worker ------------------------------------------------------------------------------------------


def _pid_path(path: str) -> str:
    return path[: -len(".sock")] + ".pid"


def running_pid(path: str | None = None) -> int | None:
    """The pid of the user's worker for this interpreter, if one answers on its socket."""
    import socket

    path = path or socket_path()
    try:
        with open(_pid_path(path)) as fh:
            pid = int(fh.read().strip())
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with probe:
            probe.connect(path)
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def serve(idle_s: float | None = None) -> None:
    """Run the worker until it has been idle ``idle_s`` seconds, is stale, or gets SIGTERM."""
    import gc
    import signal
    import socket

    path = socket_path()
    if not _private(os.path.dirname(path)) or running_pid(path) is not None:
        return  # a directory others could use, or another worker answers already
    idle_s = float(os.environ.get("PRESSOR_WORKER_IDLE", "900")) if idle_s is None else idle_s
    mine = fingerprint()
    os.chdir("/")
    from . import group  # noqa: F401  the click commands, imported once, before any fork
    from . import recommend  # noqa: F401
    from pressor.engine.evaluation import pack_cache

    pack_cache.keep_in_memory(4)
    _warm()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    temporary = f"{path}.{os.getpid()}"
    old = os.umask(0o177)
    try:
        listener.bind(temporary)
    finally:
        os.umask(old)
    os.chmod(temporary, 0o600)
    listener.listen(16)
    os.replace(temporary, path)
    with open(_pid_path(path) + ".tmp", "w") as fh:
        fh.write(str(os.getpid()))
    os.replace(_pid_path(path) + ".tmp", _pid_path(path))
    inode = os.stat(path).st_ino

    def stop(*_: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    gc.collect()
    gc.freeze()  # what every child shares stays shared (no collector writes to it)
    listener.settimeout(idle_s)
    spare = _Spare.fork(listener, "/")
    try:
        while True:
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                break
            conn.settimeout(None)
            going, spare = _handle(listener, conn, mine, spare)
            if not going:
                break
            try:
                if os.stat(path).st_ino != inode:
                    break  # another worker took the socket's name
            except OSError:
                break
    finally:
        listener.close()
        if spare is not None:
            spare.discard()
        try:
            if os.stat(path).st_ino == inode:
                os.unlink(path)
                os.unlink(_pid_path(path))
        except OSError:
            pass


def _warm() -> None:
    """Load the bundled pack and evaluate once (lazy imports, the engine, the compiled rules)."""
    from datetime import datetime, timezone

    from pressor.engine.evaluation.evaluate import evaluate
    from pressor.engine.evaluation.pack import load_pack

    try:
        pack = load_pack()
        evaluate(pack, {"patient": {"age_years": 60, "weight_kg": 70}, "vitals": {"map_mmhg": 58}},
                 now=datetime(2026, 1, 1, tzinfo=timezone.utc))
    except Exception:  # noqa: BLE001 - a worker that cannot warm up still answers (each child loads what it needs)
        pass
    # The command itself, once as JSON and once as text, output discarded: what it imports and builds on first
    # use (the YAML reader, the report, click's parsing) is then in every child from the start.
    _example(["--json"], [])


def _example(*variants: list[str]) -> None:
    """``pressor recommend`` on the bundled example, once per variant of its options, output discarded."""
    example = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "septic-shock-adult.yaml")
    if os.path.exists(example):
        out, err = sys.stdout, sys.stderr
        try:
            with open(os.devnull, "w") as sink:
                sys.stdout = sys.stderr = sink
                for extra in variants:
                    _run(["recommend", example, "--no-audit", "--now", "2026-01-01T00:00:00Z", *extra])
        finally:
            sys.stdout, sys.stderr = out, err


class _Spare:
    """The child that will answer the next request, forked ahead of it.

    A child forked at the request spends ~2 ms being forked and ~4 ms more on copy-on-write faults (the first
    write to each page the worker shares with it: reference counts, caches) than the same command in-process.
    The spare takes both before the request comes: once forked it runs the bundled example (output discarded),
    making the pages a command writes its own, then waits on its end of a socket pair for the worker to hand
    it a request (the caller's connection and descriptors, and the request). Its state is the worker's at the
    fork plus what the example left (as the worker's own warm-up left), so it answers as a child forked at the
    request would; the worker hands a request to a fresh fork instead when the request made it load a pack
    (the spare would not hold it)."""

    def __init__(self, pid: int, end: "socket.socket") -> None:
        self.pid, self.end = pid, end

    @classmethod
    def fork(cls, listener: "socket.socket", cwd: str) -> "_Spare | None":
        """A spare warmed up in ``cwd`` (the last request's: the pack's key holds its files' paths as seen from there)."""
        import socket

        try:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        except OSError:
            return None
        try:
            pid = os.fork()
        except OSError:
            ours.close()
            theirs.close()
            return None
        if pid == 0:
            ours.close()
            listener.close()
            _wait_for_request(theirs, cwd)  # never returns
        theirs.close()
        return cls(pid, ours)

    def hand(self, conn: "socket.socket", fds: list[int], request: bytes) -> bool:
        """Give the spare a request; False if it cannot take it (it died)."""
        import socket

        try:
            socket.send_fds(self.end, [struct.pack("!I", len(request))], [conn.fileno(), *fds])
            self.end.sendall(request)
            return True
        except OSError:
            return False
        finally:
            self.end.close()

    def discard(self) -> None:
        """The spare exits once it sees its end closed (after its warm-up)."""
        self.end.close()


def _wait_for_request(end: "socket.socket", cwd: str) -> None:
    import signal
    import socket

    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        os.chdir(cwd)
        _example(["--json"])
    except OSError:
        pass
    finally:
        os.chdir("/")
    try:
        head, fds, _, _ = socket.recv_fds(end, 4, 4)
        if len(head) < 4 or len(fds) != 4:
            os._exit(0)  # the worker discarded this spare, or stopped
        request = marshal.loads(_recv_exact(end, struct.unpack("!I", head)[0]))
        end.close()
        conn = socket.socket(fileno=fds[0])
    except Exception:  # noqa: BLE001 - a spare that cannot read its request leaves; the caller sees no answer
        os._exit(70)
    _child(conn, fds[1:], request)


def _handle(listener: "socket.socket", conn: "socket.socket", mine: str,
            spare: _Spare | None) -> tuple[bool, _Spare | None]:
    """Answer one connection (by the spare, or a child forked for it); False when the worker should stop
    (stale); and the spare for the next request."""
    import socket

    from pressor.engine.evaluation import pack_cache

    fds: list[int] = []
    try:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        if struct.unpack("3i", creds)[1] != os.getuid():
            return True, spare
        data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
        if len(data) < 4 or len(fds) != 3:
            return True, spare
        size = struct.unpack("!I", data[:4])[0]
        data = data[4:] + _recv_exact(conn, size - (len(data) - 4))
        request = marshal.loads(data)
        if not isinstance(request, dict):
            return True, spare
        if request.get("fingerprint") != mine:
            conn.sendall(_STALE)
            return False, spare
        loads = pack_cache.memory_loads()
        _preload(request)
        used, spare = spare, None
        if used is None or pack_cache.memory_loads() != loads or not used.hand(conn, fds, data):
            if used is not None:
                used.discard()
            pid = os.fork()
            if pid == 0:
                listener.close()
                _child(conn, fds, request)  # never returns
    except (OSError, ValueError, KeyError, EOFError, TypeError):
        return True, spare
    finally:
        for fd in fds:
            os.close(fd)
        conn.close()
    # Only now, the caller's connection and descriptors closed here: a spare holding them would keep the
    # caller's output open after its answer.
    return True, _Spare.fork(listener, request["cwd"])


def _preload(request: dict) -> None:
    """Re-read and re-hash the bundled pack's files as seen from the caller's directory (their labels are
    part of the key), so that the child finds it in memory unless a file changed."""
    from pressor.engine.evaluation.pack import load_pack

    try:
        os.chdir(request["cwd"])
        if "--rules" not in request["argv"] and "--profile" not in request["argv"]:
            load_pack()
    except Exception:  # noqa: BLE001 - the child reports whatever is wrong, as the command would
        pass
    finally:
        os.chdir("/")


def _child(conn: "socket.socket", fds: list[int], request: dict) -> None:
    import io
    import signal
    import time

    code = 70
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        time.tzset()
        os.umask(request["umask"])
        streams = []
        for fd, (encoding, errors) in enumerate(request["streams"]):
            raw = io.open(fd, "rb" if fd == 0 else "wb", buffering=-1, closefd=False)
            streams.append(io.TextIOWrapper(raw, encoding=encoding, errors=errors, line_buffering=fd > 0 and os.isatty(fd),
                                            write_through=fd == 2))
        sys.stdin, sys.stdout, sys.stderr = streams
        sys.argv = ["pressor", *request["argv"]]
        conn.sendall(_ACCEPTED)
        code = _run(request["argv"])
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:  # noqa: BLE001
            pass
        try:
            conn.sendall(struct.pack("!i", code))
        except OSError:
            pass
        os._exit(0)


def _run(argv: list[str]) -> int:
    """The command's exit code, as ``pressor ARGV`` would exit."""
    from .group import cli

    try:
        cli.main(args=argv, prog_name="pressor", standalone_mode=True)
    except SystemExit as exc:
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return exc.code
        sys.stderr.write(f"{exc.code}\n")
        return 1
    except BaseException:  # noqa: BLE001 - as the interpreter would: the traceback, exit 1
        import traceback

        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["serve"]:
        serve()
