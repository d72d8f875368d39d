"""The rise/fall machine and the clock that drives checks, as HAProxy does them.

``Health`` is HAProxy's health counter (src/check.c, set_server_check_status;
src/server.c, srv_getinter), pure: it hears "passed" or "failed" and says when
the server goes UP or DOWN and how long to wait before the next check.

- The counter runs from 0 to ``rise + fall - 1``. A passed check adds one, and
  reaching ``rise`` jumps to the top (fully UP). A failed check takes one off,
  and falling below ``rise`` drops to 0.
- A server goes DOWN when a failed check leaves the counter at 0, and UP when
  a passed check brings it to ``rise`` or more.
- A new server starts UP at ``rise``, "up, but down at the first failure";
  an operator ending maintenance puts it back there too.
- A failed check counts in ``chkfail`` only while the counter is above 0
  (the server is UP, or part-way through rising).
- Intervals: ``interval`` when fully UP, ``downinter`` when fully DOWN,
  ``fastinter`` in between (going down, going up, or not yet checked).

``CheckLoop`` runs one server's checks on an injected clock: the first after a
random part of the interval (so servers are not checked in lockstep), each
next one an interval after the previous one finished (HAProxy measures from
the end of a check, so a slow check never overlaps the next).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from twisted.internet import defer
from twisted.python.failure import Failure

from lbd.logsetup import Logger

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorTime

    from lbd.health.probes import CheckResult

UP = "UP"
DOWN = "DOWN"


@dataclass(frozen=True)
class Step:
    """What one check result did: ``change`` is "UP", "DOWN" or None; ``counted``: a failure for ``chkfail``."""

    change: str | None
    counted: bool


@dataclass(frozen=True)
class Timing:
    """Check intervals in seconds (HAProxy's inter, fastinter, downinter)."""

    interval: float
    fastinter: float
    downinter: float


class Health:
    """HAProxy's health counter for one server (pure, no clock)."""

    __slots__ = ("rise", "fall", "value", "up")

    def __init__(self, rise: int, fall: int, up: bool = True, value: int | None = None) -> None:
        self.rise = rise
        self.fall = fall
        # UP at ``rise`` (down at the first failure) or DOWN at 0, unless told.
        self.value = value if value is not None else (rise if up else 0)
        self.up = up

    @property
    def top(self) -> int:
        """The counter of a fully UP server."""
        return self.rise + self.fall - 1

    def reset(self, up: bool, value: int | None = None) -> None:
        self.up = up
        self.value = value if value is not None else (self.rise if up else 0)

    def record(self, passed: bool) -> Step:
        """Apply one check result; say whether the server changed state."""
        counted = False
        if passed:
            if self.value < self.top:
                self.value += 1
                if self.value >= self.rise:
                    self.value = self.top
        elif self.value > 0:
            counted = True
            self.value -= 1
            if self.value < self.rise:
                self.value = 0
        change: str | None = None
        if self.up and self.value == 0:
            self.up = False
            change = DOWN
        elif not self.up and self.value >= self.rise:
            self.up = True
            change = UP
        return Step(change, counted)

    def interval(self, timing: Timing) -> float:
        """Seconds until the next check, from the end of the last one."""
        if self.value == self.top and self.up:
            return timing.interval
        if not self.up and self.value == 0:
            return timing.downinter
        return timing.fastinter


class CheckLoop:
    """Runs checks for one server on ``clock`` and feeds their results to a ``Health``.

    ``run`` starts one check and returns a Deferred that fires with a
    ``CheckResult`` (probes never errback; if one does, or hangs past
    ``guard`` seconds, it counts as a failed check). ``active`` says whether
    checks run now (False: paused, as HAProxy in maintenance or with its
    health check disabled; results arriving while paused are dropped).
    ``on_result`` hears every result applied and the step it caused.
    """

    log = Logger()

    __slots__ = ("clock", "health", "timing", "_run", "_active", "_on_result", "_rng",
                 "_call", "_pending", "_guard", "running", "in_progress", "guard")

    def __init__(self, clock: IReactorTime, health: Health, timing: Timing,
                 run: Callable[[], defer.Deferred[CheckResult]],
                 on_result: Callable[[CheckResult, Step], None],
                 active: Callable[[], bool] = lambda: True,
                 rng: Callable[[], float] = random.random,
                 guard: float = 60.0) -> None:
        self.clock = clock
        self.health = health
        self.timing = timing
        self._run = run
        self._active = active
        self._on_result = on_result
        self._rng = rng
        self._call: IDelayedCall | None = None
        self._pending: defer.Deferred[CheckResult] | None = None
        self._guard: IDelayedCall | None = None
        self.guard = guard
        self.running = False
        self.in_progress = False

    def start(self) -> None:
        """Schedule the first check a random part of the current interval from now."""
        if self.running:
            return
        self.running = True
        self._schedule(self._rng() * self.health.interval(self.timing))

    def stop(self) -> None:
        """No more checks; a check in flight is cancelled and its result dropped."""
        self.running = False
        self._cancel()

    def restart(self, up: bool = True, value: int | None = None) -> None:
        """Reset the counter and check at once (HAProxy, leaving maintenance)."""
        self._cancel()
        self.health.reset(up, value)
        self.running = True
        self._schedule(0.0)

    def _cancel(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self._guard is not None and self._guard.active():
            self._guard.cancel()
        self._guard = None
        pending, self._pending = self._pending, None
        self.in_progress = False
        if pending is not None:
            pending.cancel()

    def _schedule(self, delay: float) -> None:
        self._call = self.clock.callLater(max(delay, 0.0), self._tick)

    def _tick(self) -> None:
        self._call = None
        if not self.running:
            return
        if not self._active():
            self._schedule(self.health.interval(self.timing))
            return
        self.in_progress = True
        try:
            d = self._run()
        except Exception:
            d = defer.fail()
        self._pending = d
        self._guard = self.clock.callLater(self.guard, self._stuck, d)
        d.addCallbacks(self._done, self._errored, callbackArgs=(d,), errbackArgs=(d,))

    def _stuck(self, d: defer.Deferred[CheckResult]) -> None:
        self._guard = None
        if self._pending is d:
            self._pending = None
            d.cancel()
            self._finish(_failed_result("check did not finish"))

    def _errored(self, f: Failure, d: defer.Deferred[CheckResult]) -> None:
        if self._pending is not d:
            return None       # cancelled by stop/restart/guard: nothing to report
        self.log.failure("health check raised", f)
        self._pending = None
        self._finish(_failed_result(f.getErrorMessage()))
        return None

    def _done(self, result: CheckResult, d: defer.Deferred[CheckResult]) -> None:
        if self._pending is not d:
            return
        self._pending = None
        self._finish(result)

    def _finish(self, result: CheckResult) -> None:
        self.in_progress = False
        if self._guard is not None and self._guard.active():
            self._guard.cancel()
        self._guard = None
        if not self.running:
            return
        if self._active():
            step = self.health.record(result.passed)
            self._on_result(result, step)
        if self.running and self._call is None and self._pending is None:
            self._schedule(self.health.interval(self.timing))


def _failed_result(desc: str) -> Any:
    from lbd.health.probes import CheckResult

    return CheckResult("SOCKERR", None, desc, 0.0)
