"""lbctl: send an admin-socket command and print the answer, or watch ``lbctl top``.

``lbctl [-s SOCKET] COMMAND...`` exits 0 on success, 1 when lbd answered with
an error, 2 when the socket cannot be reached. It asks for HAProxy's
``set severity-output number`` first, so error answers carry ``[3]:`` and can
be told from dumps without knowing every command's texts; the prefixes are
removed before printing. It works against HAProxy's socket as well.

This is a command-line program: it prints (only here and in lbd/cli.py).
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import re
import shutil
import socket
import sys
import time
from typing import TextIO

DEFAULT_SOCKET = "/run/lbd/admin.sock"
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_UNREACHABLE = 2
TIMEOUT = 30.0          # seconds to wait for an answer (a reload may take a moment)

_SEVERITY = re.compile(r"^\[([0-7])\]: ")


class Unreachable(Exception):
    """The admin socket cannot be reached or did not answer."""


def default_socket() -> str:
    return os.environ.get("LBD_SOCKET") or DEFAULT_SOCKET


def query(path: str, line: str, timeout: float = TIMEOUT) -> str:
    """Send one line of commands and read the whole answer (until lbd closes)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(path)
        except OSError as e:
            raise Unreachable("cannot connect to %s: %s" % (path, e.strerror or e))
        try:
            sock.sendall(line.encode("utf-8") + b"\n")
            chunks = []
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
        except socket.timeout:
            raise Unreachable("no answer from %s within %ds" % (path, timeout))
        except OSError as e:
            raise Unreachable("connection to %s failed: %s" % (path, e.strerror or e))
    finally:
        sock.close()
    return b"".join(chunks).decode("utf-8", "replace")


def interpret(raw: str) -> tuple[str, bool]:
    """The answer to ``set severity-output number;COMMAND`` as (text to print, was an error).

    The first answer (to ``set severity-output``) is dropped, severity
    prefixes are removed, and so is the empty line ending the last answer.
    """
    if raw.startswith("\n"):
        raw = raw[1:]
    else:                                   # a server that does not know severity-output
        cut = raw.find("\n\n")
        raw = raw[cut + 2:] if cut >= 0 else raw
    error = False
    lines = []
    for line in raw.split("\n"):
        m = _SEVERITY.match(line)
        if m:
            if int(m.group(1)) <= 4:
                error = True
            line = line[m.end():]
        lines.append(line)
    text = "\n".join(lines)
    if text.endswith("\n\n"):
        text = text[:-1]
    elif text == "\n":
        text = ""
    return text, error


def run_command(path: str, command: str) -> tuple[str, bool]:
    return interpret(query(path, "set severity-output number;" + command))


# ---------------------------------------------------------------- top

def _csv_rows(text: str) -> list[dict[str, str]]:
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("# "):
        return []
    header = lines[0][2:].split(",")
    rows = []
    for values in csv.reader(io.StringIO("\n".join(lines[1:]) + "\n")):
        rows.append(dict(zip(header, values)))
    return rows


def _info(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            out[key] = value
    return out


def _size(value: str) -> str:
    try:
        n = float(value)
    except ValueError:
        return "-"
    for unit in ("", "K", "M", "G", "T"):
        if n < 1024 or unit == "T":
            return ("%d%s" % (n, unit)) if unit == "" else ("%.1f%s" % (n, unit))
        n /= 1024
    return "-"  # pragma: no cover


def _dash(value: str | None) -> str:
    return value if value not in (None, "") else "-"


def render_top(info_text: str, stat_text: str, source: str = "", width: int = 200) -> str:
    """One frame of ``lbctl top`` from ``show info`` and ``show stat`` answers."""
    info = _info(info_text)
    rows = _csv_rows(stat_text)
    out = []
    title = "lbd %s  pid %s  up %s  conns %s/%s  rate %s/s" % (
        _dash(info.get("Version")), _dash(info.get("Pid")), _dash(info.get("Uptime")),
        _dash(info.get("CurrConns")), _dash(info.get("Maxconn")), _dash(info.get("ConnRate")))
    out.append(title + ("  [%s]" % source if source else ""))
    out.append("")
    fmt_fe = "%-24s %-8s %13s %7s %7s %10s %9s %9s"
    out.append(fmt_fe % ("FRONTEND", "STATUS", "SESSIONS/MAX", "CONN/S", "REQ/S", "TOTAL", "IN", "OUT"))
    for r in rows:
        if r.get("svname") == "FRONTEND":
            out.append(fmt_fe % (
                r.get("pxname", "")[:24], _dash(r.get("status")),
                "%s/%s" % (_dash(r.get("scur")), _dash(r.get("slim"))),
                _dash(r.get("rate")), _dash(r.get("req_rate")), _dash(r.get("stot")),
                _size(r.get("bin", "")), _size(r.get("bout", ""))))
    out.append("")
    fmt_be = "%-24s %-12s %6s %9s %7s %7s %10s %6s  %s"
    out.append(fmt_be % ("BACKEND / SERVER", "STATE", "WEIGHT", "SESSIONS", "CONN/S", "REQ/S", "TOTAL", "QUEUE",
                         "LAST CHECK"))
    servers: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        if r.get("svname") not in ("FRONTEND", "BACKEND"):
            servers.setdefault(r.get("pxname", ""), []).append(r)
    for r in rows:
        if r.get("svname") != "BACKEND":
            continue
        name = r.get("pxname", "")
        out.append(fmt_be % (
            name[:24], _dash(r.get("status")), _dash(r.get("weight")), _dash(r.get("scur")),
            _dash(r.get("rate")), _dash(r.get("req_rate")), _dash(r.get("stot")), _dash(r.get("qcur")),
            "%s active, %s backup" % (_dash(r.get("act")), _dash(r.get("bck")))))
        for s in servers.get(name, []):
            check = r_check = s.get("check_status", "")
            if r_check:
                duration = s.get("check_duration", "")
                check = "%s %sms" % (r_check, duration) if duration else r_check
                if s.get("check_desc"):
                    check += " (%s)" % s["check_desc"]
            out.append(fmt_be % (
                ("  " + s.get("svname", ""))[:24], _dash(s.get("status")), _dash(s.get("weight")),
                _dash(s.get("scur")), _dash(s.get("rate")), "-", _dash(s.get("stot")),
                _dash(s.get("qcur")), check or "-"))
    return "\n".join(line[:width] for line in out) + "\n"


def top(path: str, interval: float, count: int | None, stdout: TextIO, stderr: TextIO) -> int:
    """Redraw the table every ``interval`` seconds, ``count`` times (None: until Ctrl-C)."""
    tty = stdout.isatty()
    frames = 0
    try:
        while count is None or frames < count:
            try:
                raw = query(path, "show info;show stat")
            except Unreachable as e:
                if frames == 0:
                    print("lbctl: %s" % (e,), file=stderr)
                    return EXIT_UNREACHABLE
                frame = "lbctl: %s (retrying)\n" % (e,)
            else:
                info_text, _, stat_text = raw.partition("\n\n")
                width = shutil.get_terminal_size((200, 50)).columns if tty else 200
                frame = render_top(info_text, stat_text, time.strftime("%H:%M:%S"), width)
            if tty:
                stdout.write("\x1b[H\x1b[2J" + frame)
            else:
                stdout.write(frame + ("\n" if count != 1 else ""))
            stdout.flush()
            frames += 1
            if count is None or frames < count:
                time.sleep(interval)
    except KeyboardInterrupt:
        pass
    return EXIT_OK


# ---------------------------------------------------------------- main

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lbctl",
        description="Send a command to lbd's admin socket and print the answer "
                    "(try 'lbctl help'), or watch 'lbctl top'.",
        epilog="Exit status: 0 success, 1 lbd answered with an error, 2 the socket cannot be reached.",
    )
    p.add_argument("-s", "--socket", default=None,
                   help="the admin socket (default: $LBD_SOCKET, then %s)" % DEFAULT_SOCKET)
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command and its arguments")
    return p


def _top_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lbctl top", description="A live table of frontends, backends and servers.")
    p.add_argument("-d", "--delay", type=float, default=2.0, help="seconds between refreshes (default 2)")
    p.add_argument("-n", "--iterations", type=int, default=None, help="stop after this many refreshes")
    return p


def main(argv: list[str] | None = None, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    args = _parser().parse_args(argv)
    path = args.socket or default_socket()
    words = args.command
    if not words:
        _parser().print_usage(err)
        print("lbctl: a command is required (try 'lbctl help')", file=err)
        return EXIT_UNREACHABLE
    if words[0] == "top":
        opts = _top_parser().parse_args(words[1:])
        if opts.delay <= 0 or (opts.iterations is not None and opts.iterations < 1):
            print("lbctl top: the delay and the iteration count must be positive", file=err)
            return EXIT_UNREACHABLE
        return top(path, opts.delay, opts.iterations, out, err)
    try:
        text, error = run_command(path, " ".join(words))
    except Unreachable as e:
        print("lbctl: %s" % (e,), file=err)
        return EXIT_UNREACHABLE
    out.write(text)
    out.flush()
    return EXIT_ERROR if error else EXIT_OK
