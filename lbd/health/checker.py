"""One server's health checking: its probe, its rise/fall machine, and the pool told of changes.

The service makes one ``ServerChecker`` per checked server (``make_checker``),
``start()``s it, and ``stop()``s it when the server goes away or lbd stops.
Each result lands on the server's check fields (``check_status``,
``check_code``, ``check_duration``, ``check_desc``, ``chkfail``), and a state
change goes through ``Backend.set_operational``, which logs it as HAProxy
does and updates balancing, slowstart, ``chkdown`` and downtime.

As HAProxy:

- Checks pause while the server is in maintenance or its health check is
  disabled (``disable health``); a result arriving then is dropped. Leaving
  maintenance (the pool calls ``restart()``) puts the server UP at once with
  a health of ``rise``, and checks it at once: one failure takes it down.
- The check goes to ``check_address``/``check_port`` (per server), else the
  backend's ``health.port``, else the traffic address. A ``tls`` server is
  checked over TLS unless its check goes elsewhere (HAProxy's check-ssl rule);
  mysql and galera checks never are (MySQL's TLS is negotiated in-protocol).
- Every check ends within the backend's ``timeout.check``, read at each check
  so that a reload's new timeouts apply.
"""
from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, Callable

from twisted.internet import defer

from lbd.health.probes import PASSED, CheckResult, Probe, Target, make_probe
from lbd.health.state import UP, CheckLoop, Health, Step, Timing
from lbd.logsetup import Logger

if TYPE_CHECKING:
    from twisted.internet.protocol import ClientFactory

    from lbd.pool import Server

# Seconds past ``timeout.check`` after which a check that never reported is abandoned.
GUARD = 5.0


def make_checker(reactor: Any, server: Server, rng: Callable[[], float] = random.random) -> ServerChecker | None:
    """A checker for ``server``, or None when it is not checked (no [health], or ``check = false``)."""
    if not server.checked or server.backend.cfg.health is None:
        return None
    return ServerChecker(reactor, server, rng)


class ServerChecker:
    """Checks one server on the reactor's clock and applies the results to it.

    Read by ``show stat`` and metrics: ``health`` (HAProxy's counter,
    0 .. rise+fall-1) and ``in_progress`` (a check is running now).
    """

    log = Logger()

    __slots__ = ("reactor", "server", "probe", "loop", "kind")

    def __init__(self, reactor: Any, server: Server, rng: Callable[[], float] = random.random) -> None:
        hc = server.backend.cfg.health
        assert hc is not None
        self.reactor = reactor
        self.server = server
        self.kind = hc.type
        self.probe: Probe = make_probe(hc)
        # A new server starts UP at ``rise`` (down at the first failure), as HAProxy;
        # a server whose checks were passing (a checker replaced by a reload) stays fully UP.
        health = Health(hc.rise, hc.fall, up=server.up)
        if server.up and server.check_status in PASSED:
            health.value = health.top
        self.loop = CheckLoop(reactor, health, Timing(hc.interval, hc.fastinter, hc.downinter),
                              self._run, self._apply, active=self._active, rng=rng)

    # -- what the service and the pool call -------------------------------------------

    def start(self) -> None:
        """Begin checking: the first check comes a random part of the interval from now."""
        self.loop.start()

    def stop(self) -> None:
        """Stop checking; a check in flight is abandoned. Idempotent."""
        self.loop.stop()

    def restart(self) -> None:
        """The server left maintenance: UP at once with a health of ``rise``, checked at once."""
        self.server.up = True
        self.loop.restart(up=True)

    # -- read by stats and metrics ------------------------------------------------------

    @property
    def health(self) -> int:
        return self.loop.health.value

    @property
    def in_progress(self) -> bool:
        return self.loop.in_progress

    @property
    def running(self) -> bool:
        return self.loop.running

    # -- the loop's hooks -----------------------------------------------------------------

    def target(self) -> Target:
        """Where the next check goes, from the server's current settings."""
        srv = self.server
        hc = srv.backend.cfg.health
        cfg = srv.cfg
        port = cfg.check_port or (hc.port if hc is not None else None)
        elsewhere = cfg.check_address is not None or port is not None
        tls: Callable[[ClientFactory], ClientFactory] | None = None
        if cfg.tls and not elsewhere and self.kind in ("tcp", "http"):
            from lbd.connect import _tls_wrap

            def tls(factory: ClientFactory) -> ClientFactory:
                return _tls_wrap(srv, factory)

        return Target(cfg.check_address or srv.host, port or srv.port, srv.backend.cfg.timeouts.check, tls)

    def _active(self) -> bool:
        srv = self.server
        return not (srv.maint or srv.health_disabled or srv.backend.removed)

    def _run(self) -> defer.Deferred[CheckResult]:
        srv = self.server
        health = self.loop.health
        if health.up != srv.up:
            # Someone else decided (an operator, a reload): follow, as a fresh start would.
            health.reset(srv.up)
        target = self.target()
        self.loop.guard = target.timeout + GUARD
        return self.probe(self.reactor, target)

    def _apply(self, result: CheckResult, step: Step) -> None:
        srv = self.server
        srv.check_status = result.status
        srv.check_code = result.code
        srv.check_duration = result.duration
        srv.check_desc = result.desc
        if step.counted:
            srv.chkfail += 1
        if step.change is not None:
            srv.backend.set_operational(srv, step.change == UP, result.reason())
            return
        health = self.loop.health
        rising = health.value < health.rise
        self.log.debug(
            "Health check for {kind}server {backend}/{server} {outcome}, reason: {reason}, status: {n}/{m} {state}.",
            kind="backup " if srv.cfg.backup else "", backend=srv.backend.name, server=srv.name,
            outcome="succeeded" if result.passed else "failed", reason=result.reason(),
            n=health.value if rising else health.value - health.rise + 1,
            m=health.rise if rising else health.fall, state="DOWN" if rising else "UP",
        )
