#!/usr/bin/python3
"""lbd's benchmark against HAProxy 2.6 in the same run (issue 9).

    /usr/bin/python3 bench/run.py [--quick] [--python PY ...] [--repeat N] [--duration S]
                                  [--only direct,haproxy,lbd] [--tests ka50,c1,newconn,bulk,idle,metrics]

Everything runs on loopback from a temporary directory and is stopped by PID:
nginx (one process, two ports, a 3-byte answer on ``/`` and a 100 MiB file),
HAProxy (``nbthread 1``, ``http-reuse safe``) and lbd under twistd, with wrk as
the load generator.  The balancer under test is pinned to CPU 0, nginx, wrk
and this script to CPU 1.  Each test runs for ``direct`` (wrk to nginx),
``haproxy`` and ``lbd`` in http and tcp mode, interleaved and repeated; the
median is reported, and every ratio is the median of the per-repeat ratios to
HAProxy measured in the same repeat.  A run whose CPU steal (``/proc/stat``)
exceeds ``--steal-max`` percent, or during which other processes took more
than ``--others-max`` percent of a benchmark CPU, is run again, at most twice
(``--steal-retries``); the attempt with the least of both is kept.

Also measured: the RSS of lbd (and HAProxy) holding 10,000 idle keep-alive
client connections, and the time of ``GET /metrics`` with 100 backends x 10
servers (HAProxy's built-in Prometheus exporter beside it).

Writes ``bench/results/<UTC timestamp>.json`` (every run, every attempt) and
``bench/results/latest.md`` (the table), and prints the table.  Standard
library only; needs nginx, haproxy and wrk (Debian packages of those names).
Exit status: 0 when every target ran, 1 when one failed (its log is printed),
2 on a usage or environment problem.
"""
from __future__ import annotations

import argparse
import datetime
import errno
import io
import json
import os
import platform
import resource
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO, "bench", "results")
LBD_SOURCE = REPO    # the tree lbd runs from: the working tree, or an export of --lbd-rev
DEFAULT_PYTHON = "/usr/bin/python3"
TWISTD_RUN = "from twisted.scripts.twistd import run; run()"
BIG_SIZE = 100 * 1024 * 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")
BALANCER_CPU = 0     # the balancer under test
LOAD_CPU = 1         # nginx, wrk and this script
NOFILE_WANTED = 65536

OUR_PIDS: set[int] = {os.getpid()}   # this script and what it started: not "other processes"

TARGETS = ("direct", "haproxy", "lbd")
MODES = ("http", "tcp")


class BenchError(Exception):
    """A component could not start or died; the message carries its log."""


@dataclass(frozen=True)
class Test:
    key: str
    title: str
    conns: int
    path: str
    close: bool = False        # "Connection: close": a new connection per request
    bulk: bool = False         # throughput in MB/s instead of req/s


LOAD_TESTS = (
    Test("ka50", "keep-alive, 50 conns", 50, "/"),
    Test("c1", "one connection", 1, "/"),
    Test("newconn", "new connection per request, 50 conns", 50, "/", close=True),
    Test("bulk", "bulk 100 MiB, 4 conns", 4, "/big.bin", bulk=True),
)
OTHER_TESTS = ("idle", "metrics")
ALL_TESTS = tuple(t.key for t in LOAD_TESTS) + OTHER_TESTS

# (mode, test, metric) -> (comparison, ratio to HAProxy), from issue 9.
TARGETS_BY_ROW: dict[tuple[str, str, str], tuple[str, float]] = {
    ("http", "ka50", "rate"): (">=", 0.80),
    ("http", "ka50", "cpu"): ("<=", 1.5),
    ("http", "ka50", "p99"): ("<=", 2.0),
    ("tcp", "ka50", "p99"): ("<=", 2.0),
    ("http", "newconn", "rate"): (">=", 1.0),
    ("tcp", "ka50", "rate"): (">=", 0.50),
    ("http", "bulk", "rate"): (">=", 0.90),
    ("tcp", "bulk", "rate"): (">=", 0.90),
}
IDLE_RSS_TARGET_MB = 150.0

WRK_LUA = """\
-- Prints wrk's summary as one JSON line for bench/run.py.
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"duration_us": %d, "requests": %d, "bytes": %d, "connect": %d, "read": %d, '
    .. '"write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, '
    .. '"max_us": %d, "mean_us": %.1f}\\n',
    summary.duration, summary.requests, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
"""


def log(msg: str) -> None:
    sys.stdout.write(msg + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------- system readings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: "Proc", timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise BenchError("%s exited with %s before listening on %d; its log:\n%s"
                             % (proc.name, proc.popen.returncode, port, proc.log_text()))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise BenchError("%s does not listen on %d after %ss; its log:\n%s" % (proc.name, port, timeout, proc.log_text()))


def cpu_ticks(pid: int) -> int:
    """user + sys clock ticks of every thread of ``pid`` (fields 14 and 15 of /proc/PID/stat)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def rss_kb(pid: int) -> int:
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_times() -> dict[str, list[int]]:
    """Per-CPU jiffies from /proc/stat: user nice system idle iowait irq softirq steal."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu"):
                name, *vals = line.split()
                out[name] = [int(v) for v in vals[:8]]
    return out


def steal_percent(before: dict[str, list[int]], after: dict[str, list[int]]) -> dict[str, float]:
    out = {}
    for name, b in before.items():
        a = after.get(name)
        if a is None:
            continue
        total = sum(a) - sum(b)
        out[name] = round(100.0 * (a[7] - b[7]) / total, 2) if total > 0 else 0.0
    return out


def raise_nofile(wanted: int) -> int:
    """Raise RLIMIT_NOFILE (children inherit it); return the soft limit reached."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
        except (ValueError, OSError):
            wanted = hard
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return soft if soft != resource.RLIM_INFINITY else wanted
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return wanted


def pin_to(cpu: int | None) -> Callable[[], None] | None:
    if cpu is None:
        return None

    def pin() -> None:
        os.sched_setaffinity(0, {cpu})
    return pin


def find_program(name: str) -> str | None:
    """``name`` on PATH, or in /usr/sbin and /sbin (not on a Debian user's PATH: nginx, haproxy)."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")


def program(name: str) -> str:
    return find_program(name) or name


def tool_version(argv: list[str]) -> str:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return "unknown (%s)" % e
    text = (r.stdout + r.stderr).strip().splitlines()
    return text[0] if text else "unknown"


# ---------------------------------------------------------------- processes


class Proc:
    """A child process with its output in a log file, stopped by PID."""

    def __init__(self, name: str, argv: list[str], workdir: str, cpu: int | None,
                 env: dict[str, str] | None = None, stop_signal: int = signal.SIGTERM) -> None:
        self.name = name
        self.log_path = os.path.join(workdir, name.replace(" ", "_").replace("/", "_") + ".log")
        self._log = open(self.log_path, "wb")
        self.stop_signal = stop_signal
        self.popen = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      cwd=workdir, env=env, preexec_fn=pin_to(cpu))
        self.pid = self.popen.pid
        OUR_PIDS.add(self.pid)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_text(self, limit: int = 20000) -> str:
        self._log.flush()
        try:
            with open(self.log_path, "rb") as f:
                data = f.read()
        except OSError:
            return "(no log)"
        if len(data) > limit:
            data = b"...\n" + data[-limit:]
        return data.decode("utf-8", "replace") or "(empty log)"

    def stop(self, timeout: float = 15.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(self.stop_signal)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()


NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
worker_rlimit_nofile {nofile};
events {{
    worker_connections {worker_connections};
}}
http {{
    access_log off;
    client_body_temp_path {tmp}/nginx-tmp/body;
    proxy_temp_path {tmp}/nginx-tmp/proxy;
    fastcgi_temp_path {tmp}/nginx-tmp/fastcgi;
    uwsgi_temp_path {tmp}/nginx-tmp/uwsgi;
    scgi_temp_path {tmp}/nginx-tmp/scgi;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000000;
    keepalive_timeout 600s;
    server {{
        listen 127.0.0.1:{p1} backlog=4096;
        listen 127.0.0.1:{p2} backlog=4096;
        root {tmp}/www;
        location = / {{
            return 200 "ok\\n";
        }}
    }}
}}
"""


class Nginx:
    """The backend pair: one nginx process serving two ports."""

    def __init__(self, tmp: str, nofile: int) -> None:
        self.tmp = tmp
        self.ports = (free_port(), free_port())
        os.makedirs(os.path.join(tmp, "nginx-tmp"), exist_ok=True)
        www = os.path.join(tmp, "www")
        os.makedirs(www, exist_ok=True)
        block = (bytes(range(256)) * 4096)          # 1 MiB, not all zeros
        with open(os.path.join(www, "big.bin"), "wb") as f:
            for _ in range(BIG_SIZE // len(block)):
                f.write(block)
        conf = os.path.join(tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(tmp=tmp, p1=self.ports[0], p2=self.ports[1], nofile=nofile,
                                      worker_connections=max(1024, nofile - 100)))
        self.proc = Proc("nginx", [program("nginx"), "-e", "stderr", "-p", tmp + "/", "-c", conf], tmp, LOAD_CPU,
                         stop_signal=signal.SIGQUIT)
        for p in self.ports:
            wait_port(p, self.proc)

    def stop(self) -> None:
        self.proc.stop()


def haproxy_config(http_port: int | None, tcp_port: int | None, servers: Sequence[int], maxconn: int,
                   keep_alive: str = "5s", client: str = "30s") -> str:
    srv = "".join("    server nginx%d 127.0.0.1:%d\n" % (i + 1, p) for i, p in enumerate(servers))
    text = """\
global
    nbthread 1
    maxconn {maxconn}
    no strict-limits

defaults
    retries 3
    option redispatch
    maxconn {maxconn}
    timeout connect 5s
    timeout client {client}
    timeout server 30s
    timeout http-request 10s
    timeout http-keep-alive {keep_alive}
    timeout queue 5s
    timeout tunnel 1h
""".format(maxconn=maxconn, keep_alive=keep_alive, client=client)
    if http_port is not None:
        text += """
frontend bench_http
    mode http
    bind 127.0.0.1:{port}
    option forwardfor
    http-request set-header X-Forwarded-Proto http
    default_backend web

backend web
    mode http
    balance roundrobin
    http-reuse safe
{srv}""".format(port=http_port, srv=srv)
    if tcp_port is not None:
        text += """
frontend bench_tcp
    mode tcp
    bind 127.0.0.1:{port}
    default_backend web_tcp

backend web_tcp
    mode tcp
    balance roundrobin
{srv}""".format(port=tcp_port, srv=srv)
    return text


class HAProxy:
    """HAProxy 2.6 in the foreground (``-db``), one process, one thread."""

    name = "haproxy"

    def __init__(self, tmp: str, config_text: str, ports: Sequence[int], tag: str = "haproxy") -> None:
        self.cfg = os.path.join(tmp, tag + ".cfg")
        with open(self.cfg, "w") as f:
            f.write(config_text)
        check = subprocess.run([program("haproxy"), "-c", "-q", "-f", self.cfg], capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            raise BenchError("haproxy refuses its configuration:\n%s%s" % (check.stdout, check.stderr))
        self.proc = Proc(tag, [program("haproxy"), "-db", "-f", self.cfg], tmp, BALANCER_CPU)
        self.pid = self.proc.pid
        for p in ports:
            wait_port(p, self.proc)

    def stop(self) -> None:
        self.proc.stop()


LBD_CONF = """\
[global]
maxconn = {maxconn}
grace = "1s"
{global_extra}

[log]
level = "info"
access = "off"

[admin]
socket = "{tmp}/{tag}-admin.sock"

[metrics]
bind = "127.0.0.1:{metrics_port}"

[defaults]
maxconn = {maxconn}

[defaults.timeout]
client = "{client}"
keep_alive = "{keep_alive}"
{frontends}{backends}"""


def lbd_config(tmp: str, tag: str, metrics_port: int, http_port: int | None, tcp_port: int | None,
               servers: Sequence[int], maxconn: int, keep_alive: str = "5s", client: str = "30s",
               global_extra: Sequence[str] = ()) -> str:
    fes = bes = ""
    srv = "".join('nginx%d = { address = "127.0.0.1:%d" }\n' % (i + 1, p) for i, p in enumerate(servers))
    if http_port is not None:
        fes += '\n[frontends.bench_http]\nbind = ["127.0.0.1:%d"]\nmode = "http"\ndefault_backend = "web"\n' % http_port
        bes += '\n[backends.web]\nmode = "http"\nbalance = "roundrobin"\n\n[backends.web.servers]\n' + srv
    if tcp_port is not None:
        fes += '\n[frontends.bench_tcp]\nbind = ["127.0.0.1:%d"]\nmode = "tcp"\ndefault_backend = "web_tcp"\n' % tcp_port
        bes += '\n[backends.web_tcp]\nmode = "tcp"\nbalance = "roundrobin"\n\n[backends.web_tcp.servers]\n' + srv
    return LBD_CONF.format(tmp=tmp, tag=tag, metrics_port=metrics_port, maxconn=maxconn, client=client,
                           keep_alive=keep_alive, frontends=fes, backends=bes, global_extra="\n".join(global_extra))


class Lbd:
    """lbd under ``twistd -n`` on one interpreter; ready once it logs ``lbd ready``."""

    def __init__(self, tmp: str, python: str, tag: str, config_text: str, timeout: float = 60.0) -> None:
        self.python = python
        self.name = tag
        self.cfg = os.path.join(tmp, tag + ".toml")
        with open(self.cfg, "w") as f:
            f.write(config_text)
        env = dict(os.environ)
        env["PYTHONPATH"] = LBD_SOURCE + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        argv = [python, "-c", TWISTD_RUN, "-n", "--pidfile=", "lbd", "-c", self.cfg]
        self.proc = Proc(tag, argv, tmp, BALANCER_CPU, env=env)
        self.pid = self.proc.pid
        deadline = time.monotonic() + timeout
        while True:
            text = self.proc.log_text(limit=1 << 20)
            if "lbd ready" in text:
                return
            if not self.proc.alive():
                raise BenchError("lbd (%s) exited with %s before it was ready; command: %s\nits log:\n%s"
                                 % (python, self.proc.popen.returncode, " ".join(argv), self.proc.log_text()))
            if time.monotonic() > deadline:
                self.proc.stop()
                raise BenchError("lbd (%s) did not log 'lbd ready' within %ss; command: %s\nits log:\n%s"
                                 % (python, timeout, " ".join(argv), self.proc.log_text()))
            time.sleep(0.05)

    def stop(self) -> None:
        self.proc.stop()


def python_info(python: str) -> dict[str, str]:
    code = "import sys, twisted; print(sys.version.split()[0], twisted.__version__)"
    try:
        r = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
    except OSError as e:
        raise BenchError("cannot run %s: %s" % (python, e))
    if r.returncode != 0:
        raise BenchError("%s cannot import twisted:\n%s" % (python, r.stderr))
    pyver, twver = r.stdout.split()
    return {"path": python, "python": pyver, "twisted": twver}


def export_rev(rev: str, dest: str) -> str:
    """Extract lbd/ and twisted/ of git revision ``rev`` into ``dest``; return the full commit id."""
    r = subprocess.run(["git", "-C", REPO, "rev-parse", "--verify", rev + "^{commit}"], capture_output=True,
                       text=True, timeout=30)
    if r.returncode != 0:
        raise BenchError("--lbd-rev %s: %s" % (rev, r.stderr.strip()))
    commit = r.stdout.strip()
    os.makedirs(dest)
    archive = subprocess.run(["git", "-C", REPO, "archive", "--format=tar", commit, "lbd", "twisted"],
                             capture_output=True, timeout=60)
    if archive.returncode != 0:
        raise BenchError("git archive %s: %s" % (commit, archive.stderr.decode(errors="replace")))
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
        else:
            tar.extractall(dest)
    return commit


def source_info(source: str, rev: str | None) -> dict[str, Any]:
    """Which lbd code ran: the commit, and whether the working tree had uncommitted changes to it."""
    if rev is not None:
        return {"rev": rev, "commit": LBD_COMMIT, "dirty": False}
    head = subprocess.run(["git", "-C", source, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30)
    status = subprocess.run(["git", "-C", source, "status", "--porcelain", "--", "lbd", "twisted"],
                            capture_output=True, text=True, timeout=30)
    if head.returncode != 0:
        return {"rev": None, "commit": None, "dirty": None}
    return {"rev": None, "commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


LBD_COMMIT: str | None = None


# ---------------------------------------------------------------- wrk


def run_wrk(lua: str, url: str, test: Test, duration: int, every_second: Callable[[], None] | None = None
            ) -> dict[str, Any]:
    """Run wrk once; call ``every_second`` while it runs; return its summary (from WRK_LUA)."""
    timeout = "60s" if test.bulk else "10s"
    argv = [program("wrk"), "-t1", "-c%d" % test.conns, "-d%ds" % duration, "--timeout", timeout, "-s", lua]
    if test.close:
        argv += ["-H", "Connection: close"]
    argv.append(url)
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                         preexec_fn=pin_to(LOAD_CPU))
    OUR_PIDS.add(p.pid)
    deadline = time.monotonic() + duration + 90
    try:
        while True:
            try:
                out, err = p.communicate(timeout=1.0)
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() > deadline:
                    raise BenchError("wrk did not finish: %s" % " ".join(argv))
                if every_second is not None:
                    every_second()
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
        OUR_PIDS.discard(p.pid)
    for line in out.splitlines():
        if line.startswith("BENCHJSON "):
            res: dict[str, Any] = json.loads(line[len("BENCHJSON "):])
            res["wrk_exit"] = p.returncode
            return res
    raise BenchError("wrk printed no summary (exit %s): %s\n%s%s" % (p.returncode, " ".join(argv), out, err))


def measure(lua: str, url: str, test: Test, duration: int, balancer_pid: int | None) -> dict[str, Any]:
    """One wrk run with the balancer's CPU time, CPU steal and the CPU other processes took around it."""
    st0 = cpu_times()
    others = OthersMeter()
    c0 = cpu_ticks(balancer_pid) if balancer_pid else 0
    w = run_wrk(lua, url, test, duration, others.sample)
    c1 = cpu_ticks(balancer_pid) if balancer_pid else 0
    others_pct = others.percent()
    st1 = cpu_times()
    secs = w["duration_us"] / 1e6 or 1e-9
    res: dict[str, Any] = {
        "requests": w["requests"],
        "bytes": w["bytes"],
        "seconds": round(secs, 3),
        "req_per_s": round(w["requests"] / secs, 1),
        "mb_per_s": round(w["bytes"] / secs / 1e6, 1),
        "p50_ms": w["p50_us"] / 1000.0,
        "p90_ms": w["p90_us"] / 1000.0,
        "p99_ms": w["p99_us"] / 1000.0,
        "max_ms": w["max_us"] / 1000.0,
        "socket_errors": w["connect"] + w["read"] + w["write"] + w["timeout"],
        "status_errors": w["status"],
        "wrk": w,
        "steal": steal_percent(st0, st1),
        "others": others_pct,
    }
    if balancer_pid:
        cpu_s = (c1 - c0) / CLK_TCK
        res["balancer_cpu_s"] = round(cpu_s, 3)
        res["balancer_busy"] = round(cpu_s / secs, 3)
        res["cpu_us_per_req"] = round(cpu_s * 1e6 / w["requests"], 2) if w["requests"] else None
        res["cpu_ms_per_mb"] = round(cpu_s * 1e3 / (w["bytes"] / 1e6), 3) if w["bytes"] else None
    res["rate"] = res["mb_per_s"] if test.bulk else res["req_per_s"]
    return res


def others_ticks() -> dict[int, int]:
    """CPU ticks (user + sys, all threads) of every user-space process this script did not start.

    Per-process times are exact run times; /proc/stat's per-CPU busy
    figures are tick samples, biased on a CPU that wakes up often, so they
    cannot tell other people's work apart from ours.  Reaped children's times
    (cutime) are left out: a parent reaping a long-lived child would count
    that child's whole life at once.
    """
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in OUR_PIDS:
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if name == "2" or fields[1] == "2":        # kernel threads: mostly our own network work
            continue
        out[int(name)] = int(fields[11]) + int(fields[12])
    return out


class OthersMeter:
    """CPU time other processes take while something runs, from snapshots of /proc a second apart.

    A process born since the last snapshot counts whole; one that lives and
    dies between two snapshots, or the last part of one that exits, is missed:
    the figure errs low, never counts a time twice.
    """

    __slots__ = ("last", "ticks", "start")

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.last = others_ticks()
        self.ticks = 0

    def sample(self) -> None:
        now = others_ticks()
        for pid, t in now.items():
            prev = self.last.get(pid)
            if prev is None:
                self.ticks += t
            elif t > prev:
                self.ticks += t - prev
        self.last = now

    def percent(self) -> float:
        """Percent of one CPU used by other processes since the meter started."""
        self.sample()
        secs = time.monotonic() - self.start
        return round(100.0 * self.ticks / CLK_TCK / secs, 1) if secs > 0 else 0.0


def wait_quiet(limit: float, max_wait: float, sample: float = 0.5) -> float:
    """Wait (at most ``max_wait`` s) for a ``sample`` in which other processes took at most ``limit``
    percent of a CPU and steal stayed under it too; return the seconds waited."""
    t0 = time.monotonic()
    while True:
        st0 = cpu_times()
        meter = OthersMeter()
        time.sleep(sample)
        pct = meter.percent()
        steal = steal_percent(st0, cpu_times())
        worst = max(pct, steal.get("cpu%d" % BALANCER_CPU, 0.0), steal.get("cpu%d" % LOAD_CPU, 0.0))
        waited = time.monotonic() - t0
        if worst <= limit or waited >= max_wait:
            return waited


def max_steal(res: dict[str, Any]) -> float:
    """The worst steal of the two CPUs the benchmark uses."""
    s: dict[str, float] = res["steal"]
    return max(s.get("cpu%d" % BALANCER_CPU, 0.0), s.get("cpu%d" % LOAD_CPU, 0.0), s.get("cpu", 0.0))


def max_others(res: dict[str, Any]) -> float:
    return float(res.get("others", 0.0))


# ---------------------------------------------------------------- idle connections and /metrics


def hold_idle(port: int, count: int, timeout: float) -> tuple[list[socket.socket], int]:
    """Open ``count`` connections, one keep-alive request each; return them, still open, and the failures."""
    request = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
    held: list[socket.socket] = []
    failed = 0
    sel = selectors.DefaultSelector()
    deadline = time.monotonic() + timeout
    batch = 100
    try:
        for start in range(0, count, batch):
            bufs: dict[socket.socket, bytearray] = {}
            for _ in range(min(batch, count - start)):
                s = socket.socket()
                s.setblocking(False)
                e = s.connect_ex(("127.0.0.1", port))
                if e not in (0, errno.EINPROGRESS):
                    s.close()
                    failed += 1
                    continue
                bufs[s] = bytearray()
                sel.register(s, selectors.EVENT_WRITE)
            while bufs:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BenchError("idle connections: %d of %d opened within %ss" % (len(held), count, timeout))
                for key, ev in sel.select(min(left, 1.0)):
                    s = key.fileobj  # type: ignore[assignment]
                    assert isinstance(s, socket.socket)
                    if ev & selectors.EVENT_WRITE:
                        if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                            failed += 1
                        else:
                            s.send(request)
                            sel.modify(s, selectors.EVENT_READ)
                            continue
                    else:
                        try:
                            data = s.recv(65536)
                        except OSError:
                            data = b""
                        if data:
                            buf = bufs[s]
                            buf += data
                            if not _response_complete(buf):
                                continue
                            held.append(s)
                        else:
                            failed += 1
                    sel.unregister(s)
                    del bufs[s]
                    if s not in held:
                        s.close()
    except BaseException:
        for s in held:
            s.close()
        raise
    finally:
        sel.close()
    return held, failed


def _response_complete(buf: bytearray) -> bool:
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return False
    length = 0
    for line in bytes(buf[:end]).split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    return len(buf) >= end + 4 + length


def still_open(socks: Iterable[socket.socket]) -> int:
    n = 0
    for s in socks:
        try:
            data = s.recv(1)
        except BlockingIOError:
            n += 1
            continue
        except OSError:
            continue
        if data:
            n += 1        # unexpected bytes, but the connection is open
    return n


def close_all(socks: Iterable[socket.socket]) -> None:
    linger0 = (1).to_bytes(4, sys.byteorder) + (0).to_bytes(4, sys.byteorder)
    for s in socks:
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger0)  # RST: no TIME_WAIT left behind
        except OSError:
            pass
        s.close()


def idle_test(name: str, pid: int, port: int, count: int, timeout: float, settle: float) -> dict[str, Any]:
    before = rss_kb(pid)
    t0 = time.monotonic()
    socks, failed = hold_idle(port, count, timeout)
    opened = time.monotonic() - t0
    try:
        time.sleep(settle)
        after = rss_kb(pid)
        held = still_open(socks)
    finally:
        close_all(socks)
    log("  %s: %d/%d idle connections held, RSS %.1f MB (%.1f MB before), %.1fs to open"
        % (name, held, count, after / 1024, before / 1024, opened))
    return {"connections": count, "opened": len(socks), "failed": failed, "held": held,
            "rss_before_mb": round(before / 1024, 1), "rss_mb": round(after / 1024, 1),
            "kb_per_conn": round((after - before) / count, 2) if count else None, "open_seconds": round(opened, 2)}


def scrape(port: int, times: int) -> dict[str, Any]:
    url = "http://127.0.0.1:%d/metrics" % port
    samples = []
    size = 0
    for i in range(times + 1):
        t0 = time.perf_counter()
        with urllib.request.urlopen(url, timeout=60) as r:
            body = r.read()
        dt = (time.perf_counter() - t0) * 1000.0
        size = len(body)
        if i:               # the first scrape warms caches up
            samples.append(round(dt, 2))
    return {"median_ms": round(statistics.median(samples), 2), "samples_ms": samples, "bytes": size,
            "lines": body.count(b"\n")}


def many_backends_lbd(tmp: str, tag: str, metrics_port: int, fe_port: int, global_extra: Sequence[str]) -> str:
    parts = ['[global]\ngrace = "1s"\n%s\n[log]\naccess = "off"\n[admin]\nsocket = "off"\n' % "\n".join(global_extra),
             '[metrics]\nbind = "127.0.0.1:%d"\n' % metrics_port,
             '[frontends.fe]\nbind = ["127.0.0.1:%d"]\ndefault_backend = "be000"\n' % fe_port]
    for b in range(100):
        parts.append('[backends.be%03d]\nbalance = "roundrobin"\n[backends.be%03d.servers]\n' % (b, b))
        for s in range(10):
            parts.append('s%02d = { address = "127.0.0.1:%d" }\n' % (s, 1 + b * 10 + s))
    return "".join(parts)


def many_backends_haproxy(metrics_port: int, fe_port: int) -> str:
    parts = ["global\n    nbthread 1\n\ndefaults\n    mode http\n    timeout connect 5s\n"
             "    timeout client 30s\n    timeout server 30s\n\n",
             "frontend prometheus\n    bind 127.0.0.1:%d\n"
             "    http-request use-service prometheus-exporter if { path /metrics }\n\n" % metrics_port,
             "frontend fe\n    bind 127.0.0.1:%d\n    default_backend be000\n\n" % fe_port]
    for b in range(100):
        parts.append("backend be%03d\n    balance roundrobin\n" % b)
        for s in range(10):
            parts.append("    server s%02d 127.0.0.1:%d\n" % (s, 1 + b * 10 + s))
    return "".join(parts)


# ---------------------------------------------------------------- the benchmark


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="lbd-bench-")
        self.lua = os.path.join(self.tmp, "summary.lua")
        with open(self.lua, "w") as f:
            f.write(WRK_LUA)
        self.started: list[Any] = []
        self.failures: list[dict[str, str]] = []
        self.runs: list[dict[str, Any]] = []
        self.urls: dict[tuple[str, str], str] = {}     # (target, mode) -> base URL
        self.pids: dict[str, int] = {}
        self.lbds: list[tuple[str, dict[str, str]]] = []   # (target key, python info)
        self.extra: dict[str, Any] = {}
        self.pythons: list[dict[str, str]] = []

    # -- setup

    def start(self) -> None:
        a = self.args
        log("temp dir: %s" % self.tmp)
        log("generating the 100 MiB file; starting nginx")
        self.nginx = Nginx(self.tmp, a.nofile)
        self.started.append(self.nginx)
        base = "http://127.0.0.1:%d" % self.nginx.ports[0]
        self.urls[("direct", "http")] = base
        self.urls[("direct", "tcp")] = base
        maxconn = max(2000, (a.nofile - 200) // 2)
        self.maxconn = maxconn
        if "haproxy" in a.only:
            hp, tp = free_port(), free_port()
            log("starting haproxy (%s)" % tool_version([program("haproxy"), "-v"]))
            h = HAProxy(self.tmp, haproxy_config(hp, tp, self.nginx.ports, maxconn), [hp, tp])
            self.started.append(h)
            self.pids["haproxy"] = h.pid
            self.urls[("haproxy", "http")] = "http://127.0.0.1:%d" % hp
            self.urls[("haproxy", "tcp")] = "http://127.0.0.1:%d" % tp
        if "lbd" in a.only:
            for i, info in enumerate(self.pythons):
                key = self.lbd_key(i)
                hp, tp, mp = free_port(), free_port(), free_port()
                log("starting %s: %s (Python %s, Twisted %s)" % (key, info["path"], info["python"], info["twisted"]))
                try:
                    lb = Lbd(self.tmp, info["path"], key.replace(":", "-"),
                             lbd_config(self.tmp, "lbd%d" % i, mp, hp, tp, self.nginx.ports, maxconn,
                                        global_extra=self.args.lbd_global))
                except BenchError as e:
                    self.fail(key, str(e))
                    continue
                self.started.append(lb)
                self.pids[key] = lb.pid
                self.urls[(key, "http")] = "http://127.0.0.1:%d" % hp
                self.urls[(key, "tcp")] = "http://127.0.0.1:%d" % tp
                self.lbds.append((key, info))

    def lbd_key(self, i: int) -> str:
        return "lbd" if len(self.pythons) == 1 else "lbd%d" % (i + 1)

    def fail(self, key: str, msg: str) -> None:
        """Record and print a failure; the component's log follows "its log:" in ``msg``."""
        log("ERROR: %s: %s" % (key, msg))
        error, _, logtext = msg.partition("its log:\n")
        self.failures.append({"target": key, "error": error.strip(), "log": logtext})

    def stop(self) -> None:
        for p in reversed(self.started):
            try:
                p.stop()
            except Exception as e:  # keep stopping the others
                log("stopping %s: %s" % (getattr(p, "name", p), e))
        self.started.clear()
        if not self.args.keep_tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            log("kept %s" % self.tmp)

    # -- load tests

    def targets(self) -> list[str]:
        out = []
        if "direct" in self.args.only:
            out.append("direct")
        if "haproxy" in self.args.only and "haproxy" in self.pids:
            out.append("haproxy")
        out += [k for k, _ in self.lbds if k in self.pids]
        return out

    def one(self, target: str, mode: str, test: Test, repeat: int, duration: int) -> None:
        url = self.urls[(target, mode)] + test.path
        pid = self.pids.get(target)
        attempts = []
        for attempt in range(1 + self.args.steal_retries):
            if self.args.quiet_wait > 0:
                waited = wait_quiet(self.args.others_max, self.args.quiet_wait)
                if waited > 1.0:
                    log("    waited %.0f s for other processes to quieten" % waited)
            try:
                res = measure(self.lua, url, test, duration, pid)
            except (BenchError, OSError) as e:
                self.dead(target, "%s %s: %s" % (mode, test.key, e))
                return
            attempts.append(res)
            if max_steal(res) <= self.args.steal_max and max_others(res) <= self.args.others_max:
                break
            if attempt < self.args.steal_retries:
                log("    steal %.1f%% (max %.1f%%), other processes %.1f%% of a CPU (max %.1f%%): running again"
                    % (max_steal(res), self.args.steal_max, max_others(res), self.args.others_max))
        best = min(attempts, key=lambda r: max_steal(r) + max_others(r))
        run = {"repeat": repeat, "test": test.key, "mode": "-" if target == "direct" else mode,
               "target": target, "result": best, "attempts": attempts}
        self.runs.append(run)
        cpu = best.get("cpu_ms_per_mb" if test.bulk else "cpu_us_per_req")
        log("  %-8s %-4s %-8s %10.1f %-5s p50 %7.3f ms  p99 %7.3f ms  cpu %s  errors %d/%d  steal %.1f%%  others %.1f%%"
            % (target, run["mode"], test.key, best["rate"], "MB/s" if test.bulk else "req/s",
               best["p50_ms"], best["p99_ms"], "-" if cpu is None else "%.1f %s" % (cpu, "ms/MB" if test.bulk else "us/req"),
               best["socket_errors"], best["status_errors"], max_steal(best), max_others(best)))
        if pid and not self.alive(target):
            self.dead(target, "died during %s %s" % (mode, test.key))

    def alive(self, target: str) -> bool:
        for p in self.started:
            if getattr(p, "pid", None) == self.pids.get(target):
                return bool(p.proc.alive())
        return True

    def dead(self, target: str, msg: str) -> None:
        text = msg
        for p in self.started:
            if getattr(p, "pid", None) == self.pids.get(target):
                text += "\nits log:\n" + p.proc.log_text()
        self.fail(target, text)
        self.pids.pop(target, None)

    def load_tests(self) -> None:
        a = self.args
        tests = [t for t in LOAD_TESTS if t.key in a.tests]
        if not tests:
            return
        if not a.quick:
            log("warm-up (1 s per target and mode)")
            warm = Test("warm", "warm-up", 10, "/")
            for target in self.targets():
                for mode in (a.modes if target != "direct" else ("http",)):
                    try:
                        run_wrk(self.lua, self.urls[(target, mode)] + "/", warm, 1)
                    except BenchError as e:
                        self.dead(target, str(e))
        for r in range(a.repeat):
            log("repeat %d/%d" % (r + 1, a.repeat))
            for test in tests:
                for mode in a.modes:
                    order = self.targets()
                    if mode != a.modes[0]:
                        order = [t for t in order if t != "direct"]   # direct has no mode: run once
                    k = r % len(order) if order else 0
                    for target in order[k:] + order[:k]:              # rotate who goes first
                        if target in self.pids or target == "direct":
                            self.one(target, mode, test, r, a.duration)

    # -- idle and metrics

    def idle_tests(self) -> None:
        a = self.args
        count = a.idle_conns
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if count + 200 > limit:
            log("idle: RLIMIT_NOFILE is %d: holding %d connections instead of %d" % (limit, limit - 200, count))
            count = limit - 200
        maxconn = count + 100
        self.extra["idle"] = {}
        timeout = 30.0 + count / 100.0
        settle = 0.5 if a.quick else 2.0
        log("idle: %d keep-alive connections after one request each" % count)
        if "haproxy" in a.only:
            port = free_port()
            try:
                h = HAProxy(self.tmp, haproxy_config(port, None, self.nginx.ports, maxconn, "10m", "10m"), [port],
                            tag="haproxy-idle")
            except BenchError as e:
                self.fail("haproxy", "idle: " + str(e))
            else:
                try:
                    self.extra["idle"]["haproxy"] = idle_test("haproxy", h.pid, port, count, timeout, settle)
                except BenchError as e:
                    self.fail("haproxy", "idle: %s\nits log:\n%s" % (e, h.proc.log_text()))
                finally:
                    h.stop()
        for i, (key, info) in enumerate(self.lbds):
            port = free_port()
            try:
                lb = Lbd(self.tmp, info["path"], key + "-idle",
                         lbd_config(self.tmp, "idle%d" % i, free_port(), port, None, self.nginx.ports, maxconn,
                                    keep_alive="10m", client="10m", global_extra=a.lbd_global))
            except BenchError as e:
                self.fail(key, "idle: " + str(e))
                continue
            try:
                self.extra["idle"][key] = idle_test(key, lb.pid, port, count, timeout, settle)
            except BenchError as e:
                self.fail(key, "idle: %s\nits log:\n%s" % (e, lb.proc.log_text()))
            finally:
                lb.stop()

    def metrics_tests(self) -> None:
        a = self.args
        times = 2 if a.quick else 5
        self.extra["metrics"] = {}
        log("metrics: GET /metrics with 100 backends x 10 servers, median of %d" % times)
        if "haproxy" in a.only:
            mp, fp = free_port(), free_port()
            try:
                h = HAProxy(self.tmp, many_backends_haproxy(mp, fp), [mp], tag="haproxy-metrics")
            except BenchError as e:
                self.fail("haproxy", "metrics: " + str(e))
            else:
                try:
                    self.extra["metrics"]["haproxy"] = r = scrape(mp, times)
                    log("  haproxy: %.2f ms (%d bytes)" % (r["median_ms"], r["bytes"]))
                except OSError as e:
                    self.fail("haproxy", "metrics scrape: %s" % e)
                finally:
                    h.stop()
        for i, (key, info) in enumerate(self.lbds):
            mp, fp = free_port(), free_port()
            try:
                lb = Lbd(self.tmp, info["path"], key + "-metrics", many_backends_lbd(self.tmp, key, mp, fp, a.lbd_global))
            except BenchError as e:
                self.fail(key, "metrics: " + str(e))
                continue
            try:
                self.extra["metrics"][key] = r = scrape(mp, times)
                log("  %s: %.2f ms (%d bytes)" % (key, r["median_ms"], r["bytes"]))
            except OSError as e:
                self.fail(key, "metrics scrape: %s\nits log:\n%s" % (e, lb.proc.log_text()))
            finally:
                lb.stop()


# ---------------------------------------------------------------- summary and table


def summarise(runs: list[dict[str, Any]], targets: list[str], modes: Sequence[str]) -> list[dict[str, Any]]:
    """Median per (mode, test, target, metric); ratios as the median of same-repeat ratios to HAProxy."""
    by: dict[tuple[str, str, str], dict[int, dict[str, Any]]] = {}
    for run in runs:
        by.setdefault((run["test"], run["mode"], run["target"]), {})[run["repeat"]] = run["result"]
    rows = []
    for test in LOAD_TESTS:
        for mode in modes:
            def series(target: str) -> dict[int, dict[str, Any]]:
                return by.get((test.key, "-" if target == "direct" else mode, target), {})
            if not any(series(t) for t in targets):
                continue
            metrics = [("rate", "MB/s" if test.bulk else "req/s")]
            if not test.bulk:
                metrics += [("p50_ms", "p50 latency, ms"), ("p99_ms", "p99 latency, ms")]
            metrics += [("cpu_ms_per_mb", "balancer CPU per MB, ms") if test.bulk else
                        ("cpu_us_per_req", "balancer CPU per request, us"),
                        ("errors", "errors (socket + HTTP >= 400)")]
            for metric, unit in metrics:
                row: dict[str, Any] = {"test": test.key, "mode": mode, "metric": metric,
                                       "label": "%s %s: %s" % (mode, test.title, unit), "values": {}, "ratios": {}}
                for t in targets:
                    vals: dict[int, float] = {}
                    for r, res in series(t).items():
                        v = _metric(res, metric, test)
                        if v is not None:
                            vals[r] = v
                    if vals:
                        row["values"][t] = statistics.median(vals.values())
                    if t.startswith("lbd"):
                        hp = series("haproxy")
                        ratios = [v / hv for r, v in vals.items()
                                  if r in hp and (hv := _metric(hp[r], metric, test))]
                        if ratios and metric != "errors":
                            row["ratios"][t] = round(statistics.median(ratios), 3)
                short = {"p50_ms": "p50", "p99_ms": "p99", "cpu_us_per_req": "cpu"}.get(metric, metric)
                row["target"] = TARGETS_BY_ROW.get((mode, test.key, short))
                rows.append(row)
    return rows


def _metric(res: dict[str, Any], metric: str, test: Test) -> float | None:
    if metric == "errors":
        return float(res["socket_errors"] + res["status_errors"])
    v = res.get(metric)
    if v is None:
        return None
    return float(v)


def fmt(v: float | None) -> str:
    if v is None:
        return "–"
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1000:
        return "{:,.0f}".format(v)
    if a >= 100:
        return "%.0f" % v
    if a >= 10:
        return "%.1f" % v
    if a >= 1:
        return "%.2f" % v
    return "%.3f" % v


def met(ratio: float, target: tuple[str, float]) -> bool:
    op, want = target
    return ratio >= want if op == ">=" else ratio <= want


def ratio_cell(ratio: float | None, target: tuple[str, float] | None) -> str:
    if ratio is None:
        return "–"
    text = "%.2fx" % ratio
    if target:
        text += " ✓" if met(ratio, target) else " ✗"
    return text


def markdown(doc: dict[str, Any]) -> str:
    targets: list[str] = doc["targets"]
    lbds = [t for t in targets if t.startswith("lbd")]
    labels = {t: t for t in targets}
    for key, info in doc["lbd_pythons"].items():
        labels[key] = "%s (Py %s, Tw %s)" % (key, info["python"], info["twisted"])
    cols = ["test"] + [labels[t] for t in targets if not t.startswith("lbd")]
    for t in lbds:
        cols += [labels[t], "%s/haproxy" % t]
    cols.append("target")
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    errors_total = 0.0
    for row in doc["summary"]:
        if row["metric"] == "errors":
            errors_total += sum(row["values"].values())
            if not any(row["values"].values()):
                continue
        cells = [row["label"]] + [fmt(row["values"].get(t)) for t in targets if not t.startswith("lbd")]
        tgt = row["target"]
        for t in lbds:
            cells += [fmt(row["values"].get(t)), ratio_cell(row["ratios"].get(t), tgt)]
        cells.append("%s %.2fx" % ("≥" if tgt[0] == ">=" else "≤", tgt[1]) if tgt else "")
        lines.append("| " + " | ".join(cells) + " |")
    idle = doc.get("idle") or {}
    if idle:
        for what, key, unit in (("RSS, MB", "rss_mb", None), ("held", "held", None)):
            cells = ["http %s idle keep-alive connections: %s" % ("{:,}".format(next(iter(idle.values()))["connections"]),
                                                                 what)]
            for t in targets:
                if t.startswith("lbd"):
                    continue
                v = idle.get(t)
                cells.append(("%d/%d" % (v["held"], v["connections"]) if key == "held" else fmt(v[key]))
                             if v else "–")
            for t in lbds:
                v = idle.get(t)
                hv = idle.get("haproxy")
                if key == "rss_mb":
                    ok = v is not None and v["held"] == v["connections"] and v["rss_mb"] <= IDLE_RSS_TARGET_MB
                    cells.append(fmt(v[key]) + (" ✓" if ok else " ✗") if v else "–")
                    cells.append("%.2fx" % (v[key] / hv[key]) if v and hv and hv[key] else "–")
                else:
                    cells.append("%d/%d" % (v["held"], v["connections"]) if v else "–")
                    cells.append("–")
            cells.append("held, ≤ %d MB" % IDLE_RSS_TARGET_MB if key == "rss_mb" else "all held")
            lines.append("| " + " | ".join(cells) + " |")
    mets = doc.get("metrics") or {}
    if mets:
        cells = ["GET /metrics, 100 backends x 10 servers: ms"]
        for t in targets:
            if not t.startswith("lbd"):
                cells.append(fmt(mets[t]["median_ms"]) if t in mets else "–")
        for t in lbds:
            v, hv = mets.get(t), mets.get("haproxy")
            cells.append(fmt(v["median_ms"]) if v else "–")
            cells.append("%.2fx" % (v["median_ms"] / hv["median_ms"]) if v and hv else "–")
        cells.append("")
        lines.append("| " + " | ".join(cells) + " |")
    o = doc["options"]
    paras = []
    if o["quick"]:
        paras.append("**--quick smoke run: the figures mean nothing.**")
    paras.append(
        "%s; %d CPUs; balancer pinned to CPU %d, nginx (1 process) and wrk (`-t1`) to CPU %d. "
        "%s; %s; %s. %d repeat(s) of %d s per run, interleaved; medians, ratios are medians of "
        "same-repeat ratios to HAProxy (✓/✗: issue 9's target met or not). Worst kept run: CPU steal %.1f%%, "
        "other processes %.1f%% of a benchmark CPU."
        % (doc["host"]["kernel"], doc["host"]["cpus"], BALANCER_CPU, LOAD_CPU, doc["versions"]["haproxy"],
           doc["versions"]["nginx"], doc["versions"]["wrk"], o["repeat"], o["duration"], doc["max_steal"],
           doc["max_others"]))
    src = doc.get("lbd_source")
    if src and src.get("commit"):
        paras.append("lbd at commit %s%s." % (src["commit"][:12], " plus uncommitted changes" if src["dirty"] else ""))
    if o.get("lbd_global"):
        paras.append("lbd's [global] adds: %s." % "; ".join("`%s`" % x for x in o["lbd_global"]))
    head = ["# lbd benchmark: %s" % doc["started"], ""]
    for para in paras:
        head += [para, ""]
    tail = ["", "Errors: none in any run." if errors_total == 0 else
            "Errors: %d in all (rows above)." % errors_total]
    for f in doc["failures"]:
        tail += ["", "**Failed: %s: %s**" % (f["target"], f["error"])]
        last = [x for x in f["log"].splitlines() if x.strip()][-5:]
        if last:
            tail += ["", "```"] + last + ["```"]
    return "\n".join(head + lines + tail) + "\n"


# ---------------------------------------------------------------- main


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--python", action="append", help="interpreter that runs lbd; repeat to compare several "
                   "(default %s)" % DEFAULT_PYTHON)
    p.add_argument("--repeat", type=int, default=3, help="repeats of every run, median reported (default 3)")
    p.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    p.add_argument("--quick", action="store_true", help="CI smoke: 1 repeat of 1 s, few idle connections, no warm-up")
    p.add_argument("--only", default="direct,haproxy,lbd", help="targets, comma-separated (default all)")
    p.add_argument("--tests", default=",".join(ALL_TESTS), help="tests, comma-separated (default all: %s)"
                   % ",".join(ALL_TESTS))
    p.add_argument("--modes", default="http,tcp", help="balancer modes (default http,tcp)")
    p.add_argument("--idle-conns", type=int, default=None, help="idle connections to hold (default 10000; 200 with --quick)")
    p.add_argument("--steal-max", type=float, default=5.0, help="percent of CPU steal above which a run is repeated (default 5)")
    p.add_argument("--others-max", type=float, default=10.0, help="percent of a benchmark CPU used by other "
                   "processes above which a run is repeated (default 10)")
    p.add_argument("--quiet-wait", type=float, default=20.0, help="before each run, wait at most this many "
                   "seconds for both CPUs to be idle (under --others-max); default 20, 0 with --quick")
    p.add_argument("--steal-retries", type=int, default=2, help="at most this many repeats of a noisy run (default 2)")
    p.add_argument("--lbd-global", action="append", default=[], metavar="'KEY = VALUE'",
                   help="a line added to lbd's [global] table, e.g. 'fastpath = false'; repeatable")
    p.add_argument("--lbd-rev", default=None, metavar="REV",
                   help="run lbd from this git revision (exported to the temp dir) instead of the working tree")
    p.add_argument("--out", default=DEFAULT_OUT, help="directory for the JSON and latest.md (default bench/results)")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temporary directory (configs, logs)")
    a = p.parse_args(argv)
    # Absolute (cwd is the temp dir), but symlinks kept: a venv's python is one.
    a.pythons = [os.path.abspath(py) if os.sep in py else (shutil.which(py) or py)
                 for py in (a.python or [DEFAULT_PYTHON])]
    a.only = [x for x in a.only.split(",") if x]
    a.tests = [x for x in a.tests.split(",") if x]
    a.modes = tuple(x for x in a.modes.split(",") if x)
    for name, vals, allowed in (("--only", a.only, TARGETS), ("--tests", a.tests, ALL_TESTS), ("--modes", a.modes, MODES)):
        bad = [v for v in vals if v not in allowed]
        if bad or not vals:
            p.error("%s: %s (choose from %s)" % (name, ",".join(bad) or "empty", ",".join(allowed)))
    if a.quick:
        a.repeat, a.duration, a.steal_retries, a.quiet_wait = 1, 1, 0, 0.0
    if a.idle_conns is None:
        a.idle_conns = 200 if a.quick else 10000
    if a.repeat < 1 or a.duration < 1:
        p.error("--repeat and --duration must be at least 1")
    return a


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    missing = [t for t in ("wrk", "nginx") + (("haproxy",) if "haproxy" in args.only else ()) if not find_program(t)]
    if missing:
        log("missing programs: %s (apt-get install %s)" % (", ".join(missing), " ".join(missing)))
        return 2
    cpus = os.cpu_count() or 1
    global BALANCER_CPU, LOAD_CPU
    if cpus < 2:
        log("warning: one CPU: nothing is pinned, the comparison is not fair")
        BALANCER_CPU = LOAD_CPU = 0
    args.nofile = raise_nofile(NOFILE_WANTED)
    os.sched_setaffinity(0, {LOAD_CPU})
    started = datetime.datetime.now(datetime.timezone.utc)
    bench = Bench(args)

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_term)
    global LBD_SOURCE, LBD_COMMIT
    try:
        if args.lbd_rev is not None and "lbd" in args.only:
            LBD_SOURCE = os.path.join(bench.tmp, "lbd-source")
            LBD_COMMIT = export_rev(args.lbd_rev, LBD_SOURCE)
            log("lbd from %s (%s)" % (args.lbd_rev, LBD_COMMIT[:12]))
        if "lbd" in args.only:
            bench.extra["lbd_source"] = source_info(REPO, args.lbd_rev)
        if "lbd" in args.only:
            for py in args.pythons:
                try:
                    bench.pythons.append(python_info(py))
                except BenchError as e:
                    bench.fail("lbd", str(e))
        bench.start()
        bench.load_tests()
        if "idle" in args.tests and (bench.lbds or "haproxy" in args.only):
            bench.idle_tests()
        if "metrics" in args.tests:
            bench.metrics_tests()
    except BenchError as e:
        bench.fail("bench", str(e))
    finally:
        bench.stop()
    targets = [t for t in ["direct", "haproxy"] if t in args.only] + [k for k, _ in bench.lbds]
    kept = [max_steal(r["result"]) for r in bench.runs]
    others = [max_others(r["result"]) for r in bench.runs]
    doc = {
        "started": started.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "host": {"kernel": "Linux " + platform.release(), "cpus": cpus, "clk_tck": CLK_TCK},
        "versions": {"haproxy": tool_version([program("haproxy"), "-v"]).replace(" - https://haproxy.org/", ""),
                     "nginx": tool_version([program("nginx"), "-v"]).replace("nginx version: ", ""),
                     "wrk": tool_version([program("wrk"), "-v"]).split(" Copyright")[0]},
        "options": {"repeat": args.repeat, "duration": args.duration, "quick": args.quick, "only": args.only,
                    "tests": args.tests, "modes": list(args.modes), "steal_max": args.steal_max,
                    "steal_retries": args.steal_retries, "others_max": args.others_max, "quiet_wait": args.quiet_wait,
                    "idle_conns": args.idle_conns, "nofile": args.nofile, "lbd_global": args.lbd_global,
                    "lbd_rev": args.lbd_rev},
        "lbd_pythons": {k: info for k, info in bench.lbds},
        "lbd_source": bench.extra.get("lbd_source"),
        "targets": targets,
        "max_steal": max(kept) if kept else 0.0,
        "max_others": max(others) if others else 0.0,
        "runs": bench.runs,
        "idle": bench.extra.get("idle", {}),
        "metrics": bench.extra.get("metrics", {}),
        "failures": bench.failures,
    }
    doc["summary"] = summarise(bench.runs, targets, args.modes)
    os.makedirs(args.out, exist_ok=True)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    json_path = os.path.join(args.out, stamp + ".json")
    with open(json_path, "w") as f:
        json.dump(doc, f, indent=1)
    md = markdown(doc)
    with open(os.path.join(args.out, "latest.md"), "w") as f:
        f.write(md)
    log("")
    log(md)
    log("wrote %s and %s" % (json_path, os.path.join(args.out, "latest.md")))
    return 1 if bench.failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
