"""Shared helpers for lbd's tests: free ports, running lbd and Apache as real processes.

Used by tests/ and tests/e2e/ (like treq.testing): not copied setUp code.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Sequence

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TWISTD_RUN = "from twisted.scripts.twistd import run; run()"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (bind to 0 and release)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 15.0, proc: subprocess.Popen | None = None) -> None:
    """Wait until something accepts on host:port; raise with a reason otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("process exited with %s before listening on %d" % (proc.returncode, port))
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nothing listens on %s:%d after %ss" % (host, port, timeout))


def twistd_argv(config_path: str, python: str | None = None, extra: Sequence[str] = ()) -> list[str]:
    """``twistd -n --pidfile= lbd -c FILE`` for an interpreter (default: this one)."""
    return [python or sys.executable, "-c", TWISTD_RUN, "-n", "--pidfile=", *extra, "lbd", "-c", config_path]


def lbd_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


class LbdProcess:
    """lbd running under twistd in the foreground, logging to a file."""

    def __init__(self, config_text: str, workdir: str | None = None,
                 python: str | None = None) -> None:
        self.workdir = workdir or tempfile.mkdtemp(prefix="lbd-test-")
        self.config_path = os.path.join(self.workdir, "lbd.toml")
        with open(self.config_path, "w") as f:
            f.write(config_text)
        self.log_path = os.path.join(self.workdir, "lbd.log")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            twistd_argv(self.config_path, python), stdout=self._log, stderr=subprocess.STDOUT,
            env=lbd_env(), cwd=self.workdir,
        )
        # "lbd ready" is logged once every listener is bound and the reactor
        # runs; probing ports with a connection would count as a client.
        try:
            self.wait_for_log("lbd ready")
        except Exception:
            self.stop()
            raise RuntimeError("lbd did not start:\n" + self.log())

    def wait_for_log(self, text: str, timeout: float = 20.0, after: int = 0) -> int:
        """Wait until ``text`` appears in the log (past offset ``after``); return its end offset."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log()
            i = log.find(text, after)
            if i >= 0:
                return i + len(text)
            if self.proc.poll() is not None:
                raise RuntimeError("lbd exited with %s" % self.proc.returncode)
            time.sleep(0.05)
        raise RuntimeError("%r not in lbd's log after %ss" % (text, timeout))

    def write_config(self, text: str) -> None:
        with open(self.config_path, "w") as f:
            f.write(text)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        code = self.proc.returncode
        # twistd re-raises the stop signal after a clean shutdown, so the exit
        # status says "killed by SIGTERM"; the log tells a clean stop apart.
        if code == -signal.SIGTERM and "Server Shut Down." in self.log():
            return 0
        return code


APACHE_CONF = """\
ServerRoot "{root}"
Listen 127.0.0.1:{port}
PidFile "{root}/apache.pid"
ErrorLog "{root}/error.log"
LogLevel warn
{user}
LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so
LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so
LoadModule dir_module /usr/lib/apache2/modules/mod_dir.so
LoadModule mime_module /usr/lib/apache2/modules/mod_mime.so
LoadModule headers_module /usr/lib/apache2/modules/mod_headers.so
LoadModule setenvif_module /usr/lib/apache2/modules/mod_setenvif.so
TypesConfig /etc/mime.types
ServerName localhost
DirectoryIndex index.html
KeepAlive On
MaxKeepAliveRequests 0
KeepAliveTimeout 30
StartServers 1
ServerLimit 2
ThreadsPerChild 25
MaxRequestWorkers 50
LogFormat "%h %{{Host}}i \\"%r\\" %>s %b \\"%{{X-Forwarded-For}}i\\"" lbdtest
CustomLog "{root}/access.log" lbdtest
<VirtualHost 127.0.0.1:{port}>
    ServerName example.com
    DocumentRoot "{root}/htdocs"
    <Directory "{root}/htdocs">
        Require all granted
    </Directory>
</VirtualHost>
"""


class Apache:
    """A real apache2 on a loopback port with its own ServerRoot, serving ``index_text``."""

    def __init__(self, index_text: str, port: int | None = None, root: str | None = None) -> None:
        self.binary = shutil.which("apache2") or "/usr/sbin/apache2"
        self.port = port or free_port()
        self.root = root or tempfile.mkdtemp(prefix="lbd-apache-")
        os.makedirs(os.path.join(self.root, "htdocs"), exist_ok=True)
        with open(os.path.join(self.root, "htdocs", "index.html"), "w") as f:
            f.write(index_text)
        user = ""
        if os.geteuid() == 0:
            user = "User www-data\nGroup www-data"
            os.chmod(self.root, 0o755)
            os.chmod(os.path.join(self.root, "htdocs"), 0o755)
        with open(os.path.join(self.root, "httpd.conf"), "w") as f:
            f.write(APACHE_CONF.format(root=self.root, port=self.port, user=user))
        self.proc: subprocess.Popen | None = None

    @staticmethod
    def available() -> bool:
        return os.path.exists(shutil.which("apache2") or "/usr/sbin/apache2")

    def start(self) -> None:
        env = dict(os.environ, APACHE_RUN_DIR=self.root, APACHE_LOCK_DIR=self.root, APACHE_LOG_DIR=self.root)
        self.proc = subprocess.Popen(
            [self.binary, "-f", os.path.join(self.root, "httpd.conf"), "-DFOREGROUND"],
            env=env, stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.root, "stderr.log"), "ab"),
        )
        try:
            wait_for_port(self.port, proc=self.proc)
        except RuntimeError:
            raise RuntimeError("apache2 did not start: " + self.errors())

    def errors(self) -> str:
        out = []
        for name in ("stderr.log", "error.log"):
            p = os.path.join(self.root, name)
            if os.path.exists(p):
                with open(p, errors="replace") as f:
                    out.append(f.read())
        return "\n".join(out)

    def access_log(self) -> str:
        p = os.path.join(self.root, "access.log")
        if not os.path.exists(p):
            return ""
        with open(p, errors="replace") as f:
            return f.read()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)   # apache2's graceful "stop"
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


# ---------------------------------------------------------------- in-memory fakes

class FakeTCPTransport(StringTransport):
    """A StringTransport with the TCP extras lbd calls: half-close and TCP_NODELAY."""

    def __init__(self, peer: tuple[str, int] = ("10.0.0.1", 40000), host: tuple[str, int] = ("127.0.0.1", 8080)) -> None:
        super().__init__(hostAddress=IPv4Address("TCP", *host), peerAddress=IPv4Address("TCP", *peer))
        self.write_closed = False
        self.nodelay = False
        self.aborted = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.nodelay = enabled

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()
