"""Runs SQL with DuckDB's iceberg extension over an Iceberg table's metadata
file and prints the rows as JSON (every value as text, NULL for null).

Usage: python duckdb_iceberg.py METADATA_JSON SQL

In SQL, `t` is the table: `iceberg_scan('METADATA_JSON')`.
"""

import glob
import json
import site
import sys

import duckdb

metadata, sql = sys.argv[1], sys.argv[2]
con = duckdb.connect(config={"autoinstall_known_extensions": False})
# The extensions come from their PyPI wheels: plain INSTALL would go online.
for name in ("avro", "iceberg"):
    extension = glob.glob(
        f"{site.getsitepackages()[0]}/duckdb_extension_{name}/extensions/*/{name}.duckdb_extension"
    )[0]
    con.execute(f"INSTALL '{extension}'")
    con.execute(f"LOAD {name}")
con.execute(f"CREATE VIEW t AS SELECT * FROM iceberg_scan('{metadata}')")
rows = con.execute(sql).fetchall()


def text(v):
    return "NULL" if v is None else str(v)


print(json.dumps([[text(v) for v in row] for row in rows]))
