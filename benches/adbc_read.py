"""Reads the benchmark's large result through the Python ADBC Flight SQL
driver, as pandas and BI users do, and prints one line: rows, Arrow bytes,
best time of five and MB/s. Run by benches/flight.rs (section `adbc`)."""

import sys
import time
import warnings

import adbc_driver_flightsql.dbapi as dbapi

addr, sql = sys.argv[1], sys.argv[2]
warnings.simplefilter("ignore")
conn = dbapi.connect(
    f"grpc://{addr}", db_kwargs={"username": "admin", "password": "admin-demo"}
)
best = float("inf")
table = None
for _ in range(5):
    cur = conn.cursor()
    start = time.perf_counter()
    cur.execute(sql)
    table = cur.fetch_arrow_table()
    best = min(best, time.perf_counter() - start)
    cur.close()
conn.close()
print(f"{table.num_rows} {table.nbytes} {best}")
