"""The client side of `meshql-bench pg`: one-row latency and large-result
throughput through real drivers, in a process of its own.

    python pg_clients.py pg   DSN TINY LARGE   # psycopg 3 over the PostgreSQL protocol
    python pg_clients.py adbc URI USER PASSWORD TINY LARGE   # the ADBC Flight SQL driver

Prints one JSON object: p50 and p99 of the one-row query in milliseconds
(1,000 timed runs after 50 warm-ups, each a fresh execute and fetch), and
for the large result the best of three reads: rows, bytes received and
seconds. psycopg reads the large result twice: as binary `COPY ... TO STDOUT`
(the bytes as they arrive, not parsed into Python objects) and through a
server-side cursor (binary rows, fetched 10,000 at a time, as Python
tuples). ADBC reads it as one Arrow table.
"""

import json
import sys
import time
import warnings

RUNS, WARM, ROUNDS = 1000, 50, 3


def percentiles(times):
    times = sorted(times)
    pick = lambda p: times[round((len(times) - 1) * p)] * 1e3
    return {"p50_ms": pick(0.5), "p99_ms": pick(0.99)}


def timed(once):
    for _ in range(WARM):
        once()
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        once()
        times.append(time.perf_counter() - start)
    return percentiles(times)


def best(read):
    out = None
    for _ in range(ROUNDS):
        start = time.perf_counter()
        rows, size = read()
        secs = time.perf_counter() - start
        if out is None or secs < out["secs"]:
            out = {"rows": rows, "bytes": size, "secs": secs}
    return out


def pg(dsn, tiny, large):
    import psycopg

    conn = psycopg.connect(dsn, autocommit=True)

    def one_row():
        with conn.cursor() as cur:
            cur.execute(tiny)
            rows = cur.fetchall()
        assert len(rows) == 1, rows

    def copy_binary():
        rows = size = 0
        with conn.cursor() as cur:
            with cur.copy(f"COPY ({large}) TO STDOUT (FORMAT BINARY)") as copy:
                for chunk in copy:
                    size += len(chunk)
            rows = cur.rowcount
        return rows, size

    def cursor():
        rows = 0
        # A server-side cursor lives in a transaction.
        with psycopg.connect(dsn) as c:
            with c.cursor(name="bench", binary=True) as cur:
                cur.itersize = 10_000
                cur.execute(large)
                while batch := cur.fetchmany(10_000):
                    rows += len(batch)
        return rows, 0

    out = {"one_row": timed(one_row), "copy": best(copy_binary), "cursor": best(cursor)}
    conn.close()
    return out


def adbc(uri, user, password, tiny, large):
    import adbc_driver_flightsql.dbapi as dbapi

    warnings.simplefilter("ignore")
    conn = dbapi.connect(uri, db_kwargs={"username": user, "password": password})

    def one_row():
        with conn.cursor() as cur:
            cur.execute(tiny)
            assert cur.fetch_arrow_table().num_rows == 1

    def arrow():
        with conn.cursor() as cur:
            cur.execute(large)
            table = cur.fetch_arrow_table()
        return table.num_rows, table.nbytes

    out = {"one_row": timed(one_row), "arrow": best(arrow)}
    conn.close()
    return out


if __name__ == "__main__":
    kind, args = sys.argv[1], sys.argv[2:]
    result = pg(*args) if kind == "pg" else adbc(*args)
    print(json.dumps(result))
