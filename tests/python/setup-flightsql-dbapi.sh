#!/usr/bin/env bash
# Installs flightsql-dbapi (the Flight SQL DB-API driver and SQLAlchemy
# dialect that Superset uses for Flight SQL) into a venv of its own under
# the cache directory, once, and prints the venv's python. It needs
# SQLAlchemy < 2, which the PostgreSQL peers' venv cannot have.
# Idempotent: a second run only checks.
set -euo pipefail
venv="${MESHQL_FLIGHTSQL_DBAPI_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/meshql/venv-flightsql-dbapi}"
stamp="$venv/.meshql-flightsql-dbapi-1"
if [[ ! -f "$stamp" ]]; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "flightsql-dbapi==0.2.*" "sqlalchemy<2" "pandas>=2" >&2
  touch "$stamp"
fi
echo "$venv/bin/python"
