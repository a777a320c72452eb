"""meshql over Flight SQL as a new user reaches it from Python: the ADBC
Flight SQL driver, one connection, a cursor per statement, the result
fetched as one Arrow table. The same protocol as duckdb_runner.py: JSON
commands on stdin, one JSON answer per line on stdout.

    python adbc_runner.py HOST:PORT USER PASSWORD

Commands:
    {"op": "run", "sql": ...}              -> {"ms": elapsed, "rows": n}
    {"op": "dump", "sql": ..., "path": P}  -> {"ok": true}, result in P (Parquet)
A failed command answers {"error": message}.
"""

import json
import sys
import time
import warnings

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as dbapi
import pyarrow.parquet as pq


def reply(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main():
    addr, user, password = sys.argv[1], sys.argv[2], sys.argv[3]
    warnings.simplefilter("ignore")
    conn = dbapi.connect(
        f"grpc://{addr}", db_kwargs={"username": user, "password": password}
    )
    reply({"version": adbc_driver_flightsql.__version__, "threads": 1})
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd.get("op")
        try:
            if op == "run":
                start = time.perf_counter()
                with conn.cursor() as cur:
                    cur.execute(cmd["sql"])
                    table = cur.fetch_arrow_table()
                elapsed = (time.perf_counter() - start) * 1e3
                reply({"ms": elapsed, "rows": table.num_rows})
            elif op == "dump":
                with conn.cursor() as cur:
                    cur.execute(cmd["sql"])
                    table = cur.fetch_arrow_table()
                pq.write_table(table, cmd["path"])
                reply({"ok": True})
            else:
                reply({"error": f"unknown command {op!r}"})
        except Exception as e:  # answered, so the harness can say which query
            reply({"error": str(e)})
    conn.close()


if __name__ == "__main__":
    main()
