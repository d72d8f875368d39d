"""lbctl: answers and exit codes, and the ``lbctl top`` table, against a scripted socket."""
from __future__ import annotations

import io
import os
import socket
import tempfile
import threading

from twisted.trial.unittest import SynchronousTestCase

from lbd.admin import client
from tests.admin.support import make_service, run


class ScriptedSocket:
    """A UNIX socket that records one request line and answers with ``answer``, then closes."""

    def __init__(self, answer: bytes) -> None:
        self.path = os.path.join(tempfile.mkdtemp(prefix="lbctl-test-"), "admin.sock")
        self.answer = answer
        self.received = b""
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(1)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        conn.settimeout(10)
        while not self.received.endswith(b"\n"):
            data = conn.recv(4096)
            if not data:
                break
            self.received += data
        conn.sendall(self.answer)
        conn.close()
        self.sock.close()


def lbctl(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = client.main(argv, out, err)
    return code, out.getvalue(), err.getvalue()


class InterpretTests(SynchronousTestCase):
    def test_dump(self) -> None:
        """A dump is printed without its closing empty line, and is no error."""
        self.assertEqual(client.interpret("\n# name\nweb\n\n"), ("# name\nweb\n", False))

    def test_empty_success(self) -> None:
        """An empty answer prints nothing."""
        self.assertEqual(client.interpret("\n\n"), ("", False))

    def test_error(self) -> None:
        """An [3] answer is an error, printed without its prefix."""
        self.assertEqual(client.interpret("\n[3]: No such server.\n\n"), ("No such server.\n", True))

    def test_info_message(self) -> None:
        """An [6] answer is a success."""
        self.assertEqual(client.interpret("\n[6]: New server registered.\n\n"), ("New server registered.\n", False))

    def test_no_severity_support(self) -> None:
        """A server that refused severity-output still has its answer printed."""
        self.assertEqual(client.interpret("Unknown command\n\n# name\nweb\n\n"), ("# name\nweb\n", False))


class MainTests(SynchronousTestCase):
    def test_sends_command_with_severity(self) -> None:
        """lbctl sends one line asking for severity numbers, then the command."""
        server = ScriptedSocket(b"\n# name\nweb\n\n")
        code, out, err = lbctl(["-s", server.path, "show", "backend"])
        server.thread.join(10)
        self.assertEqual(server.received, b"set severity-output number;show backend\n")
        self.assertEqual((code, out, err), (0, "# name\nweb\n", ""))

    def test_error_exit(self) -> None:
        """An error answer exits 1."""
        server = ScriptedSocket(b"\n[3]: Permission denied\n\n")
        self.assertEqual(lbctl(["-s", server.path, "disable", "server", "a/b"]), (1, "Permission denied\n", ""))

    def test_unreachable(self) -> None:
        """A socket that cannot be reached exits 2 with the reason on stderr."""
        path = os.path.join(tempfile.mkdtemp(), "none.sock")
        self.assertEqual(lbctl(["-s", path, "show", "info"]),
                         (2, "", "lbctl: cannot connect to %s: No such file or directory\n" % path))

    def test_env_socket(self) -> None:
        """Without -s, $LBD_SOCKET names the socket."""
        server = ScriptedSocket(b"\nuser\n\n")
        os.environ["LBD_SOCKET"] = server.path
        self.addCleanup(os.environ.pop, "LBD_SOCKET")
        self.assertEqual(lbctl(["show", "cli", "level"]), (0, "user\n", ""))

    def test_default_socket(self) -> None:
        """Without -s or $LBD_SOCKET, the socket is /run/lbd/admin.sock."""
        saved = os.environ.pop("LBD_SOCKET", None)
        if saved is not None:
            self.addCleanup(os.environ.__setitem__, "LBD_SOCKET", saved)
        self.assertEqual(client.default_socket(), "/run/lbd/admin.sock")

    def test_no_command(self) -> None:
        """lbctl without a command says one is needed."""
        code, out, err = lbctl([])
        self.assertEqual(code, 2)
        self.assertIn("lbctl: a command is required (try 'lbctl help')", err)

    def test_top_once(self) -> None:
        """lbctl top -n 1 asks for show info and show stat and prints one table."""
        service = make_service()
        answer = run(service, "show info;show stat").encode()
        server = ScriptedSocket(answer)
        code, out, err = lbctl(["-s", server.path, "top", "-n", "1"])
        self.assertEqual(server.received, b"show info;show stat\n")
        self.assertEqual(code, 0, err)
        self.assertIn("www ", out)
        self.assertNotIn("\x1b[", out)            # not a terminal: no screen control


class TopTests(SynchronousTestCase):
    def test_table(self) -> None:
        """The table lists frontends, then each backend followed by its servers with state and weight."""
        service = make_service()
        run(service, "disable server web/web2; set weight web/web1 4")
        srv = service.pool.backends["web"].servers["web1"]
        srv.check_status, srv.check_duration = "L4OK", 0.003
        info, _, stat = run(service, "show info;show stat").partition("\n\n")
        lines = client.render_top(info, stat).splitlines()
        self.assertTrue(lines[0].startswith("lbd 0."))
        self.assertEqual(lines[2].split(), ["FRONTEND", "STATUS", "SESSIONS/MAX", "CONN/S", "REQ/S", "TOTAL",
                                            "IN", "OUT"])
        self.assertEqual(lines[3].split(), ["www", "OPEN", "0/2000", "0", "0", "0", "0", "0"])
        names = [line.split()[0] for line in lines[6:]]
        self.assertEqual(names, ["web", "web1", "web2", "static", "s1"])
        web1 = lines[7].split()
        self.assertEqual(web1[:3], ["web1", "UP", "4"])
        self.assertEqual(web1[-5:], ["L4OK", "3ms", "(Layer4", "check", "passed)"])
        self.assertEqual(lines[8].split()[:3], ["web2", "MAINT", "1"])

    def test_width(self) -> None:
        """Lines are cut to the terminal width."""
        service = make_service()
        info, _, stat = run(service, "show info;show stat").partition("\n\n")
        self.assertTrue(all(len(line) <= 40 for line in client.render_top(info, stat, width=40).splitlines()))
