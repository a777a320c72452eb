#!/usr/bin/env bash
# The Python side of meshql's benchmarks, in a venv of its own under the
# cache directory, installed once; prints the venv's python:
#   - DuckDB, the engine meshql is compared with on the same Parquet files,
#     with pyarrow so that its results are fetched as Arrow, as meshql's are;
#   - matplotlib, which draws the chart of the per-query ratios;
#   - psycopg 3 and the ADBC Flight SQL driver, the clients of the
#     PostgreSQL-protocol benchmark (`meshql-bench pg`).
# The meshql-bench harness runs this itself when MESHQL_BENCH_PYTHON is not
# set. Idempotent: a second run only checks.
set -euo pipefail
venv="${MESHQL_BENCH_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/meshql/venv-bench}"
stamp="$venv/.meshql-bench-2"
if [[ ! -f "$stamp" ]]; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "duckdb==1.5.5" "pyarrow==26.0.1" "matplotlib==3.10.*" \
    "psycopg[binary]==3.3.*" "adbc-driver-manager==1.13.*" "adbc-driver-flightsql==1.13.*" >&2
  touch "$stamp"
fi
echo "$venv/bin/python"
