"""The admin socket's framing over an in-memory transport: lines, prompt, limits, timeouts."""
from __future__ import annotations

import os
import socket
import tempfile

from twisted.internet import reactor as global_reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from lbd import config
from lbd.admin.protocol import MAX_LINE, AdminProtocol, listen_admin
from lbd.pool import MAINT
from lbd.service import LBService, StartupError
from tests.admin.support import BASE, make_service


class Harness:
    """One admin connection on a StringTransport, with a task clock."""

    def __init__(self, level: str = "admin") -> None:
        self.reactor = MemoryReactorClock()
        self.service = make_service(reactor=self.reactor)
        self.proto = AdminProtocol(self.service, level, self.reactor)
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.proto.dataReceived(data)

    def out(self) -> bytes:
        return self.transport.value()

    @property
    def closed(self) -> bool:
        return bool(self.transport.disconnecting)


class FramingTests(SynchronousTestCase):
    def test_answer_then_close(self) -> None:
        """Without prompt, a command is answered, the answer ends with an empty line, and the socket closes."""
        h = Harness()
        h.send(b"show backend\n")
        self.assertEqual(h.out(), b"# name\nweb\nstatic\n\n")
        self.assertTrue(h.closed)

    def test_empty_answer(self) -> None:
        """A successful action answers just the empty line."""
        h = Harness()
        h.send(b"disable server web/web1\n")
        self.assertEqual(h.out(), b"\n")
        self.assertEqual(h.service.pool.backends["web"].servers["web1"].state, MAINT)

    def test_several_lines_in_one_read(self) -> None:
        """Lines that arrive together are all answered before the close."""
        h = Harness()
        h.send(b"get weight web/web1\nget weight web/web2\n")
        self.assertEqual(h.out(), b"2 (initial 2)\n\n1 (initial 1)\n\n")
        self.assertTrue(h.closed)

    def test_byte_by_byte(self) -> None:
        """A line fed one byte at a time gives the same answer."""
        h = Harness()
        for b in b"show backend\n":
            self.assertFalse(h.closed)
            h.send(bytes([b]))
        self.assertEqual(h.out(), b"# name\nweb\nstatic\n\n")
        self.assertTrue(h.closed)

    def test_crlf(self) -> None:
        """A line ending in CRLF is understood."""
        h = Harness()
        h.send(b"show cli level\r\n")
        self.assertEqual(h.out(), b"admin\n\n")

    def test_unterminated_line_at_eof(self) -> None:
        """A last line without newline runs when the client half-closes."""
        h = Harness()
        h.send(b"show cli level")
        self.assertEqual(h.out(), b"")
        h.proto.readConnectionLost()
        self.assertEqual(h.out(), b"admin\n\n")
        self.assertTrue(h.closed)

    def test_quit(self) -> None:
        """quit closes without an answer."""
        h = Harness()
        h.send(b"prompt\nquit\n")
        self.assertEqual(h.out(), b"\n> ")
        self.assertTrue(h.closed)

    def test_level(self) -> None:
        """The socket's level applies to its connections."""
        h = Harness("user")
        h.send(b"disable server web/web1\n")
        self.assertEqual(h.out(), b"Permission denied\n\n")

    def test_non_utf8(self) -> None:
        """Bytes that are not UTF-8 make an unknown command, not a crash."""
        h = Harness("user")
        h.send(b"\xff\xfe\n")
        self.assertTrue(h.out().startswith(b"Unknown command. Please enter one of the following commands only:\n"))

    def test_handler_exception(self) -> None:
        """A failing command answers an internal error and is logged; the session goes on."""
        h = Harness()
        h.send(b"prompt\n")

        def broken() -> list[str]:
            raise RuntimeError("boom")

        h.service.reload = broken  # type: ignore[method-assign]
        h.send(b"reload\n")
        self.assertEqual(h.out(), b"\n> Internal error, see lbd's log.\n\n> ")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertFalse(h.closed)


class PromptTests(SynchronousTestCase):
    def test_prompt(self) -> None:
        """In prompt mode each answer is followed by '> ' and the connection stays open."""
        h = Harness()
        h.send(b"prompt\n")
        self.assertEqual(h.out(), b"\n> ")
        h.send(b"show cli level\n")
        self.assertEqual(h.out(), b"\n> admin\n\n> ")
        self.assertFalse(h.closed)

    def test_empty_line_at_prompt(self) -> None:
        """An empty line at the prompt just prints a new prompt."""
        h = Harness()
        h.send(b"prompt\n\n")
        self.assertEqual(h.out(), b"\n> > ")

    def test_prompt_off_closes(self) -> None:
        """Leaving prompt mode closes once the line is answered."""
        h = Harness()
        h.send(b"prompt\n")
        h.send(b"prompt\n")
        self.assertEqual(h.out(), b"\n> \n")
        self.assertTrue(h.closed)

    def test_prompt_with_semicolons(self) -> None:
        """'prompt; cmd' enters prompt mode and answers cmd on the same line."""
        h = Harness()
        h.send(b"prompt; show cli level\n")
        self.assertEqual(h.out(), b"\nadmin\n\n> ")


class LimitTests(SynchronousTestCase):
    def test_long_line(self) -> None:
        """A 1 MB line is answered with an error and never buffered whole."""
        h = Harness()
        h.send(b"prompt\n")
        chunk = b"x" * 65536
        for _ in range(16):
            h.send(chunk)
            self.assertLessEqual(len(h.proto._buf), MAX_LINE + len(chunk))
        self.assertEqual(h.out(), b"\n> Command line too long (the limit is 16384 bytes).\n\n")
        h.send(b"\nshow cli level\n")
        self.assertEqual(h.out(), b"\n> Command line too long (the limit is 16384 bytes).\n\n> admin\n\n> ")
        self.assertFalse(h.closed)

    def test_long_line_without_prompt_closes(self) -> None:
        """Without prompt, the socket closes once the over-long line has ended."""
        h = Harness()
        h.send(b"y" * (MAX_LINE + 10))
        self.assertFalse(h.closed)
        h.send(b"yyy\n")
        self.assertEqual(h.out(), b"Command line too long (the limit is 16384 bytes).\n\n")
        self.assertTrue(h.closed)

    def test_long_line_in_one_read(self) -> None:
        """An over-long line that arrives with its newline is refused too."""
        h = Harness()
        h.send(b"show " + b"z" * MAX_LINE + b"\n")
        self.assertEqual(h.out(), b"Command line too long (the limit is 16384 bytes).\n\n")

    def test_idle_timeout(self) -> None:
        """A client silent for 10 seconds is disconnected."""
        h = Harness()
        h.reactor.advance(9.9)
        self.assertFalse(h.closed)
        h.reactor.advance(0.2)
        self.assertTrue(h.closed)
        self.assertEqual(h.out(), b"")

    def test_activity_resets_timeout(self) -> None:
        """Each read restarts the idle timer."""
        h = Harness()
        h.send(b"prompt\n")
        h.reactor.advance(8)
        h.send(b"show cli level\n")
        h.reactor.advance(8)
        self.assertFalse(h.closed)
        h.reactor.advance(2.1)
        self.assertTrue(h.closed)

    def test_set_timeout_cli(self) -> None:
        """set timeout cli changes the idle timeout from the next read."""
        h = Harness()
        h.send(b"prompt\nset timeout cli 60\n")
        h.reactor.advance(59)
        self.assertFalse(h.closed)
        h.reactor.advance(1.1)
        self.assertTrue(h.closed)

    def test_timer_cancelled_on_close(self) -> None:
        """A closed connection leaves no timer behind."""
        h = Harness()
        h.send(b"show cli level\n")
        h.proto.connectionLost(Failure(ConnectionError()))
        self.assertEqual(h.reactor.getDelayedCalls(), [])


class _Collect(Protocol):
    def __init__(self, done: Deferred[bytes]) -> None:
        self.done = done
        self.data = b""

    def connectionMade(self) -> None:
        self.transport.write(self.factory.line)  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.done.callback(self.data)


class _CollectFactory(ClientFactory):
    def __init__(self, line: bytes) -> None:
        self.line = line
        self.done: Deferred[bytes] = Deferred()

    def buildProtocol(self, addr: object) -> Protocol:
        p = _Collect(self.done)
        p.factory = self
        return p


def _admin_config(path: str, mode: str = "600", level: str = "operator") -> config.Config:
    text = BASE.replace('[admin]\nsocket = "off"', '[admin]\nsocket = "%s"\nmode = "%s"\nlevel = "%s"' % (path, mode, level))
    return config.loads(text)


class ListenTests(TestCase):
    """listen_admin on a real UNIX socket with the global reactor."""

    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="lbd-admin-sock-")
        self.path = os.path.join(self.dir, "admin.sock")

    def _listen(self, mode: str = "600", level: str = "operator") -> LBService:
        service = LBService(_admin_config(self.path, mode, level), global_reactor)
        port = listen_admin(service)
        self.addCleanup(port.stopListening)
        return service

    def test_serves_commands(self) -> None:
        """A real client gets the answer and then EOF."""
        self._listen()
        factory = _CollectFactory(b"show cli level\n")
        global_reactor.connectUNIX(self.path, factory)
        factory.done.addCallback(self.assertEqual, b"operator\n\n")
        return factory.done

    def test_mode(self) -> None:
        """The socket file gets the configured mode."""
        self._listen(mode="640")
        self.assertEqual(os.stat(self.path).st_mode & 0o777, 0o640)

    def test_stale_socket_replaced(self) -> None:
        """A socket file nobody listens on (a crashed lbd's) is replaced."""
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(self.path)
        stale.close()
        self._listen()
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(probe.close)
        probe.connect(self.path)

    def test_live_socket_refused(self) -> None:
        """When a live lbd answers on the socket, startup fails saying so."""
        self._listen()
        other = LBService(_admin_config(self.path), global_reactor)
        with self.assertRaises(StartupError) as cm:
            listen_admin(other)
        self.assertEqual(str(cm.exception),
                         "admin.socket: %s is in use: another lbd is running and answering on it" % self.path)

    def test_not_a_socket(self) -> None:
        """A regular file at the socket's path is not removed; startup fails."""
        with open(self.path, "w") as f:
            f.write("precious")
        with self.assertRaises(StartupError) as cm:
            listen_admin(LBService(_admin_config(self.path), global_reactor))
        self.assertEqual(str(cm.exception), "admin.socket: %s exists and is not a socket" % self.path)
        with open(self.path) as f:
            self.assertEqual(f.read(), "precious")

    def test_missing_directory(self) -> None:
        """A socket in a missing directory fails startup with the reason."""
        path = os.path.join(self.dir, "nope", "admin.sock")
        with self.assertRaises(StartupError) as cm:
            listen_admin(LBService(_admin_config(path), global_reactor))
        self.assertEqual(str(cm.exception), "admin.socket: cannot listen on %s: No such file or directory" % path)
