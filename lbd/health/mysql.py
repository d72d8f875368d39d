"""The MySQL client protocol, as much as health checks need: pure, no Twisted, no client library.

Packets (3-byte length, sequence id), the v10 greeting, the 4.1 login
(HandshakeResponse41), mysql_native_password's scramble answer, ERR packets,
length-encoded integers and text-protocol rows. Every parser bounds what it
accepts and raises ``ProtocolError`` on anything malformed, whatever the cut.
"""
from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

# The longest MySQL packet a check accepts: greetings, OK/ERR and the status rows
# are small (the same bound as an HTTP check's buffer).
MAX_PACKET = 16384


def printable(raw: bytes, limit: int = 80) -> str:
    """Bytes for a log line: latin-1, non-printable characters as '?', bounded."""
    text = raw.decode("latin-1")
    return "".join(c if " " <= c <= "~" else "?" for c in text)[:limit]


CLIENT_LONG_PASSWORD = 0x1
CLIENT_PROTOCOL_41 = 0x200
CLIENT_TRANSACTIONS = 0x2000
CLIENT_SECURE_CONNECTION = 0x8000
CLIENT_PLUGIN_AUTH = 0x80000
COM_QUIT = b"\x01"
COM_QUERY = b"\x03"
UTF8_GENERAL_CI = 33
NATIVE_PASSWORD = "mysql_native_password"


class ProtocolError(Exception):
    """The server broke the MySQL protocol: becomes L7RSP with this text."""


def packet(seq: int, payload: bytes) -> bytes:
    """One MySQL packet: 3-byte little-endian length, sequence id, payload."""
    return struct.pack("<I", len(payload))[:3] + bytes((seq & 0xFF,)) + payload


class PacketReader:
    """Splits a byte stream into MySQL packets, bounded; fed any split of the stream."""

    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self.buf += data
        out = []
        buf = self.buf
        while len(buf) >= 4:
            size = buf[0] | buf[1] << 8 | buf[2] << 16
            if size > MAX_PACKET:
                raise ProtocolError("MySQL packet too large (%d bytes)" % size)
            if len(buf) < 4 + size:
                break
            out.append((buf[3], bytes(buf[4:4 + size])))
            del buf[:4 + size]
        return out


@dataclass(frozen=True)
class Greeting:
    """The parts of a v10 handshake a check needs."""

    version: str
    scramble: bytes
    capabilities: int
    plugin: str


def parse_greeting(p: bytes) -> Greeting:
    try:
        if p[0] != 10:
            raise ProtocolError("not a MySQL greeting (protocol version %d)" % p[0])
        end = p.index(b"\0", 1)
        version = printable(p[1:end], 100)
        pos = end + 1 + 4                      # connection id
        scramble = p[pos:pos + 8]
        if len(scramble) != 8:
            raise ProtocolError("truncated MySQL greeting")
        pos += 8 + 1                           # filler
        caps = struct.unpack("<H", p[pos:pos + 2])[0]
        pos += 2
        plugin = ""
        if len(p) > pos:
            pos += 1 + 2                       # charset, status
            caps |= struct.unpack("<H", p[pos:pos + 2])[0] << 16
            pos += 2
            auth_len = p[pos]
            pos += 1 + 10                      # reserved (MariaDB: extended capabilities)
            if caps & CLIENT_SECURE_CONNECTION:
                n = max(13, auth_len - 8)
                scramble += strip_nul(p[pos:pos + n])
                pos += n
            if caps & CLIENT_PLUGIN_AUTH:
                nul = p.find(b"\0", pos)
                plugin = p[pos:nul if nul >= 0 else len(p)].decode("ascii", "replace")
    except (IndexError, ValueError, struct.error):
        raise ProtocolError("truncated MySQL greeting")
    return Greeting(version, scramble, caps, plugin)


def strip_nul(data: bytes) -> bytes:
    """Scramble bytes without their terminating NUL (the scramble itself never holds one)."""
    return data[:-1] if data.endswith(b"\0") else data


def parse_error(p: bytes) -> tuple[int, str]:
    """An ERR packet's error number and message (without the SQL state)."""
    code = p[1] | p[2] << 8 if len(p) >= 3 else 0
    msg = p[3:]
    if msg[:1] == b"#" and len(msg) >= 6:
        msg = msg[6:]
    return code, msg.decode("utf-8", "replace")[:200]


def native_password(password: bytes, scramble: bytes) -> bytes:
    """mysql_native_password: SHA1(pw) XOR SHA1(scramble + SHA1(SHA1(pw))); empty for no password."""
    if not password:
        return b""
    h1 = hashlib.sha1(password).digest()
    h2 = hashlib.sha1(h1).digest()
    h3 = hashlib.sha1(scramble[:20] + h2).digest()
    return bytes(a ^ b for a, b in zip(h1, h3))


def login_packet(user: str, auth: bytes, plugin: str | None) -> bytes:
    """A HandshakeResponse41 payload; ``plugin`` None leaves out CLIENT_PLUGIN_AUTH (HAProxy's)."""
    caps = CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION
    if plugin is not None:
        caps |= CLIENT_LONG_PASSWORD | CLIENT_TRANSACTIONS | CLIENT_PLUGIN_AUTH
    parts = [struct.pack("<IIB", caps, 1 << 24, UTF8_GENERAL_CI), b"\0" * 23,
             user.encode("utf-8"), b"\0", bytes((len(auth),)), auth]
    if plugin is not None:
        parts += [plugin.encode("ascii"), b"\0"]
    return b"".join(parts)


def lenenc(p: bytes, pos: int) -> tuple[int | None, int]:
    """A length-encoded integer at ``pos``: (value or None for NULL, next position)."""
    first = p[pos]
    if first < 0xFB:
        return first, pos + 1
    if first == 0xFB:
        return None, pos + 1
    size = {0xFC: 2, 0xFD: 3, 0xFE: 8}.get(first)
    if size is None or pos + 1 + size > len(p):
        raise ProtocolError("invalid length in a MySQL result")
    return int.from_bytes(p[pos + 1:pos + 1 + size], "little"), pos + 1 + size


def parse_row(p: bytes) -> list[bytes | None]:
    out: list[bytes | None] = []
    pos = 0
    try:
        while pos < len(p):
            n, pos = lenenc(p, pos)
            if n is None:
                out.append(None)
                continue
            if pos + n > len(p):
                raise ProtocolError("truncated MySQL row")
            out.append(p[pos:pos + n])
            pos += n
    except IndexError:
        raise ProtocolError("truncated MySQL row")
    return out


def _is_eof(p: bytes) -> bool:
    return p[:1] == b"\xfe" and len(p) < 9


def is_eof(p: bytes) -> bool:
    """An EOF packet (0xfe, shorter than 9 bytes: a longer one is a row or a big length)."""
    return p[:1] == b"\xfe" and len(p) < 9
