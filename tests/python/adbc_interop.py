"""meshql through a real third-party driver: the ADBC Flight SQL driver.

Usage: python adbc_interop.py MESHQL_BINARY MESH_DIR

Starts `meshql serve` on 127.0.0.1 (a free port), connects with basic auth
as each demo principal, and checks queries, a parameterised prepared
statement, catalog browsing (adbc_get_objects, adbc_get_table_schema) and
adbc_get_info, and that masks and row filters hold over the wire.
"""

import re
import signal
import subprocess
import sys

import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_manager

binary, mesh = sys.argv[1], sys.argv[2]
server = subprocess.Popen(
    [binary, "--mesh", mesh, "serve", "--addr", "127.0.0.1:0"],
    stdout=subprocess.PIPE,
    text=True,
)
checks = 0


def check(condition, what):
    global checks
    if not condition:
        raise AssertionError(what)
    checks += 1


def connect(user, password=None):
    return flightsql.connect(
        uri,
        db_kwargs={"username": user, "password": password or f"{user}-demo"},
        autocommit=True,
    )


try:
    line = server.stdout.readline()
    match = re.search(r"grpc://(127\.0\.0\.1:\d+)", line)
    check(match is not None, f"meshql serve announced its address: {line!r}")
    uri = f"grpc://{match.group(1)}"

    # Plain queries and masks, as the analyst.
    with connect("analyst") as conn, conn.cursor() as cur:
        cur.execute("SELECT customer_id, email FROM customers.customers ORDER BY customer_id LIMIT 25")
        rows = cur.fetchall()
        check(len(rows) == 25, "25 customers")
        check(all("***@" in email for _, email in rows), f"emails masked: {rows[:3]}")

        # A parameterised prepared statement, against the same query inlined.
        cur.execute("SELECT count(*) FROM sales.orders WHERE region = ? AND order_id < ?", ("EU", 110000))
        bound = cur.fetchone()[0]
        cur.execute("SELECT count(*) FROM sales.orders WHERE region = 'EU' AND order_id < 110000")
        inline = cur.fetchone()[0]
        check(bound == inline and bound > 0, f"bound {bound} == inline {inline}")

        # Arrow all the way: types survive.
        cur.execute("SELECT order_id, order_ts, total_order_value FROM sales.orders LIMIT 3")
        table = cur.fetch_arrow_table()
        types = {f.name: str(f.type) for f in table.schema}
        check(types["order_id"] == "int64", f"order_id type {types}")
        check(types["order_ts"].startswith("timestamp"), f"order_ts type {types}")
        check(types["total_order_value"].startswith("decimal"), f"total_order_value type {types}")

        # Catalog browsing as BI tools do it.
        objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
        catalogs = [c["catalog_name"] for c in objects]
        check(catalogs == ["mesh"], f"catalogs {catalogs}")
        domains = {s["db_schema_name"]: s for s in objects[0]["catalog_db_schemas"]}
        check({"sales", "customers", "payments"} <= set(domains), f"domains {sorted(domains)}")
        tables = {t["table_name"]: t for t in domains["customers"]["db_schema_tables"]}
        check("customers" in tables, f"customers tables {sorted(tables)}")
        columns = [c["column_name"] for c in tables["customers"]["table_columns"]]
        check("email" in columns and "customer_id" in columns, f"columns {columns}")
        schema = conn.adbc_get_table_schema("orders", catalog_filter="mesh", db_schema_filter="sales")
        check("order_id" in schema.names, f"orders schema {schema.names}")

        info = conn.adbc_get_info()
        check(info.get("vendor_name") == "meshql", f"vendor_name {info.get('vendor_name')}")
        check(bool(info.get("vendor_version")), f"vendor_version {info.get('vendor_version')}")

    # Row filters: the EU analyst sees EU rows only.
    with connect("eu_analyst") as conn, conn.cursor() as cur:
        cur.execute("SELECT DISTINCT region FROM sales.orders")
        check([r[0] for r in cur.fetchall()] == ["EU"], "eu_analyst sees EU only")
        cur.execute("SELECT count(*) FROM sales.orders WHERE region = ?", ("NA",))
        check(cur.fetchone()[0] == 0, "no NA rows, even through a parameter")

    # Finance: amounts raw, card numbers masked.
    with connect("finance") as conn, conn.cursor() as cur:
        cur.execute("SELECT card_number FROM payments.transactions LIMIT 20")
        cards = [r[0] for r in cur.fetchall()]
        check(all(c[:-4].strip("*") == "" and c[-4:].isdigit() for c in cards), f"cards {cards[:3]}")

    # The admin sees raw values.
    with connect("admin") as conn, conn.cursor() as cur:
        cur.execute("SELECT email FROM customers.customers LIMIT 5")
        check(all("***" not in r[0] and "@" in r[0] for r in cur.fetchall()), "admin sees raw emails")

    # Guest: payments and customers do not exist, in queries or in browsing.
    with connect("guest") as conn, conn.cursor() as cur:
        try:
            cur.execute("SELECT * FROM payments.transactions")
            check(False, "guest read payments.transactions")
        except adbc_driver_manager.Error as e:
            check("does not exist" in str(e), f"guest error: {e}")
        objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
        domains = [s["db_schema_name"] for s in objects[0]["catalog_db_schemas"]]
        check("payments" not in domains and "customers" not in domains, f"guest domains {domains}")

    # The schema GetFlightInfo announces is the one DoGet streams, or the
    # driver fails with "inconsistent schema": computed columns and aliased
    # scalar subqueries included.
    with connect("analyst") as conn, conn.cursor() as cur:
        for sql in [
            "SELECT length(repeat('x', 3)) AS n",
            "SELECT cardinality(make_array(1, 2, 3)) AS n",
            "SELECT (SELECT max(order_id) FROM sales.orders) AS newest",
            "SELECT (SELECT order_id FROM sales.orders WHERE order_id < 0) AS none",
            "SELECT o.order_id, (SELECT count(*) FROM sales.order_items i WHERE i.order_id = o.order_id) AS lines FROM sales.orders o ORDER BY o.order_id LIMIT 3",
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT n FROM r ORDER BY n",
        ]:
            cur.execute(sql)
            table = cur.fetch_arrow_table()
            check(table.num_columns >= 1, f"{sql}: {table}")

        # Plans show the boundary, never the raw side's statistics.
        cur.execute("SELECT min(full_name) FROM customers.customers")
        with connect("admin") as admin_conn, admin_conn.cursor() as admin_cur:
            admin_cur.execute("SELECT min(full_name), max(phone) FROM customers.customers")
            raw = [v for v in admin_cur.fetchone() if v]
            admin_cur.execute("EXPLAIN VERBOSE SELECT * FROM customers.customers")
            seen = "\n".join(r[1] for r in admin_cur.fetchall())
            check(any(v in seen for v in raw), "admin's EXPLAIN VERBOSE has the statistics")
        cur.execute("EXPLAIN VERBOSE SELECT * FROM customers.customers")
        shown = "\n".join(r[1] for r in cur.fetchall())
        check("MeshPolicy" in shown, f"the boundary is shown: {shown}")
        check(not any(v in shown for v in raw), f"no raw extreme in the analyst's plan: {shown}")

    # Keyed functions are not callable; statements too large to plan are
    # refused; the server goes on.
    with connect("guest") as conn, conn.cursor() as cur:
        try:
            cur.execute("SELECT hash_pseudonym(1)")
            check(False, "guest called hash_pseudonym")
        except adbc_driver_manager.Error as e:
            check("hash_pseudonym" in str(e), f"hash_pseudonym error: {e}")
        try:
            cur.execute("SELECT 1 WHERE " + " OR ".join(f"{i} = 0" for i in range(20000)))
            check(False, "a 20,000-term OR was planned")
        except adbc_driver_manager.Error as e:
            check("operators" in str(e), f"20,000 terms: {e}")
        cur.execute("SELECT 1")
        check(cur.fetchone()[0] == 1, "the server answers after a refused statement")

    # A current domain: the connection's db_schema (Flight's
    # SetSessionOptions and GetSessionOptions) and USE, each connection
    # with its own, governed as every name is.
    def fails(cur, sql):
        try:
            cur.execute(sql)
            cur.fetchall()
        except adbc_driver_manager.Error as e:
            return str(e)
        return None

    def count(cur, sql):
        cur.execute(sql)
        return cur.fetchone()[0]

    with connect("analyst") as conn, conn.cursor() as cur:
        unqualified = fails(cur, "SELECT count(*) FROM orders")
        check(unqualified is not None and "does not exist" in unqualified, f"no current domain: {unqualified}")
        conn.adbc_current_db_schema = "sales"
        check(conn.adbc_current_db_schema == "sales", f"db_schema reads back: {conn.adbc_current_db_schema!r}")
        all_orders = count(cur, "SELECT count(*) FROM sales.orders")
        check(count(cur, "SELECT count(*) FROM orders") == all_orders, "orders resolves in sales")
        # A prepared statement resolves the same way.
        cur.execute("SELECT count(*) FROM orders WHERE region = ?", ("EU",))
        eu_orders = cur.fetchone()[0]
        check(0 < eu_orders < all_orders, f"a prepared statement in the domain: {eu_orders} of {all_orders}")
        with connect("analyst") as other, other.cursor() as other_cur:
            theirs = fails(other_cur, "SELECT count(*) FROM orders")
            check(theirs is not None, "another connection of the same user has no current domain")
        cur.execute("USE customers")
        cur.fetchall()
        check(conn.adbc_current_db_schema == "customers", f"USE changes db_schema: {conn.adbc_current_db_schema!r}")
        cur.execute("SELECT email FROM customers ORDER BY customer_id LIMIT 3")
        emails = [r[0] for r in cur.fetchall()]
        check(all("***@" in e for e in emails), f"masked in the current domain: {emails}")
        refused = fails(cur, "SET datafusion.execution.batch_size = 1")
        check(refused is not None and "not allowed" in refused, f"other settings stay refused: {refused}")

    with connect("eu_analyst") as conn, conn.cursor() as cur:
        conn.adbc_current_db_schema = "sales"
        check(count(cur, "SELECT count(*) FROM orders") == eu_orders, "the row filter holds in the current domain")

    # A hidden domain is one that does not exist.
    with connect("guest") as conn, conn.cursor() as cur:
        errors = []
        for domain in ["payments", "nosuch"]:
            try:
                conn.adbc_current_db_schema = domain
                errors.append(None)
            except adbc_driver_manager.Error as e:
                errors.append(type(e).__name__)
        check(errors[0] is not None and errors[0] == errors[1], f"guest: payments as nosuch: {errors}")
        hidden = fails(cur, "USE payments")
        missing = fails(cur, "USE nosuch")
        check(hidden is not None and hidden.replace("payments", "X") == missing.replace("nosuch", "X"), f"{hidden!r} vs {missing!r}")

    # Wrong password.
    try:
        with connect("analyst", "wrong") as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
        check(False, "a wrong password was accepted")
    except adbc_driver_manager.Error as e:
        check("invalid user name or password" in str(e) or "Unauthenticated" in str(e), f"auth error: {e}")
finally:
    server.send_signal(signal.SIGTERM)
    try:
        code = server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        raise

check(code == 0, f"meshql serve exits 0 on SIGTERM, got {code}")
print(f"ADBC Flight SQL interoperability: {checks} checks passed")
