//! The serving path: meshql's Flight SQL server over loopback against
//! meshql in-process and DuckDB in-process, on the same Parquet files of
//! the demo mesh at scale 50, in one run.
//!
//! - a one-row query (`catalog.products` by key): p50 and p99 with the
//!   arrow-flight client in this process and with the Python ADBC driver
//!   in its own, meshql in-process, DuckDB in-process;
//! - a large result (`SELECT * FROM sales.order_items`, 2.35 million rows):
//!   MB/s over Flight SQL (arrow-flight, ADBC), in-process, and DuckDB
//!   reading it into Arrow;
//! - one-row queries per second of 16 and 64 concurrent clients:
//!   arrow-flight clients in this process against DuckDB's threads, each
//!   with a cursor of its own.
//!
//! Results go to `<out>/flight.md`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use futures::TryStreamExt;
use meshql::Mesh;
use meshql::manifest::Catalog;
use meshql_server::ServerOptions;
use serde_json::Value;

use crate::duckdb::DuckDb;
use crate::flight_client;
use crate::measure::ms;

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// The demo mesh's scale: 50 makes 2.35 million order lines.
    pub scale: u32,
    /// Timed one-row queries per client, after 50 warm-ups.
    pub runs: usize,
    /// Numbers of concurrent clients.
    pub clients: Vec<usize>,
    /// Seconds each concurrency run lasts.
    pub seconds: u64,
    pub out: PathBuf,
}

/// Every order line of the demo mesh: 2.35 million rows at scale 50.
const LARGE: &str = "SELECT * FROM sales.order_items";
/// One row from a small product: the cost is round trips and planning.
const TINY: &str = "SELECT product_id, name FROM catalog.products WHERE product_id = 1042";
/// The same two in DuckDB, over views of the same files.
const DUCK_LARGE: &str = "SELECT * FROM order_items";
const DUCK_TINY: &str = "SELECT product_id, name FROM products WHERE product_id = 1042";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// p50 and p99 of timed runs (after the warm-ups, which are not passed).
fn p50_p99(mut times: Vec<Duration>) -> (Duration, Duration) {
    times.sort();
    (percentile(&times, 0.5), percentile(&times, 0.99))
}

/// Warm-up runs before each latency measurement.
const WARM: usize = 50;

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

/// A throughput cell: MB/s and M rows/s of `rows` rows and `bytes` bytes in `secs`.
fn rate(rows: f64, bytes: f64, secs: f64) -> String {
    format!(
        "{:.0} MB/s, {:.1} M rows/s",
        bytes / 1e6 / secs,
        rows / 1e6 / secs
    )
}

pub fn run(o: &Options) -> Result<()> {
    let (mesh_dir, data) = crate::common::demo_mesh_at_scale(o.scale);
    let catalog = Catalog::load_strict(mesh_dir.path()).context("the demo mesh")?;
    eprintln!(
        "demo data at scale {} in {} (generated on first run)",
        o.scale,
        data.display()
    );
    meshql::demo::ensure(&catalog)?;
    let mesh = Mesh::from_catalog(catalog)?;
    let python = crate::duckdb::python()?;
    let products = data.join("catalog/products/products.parquet");
    let order_items = data.join("sales/order_items/*.parquet");
    let mut duck = DuckDb::start(
        &python,
        &data,
        &[
            &format!("products={}", products.display()),
            &format!("order_items={}", order_items.display()),
        ],
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let biggest = o.clients.iter().copied().max().unwrap_or(16).max(16);
    // One principal runs every client here: its share is all of the slots.
    let options = ServerOptions {
        query_memory: None,
        max_concurrent_queries: biggest,
        max_queries_per_user: Some(biggest),
        ..ServerOptions::from_mesh(&mesh)
    };
    let report = runtime.block_on(async {
        let addr = flight_client::serve(&mesh, options).await?;
        let mut c = flight_client::connect(addr, "admin", "admin-demo").await?;
        let session = mesh.session(mesh.principal("admin")?);
        let mut md = String::new();

        eprintln!("one-row query");
        let mut times = Vec::with_capacity(o.runs);
        for i in 0..WARM + o.runs {
            let t = Instant::now();
            let (rows, _) = flight_client::run(&mut c, TINY).await?;
            anyhow::ensure!(rows == 1, "{rows} rows");
            if i >= WARM {
                times.push(t.elapsed());
            }
        }
        let (wire50, wire99) = p50_p99(times);
        let mut times = Vec::with_capacity(o.runs);
        for i in 0..WARM + o.runs {
            let t = Instant::now();
            session.collect(TINY).await?;
            if i >= WARM {
                times.push(t.elapsed());
            }
        }
        let (local50, local99) = p50_p99(times);
        let mut times = Vec::with_capacity(o.runs);
        for i in 0..WARM + o.runs {
            let t = duck.run(DUCK_TINY)?;
            if i >= WARM {
                times.push(t);
            }
        }
        let (duck50, duck99) = p50_p99(times);

        eprintln!("large result");
        let mut best_local = Duration::MAX;
        let (mut rows, mut bytes) = (0usize, 0usize);
        let cpu_start = cpu_seconds();
        for _ in 0..5 {
            let t = Instant::now();
            let mut stream = session.execute(LARGE).await?;
            (rows, bytes) = (0, 0);
            while let Some(b) = stream.try_next().await? {
                rows += b.num_rows();
                bytes += b.get_array_memory_size();
            }
            best_local = best_local.min(t.elapsed());
        }
        let cpu_local = cpu_seconds() - cpu_start;
        let mut best_wire = Duration::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            let (got, _) = flight_client::run(&mut c, LARGE).await?;
            best_wire = best_wire.min(t.elapsed());
            anyhow::ensure!(got == rows, "{got} rows over Flight SQL, {rows} in-process");
        }
        let cpu_wire = cpu_seconds() - cpu_start - cpu_local;
        let mut best_duck = Duration::MAX;
        for _ in 0..5 {
            best_duck = best_duck.min(duck.run(DUCK_LARGE)?);
        }

        eprintln!("the ADBC driver");
        let uri = format!("grpc://{addr}");
        let adbc = adbc_clients(&python, &uri)?;
        let adbc_ms = |k: &str| adbc["one_row"][k].as_f64().unwrap_or(f64::NAN);
        let adbc_large = &adbc["arrow"];
        let (arows, abytes, asecs) = (
            adbc_large["rows"].as_f64().unwrap_or(0.0),
            adbc_large["bytes"].as_f64().unwrap_or(0.0),
            adbc_large["secs"].as_f64().unwrap_or(f64::NAN),
        );

        let mut concurrency = Vec::new();
        for &n in &o.clients {
            eprintln!("{n} concurrent clients");
            let flight = flight_client::queries_per_second(
                addr,
                ("admin", "admin-demo"),
                n,
                Duration::from_secs(o.seconds),
                TINY,
            )
            .await?;
            let duckdb = duck.concurrent(DUCK_TINY, n, o.seconds)?;
            concurrency.push((n, flight, duckdb));
        }

        let _ = writeln!(
            md,
            "# The serving path: Flight SQL against in-process meshql and DuckDB\n"
        );
        let _ = writeln!(
            md,
            "`meshql-bench flight --scale {}`, {} ({}); DuckDB {} ({} threads). meshql as `admin` with the server's options from `mesh.yaml` (the memory limit off, {biggest} query slots, all of them open to one principal), the arrow-flight clients in the harness's process, the ADBC driver and DuckDB in processes of their own, all on 127.0.0.1 sharing the machine's cores. The one-row query: `{TINY}` ({} timed runs after 50 warm-ups); the large result: `{LARGE}`, {rows} rows, {:.0} MB as Arrow, best of five.\n",
            o.scale,
            crate::tpch::today(),
            crate::tpch::machine(),
            duck.version,
            duck.threads,
            o.runs,
            bytes as f64 / 1e6,
        );
        md.push_str("| measure | meshql over Flight SQL (arrow-flight) | meshql over Flight SQL (Python ADBC) | meshql in-process | DuckDB in-process |\n| --- | --: | --: | --: | --: |\n");
        let _ = writeln!(
            md,
            "| one-row query, p50 | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
            ms(wire50),
            adbc_ms("p50_ms"),
            ms(local50),
            ms(duck50)
        );
        let _ = writeln!(
            md,
            "| one-row query, p99 | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
            ms(wire99),
            adbc_ms("p99_ms"),
            ms(local99),
            ms(duck99)
        );
        let (r, b) = (rows as f64, bytes as f64);
        let _ = writeln!(
            md,
            "| large result | {} ({:.0}% of in-process) | {} ({:.0}% of in-process) | {} | {} |",
            rate(r, b, best_wire.as_secs_f64()),
            100.0 * best_local.as_secs_f64() / best_wire.as_secs_f64(),
            rate(arows, abytes, asecs),
            100.0 * best_local.as_secs_f64() / asecs,
            rate(r, b, best_local.as_secs_f64()),
            rate(r, b, best_duck.as_secs_f64()),
        );
        let _ = writeln!(
            md,
            "| CPU time of one large read, this process | {:.0} ms | | {:.0} ms | |",
            cpu_wire * 1e3 / 5.0,
            cpu_local * 1e3 / 5.0
        );
        for (n, flight, duckdb) in &concurrency {
            let _ = writeln!(
                md,
                "| one-row queries per second, {n} concurrent clients | {flight:.0} | | | {duckdb:.0} |"
            );
        }
        md.push('\n');
        anyhow::Ok(md)
    })?;
    std::fs::create_dir_all(&o.out)?;
    let path = o.out.join("flight.md");
    std::fs::write(&path, &report)?;
    print!("{report}");
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// `pg_clients.py adbc`: the ADBC driver's one-row latency and large read.
fn adbc_clients(python: &Path, uri: &str) -> Result<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("pg_clients.py");
    let out = std::process::Command::new(python)
        .arg(&script)
        .args(["adbc", uri, "admin", "admin-demo", TINY, LARGE])
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        return Err(anyhow!("{} failed ({})", script.display(), out.status));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}
