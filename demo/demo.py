#!/usr/bin/python3
"""`make demo`: lbd in front of two local Apache web servers, as in the HAProxy article.

Starts two apache2 instances on loopback ports ("Server 1 here", "Server 2
here"), then lbd with an HTTP frontend on 127.0.0.1:8080 and a TCP frontend
on 127.0.0.1:8090, sends a few requests through each so the round robin is
visible, stops one Apache to show failover, and keeps running (Ctrl-C stops
everything) when started from a terminal.

Runs with Debian's /usr/bin/python3 (Twisted 22.4) unless LBD_PYTHON says otherwise.
"""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from lbd.testing import Apache, LbdProcess  # noqa: E402

HTTP_PORT = int(os.environ.get("LBD_DEMO_HTTP_PORT", "8080"))
TCP_PORT = int(os.environ.get("LBD_DEMO_TCP_PORT", "8090"))
METRICS_PORT = int(os.environ.get("LBD_DEMO_METRICS_PORT", "9101"))

CONFIG = """\
# The demo's configuration: the HAProxy article's setup, in lbd's TOML.
[global]
grace = "2s"

[admin]
socket = "{workdir}/admin.sock"

[metrics]
bind = "127.0.0.1:{metrics}"

[defaults]
mode = "http"
retries = 3

[defaults.timeout]
connect = "2500ms"
server = "2500ms"

[frontends.www-http]
bind = "127.0.0.1:{http}"
default_backend = "www-backend"

[frontends.www-tcp]
bind = "127.0.0.1:{tcp}"
mode = "tcp"
default_backend = "www-tcp"

[backends.www-backend]
balance = "roundrobin"
[backends.www-backend.health]
type = "http"
interval = "1s"
fall = 2
rise = 2
[backends.www-backend.servers]
web1 = {{ address = "127.0.0.1:{web1}" }}
web2 = {{ address = "127.0.0.1:{web2}" }}

[backends.www-tcp]
mode = "tcp"
[backends.www-tcp.health]
type = "tcp"
interval = "1s"
[backends.www-tcp.servers]
web1 = {{ address = "127.0.0.1:{web1}" }}
web2 = {{ address = "127.0.0.1:{web2}" }}
"""


def fetch(port: int) -> str:
    req = urllib.request.Request("http://127.0.0.1:%d/" % port, headers={"Host": "example.com"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return "%d %s" % (r.status, r.read().decode().strip())
    except urllib.error.HTTPError as e:
        return "%d %s" % (e.code, e.reason)
    except OSError as e:
        return "error: %s" % (e,)


def show(title: str, port: int, n: int) -> None:
    print("\n== %s" % title)
    for i in range(n):
        print("  curl http://127.0.0.1:%d/  ->  %s" % (port, fetch(port)))


def main() -> int:
    if not Apache.available():
        print("apache2 is not installed: run `make deps` (or `make demo`, which does it)", file=sys.stderr)
        return 1
    web1 = Apache("Server 1 here\n")
    web2 = Apache("Server 2 here\n")
    web1.start()
    web2.start()
    workdir = web1.root
    text = CONFIG.format(workdir=workdir, metrics=METRICS_PORT, http=HTTP_PORT, tcp=TCP_PORT,
                         web1=web1.port, web2=web2.port)
    python = os.environ.get("LBD_PYTHON", "/usr/bin/python3")
    print("Two Apache servers on 127.0.0.1:%d (Server 1) and 127.0.0.1:%d (Server 2)" % (web1.port, web2.port))
    try:
        lbd = LbdProcess(text, python=python)
    except RuntimeError as e:
        print(str(e), file=sys.stderr)
        web1.stop()
        web2.stop()
        return 1
    print("lbd is running (config: %s, log: %s)" % (lbd.config_path, lbd.log_path))
    try:
        time.sleep(1.5)  # let the first health checks pass
        show("HTTP mode, round robin through lbd on :%d" % HTTP_PORT, HTTP_PORT, 4)
        show("TCP mode through lbd on :%d" % TCP_PORT, TCP_PORT, 4)
        print("\n== Stopping Server 1: lbd retries and health checks route around it")
        web1.stop()
        show("HTTP mode with Server 1 down", HTTP_PORT, 4)
        time.sleep(2.5)
        print("\n== Server status (`lbctl show stat` through the admin socket, a few columns):")
        out = subprocess.run([python, "-c", "import sys; from lbd.cli import lbctl_main; sys.exit(lbctl_main())",
                              "-s", os.path.join(workdir, "admin.sock"), "show", "stat"],
                             env=dict(os.environ, PYTHONPATH=os.path.dirname(HERE)),
                             capture_output=True, text=True, check=False).stdout
        rows = list(csv.reader(line for line in out.splitlines() if line))
        if rows and rows[0] and rows[0][0].startswith("# "):
            header = [rows[0][0][2:]] + rows[0][1:]
            cols = [header.index(c) for c in ("pxname", "svname", "status", "check_status", "lbtot")]
            print("  %-14s %-10s %-10s %-13s %s" % ("backend", "server", "status", "last check", "requests"))
            for row in rows[1:]:
                if row[1] not in ("FRONTEND", "BACKEND"):
                    print("  %-14s %-10s %-10s %-13s %s" % tuple(row[i] for i in cols))
        print("\n== Starting Server 1 again: it comes back UP by itself")
        web1.start()
        time.sleep(3)
        show("HTTP mode with Server 1 back", HTTP_PORT, 4)
        print("\nStatus page: http://127.0.0.1:%d/   metrics: http://127.0.0.1:%d/metrics" % (METRICS_PORT, METRICS_PORT))
        print("Access log (last lines of %s):" % lbd.log_path)
        for line in [l for l in lbd.log().splitlines() if "AccessLog" in l][-4:]:
            print("  " + line.split("] ", 1)[-1])
        if sys.stdin.isatty() and not os.environ.get("LBD_DEMO_EXIT"):
            print("\nlbd keeps running: try `curl http://127.0.0.1:%d/`. Press Ctrl-C to stop." % HTTP_PORT)
            try:
                signal.pause()
            except KeyboardInterrupt:
                pass
    finally:
        code = lbd.stop()
        web1.stop()
        web2.stop()
        print("\nStopped (lbd exit status %d)." % code)
    return 0


if __name__ == "__main__":
    sys.exit(main())
