"""Strict, incremental HTTP/1.1 message framing: bytes in, callbacks out.

This module is lbd's defence against request smuggling and its hot path, so
it decides framing the way the strictest common implementations do, and it
never forwards a byte whose meaning it has not checked.  It imports nothing
of Twisted: the relay feeds it whatever ``dataReceived`` got and acts on the
handler callbacks.

Buffering: one ``bytearray`` per parser.  Input is parsed straight from the
``bytes`` given to ``feed`` when nothing is pending (so a body segment is
passed on as that very object, uncopied); only an incomplete element (a
partial head, a partial chunk-size line) is kept, and later searches resume
where the previous one stopped, so input arriving byte by byte costs O(n).
The body bytes that one ``feed`` carries are delivered as ONE slice, chunk
framing included (lbd forwards chunked bodies verbatim once validated).
During every callback all unparsed bytes sit in the buffer, so ``buffered``,
``take_buffer()``, ``pause()`` and even a re-entrant ``feed()`` are exact
there.

Choices, where the RFCs leave room (RFC 9112 section numbers):

- Heads: CRLF line ends only: a bare LF or bare CR anywhere is 400 (2.2),
  as are NUL and the other control bytes except HTAB inside field values,
  obs-fold (5.2), whitespace between a field name and its colon (5.1), an
  empty or non-token field name.  Empty lines before a request line are
  skipped (2.2), up to ``max_request_line`` bytes of them.
- Request line: exactly ``METHOD SP TARGET SP VERSION``; the version is
  ``HTTP/1.1`` or ``HTTP/1.0`` (any other, ``HTTP/2.0`` included, is 400:
  lbd has no 505 page); the target is visible ASCII without ``#`` (as
  HAProxy without ``accept-invalid-http-request``), in origin form, absolute
  form, ``*`` (OPTIONS only) or authority form (CONNECT only).
- Host: required on HTTP/1.1, at most one, not empty, and only the
  characters of an RFC 3986 host and port (no ``@``, no spaces).
- Content-Length: one header with one run of at most 19 digits below
  2**63; repeated headers (even equal), lists, signs and blanks are 400.
- Transfer-Encoding: a request may carry it only on HTTP/1.1, never with
  Content-Length, and only as a list of plain tokens (no parameters, no
  empty elements) whose last and only ``chunked`` is the final coding, as
  HAProxy: ``gzip, chunked`` is accepted and forwarded verbatim;
  ``chunked, gzip``, ``xchunked``, ``chunked;``, ``chunked, chunked`` are
  400.  A CONNECT request with a body is 400.
- Chunks: 1 to 16 hex digits, then extensions ``;name[=token|"quoted"]``
  with optional blanks around ``;`` and ``=`` only (6.1's BWS); a blank
  right after the size with no extension following, a size line over 4 KiB,
  a missing CRLF after chunk data are errors.  Trailer lines follow the
  header rules; the trailer section is bounded by ``max_header_size``.
- Responses: ``HTTP/1.x SP 3DIGIT SP reason``; ``HTTP/1.1 200`` without the
  space and reason is accepted, as most clients do.  Framing follows 6.3:
  no body after HEAD and for 1xx, 204, 304; 101 and a 2xx to CONNECT end
  the parser (a tunnel follows); chunked; Content-Length; otherwise read
  until close.  A Transfer-Encoding not ending in chunked means read until
  close (6.3 rule 4); both Content-Length and Transfer-Encoding, or a
  Transfer-Encoding on an HTTP/1.0 response, is an invalid response (lbd
  answers 502) rather than something to repair.
- After a request that may turn the connection into a tunnel (CONNECT, or
  HTTP/1.1 with ``Connection: upgrade`` and ``Upgrade``), the request parser
  pauses itself as it delivers ``request_end``: the relay then calls
  ``take_buffer()`` once the server agreed (2xx / 101), or ``resume()`` to
  go on parsing pipelined requests when it refused.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

__all__ = [
    "ParseError",
    "RequestHead",
    "ResponseHead",
    "RequestParser",
    "ResponseParser",
]


class ParseError(Exception):
    """A framing violation; reported through the handler, never raised to callers."""

    def __init__(self, status: int, reason: str, pos: int = 0) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason
        self.pos = pos          # where the offending element starts (chunked bodies)


@dataclass(slots=True)
class RequestHead:
    """A validated request head: raw pairs as sent, plus what framing and routing need."""

    method: bytes
    target: bytes
    version: bytes
    headers: list[tuple[bytes, bytes]]
    host: bytes | None
    content_length: int | None
    chunked: bool
    keep_alive: bool
    expect_continue: bool
    upgrade: bytes | None
    connection_tokens: frozenset[bytes]
    head_size: int


@dataclass(slots=True)
class ResponseHead:
    """A validated response head; ``body_until_close`` means the connection cannot be reused."""

    version: bytes
    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    content_length: int | None
    chunked: bool
    keep_alive: bool
    connection_tokens: frozenset[bytes]
    head_size: int
    body_until_close: bool


# --- byte classes, as deletion sets for bytes.translate(None, delete) -----------------
# "x.translate(None, OK)" is empty exactly when every byte of x is in OK.

_ALPHA = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_DIGIT = b"0123456789"
_TCHAR = _ALPHA + _DIGIT + b"!#$%&'*+-.^_`|~"
_HEX = _DIGIT + b"abcdefABCDEF"
_VCHAR = bytes(range(0x21, 0x7F))
_OBS_TEXT = bytes(range(0x80, 0x100))
_HEAD_OK = b"\t\r\n " + _VCHAR + _OBS_TEXT           # what may appear anywhere in a head
_FIELD_OK = b"\t " + _VCHAR + _OBS_TEXT               # what may appear in one field line
_HOST_OK = _ALPHA + _DIGIT + b"-._~!$&'()*+,;=:[]%"   # RFC 3986 host [":" port], no userinfo
_SCHEME_OK = _ALPHA + _DIGIT + b"+-."
_QDTEXT = frozenset(b"\t !" + bytes(range(0x23, 0x5C)) + bytes(range(0x5D, 0x7F)) + _OBS_TEXT)
_QPAIR = frozenset(b"\t " + _VCHAR + _OBS_TEXT)
_TCHAR_SET = frozenset(_TCHAR)
_ALPHA_SET = frozenset(_ALPHA)

# A head with its CRLFs removed maps to no 0x00 through this table exactly when it
# holds no control byte (HTAB aside) and no CR or LF outside a CRLF pair: one C pass.
_CTL_MAP = bytes(0 if (c < 0x20 and c != 9) or c == 0x7F else 1 for c in range(256))

_MAX_CL = 2**63 - 1
_MAX_CHUNK_LINE = 4096          # a chunk-size line with its extensions, CRLF included
_NO_TOKENS: frozenset[bytes] = frozenset()

# header names the framing depends on
_K_HOST, _K_CL, _K_TE, _K_CONN, _K_EXPECT, _K_UPGRADE = range(6)
# Connection values as sent by nearly every client and server
_COMMON_TOKENS = {
    b"keep-alive": frozenset((b"keep-alive",)),
    b"close": frozenset((b"close",)),
    b"upgrade": frozenset((b"upgrade",)),
    b"keep-alive, upgrade": frozenset((b"keep-alive", b"upgrade")),
}
_SPECIAL = {
    b"host": _K_HOST,
    b"content-length": _K_CL,
    b"transfer-encoding": _K_TE,
    b"connection": _K_CONN,
    b"expect": _K_EXPECT,
    b"upgrade": _K_UPGRADE,
}

# Field names as nearly every client and server spells them (all valid tokens), with
# their _SPECIAL kind or -1: a hit skips the name check and the lowercasing.
_KNOWN_NAMES: dict[bytes, int] = {}
for _n in (b"Host", b"Content-Length", b"Transfer-Encoding", b"Connection", b"Expect", b"Upgrade",
           b"Server", b"Date", b"Content-Type", b"User-Agent", b"Accept", b"Accept-Encoding",
           b"Accept-Language", b"Accept-Ranges", b"Cache-Control", b"Cookie", b"Set-Cookie",
           b"Referer", b"Origin", b"Location", b"Vary", b"ETag", b"Last-Modified", b"Keep-Alive",
           b"Authorization", b"Pragma", b"Expires", b"Age", b"Content-Encoding"):
    for _v in (_n, _n.lower()):
        _KNOWN_NAMES[_v] = _SPECIAL.get(_v.lower(), -1)
del _n, _v

# --- parser states --------------------------------------------------------------------
_HEAD = 0        # waiting for / reading a message head
_BODY_CL = 1     # Content-Length body, self._remaining bytes to go
_CHUNKED = 2     # chunked body, sub-state in self._cstate
_BODY_EOF = 3    # response body read until the server closes
_DONE = 4        # message complete, the end event is still to be delivered
_IDLE = 5        # response parser with no request outstanding: any byte is an error
_STOPPED = 6     # a tunnel follows: bytes are only buffered, for take_buffer()
_CLOSED = 7      # clean end of input
_DEAD = 8        # an error was reported; input is ignored

# chunked sub-states
_C_SIZE = 0      # a chunk-size line is due
_C_DATA = 1      # chunk data, self._remaining bytes to go
_C_CRLF = 2      # the CRLF closing chunk data is due
_C_TRAILER = 3   # a trailer line or the final empty line is due


def _field_error(line: bytes) -> ParseError:
    """Name what is wrong with a field line that failed the quick checks."""
    if line[:1] in (b" ", b"\t"):
        return ParseError(400, "obsolete line folding in head")
    name, colon, _ = line.partition(b":")
    if not colon:
        return ParseError(400, "header line without colon")
    if not name:
        return ParseError(400, "empty header name")
    if name[-1:] in (b" ", b"\t"):
        return ParseError(400, "whitespace before colon in header")
    return ParseError(400, "invalid character in header name")


def _te_chunked(values: list[bytes], request: bool) -> bool:
    """True when the codings end with the only ``chunked``; raise on anything doubtful.

    Without ``chunked`` a response is read until close (False); a request is
    rejected since its length would be unknowable.
    """
    codings = []
    for v in values:
        for c in v.split(b","):
            c = c.strip(b" \t").lower()
            if not c or c.translate(None, _TCHAR):
                raise ParseError(400, "invalid Transfer-Encoding")
            codings.append(c)
    n = codings.count(b"chunked")
    if n == 0 and not request:
        return False
    if n != 1 or codings[-1] != b"chunked":
        raise ParseError(400, "Transfer-Encoding must end with a single chunked")
    return True


def _tokens(values: list[bytes]) -> frozenset[bytes]:
    """Lowercased tokens of the Connection header(s); empty list elements skipped."""
    if len(values) == 1:
        common = _COMMON_TOKENS.get(values[0].lower())
        if common is not None:
            return common
    out = set()
    for v in values:
        for t in v.split(b","):
            t = t.strip(b" \t").lower()
            if not t:
                continue
            if t.translate(None, _TCHAR):
                raise ParseError(400, "invalid Connection header")
            out.add(t)
    return frozenset(out)


def _parse_fields(lines: list[bytes]) -> tuple[Any, ...]:
    """Field lines after the start line, checked; the framing-relevant values picked out."""
    headers: list[tuple[bytes, bytes]] = []
    append = headers.append
    host = None
    nhost = 0
    cl = None
    te = None
    conn = None
    expect = None
    upgrade = None
    special = _SPECIAL
    known = _KNOWN_NAMES
    it = iter(lines)
    next(it)
    for line in it:
        name, colon, value = line.partition(b":")
        if not colon:
            raise _field_error(line)
        k = known.get(name)
        if k is None:
            # not one of the usual spellings: check the name, then look it up lowercased
            if not name.replace(b"-", b"").isalnum() and (not name or name.translate(None, _TCHAR)):
                raise _field_error(line)
            k = special.get(name.lower(), -1)
        value = value.strip(b" \t")
        append((name, value))
        if k < 0:
            continue
        if k == _K_HOST:
            nhost += 1
            if nhost > 1:
                raise ParseError(400, "multiple Host headers")
            host = value
        elif k == _K_CL:
            if cl is not None:
                raise ParseError(400, "multiple Content-Length headers")
            if not value.isdigit() or len(value) > 19:
                raise ParseError(400, "invalid Content-Length")
            cl = int(value)
            if cl > _MAX_CL:
                raise ParseError(400, "invalid Content-Length")
        elif k == _K_TE:
            if te is None:
                te = [value]
            else:
                te.append(value)
        elif k == _K_CONN:
            if conn is None:
                conn = [value]
            else:
                conn.append(value)
        elif k == _K_EXPECT:
            expect = value
        elif upgrade is None:
            upgrade = value
        else:
            upgrade += b", " + value
    return headers, host, nhost, cl, te, conn, expect, upgrade


def _check_chunk_ext(ext: bytes) -> bool:
    """``*( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )``, nothing else."""
    i = 0
    n = len(ext)
    tchar = _TCHAR_SET
    while i < n:
        while i < n and ext[i] in (32, 9):
            i += 1
        if i >= n or ext[i] != 59:          # ";"
            return False
        i += 1
        while i < n and ext[i] in (32, 9):
            i += 1
        j = i
        while j < n and ext[j] in tchar:
            j += 1
        if j == i:
            return False
        k = j
        while k < n and ext[k] in (32, 9):
            k += 1
        if k >= n:
            return k == j                    # trailing blanks are not allowed
        if ext[k] == 59:
            i = k
            continue
        if ext[k] != 61:                     # "="
            return False
        i = k + 1
        while i < n and ext[i] in (32, 9):
            i += 1
        if i < n and ext[i] == 34:           # quoted-string
            i += 1
            while True:
                if i >= n:
                    return False
                c = ext[i]
                if c == 34:
                    i += 1
                    break
                if c == 92:                  # quoted-pair
                    if i + 1 >= n or ext[i + 1] not in _QPAIR:
                        return False
                    i += 2
                elif c in _QDTEXT:
                    i += 1
                else:
                    return False
        else:
            j = i
            while j < n and ext[j] in tchar:
                j += 1
            if j == i:
                return False
            i = j
        k = i
        while k < n and ext[k] in (32, 9):
            k += 1
        if k >= n:
            return k == i
        if ext[k] != 59:
            return False
        i = k
    return True


def _chunk_size(line: bytes | bytearray) -> int:
    semi = line.find(b";")
    if semi < 0:
        size = line
    else:
        if not _check_chunk_ext(bytes(line[semi:])):
            raise ParseError(400, "invalid chunk extension")
        size = line[:semi].rstrip(b" \t")
    if not size or len(size) > 16 or size.translate(None, _HEX):
        raise ParseError(400, "invalid chunk size")
    return int(size, 16)


def _check_trailer(line: bytes | bytearray) -> None:
    if line.translate(None, _FIELD_OK):
        raise ParseError(400, "control character in trailer")
    name, colon, _ = line.partition(b":")
    if not colon or not name or name.translate(None, _TCHAR):
        raise _field_error(bytes(line))


class _Parser:
    """Buffering, pausing and body framing shared by both directions."""

    __slots__ = (
        "_buf", "_state", "_paused", "_busy", "_eof", "_scan", "_line_done",
        "_skipped", "_remaining", "_cstate", "_trailer_size", "_max_head",
        "_max_line", "_on_body", "_on_end",
    )

    _on_body: Callable[[bytes], None]
    _on_end: Callable[[], None]

    # overridden per direction
    _skip_crlf = False
    _E_LINE = (400, "start line too long")
    _E_HEAD = (400, "head too large")

    def __init__(self, max_header_size: int, max_line: int) -> None:
        self._buf = bytearray()
        self._state = _HEAD
        self._paused = False
        self._busy = False
        self._eof = False
        self._scan = 0            # bytes of the pending element already searched
        self._line_done = False   # the pending head's start line is complete
        self._skipped = 0         # empty lines skipped before this request line
        self._remaining = 0
        self._cstate = _C_SIZE
        self._trailer_size = 0
        self._max_head = max_header_size
        self._max_line = max_line

    # --- public -------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Parse ``data`` (any split of the stream); while paused or tunnelling, only keep it."""
        if self._busy or self._paused or self._state >= _STOPPED:
            if self._state < _CLOSED:
                self._buf += data
            return
        buf = self._buf
        if buf:
            buf += data
            self._run(buf, 0)
        else:
            self._run(data if type(data) is bytes else bytes(data), 0)

    def pause(self) -> None:
        """Deliver no more events (safe inside a callback); input is buffered."""
        self._paused = True

    def resume(self) -> None:
        """Deliver what the buffer holds, then go on with new input."""
        if not self._paused:
            return
        self._paused = False
        if self._busy:
            return
        st = self._state
        if st == _HEAD and not self._buf and not self._eof:
            return                  # nothing to deliver: the common keep-alive case
        if st < _STOPPED:
            self._run(self._buf, 0)

    def feed_eof(self) -> None:
        """The peer closed its write side; acted on once buffered input is parsed."""
        if self._eof or self._state >= _CLOSED:
            return
        self._eof = True
        if not self._busy and not self._paused and self._state < _STOPPED:
            self._at_eof()

    @property
    def buffered(self) -> int:
        """Bytes received but not yet delivered (back-pressure, pipelining limits)."""
        return len(self._buf)

    @property
    def paused(self) -> bool:
        """Whether events are held, by pause() or after a request asking for a tunnel."""
        return self._paused

    def take_buffer(self) -> bytes:
        """Remove and return the undelivered bytes: the first bytes of a tunnel."""
        data = bytes(self._buf)
        self._buf.clear()
        self._scan = 0
        self._line_done = False
        return data

    # --- direction-specific hooks ---------------------------------------------------

    def _got_head(self, head: bytes, size: int) -> tuple[Any, Any]:
        raise NotImplementedError

    def _message_end(self) -> None:
        raise NotImplementedError

    def _fail(self, status: int, reason: str) -> None:
        raise NotImplementedError

    def _at_eof(self) -> None:
        raise NotImplementedError

    # --- the loop -------------------------------------------------------------------

    def _run(self, src: bytes | bytearray, pos: int) -> None:
        """Parse ``src[pos:]`` as far as possible; keep what is left in the buffer.

        Before every callback the unparsed rest moves to the buffer (``src``
        becomes the buffer), so handlers see exact ``buffered`` values and may
        feed, pause or take the buffer.
        """
        buf = self._buf
        self._busy = True
        try:
            while not self._paused:
                st = self._state
                if st == _HEAD:
                    n = len(src)
                    if pos >= n:
                        break
                    if src[pos] == 13 and self._skip_crlf:
                        # empty line before a request line (RFC 9112 section 2.2)
                        if n - pos < 2:
                            break
                        if src[pos + 1] != 10:
                            self._fail(400, "bare CR in head")
                            break
                        pos += 2
                        self._skipped += 2
                        if self._skipped > self._max_line:
                            self._fail(400, "too many empty lines before the request line")
                            break
                        continue
                    scan = self._scan
                    end = src.find(b"\r\n\r\n", pos + scan - 3 if scan > 3 else pos, pos + self._max_head)
                    if end < 0:
                        if src is not buf:
                            buf += memoryview(src)[pos:]
                            src = buf
                        elif pos:
                            del buf[:pos]
                        pos = 0
                        err = self._head_incomplete()
                        if err is not None:
                            self._fail(*err)
                        break
                    if src is buf:
                        head = bytes(memoryview(buf)[pos:end])
                    else:
                        head = src[pos:end]  # type: ignore[assignment]  # src is bytes here
                    size = end + 4 - pos
                    pos = end + 4
                    if scan:
                        self._scan = 0
                        self._line_done = False
                    if self._skipped:
                        self._skipped = 0
                    try:
                        event, obj = self._got_head(head, size)
                    except ParseError as e:
                        self._fail(e.status, e.reason)
                        break
                    if src is not buf:
                        if pos < len(src):
                            buf += memoryview(src)[pos:]
                        src = buf
                    elif pos:
                        del buf[:pos]
                    pos = 0
                    event(obj)
                elif st == _BODY_CL:
                    avail = len(src) - pos
                    if not avail:
                        break
                    rem = self._remaining
                    if avail < rem:
                        self._remaining = rem - avail
                        end = pos + avail
                    else:
                        self._remaining = 0
                        self._state = _DONE
                        end = pos + rem
                    if src is buf:
                        chunk = bytes(memoryview(buf)[pos:end])
                        del buf[:end]
                    else:
                        chunk = src[pos:end]  # type: ignore[assignment]  # the very object when all body
                        if end < len(src):
                            buf += memoryview(src)[end:]
                        src = buf
                    pos = 0
                    self._on_body(chunk)
                elif st == _CHUNKED:
                    perr = None
                    try:
                        end = self._chunked(src, pos)
                    except ParseError as e:
                        perr = e
                        end = e.pos
                    if end > pos:
                        # what is valid goes on, even ahead of an error, as it
                        # would have had the bytes arrived one by one
                        if src is buf:
                            chunk = bytes(memoryview(buf)[pos:end])
                            del buf[:end]
                        else:
                            chunk = src[pos:end]  # type: ignore[assignment]
                            if end < len(src):
                                buf += memoryview(src)[end:]
                            src = buf
                        pos = 0
                        self._on_body(chunk)
                    if perr is not None:
                        self._fail(perr.status, perr.reason)
                        break
                    if end == pos:
                        break           # nothing valid yet: more input needed
                    # else go round: _DONE, or the handler may have fed, paused or taken
                elif st == _DONE:
                    if src is not buf:
                        if pos < len(src):
                            buf += memoryview(src)[pos:]
                        src = buf
                    elif pos:
                        del buf[:pos]
                    pos = 0
                    self._message_end()
                elif st == _BODY_EOF:
                    if pos >= len(src):
                        break
                    if src is buf:
                        chunk = bytes(memoryview(buf)[pos:])
                        buf.clear()
                    else:
                        chunk = src[pos:]  # type: ignore[assignment]
                        src = buf
                    pos = 0
                    self._on_body(chunk)
                elif st == _IDLE:
                    if pos < len(src):
                        self._fail(502, "unsolicited data from the server")
                    break
                else:
                    break
            if self._state == _DEAD:
                buf.clear()
            elif src is buf:
                if pos:
                    del buf[:pos]
            elif pos < len(src):
                buf += memoryview(src)[pos:]
        finally:
            self._busy = False
        if self._eof and not self._paused and self._state < _STOPPED:
            self._at_eof()

    def _head_incomplete(self) -> tuple[int, str] | None:
        """The buffer holds a partial head: enforce limits and catch defects early."""
        buf = self._buf
        n = len(buf)
        old = self._scan
        self._scan = n
        if not self._line_done:
            i = buf.find(b"\r\n", old - 1 if old else 0)
            if i < 0:
                if n >= self._max_line + 2:
                    return self._E_LINE
            elif i > self._max_line:
                return self._E_LINE
            else:
                self._line_done = True
        if n >= self._max_head:
            return self._E_HEAD
        if buf[old:].translate(None, _HEAD_OK):
            return 400, "control character in head"
        i = buf.find(b"\n", old)
        while i >= 0:
            if i == 0 or buf[i - 1] != 13:
                return 400, "bare LF in head"
            i = buf.find(b"\n", i + 1)
        i = buf.find(b"\r", old - 1 if old else 0, n - 1)
        while i >= 0:
            if buf[i + 1] != 10:
                return 400, "bare CR in head"
            i = buf.find(b"\r", i + 1, n - 1)
        return None

    def _check_head_bytes(self, head: bytes) -> list[bytes]:
        """Split a complete head into lines, rejecting stray control bytes, CR and LF."""
        lines = head.split(b"\r\n")
        if 0 in b"".join(lines).translate(_CTL_MAP):      # int membership: a memchr
            # name the defect, in the order the streaming checks use
            if head.translate(None, _HEAD_OK):
                raise ParseError(400, "control character in head")
            nl = len(lines) - 1
            if head.count(b"\n") != nl:
                raise ParseError(400, "bare LF in head")
            raise ParseError(400, "bare CR in head")
        if len(lines[0]) > self._max_line:
            raise ParseError(*self._E_LINE)
        return lines

    def _chunked(self, src: bytes | bytearray, pos: int) -> int:
        """Validate chunk framing from ``pos``; return how far it is valid (all of it, usually).

        Sets ``_DONE`` after the last trailer; raises ParseError with ``pos`` at
        the element that is wrong, so what precedes it can still be delivered.
        """
        n = len(src)
        cst = self._cstate
        try:
            while True:
                if cst == _C_DATA:
                    rem = self._remaining
                    if n - pos < rem:
                        self._remaining = rem - (n - pos)
                        self._cstate = cst
                        return n
                    pos += rem
                    self._remaining = 0
                    cst = _C_CRLF
                if cst == _C_CRLF:
                    if n - pos < 2:
                        if n > pos and src[pos] != 13:
                            raise ParseError(400, "missing CRLF after chunk data")
                        self._cstate = cst
                        return pos
                    if src[pos] != 13 or src[pos + 1] != 10:
                        raise ParseError(400, "missing CRLF after chunk data")
                    pos += 2
                    cst = _C_SIZE
                # a chunk-size line or a trailer line
                scan = self._scan
                i = src.find(b"\n", pos + scan)
                if i < 0:
                    if cst == _C_SIZE:
                        if n - pos >= _MAX_CHUNK_LINE:
                            raise ParseError(400, "chunk size line too long")
                    elif self._trailer_size + n - pos >= self._max_head:
                        raise ParseError(*self._E_HEAD)
                    if src.find(b"\r", pos + scan - 1 if scan else pos, n - 1) >= 0:
                        raise ParseError(400, "bare CR in chunked body")
                    self._scan = n - pos
                    self._cstate = cst
                    return pos
                self._scan = 0
                if i == pos or src[i - 1] != 13:
                    raise ParseError(400, "bare LF in chunked body")
                line = src[pos:i - 1]
                if 13 in line:
                    raise ParseError(400, "bare CR in chunked body")
                if cst == _C_SIZE:
                    if i + 1 - pos > _MAX_CHUNK_LINE:
                        raise ParseError(400, "chunk size line too long")
                    size = _chunk_size(line)
                    pos = i + 1
                    if size:
                        self._remaining = size
                        cst = _C_DATA
                    else:
                        self._trailer_size = 0
                        cst = _C_TRAILER
                else:
                    self._trailer_size += i + 1 - pos
                    if self._trailer_size > self._max_head:
                        raise ParseError(*self._E_HEAD)
                    if line:
                        _check_trailer(line)
                        pos = i + 1
                    else:
                        self._cstate = _C_SIZE
                        self._state = _DONE
                        return i + 1
        except ParseError as e:
            e.pos = pos
            self._cstate = cst
            raise


class RequestParser(_Parser):
    """Requests from a client: heads, bodies (Content-Length or chunked), pipelining.

    ``handler`` gets ``request_head(RequestHead)``, ``request_body(bytes)``
    (raw wire bytes, chunk framing included), ``request_end()`` and
    ``request_error(status, reason)``, after which the parser ignores input.
    A request without Content-Length or chunked has no body.
    """

    __slots__ = ("_on_head", "_on_error", "_tunnel")

    _skip_crlf = True
    _E_LINE = (414, "request line too long")
    _E_HEAD = (431, "request head too large")

    def __init__(self, handler: Any, max_header_size: int = 16384, max_request_line: int = 8192) -> None:
        super().__init__(max_header_size, max_request_line)
        self._on_head = handler.request_head
        self._on_body = handler.request_body
        self._on_end = handler.request_end
        self._on_error = handler.request_error
        self._tunnel = False

    def _fail(self, status: int, reason: str) -> None:
        self._state = _DEAD
        self._buf.clear()
        self._on_error(status, reason)

    def _message_end(self) -> None:
        self._state = _HEAD
        if self._tunnel:
            self._tunnel = False
            self._paused = True
        self._on_end()

    def _at_eof(self) -> None:
        st = self._state
        if st == _HEAD and not self._buf:
            self._state = _CLOSED
        elif st < _STOPPED:
            self._fail(400, "connection closed in the middle of a request")

    def _got_head(self, head: bytes, size: int) -> tuple[Any, Any]:
        lines = self._check_head_bytes(head)
        parts = lines[0].split(b" ")
        if len(parts) != 3:
            raise ParseError(400, "malformed request line")
        method, target, version = parts
        if not method.isalpha() and (not method or method.translate(None, _TCHAR)):
            raise ParseError(400, "invalid method")
        if version == b"HTTP/1.1":
            v11 = True
        elif version == b"HTTP/1.0":
            v11 = False
        else:
            raise ParseError(400, "unsupported HTTP version")
        # no control byte is left in the head, no space in a target split on spaces
        if not target or not target.isascii() or 35 in target or 9 in target:     # "#", HTAB
            raise ParseError(400, "invalid request target")
        connect = method == b"CONNECT"
        if target[0] != 47:                                   # not origin form
            if connect:
                if 47 in target or 64 in target or 58 not in target:     # "/", "@", ":"
                    raise ParseError(400, "invalid request target")
            elif target == b"*":
                if method != b"OPTIONS":
                    raise ParseError(400, "invalid request target")
            else:
                scheme, sep, _ = target.partition(b"://")
                if not sep or not scheme or scheme[0] not in _ALPHA_SET or scheme.translate(None, _SCHEME_OK):
                    raise ParseError(400, "invalid request target")
        elif connect:
            raise ParseError(400, "invalid request target")

        headers, host, nhost, cl, te, conn, expect, upgrade = _parse_fields(lines)
        if host is None:
            if v11:
                raise ParseError(400, "missing Host header")
        elif not host.replace(b".", b"").isalnum() and (not host or host.translate(None, _HOST_OK)):
            raise ParseError(400, "invalid Host header")
        chunked = False
        if te is not None:
            if not v11:
                raise ParseError(400, "Transfer-Encoding in an HTTP/1.0 request")
            if cl is not None:
                raise ParseError(400, "both Content-Length and Transfer-Encoding")
            chunked = _te_chunked(te, True)
        if connect and (chunked or cl):
            raise ParseError(400, "CONNECT request with a body")
        tokens = _tokens(conn) if conn is not None else _NO_TOKENS
        if v11:
            keep_alive = b"close" not in tokens
            expect_continue = expect is not None and expect.lower() == b"100-continue"
            if upgrade is not None and b"upgrade" not in tokens:
                upgrade = None
        else:
            keep_alive = b"keep-alive" in tokens and b"close" not in tokens
            expect_continue = False
            upgrade = None                                     # RFC 9110 7.8
        h = RequestHead(method, target, version, headers, host, cl, chunked, keep_alive,
                        expect_continue, upgrade, tokens, size)
        self._tunnel = connect or upgrade is not None
        if chunked:
            self._state = _CHUNKED
            self._cstate = _C_SIZE
        elif cl:
            self._state = _BODY_CL
            self._remaining = cl
        else:
            self._state = _DONE
        return self._on_head, h



class ResponseParser(_Parser):
    """Responses from a server, each framed by the request it answers (``expect``).

    ``handler`` gets ``response_informational(ResponseHead)`` for 1xx other
    than 101, ``response_head(ResponseHead)``, ``response_body(bytes)`` (raw
    wire bytes), ``response_end()`` and ``response_error(reason)``.  Bytes
    arriving while no request is outstanding are an error ("unsolicited data
    from the server"), so a stray response can never be taken for the answer
    to the next request.  ``feed_eof`` with a request outstanding and nothing
    received reports "server closed the connection without a response", the
    case where an idempotent request may be retried on a fresh connection.
    """

    __slots__ = ("_on_head", "_on_info", "_on_error", "_expected")

    _E_LINE = (502, "response status line too long")
    _E_HEAD = (502, "response head too large")

    def __init__(self, handler: Any, max_header_size: int = 65536) -> None:
        super().__init__(max_header_size, max_header_size)
        self._on_head = handler.response_head
        self._on_info = handler.response_informational
        self._on_body = handler.response_body
        self._on_end = handler.response_end
        self._on_error = handler.response_error
        self._expected: deque[tuple[bytes, bool | None]] = deque()
        self._state = _IDLE

    def expect(self, method: bytes, upgrade: bool | None = None) -> None:
        """Arm for the response to one more request sent with ``method``.

        ``upgrade=False`` says the request asked for no protocol switch, so a
        101 answering it is invalid (a server must not switch unasked);
        ``None`` leaves that check to the caller.
        """
        self._expected.append((method, upgrade))
        if self._state == _IDLE:
            self._state = _HEAD
            if self._buf and not self._busy and not self._paused:
                self._run(self._buf, 0)

    def _fail(self, status: int, reason: str) -> None:
        self._state = _DEAD
        self._buf.clear()
        self._on_error(reason)

    def _message_end(self) -> None:
        self._expected.popleft()
        self._state = _HEAD if self._expected else _IDLE
        self._on_end()

    def _at_eof(self) -> None:
        st = self._state
        if st == _BODY_EOF:
            self._state = _CLOSED
            self._expected.popleft()
            self._on_end()
        elif st == _IDLE and not self._buf:
            self._state = _CLOSED
        elif st == _HEAD and not self._buf:
            self._fail(502, "server closed the connection without a response")
        elif st == _HEAD:
            self._fail(502, "server closed the connection in the middle of the response head")
        elif st < _STOPPED:
            self._fail(502, "server closed the connection in the middle of the response body")

    def _got_head(self, head: bytes, size: int) -> tuple[Any, Any]:
        lines = self._check_head_bytes(head)
        sl = lines[0]
        version = sl[:8]
        if version == b"HTTP/1.1":
            v11 = True
        elif version == b"HTTP/1.0":
            v11 = False
        else:
            raise ParseError(502, "invalid status line")
        code = sl[9:12]
        if sl[8:9] != b" " or len(code) != 3 or not code.isdigit() or code[0] == 48:
            raise ParseError(502, "invalid status line")
        if len(sl) > 12:
            if sl[12] != 32:
                raise ParseError(502, "invalid status line")
            reason = sl[13:]
        else:
            reason = b""
        status = int(code)
        headers, _, _, cl, te, conn, _, _ = _parse_fields(lines)
        chunked = False
        if te is not None:
            if not v11:
                raise ParseError(502, "Transfer-Encoding in an HTTP/1.0 response")
            if cl is not None:
                raise ParseError(502, "both Content-Length and Transfer-Encoding")
            chunked = _te_chunked(te, False)
        tokens = _tokens(conn) if conn is not None else _NO_TOKENS
        if v11:
            keep_alive = b"close" not in tokens
        else:
            keep_alive = b"keep-alive" in tokens and b"close" not in tokens
        method, upgrade = self._expected[0]
        until_close = False
        if status < 200:
            h = ResponseHead(version, status, reason, headers, cl, chunked, keep_alive, tokens, size, False)
            if status != 101:
                return self._on_info, h
            if upgrade is False:
                raise ParseError(502, "101 response to a request without Upgrade")
            self._expected.popleft()
            self._state = _STOPPED
            return self._on_head, h
        if method == b"CONNECT" and status < 300:
            self._expected.popleft()
            self._state = _STOPPED
        elif method == b"HEAD" or status == 204 or status == 304:
            self._state = _DONE
        elif chunked:
            self._state = _CHUNKED
            self._cstate = _C_SIZE
        elif te is not None or cl is None:
            until_close = True
            keep_alive = False
            self._state = _BODY_EOF
        elif cl:
            self._state = _BODY_CL
            self._remaining = cl
        else:
            self._state = _DONE
        h = ResponseHead(version, status, reason, headers, cl, chunked, keep_alive, tokens, size, until_close)
        return self._on_head, h
