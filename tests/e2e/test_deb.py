"""The Debian package end to end: build, lintian, install, run as lbd.service says, reload, stop, purge.

Needs root and Debian's packaging tools (CI has both). The package is built
(.ci/build-deb.sh) from a snapshot of the tree, so the working tree stays
clean and the in-process suite run against the installed package is the one
that was packaged; it is installed with apt-get, and then
only Debian's python3 and what the package installed take part: every command
runs with PATH=/usr/sbin:/usr/bin:/sbin:/bin and no PYTHONPATH, from /. There
is no systemd as PID 1 here, so the test reads lbd.service and runs its
ExecStartPre/ExecStart/ExecReload lines as systemd would: variables from
Environment= and /etc/default/lbd substituted, as the lbd user, with the
Runtime/State/LogsDirectory= directories created first.

The daemon binds what the installed /etc/lbd.toml says: 127.0.0.1:8080 (two
servers on 127.0.0.1:8081 and :8082, played here by Python's http.server),
127.0.0.1:9101 (metrics) and /run/lbd/admin.sock. Set LBD_SKIP_DEB=1 to skip
this module (make test-venv does: the package runs on Debian's python3 only).
"""
from __future__ import annotations

import http.client
import os
import pathlib
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
UNIT_PATH = "/lib/systemd/system/lbd.service"
DIST_PACKAGES = "/usr/lib/python3/dist-packages"
PLUGIN_CACHE = DIST_PACKAGES + "/twisted/plugins/dropin.cache"
POLICY_RC_D = "/usr/sbin/policy-rc.d"
EXAMPLE_PORTS = {"frontend www": 8080, "server web1": 8081, "server web2": 8082, "metrics": 9101}
CONFFILES = [
    "/etc/default/lbd",
    "/etc/lbd.toml",
    "/etc/lbd/errors/400.http",
    "/etc/lbd/errors/403.http",
    "/etc/lbd/errors/408.http",
    "/etc/lbd/errors/500.http",
    "/etc/lbd/errors/502.http",
    "/etc/lbd/errors/503.http",
    "/etc/lbd/errors/504.http",
]
# What purge must leave behind: nothing of these (the lbd user may stay).
PURGED = [
    "/etc/lbd.toml",
    "/etc/lbd",
    "/etc/default/lbd",
    DIST_PACKAGES + "/lbd",
    DIST_PACKAGES + "/twisted/plugins/lbd_plugin.py",
    "/usr/bin/lbd",
    "/usr/bin/lbctl",
    UNIT_PATH,
    "/etc/systemd/system/multi-user.target.wants/lbd.service",
    "/var/lib/lbd",
    "/var/log/lbd",
    "/run/lbd",
]

# The configuration a "systemctl reload" switches to: web1 is gone.
RELOADED_CONFIG = """\
[global]
grace = "5s"
state_file = "/var/lib/lbd/state.json"

[admin]
socket = "/run/lbd/admin.sock"

[metrics]
bind = "127.0.0.1:9101"

[frontends.www]
bind = ["127.0.0.1:8080"]
default_backend = "web"

[backends.web.servers]
web2 = { address = "127.0.0.1:8082" }
"""

INVALID_CONFIG = """\
[frontends.www]
bind = "127.0.0.1:8080"
default_backend = "nope"

[backends.web.servers]
web1 = { address = "127.0.0.1:8081", weight = 300 }
"""
INVALID_ERRORS = (
    "/etc/lbd.toml:3: frontends.www.default_backend: no backend named 'nope'\n"
    "/etc/lbd.toml:6: backends.web.servers.web1.weight: 300 is above 256\n"
)


def _skip_reason() -> str | None:
    if os.environ.get("LBD_SKIP_DEB"):
        return "LBD_SKIP_DEB is set"
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "installing a Debian package needs root"
    for program in ("dpkg-buildpackage", "dh", "pybuild", "lintian", "apt-get", "setpriv", "systemd-analyze"):
        if shutil.which(program, path=SYSTEM_PATH) is None:
            return "%s is not installed" % (program,)
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")


# ---------------------------------------------------------------- running things

def system_env(**extra: str) -> dict[str, str]:
    """A clean environment: Debian's programs only, nothing from the caller's PATH or PYTHONPATH."""
    env = {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8", "HOME": "/root"}
    env.update(extra)
    return env


def run(argv: list[str], env: dict[str, str] | None = None, timeout: float = 120.0,
        input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env or system_env(), cwd="/", capture_output=True, text=True,
                          timeout=timeout, input=input)


def apt_get(*args: str) -> subprocess.CompletedProcess[str]:
    proc = run(["apt-get", "-y", "-q", "-o", "DPkg::Lock::Timeout=60", *args],
               env=system_env(DEBIAN_FRONTEND="noninteractive"), timeout=300)
    assert proc.returncode == 0, "apt-get %s failed:\n%s%s" % (" ".join(args), proc.stdout, proc.stderr)
    return proc


def package_status() -> str:
    """dpkg's status of lbd: 'installed', 'config-files', or '' when unknown to dpkg."""
    proc = run(["dpkg-query", "-W", "-f=${db:Status-Status}", "lbd"])
    return proc.stdout.strip() if proc.returncode == 0 else ""


def changelog_version() -> str:
    with open(os.path.join(REPO, "debian", "changelog")) as f:
        m = re.match(r"lbd \(([^)]+)\)", f.readline())
    assert m is not None, "debian/changelog does not start with 'lbd (VERSION)'"
    return m.group(1)


# ---------------------------------------------------------------- the unit file

@dataclass
class Unit:
    """A systemd unit file: section -> key -> every value in order (keys may repeat)."""

    sections: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Unit:
        unit = cls()
        section: dict[str, list[str]] | None = None
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("[") and line.endswith("]"):
                section = unit.sections.setdefault(line[1:-1], {})
                continue
            assert section is not None, "a setting before any [section]: %r" % (raw,)
            assert not line.endswith("\\"), "line continuations are not handled: %r" % (raw,)
            key, sep, value = line.partition("=")
            assert sep, "not KEY=VALUE: %r" % (raw,)
            section.setdefault(key.strip(), []).append(value.strip())
        return unit

    def values(self, key: str, section: str = "Service") -> list[str]:
        return self.sections.get(section, {}).get(key, [])

    def one(self, key: str, section: str = "Service") -> str:
        values = self.values(key, section)
        assert len(values) == 1, "%s= should be set once in [%s], found %r" % (key, section, values)
        return values[0]

    def environment(self) -> dict[str, str]:
        """Environment= assignments, then EnvironmentFile= files (which override them), as systemd reads them."""
        env: dict[str, str] = {}
        for value in self.values("Environment"):
            for word in shlex.split(value):
                name, _, val = word.partition("=")
                env[name] = val
        for value in self.values("EnvironmentFile"):
            optional = value.startswith("-")
            path = value[1:] if optional else value
            if not os.path.exists(path):
                assert optional, "EnvironmentFile %s is missing" % (path,)
                continue
            env.update(read_environment_file(path))
        return env


def read_environment_file(path: str) -> dict[str, str]:
    env = {}
    with open(path) as f:
        for raw in f:
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            name, sep, value = line.partition("=")
            assert sep, "%s: not KEY=VALUE: %r" % (path, raw)
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            env[name.strip()] = value
    return env


def expand(command: str, env: dict[str, str]) -> list[str]:
    """A unit's command line as systemd expands it: "$X" alone splits into words, "${X}" stays one."""
    assert not re.search(r"[\"'\\]", command), "quoting is not handled: %r" % (command,)
    argv: list[str] = []
    for word in command.split():
        whole = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if whole:
            argv.extend(env.get(whole.group(1), "").split())
        else:
            argv.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m.group(1), ""), word))
    assert argv and argv[0].startswith("/"), "the executable needs an absolute path: %r" % (command,)
    return argv


class Service:
    """lbd.service, run by hand the way systemd would run it."""

    def __init__(self, unit: Unit) -> None:
        self.unit = unit
        self.user = unit.one("User")
        self.group = unit.one("Group")
        self.env = unit.environment()
        pw = pwd.getpwnam(self.user)
        self.env.update(USER=self.user, LOGNAME=self.user, HOME=pw.pw_dir, SHELL=pw.pw_shell)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = ""

    def as_user(self, argv: list[str]) -> list[str]:
        # setpriv execs (no child in between), so signals reach the daemon itself.
        return ["setpriv", "--reuid=" + self.user, "--regid=" + self.group, "--init-groups",
                "--no-new-privs", "--", *argv]

    def command_env(self) -> dict[str, str]:
        return system_env(**self.env)

    def make_directories(self) -> list[str]:
        """Create /run/X, /var/lib/X, /var/log/X as RuntimeDirectory=, StateDirectory=, LogsDirectory= do."""
        made = []
        pw = pwd.getpwnam(self.user)
        for key, base in (("RuntimeDirectory", "/run"), ("StateDirectory", "/var/lib"), ("LogsDirectory", "/var/log")):
            for value in self.unit.values(key):
                mode = int(self.unit.values(key + "Mode")[-1], 8) if self.unit.values(key + "Mode") else 0o755
                for name in value.split():
                    path = os.path.join(base, name)
                    os.makedirs(path, exist_ok=True)
                    os.chown(path, pw.pw_uid, pw.pw_gid)
                    os.chmod(path, mode)
                    made.append(path)
        return made

    def run_step(self, key: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run every KEY= line in order, stopping at the first failure (as systemd does)."""
        env = dict(self.env, **(extra_env or {}))
        proc = None
        for line in self.unit.values(key):
            proc = run(self.as_user(expand(line, env)), env=system_env(**env), timeout=60)
            if proc.returncode != 0:
                break
        assert proc is not None, "lbd.service has no %s=" % (key,)
        return proc

    def start(self, log_path: str) -> None:
        self.log_path = log_path
        argv = self.as_user(expand(self.unit.one("ExecStart"), self.env))
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, env=self.command_env(), cwd="/", stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def log(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_for_log(self, text: str, after: int = 0, timeout: float = 30.0) -> int:
        """Wait for ``text`` in the daemon's output past offset ``after``; return the offset after it."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log()
            i = log.find(text, after)
            if i >= 0:
                return i + len(text)
            if self.proc.poll() is not None:
                pytest.fail("lbd exited with %s before logging %r:\n%s" % (self.proc.returncode, text, log))
            time.sleep(0.05)
        pytest.fail("%r not in lbd's output after %ss:\n%s" % (text, timeout, self.log()))

    def signal(self, sig: int) -> None:
        assert self.proc is not None and self.proc.poll() is None
        os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


# ---------------------------------------------------------------- the servers behind lbd

class NamedHandler(BaseHTTPRequestHandler):
    """Answers every GET/HEAD with its server's name."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _answer(self, send_body: bool) -> None:
        body = self.server.body  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def web_servers() -> Iterator[None]:
    servers = []
    try:
        for name, port in (("web1", 8081), ("web2", 8082)):
            server = ThreadingHTTPServer(("127.0.0.1", port), NamedHandler)
            server.daemon_threads = True
            server.body = (name + "\n").encode()  # type: ignore[attr-defined]
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
            servers.append(server)
        yield
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def get(path: str = "/", port: int = 8080) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


# ---------------------------------------------------------------- build and install

@dataclass(frozen=True)
class Deb:
    source: str     # the snapshot of the tree it was built from
    path: str
    lintian: str


def snapshot(dest: str) -> None:
    """Copy the files git knows (tracked, and untracked but not ignored) as they are in the working tree."""
    proc = None
    if shutil.which("git", path=SYSTEM_PATH) is not None:
        proc = run(["git", "-C", REPO, "ls-files", "-z", "--cached", "--others", "--exclude-standard"])
    if proc is None or proc.returncode != 0:
        shutil.copytree(REPO, dest, ignore=shutil.ignore_patterns(
            ".git", ".venv", "dist", "__pycache__", ".pybuild", "dropin.cache", ".hypothesis"))
        return
    for name in proc.stdout.split("\0"):
        src = os.path.join(REPO, name)
        if name and os.path.isfile(src):
            os.makedirs(os.path.dirname(os.path.join(dest, name)), exist_ok=True)
            shutil.copy2(src, os.path.join(dest, name))


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Deb:
    """lbd_VERSION_all.deb built from a snapshot of the tree (the working tree stays clean)."""
    source = str(tmp_path_factory.mktemp("source"))
    snapshot(source)
    out = tmp_path_factory.mktemp("deb")
    proc = run(["sh", os.path.join(source, ".ci", "build-deb.sh"), str(out)], timeout=600)
    assert proc.returncode == 0, "the package did not build:\n%s%s" % (proc.stdout[-6000:], proc.stderr[-6000:])
    path = out / ("lbd_%s_all.deb" % (changelog_version().split(":")[-1],))
    assert path.exists(), "no %s after the build; built: %s" % (path.name, sorted(os.listdir(out)))
    lint = run(["lintian", "--pedantic", "--display-info", str(path)], timeout=300)
    return Deb(source, str(path), lint.stdout + lint.stderr)


@dataclass
class Installation:
    deb: Deb
    installed_at: float = 0.0


@pytest.fixture(scope="module")
def _apt(deb: Deb) -> Iterator[Installation]:
    """Keeps services from starting on install; purges lbd after the module."""
    made_policy = not os.path.exists(POLICY_RC_D)
    if made_policy:
        with open(POLICY_RC_D, "w") as f:
            f.write("#!/bin/sh\nexit 101\n")
        os.chmod(POLICY_RC_D, 0o755)
    if package_status():
        apt_get("purge", "lbd")          # a leftover from an earlier run
    try:
        yield Installation(deb)
    finally:
        try:
            if package_status():
                apt_get("purge", "lbd")
        finally:
            if made_policy:
                os.unlink(POLICY_RC_D)


@pytest.fixture
def installed(_apt: Installation) -> Installation:
    """The package, installed with apt-get (again, if a test purged it)."""
    if package_status() != "installed":
        _apt.installed_at = time.time()
        apt_get("install", _apt.deb.path)
    return _apt


@pytest.fixture
def example_config() -> Iterator[None]:
    """Puts the installed /etc/lbd.toml back after a test that rewrites it."""
    with open("/etc/lbd.toml", "rb") as f:
        original = f.read()
    try:
        yield
    finally:
        with open("/etc/lbd.toml", "wb") as f:
            f.write(original)


def write_config(text: str) -> None:
    with open("/etc/lbd.toml", "w") as f:
        f.write(text)


# ---------------------------------------------------------------- the tests

def test_lintian_reports_no_errors(deb: Deb) -> None:
    """lintian finds no error in the built package."""
    errors = [line for line in deb.lintian.splitlines() if line.startswith("E: ")]
    assert errors == [], deb.lintian


def test_package_ships_code_plugin_and_conffiles(deb: Deb) -> None:
    """The .deb holds the code, the plugin in twisted/plugins (no plugin cache, no bytecode) and the conffiles."""
    contents = run(["dpkg-deb", "-c", deb.path]).stdout
    paths = [line.split()[-1].lstrip(".") for line in contents.splitlines()]
    for path in (DIST_PACKAGES + "/lbd/tap.py", DIST_PACKAGES + "/lbd/cli.py",
                 DIST_PACKAGES + "/twisted/plugins/lbd_plugin.py", "/usr/bin/lbd", "/usr/bin/lbctl",
                 UNIT_PATH, "/usr/share/man/man1/lbd.1.gz", "/usr/share/man/man1/lbctl.1.gz", *CONFFILES):
        assert path in paths, "%s is not in the package" % (path,)
    assert not [p for p in paths if p.endswith((".pyc", "dropin.cache")) or "__pycache__" in p]
    assert not [p for p in paths if p.startswith(DIST_PACKAGES + "/twisted/") and "plugins/lbd_plugin.py" not in p
                and not p.endswith("/")]
    conffiles = run(["sh", "-c", "dpkg-deb --ctrl-tarfile \"$1\" | tar -xO ./conffiles", "sh", deb.path]).stdout
    assert conffiles.split() == CONFFILES
    triggers = run(["sh", "-c", "dpkg-deb --ctrl-tarfile \"$1\" | tar -xO ./triggers", "sh", deb.path]).stdout
    assert [line for line in triggers.splitlines() if line and not line.startswith("#")] == [
        "activate-noawait twisted-plugins-cache"
    ]
    depends = run(["dpkg-deb", "-f", deb.path, "Depends"]).stdout
    for dep in ("adduser", "python3-twisted", "python3-prometheus-client", "python3-service-identity",
                "python3-openssl"):
        assert re.search(r"(^|, )%s( \([^)]*\))?(,|$)" % re.escape(dep), depends.strip()), depends
    assert run(["dpkg-deb", "-f", deb.path, "Architecture"]).stdout.strip() == "all"


def test_install_regenerates_twisted_plugin_cache(installed: Installation) -> None:
    """Installing fires twisted-plugins-cache: python3-twisted rewrites dropin.cache with lbd's plugin."""
    assert os.path.exists(PLUGIN_CACHE), "no %s after install" % (PLUGIN_CACHE,)
    assert os.stat(PLUGIN_CACHE).st_mtime >= installed.installed_at - 1
    with open(PLUGIN_CACHE, "rb") as f:
        assert b"lbd_plugin" in f.read()


def test_installed_code_runs_on_debians_python(installed: Installation) -> None:
    """Debian's python3 imports lbd from the package and Twisted from python3-twisted."""
    proc = run(["python3", "-c", "import lbd, twisted; print(lbd.__file__); print(twisted.__file__)"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [DIST_PACKAGES + "/lbd/__init__.py", DIST_PACKAGES + "/twisted/__init__.py"]
    version = run(["lbd", "version"])
    assert (version.returncode, version.stdout) == (0, "lbd %s\n" % (changelog_version().split(":")[-1],))


def test_twistd3_finds_the_plugin(installed: Installation) -> None:
    """`twistd3 lbd --help` lists the plugin's -c/--config option."""
    proc = run(["twistd3", "lbd", "--help"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    options = [line.split() for line in proc.stdout.splitlines()]
    assert any(words[:2] == ["-c,", "--config="] and words[-2:] == ["[default:", "/etc/lbd.toml]"]
               for words in options), proc.stdout


def test_example_config_is_valid(installed: Installation) -> None:
    """`lbd check -c /etc/lbd.toml` passes on the installed example."""
    proc = run(["lbd", "check", "-c", "/etc/lbd.toml"])
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "Configuration file is valid\n", "")


def test_unit_passes_systemd_analyze(installed: Installation) -> None:
    """`systemd-analyze verify` is silent on lbd.service and `security` rates it 2.0 or better."""
    verify = run(["systemd-analyze", "verify", UNIT_PATH])
    assert (verify.returncode, verify.stdout + verify.stderr) == (0, "")
    security = run(["systemd-analyze", "security", "--offline=yes", UNIT_PATH])
    m = re.search(r"Overall exposure level for lbd\.service: ([0-9.]+)", security.stdout)
    assert m is not None, security.stdout + security.stderr
    assert float(m.group(1)) <= 2.0, security.stdout


def test_unit_has_the_specified_command_lines(installed: Installation) -> None:
    """lbd.service runs, checks and reloads lbd exactly as SPEC section 7 says, as the lbd user."""
    with open(UNIT_PATH) as f:
        unit = Unit.parse(f.read())
    assert unit.values("EnvironmentFile") == ["-/etc/default/lbd"]
    assert unit.values("ExecStartPre") == ["/usr/bin/lbd check -c $CONFIG"]
    assert unit.values("ExecStart") == ["/usr/bin/twistd3 --nodaemon --pidfile= lbd -c $CONFIG $EXTRAOPTS"]
    assert unit.values("ExecReload") == ["/usr/bin/lbd check -c $CONFIG", "/bin/kill -HUP $MAINPID"]
    assert (unit.one("User"), unit.one("AmbientCapabilities")) == ("lbd", "CAP_NET_BIND_SERVICE")
    assert (unit.one("RuntimeDirectory"), unit.one("StateDirectory")) == ("lbd", "lbd")
    assert int(unit.one("LimitNOFILE")) >= 2 * 4096 + 100
    assert read_environment_file("/etc/default/lbd") == {"CONFIG": "/etc/lbd.toml", "EXTRAOPTS": ""}
    assert pwd.getpwnam("lbd").pw_shell == "/usr/sbin/nologin"


def test_invalid_config_stops_the_start(installed: Installation, example_config: None) -> None:
    """With an invalid /etc/lbd.toml, ExecStartPre exits 1 and prints every error as FILE:LINE: key: message."""
    with open(UNIT_PATH) as f:
        service = Service(Unit.parse(f.read()))
    write_config(INVALID_CONFIG)
    proc = service.run_step("ExecStartPre")
    assert (proc.returncode, proc.stdout, proc.stderr) == (1, "", INVALID_ERRORS)


def test_service_serves_reloads_and_stops(installed: Installation, example_config: None, web_servers: None,
                                          tmp_path: pathlib.Path) -> None:
    """Run as the unit says, lbd serves the example, reloads on SIGHUP, keeps serving past an invalid reload,
    and stops cleanly on SIGTERM."""
    busy = [what for what, port in EXAMPLE_PORTS.items() if what.startswith(("frontend", "metrics"))
            and port_in_use(port)]
    assert busy == [], "ports the example config needs are taken: %s" % (busy,)
    with open(UNIT_PATH) as f:
        service = Service(Unit.parse(f.read()))
    made = service.make_directories()
    try:
        pre = service.run_step("ExecStartPre")
        assert (pre.returncode, pre.stdout, pre.stderr) == (0, "Configuration file is valid\n", "")

        service.start(str(tmp_path / "lbd.log"))
        assert service.proc is not None
        offset = service.wait_for_log("lbd ready")
        ps = run(["ps", "-o", "user=,args=", "-p", str(service.proc.pid)]).stdout.split()
        assert ps[:2] == ["lbd", "/usr/bin/python3"] and ps[2:] == [
            "/usr/bin/twistd3", "--nodaemon", "--pidfile=", "lbd", "-c", "/etc/lbd.toml"], ps

        # Both servers take requests (round robin; health checks may need a moment).
        seen: set[bytes] = set()
        deadline = time.monotonic() + 15
        while seen != {b"web1\n", b"web2\n"} and time.monotonic() < deadline:
            status, body = get()
            if status == 200:
                seen.add(body)
            else:
                time.sleep(0.2)
        assert seen == {b"web1\n", b"web2\n"}, service.log()
        assert get("/healthz", 9101)[0] == 200
        stat = run(["lbctl", "show", "backend"])
        assert stat.returncode == 0 and "web" in stat.stdout.splitlines(), stat.stdout + stat.stderr

        # systemctl reload with a valid file: check passes, SIGHUP, web1 is gone.
        write_config(RELOADED_CONFIG)
        reload = service.run_step("ExecReload", {"MAINPID": str(service.proc.pid)})
        assert (reload.returncode, reload.stderr) == (0, ""), reload.stdout + reload.stderr
        offset = service.wait_for_log("reload done", after=offset)
        assert [get() for _ in range(4)] == [(200, b"web2\n")] * 4

        # systemctl reload with an invalid file: the check fails, no SIGHUP is sent.
        write_config(INVALID_CONFIG)
        reload = service.run_step("ExecReload", {"MAINPID": str(service.proc.pid)})
        assert (reload.returncode, reload.stdout, reload.stderr) == (1, "", INVALID_ERRORS)
        # A SIGHUP anyway (kill -HUP by hand): lbd logs the errors and keeps the running configuration.
        service.signal(signal.SIGHUP)
        offset = service.wait_for_log("still running the previous configuration", after=offset)
        assert [get() for _ in range(4)] == [(200, b"web2\n")] * 4

        # systemctl stop: SIGTERM, a graceful stop that systemd counts as clean.
        service.signal(signal.SIGTERM)
        code = service.proc.wait(30)
        log = service.log()
        assert code in (0, -signal.SIGTERM), log
        assert "Server Shut Down." in log[offset:]
        assert "Unable to write to plugin cache" not in log
        assert not port_in_use(8080)
        state = os.stat("/var/lib/lbd/state.json")       # global.state_file, in StateDirectory=
        assert state.st_uid == pwd.getpwnam("lbd").pw_uid
    finally:
        service.kill()
        # systemd removes RuntimeDirectory= when the service stops; StateDirectory= stays.
        for path in made:
            if path.startswith("/run/"):
                shutil.rmtree(path, ignore_errors=True)


UNDER_TEST_PLUGIN = """\
import lbd, twisted

def pytest_sessionstart(session):
    with open("under-test.txt", "w") as f:
        f.write("%s %s\\n" % (lbd.__file__, twisted.__file__))
"""


def test_unit_suite_passes_on_the_installed_package(installed: Installation, tmp_path: pathlib.Path) -> None:
    """The in-process test suite (tests/ but e2e) passes against the installed package and Debian's Twisted."""
    ignore = shutil.ignore_patterns("e2e", "__pycache__", "*.pyc", ".hypothesis")
    # The tests as they were when the package was built; they read the shipped files in etc/.
    shutil.copytree(os.path.join(installed.deb.source, "tests"), tmp_path / "tests", ignore=ignore)
    shutil.copytree(os.path.join(installed.deb.source, "etc"), tmp_path / "etc", ignore=ignore)
    (tmp_path / "under_test.py").write_text(UNDER_TEST_PLUGIN)
    proc = subprocess.run(["python3", "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "under_test", "tests"],
                          env=system_env(), cwd=str(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-4000:]
    assert (tmp_path / "under-test.txt").read_text().split() == [
        DIST_PACKAGES + "/lbd/__init__.py", DIST_PACKAGES + "/twisted/__init__.py"]


def test_purge_leaves_nothing_behind(installed: Installation) -> None:
    """`apt-get purge lbd` removes the code, the conffiles, the unit's state and the plugin from Twisted's cache."""
    lbd = pwd.getpwnam("lbd")
    # What a run leaves, as the service would have written it.
    for path in ("/var/lib/lbd", "/var/log/lbd"):
        os.makedirs(path, exist_ok=True)
        os.chown(path, lbd.pw_uid, lbd.pw_gid)
    with open("/var/lib/lbd/state.json", "a"):
        pass
    apt_get("purge", "lbd")
    assert package_status() == ""
    assert [path for path in PURGED if os.path.lexists(path)] == []
    pycache = os.path.join(DIST_PACKAGES, "twisted", "plugins", "__pycache__")
    assert [name for name in (os.listdir(pycache) if os.path.isdir(pycache) else []) if "lbd" in name] == []
    with open(PLUGIN_CACHE, "rb") as f:
        assert b"lbd_plugin" not in f.read()
