#!/usr/bin/env bash
# Installs the Python peers of meshql's interoperability tests into a venv
# under the cache directory, once, and prints the venv's python:
#   - the ADBC Flight SQL driver (the Go Flight SQL client BI integrations use),
#   - PyIceberg with its SQL catalog (SQLite and PostgreSQL), which writes
#     the Iceberg tables meshql must read exactly as PyIceberg does,
#   - DuckDB with its iceberg extension (from the extension's wheel), which
#     must answer as meshql does over the same table, and which writes the
#     position delete files of merge-on-read tables (its httpfs extension
#     reaches the REST catalog).
# Idempotent: a second run only checks.
set -euo pipefail
venv="${MESHQL_PYTHON_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/meshql/venv-peers}"
stamp="$venv/.meshql-peers-5"
if [[ ! -f "$stamp" ]]; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "adbc-driver-manager==1.13.*" "adbc-driver-flightsql==1.13.*" "pyarrow>=17" \
    "pyiceberg[sql-sqlite,sql-postgres,pyarrow,pyiceberg-core]==0.12.*" \
    "duckdb==1.5.5" "duckdb-extension-iceberg==1.5.5" "duckdb-extension-avro==1.5.5" "duckdb-extension-httpfs==1.5.5" >&2
  touch "$stamp"
fi
echo "$venv/bin/python"
