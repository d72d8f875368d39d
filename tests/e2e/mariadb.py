"""Real MariaDB servers for end-to-end tests: a temp datadir, loopback port, own socket, stopped by PID.

Never the system service: each instance gets a fresh datadir from
``mariadb-install-db`` and runs ``mariadbd --no-defaults`` with everything on
the command line. As root (CI) mariadbd refuses to start without ``--user``,
so it runs as root with ``--user=root``; otherwise as the calling user.
A Galera instance is a one-node cluster bootstrapped with an empty
``gcomm://`` address, its group-communication and IST ports on loopback.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from lbd.testing import free_port

MARIADBD = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
INSTALL_DB = shutil.which("mariadb-install-db") or "/usr/bin/mariadb-install-db"
CLIENT = shutil.which("mariadb") or "/usr/bin/mariadb"
GALERA_PROVIDER = "/usr/lib/galera/libgalera_smm.so"

# Small footprints: the tests start several servers on a 2-core machine.
_SMALL = ["--innodb-buffer-pool-size=16M", "--innodb-log-file-size=8M", "--max-connections=60",
          "--performance-schema=OFF"]


def missing() -> str | None:
    """Why MariaDB tests cannot run here (a program is missing), or None."""
    for path, what in ((MARIADBD, "mariadbd"), (INSTALL_DB, "mariadb-install-db"), (CLIENT, "the mariadb client")):
        if not os.path.exists(path):
            return "%s is not installed (%s)" % (what, path)
    return None


def galera_missing() -> str | None:
    """Why a Galera node cannot run here, or None."""
    return missing() or (None if os.path.exists(GALERA_PROVIDER) else
                         "galera-4 is not installed (%s)" % GALERA_PROVIDER)


class MariaDB:
    """One mariadbd on 127.0.0.1:``port`` with its own datadir under ``root``."""

    def __init__(self, galera: bool = False, port: int | None = None) -> None:
        self.galera = galera
        self.root = tempfile.mkdtemp(prefix="lbd-mariadb-")
        os.chmod(self.root, 0o755)
        self.datadir = os.path.join(self.root, "data")
        self.socket = os.path.join(self.root, "mysqld.sock")
        self.port = port or free_port()
        self.pidfile = os.path.join(self.root, "mysqld.pid")
        self.errlog = os.path.join(self.root, "error.log")
        self.proc: subprocess.Popen[bytes] | None = None
        self._gcomm_port = free_port()
        self._ist_port = free_port()

    def _user_args(self) -> list[str]:
        return ["--user=root"] if os.geteuid() == 0 else []

    def install(self) -> None:
        out = subprocess.run(
            [INSTALL_DB, "--no-defaults", "--datadir=" + self.datadir, "--auth-root-authentication-method=normal",
             "--skip-test-db", "--innodb-log-file-size=8M"] + self._user_args(),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
        if out.returncode != 0:
            raise RuntimeError("mariadb-install-db failed:\n" + out.stdout.decode(errors="replace"))

    def argv(self) -> list[str]:
        args = [MARIADBD, "--no-defaults", "--datadir=" + self.datadir, "--port=%d" % self.port,
                "--bind-address=127.0.0.1", "--socket=" + self.socket, "--pid-file=" + self.pidfile,
                "--log-error=" + self.errlog] + _SMALL + self._user_args()
        if self.galera:
            args += [
                "--wsrep-on=ON", "--wsrep-provider=" + GALERA_PROVIDER, "--wsrep-cluster-address=gcomm://",
                "--wsrep-cluster-name=lbd-test", "--wsrep-node-address=127.0.0.1",
                "--wsrep-provider-options=gmcast.listen_addr=tcp://127.0.0.1:%d;ist.recv_addr=127.0.0.1:%d;"
                "gcache.size=8M" % (self._gcomm_port, self._ist_port),
                "--binlog-format=ROW", "--default-storage-engine=InnoDB", "--innodb-autoinc-lock-mode=2",
            ]
        return args

    def start(self, timeout: float = 60.0) -> None:
        if not os.path.isdir(self.datadir):
            self.install()
        self.proc = subprocess.Popen(self.argv(), stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(self.root, "stderr.log"), "ab"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("mariadbd exited with %s:\n%s" % (self.proc.returncode, self.errors()))
            if self._ready():
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("mariadbd not ready after %ss:\n%s" % (timeout, self.errors()))

    def _ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                pass
        except OSError:
            return False
        try:
            if not self.galera:
                return self.sql("SELECT 1") == "1"
            return self.status("wsrep_local_state") == "4"
        except RuntimeError:
            return False

    def sql(self, statement: str, timeout: float = 20.0) -> str:
        """Run statements as root over the UNIX socket; the output, tab-separated, without headers."""
        out = subprocess.run([CLIENT, "--no-defaults", "-N", "-B", "-S", self.socket, "-uroot", "-e", statement],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(out.stderr.decode(errors="replace").strip())
        return out.stdout.decode().strip()

    def status(self, name: str) -> str:
        row = self.sql("SHOW GLOBAL STATUS LIKE '%s'" % name)
        return row.split("\t")[1] if "\t" in row else ""

    def errors(self) -> str:
        parts = []
        for name in ("stderr.log", "error.log"):
            p = os.path.join(self.root, name)
            if os.path.exists(p):
                with open(p, errors="replace") as f:
                    parts.append(f.read()[-4000:])
        return "\n".join(parts)

    def stop(self, timeout: float = 30.0) -> None:
        """A normal shutdown (SIGTERM to our PID), killed if it takes longer than ``timeout``."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: the server vanishes mid-whatever, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def client_query(port: int, user: str, password: str, statement: str, timeout: float = 20.0) -> tuple[int, str]:
    """Run ``statement`` with the mariadb command-line client over TCP to 127.0.0.1:``port``: (exit code, output)."""
    out = subprocess.run([CLIENT, "--no-defaults", "-N", "-B", "-h", "127.0.0.1", "-P", str(port),
                          "--protocol=TCP", "--connect-timeout=5", "-u", user, "-p" + password, "-e", statement],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    return out.returncode, out.stdout.decode(errors="replace").strip()
