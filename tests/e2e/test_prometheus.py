"""Metrics end to end: the real daemon, real Apaches, promtool and a real Prometheus server.

lbd runs under twistd with an http frontend over two Apaches; a Prometheus
started here (own config and data directory, loopback only, 1 s scrapes)
scrapes it, and its HTTP API must return the traffic, a server's state and a
histogram quantile.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Iterator

import pytest

from lbd.admin.client import query as admin_query
from lbd.testing import Apache, LbdProcess, free_port, wait_for_port

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
HAS_CHECKS = importlib.util.find_spec("lbd.health.checker") is not None

pytestmark = pytest.mark.skipif(not Apache.available(), reason="apache2 is not installed")


def lbd_config(workdir: str, port: int, metrics_port: int, servers: dict[str, int], prefix: str = "lbd") -> str:
    lines = "".join('%s = { address = "127.0.0.1:%d" }\n' % (n, p) for n, p in servers.items())
    return """\
[global]
grace = "2s"
[log]
access = "off"
[admin]
socket = "%s/admin.sock"
level = "admin"
[metrics]
bind = "127.0.0.1:%d"
prefix = "%s"
[defaults]
mode = "http"
[defaults.timeout]
connect = "1s"
check = "500ms"
[frontends.www]
bind = "127.0.0.1:%d"
default_backend = "web"
[backends.web.health]
type = "tcp"
interval = "300ms"
fastinter = "200ms"
downinter = "300ms"
rise = 1
fall = 2
[backends.web.servers]
%s""" % (workdir, metrics_port, prefix, port, lines)


def http_get(port: int, path: str = "/", timeout: float = 10.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class Prometheus:
    """A real Prometheus server scraping one target every second, on loopback, in a temp dir."""

    def __init__(self, target: str, workdir: str) -> None:
        self.port = free_port()
        self.workdir = workdir
        config = os.path.join(workdir, "prometheus.yml")
        with open(config, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
                    "scrape_configs:\n  - job_name: lbd\n    static_configs:\n      - targets: ['%s']\n" % target)
        self.log_path = os.path.join(workdir, "prometheus.log")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [PROMETHEUS, "--config.file=" + config, "--storage.tsdb.path=" + os.path.join(workdir, "data"),
             "--web.listen-address=127.0.0.1:%d" % self.port, "--log.level=warn"],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=workdir,
        )
        try:
            self._wait_ready()
        except Exception:
            self.stop()
            raise

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("prometheus exited: " + self.log())
            try:
                if http_get(self.port, "/-/ready", timeout=1)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("prometheus not ready: " + self.log())

    def log(self) -> str:
        self._log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def query(self, expr: str) -> list[dict[str, Any]]:
        status, body = http_get(self.port, "/api/v1/query?" + urllib.parse.urlencode({"query": expr}), timeout=5)
        doc = json.loads(body)
        assert status == 200 and doc["status"] == "success", doc
        return list(doc["data"]["result"])

    def wait_for(self, expr: str, check: Callable[[float], bool], timeout: float = 30.0) -> float:
        """Poll an instant query until its single value passes ``check``; return that value."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            result = self.query(expr)
            if len(result) == 1:
                value = float(result[0]["value"][1])
                last = value
                if check(value):
                    return value
            else:
                last = result
            time.sleep(0.25)
        raise AssertionError("%s: last result %r after %ss" % (expr, last, timeout))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


class Stack:
    """Two Apaches, lbd in front of them, ports and a work directory."""

    def __init__(self, prefix: str = "lbd") -> None:
        self.workdir = tempfile.mkdtemp(prefix="lbd-metrics-e2e-")
        os.chmod(self.workdir, 0o755)     # apache2 runs as www-data when we are root
        self.apaches = [Apache("Server %d here\n" % i, root=os.path.join(self.workdir, "apache%d" % i))
                        for i in (1, 2)]
        for a in self.apaches:
            a.start()
        self.port = free_port()
        self.metrics_port = free_port()
        text = lbd_config(self.workdir, self.port, self.metrics_port,
                          {"web1": self.apaches[0].port, "web2": self.apaches[1].port}, prefix)
        self.lbd = LbdProcess(text, workdir=self.workdir)
        wait_for_port(self.metrics_port)

    def admin(self, line: str) -> str:
        return admin_query(os.path.join(self.workdir, "admin.sock"), line)

    def close(self) -> None:
        self.lbd.stop()
        for a in self.apaches:
            a.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


@pytest.fixture
def stack() -> Iterator[Stack]:
    s = Stack()
    yield s
    s.close()


@pytest.fixture
def prometheus(stack: Stack) -> Iterator[Prometheus]:
    if not os.path.exists(PROMETHEUS):
        pytest.skip("prometheus is not installed")
    p = Prometheus("127.0.0.1:%d" % stack.metrics_port, stack.workdir)
    yield p
    p.stop()


def test_promtool_check_metrics(stack: Stack) -> None:
    """promtool check metrics reports nothing on a live scrape taken after traffic and a state change."""
    if not os.path.exists(PROMTOOL):
        pytest.skip("promtool is not installed")
    for _ in range(10):
        assert http_get(stack.port)[0] == 200
    stack.admin("set server web/web2 state drain")
    status, body = http_get(stack.metrics_port, "/metrics")
    assert status == 200 and b'lbd_server_status{proxy="web",server="web2",state="DRAIN"} 1.0' in body
    proc = subprocess.run([PROMTOOL, "check", "metrics"], input=body, capture_output=True, timeout=30)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")


def test_prometheus_sees_traffic_and_quantile(stack: Stack, prometheus: Prometheus) -> None:
    """After 20 requests through lbd, Prometheus has 20 HTTP requests, 20 2xx and a sane total-time quantile."""
    for _ in range(20):
        assert http_get(stack.port)[0] == 200
    assert prometheus.wait_for('lbd_frontend_http_requests_total{proxy="www"}', lambda v: v == 20) == 20
    assert prometheus.wait_for('lbd_frontend_http_responses_total{proxy="www",code="2xx"}', lambda v: v == 20) == 20
    assert prometheus.wait_for('lbd_frontend_sessions_total{proxy="www"}', lambda v: v >= 1) >= 1
    assert prometheus.wait_for('sum(lbd_server_sessions_total{proxy="web"})', lambda v: v >= 2) >= 2
    q = prometheus.wait_for('histogram_quantile(0.9, lbd_backend_total_time_seconds_bucket{proxy="web"})',
                            lambda v: v == v)
    assert 0 < q <= 10.0
    c = prometheus.wait_for('histogram_quantile(0.5, lbd_backend_connect_time_seconds_bucket{proxy="web"})',
                            lambda v: v == v)
    assert 0 < c <= 1.0
    r = prometheus.wait_for('histogram_quantile(0.5, lbd_backend_response_time_seconds_bucket{proxy="web"})',
                            lambda v: v == v)
    assert 0 < r <= 10.0
    count = prometheus.wait_for('lbd_backend_total_time_seconds_count{proxy="web"}', lambda v: v == 20)
    assert count == 20


def test_prometheus_sees_maint(stack: Stack, prometheus: Prometheus) -> None:
    """A server put in maintenance on the admin socket shows as lbd_server_status{state="MAINT"} 1."""
    prometheus.wait_for('lbd_server_status{proxy="web",server="web2",state="UP"}', lambda v: v == 1)
    stack.admin("set server web/web2 state maint")
    assert prometheus.wait_for('lbd_server_status{proxy="web",server="web2",state="MAINT"}', lambda v: v == 1) == 1
    assert prometheus.query('lbd_server_status{proxy="web",server="web2",state="UP"}')[0]["value"][1] == "0"


@pytest.mark.skipif(not HAS_CHECKS, reason="health checks (lbd/health/checker.py) have not landed yet")
def test_prometheus_sees_server_down(stack: Stack, prometheus: Prometheus) -> None:
    """Apache 2 stopped: health checks take web2 DOWN and Prometheus has lbd_server_status{state="DOWN"} 1."""
    prometheus.wait_for('lbd_server_check_status{proxy="web",server="web2",state="L4OK"}', lambda v: v == 1)
    stack.apaches[1].stop()
    assert prometheus.wait_for('lbd_server_status{proxy="web",server="web2",state="DOWN"}', lambda v: v == 1) == 1
    assert prometheus.wait_for('lbd_server_check_status{proxy="web",server="web2",state="L4CON"}',
                               lambda v: v == 1) == 1
    assert prometheus.wait_for('lbd_server_check_up_down_total{proxy="web",server="web2"}', lambda v: v >= 1) >= 1
    assert prometheus.query('lbd_server_status{proxy="web",server="web1",state="UP"}')[0]["value"][1] == "1"
    assert prometheus.query('lbd_backend_active_servers{proxy="web"}')[0]["value"][1] == "1"


def test_healthz_and_404(stack: Stack) -> None:
    """/healthz answers 200 OK; paths other than /metrics, / and /healthz answer 404."""
    assert http_get(stack.metrics_port, "/healthz") == (200, b"OK\n")
    assert [http_get(stack.metrics_port, p)[0] for p in ("/nope", "/metrics/x", "/favicon.ico")] == [404] * 3


def test_huge_request_refused(stack: Stack) -> None:
    """A request with a megabyte of header gets 431 at once, not a hang or a reset."""
    with socket.create_connection(("127.0.0.1", stack.metrics_port), timeout=10) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: lb\r\nX-Big: ")
        try:
            s.sendall(b"a" * (1 << 20))
        except OSError:
            pass
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), data[:200]


def test_prefix_haproxy(tmp_path: Any) -> None:
    """With prefix = "haproxy" the scrape uses HAProxy's exporter names."""
    if not Apache.available():
        pytest.skip("apache2 is not installed")
    apache = Apache("x\n")
    apache.start()
    port, mport = free_port(), free_port()
    lbd = LbdProcess(lbd_config(str(tmp_path), port, mport, {"web1": apache.port}, prefix="haproxy"),
                     workdir=str(tmp_path))
    try:
        wait_for_port(mport)
        body = http_get(mport, "/metrics")[1]
        assert b'\nhaproxy_server_status{proxy="web",server="web1",state="UP"} 1.0\n' in body
        assert b"\nlbd_" not in body
    finally:
        lbd.stop()
        apache.stop()


def test_healthz_503_while_stopping(tmp_path: Any) -> None:
    """During a graceful stop /healthz answers 503 until the last connection ends, then lbd exits."""
    apache = Apache("x\n", root=os.path.join(str(tmp_path), "apache"))
    os.chmod(str(tmp_path), 0o755)
    apache.start()
    port, mport = free_port(), free_port()
    text = """\
[global]
grace = "20s"
[log]
access = "off"
[admin]
socket = "off"
[metrics]
bind = "127.0.0.1:%d"
[frontends.db]
bind = "127.0.0.1:%d"
mode = "tcp"
default_backend = "web"
[backends.web]
mode = "tcp"
[backends.web.servers]
web1 = { address = "127.0.0.1:%d" }
""" % (mport, port, apache.port)
    lbd = LbdProcess(text, workdir=str(tmp_path))
    try:
        wait_for_port(mport)
        assert http_get(mport, "/healthz") == (200, b"OK\n")
        client = socket.create_connection(("127.0.0.1", port), timeout=10)   # a session lbd must let finish
        deadline = time.monotonic() + 10
        while b"lbd_frontend_current_sessions{proxy=\"db\"} 1.0" not in http_get(mport, "/metrics")[1]:
            assert time.monotonic() < deadline, "the tcp session never showed"
            time.sleep(0.05)
        lbd.signal(signal.SIGTERM)
        answers: list[tuple[int, bytes]] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (not answers or answers[-1] != (503, b"stopping\n")):
            answers.append(http_get(mport, "/healthz"))
            time.sleep(0.05)
        assert answers[-1] == (503, b"stopping\n")
        client.close()
        assert lbd.proc.wait(15) is not None
    finally:
        lbd.stop()
        apache.stop()
