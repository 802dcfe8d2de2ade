"""A real PostgreSQL server for the tests: a throw-away cluster in a temporary directory, on a
free port of 127.0.0.1 and a unix socket in that directory, run as the ``postgres`` user when
the tests run as root (PostgreSQL refuses to run as root). Stopped and removed at the end.

:func:`start` returns a :class:`Server`, or raises :class:`Unavailable` saying why not.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path


class Unavailable(Exception):
    """PostgreSQL cannot be started here (the reason is the message)."""


@dataclass
class Server:
    root: Path
    port: int
    bin: Path
    user: str | None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def pause(self) -> None:
        """Stop the server, keeping its data (a planned restart's first half: ``-m fast`` checkpoints)."""
        _run(self, [str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), "-m", "fast", "-w", "stop"])

    def resume(self) -> None:
        """Start the paused server again on the same port."""
        _run(self, _start_command(self))

    def stop(self) -> None:
        _run(self, [str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop"], check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def _run(server_or_user, args: list[str], check: bool = True) -> subprocess.CompletedProcess:
    user = server_or_user.user if isinstance(server_or_user, Server) else server_or_user
    command = ["runuser", "-u", user, "--", *args] if user else args
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd="/")
    if check and result.returncode != 0:
        raise Unavailable(f"{Path(args[0]).name} failed: {(result.stderr or result.stdout).strip()[-500:]}")
    return result


def _start_command(server: Server) -> list[str]:
    root = server.root
    return [str(server.bin / "pg_ctl"), "-D", str(root / "data"), "-l", str(root / "server.log"), "-w", "-t", "60",
            "-o", f"-p {server.port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
                  "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
            "start"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start() -> Server:
    """Initialise and start a cluster; :class:`Unavailable` with the reason when it cannot."""
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        raise Unavailable("psycopg is not installed (pip install -e '.[test]')") from exc
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    initdb = found[-1] if found else shutil.which("initdb")
    if not initdb:
        raise Unavailable("PostgreSQL is not installed (no initdb; .ci/run installs the Debian package postgresql)")
    bindir = Path(initdb).parent
    user = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError as exc:
            raise Unavailable("running as root and there is no 'postgres' user to run the server as") from exc
        user = "postgres"
    root = Path(tempfile.mkdtemp(prefix="pressor-pg-"))
    try:
        if user:
            entry = pwd.getpwnam(user)
            os.chown(root, entry.pw_uid, entry.pw_gid)
        os.chmod(root, 0o755)
        _run(user, [str(bindir / "initdb"), "-D", str(root / "data"), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                    "--no-sync", "--no-instructions"])
        for attempt in range(3):
            port = _free_port()
            server = Server(root, port, bindir, user)
            result = _run(user, _start_command(server), check=False)
            if result.returncode == 0:
                return server
        log = (root / "server.log").read_text(errors="replace")[-800:] if (root / "server.log").exists() else result.stderr
        raise Unavailable(f"the PostgreSQL server did not start: {log.strip()}")
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
