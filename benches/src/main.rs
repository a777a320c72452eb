//! `meshql-bench`: meshql's benchmark suite.
//!
//! ```text
//! cargo run --profile bench -p meshql-bench -- tpch --scale 1
//! cargo run --profile bench -p meshql-bench -- mesh --sizes 100,1000,10000
//! cargo run --profile bench -p meshql-bench -- tpch --scale 1 --workers 1,2,4
//! cargo run --profile bench -p meshql-bench -- web --contracts 10000
//! cargo run --profile bench -p meshql-bench -- pg --scale 50
//! ```
//!
//! Results go to `benches/results/` unless `--out` says otherwise. The
//! governance-overhead micro-benchmark is a criterion bench:
//! `cargo bench -p meshql-bench --bench governance`.

/// meshql's allocator: contracts, plans and batches make many small
/// allocations on several threads, where mimalloc is faster than the
/// system's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use meshql_bench::{mesh_scale, tpch};

#[derive(Parser)]
#[command(name = "meshql-bench", about = "meshql's benchmark suite")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// A comma-separated list, parsed as one value.
type List = Vec<usize>;

fn default_out() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("results")
}

fn parse_list(s: &str) -> Result<Vec<usize>, String> {
    s.split(',')
        .map(|p| p.trim().parse::<usize>().map_err(|e| format!("{p:?}: {e}")))
        .collect()
}

fn parse_setting(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected KEY=VALUE"))?;
    Ok((k.trim().to_string(), v.trim().to_string()))
}

#[derive(Subcommand)]
enum Command {
    /// The 22 TPC-H queries: meshql as admin and as a masked, filtered
    /// analyst, bare DataFusion and DuckDB on the same Parquet files.
    Tpch {
        /// TPC-H scale factor (1 is about 1 GB of text, 6 million order lines).
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        /// Timed runs per query and system, after one warm-up.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Queries to run, e.g. `1,6,14`.
        #[arg(long, value_parser = parse_list, default_value = "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22")]
        queries: List,
        /// Where the results go.
        #[arg(long, default_value_os_t = default_out())]
        out: PathBuf,
        /// Leave DuckDB out (no Python needed; leaves Flight SQL out too).
        #[arg(long)]
        no_duckdb: bool,
        /// Leave out meshql over Flight SQL with the Python ADBC driver.
        #[arg(long)]
        no_flight: bool,
        /// A DataFusion setting for meshql's and DataFusion's sessions,
        /// e.g. `datafusion.execution.target_partitions=4`; repeatable.
        #[arg(long = "set", value_parser = parse_setting)]
        settings: Vec<(String, String)>,
        /// Retime the queries DuckDB wins under other session settings.
        #[arg(long)]
        sweep: bool,
        /// Memory one query may use, in MiB, on every system; operators
        /// that can spill to disk do so.
        #[arg(long)]
        memory_limit: Option<usize>,
        /// Skip the per-system peak memory runs.
        #[arg(long)]
        no_memory: bool,
        /// Break down and write the analyzed plan of every query, not only
        /// of those DuckDB answers faster.
        #[arg(long)]
        explain: bool,
        /// Instead of the engine comparison: meshql in-process against
        /// clusters of this many local `meshql worker` processes (the
        /// `meshql` binary of the same build), e.g. `1,2,4`.
        #[arg(long, value_parser = parse_list)]
        workers: Option<List>,
    },
    /// The web catalog's render time: a product page, its schema and a
    /// search, on the demo mesh and a generated one.
    Web {
        /// Contracts of the generated mesh.
        #[arg(long, default_value_t = 10000)]
        contracts: usize,
        /// Requests per page, after 3 warm-ups.
        #[arg(long, default_value_t = 50)]
        runs: usize,
        /// Where the results go.
        #[arg(long, default_value_os_t = default_out())]
        out: PathBuf,
    },
    /// The PostgreSQL endpoint against Flight SQL and a real PostgreSQL
    /// server (Debian's): one-row latency, a large result by binary COPY,
    /// server-side cursor and Arrow, concurrent clients.
    Pg {
        /// The demo mesh's scale: 50 makes 2.35 million order lines.
        #[arg(long, default_value_t = 50)]
        scale: u32,
        /// Numbers of concurrent clients.
        #[arg(long, value_parser = parse_list, default_value = "16,64")]
        clients: List,
        /// Seconds each concurrency run lasts.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Where the results go.
        #[arg(long, default_value_os_t = default_out())]
        out: PathBuf,
    },
    /// The serving path: Flight SQL over loopback (one-row latency, a
    /// large result, 16 and 64 concurrent clients) against meshql and
    /// DuckDB in-process.
    Flight {
        /// The demo mesh's scale: 50 makes 2.35 million order lines.
        #[arg(long, default_value_t = 50)]
        scale: u32,
        /// Timed one-row queries, after 50 warm-ups.
        #[arg(long, default_value_t = 1000)]
        runs: usize,
        /// Numbers of concurrent clients.
        #[arg(long, value_parser = parse_list, default_value = "16,64")]
        clients: List,
        /// Seconds each concurrency run lasts.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Where the results go.
        #[arg(long, default_value_os_t = default_out())]
        out: PathBuf,
    },
    /// Generated meshes of growing size: open, session, plan, memory.
    Mesh {
        /// Numbers of contracts, across 100 domains.
        #[arg(long, value_parser = parse_list, default_value = "100,1000,10000")]
        sizes: List,
        /// Where the results go.
        #[arg(long, default_value_os_t = default_out())]
        out: PathBuf,
    },
    /// (internal) one system's peak memory over the queries.
    #[command(hide = true)]
    TpchMemory {
        #[arg(long)]
        scale: f64,
        #[arg(long)]
        system: String,
        #[arg(long, value_parser = parse_list)]
        queries: List,
        #[arg(long)]
        memory_limit: Option<usize>,
    },
    /// (internal) one mesh size.
    #[command(hide = true)]
    MeshChild { contracts: usize },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Tpch {
            scale,
            runs,
            queries,
            out,
            no_duckdb,
            no_flight,
            settings,
            sweep,
            no_memory,
            explain,
            workers,
            memory_limit,
        } => {
            if let Some(q) = queries.iter().find(|q| !(1..=22).contains(*q)) {
                anyhow::bail!("there is no TPC-H query {q}: queries are 1 to 22");
            }
            if let Some(workers) = workers {
                return meshql_bench::cluster::run(&meshql_bench::cluster::Options {
                    scale,
                    runs,
                    workers,
                    queries,
                    out,
                });
            }
            tpch::run(&tpch::Options {
                scale,
                runs,
                queries,
                out,
                duckdb: !no_duckdb,
                flight: !no_duckdb && !no_flight && settings.is_empty(),
                settings,
                sweep,
                memory: !no_memory,
                explain,
                memory_limit: memory_limit.map(|m| m << 20),
            })
        }
        Command::Web {
            contracts,
            runs,
            out,
        } => meshql_bench::web::run(&out, contracts, runs),
        Command::Flight {
            scale,
            runs,
            clients,
            seconds,
            out,
        } => meshql_bench::flight::run(&meshql_bench::flight::Options {
            scale,
            runs,
            clients,
            seconds,
            out,
        }),
        Command::Pg {
            scale,
            clients,
            seconds,
            out,
        } => meshql_bench::pg::run(&meshql_bench::pg::Options {
            scale,
            clients,
            seconds,
            out,
        }),
        Command::Mesh { sizes, out } => mesh_scale::run(&sizes, &out).map(|_| ()),
        Command::TpchMemory {
            scale,
            system,
            queries,
            memory_limit,
        } => tpch::memory_child(
            scale,
            tpch::System::parse(&system)?,
            &queries,
            memory_limit.map(|m| m << 20),
        ),
        Command::MeshChild { contracts } => mesh_scale::child(contracts),
    }
}
