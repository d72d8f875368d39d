"""mysql and galera probes: the wire format in pieces, then whole checks against a scripted MySQL server."""
from __future__ import annotations

import struct
from typing import Any

from twisted.internet import defer, reactor as _reactor, task
from twisted.trial.unittest import SynchronousTestCase, TestCase

from lbd.health.mysql import (
    MAX_PACKET, PacketReader, ProtocolError, lenenc, login_packet, native_password, packet, parse_error,
    parse_greeting, parse_row,
)
from lbd.health.probes import GALERA_QUERY, CheckResult, Target, galera_probe, mysql_probe
from lbd.testing import free_port
from tests.health.mysqlfake import SCRAMBLE, FakeMySQL, error_payload, greeting_payload, verify_native

reactor: Any = _reactor


def summary(r: CheckResult) -> tuple[str, int | None, str]:
    return (r.status, r.code, r.desc)


class WireTests(SynchronousTestCase):
    """The MySQL protocol pieces, without sockets."""

    def test_packet_framing(self) -> None:
        """A packet is a 3-byte little-endian length, the sequence id, the payload."""
        self.assertEqual(packet(1, b"\x01"), b"\x01\x00\x00\x01\x01")
        self.assertEqual(packet(0, b"x" * 300)[:4], b"\x2c\x01\x00\x00")

    def test_reader_whole_and_byte_by_byte(self) -> None:
        """The reader yields the same packets from any split of the stream."""
        stream = packet(0, b"hello") + packet(1, b"") + packet(2, b"x" * 1000)
        whole = PacketReader().feed(stream)
        reader = PacketReader()
        pieces = [p for i in range(len(stream)) for p in reader.feed(stream[i:i + 1])]
        self.assertEqual(whole, [(0, b"hello"), (1, b""), (2, b"x" * 1000)])
        self.assertEqual(pieces, whole)

    def test_reader_refuses_huge_packet(self) -> None:
        """A packet announcing more than the check buffer is a protocol error before it arrives."""
        self.assertRaises(ProtocolError, PacketReader().feed, struct.pack("<I", MAX_PACKET + 1)[:3] + b"\0")

    def test_login_packet_as_haproxy(self) -> None:
        """Without a plugin, the login is HAProxy's post-41 mysql-check packet: no password, no plugin."""
        self.assertEqual(login_packet("haproxy", b"", None),
                         bytes.fromhex("00820000" "00000001" "21") + b"\0" * 23 + b"haproxy\0" + b"\0")

    def test_login_packet_with_plugin(self) -> None:
        """With a plugin, the login carries the auth length, token and plugin name."""
        p = login_packet("u", b"T" * 20, "mysql_native_password")
        self.assertEqual(struct.unpack("<I", p[:4])[0], 0x1 | 0x200 | 0x2000 | 0x8000 | 0x80000)
        self.assertEqual(p[32:], b"u\0" + b"\x14" + b"T" * 20 + b"mysql_native_password\0")

    def test_native_password_accepted_by_server_check(self) -> None:
        """The scramble answer passes the server-side check, and only for the right password."""
        token = native_password(b"s3cret", SCRAMBLE)
        self.assertEqual(len(token), 20)
        self.assertTrue(verify_native(b"s3cret", SCRAMBLE, token))
        self.assertFalse(verify_native(b"other", SCRAMBLE, token))
        self.assertEqual(native_password(b"", SCRAMBLE), b"")

    def test_parse_greeting(self) -> None:
        """A MariaDB greeting gives its version, the 20-byte scramble and the plugin."""
        g = parse_greeting(greeting_payload("5.5.5-10.11.6-MariaDB"))
        self.assertEqual((g.version, g.scramble, g.plugin), ("5.5.5-10.11.6-MariaDB", SCRAMBLE, "mysql_native_password"))

    def test_parse_greeting_bad(self) -> None:
        """A truncated greeting or another protocol version is a protocol error, whatever the cut."""
        good = greeting_payload()
        for cut in range(1, 30):
            self.assertRaises(ProtocolError, parse_greeting, good[:cut])
        self.assertRaises(ProtocolError, parse_greeting, b"\x09" + good[1:])

    def test_parse_error(self) -> None:
        """An ERR packet gives its number and message, the SQL state left out."""
        self.assertEqual(parse_error(error_payload(1045, "Access denied")), (1045, "Access denied"))
        self.assertEqual(parse_error(error_payload(1040, "Too many connections", None)), (1040, "Too many connections"))

    def test_lenenc(self) -> None:
        """Length-encoded integers of every width, and NULL."""
        table = [(b"\x05", 5), (b"\xfb", None), (b"\xfc\x01\x02", 0x201), (b"\xfd\x01\x02\x03", 0x30201),
                 (b"\xfe" + struct.pack("<Q", 2**40), 2**40)]
        for raw, value in table:
            self.assertEqual(lenenc(raw, 0), (value, len(raw)))
        self.assertRaises(ProtocolError, lenenc, b"\xfc\x01", 0)
        self.assertRaises(ProtocolError, lenenc, b"\xff", 0)

    def test_parse_row(self) -> None:
        """A text row: length-encoded strings and NULLs; a cut row is a protocol error."""
        self.assertEqual(parse_row(b"\x05hello\xfb\x00"), [b"hello", None, b""])
        self.assertRaises(ProtocolError, parse_row, b"\x05hel")


class FakeServerTests(TestCase):
    """Whole checks against the scripted server on 127.0.0.1."""

    timeout = 20

    def serve(self, server: FakeMySQL) -> int:
        port = reactor.listenTCP(0, server, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(lambda: [c.transport.abortConnection() for c in server.conns if c.transport])
        return int(port.getHost().port)

    @defer.inlineCallbacks
    def run_check(self, probe: Any, server: FakeMySQL | None, timeout: float = 2.0) -> Any:
        port = self.serve(server) if server is not None else free_port()
        result = yield probe(reactor, Target("127.0.0.1", port, timeout))
        yield task.deferLater(reactor, 0.02, lambda: None)   # the goodbye reaches the server
        return result

    # mysql

    @defer.inlineCallbacks
    def test_mysql_greeting_only(self) -> Any:
        """Without a user, the greeting is enough: L7OK with the server version, nothing sent."""
        server = FakeMySQL()
        r = yield self.run_check(mysql_probe(None), server)
        self.assertEqual(summary(r), ("L7OK", None, "5.5.5-10.11.6-MariaDB-fake"))
        self.assertEqual(server.logins, [])

    @defer.inlineCallbacks
    def test_mysql_login_and_quit(self) -> Any:
        """With a user: a password-less login, OK, then COM_QUIT."""
        server = FakeMySQL()
        r = yield self.run_check(mysql_probe("lbd_check"), server)
        self.assertEqual(summary(r), ("L7OK", None, "5.5.5-10.11.6-MariaDB-fake"))
        self.assertEqual([(x["user"], x["auth"], x["plugin"]) for x in server.logins], [("lbd_check", b"", None)])
        self.assertEqual(server.commands, [b"\x01"])

    @defer.inlineCallbacks
    def test_mysql_login_rejected(self) -> Any:
        """A rejected login is L7STS with MySQL's error number and message."""
        r = yield self.run_check(mysql_probe("nobody"), FakeMySQL())
        self.assertEqual(summary(r), ("L7STS", 1045, "Access denied for user 'nobody'@'localhost' (using password: NO)"))

    @defer.inlineCallbacks
    def test_mysql_greeting_error(self) -> Any:
        """An error instead of a greeting (too many connections) is L7STS."""
        server = FakeMySQL(greeting=packet(0, error_payload(1040, "Too many connections", None)))
        r = yield self.run_check(mysql_probe("lbd_check"), server)
        self.assertEqual(summary(r), ("L7STS", 1040, "Too many connections"))

    @defer.inlineCallbacks
    def test_mysql_garbage(self) -> Any:
        """Something that is not MySQL is L7RSP."""
        results = []
        for junk in (b"HTTP/1.1 400 Bad Request\r\n\r\n", b"\x05\x00\x00\x00\x09abcde", b"\xff\xff\xff\x00" + b"x" * 64):
            r = yield self.run_check(mysql_probe("lbd_check"), FakeMySQL(greeting=junk))
            results.append(r.status)
        self.assertEqual(results, ["L7RSP", "L7RSP", "L7RSP"])

    @defer.inlineCallbacks
    def test_mysql_byte_by_byte(self) -> Any:
        """A server answering one byte per write gets the same verdict."""
        server = FakeMySQL(byte_delay=0.001)
        r = yield self.run_check(mysql_probe("lbd_check"), server)
        self.assertEqual(summary(r), ("L7OK", None, "5.5.5-10.11.6-MariaDB-fake"))
        self.assertEqual(server.commands, [b"\x01"])

    @defer.inlineCallbacks
    def test_mysql_silent_times_out(self) -> Any:
        """A server that never greets is L7TOUT at the check timeout."""
        r = yield self.run_check(mysql_probe(None), FakeMySQL(default_greeting=False), timeout=0.3)
        self.assertEqual(summary(r), ("L7TOUT", None, ""))
        self.assertTrue(0.29 <= r.duration < 1.5, r.duration)

    @defer.inlineCallbacks
    def test_mysql_cut_greeting(self) -> Any:
        """A server closing in the middle of its greeting is L7RSP."""
        server = FakeMySQL(greeting=packet(0, greeting_payload())[:20], close_after_greeting=True)
        r = yield self.run_check(mysql_probe(None), server)
        self.assertEqual(summary(r), ("L7RSP", None, "connection closed during the MySQL greeting"))

    @defer.inlineCallbacks
    def test_mysql_refused(self) -> Any:
        """No server: L4CON."""
        r = yield self.run_check(mysql_probe(None), None)
        self.assertEqual(summary(r), ("L4CON", None, "Connection refused"))

    # galera

    def galera(self, **kw: Any) -> FakeMySQL:
        return FakeMySQL(users={"lbd_check": b"pw"}, **kw)

    @defer.inlineCallbacks
    def test_galera_synced(self) -> Any:
        """A Synced, ready node passes; the check logged in with the password, asked once, said goodbye."""
        server = self.galera()
        r = yield self.run_check(galera_probe("lbd_check", "pw", False), server)
        self.assertEqual(summary(r), ("L7OK", 4, "Synced"))
        self.assertEqual(server.logins[0]["plugin"], "mysql_native_password")
        self.assertEqual(server.commands, [b"\x03" + GALERA_QUERY, b"\x01"])

    @defer.inlineCallbacks
    def test_galera_states(self) -> Any:
        """Donor/Desynced passes only with allow_donor; Joining, Joined and not ready fail."""
        table = [
            ({"wsrep_local_state": b"2", "wsrep_ready": b"ON"}, False, ("L7STS", 2, "Donor/Desynced")),
            ({"wsrep_local_state": b"2", "wsrep_ready": b"ON"}, True, ("L7OK", 2, "Donor/Desynced (allow_donor)")),
            ({"wsrep_local_state": b"3", "wsrep_ready": b"ON"}, True, ("L7STS", 3, "Joined")),
            ({"wsrep_local_state": b"1", "wsrep_ready": b"OFF"}, False, ("L7STS", 1, "wsrep_ready is OFF")),
            ({"wsrep_local_state": b"4", "wsrep_ready": b"OFF"}, False, ("L7STS", 4, "wsrep_ready is OFF")),
            ({"wsrep_ready": b"ON", "wsrep_local_state": b"4"}, False, ("L7OK", 4, "Synced")),
            ({}, False, ("L7RSP", None, "no wsrep status: not a Galera node")),
            ({"wsrep_local_state": None, "wsrep_ready": b"ON"}, False, ("L7RSP", None, "no wsrep status: not a Galera node")),
            ({"wsrep_local_state": b"x", "wsrep_ready": b"ON"}, False, ("L7RSP", None, "invalid wsrep_local_state x")),
        ]
        got = []
        for status, donor, _ in table:
            r = yield self.run_check(galera_probe("lbd_check", "pw", donor), self.galera(status=status))
            got.append(summary(r))
        self.assertEqual(got, [row[2] for row in table])

    @defer.inlineCallbacks
    def test_galera_wrong_password(self) -> Any:
        """A wrong password is L7STS 1045."""
        r = yield self.run_check(galera_probe("lbd_check", "nope", False), self.galera())
        self.assertEqual(summary(r), ("L7STS", 1045, "Access denied for user 'lbd_check'@'localhost' (using password: YES)"))

    @defer.inlineCallbacks
    def test_galera_auth_switch(self) -> Any:
        """A switch request to mysql_native_password is answered with the new scramble."""
        server = self.galera(auth_switch="mysql_native_password")
        r = yield self.run_check(galera_probe("lbd_check", "pw", False), server)
        self.assertEqual(summary(r), ("L7OK", 4, "Synced"))
        self.assertEqual(len(server.switch_answers), 1)

    @defer.inlineCallbacks
    def test_galera_unsupported_plugin(self) -> Any:
        """A switch to another plugin is L7RSP naming it."""
        r = yield self.run_check(galera_probe("lbd_check", "pw", False), self.galera(auth_switch="client_ed25519"))
        self.assertEqual(summary(r), ("L7RSP", None, "unsupported authentication plugin client_ed25519"))

    @defer.inlineCallbacks
    def test_galera_query_error(self) -> Any:
        """An error answering the status query is L7STS with its number."""
        r = yield self.run_check(galera_probe("lbd_check", "pw", False),
                                 self.galera(query_error=(1227, "Access denied; you need the PROCESS privilege")))
        self.assertEqual(summary(r), ("L7STS", 1227, "Access denied; you need the PROCESS privilege"))

    @defer.inlineCallbacks
    def test_galera_byte_by_byte(self) -> Any:
        """Greeting, OK and result set arriving a byte at a time give the same verdict."""
        r = yield self.run_check(galera_probe("lbd_check", "pw", False), self.galera(byte_delay=0.0005))
        self.assertEqual(summary(r), ("L7OK", 4, "Synced"))
