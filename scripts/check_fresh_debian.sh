#!/usr/bin/env bash
# Check scripts/setup_postgres.sh on a bare Debian: a debootstrap'ed bookworm (minbase) in a chroot,
# with its own network namespace (loopback only: its PostgreSQL cannot meet this machine's on 5432)
# and a policy-rc.d that, as in a container, starts no service at install time. The set-up runs
# twice (the second run must change nothing), then the project's PostgreSQL store tests run from
# this checkout against the chroot's server. Needs root and debootstrap; downloads ~60 MB of Debian
# packages. Usage: scripts/check_fresh_debian.sh [ROOTFS]   (default /tmp/harken-bookworm; reused)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOTFS=${1:-/tmp/harken-bookworm}
PY=${PYTHON:-.venv/bin/python}

if [ ! -x "$ROOTFS/usr/bin/apt-get" ]; then
  command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap >/dev/null
  debootstrap --variant=minbase bookworm "$ROOTFS" >/dev/null
fi
printf '#!/bin/sh\nexit 101\n' > "$ROOTFS/usr/sbin/policy-rc.d" && chmod +x "$ROOTFS/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
cp scripts/setup_postgres.sh "$ROOTFS/root/setup_postgres.sh"
echo "bare image: $(chroot "$ROOTFS" dpkg-query -W -f '${Package}\n' | wc -l) packages," \
     "postgresql: $(chroot "$ROOTFS" dpkg-query -W -f '${Status}' postgresql 2>/dev/null || echo 'not installed')"
# the network is needed only to fetch packages: fetch them now, install them in the namespace
chroot "$ROOTFS" apt-get update -qq
chroot "$ROOTFS" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --download-only postgresql >/dev/null

unshare --net --mount --fork bash -euo pipefail -c '
  ROOTFS=$1 PY=$2
  ip link set lo up
  mount -t proc proc "$ROOTFS/proc"
  mount --bind /dev "$ROOTFS/dev"
  trap "chroot $ROOTFS sh -c \"pg_ctlcluster --skip-systemctl-redirect \\\$(ls /etc/postgresql) main stop\" 2>/dev/null || true; umount $ROOTFS/dev $ROOTFS/proc" EXIT
  in_root() { chroot "$ROOTFS" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"; }
  echo "== first run"
  in_root bash /root/setup_postgres.sh
  echo "== second run (must say nothing)"
  second=$(in_root bash /root/setup_postgres.sh)
  [ -z "$second" ] || { echo "the second run changed something: $second" >&2; exit 1; }
  echo "== the store tests against the chroot server"
  PYTHONPATH=$PWD PYTHONHASHSEED=0 "$PY" -m pytest -q -p no:cacheprovider tests/cloud/test_store.py -k "postgres or pg"
' check "$ROOTFS" "$PY"
