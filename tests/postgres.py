"""A throw-away PostgreSQL server for tests: Debian's ``postgresql`` package (installed by
.ci/run where it can be), started on a free port in a temporary folder, removed afterwards.
PostgreSQL refuses to run as root, so as root it runs as the package's ``postgres`` user."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


def find_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def why_not() -> str | None:
    """Why no server can be started here (None: it can)."""
    if find_bin("initdb") is None or find_bin("pg_ctl") is None:
        return (
            "PostgreSQL is not installed (no initdb/pg_ctl): .ci/run installs Debian's "
            "postgresql package where it runs as root or with sudo; apt-get install postgresql"
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run the server as"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server() -> Iterator[str]:
    """Yields ``postgresql://postgres@127.0.0.1:PORT/postgres`` (trust auth, local only)."""
    folder = Path(tempfile.mkdtemp(prefix="cifar-lightning-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(folder, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data, port = folder / "data", _free_port()

    def run(*args: str) -> None:
        subprocess.run([*prefix, *args], check=True, capture_output=True, timeout=120)

    # UTF8 whatever the locale: under LANG=C (as CI runs) initdb picks SQL_ASCII, where psycopg
    # hands text back as bytes and SQLAlchemy cannot read the server's version.
    run(find_bin("initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync",
        "-E", "UTF8", "--locale=C")  # fmt: skip
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    run(find_bin("pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w",
        "start")  # fmt: skip
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            run(find_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)
