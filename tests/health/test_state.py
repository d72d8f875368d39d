"""The rise/fall machine and the check loop on a task.Clock: exact check times, UP and DOWN times."""
from __future__ import annotations

from typing import Callable

from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase

from lbd.health.probes import CheckResult
from lbd.health.state import DOWN, UP, CheckLoop, Health, Step, Timing

PASS = CheckResult("L4OK", None, "", 0.0)
FAIL = CheckResult("L4CON", None, "Connection refused", 0.0)


class HealthTests(SynchronousTestCase):
    """HAProxy's health counter, check by check."""

    def test_new_server_is_up_at_rise(self) -> None:
        """A new server starts UP with the counter at ``rise``."""
        h = Health(rise=2, fall=3)
        self.assertEqual((h.up, h.value, h.top), (True, 2, 4))

    def test_new_server_goes_down_at_first_failure(self) -> None:
        """A server never checked yet goes DOWN at its first failed check (HAProxy's start state)."""
        h = Health(rise=2, fall=3)
        self.assertEqual(h.record(False), Step(DOWN, True))
        self.assertEqual(h.value, 0)

    def test_first_success_makes_fully_up(self) -> None:
        """A passed first check jumps the counter to the top without a state change."""
        h = Health(rise=2, fall=3)
        self.assertEqual(h.record(True), Step(None, False))
        self.assertEqual(h.value, 4)

    def test_fully_up_server_falls_after_fall_failures(self) -> None:
        """A fully UP server goes DOWN on exactly its ``fall``-th consecutive failure."""
        h = Health(rise=2, fall=3, value=4)
        steps = [h.record(False) for _ in range(3)]
        self.assertEqual(steps, [Step(None, True), Step(None, True), Step(DOWN, True)])
        self.assertEqual([h.up, h.value], [False, 0])

    def test_down_server_rises_after_rise_successes(self) -> None:
        """A DOWN server goes UP on exactly its ``rise``-th consecutive success, at the top."""
        h = Health(rise=3, fall=2, up=False)
        steps = [h.record(True) for _ in range(3)]
        self.assertEqual(steps, [Step(None, False), Step(None, False), Step(UP, False)])
        self.assertEqual([h.up, h.value], [True, 4])

    def test_failure_while_rising_starts_over(self) -> None:
        """A failure part-way up drops the counter to 0 and counts as a failed check."""
        h = Health(rise=3, fall=2, up=False)
        h.record(True)
        h.record(True)
        self.assertEqual(h.record(False), Step(None, True))
        self.assertEqual(h.value, 0)

    def test_failure_at_zero_not_counted(self) -> None:
        """A failure of a fully DOWN server is not counted in ``chkfail`` (HAProxy counts while health > 0)."""
        h = Health(rise=2, fall=3, up=False)
        self.assertEqual(h.record(False), Step(None, False))

    def test_flapping_never_goes_down(self) -> None:
        """Failures that never run ``fall`` in a row keep the server UP."""
        h = Health(rise=2, fall=3, value=4)
        changes = [h.record(i % 3 != 2).change for i in range(30)]
        self.assertEqual(set(changes), {None})
        self.assertTrue(h.up)

    def test_intervals(self) -> None:
        """inter when fully UP, downinter when fully DOWN, fastinter in between and before any check."""
        t = Timing(interval=2.0, fastinter=1.0, downinter=5.0)
        h = Health(rise=2, fall=3)
        seen = [h.interval(t)]                 # not checked yet
        h.record(True)
        seen.append(h.interval(t))             # fully UP
        h.record(False)
        seen.append(h.interval(t))             # going down
        h.record(False)
        h.record(False)
        seen.append(h.interval(t))             # fully DOWN
        h.record(True)
        seen.append(h.interval(t))             # going up
        self.assertEqual(seen, [1.0, 2.0, 1.0, 5.0, 1.0])


class ScriptedProbe:
    """Answers each check from ``alive()`` after ``delay`` seconds of the clock; records check times."""

    def __init__(self, clock: task.Clock, alive: Callable[[], bool], delay: float = 0.0,
                 failure: CheckResult = FAIL) -> None:
        self.clock = clock
        self.alive = alive
        self.delay = delay
        self.failure = failure
        self.times: list[float] = []
        self.cancelled = 0

    def __call__(self) -> defer.Deferred[CheckResult]:
        self.times.append(self.clock.seconds())
        if self.delay == 0:
            return defer.succeed(PASS if self.alive() else self.failure)
        call = self.clock.callLater(self.delay, lambda: d.callback(PASS if self.alive() else self.failure))

        def cancel(_: defer.Deferred[CheckResult]) -> None:
            self.cancelled += 1
            call.cancel()

        d: defer.Deferred[CheckResult] = defer.Deferred(cancel)
        return d


class Recorder:
    """Collects (time, change) for every state change the loop announces."""

    def __init__(self, clock: task.Clock) -> None:
        self.clock = clock
        self.changes: list[tuple[float, str]] = []
        self.results: list[CheckResult] = []

    def __call__(self, result: CheckResult, step: Step) -> None:
        self.results.append(result)
        if step.change is not None:
            self.changes.append((self.clock.seconds(), step.change))


def make_loop(alive: Callable[[], bool], rise: int = 2, fall: int = 3, inter: float = 2.0,
              fastinter: float = 1.0, downinter: float = 5.0, delay: float = 0.0, spread: float = 0.5,
              failure: CheckResult = FAIL, up: bool = True) -> tuple[task.Clock, CheckLoop, ScriptedProbe, Recorder]:
    clock = task.Clock()
    probe = ScriptedProbe(clock, alive, delay, failure)
    rec = Recorder(clock)
    loop = CheckLoop(clock, Health(rise, fall, up=up), Timing(inter, fastinter, downinter), probe, rec,
                     rng=lambda: spread)
    return clock, loop, probe, rec


def run_until(clock: task.Clock, end: float, step: float = 0.25) -> None:
    while clock.seconds() < end:
        clock.advance(step)


class CheckLoopTests(SynchronousTestCase):
    """Check times and state changes on a clock."""

    def test_first_check_spread(self) -> None:
        """The first check waits the random fraction of the current interval (fastinter: not checked yet)."""
        clock, loop, probe, _ = make_loop(lambda: True, spread=0.25)
        loop.start()
        clock.advance(0.249)
        self.assertEqual(probe.times, [])
        clock.advance(0.001)
        self.assertEqual(probe.times, [0.25])

    def test_steady_checks_every_interval(self) -> None:
        """A healthy server is checked every ``interval`` after its first passed check."""
        clock, loop, probe, rec = make_loop(lambda: True)
        loop.start()
        run_until(clock, 9.0)
        self.assertEqual(probe.times, [0.5, 2.5, 4.5, 6.5, 8.5])
        self.assertEqual(rec.changes, [])

    def test_exact_down_and_up_times(self) -> None:
        """Dead at 5 s: DOWN at 8.5 s (inter, then fastinter twice); back at 14 s: UP at 19.5 s (downinter, fastinter)."""
        state = {"alive": True}
        clock, loop, probe, rec = make_loop(lambda: state["alive"])
        loop.start()
        run_until(clock, 5.0)
        state["alive"] = False
        run_until(clock, 14.0)
        state["alive"] = True
        run_until(clock, 25.0)
        self.assertEqual(rec.changes, [(8.5, DOWN), (19.5, UP)])
        self.assertEqual(probe.times, [0.5, 2.5, 4.5, 6.5, 7.5, 8.5, 13.5, 18.5, 19.5, 21.5, 23.5])

    def test_down_within_bound(self) -> None:
        """For any death time, DOWN comes within interval + (fall-1)*fastinter of it (refused connects)."""
        for death in [x * 0.25 for x in range(4, 40)]:
            state = {"alive": True}
            clock, loop, _, rec = make_loop(lambda: state["alive"], inter=2.0, fastinter=0.5, fall=3)
            loop.start()
            run_until(clock, death)
            state["alive"] = False
            run_until(clock, death + 10.0)
            self.assertEqual(len(rec.changes), 1)
            self.assertLessEqual(rec.changes[0][0] - death, 2.0 + 2 * 0.5)

    def test_timeouts_push_the_schedule(self) -> None:
        """Checks that take their whole timeout end later, and the next one is an interval after each end."""
        state = {"alive": True}
        timeout = CheckResult("L4TOUT", None, "", 1.5)
        clock, loop, probe, rec = make_loop(lambda: state["alive"], delay=1.5, failure=timeout)
        loop.start()
        run_until(clock, 4.0)
        state["alive"] = False
        run_until(clock, 20.0)
        # checks start at 0.5 (ends 2.0), 4.0 (ends 5.5: failed), 6.5 (ends 8.0), 9.0 (ends 10.5: DOWN)
        self.assertEqual(probe.times[:4], [0.5, 4.0, 6.5, 9.0])
        self.assertEqual(rec.changes, [(10.5, DOWN)])
        self.assertEqual(probe.times[4], 15.5)

    def test_flapping_server_stays_up(self) -> None:
        """A server failing every other check never goes DOWN with fall = 2."""
        count = [0]

        def alive() -> bool:
            count[0] += 1
            return count[0] % 2 == 1

        clock, loop, probe, rec = make_loop(alive, fall=2)
        loop.start()
        run_until(clock, 60.0)
        self.assertEqual(rec.changes, [])
        # pass (inter 2) / fail (fastinter 1) alternate: a 3 s period
        self.assertEqual(probe.times[:6], [0.5, 2.5, 3.5, 5.5, 6.5, 8.5])

    def test_stop_cancels_pending_check(self) -> None:
        """After stop(), the check in flight is cancelled and no other check starts."""
        clock, loop, probe, rec = make_loop(lambda: True, delay=1.0)
        loop.start()
        clock.advance(0.5)
        clock.advance(0.25)
        self.assertTrue(loop.in_progress)
        loop.stop()
        self.assertEqual((probe.cancelled, loop.in_progress), (1, False))
        run_until(clock, 30.0)
        self.assertEqual((probe.times, rec.results), ([0.5], []))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_restart_checks_at_once_from_rise(self) -> None:
        """restart() resets the counter to ``rise`` and checks at once, so one failure is DOWN."""
        state = {"alive": True}
        clock, loop, probe, rec = make_loop(lambda: state["alive"])
        loop.start()
        run_until(clock, 3.0)
        state["alive"] = False
        loop.restart()
        clock.advance(0)
        self.assertEqual(probe.times[-1], 3.0)
        self.assertEqual(rec.changes, [(3.0, DOWN)])

    def test_paused_loop_does_not_check(self) -> None:
        """While ``active`` says no, nothing is probed; checks resume when it says yes."""
        clock = task.Clock()
        state = {"active": False}
        probe = ScriptedProbe(clock, lambda: True)
        loop = CheckLoop(clock, Health(2, 3), Timing(2.0, 1.0, 5.0), probe, Recorder(clock),
                         active=lambda: state["active"], rng=lambda: 0.0)
        loop.start()
        clock.advance(0)
        run_until(clock, 10.0)
        self.assertEqual(probe.times, [])
        state["active"] = True
        run_until(clock, 12.0)
        self.assertEqual(probe.times, [11.0])

    def test_result_dropped_when_paused_meanwhile(self) -> None:
        """A result arriving after checks were paused does not move the counter."""
        clock = task.Clock()
        state = {"active": True}
        probe = ScriptedProbe(clock, lambda: False, delay=1.0)
        rec = Recorder(clock)
        loop = CheckLoop(clock, Health(2, 3), Timing(2.0, 1.0, 5.0), probe, rec,
                         active=lambda: state["active"], rng=lambda: 0.0)
        loop.start()
        clock.advance(0.5)
        state["active"] = False
        clock.advance(1.0)
        self.assertEqual((rec.results, loop.health.value), ([], 2))

    def test_hung_probe_is_abandoned(self) -> None:
        """A probe that never answers is cancelled after ``guard`` seconds and counts as failed."""
        clock = task.Clock()
        cancelled: list[bool] = []

        def probe() -> defer.Deferred[CheckResult]:
            return defer.Deferred(lambda d: cancelled.append(True))

        rec = Recorder(clock)
        loop = CheckLoop(clock, Health(2, 3), Timing(2.0, 1.0, 5.0), probe, rec, rng=lambda: 0.0, guard=7.0)
        loop.start()
        clock.advance(0)
        clock.advance(6.999)
        self.assertEqual(rec.results, [])
        clock.advance(0.001)
        self.assertEqual([r.status for r in rec.results], ["SOCKERR"])
        self.assertEqual(rec.changes, [(7.0, DOWN)])
        self.assertEqual(cancelled, [True])

    def test_probe_error_counts_as_failure(self) -> None:
        """A probe that errbacks is logged and counts as a failed check; checking goes on."""
        clock = task.Clock()

        def probe() -> defer.Deferred[CheckResult]:
            return defer.fail(RuntimeError("boom"))

        rec = Recorder(clock)
        loop = CheckLoop(clock, Health(2, 3), Timing(2.0, 1.0, 5.0), probe, rec, rng=lambda: 0.0)
        loop.start()
        clock.advance(0)
        run_until(clock, 6.0)
        self.assertEqual(rec.results[0], CheckResult("SOCKERR", None, "boom", 0.0))
        self.assertEqual(rec.changes, [(0.0, DOWN)])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), len(rec.results))
