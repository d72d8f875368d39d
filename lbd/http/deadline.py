"""One lazily re-armed timer per connection and deadline.

Twisted's ``DelayedCall.reset`` to a *sooner* time searches the reactor's
whole timer heap (linear in the number of pending timers), and cancelling and
re-creating a call per request is churn on the hot path. A ``Deadline`` keeps
one ``DelayedCall`` and a target time: moving the target later only stores a
float; when the call fires early it re-arms itself for the rest. Only a move
*sooner* than the armed call costs a cancel and a new call. In steady
keep-alive traffic that means no timer operations per request at all.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorTime

# A call that fires this close to its target counts as on time: the target is
# computed as now + delay and re-derived as target - now, which can differ in
# the last float bits (time.time() values near 1.7e9 have a 2.4e-7 ulp).
_SLACK = 1e-6


class Deadline:
    """Calls ``callback(kind)`` once the clock reaches the target set last."""

    __slots__ = ("clock", "callback", "when", "kind", "_call")

    def __init__(self, clock: IReactorTime, callback: Callable[[int], None]) -> None:
        self.clock = clock
        self.callback = callback
        self.when: float | None = None     # target time, None when disarmed
        self.kind = 0                      # the caller's tag for what the deadline means
        self._call: IDelayedCall | None = None

    def set(self, delay: float, kind: int = 0, now: float | None = None) -> None:
        """Fire ``delay`` seconds from now (replacing any earlier target).

        ``now``: the clock's time when the caller has just read it (saves a read).
        """
        clock = self.clock
        when = (clock.seconds() if now is None else now) + delay
        self.when = when
        self.kind = kind
        call = self._call
        if call is None:
            self._call = clock.callLater(delay, self._fire)
        elif call.getTime() > when + _SLACK:
            call.cancel()
            self._call = clock.callLater(delay, self._fire)

    def clear(self) -> None:
        """Disarm; the pending call, if any, stays and finds nothing to do."""
        self.when = None

    def stop(self) -> None:
        """Disarm and cancel the pending call (the connection is gone)."""
        self.when = None
        call = self._call
        if call is not None:
            self._call = None
            if call.active():
                call.cancel()

    def _fire(self) -> None:
        self._call = None
        when = self.when
        if when is None:
            return
        clock = self.clock
        left = when - clock.seconds()
        if left > _SLACK:
            self._call = clock.callLater(left, self._fire)
            return
        self.when = None
        self.callback(self.kind)
