#!/usr/bin/env bash
# PostgreSQL for Harken's tests on this machine (run by setup.sh; safe to run again): the server
# installed (Debian's postgresql), a cluster that runs on 127.0.0.1:5432, the role and database
# `test`, and loopback access to that database without a password for `postgres` and `test` (the
# tests' default URL is postgresql://postgres@127.0.0.1:5432/test; HARKEN_TEST_PG overrides it).
# Each step runs only when its check fails, so a machine that already has all of it is left alone.
set -euo pipefail

PORT=${HARKEN_PG_PORT:-5432}
DB=test
as_postgres() { runuser -u postgres -- "$@"; }
listening() { (exec 3<>/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null; }

# 1. the server
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  echo "setup: installing the PostgreSQL server"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq postgresql >/dev/null
fi
version=$(ls /usr/lib/postgresql | sort -V | tail -n1)

# 2. a cluster on $PORT (Debian's package makes `main`; a minimal image may not have)
cluster=$(pg_lsclusters -h 2>/dev/null | awk -v p="$PORT" '$3 == p {print $1 "/" $2; exit}')
if [ -z "$cluster" ]; then
  echo "setup: creating PostgreSQL cluster $version/main on port $PORT"
  pg_createcluster --port "$PORT" "$version" main >/dev/null
  cluster="$version/main"
fi

# 3. running
if ! listening; then
  echo "setup: starting PostgreSQL $cluster"
  pg_ctlcluster --skip-systemctl-redirect "${cluster%/*}" "${cluster#*/}" start
  for _ in $(seq 50); do listening && break; sleep 0.2; done
  listening || { echo "setup: PostgreSQL $cluster did not start; see /var/log/postgresql/" >&2; exit 1; }
fi

# 4. the role and the database
if [ "$(as_postgres psql -p "$PORT" -tAc "SELECT 1 FROM pg_roles WHERE rolname = '$DB'")" != 1 ]; then
  echo "setup: creating PostgreSQL role $DB"
  as_postgres psql -p "$PORT" -qc "CREATE ROLE $DB LOGIN"
fi
if [ "$(as_postgres psql -p "$PORT" -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != 1 ]; then
  echo "setup: creating PostgreSQL database $DB"
  as_postgres createdb -p "$PORT" -O "$DB" "$DB"
fi

# 5. loopback access without a password, for the test database only
if ! psql -w "postgresql://postgres@127.0.0.1:$PORT/$DB" -tAc "SELECT 1" >/dev/null 2>&1; then
  hba=$(as_postgres psql -p "$PORT" -tAc "SHOW hba_file")
  echo "setup: letting postgres and $DB reach database $DB on 127.0.0.1 without a password ($hba)"
  sed -i "1i host $DB postgres,$DB 127.0.0.1/32 trust  # Harken's tests (scripts/setup_postgres.sh)" "$hba"
  as_postgres psql -p "$PORT" -qc "SELECT pg_reload_conf()" >/dev/null
fi
psql -w "postgresql://postgres@127.0.0.1:$PORT/$DB" -tAc "SELECT 1" >/dev/null
