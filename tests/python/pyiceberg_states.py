"""Writes an Iceberg table with PyIceberg into a SQLite SQL catalog, one
state at a time, and prints what PyIceberg itself reads afterwards, so that
meshql's reading of the same table can be compared with it.

Usage: python pyiceberg_states.py DIR STEP

DIR holds the catalog (catalog.db) and the warehouse (warehouse/). STEP:
  create    table shop.events (id, name, amount, day, qty int) partitioned by
            day(day), with a first append
  append    a second append (a second data file)
  add       adds the column `note` and appends rows that have it
  rename    renames `amount` to `price`
  overwrite replaces the rows of one day
  delete    deletes the rows with id 2 or 7
  widen     widens `qty` from int to long and appends a row beyond int

Prints one JSON object: {"columns": [...], "rows": [[...], ...]}, rows sorted
by id, every value as text (NULL for null), plus "snapshot": the current
snapshot id and
"committed_ms" its commit time.
"""

import datetime
import json
import os
import sys

import pyarrow as pa
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.expressions import EqualTo
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import DayTransform
from pyiceberg.types import DateType, DoubleType, IntegerType, LongType, NestedField, StringType

directory, step = sys.argv[1], sys.argv[2]
# With MESHQL_S3_ENDPOINT (and _BUCKET, _KEY, _SECRET), the warehouse is in
# that bucket of an S3-compatible server; the catalog stays in DIR.
endpoint = os.environ.get("MESHQL_S3_ENDPOINT")
if endpoint:
    catalog = SqlCatalog(
        "pylake",
        uri=f"sqlite:///{directory}/catalog.db",
        warehouse=f"s3://{os.environ['MESHQL_S3_BUCKET']}/warehouse",
        **{
            "s3.endpoint": endpoint,
            "s3.access-key-id": os.environ["MESHQL_S3_KEY"],
            "s3.secret-access-key": os.environ["MESHQL_S3_SECRET"],
            "s3.region": "us-east-1",
        },
    )
else:
    # With MESHQL_CATALOG_URI (a SQLAlchemy URL such as
    # postgresql+psycopg2://user@127.0.0.1:5432/db), the catalog is in that
    # database instead of DIR/catalog.db.
    catalog = SqlCatalog(
        "pylake",
        uri=os.environ.get("MESHQL_CATALOG_URI") or f"sqlite:///{directory}/catalog.db",
        warehouse=f"file://{directory}/warehouse",
    )


def day(d):
    return datetime.date(2026, 3, d)


def batch(rows, note=False):
    fields = [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("name", pa.string()),
        pa.field("amount" if step in ("create", "append", "add") else "price", pa.float64()),
        pa.field("day", pa.date32()),
        pa.field("qty", pa.int64() if step == "widen" else pa.int32()),
    ]
    if note:
        fields.append(pa.field("note", pa.string()))
    columns = list(zip(*rows))
    return pa.Table.from_arrays([pa.array(c, type=f.type) for c, f in zip(columns, fields)], schema=pa.schema(fields))


if step == "create":
    catalog.create_namespace("shop")
    schema = Schema(
        NestedField(1, "id", LongType(), required=True),
        NestedField(2, "name", StringType(), required=False),
        NestedField(3, "amount", DoubleType(), required=False),
        NestedField(4, "day", DateType(), required=False),
        NestedField(5, "qty", IntegerType(), required=False),
        identifier_field_ids=[1],
    )
    spec = PartitionSpec(PartitionField(source_id=4, field_id=1000, transform=DayTransform(), name="day_day"))
    table = catalog.create_table("shop.events", schema=schema, partition_spec=spec)
    table.append(batch([(1, "ada", 10.5, day(1), 1), (2, "bob", 20.25, day(1), 2), (3, "cy", None, day(2), None)]))
else:
    table = catalog.load_table("shop.events")
    if step == "append":
        table.append(batch([(4, "dee", 4.0, day(2), 4), (5, None, 5.5, day(3), 5)]))
    elif step == "add":
        with table.update_schema() as update:
            update.add_column("note", StringType())
        table.append(batch([(6, "eve", 6.75, day(3), 6, "first with a note"), (7, "fay", 7.0, day(4), 7, None)], note=True))
    elif step == "rename":
        with table.update_schema() as update:
            update.rename_column("amount", "price")
    elif step == "overwrite":
        table.overwrite(
            batch([(8, "gus", 80.0, day(2), 8, "replaced day 2"), (9, "hal", 90.0, day(2), 9, None)], note=True),
            overwrite_filter=EqualTo("day", day(2)),
        )
    elif step == "delete":
        table.delete("id = 2 or id = 7")
    elif step == "widen":
        with table.update_schema() as update:
            update.update_column("qty", LongType())
        table.append(batch([(10, "ivy", 1.0, day(5), 5_000_000_000, None)], note=True))
    else:
        sys.exit(f"unknown step {step}")
    table = catalog.load_table("shop.events")

result = table.scan().to_arrow().sort_by("id")


def text(v):
    if v is None:
        return "NULL"
    return str(v)


print(
    json.dumps(
        {
            "columns": result.column_names,
            "rows": [[text(v) for v in row.values()] for row in result.to_pylist()],
            "snapshot": table.metadata.current_snapshot_id,
            "committed_ms": table.current_snapshot().timestamp_ms,
            "metadata_location": table.metadata_location,
        }
    )
)
