"""Creates an Iceberg table through a REST catalog (lakana-server) with
PyIceberg, and prints what PyIceberg reads back as JSON rows (text, NULL for
null).

Usage: python rest_catalog.py URI TOKEN WAREHOUSE_DIR

Creates the storage environment `dev` rooted at WAREHOUSE_DIR, then the table
silver.people with two appends.
"""

import json
import sys

import pyarrow as pa
import requests
from pyiceberg.catalog.rest import RestCatalog
from pyiceberg.schema import Schema
from pyiceberg.types import LongType, NestedField, StringType

uri, token, warehouse = sys.argv[1], sys.argv[2], sys.argv[3]
response = requests.post(
    f"{uri}/api/v1/environments",
    headers={"Authorization": f"Bearer {token}"},
    json={"name": "dev", "storage": {"scheme": "file", "root": f"file://{warehouse}"}},
    timeout=30,
)
response.raise_for_status()
catalog = RestCatalog("lakana", uri=uri, prefix="dev", token=token)
schema = Schema(
    NestedField(1, "id", LongType(), required=True),
    NestedField(2, "name", StringType(), required=False),
)
table = catalog.create_table("silver.people", schema=schema)
arrow_schema = pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("name", pa.string())])
table.append(pa.Table.from_pylist([{"id": 1, "name": "ada"}, {"id": 2, "name": None}], schema=arrow_schema))
table.append(pa.Table.from_pylist([{"id": 3, "name": "cy"}], schema=arrow_schema))
result = catalog.load_table("silver.people").scan().to_arrow().sort_by("id")
print(json.dumps([["NULL" if v is None else str(v) for v in row.values()] for row in result.to_pylist()]))
