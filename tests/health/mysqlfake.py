"""A scripted MySQL/MariaDB server speaking just enough of the protocol for the mysql and galera checks.

It checks passwords the way a server does (from the stored SHA1(SHA1(password))),
so a wrong scramble is caught independently of how the probe computes it.
"""
from __future__ import annotations

import hashlib
import struct
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from lbd.health.mysql import PacketReader, packet

reactor: Any = _reactor

SCRAMBLE = b"abcdefghij0123456789"            # 20 bytes, no NUL, as servers make them
SWITCH_SCRAMBLE = b"ZYXWVUTSRQponmlkjihg"


def greeting_payload(version: str = "5.5.5-10.11.6-MariaDB-fake", scramble: bytes = SCRAMBLE,
                     plugin: str = "mysql_native_password", caps: int = 0xF7FE | (0x81BF << 16)) -> bytes:
    """A protocol v10 greeting as MariaDB sends it."""
    return b"".join((
        b"\x0a", version.encode(), b"\0", struct.pack("<I", 42), scramble[:8], b"\0",
        struct.pack("<H", caps & 0xFFFF), b"\x21", struct.pack("<H", 2), struct.pack("<H", caps >> 16),
        bytes((len(scramble) + 1,)), b"\0" * 10, scramble[8:], b"\0", plugin.encode(), b"\0",
    ))


def error_payload(code: int, message: str, state: bytes | None = b"28000") -> bytes:
    return b"\xff" + struct.pack("<H", code) + (b"#" + state if state else b"") + message.encode()


OK_PAYLOAD = b"\x00\x00\x00\x02\x00\x00\x00"
EOF_PAYLOAD = b"\xfe\x00\x00\x02\x00"


def lenenc_str(s: bytes) -> bytes:
    assert len(s) < 251
    return bytes((len(s),)) + s


def verify_native(password: bytes, scramble: bytes, token: bytes) -> bool:
    """The server's side of mysql_native_password: recover SHA1(pw) from the token and compare."""
    if not password:
        return token == b""
    stored = hashlib.sha1(hashlib.sha1(password).digest()).digest()
    h3 = hashlib.sha1(scramble + stored).digest()
    candidate = bytes(a ^ b for a, b in zip(token, h3))
    return len(token) == 20 and hashlib.sha1(candidate).digest() == stored


def parse_login(p: bytes) -> dict[str, Any]:
    caps, max_packet, charset = struct.unpack("<IIB", p[:9])
    pos = 9 + 23
    end = p.index(b"\0", pos)
    user = p[pos:end].decode()
    pos = end + 1
    n = p[pos]
    auth = p[pos + 1:pos + 1 + n]
    pos += 1 + n
    plugin = None
    if caps & 0x80000:
        end = p.index(b"\0", pos)
        plugin = p[pos:end].decode()
    return {"caps": caps, "max_packet": max_packet, "charset": charset, "user": user, "auth": auth,
            "plugin": plugin}


class FakeMySQLProtocol(Protocol):
    def connectionMade(self) -> None:
        f: FakeMySQL = self.factory  # type: ignore[assignment]
        f.conns.append(self)
        self.reader = PacketReader()
        self.stage = "login"
        self.user = ""
        self._calls: list[Any] = []
        self._next_at = 0.0
        if f.greeting is not None:
            self.send_raw(f.greeting)
            if f.close_after_greeting:
                self.close_after_writes()

    def send_raw(self, data: bytes) -> None:
        """Write now, or one byte per ``byte_delay`` after whatever is already queued."""
        f: FakeMySQL = self.factory  # type: ignore[assignment]
        if not f.byte_delay:
            self.transport.write(data)  # type: ignore[union-attr]
            return
        now = reactor.seconds()
        at = max(self._next_at, now)
        for i in range(len(data)):
            at += f.byte_delay
            self._calls.append(reactor.callLater(at - now, self.transport.write, data[i:i + 1]))
        self._next_at = at

    def send(self, seq: int, payload: bytes) -> None:
        self.send_raw(packet(seq, payload))

    def close_after_writes(self) -> None:
        f: FakeMySQL = self.factory  # type: ignore[assignment]
        now = reactor.seconds()
        if f.byte_delay:
            at = max(self._next_at, now) + f.byte_delay
            self._calls.append(reactor.callLater(at - now, self.transport.loseConnection))
        else:
            self.transport.loseConnection()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        for seq, payload in self.reader.feed(data):
            self.packet(seq, payload)

    def packet(self, seq: int, payload: bytes) -> None:
        f: FakeMySQL = self.factory  # type: ignore[assignment]
        if self.stage == "login":
            login = parse_login(payload)
            f.logins.append(login)
            self.user = login["user"]
            if f.auth_switch is not None:
                self.stage = "switch"
                self.send(seq + 1, b"\xfe" + f.auth_switch.encode() + b"\0" + SWITCH_SCRAMBLE + b"\0")
                return
            self.authenticate(seq, login["auth"], SCRAMBLE)
        elif self.stage == "switch":
            f.switch_answers.append(payload)
            self.authenticate(seq, payload, SWITCH_SCRAMBLE)
        elif self.stage == "command":
            f.commands.append(payload)
            if payload[:1] == b"\x01":
                self.transport.loseConnection()  # type: ignore[union-attr]
            elif payload[:1] == b"\x03":
                self.query()

    def authenticate(self, seq: int, token: bytes, scramble: bytes) -> None:
        f: FakeMySQL = self.factory  # type: ignore[assignment]
        password = f.users.get(self.user)
        if password is None or not verify_native(password, scramble, token):
            self.send(seq + 1, error_payload(1045, "Access denied for user '%s'@'localhost' (using password: %s)"
                                             % (self.user, "YES" if token else "NO")))
            self.close_after_writes()
            return
        self.stage = "command"
        self.send(seq + 1, OK_PAYLOAD)

    def query(self) -> None:
        f: FakeMySQL = self.factory  # type: ignore[assignment]
        if f.query_error is not None:
            self.send(1, error_payload(f.query_error[0], f.query_error[1], b"42000"))
            return
        out = [b"\x02", lenenc_str(b"def") + b"\0" * 4 + lenenc_str(b"Variable_name"),
               lenenc_str(b"def") + b"\0" * 4 + lenenc_str(b"Value"), EOF_PAYLOAD]
        for name, value in f.status.items():
            out.append(lenenc_str(name.encode()) + (b"\xfb" if value is None else lenenc_str(value)))
        out.append(EOF_PAYLOAD)
        self.send_raw(b"".join(packet(i + 1, p) for i, p in enumerate(out)))

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        for c in self._calls:
            if c.active():
                c.cancel()


class FakeMySQL(Factory):
    """Options: ``greeting`` (raw bytes, None: say nothing), ``users`` {name: password},
    ``status`` (the SHOW STATUS rows), ``auth_switch`` (plugin to switch to), ``query_error``,
    ``byte_delay`` (send a byte at a time), ``close_after_greeting``. Records ``logins``, ``commands``, ``switch_answers``."""

    noisy = False
    protocol = FakeMySQLProtocol

    def __init__(self, greeting: bytes | None = None, users: dict[str, bytes] | None = None,
                 status: dict[str, bytes | None] | None = None, auth_switch: str | None = None,
                 query_error: tuple[int, str] | None = None, byte_delay: float = 0.0,
                 default_greeting: bool = True, close_after_greeting: bool = False) -> None:
        if greeting is None and default_greeting:
            greeting = packet(0, greeting_payload())
        self.greeting = greeting
        self.close_after_greeting = close_after_greeting
        self.users = users if users is not None else {"lbd_check": b""}
        self.status = status if status is not None else {"wsrep_local_state": b"4", "wsrep_ready": b"ON"}
        self.auth_switch = auth_switch
        self.query_error = query_error
        self.byte_delay = byte_delay
        self.logins: list[dict[str, Any]] = []
        self.commands: list[bytes] = []
        self.switch_answers: list[bytes] = []
        self.conns: list[FakeMySQLProtocol] = []
