//! Iceberg against plain Parquet on the same data: the demo mesh's
//! `sales.orders` as its Iceberg table (one file per day) and as its Parquet
//! landing files (one per month), a few queries each, medians of alternated
//! runs. Prints a table; run with
//!
//! `cargo bench -p meshql --bench iceberg`
//!
//! The demo data at scale 50 is generated into
//! `$CARGO_TARGET_DIR/bench-data/` on the first run.

mod common;

use std::time::{Duration, Instant};

use meshql::Mesh;
use meshql::manifest::Catalog;

const SCALE: u32 = 50;
const RUNS: usize = 9;

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

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let (mesh_dir, data) = common::demo_mesh_at_scale(SCALE);
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
    eprintln!("demo data at scale {SCALE} in {}", data.display());
    meshql::demo::ensure(&catalog).expect("demo data");
    let mesh = Mesh::from_catalog(catalog).expect("mesh");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");

    runtime.block_on(async {
        let session = mesh.session(mesh.principal("admin").expect("admin"));
        println!("Iceberg against Parquet, sales.orders at scale {SCALE} (admin, medians of {RUNS} alternated runs)");
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
            let rows = |bs: &[arrow::record_batch::RecordBatch]| {
                bs.iter().map(|b| b.num_rows()).sum::<usize>()
            };
            assert_eq!(rows(&a), rows(&b), "{name}");
            let (mut ti, mut tp) = (Vec::new(), Vec::new());
            for _ in 0..RUNS {
                let t = Instant::now();
                session.collect(&iceberg).await.expect("iceberg");
                ti.push(t.elapsed());
                let t = Instant::now();
                session.collect(&plain).await.expect("parquet");
                tp.push(t.elapsed());
            }
            let (i, p) = (median(ti), median(tp));
            ratios.push(i.as_secs_f64() / p.as_secs_f64());
            println!(
                "| {name} | {:.1} ms | {:.1} ms | {:.2} |",
                ms(i),
                ms(p),
                i.as_secs_f64() / p.as_secs_f64()
            );
        }
        let geo = (ratios.iter().map(|r| r.ln()).sum::<f64>() / ratios.len() as f64).exp();
        println!("| geometric mean | | | {geo:.2} |");

    });
}
