//! The Flight SQL server over loopback: latency of a one-row query (p50,
//! p99), throughput of a large result (MB/s, rows/s) against reading the
//! same result in-process, and queries per second with 16 concurrent
//! clients. Prints a table; run with
//!
//! `cargo bench -p meshql-bench --bench flight [-- tiny|large|adbc|concurrent]`
//!
//! With `MESHQL_BENCH_PYTHON` set to a Python that has the ADBC Flight SQL
//! driver, the `adbc` section reads the large result through it as well.

use meshql_bench::{common, flight_client};

use std::time::{Duration, Instant};

use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use meshql::Mesh;
use meshql::manifest::Catalog;
use meshql_server::ServerOptions;
use tonic::transport::Channel;

/// Every order line of the demo mesh at scale 50: 2.35 million rows read
/// from Parquet.
const LARGE: &str = "SELECT * FROM sales.order_items";
const SCALE: u32 = 50;
/// One row from a small product: the cost is the round trips and planning.
const TINY: &str = "SELECT product_id, name FROM catalog.products WHERE product_id = 1042";

async fn client(addr: std::net::SocketAddr) -> FlightSqlServiceClient<Channel> {
    flight_client::connect(addr, "admin", "admin-demo")
        .await
        .expect("logs in")
}

async fn run(c: &mut FlightSqlServiceClient<Channel>, sql: &str) -> (usize, usize) {
    flight_client::run(c, sql).await.expect("runs")
}

/// Whether a section runs: all of them, or those named on the command line
/// (`cargo bench -p meshql-bench --bench flight -- large`).
fn wanted(section: &str) -> bool {
    let named: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    named.is_empty() || named.iter().any(|n| n == section)
}

/// CPU time this process has used, user and system, in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name: utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let (mesh_dir, data) = common::demo_mesh_at_scale(SCALE);
    let catalog = Catalog::load_strict(mesh_dir.path()).expect("demo mesh");
    eprintln!(
        "demo data at scale {SCALE} in {} (generated on first run)",
        data.display()
    );
    meshql::demo::ensure(&catalog).expect("demo data");
    let mesh = Mesh::from_catalog(catalog).expect("mesh");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let options = ServerOptions {
            query_memory: None,
            max_concurrent_queries: 64,
            ..ServerOptions::default()
        };
        tokio::spawn(meshql_server::serve(
            listener,
            mesh.clone(),
            options,
            None,
            std::future::pending(),
            Duration::from_secs(1),
        ));
        let mut c = client(addr).await;
        let session = mesh.session(mesh.principal("admin").expect("admin"));
        println!("meshql Flight SQL over loopback (admin, demo mesh at scale {SCALE})");
        println!("| measure | value |");
        println!("| --- | --- |");

        if wanted("tiny") {
            // Latency of a one-row query: GetFlightInfo (plan) + DoGet (plan, run, stream).
            for _ in 0..50 {
                run(&mut c, TINY).await;
            }
            let mut times = Vec::new();
            for _ in 0..1000 {
                let t = Instant::now();
                let (rows, _) = run(&mut c, TINY).await;
                times.push(t.elapsed());
                assert_eq!(rows, 1);
            }
            times.sort();
            // The same tiny query in-process, for reference.
            let mut local = Vec::new();
            for _ in 0..1000 {
                let t = Instant::now();
                session.collect(TINY).await.expect("runs");
                local.push(t.elapsed());
            }
            local.sort();
            println!("| one-row query, p50 | {:.2} ms |", ms(percentile(&times, 0.5)));
            println!("| one-row query, p99 | {:.2} ms |", ms(percentile(&times, 0.99)));
            println!("| same query in-process, p50 | {:.2} ms |", ms(percentile(&local, 0.5)));
        }

        if wanted("large") {
            // Large result: in-process, then over the wire (best of 5 each).
            let mut best_local = Duration::MAX;
            let mut large = (0, 0);
            let cpu_start = cpu_seconds();
            for _ in 0..5 {
                let t = Instant::now();
                let mut stream = session.execute(LARGE).await.expect("runs");
                let (mut rows, mut bytes) = (0, 0);
                while let Some(b) = stream.try_next().await.expect("batch") {
                    rows += b.num_rows();
                    bytes += b.get_array_memory_size();
                }
                best_local = best_local.min(t.elapsed());
                large = (rows, bytes);
            }
            let cpu_local = cpu_seconds() - cpu_start;
            let mut best_wire = Duration::MAX;
            for _ in 0..5 {
                let t = Instant::now();
                let (rows, _) = run(&mut c, LARGE).await;
                best_wire = best_wire.min(t.elapsed());
                assert_eq!(rows, large.0);
            }
            let cpu_wire = cpu_seconds() - cpu_start - cpu_local;
            let mb = large.1 as f64 / 1e6;
            println!(
                "| large result ({} rows, {:.0} MB of Arrow) in-process | {:.0} MB/s, {:.1} M rows/s |",
                large.0,
                mb,
                mb / best_local.as_secs_f64(),
                large.0 as f64 / best_local.as_secs_f64() / 1e6
            );
            println!(
                "| large result over Flight SQL | {:.0} MB/s, {:.1} M rows/s ({:.0}% of in-process) |",
                mb / best_wire.as_secs_f64(),
                large.0 as f64 / best_wire.as_secs_f64() / 1e6,
                100.0 * best_local.as_secs_f64() / best_wire.as_secs_f64()
            );
            // Where the difference goes: the CPU time of one read, both
            // cores counted (server and client share this process).
            println!(
                "| CPU time per read, in-process / over Flight SQL | {:.0} ms / {:.0} ms |",
                cpu_local * 1e3 / 5.0,
                cpu_wire * 1e3 / 5.0
            );
        }

        // A third-party client: the Python ADBC driver in its own process,
        // when MESHQL_BENCH_PYTHON names a Python that has it (the venv of
        // tests/python/setup.sh).
        if let Some(python) = std::env::var_os("MESHQL_BENCH_PYTHON").filter(|_| wanted("adbc")) {
            let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("adbc_read.py");
            let out = std::process::Command::new(python)
                .arg(script)
                .arg(addr.to_string())
                .arg(LARGE)
                .output()
                .expect("runs python");
            let line = String::from_utf8_lossy(&out.stdout);
            let fields: Vec<f64> = line
                .split_whitespace()
                .filter_map(|f| f.parse().ok())
                .collect();
            match fields[..] {
                [rows, bytes, secs] => println!(
                    "| large result through Python ADBC (own process) | {:.0} MB/s, {:.1} M rows/s |",
                    bytes / 1e6 / secs,
                    rows / secs / 1e6
                ),
                _ => eprintln!(
                    "the ADBC client failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ),
            }
        }

        if wanted("concurrent") {
            // 16 concurrent clients, tiny queries, for 5 seconds.
            let qps = flight_client::queries_per_second(
                addr,
                ("admin", "admin-demo"),
                16,
                Duration::from_secs(5),
                TINY,
            )
            .await
            .expect("clients");
            println!("| 16 concurrent clients, one-row queries | {qps:.0} queries/s |");
        }
    });
}
