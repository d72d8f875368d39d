"""The lazily re-armed deadline: fires once at the last target, schedules as few calls as it can."""
from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from lbd.http.deadline import Deadline


class DeadlineTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.fired: list[tuple[float, int]] = []
        self.deadline = Deadline(self.clock, lambda kind: self.fired.append((self.clock.seconds(), kind)))

    def test_fires_at_the_target_with_its_kind(self) -> None:
        """A deadline set for 5 s fires at 5 s, passing its kind."""
        self.deadline.set(5.0, 7)
        self.clock.advance(4.999)
        self.assertEqual(self.fired, [])
        self.clock.advance(0.001)
        self.assertEqual(self.fired, [(5.0, 7)])

    def test_moving_later_keeps_one_call(self) -> None:
        """Moving the target later schedules nothing new until the old call fires and re-arms."""
        self.deadline.set(5.0)
        self.clock.advance(1.0)
        self.deadline.set(5.0)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(4.0)
        self.assertEqual(self.fired, [])
        self.clock.advance(1.0)
        self.assertEqual(self.fired, [(6.0, 0)])

    def test_moving_sooner_replaces_the_call(self) -> None:
        """A sooner target is honoured exactly."""
        self.deadline.set(30.0)
        self.deadline.set(2.0)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(2.0)
        self.assertEqual(self.fired, [(2.0, 0)])

    def test_clear_disarms(self) -> None:
        """A cleared deadline never fires."""
        self.deadline.set(1.0)
        self.deadline.clear()
        self.clock.advance(10.0)
        self.assertEqual(self.fired, [])

    def test_stop_cancels_the_call(self) -> None:
        """stop leaves no pending call behind."""
        self.deadline.set(1.0)
        self.deadline.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_kind_changes_with_the_target(self) -> None:
        """The kind reported is the one given with the last target."""
        self.deadline.set(1.0, 1)
        self.deadline.set(3.0, 2)
        self.clock.advance(3.0)
        self.assertEqual(self.fired, [(3.0, 2)])
