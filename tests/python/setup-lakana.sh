#!/usr/bin/env bash
# Installs lakana-server, an Iceberg REST catalog server, into a venv of its
# own under the cache directory, once, and prints the path of its
# `lakana-server` program. Idempotent: a second run only checks.
set -euo pipefail
venv="${MESHQL_LAKANA_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/meshql/venv-lakana}"
stamp="$venv/.meshql-lakana-1"
if [[ ! -f "$stamp" ]]; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "lakana-server==0.20.*" >&2
  touch "$stamp"
fi
echo "$venv/bin/lakana-server"
