"""mysql and galera checks end to end: real mariadbd instances behind the real daemon in tcp mode."""
from __future__ import annotations

import csv
import io
import os
import re
import shutil
import tempfile
import time
from typing import Iterator

import pytest

from lbd.admin.client import query
from lbd.testing import LbdProcess, free_port
from tests.e2e.mariadb import MariaDB, client_query, galera_missing, missing

INTERVAL = 0.5
FASTINTER = 0.2
DOWNINTER = 1.0
CHECK_TIMEOUT = 1.0
FALL = 2
RISE = 2
DOWN_BOUND = (FALL - 1) * FASTINTER + INTERVAL + CHECK_TIMEOUT
SLACK = 1.0


def lbd_config(workdir: str, port: int, backends: dict[str, tuple[str, dict[str, int]]]) -> str:
    """A tcp frontend on the first backend; each backend: (health extra lines, servers)."""
    parts = ["""\
[global]
grace = "2s"
[admin]
socket = "{sock}"
[metrics]
bind = "off"
[log]
access = "off"
[defaults]
mode = "tcp"
retries = 3
[defaults.timeout]
connect = "1s"
check = "{timeout}ms"
[frontends.db]
bind = "127.0.0.1:{port}"
default_backend = "{first}"
""".format(sock=os.path.join(workdir, "admin.sock"), timeout=int(CHECK_TIMEOUT * 1000), port=port,
           first=next(iter(backends)))]
    for name, (health, servers) in backends.items():
        parts.append("""\
[backends.{name}.health]
interval = "{inter}ms"
fastinter = "{fast}ms"
downinter = "{down}ms"
rise = {rise}
fall = {fall}
{health}
[backends.{name}.servers]
""".format(name=name, inter=int(INTERVAL * 1000), fast=int(FASTINTER * 1000), down=int(DOWNINTER * 1000),
           rise=RISE, fall=FALL, health=health))
        parts.extend('%s = { address = "127.0.0.1:%d" }\n' % (s, p) for s, p in servers.items())
    return "".join(parts)


def rows(lbd: LbdProcess) -> dict[tuple[str, str], dict[str, str]]:
    text = query(os.path.join(lbd.workdir, "admin.sock"), "show stat")
    return {(r["pxname"], r["svname"]): r for r in csv.DictReader(io.StringIO(text.lstrip("# ")))}


def wait_status(lbd: LbdProcess, key: tuple[str, str], status: str, timeout: float = 15.0) -> float:
    """Seconds until ``show stat`` gives the server ``status`` (polled every 10 ms)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if rows(lbd)[key]["status"] == status:
            return time.monotonic() - start
        time.sleep(0.01)
    raise AssertionError("%s/%s not %s after %ss: %r\n%s" % (key + (status, timeout, rows(lbd)[key], lbd.log())))


def wait_log(lbd: LbdProcess, text: str, start: float, timeout: float) -> float:
    while time.monotonic() - start < timeout:
        if text in lbd.log():
            return time.monotonic() - start
        time.sleep(0.005)
    raise AssertionError("%r not logged within %ss:\n%s" % (text, timeout, lbd.log()))


@pytest.fixture
def two_mariadbs() -> Iterator[list[MariaDB]]:
    reason = missing()
    if reason:
        pytest.skip(reason)
    servers = [MariaDB(), MariaDB()]
    try:
        for db in servers:
            db.start()
            db.sql("CREATE USER 'lbd_check'@'%'; "
                   "CREATE USER 'app'@'%' IDENTIFIED BY 'app-pw'; GRANT USAGE ON *.* TO 'app'@'%';")
        yield servers
    finally:
        for db in servers:
            db.cleanup()


@pytest.fixture
def galera_node() -> Iterator[MariaDB]:
    reason = galera_missing()
    if reason:
        pytest.skip(reason)
    node = MariaDB(galera=True)
    try:
        node.start()
        node.sql("CREATE USER 'lbd_check'@'%' IDENTIFIED BY 'check-pw'; "
                 "CREATE USER 'app'@'%' IDENTIFIED BY 'app-pw'; GRANT USAGE ON *.* TO 'app'@'%';")
        yield node
    finally:
        node.cleanup()


def test_mysql_check_failover(two_mariadbs: list[MariaDB]) -> None:
    """Queries spread over two MariaDBs; one stopped goes DOWN and every new connection reaches the other."""
    db1, db2 = two_mariadbs
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="lbd-health-mariadb-")
    lbd = LbdProcess(lbd_config(workdir, port, {
        "db": ('type = "mysql"\nuser = "lbd_check"', {"db1": db1.port, "db2": db2.port}),
    }), workdir=workdir)
    try:
        for srv in ("db1", "db2"):
            wait_status(lbd, ("db", srv), "UP")
        assert {r["check_status"] for k, r in rows(lbd).items() if k[1] in ("db1", "db2")} == {"L7OK"}
        answers = [client_query(port, "app", "app-pw", "SELECT @@port") for _ in range(4)]
        assert sorted(answers) == sorted([(0, str(db1.port)), (0, str(db2.port))] * 2)

        t0 = time.monotonic()
        db1.stop()
        down = wait_log(lbd, "Server db/db1 is DOWN", t0, DOWN_BOUND + 10)
        after = [client_query(port, "app", "app-pw", "SELECT @@port") for _ in range(6)]
        assert after == [(0, str(db2.port))] * 6

        t1 = time.monotonic()
        db1.start()
        up = wait_log(lbd, "Server db/db1 is UP", t1, 30)
        back = {client_query(port, "app", "app-pw", "SELECT @@port") for _ in range(4)}
        down_line = next(line for line in lbd.log().splitlines() if "Server db/db1 is DOWN" in line)
        print("\n[mysql check] DOWN %.3f s after the stop began (bound %.2f s, stop included); "
              "UP %.3f s after the restart began (startup included)\n  %s" % (down, DOWN_BOUND, up, down_line))
        assert down <= DOWN_BOUND + SLACK + 5      # mariadbd's own shutdown takes a moment
        assert back == {(0, str(db1.port)), (0, str(db2.port))}
        # the info is the server's version from its greeting, as HAProxy's mysql-check reports it
        assert re.search(r'Server db/db1 is UP, reason: Layer7 check passed, info: "[^"]*MariaDB[^"]*", '
                         r"check duration: \d+ms\. 2 active and 0 backup servers online\.", lbd.log())
    finally:
        assert lbd.stop() == 0
        shutil.rmtree(workdir, ignore_errors=True)


def test_mysql_check_killed_server(two_mariadbs: list[MariaDB]) -> None:
    """A MariaDB killed outright is DOWN within the bound with 'Connection refused'."""
    db1, db2 = two_mariadbs
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="lbd-health-mariadb-")
    lbd = LbdProcess(lbd_config(workdir, port, {
        "db": ('type = "mysql"\nuser = "lbd_check"', {"db1": db1.port, "db2": db2.port}),
    }), workdir=workdir)
    try:
        for srv in ("db1", "db2"):
            wait_status(lbd, ("db", srv), "UP")
        t0 = time.monotonic()
        db1.kill()
        down = wait_log(lbd, "Server db/db1 is DOWN", t0, DOWN_BOUND + 5)
        print("\n[mysql check] killed server DOWN after %.3f s (bound %.2f s)" % (down, DOWN_BOUND))
        assert down <= DOWN_BOUND + SLACK
        assert ('Server db/db1 is DOWN, reason: Layer4 connection problem, info: "Connection refused", '
                "check duration: ") in lbd.log()
        assert [client_query(port, "app", "app-pw", "SELECT @@port") for _ in range(3)] == [(0, str(db2.port))] * 3
    finally:
        assert lbd.stop() == 0
        shutil.rmtree(workdir, ignore_errors=True)


def test_mysql_login_rejected(two_mariadbs: list[MariaDB]) -> None:
    """A check user the server rejects makes the server DOWN, the log saying why."""
    db1, _ = two_mariadbs
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="lbd-health-mariadb-")
    lbd = LbdProcess(lbd_config(workdir, port, {
        "strict": ('type = "mysql"\nuser = "nobody"', {"db1": db1.port}),
    }), workdir=workdir)
    try:
        wait_status(lbd, ("strict", "db1"), "DOWN")
        log = lbd.log()
        assert ("Server strict/db1 is DOWN, reason: Layer7 wrong status, code: 1045, "
                "info: \"Access denied for user 'nobody'@'localhost' (using password: NO)\", check duration: ") in log
        assert "backend strict has no server available!" in log
        assert rows(lbd)[("strict", "db1")]["check_code"] == "1045"
    finally:
        assert lbd.stop() == 0
        shutil.rmtree(workdir, ignore_errors=True)


def test_galera_desync(galera_node: MariaDB) -> None:
    """A Synced node is UP; desynced, it is DOWN unless allow_donor; synced again, UP again."""
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="lbd-health-galera-")
    check = 'type = "galera"\nuser = "lbd_check"\npassword = "check-pw"'
    lbd = LbdProcess(lbd_config(workdir, port, {
        "galera": (check, {"node1": galera_node.port}),
        "donor_ok": (check + "\nallow_donor = true", {"node1": galera_node.port}),
    }), workdir=workdir)
    try:
        wait_status(lbd, ("galera", "node1"), "UP")
        wait_status(lbd, ("donor_ok", "node1"), "UP")
        assert client_query(port, "app", "app-pw", "SELECT 1") == (0, "1")
        assert rows(lbd)[("galera", "node1")]["check_status"] == "L7OK"
        galera_node.sql("SET GLOBAL wsrep_desync=ON")
        assert galera_node.status("wsrep_local_state") == "2"
        wait_status(lbd, ("galera", "node1"), "DOWN")
        assert ('Server galera/node1 is DOWN, reason: Layer7 wrong status, code: 2, info: "Donor/Desynced", '
                "check duration: ") in lbd.log()
        row = rows(lbd)[("donor_ok", "node1")]
        assert (row["status"], row["check_status"], row["check_code"]) == ("UP", "L7OK", "2")
        code, _ = client_query(port, "app", "app-pw", "SELECT 1")
        assert code != 0                         # no server for the frontend's backend: connection closed
        galera_node.sql("SET GLOBAL wsrep_desync=OFF")
        wait_status(lbd, ("galera", "node1"), "UP")
        assert client_query(port, "app", "app-pw", "SELECT 1") == (0, "1")
    finally:
        assert lbd.stop() == 0
        shutil.rmtree(workdir, ignore_errors=True)
