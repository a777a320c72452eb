#!/usr/bin/env bash
# Installs the Python ADBC Flight SQL driver (the Go Flight SQL client that BI
# integrations use) into a venv under the cache directory, once, and prints
# the venv's python. Idempotent: a second run only checks.
set -euo pipefail
venv="${MESHQL_ADBC_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/meshql/venv-adbc}"
stamp="$venv/.meshql-adbc-1"
if [[ ! -f "$stamp" ]]; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "adbc-driver-manager==1.13.*" "adbc-driver-flightsql==1.13.*" "pyarrow>=17" >&2
  touch "$stamp"
fi
echo "$venv/bin/python"
