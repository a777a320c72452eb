//! Iceberg data products: tables other engines write, read exactly as
//! those engines read them, through the same catalog.

use std::path::Path;

use meshql::Mesh;

use crate::util::*;

/// What PyIceberg reads after a step: rows sorted by id, every value as
/// text; the current snapshot and its commit time.
struct State {
    rows: Vec<Vec<String>>,
    snapshot: i64,
    committed_ms: i64,
    metadata_location: String,
}

/// Runs one step of `tests/python/pyiceberg_states.py` on the table in
/// `dir` and returns what PyIceberg reads afterwards.
fn pyiceberg(dir: &Path, step: &str) -> State {
    pyiceberg_with(dir, step, &[])
}

/// [`pyiceberg`] with environment variables (the S3 settings).
fn pyiceberg_with(dir: &Path, step: &str, env: &[(&str, &str)]) -> State {
    let stdout = run_ok(
        std::process::Command::new(python_peers())
            .arg(root().join("tests/python/pyiceberg_states.py"))
            .arg(dir)
            .arg(step)
            .envs(env.iter().copied()),
        &format!("PyIceberg step `{step}`"),
    );
    let state: serde_json::Value = serde_json::from_slice(&stdout).expect("json");
    State {
        rows: state["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| {
                r.as_array()
                    .expect("row")
                    .iter()
                    .map(|v| v.as_str().expect("text").to_string())
                    .collect()
            })
            .collect(),
        snapshot: state["snapshot"].as_i64().expect("snapshot"),
        committed_ms: state["committed_ms"].as_i64().expect("commit time"),
        metadata_location: state["metadata_location"]
            .as_str()
            .expect("metadata location")
            .to_string(),
    }
}

/// A mesh over PyIceberg's SQLite catalog in `dir`, with the product
/// `shop.events` declaring `columns`.
fn mesh(dir: &Path, columns: &[(&str, &str)]) -> Mesh {
    mesh_over(
        dir,
        &format!("sqlite:{}/catalog.db", dir.display()),
        columns,
    )
}

/// [`mesh`] over the SQL catalog at `uri`.
fn mesh_over(dir: &Path, uri: &str, columns: &[(&str, &str)]) -> Mesh {
    let mesh_dir = dir.join("mesh");
    write(
        &mesh_dir,
        "mesh.yaml",
        &format!(
            "apiVersion: meshql/v1\nkind: Mesh\nname: t\nstorage:\n  wh:\n    type: local\n    root: {dir}/warehouse\ncatalogs:\n  pylake:\n    type: sql\n    uri: {uri}\n    storage: wh\n",
            dir = dir.display()
        ),
    );
    allow_all(&mesh_dir);
    let mut cols = String::new();
    for (name, ty) in columns {
        cols.push_str(&format!(
            "      - name: {name}\n        physicalType: {ty}\n"
        ));
    }
    write(
        &mesh_dir,
        "shop/events.yaml",
        &format!(
            "apiVersion: v3.1.0\nkind: DataContract\nid: shop.events\nname: events\nversion: 1.0.0\nstatus: active\ndomain: shop\nteam:\n  name: shop-team\nschema:\n  - name: events\n    properties:\n{cols}servers:\n  - server: pylake\n    type: iceberg\n    schema: shop\n    table: events\n"
        ),
    );
    Mesh::open_strict(&mesh_dir).expect("mesh opens")
}

async fn read(mesh: &Mesh, sql: &str) -> Vec<Vec<String>> {
    rows(&mesh.session(admin()).collect(sql).await.expect(sql))
}

// `qty` is an Iceberg int until the last step widens it to long; the
// contracts declare bigint throughout.
const V1: &[(&str, &str)] = &[
    ("id", "bigint"),
    ("name", "varchar"),
    ("amount", "double"),
    ("day", "date"),
    ("qty", "bigint"),
];
const V2: &[(&str, &str)] = &[
    ("id", "bigint"),
    ("name", "varchar"),
    ("amount", "double"),
    ("day", "date"),
    ("qty", "bigint"),
    ("note", "varchar"),
];
const V3: &[(&str, &str)] = &[
    ("id", "bigint"),
    ("name", "varchar"),
    ("price", "double"),
    ("day", "date"),
    ("qty", "bigint"),
    ("note", "varchar"),
];

#[tokio::test]
async fn every_state_pyiceberg_writes_reads_as_pyiceberg_reads_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let all = "SELECT * FROM shop.events ORDER BY id";

    // Two appends, into a table partitioned by day.
    let created = pyiceberg(dir, "create");
    let expected = created.rows.clone();
    assert_eq!(expected.len(), 3);
    assert_eq!(read(&mesh(dir, V1), all).await, expected);
    let appended = pyiceberg(dir, "append");
    let expected = appended.rows.clone();
    assert_eq!(expected.len(), 5);
    let v1 = mesh(dir, V1);
    assert_eq!(read(&v1, all).await, expected);

    // An added column: the old contract still reads (the new column is not
    // published); the new one sees NULL in the rows written before it.
    let expected = pyiceberg(dir, "add").rows;
    let without_note: Vec<Vec<String>> = expected.iter().map(|r| r[..5].to_vec()).collect();
    assert_eq!(read(&v1, all).await, without_note);
    assert_eq!(read(&mesh(dir, V2), all).await, expected);
    assert!(expected.iter().any(|r| r[5] == "first with a note"));

    // A renamed column is read by field id from files written under the
    // old name; the contract that still says `amount` fails naming the drift.
    let expected = pyiceberg(dir, "rename").rows;
    let v2 = mesh(dir, V2);
    let err = v2
        .session(admin())
        .collect(all)
        .await
        .expect_err("the contract has drifted from the table");
    let msg = err.to_string();
    assert!(msg.contains("shop.events"), "{msg}");
    assert!(
        msg.contains("column `amount` is declared in the contract but missing from the data"),
        "{msg}"
    );
    let v3 = mesh(dir, V3);
    assert_eq!(read(&v3, all).await, expected);
    assert_eq!(
        read(&v3, "SELECT sum(price) FROM shop.events WHERE id <= 2").await,
        vec![vec!["30.75".to_string()]]
    );

    // An overwrite of one day's partition, then a delete.
    let expected = pyiceberg(dir, "overwrite").rows;
    assert_eq!(read(&v3, all).await, expected);
    assert!(expected.iter().all(|r| r[0] != "3" && r[0] != "4"));
    let deleted = pyiceberg(dir, "delete");
    let expected = deleted.rows.clone();
    assert_eq!(read(&v3, all).await, expected);
    // Freshness: the current snapshot's commit time.
    let updated = v3
        .session(admin())
        .last_updated("shop.events")
        .await
        .expect("freshness")
        .expect("committed");
    assert_eq!(
        updated
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis() as i64,
        deleted.committed_ms
    );
    assert!(expected.iter().all(|r| r[0] != "2" && r[0] != "7"));

    // Time travel: the table as of the second append, by snapshot id and
    // by a time between that commit and the next, read with today's
    // contract: by field id, `amount` (renamed since) under its new name
    // `price`, `note` (added since) NULL.
    let then: Vec<Vec<String>> = appended
        .rows
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r.push("NULL".to_string());
            r
        })
        .collect();
    let back = format!(
        "SELECT * FROM shop.events FOR VERSION AS OF {} ORDER BY id",
        appended.snapshot
    );
    assert_eq!(read(&v3, &back).await, then);
    let back = format!(
        "SELECT * FROM shop.events FOR TIMESTAMP AS OF TIMESTAMP '{}' ORDER BY id",
        rfc3339_ms(appended.committed_ms)
    );
    assert_eq!(read(&v3, &back).await, then);
    assert_eq!(
        read(
            &v3,
            &format!(
                "SELECT sum(price) FROM shop.events FOR VERSION AS OF {} WHERE id <= 2",
                appended.snapshot
            )
        )
        .await,
        vec![vec!["30.75".to_string()]],
        "the renamed column's past values, under its new name"
    );
    let before = format!(
        "SELECT count(*) FROM shop.events FOR SYSTEM_TIME AS OF '{}'",
        rfc3339_ms(created.committed_ms - 60_000)
    );
    let err = v1
        .session(admin())
        .collect(&before)
        .await
        .expect_err("nothing was committed then");
    assert!(err.to_string().contains("has no snapshot as of"), "{err}");
    let err = v1
        .session(admin())
        .collect("SELECT * FROM shop.events FOR VERSION AS OF 12345")
        .await
        .expect_err("no such snapshot");
    assert!(err.to_string().contains("no snapshot 12345"), "{err}");

    // Metadata tables, named as Trino names them.
    let snapshots = read(
        &v3,
        "SELECT snapshot_id, operation FROM shop.\"events$snapshots\" ORDER BY committed_at",
    )
    .await;
    let history = read(
        &v3,
        "SELECT snapshot_id FROM shop.\"events$history\" ORDER BY made_current_at",
    )
    .await;
    assert_eq!(snapshots.len(), history.len());
    assert!(snapshots.len() >= 5, "{snapshots:?}");
    assert_eq!(
        history.last().expect("history")[0],
        deleted.snapshot.to_string()
    );
    assert_eq!(
        snapshots[0],
        vec![created.snapshot.to_string(), "append".to_string()]
    );
    let files = read(
        &v3,
        "SELECT sum(record_count), count(*), min(file_format) FROM shop.\"events$files\"",
    )
    .await;
    assert_eq!(files[0][0], expected.len().to_string());
    assert_eq!(files[0][2], "parquet");
    let manifests = read(&v3, "SELECT count(*) FROM shop.\"events$manifests\"").await;
    assert_ne!(manifests[0][0], "0");
    let err = v3
        .session(admin())
        .collect("SELECT * FROM shop.\"events$partitions\"")
        .await
        .expect_err("unknown metadata table");
    assert!(
        err.to_string()
            .contains("$snapshots, $history, $manifests, $files"),
        "{err}"
    );

    // Filters and projections read the same rows PyIceberg has.
    let march_2: Vec<Vec<String>> = expected
        .iter()
        .filter(|r| r[3] == "2026-03-02")
        .map(|r| vec![r[0].clone(), r[2].clone()])
        .collect();
    assert_eq!(
        read(
            &v3,
            "SELECT id, price FROM shop.events WHERE day = DATE '2026-03-02' ORDER BY id"
        )
        .await,
        march_2
    );

    // A widened type: `qty` from int to long, with a value beyond int.
    let widened = pyiceberg(dir, "widen").rows;
    assert!(widened.iter().any(|r| r[4] == "5000000000"));
    assert_eq!(read(&v3, all).await, widened);
    let narrow: Vec<(&str, &str)> = V3
        .iter()
        .map(|&(n, t)| if n == "qty" { (n, "int") } else { (n, t) })
        .collect();
    let err = mesh(dir, &narrow)
        .session(admin())
        .collect(all)
        .await
        .expect_err("the contract is narrower than the table");
    assert!(
        err.to_string()
            .contains("column `qty`: the contract declares int, the data has bigint"),
        "{err}"
    );
}

#[tokio::test]
async fn the_demo_orders_are_an_iceberg_table_partitioned_by_day() {
    let mesh = demo_mesh();
    let session = mesh.session(admin());
    // The same orders as the Parquet landing files they were loaded from.
    let iceberg = session
        .collect("SELECT count(*), sum(total_order_value), min(order_ts), max(order_ts) FROM sales.orders")
        .await
        .expect("iceberg");
    let ctx = datafusion::prelude::SessionContext::new();
    ctx.register_parquet(
        "landing",
        demo_data().join("sales/orders/").to_string_lossy().as_ref(),
        datafusion::prelude::ParquetReadOptions::default(),
    )
    .await
    .expect("landing files");
    let landing = ctx
        .sql("SELECT count(*), sum(total_order_value), min(order_ts), max(order_ts) FROM landing")
        .await
        .expect("plans")
        .collect()
        .await
        .expect("landing files");
    assert_eq!(rows(&iceberg), rows(&landing));
    // One data file per day of order_date.
    let files = std::fs::read_dir(demo_data().join("lakehouse/sales/orders/data"))
        .expect("the table's data directory")
        .count();
    let days = rows(
        &session
            .collect("SELECT count(DISTINCT order_date) FROM sales.orders")
            .await
            .expect("days"),
    );
    assert_eq!(files.to_string(), days[0][0]);
}

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM:SS.mmm` (UTC).
fn rfc3339_ms(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64);
    let text = meshql::audit::rfc3339(t);
    // rfc3339 gives `...T..:..:..(.fff)Z`; keep what the clause reads.
    text.trim_end_matches('Z').replace('T', " ")
}

#[tokio::test]
async fn time_travel_is_governed_like_the_current_table() {
    let mesh = demo_mesh();
    let eu = mesh.session(mesh.principal("eu_analyst").expect("eu_analyst"));
    let now = "SELECT DISTINCT region FROM sales.orders ORDER BY region";
    let then = "SELECT DISTINCT region FROM sales.orders FOR TIMESTAMP AS OF TIMESTAMP '2100-01-01 00:00:00' ORDER BY region";
    let regions = rows(&eu.collect(then).await.expect("time travel"));
    assert_eq!(regions, vec![vec!["EU".to_string()]]);
    assert_eq!(rows(&eu.collect(now).await.expect("current")), regions);
    // Masks apply too: the analyst sees the same masked values either way.
    let analyst = mesh.session(mesh.principal("analyst").expect("analyst"));
    let q = "SELECT * FROM sales.orders FOR VERSION AS OF 'main' ORDER BY order_id LIMIT 5";
    let current = "SELECT * FROM sales.orders ORDER BY order_id LIMIT 5";
    assert_eq!(
        rows(&analyst.collect(q).await.expect("by branch")),
        rows(&analyst.collect(current).await.expect("current"))
    );
    // Parquet products have no versions.
    let err = analyst
        .collect("SELECT * FROM catalog.products FOR VERSION AS OF 1")
        .await
        .expect_err("parquet");
    assert!(err.to_string().contains("stored as Parquet files"), "{err}");
}

/// A metric of the Iceberg scan in an `EXPLAIN ANALYZE` of `sql`.
async fn scan_metric(session: &meshql::Session, sql: &str, metric: &str) -> u64 {
    let plan = rows(
        &session
            .collect(&format!("EXPLAIN ANALYZE {sql}"))
            .await
            .expect("explain analyze"),
    );
    let text: String = plan
        .iter()
        .map(|r| r.join(" "))
        .collect::<Vec<_>>()
        .join("\n");
    let line = text
        .lines()
        .find(|l| l.contains("IcebergScan:"))
        .unwrap_or_else(|| panic!("no Iceberg scan in\n{text}"));
    let key = format!("{metric}=");
    let at = line
        .find(&key)
        .unwrap_or_else(|| panic!("no {metric} in {line}"));
    // Values are shown for people: `7`, `33.20 K`, `1.5 M`.
    let value: String = line[at + key.len()..]
        .chars()
        .take_while(|c| *c != ',' && *c != ']')
        .collect();
    let mut parts = value.split_whitespace();
    let number: f64 = parts
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{metric} is not a number in {line}"));
    let scale = match parts.next() {
        None | Some("B") => 1.0,
        Some("K") | Some("KB") => 1e3,
        Some("M") | Some("MB") => 1e6,
        Some("G") | Some("GB") => 1e9,
        Some(unit) => panic!("unknown unit {unit} in {line}"),
    };
    (number * scale).round() as u64
}

#[tokio::test]
async fn a_query_by_date_reads_only_the_files_of_that_date() {
    let mesh = demo_mesh();
    let session = mesh.session(admin());
    let days: u64 = rows(
        &session
            .collect("SELECT count(DISTINCT order_date) FROM sales.orders")
            .await
            .expect("days"),
    )[0][0]
        .parse()
        .expect("number");
    assert!(days > 600, "{days}");
    let all = scan_metric(
        &session,
        "SELECT count(*) FROM sales.orders",
        "files_scanned",
    )
    .await;
    assert_eq!(all, days);
    // One day: the partition filter leaves its one file.
    let one_day = "SELECT count(*) FROM sales.orders WHERE order_date = DATE '2026-03-01'";
    assert_eq!(scan_metric(&session, one_day, "files_scanned").await, 1);
    // A week, through a range on the partition source column.
    let week = "SELECT count(*) FROM sales.orders WHERE order_date >= DATE '2026-03-01' AND order_date < DATE '2026-03-08'";
    assert_eq!(scan_metric(&session, week, "files_scanned").await, 7);
    let sum = "SELECT sum(total_order_value) FROM sales.orders";
    let full_bytes = scan_metric(&session, sum, "bytes_scanned").await;
    let week_bytes = scan_metric(
        &session,
        &format!("{sum} WHERE order_date >= DATE '2026-03-01' AND order_date < DATE '2026-03-08'"),
        "bytes_scanned",
    )
    .await;
    assert!(week_bytes * 20 < full_bytes, "{week_bytes} of {full_bytes}");
    // And the pruned scan still answers exactly.
    let ctx = datafusion::prelude::SessionContext::new();
    ctx.register_parquet(
        "landing",
        demo_data().join("sales/orders/").to_string_lossy().as_ref(),
        datafusion::prelude::ParquetReadOptions::default(),
    )
    .await
    .expect("landing files");
    let expected = ctx
        .sql("SELECT count(*) FROM landing WHERE order_date >= DATE '2026-03-01' AND order_date < DATE '2026-03-08'")
        .await
        .expect("plans")
        .collect()
        .await
        .expect("runs");
    assert_eq!(
        rows(&session.collect(week).await.expect("week")),
        rows(&expected)
    );
}

/// A scan over hundreds of files reports each metric once per partition:
/// the Parquet reader's per-file metrics summed, and the rows delivered
/// counted once (not by the scan and its reader both). Listed per file,
/// `EXPLAIN ANALYZE VERBOSE` of the demo orders was a line of 4 MB, more
/// than a gRPC client takes in one message.
#[tokio::test]
async fn an_iceberg_scan_reports_each_metric_once_per_partition() {
    let mesh = demo_mesh();
    let session = mesh.session(admin());
    let sql = "SELECT count(DISTINCT status) FROM sales.orders";
    let count = |sql: &'static str| {
        let session = &session;
        async move {
            rows(&session.collect(sql).await.expect("count"))[0][0]
                .parse::<u64>()
                .expect("number")
        }
    };
    let orders = count("SELECT count(*) FROM sales.orders").await;
    let files = count("SELECT count(*) FROM sales.\"orders$files\"").await;
    assert!(files > 600, "{files}");
    assert_eq!(scan_metric(&session, sql, "output_rows").await, orders);
    assert_eq!(scan_metric(&session, sql, "files_scanned").await, files);
    let plan = rows(
        &session
            .collect(&format!("EXPLAIN ANALYZE VERBOSE {sql}"))
            .await
            .expect("explain analyze verbose"),
    );
    let full = plan
        .iter()
        .find(|r| r[0] == "Plan with Full Metrics")
        .unwrap_or_else(|| panic!("no full metrics in {plan:?}"));
    let scan = full[1]
        .lines()
        .find(|l| l.contains("IcebergScan:"))
        .expect("the scan's line");
    assert!(!scan.contains("filename="), "{scan}");
    assert!(scan.len() < 16 * 1024, "{} bytes: {scan}", scan.len());
    let metrics = &scan[scan.find("metrics=[").expect("metrics") + 9..];
    let mut seen = std::collections::HashSet::new();
    for metric in metrics.split(", ").filter(|m| m.contains("{partition=")) {
        let key = metric.split_once('}').map_or(metric, |(k, _)| k);
        assert!(seen.insert(key.to_string()), "{key} twice in {scan}");
    }
    assert!(seen.contains("output_rows{partition=0"), "{scan}");
}

#[tokio::test]
async fn metadata_tables_follow_the_principals_access() {
    let mesh = demo_mesh();
    let admin = mesh.session(mesh.principal("admin").expect("admin"));
    let files = rows(
        &admin
            .collect("SELECT partition, record_count FROM sales.\"orders$files\" ORDER BY file_path LIMIT 1")
            .await
            .expect("admin reads the files"),
    );
    assert_ne!(files[0][0], "NULL", "{files:?}");
    // A principal whose reading is filtered by row sees no metadata.
    let eu = mesh.session(mesh.principal("eu_analyst").expect("eu_analyst"));
    let err = eu
        .collect("SELECT count(*) FROM sales.\"orders$snapshots\"")
        .await
        .expect_err("row-filtered");
    assert!(err.to_string().contains("filtered by row"), "{err}");
    // A principal who cannot see the product cannot see its metadata, with
    // the same error as for a product that does not exist.
    let guest = mesh.session(meshql::Principal::new("nobody"));
    assert!(guest.policy("sales.orders").is_none());
    let hidden = guest
        .collect("SELECT count(*) FROM sales.\"orders$snapshots\"")
        .await
        .expect_err("hidden");
    let missing = guest
        .collect("SELECT count(*) FROM sales.\"nothing$snapshots\"")
        .await
        .expect_err("missing");
    assert_eq!(
        hidden.to_string().replace("orders$snapshots", "X"),
        missing.to_string().replace("nothing$snapshots", "X")
    );
}

/// PyIceberg writes into a bucket of an S3-compatible server on 127.0.0.1;
/// meshql reads the table through the SQL catalog and through its metadata
/// file, with the storage's endpoint and credentials from mesh.yaml.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iceberg_tables_on_s3_read_as_pyiceberg_reads_them() {
    use crate::s3::{ACCESS_KEY, SECRET_KEY};
    let server = crate::s3::start("lake").await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_path_buf();
    let endpoint = server.endpoint.clone();
    let write = move |step: &'static str| {
        let (dir, endpoint) = (dir.clone(), endpoint.clone());
        tokio::task::spawn_blocking(move || {
            pyiceberg_with(
                &dir,
                step,
                &[
                    ("MESHQL_S3_ENDPOINT", &endpoint),
                    ("MESHQL_S3_BUCKET", "lake"),
                    ("MESHQL_S3_KEY", ACCESS_KEY),
                    ("MESHQL_S3_SECRET", SECRET_KEY),
                ],
            )
        })
    };
    write("create").await.expect("create");
    let state = write("append").await.expect("append");
    assert!(
        state.metadata_location.starts_with("s3://lake/warehouse/"),
        "{}",
        state.metadata_location
    );

    let mesh_dir = tmp.path().join("mesh");
    let storage = |secret: &str| {
        format!(
            "apiVersion: meshql/v1\nkind: Mesh\nname: t\nstorage:\n  lake:\n    type: s3\n    bucket: lake\n    endpoint: {}\n    region: us-east-1\n    pathStyle: true\n    accessKeyId: {ACCESS_KEY}\n    secretAccessKey: {secret}\n    connectTimeoutSeconds: 2\n    maxRetries: 0\ncatalogs:\n  pylake:\n    type: sql\n    uri: sqlite:{}/catalog.db\n    storage: lake\n    warehouse: warehouse\n",
            server.endpoint,
            tmp.path().display()
        )
    };
    write_mesh(&mesh_dir, &storage(SECRET_KEY), &state.metadata_location);
    let mesh = Mesh::open_strict(&mesh_dir).expect("mesh opens");
    let all = "SELECT * FROM shop.events ORDER BY id";
    assert_eq!(read(&mesh, all).await, state.rows);
    assert_eq!(
        read(&mesh, "SELECT * FROM shop.pinned ORDER BY id").await,
        state.rows
    );
    // A commit through the catalog is seen by the next query; the metadata
    // file names a fixed state.
    let later = write("add").await.expect("add");
    let without_note: Vec<Vec<String>> = later.rows.iter().map(|r| r[..5].to_vec()).collect();
    assert_eq!(read(&mesh, all).await, without_note);
    assert_eq!(
        read(&mesh, "SELECT * FROM shop.pinned ORDER BY id").await,
        state.rows
    );

    // A corrupt data file, then a missing one: errors name the product and
    // the file.
    let files = read(
        &mesh,
        "SELECT file_path FROM shop.\"events$files\" ORDER BY file_path",
    )
    .await;
    let victim = files[0][0].clone();
    let client = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name("lake")
        .with_endpoint(&server.endpoint)
        .with_region("us-east-1")
        .with_allow_http(true)
        .with_access_key_id(ACCESS_KEY)
        .with_secret_access_key(SECRET_KEY)
        .build()
        .expect("client");
    let key =
        object_store::path::Path::from(victim.strip_prefix("s3://lake/").expect("in the bucket"));
    use object_store::ObjectStoreExt;
    client
        .put(
            &key,
            bytes::Bytes::from_static(b"this is not parquet").into(),
        )
        .await
        .expect("overwrite");
    let err = mesh
        .session(admin())
        .collect(all)
        .await
        .expect_err("corrupt");
    let msg = err.to_string();
    assert!(
        msg.starts_with("data product shop.events: cannot read ") && msg.contains(&victim),
        "{msg}"
    );
    client.delete(&key).await.expect("delete");
    let err = mesh
        .session(admin())
        .collect(all)
        .await
        .expect_err("missing");
    let msg = err.to_string();
    assert!(
        msg.starts_with("data product shop.events: cannot read ") && msg.contains(&victim),
        "{msg}"
    );

    // The endpoint down: a clear error naming the product, in bounded time.
    let down = storage(SECRET_KEY).replace(&server.endpoint, "http://127.0.0.1:1");
    write_mesh(&mesh_dir, &down, &state.metadata_location);
    let mesh = Mesh::open_strict(&mesh_dir).expect("mesh opens");
    let started = std::time::Instant::now();
    let err = mesh
        .session(admin())
        .collect("SELECT * FROM shop.pinned")
        .await
        .expect_err("unreachable");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert!(
        err.to_string().starts_with("data product shop.pinned: "),
        "{err}"
    );

    // Wrong credentials: an error naming the product, without the secret.
    write_mesh(
        &mesh_dir,
        &storage("not-the-secret"),
        &state.metadata_location,
    );
    let mesh = Mesh::open_strict(&mesh_dir).expect("mesh opens");
    let err = mesh
        .session(admin())
        .collect(all)
        .await
        .expect_err("denied");
    let msg = err.to_string();
    assert!(msg.contains("shop.events"), "{msg}");
    assert!(!msg.contains("not-the-secret"), "{msg}");
}

/// The S3 mesh: `shop.events` through the catalog, `shop.pinned` by the
/// metadata file at `metadata`.
fn write_mesh(dir: &Path, mesh_yaml: &str, metadata: &str) {
    write(dir, "mesh.yaml", mesh_yaml);
    allow_all(dir);
    let mut cols = String::new();
    for (name, ty) in V1 {
        cols.push_str(&format!(
            "      - name: {name}\n        physicalType: {ty}\n"
        ));
    }
    let key = metadata.strip_prefix("s3://lake/").expect("in the bucket");
    for (product, server) in [
        (
            "events",
            "  - server: pylake\n    type: iceberg\n    schema: shop\n    table: events\n"
                .to_string(),
        ),
        (
            "pinned",
            format!("  - server: lake\n    type: iceberg\n    path: {key}\n"),
        ),
    ] {
        write(
            dir,
            &format!("shop/{product}.yaml"),
            &format!(
                "apiVersion: v3.1.0\nkind: DataContract\nid: shop.{product}\nname: {product}\nversion: 1.0.0\nstatus: active\ndomain: shop\nteam:\n  name: shop-team\nschema:\n  - name: {product}\n    properties:\n{cols}servers:\n{server}"
            ),
        );
    }
}

/// DuckDB's iceberg extension reads the demo's `sales.orders`, written by
/// iceberg-rust, and answers as meshql does.
#[tokio::test]
async fn duckdb_reads_the_demo_orders_as_meshql_does() {
    let mesh = demo_mesh();
    let session = mesh.session(admin());
    let metadata_dir = demo_data().join("lakehouse/sales/orders/metadata");
    let mut metadata: Vec<_> = std::fs::read_dir(&metadata_dir)
        .expect("metadata directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".metadata.json"))
        .collect();
    metadata.sort();
    let current = metadata.last().expect("a metadata file");
    for (duck, mine) in [
        (
            "SELECT count(*), sum(total_order_value), min(order_date), max(order_date) FROM t",
            "SELECT count(*), sum(total_order_value), min(order_date), max(order_date) FROM sales.orders",
        ),
        (
            "SELECT region, count(*), sum(total_order_value) FROM t GROUP BY region ORDER BY region",
            "SELECT region, count(*), sum(total_order_value) FROM sales.orders GROUP BY region ORDER BY region",
        ),
        (
            "SELECT status, count(*) FROM t WHERE order_date BETWEEN DATE '2026-03-01' AND DATE '2026-03-31' GROUP BY status ORDER BY status",
            "SELECT status, count(*) FROM sales.orders WHERE order_date BETWEEN DATE '2026-03-01' AND DATE '2026-03-31' GROUP BY status ORDER BY status",
        ),
        (
            "SELECT order_id, customer_id, currency, order_date FROM t ORDER BY order_id LIMIT 5",
            "SELECT order_id, customer_id, currency, order_date FROM sales.orders ORDER BY order_id LIMIT 5",
        ),
    ] {
        let stdout = run_ok(
            std::process::Command::new(python_peers())
                .arg(root().join("tests/python/duckdb_iceberg.py"))
                .arg(current)
                .arg(duck),
            "DuckDB",
        );
        let expected: Vec<Vec<String>> = serde_json::from_slice(&stdout).expect("json");
        assert!(!expected.is_empty());
        let got = rows(&session.collect(mine).await.expect(mine));
        assert_eq!(got, expected, "{mine}");
    }
}

/// A running lakana-server: an Iceberg REST catalog on 127.0.0.1.
struct RestCatalogServer {
    child: std::process::Child,
    uri: String,
    token: String,
}

impl Drop for RestCatalogServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `lakana-server` program: `MESHQL_TEST_LAKANA`, or the venv
/// `tests/python/setup-lakana.sh` installs from PyPI on first use.
fn lakana() -> String {
    match std::env::var("MESHQL_TEST_LAKANA") {
        Ok(p) if !p.is_empty() => p,
        _ => {
            let stdout = run_ok(
                &mut std::process::Command::new(root().join("tests/python/setup-lakana.sh")),
                "installing lakana-server",
            );
            String::from_utf8(stdout).expect("path").trim().to_string()
        }
    }
}

fn start_rest_catalog(dir: &Path) -> RestCatalogServer {
    let program = lakana();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("addr")
        .port();
    let token_file = dir.join("token");
    let env = [
        (
            "LAKANA_DATABASE__URL",
            format!("sqlite:///{}", dir.join("lakana.db").display()),
        ),
        (
            "LAKANA_BOOTSTRAP_TOKEN_FILE",
            token_file.display().to_string(),
        ),
        ("LAKANA_PORT", port.to_string()),
        ("LAKANA_HOST", "127.0.0.1".to_string()),
    ];
    run_ok(
        std::process::Command::new(&program)
            .arg("migrate")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str()))),
        "lakana-server migrate",
    );
    let child = std::process::Command::new(&program)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starts lakana-server");
    let mut server = RestCatalogServer {
        child,
        uri: format!("http://127.0.0.1:{port}"),
        token: String::new(),
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let up = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        if let (true, Ok(token)) = (up, std::fs::read_to_string(&token_file)) {
            server.token = token.trim().to_string();
            return server;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "lakana-server did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Starts a REST catalog server (lakana-server) in `dir` and runs the
/// Python writer `script` against it (arguments: the server's URI, its
/// token, the warehouse directory); returns the server, the warehouse and
/// what the script printed.
async fn rest_catalog_written_by(
    dir: &Path,
    script: &str,
) -> (RestCatalogServer, std::path::PathBuf, Vec<u8>) {
    let warehouse = dir.join("warehouse");
    std::fs::create_dir_all(&warehouse).expect("warehouse");
    let server = tokio::task::spawn_blocking({
        let dir = dir.to_path_buf();
        move || start_rest_catalog(&dir)
    })
    .await
    .expect("lakana-server");
    let stdout = run_ok(
        std::process::Command::new(python_peers())
            .arg(root().join("tests/python").join(script))
            .arg(&server.uri)
            .arg(&server.token)
            .arg(&warehouse),
        script,
    );
    (server, warehouse, stdout)
}

/// A mesh.yaml with the REST catalog `lakana` at `uri` (prefix `dev`).
fn rest_mesh_yaml(warehouse: &Path, uri: &str, token: &str) -> String {
    format!(
        "apiVersion: meshql/v1\nkind: Mesh\nname: t\nstorage:\n  wh:\n    type: local\n    root: {}\ncatalogs:\n  lakana:\n    type: rest\n    uri: {uri}\n    prefix: dev\n    token: {token}\n",
        warehouse.display()
    )
}

/// A table PyIceberg creates through a REST catalog server (lakana-server)
/// reads the same through meshql's `rest` catalog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rest_catalog_table_reads_as_pyiceberg_reads_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (server, warehouse, stdout) = rest_catalog_written_by(tmp.path(), "rest_catalog.py").await;
    let dir = tmp.path().to_path_buf();
    let expected: Vec<Vec<String>> = serde_json::from_slice(&stdout).expect("json");
    assert_eq!(expected.len(), 3);

    let mesh_dir = dir.join("mesh");
    let mesh_yaml = |token: &str| rest_mesh_yaml(&warehouse, &server.uri, token);
    write(&mesh_dir, "mesh.yaml", &mesh_yaml(&server.token));
    allow_all(&mesh_dir);
    write(
        &mesh_dir,
        "hr/people.yaml",
        "apiVersion: v3.1.0\nkind: DataContract\nid: hr.people\nname: people\nversion: 1.0.0\nstatus: active\ndomain: hr\nteam:\n  name: hr-team\nschema:\n  - name: people\n    properties:\n      - name: id\n        physicalType: bigint\n      - name: name\n        physicalType: varchar\nservers:\n  - server: lakana\n    type: iceberg\n    schema: silver\n    table: people\n",
    );
    let mesh = Mesh::open_strict(&mesh_dir).expect("mesh opens");
    assert_eq!(
        read(&mesh, "SELECT * FROM hr.people ORDER BY id").await,
        expected
    );
    let snapshots = read(&mesh, "SELECT count(*) FROM hr.\"people$snapshots\"").await;
    assert_eq!(snapshots, vec![vec!["2".to_string()]]);

    // A wrong token: the product fails with an error naming it, and the
    // token stays out of it.
    write(&mesh_dir, "mesh.yaml", &mesh_yaml("lakana_pat_not_a_token"));
    let mesh = Mesh::open_strict(&mesh_dir).expect("mesh opens");
    let err = mesh
        .session(admin())
        .collect("SELECT * FROM hr.people")
        .await
        .expect_err("unauthorized");
    let msg = err.to_string();
    assert!(msg.starts_with("data product hr.people: "), "{msg}");
    assert!(!msg.contains("lakana_pat_not_a_token"), "{msg}");
}

/// A merge-on-read table: PyIceberg appends, DuckDB deletes and updates
/// rows by writing position delete files, all committed through a REST
/// catalog (lakana-server). meshql reads every state exactly as PyIceberg
/// reads it, deletes applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn position_deletes_written_by_duckdb_read_as_pyiceberg_reads_them() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (server, warehouse, stdout) =
        rest_catalog_written_by(tmp.path(), "duckdb_deletes.py").await;
    let dir = tmp.path().to_path_buf();
    struct State {
        snapshot: i64,
        delete_files: Vec<serde_json::Value>,
        rows: Vec<Vec<String>>,
    }
    let json: Vec<serde_json::Value> = serde_json::from_slice(&stdout).expect("json");
    let states: Vec<State> = json
        .into_iter()
        .map(|s| State {
            snapshot: s["snapshot"].as_i64().expect("snapshot id"),
            delete_files: s["delete_files"].as_array().cloned().unwrap_or_default(),
            rows: serde_json::from_value(s["rows"].clone()).expect("rows"),
        })
        .collect();
    assert_eq!(states.len(), 3);
    assert!(states[0].delete_files.is_empty());
    assert!(
        !states[1].delete_files.is_empty(),
        "DuckDB wrote no delete files"
    );
    assert_eq!(states[0].rows.len(), 300);
    assert_eq!(states[1].rows.len(), 260);

    let mesh_dir = dir.join("mesh");
    write(
        &mesh_dir,
        "mesh.yaml",
        &rest_mesh_yaml(&warehouse, &server.uri, &server.token),
    );
    allow_all(&mesh_dir);
    write(
        &mesh_dir,
        "hr/scores.yaml",
        "apiVersion: v3.1.0\nkind: DataContract\nid: hr.scores\nname: scores\nversion: 1.0.0\nstatus: active\ndomain: hr\nteam:\n  name: hr-team\nschema:\n  - name: scores\n    properties:\n      - name: id\n        physicalType: bigint\n      - name: name\n        physicalType: varchar\n      - name: score\n        physicalType: double\nservers:\n  - server: lakana\n    type: iceberg\n    schema: silver\n    table: scores\n",
    );
    let mesh = Mesh::open_strict(&mesh_dir).expect("mesh opens");
    for state in &states {
        let sql = format!(
            "SELECT * FROM hr.scores FOR VERSION AS OF {} ORDER BY id",
            state.snapshot
        );
        assert_eq!(read(&mesh, &sql).await, state.rows, "{sql}");
    }
    let last = states.last().expect("a state");
    assert_eq!(
        read(&mesh, "SELECT * FROM hr.scores ORDER BY id").await,
        last.rows
    );
    // A filter and an aggregate over the deleted rows.
    let expected: Vec<&Vec<String>> = last
        .rows
        .iter()
        .filter(|r| r[0].parse::<i64>().expect("id") > 240)
        .collect();
    let got = read(
        &mesh,
        "SELECT count(*), count(name), min(id), max(id) FROM hr.scores WHERE id > 240",
    )
    .await;
    assert_eq!(
        got,
        vec![vec![
            expected.len().to_string(),
            expected
                .iter()
                .filter(|r| r[1] != "NULL")
                .count()
                .to_string(),
            expected[0][0].clone(),
            expected[expected.len() - 1][0].clone(),
        ]]
    );
    // The plan says which files carry deletes.
    let plan = read(&mesh, "EXPLAIN SELECT * FROM hr.scores").await;
    let text = plan
        .iter()
        .map(|r| r.join(" "))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(text.contains("files_with_deletes="), "{text}");

    // On workers: a file with deletes travels as its scan task and a
    // worker reads it through iceberg-rust, deletes applied, with the same
    // answers for every state.
    use crate::cluster::{SECRET, Worker};
    let w1 = Worker::start_on(&mesh_dir, Some(SECRET));
    let w2 = Worker::start_on(&mesh_dir, Some(SECRET));
    let distributed = Mesh::open_strict(&mesh_dir).expect("mesh opens");
    crate::cluster::on_workers(&distributed, &[&w1, &w2]);
    for state in &states {
        let sql = format!(
            "SELECT * FROM hr.scores FOR VERSION AS OF {} ORDER BY id",
            state.snapshot
        );
        assert_eq!(
            read(&distributed, &sql).await,
            state.rows,
            "{sql} on workers"
        );
    }
    let aggregate = "SELECT count(*), count(name), min(id), max(id) FROM hr.scores WHERE id > 240";
    assert_eq!(read(&distributed, aggregate).await, got);
    let plan = read(&distributed, &format!("EXPLAIN {aggregate}"))
        .await
        .iter()
        .map(|r| r.join(" "))
        .collect::<Vec<_>>()
        .join("\n");
    let staged = plan
        .lines()
        .skip_while(|l| !l.contains("[Stage 1]"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(plan.contains("DistributedExec"), "{plan}");
    assert!(staged.contains("files_with_deletes="), "{plan}");
    assert!(w1.tasks() + w2.tasks() > 0, "no worker ran a task");
}

/// A PostgreSQL server of the test's own on 127.0.0.1, in `dir/pg`.
struct Postgres {
    child: std::process::Child,
    data: std::path::PathBuf,
    port: u16,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // The postmaster's pid is the first line of postmaster.pid; the
        // child may be `runuser`, which does not pass signals on.
        if let Some(pid) = std::fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()
            .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<i32>().ok()))
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGQUIT,
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The directory of PostgreSQL's server programs (`initdb`, `postgres`):
/// Debian's, which `.ci/run` installs.
fn postgres_bin() -> std::path::PathBuf {
    let mut found: Vec<std::path::PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    found.pop().expect(
        "no PostgreSQL server under /usr/lib/postgresql: .ci/run installs Debian's `postgresql`",
    )
}

/// Runs a PostgreSQL program as the `postgres` user when the tests run as
/// root (PostgreSQL refuses root), directly otherwise.
fn as_postgres(program: &Path) -> std::process::Command {
    if nix::unistd::Uid::effective().is_root() {
        let mut c = std::process::Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        std::process::Command::new(program)
    }
}

fn start_postgres(dir: &Path) -> Postgres {
    use std::os::unix::fs::PermissionsExt;
    let bin = postgres_bin();
    let data = dir.join("pg");
    std::fs::create_dir_all(&data).expect("pg dir");
    if nix::unistd::Uid::effective().is_root() {
        // The server runs as `postgres`: it must reach and own its directory.
        let user = nix::unistd::User::from_name("postgres")
            .expect("users")
            .expect("a postgres user");
        std::os::unix::fs::chown(&data, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
            .expect("chown");
        let mut dir = Some(dir);
        while let Some(d) = dir {
            if d == Path::new("/") {
                break;
            }
            let mut perms = std::fs::metadata(d).expect("meta").permissions();
            perms.set_mode(perms.mode() | 0o011);
            let _ = std::fs::set_permissions(d, perms);
            dir = d.parent();
        }
    }
    run_ok(
        as_postgres(&bin.join("initdb")).arg("-D").arg(&data).args([
            "-A",
            "trust",
            "-U",
            "meshql",
            "-E",
            "UTF8",
            "--no-sync",
        ]),
        "initdb",
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("addr")
        .port();
    let child = as_postgres(&bin.join("postgres"))
        .arg("-D")
        .arg(&data)
        .arg("-k")
        .arg(&data)
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-F"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starts postgres");
    let server = Postgres { child, data, port };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "postgres did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    server
}

/// PostgreSQL as the SQL catalog: PyIceberg writes its tables there and
/// meshql reads them through the same catalog tables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_sql_catalog_reads_as_pyiceberg_writes_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_path_buf();
    let pg = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || start_postgres(&dir)
    })
    .await
    .expect("postgres");
    let sqlalchemy = format!(
        "postgresql+psycopg2://meshql@127.0.0.1:{}/postgres",
        pg.port
    );
    let env = [("MESHQL_CATALOG_URI", sqlalchemy.as_str())];
    let uri = format!("postgres://meshql@127.0.0.1:{}/postgres", pg.port);
    let all = "SELECT * FROM shop.events ORDER BY id";
    let created = pyiceberg_with(&dir, "create", &env);
    assert_eq!(created.rows.len(), 3);
    assert_eq!(read(&mesh_over(&dir, &uri, V1), all).await, created.rows);
    let appended = pyiceberg_with(&dir, "append", &env);
    pyiceberg_with(&dir, "add", &env);
    let renamed = pyiceberg_with(&dir, "rename", &env);
    let v3 = mesh_over(&dir, &uri, V3);
    assert_eq!(read(&v3, all).await, renamed.rows);
    let back = format!(
        "SELECT * FROM shop.events FOR VERSION AS OF {} ORDER BY id",
        appended.snapshot
    );
    // Read with today's contract, by field id: `note`, added since, is NULL.
    let then: Vec<Vec<String>> = appended
        .rows
        .iter()
        .map(|r| r.iter().cloned().chain(["NULL".to_string()]).collect())
        .collect();
    assert_eq!(read(&v3, &back).await, then);
    // No SQLite catalog was involved.
    assert!(!dir.join("catalog.db").exists());
}
