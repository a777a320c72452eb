"""Writes a merge-on-read Iceberg table through a REST catalog
(lakana-server): PyIceberg creates and appends, DuckDB's iceberg extension
deletes and updates rows, which it writes as position delete files. Prints,
as JSON, every state: the snapshot id, the delete files of the current
snapshot, and the rows PyIceberg reads (text, NULL for null), sorted by id.

Usage: python duckdb_deletes.py URI TOKEN WAREHOUSE_DIR

DuckDB asks the catalog for a prefix in /v1/config and commits through the
multi-table endpoint /v1/{prefix}/transactions/commit; lakana-server 0.20
gives no prefix and takes commits per table. A small relay on 127.0.0.1
between the two adds the prefix and hands a one-table transaction to the
per-table endpoint, unchanged.
"""

import glob
import http.server
import json
import os
import sys
import threading
import urllib.error
import urllib.request

import duckdb
import duckdb_extension_avro
import duckdb_extension_httpfs
import duckdb_extension_iceberg
import pyarrow as pa
import requests
from pyiceberg.catalog.rest import RestCatalog
from pyiceberg.schema import Schema
from pyiceberg.types import DoubleType, LongType, NestedField, StringType

uri, token, warehouse = sys.argv[1], sys.argv[2], sys.argv[3]
PREFIX = "dev"


class Relay(http.server.BaseHTTPRequestHandler):
    def forward(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        path, one_table = self.path, False
        if self.command == "POST" and path.endswith("/transactions/commit"):
            changes = json.loads(body)["table-changes"]
            if len(changes) != 1:
                self.send_error(400, "the relay commits one table per transaction")
                return
            change = changes[0]
            ident = change["identifier"]
            namespace = "\x1f".join(ident["namespace"])
            path = path[: -len("transactions/commit")] + f"namespaces/{namespace}/tables/{ident['name']}"
            body, one_table = json.dumps(change).encode(), True
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        request = urllib.request.Request(uri + path, data=body, method=self.command, headers=headers)
        try:
            with urllib.request.urlopen(request) as response:
                code, data = response.status, response.read()
        except urllib.error.HTTPError as e:
            code, data = e.code, e.read()
        if one_table and code == 200:
            code, data = 204, b""
        if self.path.startswith("/v1/config") and code == 200:
            config = json.loads(data)
            config.setdefault("overrides", {})["prefix"] = PREFIX
            data = json.dumps(config).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = do_HEAD = forward

    def log_message(self, *args):
        pass


relay = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Relay)
threading.Thread(target=relay.serve_forever, daemon=True).start()
relay_uri = f"http://127.0.0.1:{relay.server_address[1]}"

requests.post(
    f"{uri}/api/v1/environments",
    headers={"Authorization": f"Bearer {token}"},
    json={"name": PREFIX, "storage": {"scheme": "file", "root": f"file://{warehouse}"}},
    timeout=30,
).raise_for_status()
catalog = RestCatalog("lakana", uri=uri, prefix=PREFIX, token=token)
schema = Schema(
    NestedField(1, "id", LongType(), required=True),
    NestedField(2, "name", StringType(), required=False),
    NestedField(3, "score", DoubleType(), required=False),
)
table = catalog.create_table(
    "silver.scores",
    schema=schema,
    properties={"format-version": "2", "write.delete.mode": "merge-on-read", "write.update.mode": "merge-on-read"},
)
arrow_schema = pa.schema(
    [pa.field("id", pa.int64(), nullable=False), pa.field("name", pa.string()), pa.field("score", pa.float64())]
)
table.append(
    pa.Table.from_pylist(
        [{"id": i, "name": f"p{i}", "score": i * 1.5} for i in range(1, 201)], schema=arrow_schema
    )
)
table.append(
    pa.Table.from_pylist(
        [{"id": i, "name": None if i % 7 == 0 else f"p{i}", "score": i * 0.5} for i in range(201, 301)],
        schema=arrow_schema,
    )
)

con = duckdb.connect(config={"autoinstall_known_extensions": False})
for module in (duckdb_extension_avro, duckdb_extension_httpfs, duckdb_extension_iceberg):
    (path,) = glob.glob(os.path.join(os.path.dirname(module.__file__), "extensions", "*", "*.duckdb_extension"))
    con.execute(f"INSTALL '{path}'")
con.execute("LOAD avro; LOAD httpfs; LOAD iceberg;")
con.execute(f"CREATE SECRET lakana (TYPE iceberg, TOKEN '{token}')")
con.execute(f"ATTACH '{PREFIX}' AS lake (TYPE iceberg, ENDPOINT '{relay_uri}', SECRET lakana)")


def state():
    current = catalog.load_table("silver.scores")
    deletes = sorted({d.file_path for task in current.scan().plan_files() for d in task.delete_files})
    rows = current.scan().to_arrow().sort_by("id").to_pylist()
    return {
        "snapshot": current.current_snapshot().snapshot_id,
        "delete_files": deletes,
        "rows": [["NULL" if v is None else str(v) for v in row.values()] for row in rows],
    }


states = [state()]
# Deletes in both data files, then an update (a delete and an insert).
con.execute("DELETE FROM lake.silver.scores WHERE id % 10 = 3 OR id BETWEEN 250 AND 260")
states.append(state())
con.execute("UPDATE lake.silver.scores SET score = -1.0, name = 'updated' WHERE id IN (5, 6, 299)")
states.append(state())
print(json.dumps(states))
