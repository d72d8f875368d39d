"""Build-time check of the built tree (run by pybuild's test step, in {build_dir}).

What packaging can break, checked without network, servers or root: every
module imports, the twistd plugin is found in the ``twisted.plugins``
namespace, the console scripts run, the example configuration and the shipped
errorfiles are valid, and debian/changelog carries lbd's own version. The
behaviour tests run in CI (``make test``, tests/e2e/test_deb.py).

Usage: python3 debian/build-check.py SOURCE_DIR   (cwd: the built tree)
"""
from __future__ import annotations

import os
import pkgutil
import re
import subprocess
import sys
import tempfile
from typing import Any, NoReturn

ERROR_CODES = ("400", "403", "408", "500", "502", "503", "504")


def fail(message: str) -> NoReturn:
    sys.stderr.write("build-check: %s\n" % (message,))
    sys.exit(1)


def check_imports(build_dir: str) -> None:
    import lbd

    if os.path.dirname(os.path.abspath(lbd.__file__)) != os.path.join(build_dir, "lbd"):
        fail("lbd imported from %s, not from the built tree %s" % (lbd.__file__, build_dir))
    names = ["lbd"] + [m.name for m in pkgutil.walk_packages(lbd.__path__, "lbd.")]
    for name in names:
        __import__(name)
    for needed in ("lbd.tap", "lbd.cli", "lbd.config", "lbd.service"):
        if needed not in names:
            fail("module %s is missing from the built tree" % (needed,))
    print("build-check: %d modules import" % (len(names),))


def check_plugin(build_dir: str) -> None:
    from twisted.application.service import IServiceMaker
    from twisted.plugin import getPlugins
    from twisted import plugins

    cache = os.path.join(build_dir, "twisted", "plugins", "dropin.cache")
    try:
        makers: dict[str, Any] = {str(p.tapname): p for p in getPlugins(IServiceMaker, plugins)}
    finally:
        # getPlugins wrote a cache into the tree pybuild installs from.
        if os.path.exists(cache):
            os.unlink(cache)
    maker = makers.get("lbd")
    if maker is None:
        fail("twistd plugin 'lbd' not found (plugins: %s)" % (", ".join(sorted(makers)),))
    if maker.module != "lbd.tap":
        fail("twistd plugin 'lbd' names module %r, not 'lbd.tap'" % (maker.module,))
    options = maker.options()
    options.parseOptions(["-c", "/etc/lbd.toml"])
    print("build-check: twistd plugin lbd found, options parse")


def run_lbd(build_dir: str, *args: str) -> str:
    env = dict(os.environ)
    env["PYTHONPATH"] = build_dir
    proc = subprocess.run(["lbd", *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        fail("lbd %s exited %d:\n%s%s" % (" ".join(args), proc.returncode, proc.stdout, proc.stderr))
    return proc.stdout


def check_configs(build_dir: str, source_dir: str) -> None:
    out = run_lbd(build_dir, "check", "-c", os.path.join(source_dir, "etc", "lbd.toml"))
    if out != "Configuration file is valid\n":
        fail("lbd check of etc/lbd.toml printed %r" % (out,))
    errors = "".join(
        '%s = "%s"\n' % (code, os.path.join(source_dir, "etc", "errors", code + ".http")) for code in ERROR_CODES
    )
    text = (
        '[admin]\nsocket = "off"\n[metrics]\nbind = "off"\n'
        "[defaults.errorfiles]\n%s"
        '[frontends.www]\nbind = "127.0.0.1:8080"\ndefault_backend = "web"\n'
        '[backends.web.servers]\nweb1 = { address = "127.0.0.1:8081" }\n' % (errors,)
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "errorfiles.toml")
        with open(path, "w") as f:
            f.write(text)
        out = run_lbd(build_dir, "check", "-c", path)
    if out != "Configuration file is valid\n":
        fail("the shipped errorfiles do not load: %r" % (out,))
    print("build-check: etc/lbd.toml and etc/errors/*.http are valid")


def check_version(build_dir: str, source_dir: str) -> None:
    with open(os.path.join(source_dir, "debian", "changelog")) as f:
        m = re.match(r"lbd \(([^)]+)\)", f.readline())
    if m is None:
        fail("cannot read the version from debian/changelog")
    deb_version = m.group(1)
    upstream = deb_version.split(":", 1)[-1]
    if "-" in upstream:  # a Debian revision; lbd is a native package today
        upstream = upstream.rsplit("-", 1)[0]
    out = run_lbd(build_dir, "version")
    if out != "lbd %s\n" % (upstream,):
        fail("lbd version prints %r but debian/changelog says %s" % (out, deb_version))
    print("build-check: version %s" % (upstream,))


def main() -> None:
    if len(sys.argv) != 2:
        fail("usage: build-check.py SOURCE_DIR")
    source_dir = os.path.abspath(sys.argv[1])
    build_dir = os.getcwd()
    sys.path.insert(0, build_dir)
    sys.dont_write_bytecode = True
    check_imports(build_dir)
    check_plugin(build_dir)
    check_configs(build_dir, source_dir)
    check_version(build_dir, source_dir)


if __name__ == "__main__":
    main()
