"""`lbd check`, `lbd version` and the twistd plugin, run as a user would."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from lbd import __version__
from lbd.testing import REPO_ROOT, TWISTD_RUN, lbd_env

GOOD = """\
[admin]
socket = "off"
[frontends.www]
bind = "127.0.0.1:8080"
default_backend = "web"
[backends.web.servers]
web1 = { address = "127.0.0.1:8081" }
"""


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "import sys; from lbd.cli import run_lbd; run_lbd()", *args],
                          env=lbd_env(), capture_output=True, text=True, timeout=60)


def write(text: str) -> str:
    fd, path = tempfile.mkstemp(suffix=".toml")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def test_check_valid_file() -> None:
    """A valid file: exit 0 and the words users grep for."""
    proc = run("check", "-c", write(GOOD))
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "Configuration file is valid\n", "")


def test_check_lists_every_error_and_exits_1() -> None:
    """An invalid file: exit 1 and every error as FILE:LINE: key.path: message."""
    path = write(GOOD.replace('default_backend = "web"', 'default_backend = "api"\ncolour = "red"'))
    proc = run("check", "-c", path)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        "%s:5: frontends.www.default_backend: no backend named 'api'" % path,
        "%s:6: frontends.www.colour: unknown key (expected one of: bind, default_backend, errorfiles, forwardfor, "
        "max_header_size, maxconn, mode, routes, timeout)" % path,
    ]


def test_check_not_toml() -> None:
    """A file that is not TOML at all is one clear line, exit 1."""
    path = write("this is not toml\n")
    proc = run("check", "-c", path)
    assert proc.returncode == 1
    assert proc.stderr.startswith("%s:1: not valid TOML: " % path)


def test_version() -> None:
    """`lbd version` prints the version."""
    proc = run("version")
    assert (proc.returncode, proc.stdout) == (0, "lbd %s\n" % __version__)


def test_twistd_finds_the_plugin_and_its_options() -> None:
    """`twistd lbd --help` shows -c/--config with its default."""
    proc = subprocess.run([sys.executable, "-c", TWISTD_RUN, "lbd", "--help"], env=lbd_env(),
                          capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "-c, --config=" in proc.stdout
    assert "/etc/lbd.toml" in proc.stdout
