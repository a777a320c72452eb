#!/usr/bin/env bash
# Installs Apache Superset into a venv of its own under the cache directory,
# once (about 3 minutes, 800 MB), and prints the venv's python. Superset
# 6.1.0 needs two corrections to what pip resolves for it: its CLI imports
# `rich`, which it does not declare, and it breaks with Flask-Caching 2.5
# (an argument its metastore cache does not take), so 2.3 is pinned.
# psycopg2 is the driver of its PostgreSQL connections. Its metadata
# database (SQLite: migrated, an administrator `admin`, roles and
# permissions; about a minute) is prepared here too, as a template the
# tests copy.
# Idempotent: a second run only checks.
set -euo pipefail
venv="${MESHQL_SUPERSET_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/meshql/venv-superset}"
stamp="$venv/.meshql-superset-1"
if [[ ! -f "$stamp" ]]; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "apache-superset==6.1.0" "psycopg2-binary==2.9.*" "rich" "cachetools" "flask-caching==2.3.1" >&2
  home="$venv/meshql-superset"
  rm -rf "$home" && mkdir -p "$home"
  cat >"$home/superset_config.py" <<CONFIG
SECRET_KEY = "meshql-tests-only-not-a-secret"
SQLALCHEMY_DATABASE_URI = "sqlite:///$home/metadata.db"
CONFIG
  export SUPERSET_CONFIG_PATH="$home/superset_config.py" SUPERSET_HOME="$home" FLASK_APP=superset
  "$venv/bin/superset" db upgrade >/dev/null 2>&1
  "$venv/bin/superset" fab create-admin --username admin --firstname Mesh --lastname Admin \
    --email admin@example.com --password admin >/dev/null 2>&1
  "$venv/bin/superset" init >/dev/null 2>&1
  test -s "$home/metadata.db"
  touch "$stamp"
fi
echo "$venv/bin/python"
