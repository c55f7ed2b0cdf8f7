#!/usr/bin/env bash
# Prepare this machine for Harken: Debian packages, a virtualenv with the project and
# its extras, and the local services the tests talk to. Safe to run again: it only
# installs or starts what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian's contrib and non-free components hold three more English speech engines (mbrola and
# its voices, SVOX pico, rhvoice): enable them unless some source already does.
components_enabled() {
  local lines  # grep exits 2 when /etc/apt/sources.list is absent, as on a deb822-only machine
  lines=$(grep -rhsE '^[[:space:]]*(Components:|deb[[:space:]])' /etc/apt/sources.list /etc/apt/sources.list.d/ || true)
  grep -E '(^|[[:space:]])contrib([[:space:]]|$)' <<<"$lines" | grep -E '(^|[[:space:]])non-free([[:space:]]|$)' >/dev/null
}
if ! components_enabled; then
  echo "setup: enabling Debian's contrib and non-free components"
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
  cat > /etc/apt/sources.list.d/harken-contrib-non-free.sources <<SOURCES
Types: deb
URIs: http://deb.debian.org/debian
Suites: $codename
Components: contrib non-free
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
fi

need_apt=()
for cmd_pkg in espeak-ng:espeak-ng sox:sox mosquitto:mosquitto chromium:chromium chromedriver:chromium-driver \
               festival:festival flite:flite mbrola:mbrola pico2wave:libttspico-utils systemd-analyze:systemd; do
  cmd=${cmd_pkg%%:*}; pkg=${cmd_pkg#*:}
  command -v "$cmd" >/dev/null 2>&1 || need_apt+=("$pkg")
done
# the engines' English voices, and RHVoice's library (the model lab calls it in-process and
# synthesizes with every engine; see cloud/lab/engines)
for pkg in festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1 \
           librhvoice5 rhvoice-english; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.harken-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing Python packages"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[cloud,serve,mic,dev]"
  touch "$stamp"
fi

# Local services: start them if they are down (the tests start their own extra brokers).
if ! (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null; then
  echo "setup: starting mosquitto on 127.0.0.1:1883"
  mosquitto -d -c /etc/mosquitto/mosquitto.conf 2>/dev/null || mosquitto -d -p 1883
fi
scripts/setup_postgres.sh  # installs, starts and prepares PostgreSQL only where something is missing
