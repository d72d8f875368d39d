"""lbd.fastpath: immediate writes and direct dispatch, on real loopback sockets and the real reactor."""
from __future__ import annotations

import os
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial import unittest
from zope.interface import implementer

from lbd import config, fastpath, tap

BASE = """\
[admin]
socket = "off"

[frontends.www]
bind = "127.0.0.1:9"
default_backend = "web"

[backends.web.servers]
web1 = { address = "127.0.0.1:9" }
"""


def _wait(d: defer.Deferred[Any], seconds: float = 10.0) -> defer.Deferred[Any]:
    """Bound a real-socket wait: fail instead of hanging."""
    return d.addTimeout(seconds, reactor)


class Sink(Protocol):
    """Collects what arrives; ``done`` fires on connectionLost, ``got(n)`` once n bytes are in."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.done: defer.Deferred[None] = defer.Deferred()
        self.reason: Failure | None = None
        self.made: defer.Deferred[None] = defer.Deferred()
        self._want: tuple[int, defer.Deferred[None]] | None = None

    def connectionMade(self) -> None:
        self.made.callback(None)

    def got(self, n: int) -> defer.Deferred[None]:
        d: defer.Deferred[None] = defer.Deferred()
        self._want = (n, d)
        self._check()
        return d

    def _check(self) -> None:
        if self._want is not None and len(self.data) >= self._want[0]:
            d = self._want[1]
            self._want = None
            d.callback(None)

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        self._check()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.reason = reason
        self.done.callback(None)


class Adopting(Protocol):
    """The server side: adopts its transport as lbd's protocols do, then runs ``on_made``."""

    def __init__(self, owner: FastPathSockets) -> None:
        self.owner = owner
        self.adopted = False

    def connectionMade(self) -> None:
        self.adopted = fastpath.adopt(self.transport)
        self.owner.server_made(self)

    def dataReceived(self, data: bytes) -> None:
        if data == b"boom":
            raise ZeroDivisionError("boom")
        self.transport.write(data)      # echo


@implementer(IPushProducer)
class RecordingProducer:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.resumed: defer.Deferred[None] = defer.Deferred()

    def pauseProducing(self) -> None:
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        self.calls.append("resume")
        if not self.resumed.called:
            self.resumed.callback(None)

    def stopProducing(self) -> None:
        self.calls.append("stop")


class FastPathSockets(unittest.TestCase):
    """Shared set-up: the fast path installed on the real reactor, a listener, connect()."""

    def setUp(self) -> None:
        self.assertTrue(fastpath.install(reactor))
        self.addCleanup(fastpath.uninstall, reactor)
        self.servers: list[Adopting] = []
        self._server_waiters: list[defer.Deferred[Adopting]] = []
        owner = self

        class F(Factory):
            noisy = False

            def buildProtocol(self, addr: Any) -> Adopting:
                return Adopting(owner)

        self.port = reactor.listenTCP(0, F(), interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)

    def server_made(self, p: Adopting) -> None:
        self.servers.append(p)
        if self._server_waiters:
            self._server_waiters.pop(0).callback(p)

    @defer.inlineCallbacks
    def connect(self) -> Any:
        """A connected (client Sink, server Adopting) pair."""
        sink = Sink()
        cf = ClientFactory()
        cf.noisy = False
        cf.protocol = lambda: sink  # type: ignore[assignment]
        waiter: defer.Deferred[Adopting] = defer.Deferred()
        self._server_waiters.append(waiter)
        reactor.connectTCP("127.0.0.1", self.port.getHost().port, cf)
        yield _wait(sink.made)
        server = yield _wait(waiter)
        self.addCleanup(self._close, sink, server)
        return sink, server

    def _close(self, sink: Sink, server: Adopting) -> defer.Deferred[Any]:
        for t in (sink.transport, server.transport):
            if t is not None and t.connected:
                t.abortConnection()
        return _wait(sink.done) if not sink.done.called else defer.succeed(None)


class WriteTests(FastPathSockets):

    @defer.inlineCallbacks
    def test_small_write_is_sent_at_once(self) -> Any:
        """A write with nothing queued is sent before write() returns: nothing buffered, no writer registered."""
        sink, server = yield self.connect()
        self.assertTrue(server.adopted)
        t = server.transport
        t.write(b"hello")
        self.assertEqual((t.dataBuffer, t._tempDataBuffer), (b"", []))
        self.assertNotIn(t, reactor.getWriters())
        yield _wait(sink.got(5))
        self.assertEqual(bytes(sink.data), b"hello")

    @defer.inlineCallbacks
    def test_many_writes_arrive_complete_and_in_order(self) -> Any:
        """Thousands of fast writes of different sizes arrive complete and in order."""
        sink, server = yield self.connect()
        chunks = [(b"%06d:" % i) * (1 + i % 50) for i in range(3000)]
        for c in chunks:
            server.transport.write(c)
        expected = b"".join(chunks)
        yield _wait(sink.got(len(expected)))
        self.assertEqual(bytes(sink.data), expected)

    @defer.inlineCallbacks
    def test_partial_send_buffers_the_rest(self) -> Any:
        """A write larger than the peer's socket buffers queues what the kernel did not take, then delivers it all."""
        sink, server = yield self.connect()
        sink.transport.pauseProducing()             # the peer stops reading
        big = bytes(range(256)) * (32 * 1024)       # 8 MiB
        t = server.transport
        t.write(big)
        queued = len(t.dataBuffer) - t.offset + sum(map(len, t._tempDataBuffer))
        self.assertGreater(queued, 0)
        self.assertLess(queued, len(big))           # part of it was sent at once
        self.assertIn(t, reactor.getWriters())
        t.write(b"tail")                            # queued behind the rest, not sent ahead of it
        sink.transport.resumeProducing()
        yield _wait(sink.got(len(big) + 4))
        self.assertEqual(bytes(sink.data), big + b"tail")

    @defer.inlineCallbacks
    def test_streaming_producer_paused_over_buffer_size(self) -> Any:
        """A streaming producer is paused once the queued rest exceeds bufferSize and resumed when it drains."""
        sink, server = yield self.connect()
        sink.transport.pauseProducing()
        t = server.transport
        producer = RecordingProducer()
        t.registerProducer(producer, True)
        size = 8 * 1024 * 1024
        t.write(b"x" * size)
        self.assertEqual(producer.calls, ["pause"])
        sink.transport.resumeProducing()
        yield _wait(sink.got(size))
        yield _wait(producer.resumed)               # doWrite resumes it once the queue is empty
        self.assertEqual(producer.calls, ["pause", "resume"])
        t.unregisterProducer()

    @defer.inlineCallbacks
    def test_lose_connection_after_fast_write_flushes(self) -> Any:
        """loseConnection right after a fast write closes cleanly after the bytes arrive."""
        sink, server = yield self.connect()
        server.transport.write(b"last words")
        server.transport.loseConnection()
        yield _wait(sink.done)
        reason = sink.reason
        self.assertEqual(bytes(sink.data), b"last words")
        self.assertIsNotNone(reason)
        self.assertTrue(reason.check(ConnectionDone))  # type: ignore[union-attr]

    @defer.inlineCallbacks
    def test_lose_connection_after_partial_send_flushes_everything(self) -> Any:
        """loseConnection with a partly sent write pending closes only after all of it is delivered."""
        sink, server = yield self.connect()
        sink.transport.pauseProducing()
        big = b"0123456789abcdef" * (256 * 1024)    # 4 MiB
        server.transport.write(big)
        server.transport.loseConnection()
        sink.transport.resumeProducing()
        yield _wait(sink.done)
        reason = sink.reason
        self.assertEqual(len(sink.data), len(big))
        self.assertEqual(bytes(sink.data), big)
        self.assertIsNotNone(reason)
        self.assertTrue(reason.check(ConnectionDone))  # type: ignore[union-attr]


class DispatchTests(FastPathSockets):

    def test_install_replaces_the_poll_loop_of_this_reactor_only(self) -> None:
        """Installed, the reactor instance polls with lbd's loop; its class keeps Twisted's."""
        self.assertIn("doIteration", vars(reactor))
        self.assertIs(type(reactor).doIteration, type(reactor).doPoll)

    @defer.inlineCallbacks
    def test_exception_in_data_received_closes_only_that_connection(self) -> Any:
        """An exception in dataReceived is logged and closes that connection; another one keeps working."""
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        bad, _ = yield self.connect()
        good, _ = yield self.connect()
        bad.transport.write(b"boom")
        yield _wait(bad.done)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        failures = [e for e in events if e.get("isError")]
        self.assertEqual([e["failure"].value.args for e in failures], [("boom",)])
        self.assertEqual(failures[0]["log_system"], "Adopting,0,127.0.0.1")   # the connection's log prefix
        good.transport.write(b"still here")
        yield _wait(good.got(10))
        self.assertEqual(bytes(good.data), b"still here")
        self.assertFalse(good.done.called)


class SwitchTests(unittest.TestCase):

    def setUp(self) -> None:
        self.old_env = os.environ.pop(fastpath.ENV, None)
        self.addCleanup(self._restore_env)
        fastpath.uninstall(reactor)
        self.addCleanup(fastpath.uninstall, reactor)

    def _restore_env(self) -> None:
        os.environ.pop(fastpath.ENV, None)
        if self.old_env is not None:
            os.environ[fastpath.ENV] = self.old_env

    def _make_service(self, extra: str = "") -> Any:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(extra + BASE)
        opts = tap.Options()
        opts.parseOptions(["-c", path])
        return tap.makeService(opts)

    def test_on_by_default(self) -> None:
        """Without global.fastpath or LBD_FASTPATH the switch is on."""
        self.assertTrue(fastpath.enabled(config.loads(BASE)))

    def test_config_key_turns_it_off(self) -> None:
        """global.fastpath = false turns it off."""
        self.assertFalse(fastpath.enabled(config.loads("[global]\nfastpath = false\n" + BASE)))

    def test_env_turns_it_off(self) -> None:
        """LBD_FASTPATH=0 turns it off even when the configuration says true."""
        os.environ[fastpath.ENV] = "0"
        self.assertFalse(fastpath.enabled(config.loads("[global]\nfastpath = true\n" + BASE)))

    def test_make_service_installs_and_logs_once(self) -> None:
        """makeService installs it on the global reactor and logs one info line saying so."""
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self._make_service()
        self.assertTrue(fastpath.installed(reactor))
        self.assertIn("doIteration", vars(reactor))
        lines = [e["log_format"] for e in events if "fastpath" in e.get("log_format", "")]
        self.assertEqual(lines, ["fastpath on: direct dispatch and immediate writes (global.fastpath, LBD_FASTPATH)"])

    @defer.inlineCallbacks
    def test_switched_off_nothing_is_patched(self) -> Any:
        """With LBD_FASTPATH=0, makeService leaves the reactor alone and adopt leaves transports alone."""
        os.environ[fastpath.ENV] = "0"
        self._make_service()
        self.assertFalse(fastpath.installed(reactor))
        self.assertNotIn("doIteration", vars(reactor))
        made: defer.Deferred[Any] = defer.Deferred()

        class P(Protocol):
            def connectionMade(self) -> None:
                made.callback(self.transport)

        f = Factory.forProtocol(P)
        f.noisy = False
        port = reactor.listenTCP(0, f, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        sink = Sink()
        cf = ClientFactory()
        cf.noisy = False
        cf.protocol = lambda: sink  # type: ignore[assignment]
        reactor.connectTCP("127.0.0.1", port.getHost().port, cf)
        t = yield _wait(made)
        self.assertFalse(fastpath.adopt(t))
        self.assertNotIn("write", vars(t))
        t.abortConnection()
        yield _wait(sink.done)

    def test_install_declines_other_reactors(self) -> None:
        """A reactor that is not an EPollReactor is left as it is."""
        clock = Clock()
        self.assertFalse(fastpath.install(clock))
        self.assertFalse(fastpath.installed(clock))

