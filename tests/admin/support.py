"""Builders for the admin tests: a service on a memory reactor, fake checkers and sessions."""
from __future__ import annotations

import os
import tempfile
from typing import Any

from twisted.internet.testing import MemoryReactorClock

from lbd import config
from lbd.admin import commands
from lbd.pool import Server
from lbd.service import LBService

BASE = """\
[log]
access = "off"
[admin]
socket = "off"
[metrics]
bind = "off"
[defaults]
mode = "tcp"
[frontends.www]
bind = "127.0.0.1:18080"
default_backend = "web"
[backends.web.health]
type = "tcp"
[backends.web.servers]
web1 = { address = "10.0.0.1:80", weight = 2 }
web2 = { address = "10.0.0.2:8080" }
[backends.static]
balance = "static-rr"
[backends.static.servers]
s1 = { address = "10.0.1.1:80", check = false }
"""


class FakeChecker:
    """Stands in for a health checker; records what the service asks of it."""

    def __init__(self, log: list[tuple[str, str]], name: str) -> None:
        self.log = log
        self.name = name

    def start(self) -> None:
        self.log.append(("start", self.name))

    def stop(self) -> None:
        self.log.append(("stop", self.name))

    def restart(self) -> None:
        self.log.append(("restart", self.name))


class FakeSession:
    """A live connection that an operator may shut down."""

    def __init__(self) -> None:
        self.aborted = False
        self.graceful = False

    def abort(self) -> None:
        self.aborted = True

    def graceful_close(self) -> None:
        self.graceful = True


class CheckedService(LBService):
    """An LBService whose health checkers are fakes that log start/stop."""

    def __init__(self, cfg: config.Config, reactor: Any) -> None:
        self.checks: list[tuple[str, str]] = []
        super().__init__(cfg, reactor)

    def start_checker(self, srv: Server) -> None:
        if srv.health_disabled or not srv.checked:
            return
        srv.checker = FakeChecker(self.checks, "%s/%s" % (srv.backend.name, srv.name))
        srv.checker.start()


def write_config(text: str, directory: str | None = None) -> str:
    directory = directory or tempfile.mkdtemp(prefix="lbd-admin-test-")
    path = os.path.join(directory, "lbd.toml")
    with open(path, "w") as f:
        f.write(text)
    return path


def make_service(text: str = BASE, reactor: Any = None, path: str | None = None) -> CheckedService:
    """A service built from ``text`` (written to a file, so ``reload`` can re-read it)."""
    path = path or write_config(text)
    cfg = config.load(path)
    return CheckedService(cfg, reactor if reactor is not None else MemoryReactorClock())


def run(service: LBService, line: str, level: str = "admin", session: commands.Session | None = None) -> str:
    """What the socket would write for ``line`` (every answer with its closing empty line)."""
    session = session or commands.Session(level)
    return "".join(commands.render(r, session.severity_output) for r in commands.execute(service, line, session))
