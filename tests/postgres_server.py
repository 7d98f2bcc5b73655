"""A real PostgreSQL server for tests: initdb in a temp dir, listening on a free loopback port.

`initdb` refuses to run as root, so as root the cluster belongs to the `postgres` user (Debian's package
creates it); as anyone else it belongs to them. For tests fsync is off (they check our SQL, not the disk);
benchmarks ask for a `durable` server, which commits to disk as a production one does.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg


def binaries() -> Path:
    """The folder of `initdb` and `pg_ctl` (Debian's /usr/lib/postgresql/<version>/bin, else the PATH).

    Raises:
        RuntimeError: PostgreSQL is not installed (`.ci/setup` installs it as root).
    """
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise RuntimeError("PostgreSQL is not installed (initdb not found): run .ci/setup as root, or "
                       "apt-get install postgresql")


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One PostgreSQL cluster; `database()` gives a fresh empty database's URL."""

    def __init__(self, durable: bool = False) -> None:
        self.bin = binaries()
        self.root = Path(tempfile.mkdtemp(prefix="ezstats-pg-"))
        self.port = free_port()
        self._names = itertools.count(1)
        self._user = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        if self._user is not None:
            os.chmod(self.root, 0o755)
            os.chown(self.root, self._user.pw_uid, self._user.pw_gid)
        self.data = self.root / "data"
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "ezstats", "--locale=C", "-E", "UTF8",
                  "--no-sync")
        fast = "" if durable else "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-o",
                  f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 {fast}-c max_connections=300",
                  "start")

    def url(self, database: str = "postgres") -> str:
        """The URL of one database of the server."""
        return f"postgresql://ezstats@127.0.0.1:{self.port}/{database}"

    def database(self) -> str:
        """An empty control store's URL: a new schema, first on the URL's search path (much cheaper than a
        database, which copies its template)."""
        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as con:
            con.execute(f"CREATE SCHEMA {name}")
        return f"{self.url()}?options=-csearch_path%3D{name}"

    def stop(self) -> None:
        """Stop the server at once and delete its folder."""
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin / program), *args]
        if self._user is not None:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed ({done.returncode}): {done.stderr or done.stdout}")
