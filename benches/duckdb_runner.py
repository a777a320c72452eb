"""DuckDB's side of meshql-bench: reads JSON commands on stdin, one per line,
and answers each with one JSON line on stdout.

    python duckdb_runner.py DATA_DIR TABLE,TABLE,...

Each table is a view over DATA_DIR/parquet/<table>/*.parquet, the files
meshql and DataFusion read; a table given as NAME=GLOB is a view over the
files GLOB names instead. Commands:
    {"op": "run", "sql": ...}              -> {"ms": elapsed, "rows": n}
    {"op": "concurrent", "sql": ..., "clients": n, "seconds": s}
                                           -> {"qps": queries per second}
    {"op": "dump", "sql": ..., "path": P}  -> {"ok": true}, result in P (Parquet)
    {"op": "set", "sql": ...}              -> {"ok": true}
    {"op": "memory"}                       -> {"peak_rss": bytes}
A failed command answers {"error": message}.
"""

import json
import resource
import sys
import threading
import time

import duckdb
import pyarrow  # noqa: F401  (to_arrow_table needs it)


def reply(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def concurrent(con, sql, clients, seconds):
    """Queries per second of `clients` threads, each with a cursor of its
    own (DuckDB's way to run statements concurrently on one database),
    running `sql` and fetching it as Arrow, over and over for `seconds`."""
    done = [0] * clients
    cursors = [con.cursor() for _ in range(clients)]
    start = time.perf_counter()
    deadline = start + seconds

    def client(i):
        cur = cursors[i]
        while time.perf_counter() < deadline:
            cur.execute(sql).to_arrow_table()
            done[i] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    for cur in cursors:
        cur.close()
    return sum(done) / elapsed


def main():
    data_dir, tables = sys.argv[1], sys.argv[2].split(",")
    con = duckdb.connect()
    for table in tables:
        table, _, glob = table.partition("=")
        glob = glob or f"{data_dir}/parquet/{table}/*.parquet"
        path = glob.replace("'", "''")
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{path}')")
    threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
    reply({"version": duckdb.__version__, "threads": threads})
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd.get("op")
        try:
            if op == "run":
                start = time.perf_counter()
                result = con.execute(cmd["sql"]).to_arrow_table()
                elapsed = (time.perf_counter() - start) * 1e3
                reply({"ms": elapsed, "rows": result.num_rows})
            elif op == "dump":
                sql = cmd["sql"].strip().rstrip(";")
                path = cmd["path"].replace("'", "''")
                con.execute(f"COPY ({sql}) TO '{path}' (FORMAT parquet)")
                reply({"ok": True})
            elif op == "concurrent":
                qps = concurrent(con, cmd["sql"], cmd["clients"], cmd["seconds"])
                reply({"qps": qps})
            elif op == "set":
                con.execute(cmd["sql"])
                reply({"ok": True})
            elif op == "memory":
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
                reply({"peak_rss": peak})
            else:
                reply({"error": f"unknown command {op!r}"})
        except Exception as e:  # answered, so the harness can say which query
            reply({"error": str(e)})


if __name__ == "__main__":
    main()
