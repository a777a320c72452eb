"""meshql over Flight SQL through flightsql-dbapi's SQLAlchemy dialect (the
one Superset uses for Flight SQL): the inspector lists what each principal
may see, and queries return governed rows.

Usage: python flightsql_dbapi.py HOST PORT
"""

import sys

import sqlalchemy

host, port = sys.argv[1], sys.argv[2]
checks = 0


def check(condition, what):
    global checks
    if not condition:
        raise AssertionError(what)
    checks += 1


def engine(user):
    return sqlalchemy.create_engine(f"datafusion://{user}:{user}-demo@{host}:{port}?insecure=true")


seen = {}
for user in ["admin", "analyst", "guest"]:
    inspector = sqlalchemy.inspect(engine(user))
    schemas = set(inspector.get_schema_names())
    tables = set(inspector.get_table_names(schema="sales"))
    columns = [c["name"] for c in inspector.get_columns("campaign_performance", schema="marketing")]
    seen[user] = (schemas, columns)
    check(tables == {"orders", "order_items"}, f"{user}: sales tables {tables}")
check({"customers", "payments"} <= seen["admin"][0], f"admin schemas {seen['admin'][0]}")
check(not ({"customers", "payments"} & seen["guest"][0]), f"guest schemas {seen['guest'][0]}")
check("attributed_revenue" in seen["analyst"][1], f"analyst columns {seen['analyst'][1]}")
check("attributed_revenue" not in seen["guest"][1], f"guest columns {seen['guest'][1]}")
check("clicks" in seen["guest"][1], f"guest columns {seen['guest'][1]}")

with engine("analyst").connect() as c:
    emails = [r[0] for r in c.execute(sqlalchemy.text("SELECT email FROM customers.customers ORDER BY customer_id LIMIT 5"))]
check(all("***@" in e for e in emails), f"analyst emails masked: {emails}")
with engine("admin").connect() as c:
    raw = [r[0] for r in c.execute(sqlalchemy.text("SELECT email FROM customers.customers ORDER BY customer_id LIMIT 5"))]
check(all("***" not in e for e in raw), f"admin emails raw: {raw}")
with engine("eu_analyst").connect() as c:
    regions = {r[0] for r in c.execute(sqlalchemy.text("SELECT DISTINCT region FROM sales.orders"))}
check(regions == {"EU"}, f"eu_analyst regions {regions}")
hidden = missing = None
with engine("guest").connect() as c:
    for sql in ["SELECT * FROM payments.transactions", "SELECT * FROM payments.refunds"]:
        try:
            c.execute(sqlalchemy.text(sql)).fetchall()
        except Exception as e:  # the driver's own error types
            if hidden is None:
                hidden = str(e).split("\n")[0]
            else:
                missing = str(e).split("\n")[0]
check(hidden is not None and missing is not None, f"errors: {hidden} / {missing}")
check(hidden.replace("transactions", "X") == missing.replace("refunds", "X"), f"{hidden!r} vs {missing!r}")

print(f"flightsql-dbapi: {checks} checks passed")
