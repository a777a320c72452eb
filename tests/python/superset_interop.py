"""Apache Superset against meshql's PostgreSQL endpoint, through Superset's
own REST API (its Flask application, in this process, on a copy of the
metadata database tests/python/setup-superset.sh prepared): the connection
test, a database per principal, its schemas, tables and table metadata
(SQLAlchemy's inspector: columns, primary key, foreign keys, indexes), a
dataset, and a chart's query. Run by the e2e test
`superset_connects_and_charts_as_each_principal`:

    python superset_interop.py HOST PORT TEMPLATE_DIR WORK_DIR
"""

import json
import os
import shutil
import sys
import warnings

host, port, template, work = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
shutil.copy(os.path.join(template, "metadata.db"), os.path.join(work, "metadata.db"))
config = os.path.join(work, "superset_config.py")
with open(config, "w") as f:
    f.write(
        "SECRET_KEY = 'meshql-tests-only-not-a-secret'\n"
        f"SQLALCHEMY_DATABASE_URI = 'sqlite:///{work}/metadata.db'\n"
        "WTF_CSRF_ENABLED = False\n"
        "SQLLAB_CTAS_NO_LIMIT = True\n"
        # No thumbnails, no telemetry, no outside traffic.
        "FEATURE_FLAGS = {'THUMBNAILS': False}\n"
        "ENABLE_PROXY_FIX = False\n"
    )
os.environ["SUPERSET_CONFIG_PATH"] = config
os.environ["SUPERSET_HOME"] = work
warnings.simplefilter("ignore")

from superset.app import create_app  # noqa: E402

app = create_app()
client = app.test_client()
checks = 0


def check(cond, what):
    global checks
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    checks += 1


def call(method, path, body=None, expect=200):
    r = client.open(path, method=method, json=body, headers=auth)
    check(r.status_code == expect, f"{method} {path}: {r.status_code} {r.get_data(as_text=True)[:2000]}")
    return r.get_json()


auth = {}
token = call("POST", "/api/v1/security/login", {"username": "admin", "password": "admin", "provider": "db"})["access_token"]
auth = {"Authorization": f"Bearer {token}"}


def uri(user, password=None):
    return f"postgresql+psycopg2://{user}:{password or user + '-demo'}@{host}:{port}/mesh"


# Superset's connection test: a right password connects, a wrong one is
# refused with the driver's message.
call("POST", "/api/v1/database/test_connection/", {"sqlalchemy_uri": uri("analyst"), "database_name": "t"})
bad = call("POST", "/api/v1/database/test_connection/", {"sqlalchemy_uri": uri("analyst", "nope"), "database_name": "t"}, expect=400)
check(bad["errors"][0]["error_type"] == "CONNECTION_INVALID_PASSWORD_ERROR", f"a wrong password: {bad}")

databases = {}
for user in ["admin", "analyst", "eu_analyst", "guest"]:
    created = call("POST", "/api/v1/database/", {"database_name": f"meshql {user}", "sqlalchemy_uri": uri(user), "expose_in_sqllab": True}, expect=201)
    databases[user] = created["id"]


def schemas(user):
    return set(call("GET", f"/api/v1/database/{databases[user]}/schemas/?q=(force:!t)")["result"])


def tables(user, schema):
    got = call("GET", f"/api/v1/database/{databases[user]}/tables/?q=(force:!t,schema_name:{schema})")
    return {t["value"] for t in got["result"]}


def metadata(user, schema, table, expect=200):
    return call("GET", f"/api/v1/database/{databases[user]}/table_metadata/?name={table}&schema={schema}", expect=expect)


check({"customers", "payments", "sales", "marketing"} <= schemas("admin"), f"admin's schemas: {schemas('admin')}")
check(not ({"customers", "payments"} & schemas("guest")), f"guest's schemas: {schemas('guest')}")
check("sales" in schemas("guest"), f"guest's schemas: {schemas('guest')}")
check(tables("analyst", "sales") == {"orders", "order_items"}, f"analyst's sales tables: {tables('analyst', 'sales')}")

# Table metadata: SQLAlchemy's inspector as Superset calls it.
items = metadata("analyst", "sales", "order_items")
check([c["name"] for c in items["columns"]] == ["order_id", "line_no", "product_id", "quantity", "unit_price"], f"order_items columns: {items['columns']}")
# Superset's JSON conversion answers None for the key's name and columns
# (it converts neither a str nor a list: its own behaviour, the same against
# PostgreSQL), so the key is checked through Superset's own inspector too.
check(set(items["primaryKey"]) == {"constrained_columns", "name"}, f"order_items key: {items['primaryKey']}")
check(items["foreignKeys"] == [] and items["indexes"] == [], f"order_items keys and indexes: {items}")
types = {c["name"]: c["type"] for c in items["columns"]}
check(types["order_id"] == "BIGINT" and types["unit_price"].startswith("NUMERIC"), f"order_items types: {types}")
customers = metadata("analyst", "customers", "customers")
check("email" in [c["name"] for c in customers["columns"]], f"analyst's customers columns: {customers['columns']}")


def inspected(user, schema, table):
    from superset import db
    from superset.models.core import Database

    with app.app_context():
        database = db.session.get(Database, databases[user])
        with database.get_inspector(schema=schema) as inspector:
            return (
                inspector.get_pk_constraint(table, schema),
                inspector.get_foreign_keys(table, schema),
                inspector.get_indexes(table, schema),
            )


key, foreign, indexes = inspected("analyst", "sales", "order_items")
check(key == {"constrained_columns": ["order_id", "line_no"], "name": "order_items_pkey"}, f"order_items key: {key}")
check(foreign == [] and indexes == [], f"order_items: {foreign} {indexes}")
key, _, _ = inspected("analyst", "customers", "customers")
check(key["constrained_columns"] == ["customer_id"], f"customers key: {key}")
admin_campaigns = [c["name"] for c in metadata("admin", "marketing", "campaign_performance")["columns"]]
guest_campaigns = [c["name"] for c in metadata("guest", "marketing", "campaign_performance")["columns"]]
check("attributed_revenue" in admin_campaigns, f"admin's campaign columns: {admin_campaigns}")
check("attributed_revenue" not in guest_campaigns and "clicks" in guest_campaigns, f"guest's campaign columns: {guest_campaigns}")
# A hidden product is as missing as one that does not exist.
hidden = metadata("guest", "customers", "customers", expect=500)
missing = metadata("guest", "customers", "customerz", expect=500)
check(json.dumps(hidden).replace("customers", "X") == json.dumps(missing).replace("customerz", "X").replace("customers", "X"), f"{hidden} vs {missing}")


# A dataset and a chart's query (region by count), as two principals.
# Superset's metadata database keeps one physical dataset per table name:
# the physical one as eu_analyst, SQL ("virtual") ones as each principal.
def dataset(user, physical):
    body = {"database": databases[user], "schema": "customers", "table_name": "customers"}
    if not physical:
        body.update(table_name=f"customers of {user}", sql="SELECT * FROM customers.customers")
    return call("POST", "/api/v1/dataset/", body, expect=201)["id"]


def regions(dataset):
    query = {
        "datasource": {"id": dataset, "type": "table"},
        "queries": [{"columns": ["region"], "metrics": ["count"], "orderby": [["count", False]], "row_limit": 100}],
        "result_format": "json",
        "result_type": "full",
        "force": True,
    }
    got = call("POST", "/api/v1/chart/data", query)
    rows = got["result"][0]["data"]
    return {r["region"]: r["count"] for r in rows}


eu = regions(dataset("eu_analyst", physical=True))
check(set(eu) == {"EU"} and eu["EU"] > 0, f"eu_analyst's chart: {eu}")
check(regions(dataset("eu_analyst", physical=False)) == eu, "eu_analyst's chart over SQL")
everyone = regions(dataset("analyst", physical=False))
check(len(everyone) > 1 and everyone["EU"] == eu["EU"], f"analyst's chart: {everyone}")

print(f"Superset: {checks} checks passed")
