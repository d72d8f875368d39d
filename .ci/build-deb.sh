#!/bin/sh
# Build lbd_VERSION_all.deb with Debian's tools from a copy of the source
# tree, so the working tree gets no build products (.pybuild/, debian/lbd/,
# ../lbd_*.deb).
#
#   .ci/build-deb.sh [OUTDIR]     (default: dist/)
#
# The copy holds the files git knows (tracked, plus untracked ones that are
# not ignored) as they are in the working tree; outside a git checkout, the
# whole tree without .git, .venv and caches. Needs: dpkg-dev, debhelper,
# dh-python, pybuild-plugin-pyproject, python3-all, python3-setuptools,
# python3-wheel (see debian/control). No network.
set -eu

src=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-"$src/dist"}
mkdir -p "$out"
out=$(cd "$out" && pwd)

tmp=$(mktemp -d "${TMPDIR:-/tmp}/lbd-deb.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/lbd"

if git -C "$src" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    (cd "$src" && git ls-files -z --cached --others --exclude-standard |
        xargs -0 sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh |
        tar --null --no-recursion -T - -cf -) | tar -xf - -C "$tmp/lbd"
else
    tar -C "$src" --exclude=./.git --exclude=./.venv --exclude=./dist \
        --exclude=__pycache__ --exclude=.pybuild --exclude=dropin.cache \
        --exclude=./debian/lbd -cf - . | tar -xf - -C "$tmp/lbd"
fi

cd "$tmp/lbd"
dpkg-buildpackage -us -uc -b
cd "$tmp"
for f in lbd_*.deb lbd_*.buildinfo lbd_*.changes; do
    [ -e "$f" ] && cp "$f" "$out/"
done
ls "$out"/lbd_*.deb
