//! Iceberg against plain Parquet on the same data, in three sections:
//!
//! - `tpch`: the 22 TPC-H queries over the eight TPC-H tables loaded into
//!   Iceberg (from the generated Parquet) and over the Parquet files
//!   themselves, medians of alternated runs after a warm-up, results
//!   checked equal;
//! - `demo`: the demo mesh's `sales.orders` as its Iceberg table (one file
//!   per day) and as its Parquet landing files (one per month);
//! - `files`: planning a query over an Iceberg table of 1,000 data files,
//!   against a directory of the same 1,000 Parquet files.
//!
//! `cargo bench -p meshql-bench --bench iceberg -- [tpch|demo|files] [--scale S]
//! [--runs N]`; without a section all three run. Data is generated into
//! `$CARGO_TARGET_DIR/bench-data/` on the first run and kept.

use meshql_bench::compare::{is_ordered, same_results};
use meshql_bench::measure::{geomean, median, ms};
use meshql_bench::{common, tpch_data};

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use meshql::Mesh;
use meshql::manifest::Catalog;

const DEMO_SCALE: u32 = 50;

/// Runs `a` and `b` one after the other `runs` times; their medians.
async fn alternate(
    session: &meshql::Session,
    a: &str,
    b: &str,
    runs: usize,
) -> (Duration, Duration) {
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let t = Instant::now();
        session.collect(a).await.expect(a);
        ta.push(t.elapsed());
        let t = Instant::now();
        session.collect(b).await.expect(b);
        tb.push(t.elapsed());
    }
    (median(ta), median(tb))
}

struct Args {
    sections: Vec<String>,
    scale: f64,
    runs: usize,
}

fn args() -> Args {
    let mut out = Args {
        sections: Vec::new(),
        scale: 1.0,
        runs: 5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--scale" => out.scale = it.next().and_then(|s| s.parse().ok()).expect("--scale N"),
            "--runs" => out.runs = it.next().and_then(|s| s.parse().ok()).expect("--runs N"),
            "--bench" => {}
            s if !s.starts_with('-') => out.sections.push(s.to_string()),
            _ => {}
        }
    }
    if out.sections.is_empty() {
        out.sections = vec!["tpch".into(), "demo".into(), "files".into()];
    }
    out
}

fn main() {
    let args = args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for section in &args.sections {
        match section.as_str() {
            "tpch" => tpch(&runtime, args.scale, args.runs),
            "demo" => demo(&runtime, args.runs.max(9)),
            "files" => files(&runtime),
            other => panic!("unknown section {other}: tpch, demo or files"),
        }
    }
}

fn tpch(runtime: &tokio::runtime::Runtime, scale: f64, runs: usize) {
    let data = tpch_data::ensure(scale);
    let mesh_dir = tempfile::tempdir().expect("tempdir");
    tpch_data::write_mesh(mesh_dir.path(), &data, true);
    let mesh = Mesh::open_strict(mesh_dir.path()).expect("tpch mesh");
    runtime.block_on(async {
        let session = mesh.session(mesh.principal("admin").expect("admin"));
        println!(
            "\nTPC-H at scale {scale}: Iceberg tables against the Parquet files they were loaded from (admin, medians of {runs} alternated runs after one warm-up)\n"
        );
        println!("| query | Iceberg | Parquet | Iceberg / Parquet |");
        println!("| --- | --- | --- | --- |");
        let mut ratios = Vec::new();
        for n in 1..=22 {
            let iceberg = tpch_data::query(n, "tpch_iceberg");
            let parquet = tpch_data::query(n, "tpch");
            // The warm-up run also checks that both answer the same.
            let a = session.collect(&iceberg).await.expect("iceberg");
            let b = session.collect(&parquet).await.expect("parquet");
            if let Err(e) = same_results(&a, &b, is_ordered(&parquet)) {
                panic!("Q{n} differs: {e}");
            }
            let (i, p) = alternate(&session, &iceberg, &parquet, runs).await;
            let ratio = i.as_secs_f64() / p.as_secs_f64();
            ratios.push(ratio);
            println!("| Q{n} | {:.1} ms | {:.1} ms | {ratio:.3} |", ms(i), ms(p));
        }
        println!("| geometric mean | | | {:.3} |", geomean(&ratios));
    });
}

fn demo(runtime: &tokio::runtime::Runtime, runs: usize) {
    const QUERIES: &[(&str, &str)] = &[
        (
            "full scan, two aggregates",
            "SELECT count(*), sum(total_order_value) FROM sales.{t}",
        ),
        (
            "group by region",
            "SELECT region, count(*), sum(total_order_value) FROM sales.{t} GROUP BY region",
        ),
        (
            "one week by order_date",
            "SELECT status, count(*) FROM sales.{t} WHERE order_date >= DATE '2026-03-01' AND order_date < DATE '2026-03-08' GROUP BY status",
        ),
        (
            "all columns, sorted top 100",
            "SELECT * FROM sales.{t} ORDER BY total_order_value DESC LIMIT 100",
        ),
    ];
    let (mesh_dir, data) = common::demo_mesh_at_scale(DEMO_SCALE);
    // The same orders as a Parquet product over the landing files.
    let orders =
        std::fs::read_to_string(mesh_dir.path().join("sales/orders.yaml")).expect("orders");
    let parquet = orders
        .replace(
            "id: urn:meshql:demo:sales:orders",
            "id: urn:meshql:bench:sales:orders_parquet",
        )
        .replace("  - name: orders\n", "  - name: orders_parquet\n")
        .replace(
            "  - server: lakehouse\n    type: iceberg\n    schema: sales\n    table: orders\n",
            "  - server: demo\n    type: local\n    format: parquet\n    path: sales/orders\n",
        );
    assert_ne!(parquet, orders, "the orders contract changed shape");
    std::fs::write(mesh_dir.path().join("sales/orders_parquet.yaml"), parquet).expect("contract");
    let catalog = Catalog::load_strict(mesh_dir.path()).expect("bench mesh");
    eprintln!("demo data at scale {DEMO_SCALE} in {}", data.display());
    meshql::demo::ensure(&catalog).expect("demo data");
    let mesh = Mesh::from_catalog(catalog).expect("mesh");

    runtime.block_on(async {
        let session = mesh.session(mesh.principal("admin").expect("admin"));
        println!(
            "\nIceberg against Parquet, sales.orders at scale {DEMO_SCALE} (admin, medians of {runs} alternated runs)\n"
        );
        println!("| query | Iceberg (638 day files) | Parquet (21 month files) | Iceberg / Parquet |");
        println!("| --- | --- | --- | --- |");
        let mut ratios = Vec::new();
        for (name, sql) in QUERIES {
            let iceberg = sql.replace("{t}", "orders");
            let plain = sql.replace("{t}", "orders_parquet");
            let (a, b) = (
                session.collect(&iceberg).await.expect("iceberg"),
                session.collect(&plain).await.expect("parquet"),
            );
            if !name.contains("top 100")
                && let Err(e) = same_results(&a, &b, false)
            {
                panic!("{name} differs: {e}");
            }
            let (i, p) = alternate(&session, &iceberg, &plain, runs).await;
            let ratio = i.as_secs_f64() / p.as_secs_f64();
            ratios.push(ratio);
            println!("| {name} | {:.1} ms | {:.1} ms | {ratio:.2} |", ms(i), ms(p));
        }
        println!("| geometric mean | | | {:.2} |", geomean(&ratios));
    });
}

const FILES: usize = 1000;
const COMMITS: usize = 10;
const ROWS_PER_FILE: i64 = 100;

/// An Iceberg table of 1,000 data files (ten appends of 100 files, so ten
/// manifests), written through iceberg-rust, and the same files as a
/// Parquet product; the time to plan (not run) a query over each.
fn files(runtime: &tokio::runtime::Runtime) {
    let dir = common::bench_data("iceberg-1000-files");
    let done = dir.join(".loaded");
    if !done.exists() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("warehouse")).expect("mkdir");
        runtime.block_on(write_many_files(&dir));
        std::fs::write(&done, "").expect("marker");
    }
    // The Parquet product reads the same data files.
    let data_files = std::fs::read_dir(dir.join("warehouse/bench/events/data"))
        .expect("data dir")
        .count();
    assert_eq!(data_files, FILES);
    let mesh_dir = tempfile::tempdir().expect("tempdir");
    let write = |rel: &str, text: String| {
        let path = mesh_dir.path().join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    };
    write(
        "mesh.yaml",
        format!(
            "apiVersion: meshql/v1\nkind: Mesh\nname: files\nstorage:\n  local:\n    type: local\n    root: {}\ncatalogs:\n  lake:\n    type: sql\n    uri: sqlite:{}\n    catalogName: files\n    storage: local\n    warehouse: warehouse\n",
            dir.display(),
            dir.join("catalog.db").display()
        ),
    );
    write(
        "policies.yaml",
        "apiVersion: meshql/v1\nkind: Policies\nrules:\n  - name: all\n    access: allow\n".into(),
    );
    let contract = |name: &str, server: &str| {
        format!(
            "apiVersion: v3.1.0\nkind: DataContract\nid: bench.{name}\nname: {name}\nversion: 1.0.0\nstatus: active\ndomain: bench\nteam:\n  name: bench\nschema:\n  - name: {name}\n    properties:\n      - name: id\n        physicalType: bigint\n        required: true\n      - name: bucket\n        physicalType: bigint\n        required: true\n      - name: v\n        physicalType: double\n        required: true\nservers:\n{server}"
        )
    };
    write(
        "bench/events.yaml",
        contract(
            "events",
            "  - server: lake\n    type: iceberg\n    schema: bench\n    table: events\n",
        ),
    );
    write(
        "bench/events_parquet.yaml",
        contract(
            "events_parquet",
            "  - server: local\n    type: local\n    format: parquet\n    path: warehouse/bench/events/data\n",
        ),
    );
    let mesh = Mesh::open_strict(mesh_dir.path()).expect("files mesh");
    runtime.block_on(async {
        let session = mesh.session(meshql::Principal::new("bench"));
        println!(
            "\nPlanning over {FILES} data files ({COMMITS} manifests for Iceberg), medians of 21 (the first plan, which opens the table, not counted)\n"
        );
        println!("| query | Iceberg | Parquet directory |");
        println!("| --- | --- | --- |");
        for (name, sql) in [
            ("every file", "SELECT sum(v) FROM bench.{t}"),
            (
                "one file by metrics (bucket = 417)",
                "SELECT sum(v) FROM bench.{t} WHERE bucket = 417",
            ),
        ] {
            let mut cells = Vec::new();
            for t in ["events", "events_parquet"] {
                let sql = sql.replace("{t}", t);
                let plan = |sql: String| {
                    let session = &session;
                    async move {
                        let t = Instant::now();
                        let df = session.sql(&sql).await.expect("plans");
                        df.create_physical_plan().await.expect("physical plan");
                        t.elapsed()
                    }
                };
                plan(sql.clone()).await;
                let mut times = Vec::new();
                for _ in 0..21 {
                    times.push(plan(sql.clone()).await);
                }
                cells.push(format!("{:.2} ms", ms(median(times))));
                // And it answers.
                let got = session.collect(&sql).await.expect("runs");
                assert_eq!(got.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
            }
            println!("| {name} | {} | {} |", cells[0], cells[1]);
        }
    });
}

async fn write_many_files(dir: &std::path::Path) {
    use std::collections::HashMap;

    use arrow::array::{Float64Array, Int64Array};
    use iceberg::spec::{DataFileFormat, NestedField, PrimitiveType, Schema, Type};
    use iceberg::transaction::{ApplyTransactionAction, Transaction};
    use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
    use iceberg::writer::file_writer::ParquetWriterBuilder;
    use iceberg::writer::file_writer::location_generator::{
        DefaultFileNameGenerator, DefaultLocationGenerator,
    };
    use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
    use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
    use iceberg::{Catalog, NamespaceIdent, TableCreation};

    let catalog =
        tpch_data::sql_catalog("files", &dir.join("catalog.db"), &dir.join("warehouse")).await;
    let ns = NamespaceIdent::new("bench".into());
    catalog
        .create_namespace(&ns, HashMap::new())
        .await
        .expect("namespace");
    let long = || Type::Primitive(PrimitiveType::Long);
    let schema = Schema::builder()
        .with_schema_id(0)
        .with_fields([
            NestedField::required(1, "id", long()).into(),
            NestedField::required(2, "bucket", long()).into(),
            NestedField::required(3, "v", Type::Primitive(PrimitiveType::Double)).into(),
        ])
        .build()
        .expect("schema");
    let creation = TableCreation::builder()
        .name("events".into())
        .location(format!(
            "file://{}",
            dir.join("warehouse/bench/events").display()
        ))
        .schema(schema)
        .build();
    let mut table = catalog.create_table(&ns, creation).await.expect("table");
    let arrow_schema = Arc::new(
        iceberg::arrow::schema_to_arrow_schema(table.metadata().current_schema())
            .expect("arrow schema"),
    );
    for commit in 0..COMMITS {
        let mut data_files = Vec::new();
        for i in 0..FILES / COMMITS {
            let file = (commit * (FILES / COMMITS) + i) as i64;
            let ids: Vec<i64> = (0..ROWS_PER_FILE)
                .map(|r| file * ROWS_PER_FILE + r)
                .collect();
            let batch = RecordBatch::try_new(
                Arc::clone(&arrow_schema),
                vec![
                    Arc::new(Int64Array::from(ids.clone())),
                    Arc::new(Int64Array::from(vec![file; ids.len()])),
                    Arc::new(Float64Array::from(
                        ids.iter().map(|i| *i as f64 * 0.5).collect::<Vec<_>>(),
                    )),
                ],
            )
            .expect("batch");
            let rolling = RollingFileWriterBuilder::new_with_default_file_size(
                ParquetWriterBuilder::new(
                    Default::default(),
                    table.metadata().current_schema().clone(),
                ),
                table.file_io().clone(),
                DefaultLocationGenerator::new(table.metadata()).expect("locations"),
                DefaultFileNameGenerator::new(
                    format!("part-{file:04}"),
                    None,
                    DataFileFormat::Parquet,
                ),
            );
            let mut writer = DataFileWriterBuilder::new(rolling)
                .build(None)
                .await
                .expect("writer");
            writer.write(batch).await.expect("write");
            data_files.extend(writer.close().await.expect("close"));
        }
        let tx = Transaction::new(&table);
        let tx = tx
            .fast_append()
            .add_data_files(data_files)
            .apply(tx)
            .expect("append");
        table = tx.commit(&catalog).await.expect("commit");
    }
}
