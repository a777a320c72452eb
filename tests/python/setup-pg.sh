#!/usr/bin/env bash
# Installs the PostgreSQL client peers of meshql's interoperability tests
# into a venv under the cache directory, once, and prints the venv's python:
# psycopg 3 (libpq's protocol, text and binary), asyncpg (its own binary
# protocol), SQLAlchemy 2 with its PostgreSQL dialect, and pandas.
# Idempotent: a second run only checks.
set -euo pipefail
venv="${MESHQL_PG_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/meshql/venv-pg}"
stamp="$venv/.meshql-pg-1"
if [[ ! -f "$stamp" ]]; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "psycopg[binary]==3.3.*" "asyncpg==0.32.*" "sqlalchemy==2.1.*" "pandas>=2" >&2
  touch "$stamp"
fi
echo "$venv/bin/python"
