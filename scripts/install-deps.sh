#!/bin/sh
# Install the Debian packages lbd's demo, tests and benchmark use.
# Services that Debian would start on install (apache2, mariadb, nginx,
# haproxy, prometheus) are kept from starting: lbd's tests run their own
# instances on loopback ports.
set -eu

PACKAGES="
python3 python3-venv python3-pip python3-setuptools
python3-twisted python3-prometheus-client python3-service-identity python3-openssl
python3-pytest python3-treq python3-hypothesis
apache2 mariadb-server mariadb-client galera-4 prometheus
socat curl nginx haproxy wrk chromium
build-essential python3-wheel debhelper dh-python python3-all pybuild-plugin-pyproject dpkg-dev lintian systemd man-db
procps util-linux
"

missing=""
for p in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0

SUDO=""
if [ "$(id -u)" != 0 ]; then
    SUDO="sudo"
fi
echo "Installing Debian packages:$missing"
policy=/usr/sbin/policy-rc.d
created_policy=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
    created_policy=1
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing
if [ -n "$created_policy" ]; then
    $SUDO rm -f "$policy"
fi
