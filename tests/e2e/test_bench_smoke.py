"""CI smoke run of the benchmark (bench/run.py --quick): it works end to end; no timing is asserted.

One quick run (about 25 s: every load test for 1 s against nginx directly,
HAProxy and lbd in http and tcp mode, a few idle connections, one /metrics
scrape with 100 backends x 10 servers) on the interpreter running the tests;
the tests below read what it wrote.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from typing import Any

import pytest

from lbd.testing import REPO_ROOT

RUN_PY = os.path.join(REPO_ROOT, "bench", "run.py")
TIMEOUT = 55.0
PROGRAMS = ("wrk", "nginx", "haproxy")
LOAD_TESTS = ("ka50", "c1", "newconn", "bulk")


def _find(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")


_missing = [p for p in PROGRAMS if _find(p) is None]
pytestmark = pytest.mark.skipif(bool(_missing), reason="%s not installed (apt-get install %s)"
                                % (", ".join(_missing), " ".join(_missing)))


class BenchRun:
    __slots__ = ("returncode", "output", "doc", "markdown")

    def __init__(self, returncode: int, output: str, doc: dict[str, Any], markdown: str) -> None:
        self.returncode = returncode
        self.output = output
        self.doc = doc
        self.markdown = markdown


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> BenchRun:
    out = str(tmp_path_factory.mktemp("bench-results"))
    argv = [sys.executable, RUN_PY, "--quick", "--only", "direct,haproxy,lbd", "--python", sys.executable,
            "--out", out]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO_ROOT)
    try:
        output, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)            # run.py stops what it started, by PID
        try:
            output, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        pytest.fail("bench/run.py --quick did not finish within %ss:\n%s" % (TIMEOUT, output))
    jsons = [f for f in os.listdir(out) if f.endswith(".json")]
    assert len(jsons) == 1, "expected one JSON file in %s, found %r; output:\n%s" % (out, jsons, output)
    with open(os.path.join(out, jsons[0])) as f:
        doc = json.load(f)
    with open(os.path.join(out, "latest.md")) as f:
        markdown = f.read()
    return BenchRun(proc.returncode, output, doc, markdown)


def test_exits_zero_without_failures(bench: BenchRun) -> None:
    """The quick run ends with status 0 and records no failure (lbd, HAProxy and nginx all started)."""
    assert bench.doc["failures"] == [], bench.output
    assert bench.returncode == 0, bench.output


def test_every_target_ran_every_load_test(bench: BenchRun) -> None:
    """Each load test ran once directly and once per mode through HAProxy and through lbd."""
    ran = sorted((r["target"], r["mode"], r["test"]) for r in bench.doc["runs"])
    expected = sorted([("direct", "-", t) for t in LOAD_TESTS]
                      + [(target, mode, t) for target in ("haproxy", "lbd") for mode in ("http", "tcp")
                         for t in LOAD_TESTS])
    assert ran == expected, bench.output


def test_lbd_answered_every_request_without_errors(bench: BenchRun) -> None:
    """Every lbd run moved bytes, and no request met a socket error or an HTTP error status."""
    lbd_runs = [r for r in bench.doc["runs"] if r["target"] == "lbd"]
    assert lbd_runs, bench.output
    for run in lbd_runs:
        res = run["result"]
        assert res["bytes"] > 0, run
        assert (res["socket_errors"], res["status_errors"]) == (0, 0), run
        if run["test"] != "bulk":
            assert res["requests"] > 0, run
        assert res["cpu_ms_per_mb" if run["test"] == "bulk" else "cpu_us_per_req"] is not None, run


def test_lbd_held_the_idle_connections(bench: BenchRun) -> None:
    """lbd kept every idle keep-alive connection of the quick run open."""
    idle = bench.doc["idle"]["lbd"]
    assert idle["held"] == idle["connections"] == 200, idle


def test_lbd_metrics_scraped(bench: BenchRun) -> None:
    """GET /metrics answered on lbd with 100 backends x 10 servers, with one series per server."""
    scrape = bench.doc["metrics"]["lbd"]
    assert scrape["lines"] > 1000, scrape
    assert len(scrape["samples_ms"]) == 2, scrape


def test_markdown_table_has_the_rows(bench: BenchRun) -> None:
    """latest.md holds the table header and a row per measured figure, with lbd's ratio to HAProxy."""
    md = bench.markdown
    lines = md.splitlines()
    header = [line for line in lines if line.startswith("| test |")]
    assert len(header) == 1, md
    assert header[0].startswith("| test | direct | haproxy | lbd (Py %s, Tw " % sys.version.split()[0]), md
    assert header[0].endswith(" | lbd/haproxy | target |"), md
    row = [line for line in lines if line.startswith("| http keep-alive, 50 conns: req/s |")]
    assert len(row) == 1, md
    assert row[0].endswith(" | ≥ 0.80x |"), md
    for label in ("| tcp bulk 100 MiB, 4 conns: MB/s |", "| http new connection per request, 50 conns: req/s |",
                  "| http 200 idle keep-alive connections: RSS, MB |",
                  "| GET /metrics, 100 backends x 10 servers: ms |"):
        assert any(line.startswith(label) for line in lines), (label, md)
    assert "Errors: none in any run." in md, md
