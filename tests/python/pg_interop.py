"""meshql's PostgreSQL endpoint through real drivers: psycopg 3 (text and
binary), asyncpg (binary, its own protocol code), SQLAlchemy 2's
PostgreSQL dialect and pandas.

Usage: python pg_interop.py HOST PORT

The server (started by the test on 127.0.0.1) serves the demo mesh; each
check compares what one principal gets with what another does, so that
none passes whatever the server answers.
"""

import asyncio
import datetime
import decimal
import sys

import asyncpg
import pandas
import psycopg
import sqlalchemy

host, port = sys.argv[1], int(sys.argv[2])
checks = 0


def check(condition, what):
    global checks
    if not condition:
        raise AssertionError(what)
    checks += 1


def dsn(user):
    return f"host={host} port={port} user={user} password={user}-demo dbname=mesh sslmode=disable"


# psycopg: parameters of several types, text and binary results.
with psycopg.connect(dsn("analyst"), autocommit=True) as conn:
    cur = conn.cursor()
    cur.execute(
        "SELECT count(*) FROM sales.orders WHERE region = %s AND order_id < %s AND order_date >= %s AND total_order_value > %s",
        ("EU", 110000, datetime.date(2025, 1, 1), decimal.Decimal("10.5")),
    )
    bound = cur.fetchone()[0]
    cur.execute(
        "SELECT count(*) FROM sales.orders WHERE region = 'EU' AND order_id < 110000 AND order_date >= DATE '2025-01-01' AND total_order_value > 10.5"
    )
    inline = cur.fetchone()[0]
    check(bound == inline and bound > 0, f"bound parameters: {bound} vs {inline}")
    for binary in (False, True):
        cur = conn.cursor(binary=binary)
        cur.execute(
            "SELECT order_id, order_date, order_ts, total_order_value, region, status FROM sales.orders ORDER BY order_id LIMIT 3"
        )
        rows = cur.fetchall()
        check(len(rows) == 3, f"binary={binary}: 3 rows")
        oid, day, ts, total, region, status = rows[0]
        check(isinstance(oid, int), f"binary={binary}: bigint as int: {oid!r}")
        check(isinstance(day, datetime.date), f"binary={binary}: date: {day!r}")
        check(isinstance(ts, datetime.datetime) and ts.tzinfo is not None, f"binary={binary}: timestamptz: {ts!r}")
        check(isinstance(total, decimal.Decimal), f"binary={binary}: numeric: {total!r}")
        check(isinstance(region, str), f"binary={binary}: text: {region!r}")
    cur = conn.cursor()
    cur.execute("SELECT email FROM customers.customers ORDER BY customer_id LIMIT 5")
    check(all("***@" in r[0] for r in cur.fetchall()), "emails masked for the analyst")

    # Errors carry SQLSTATEs; a hidden product is a missing one.
    def sqlstate(sql, user="analyst"):
        with psycopg.connect(dsn(user), autocommit=True) as c:
            try:
                c.execute(sql)
            except psycopg.Error as e:
                return e.sqlstate, str(e)
        return None, None

    code, _ = sqlstate("SELECT * FROM sales.ordrs")
    check(code == "42P01", f"missing product: {code}")
    hidden = sqlstate("SELECT * FROM payments.transactions", "guest")
    missing = sqlstate("SELECT * FROM payments.transactionz", "guest")
    check(hidden[0] == "42P01" == missing[0], f"hidden as missing: {hidden} {missing}")
    check(hidden[1].replace("transactions", "X") == missing[1].replace("transactionz", "X"), f"{hidden[1]!r} vs {missing[1]!r}")
    code, _ = sqlstate("DELETE FROM sales.orders")
    check(code == "42501", f"a write is refused: {code}")
    code, _ = sqlstate("SELECT nope FROM sales.orders")
    check(code == "42703", f"a missing column: {code}")

# Binary COPY out, as bulk readers use it: governed like any query.
with psycopg.connect(dsn("eu_analyst"), autocommit=True) as conn:
    sql = "COPY (SELECT customer_id, email, region FROM customers.customers ORDER BY customer_id LIMIT 50) TO STDOUT (FORMAT BINARY)"
    with conn.cursor().copy(sql) as copy:
        copy.set_types(["int8", "text", "text"])
        copied = list(copy.rows())
    check(len(copied) == 50, f"binary COPY rows: {len(copied)}")
    check(all("***@" in r[1] and r[2] == "EU" for r in copied), f"binary COPY governed: {copied[:3]}")

# A server-side cursor (DECLARE / FETCH) over a large result, read in
# pieces, governed: eu_analyst's lines of EU orders only.
with psycopg.connect(dsn("eu_analyst")) as conn:
    with conn.cursor(name="lines") as cur:
        cur.execute("SELECT i.order_id, o.region FROM sales.order_items i JOIN sales.orders o ON o.order_id = i.order_id")
        fetched, pieces, regions = 0, 0, set()
        while rows := cur.fetchmany(1000):
            fetched += len(rows)
            pieces += 1
            regions |= {r[1] for r in rows}
    expected = conn.execute("SELECT count(*) FROM sales.order_items").fetchone()[0]
    check(fetched == expected and pieces > 1, f"the cursor read {fetched} of {expected} rows in {pieces} pieces")
    check(regions == {"EU"}, f"the cursor's rows are EU's: {regions}")
with psycopg.connect(dsn("analyst")) as conn:
    everyone = conn.execute("SELECT count(*) FROM sales.order_items").fetchone()[0]
    check(everyone > expected, f"the analyst counts more lines: {everyone} vs {expected}")

# Transactions as drivers open them (psycopg's default is not autocommit).
with psycopg.connect(dsn("eu_analyst")) as conn:
    with conn.transaction():
        regions = {r[0] for r in conn.execute("SELECT DISTINCT region FROM sales.orders").fetchall()}
    check(regions == {"EU"}, f"eu_analyst sees EU rows only: {regions}")
    conn.execute("SET search_path = sales")
    n = conn.execute("SELECT count(*) FROM orders").fetchone()[0]
    m = conn.execute("SELECT count(*) FROM sales.orders").fetchone()[0]
    check(n == m > 0, f"the search path: {n} vs {m}")


# asyncpg: its own binary protocol code, prepared statements with types.
async def with_asyncpg():
    conn = await asyncpg.connect(host=host, port=port, user="analyst", password="analyst-demo", database="mesh", ssl=False)
    try:
        rows = await conn.fetch(
            "SELECT order_id, total_order_value, order_ts, order_date FROM sales.orders WHERE region = $1 AND order_id < $2 ORDER BY order_id LIMIT 5",
            "EU",
            110000,
        )
        check(len(rows) == 5, "asyncpg rows")
        check(isinstance(rows[0]["total_order_value"], decimal.Decimal), f"asyncpg numeric: {rows[0]}")
        check(isinstance(rows[0]["order_ts"], datetime.datetime), f"asyncpg timestamptz: {rows[0]}")
        n = await conn.fetchval("SELECT count(*) FROM sales.orders WHERE region = $1 AND order_id < $2", "EU", 110000)
        inline = await conn.fetchval("SELECT count(*) FROM sales.orders WHERE region = 'EU' AND order_id < 110000")
        check(n == inline and n > 0, f"asyncpg parameters: {n} vs {inline}")
        try:
            await conn.fetch("SELECT * FROM payments.transactionz")
            check(False, "a missing product answered")
        except asyncpg.PostgresError as e:
            check(e.sqlstate == "42P01", f"asyncpg sqlstate: {e.sqlstate}")
    finally:
        await conn.close()


asyncio.run(with_asyncpg())


# SQLAlchemy 2 and pandas: what each principal may see, and governed rows.
def engine(user):
    return sqlalchemy.create_engine(f"postgresql+psycopg://{user}:{user}-demo@{host}:{port}/mesh")


schemas = {}
for user in ["admin", "analyst", "guest"]:
    e = engine(user)
    inspector = sqlalchemy.inspect(e)
    schemas[user] = set(inspector.get_schema_names())
    tables = inspector.get_table_names(schema="sales")
    check(set(tables) == {"orders", "order_items"}, f"{user}: sales tables: {tables}")
    columns = inspector.get_columns("order_items", schema="sales")
    check([c["name"] for c in columns] == ["order_id", "line_no", "product_id", "quantity", "unit_price"], f"{user}: order_items columns: {columns}")
    types = {c["name"]: c["type"] for c in columns}
    check(isinstance(types["order_id"], sqlalchemy.BigInteger) and isinstance(types["line_no"], sqlalchemy.Integer), f"{user}: types: {types}")
    check(isinstance(types["unit_price"], sqlalchemy.Numeric) and (types["unit_price"].precision, types["unit_price"].scale) == (10, 2), f"{user}: unit_price: {types['unit_price']!r}")
    check(not any(c["nullable"] for c in columns if c["name"] in ("order_id", "product_id")), f"{user}: required columns: {columns}")
    key = inspector.get_pk_constraint("order_items", schema="sales")
    check(key["constrained_columns"] == ["order_id", "line_no"], f"{user}: order_items key: {key}")
    check(inspector.get_foreign_keys("order_items", schema="sales") == [], f"{user}: foreign keys")
    check(inspector.get_indexes("order_items", schema="sales") == [], f"{user}: indexes")
    campaigns = [c["name"] for c in inspector.get_columns("campaign_performance", schema="marketing")]
    check("clicks" in campaigns and (("attributed_revenue" in campaigns) == (user != "guest")), f"{user}: campaign columns: {campaigns}")
    if user == "guest":
        for probe in ("customers", "customerz"):
            try:
                inspector.get_columns(probe, schema="customers")
                check(False, f"guest inspected customers.{probe}")
            except sqlalchemy.exc.NoSuchTableError as err:
                check(str(err) == f"customers.{probe}", f"guest: {err}")
    else:
        described = {c["name"]: c.get("comment") for c in inspector.get_columns("customers", schema="customers")}
        check(described.get("customer_id") == "Customer identifier", f"{user}: comments: {described}")
    e.dispose()
check({"customers", "payments"} <= schemas["admin"], f"admin schemas: {schemas['admin']}")
check(not ({"customers", "payments"} & schemas["guest"]), f"guest schemas: {schemas['guest']}")
check("sales" in schemas["guest"], f"guest sees sales: {schemas['guest']}")

frames = {u: pandas.read_sql("SELECT email, region FROM customers.customers ORDER BY customer_id LIMIT 20", engine(u)) for u in ["admin", "analyst", "eu_analyst"]}
check(not frames["admin"]["email"].str.contains(r"\*\*\*").any(), "admin reads emails raw")
check(frames["analyst"]["email"].str.contains(r"\*\*\*@").all(), "analyst reads them masked")
check(set(frames["eu_analyst"]["region"]) == {"EU"}, f"eu_analyst: {set(frames['eu_analyst']['region'])}")
check(set(frames["analyst"]["region"]) != {"EU"}, "the analyst sees other regions")

print(f"PostgreSQL drivers: {checks} checks passed")
