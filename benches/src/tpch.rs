//! The TPC-H comparison: the 22 queries over the same Parquet files run
//! four ways in one process run, alternating, after a warm-up:
//!
//! 1. meshql embedded, as `admin` (governed; no policy restricts them);
//! 2. meshql as `analyst`, with `customer.c_phone` / `c_address` masked and
//!    `nation` filtered ([`crate::tpch_data::POLICIES`]);
//! 3. a bare DataFusion `SessionContext` with the files registered;
//! 4. DuckDB (its Python package) with views over the files;
//! 5. meshql as `admin` over Flight SQL, as a new user reaches it from
//!    Python: `meshql serve`'s defaults in this process, the ADBC Flight
//!    SQL driver in another, each result fetched as one Arrow table.
//!
//! The warm-up results of 1, 3, 4 and 5 must be equal ([`crate::compare`]);
//! a difference fails the run. Results go to `<out>/tpch-sf<scale>.md`,
//! `.csv` and `.png`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use arrow::record_batch::RecordBatch;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use futures::TryStreamExt;
use meshql::{Mesh, QueryOptions, Session};

use crate::compare::{is_ordered, same_results};
use crate::duckdb::DuckDb;
use crate::measure::{geomean, median, mib, ms, peak_rss};
use crate::tpch_data::{self, TABLES};

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    pub scale: f64,
    /// Timed iterations per query and system, after one warm-up.
    pub runs: usize,
    pub queries: Vec<usize>,
    /// Where the results go.
    pub out: PathBuf,
    pub duckdb: bool,
    /// Runs meshql over Flight SQL with the Python ADBC driver too.
    pub flight: bool,
    /// `SET` statements for meshql's and DataFusion's sessions.
    pub settings: Vec<(String, String)>,
    /// Retimes the queries meshql loses to DuckDB under other settings.
    pub sweep: bool,
    /// Runs each system once more in a process of its own for its peak memory.
    pub memory: bool,
    /// Collects the breakdown and the analyzed plan of every query, not
    /// only of those DuckDB answers faster.
    pub explain: bool,
    /// Memory one query may use, in bytes, on every system (meshql's
    /// per-query limit, DataFusion's memory pool, DuckDB's
    /// `memory_limit`); operators that can spill to disk do so.
    pub memory_limit: Option<usize>,
}

/// The systems, in the order of the tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum System {
    Admin,
    Analyst,
    DataFusion,
    DuckDb,
    /// meshql (admin) over Flight SQL, read with the Python ADBC driver.
    Flight,
}

impl System {
    pub const ALL: [System; 5] = [
        System::Admin,
        System::Analyst,
        System::DataFusion,
        System::DuckDb,
        System::Flight,
    ];

    pub fn name(self) -> &'static str {
        match self {
            System::Admin => "admin",
            System::Analyst => "analyst",
            System::DataFusion => "datafusion",
            System::DuckDb => "duckdb",
            System::Flight => "flight",
        }
    }

    pub fn parse(s: &str) -> Result<System> {
        System::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| {
                anyhow!("unknown system {s}: admin, analyst, datafusion, duckdb or flight")
            })
    }
}

/// The engines of one run.
struct Engines {
    admin: Session,
    analyst: Session,
    bare: SessionContext,
    duck: Option<DuckDb>,
    /// The ADBC client of the Flight SQL server this process serves.
    flight: Option<DuckDb>,
    /// meshql's per-query options: the memory limit.
    query: QueryOptions,
    scratch: tempfile::TempDir,
    _mesh_dir: tempfile::TempDir,
}

impl Engines {
    async fn start(opts: &Options, data: &Path, duckdb: bool, flight: bool) -> Result<Engines> {
        let mesh_dir = tempfile::tempdir()?;
        tpch_data::write_mesh(mesh_dir.path(), data, false);
        let mesh = Mesh::open_strict(mesh_dir.path()).context("the TPC-H mesh")?;
        let admin = mesh.session(mesh.principal("admin")?);
        let analyst = mesh.session(mesh.principal("analyst")?);
        let bare = match opts.memory_limit {
            Some(limit) => SessionContext::new_with_config_rt(
                datafusion::prelude::SessionConfig::new(),
                datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
                    .with_memory_limit(limit, 1.0)
                    .build_arc()?,
            ),
            None => SessionContext::new(),
        };
        for (table, _) in TABLES {
            let file = tpch_data::parquet_file(data, table);
            bare.register_parquet(
                *table,
                file.to_string_lossy().as_ref(),
                ParquetReadOptions::default(),
            )
            .await?;
        }
        for (key, value) in &opts.settings {
            admin.set_option(key, value)?;
            analyst.set_option(key, value)?;
            bare.sql(&format!("SET {key} = {value}"))
                .await?
                .collect()
                .await?;
        }
        let duck = if duckdb {
            let tables: Vec<&str> = TABLES.iter().map(|(t, _)| *t).collect();
            let mut duck = DuckDb::start(&crate::duckdb::python()?, data, &tables)?;
            if let Some(limit) = opts.memory_limit {
                duck.set(&format!("SET memory_limit = '{}MiB'", limit >> 20))?;
            }
            Some(duck)
        } else {
            None
        };
        let flight = if flight {
            Some(serve_flight(&mesh, &opts.settings).await?)
        } else {
            None
        };
        Ok(Engines {
            admin,
            analyst,
            bare,
            duck,
            flight,
            query: QueryOptions {
                memory_limit: opts.memory_limit,
                params: None,
            },
            scratch: tempfile::tempdir()?,
            _mesh_dir: mesh_dir,
        })
    }

    /// Runs query `n` on `system`; its results and the time it took.
    async fn run(&mut self, system: System, n: usize) -> Result<(Vec<RecordBatch>, Duration)> {
        let started = Instant::now();
        let batches = match system {
            System::Admin => {
                collect(&self.admin, &tpch_data::query(n, "tpch"), &self.query).await?
            }
            System::Analyst => {
                collect(&self.analyst, &tpch_data::query(n, "tpch"), &self.query).await?
            }
            System::DataFusion => {
                self.bare
                    .sql(&tpch_data::query_text(n))
                    .await?
                    .collect()
                    .await?
            }
            System::DuckDb => {
                let duck = self.duck.as_mut().ok_or_else(|| anyhow!("no DuckDB"))?;
                return Ok((Vec::new(), duck.run(&tpch_data::query_text(n))?));
            }
            System::Flight => {
                let client = self
                    .flight
                    .as_mut()
                    .ok_or_else(|| anyhow!("no Flight SQL"))?;
                return Ok((Vec::new(), client.run(&tpch_data::query(n, "tpch"))?));
            }
        };
        Ok((batches, started.elapsed()))
    }

    /// DuckDB's results of query `n`.
    fn duckdb_results(&mut self, n: usize) -> Result<Vec<RecordBatch>> {
        let duck = self.duck.as_mut().ok_or_else(|| anyhow!("no DuckDB"))?;
        duck.results(&tpch_data::query_text(n), self.scratch.path())
    }

    /// The results of query `n` as the ADBC client received them.
    fn flight_results(&mut self, n: usize) -> Result<Vec<RecordBatch>> {
        let client = self
            .flight
            .as_mut()
            .ok_or_else(|| anyhow!("no Flight SQL"))?;
        client.results(&tpch_data::query(n, "tpch"), self.scratch.path())
    }
}

/// Plans `sql` with the run's per-query options and collects its results.
async fn collect(session: &Session, sql: &str, options: &QueryOptions) -> Result<Vec<RecordBatch>> {
    if options.memory_limit.is_none() {
        return Ok(session.collect(sql).await?);
    }
    let query = session.plan(sql, options).await?;
    Ok(query.execute()?.try_collect().await?)
}

/// Serves `mesh` over Flight SQL on 127.0.0.1 with the options `meshql
/// serve` takes from its `mesh.yaml` (the settings of the run applied to
/// the server's sessions too) and starts the ADBC client, logged in as
/// admin.
async fn serve_flight(mesh: &Mesh, settings: &[(String, String)]) -> Result<DuckDb> {
    if !settings.is_empty() {
        bail!("--set applies to in-process sessions only; run with --no-flight");
    }
    let addr =
        crate::flight_client::serve(mesh, meshql_server::ServerOptions::from_mesh(mesh)).await?;
    DuckDb::start_adbc(
        &crate::duckdb::python()?,
        &addr.to_string(),
        "admin",
        "admin-demo",
    )
}

/// The measurements of one query.
#[derive(Clone, Debug, Default)]
struct Row {
    n: usize,
    medians: BTreeMap<System, Duration>,
    rows: usize,
    /// Whether the analyst's result differs from admin's (the policies bit).
    analyst_differs: bool,
    /// Where meshql's time goes, for the queries DuckDB wins.
    breakdown: Option<Breakdown>,
    /// The systems that failed the query under the memory limit, and how.
    failed: BTreeMap<System, String>,
}

impl Row {
    /// The cells the CSV and the Markdown table share: query, medians,
    /// ratios, rows.
    fn cells(&self) -> Vec<String> {
        let mut cells = vec![format!("Q{}", self.n)];
        cells.extend(System::ALL.map(|s| {
            if self.failed.contains_key(&s) {
                "failed".to_string()
            } else {
                fmt_ms(self.medians.get(&s))
            }
        }));
        cells.push(fmt_ratio(self.ratio(System::Admin, System::DataFusion)));
        cells.push(fmt_ratio(self.ratio(System::Analyst, System::Admin)));
        cells.push(fmt_ratio(self.ratio(System::Admin, System::DuckDb)));
        cells.push(fmt_ratio(self.ratio(System::Flight, System::DuckDb)));
        cells.push(self.rows.to_string());
        cells
    }

    fn ratio(&self, a: System, b: System) -> Option<f64> {
        Some(self.medians.get(&a)?.as_secs_f64() / self.medians.get(&b)?.as_secs_f64())
    }
}

/// meshql's time in one query: planning, and the compute time of the
/// operators by kind, summed over partitions (so up to the number of cores
/// times the wall time).
#[derive(Clone, Debug, Default)]
struct Breakdown {
    plan: Duration,
    operators: BTreeMap<&'static str, Duration>,
    /// The physical plan with its metrics, as `EXPLAIN ANALYZE` shows it.
    analyzed: String,
}

impl Breakdown {
    fn describe(&self) -> String {
        let total: Duration = self.operators.values().sum();
        let mut parts: Vec<(&str, Duration)> =
            self.operators.iter().map(|(k, v)| (*k, *v)).collect();
        parts.sort_by_key(|p| std::cmp::Reverse(p.1));
        let shares: Vec<String> = parts
            .iter()
            .filter(|(_, d)| !d.is_zero())
            .map(|(k, d)| {
                format!(
                    "{k} {:.0}%",
                    100.0 * d.as_secs_f64() / total.as_secs_f64().max(1e-9)
                )
            })
            .collect();
        format!(
            "plan {:.1} ms; operator time {}",
            ms(self.plan),
            shares.join(", ")
        )
    }

    /// The kind of operator that took most of the time.
    fn main_cause(&self) -> &'static str {
        self.operators
            .iter()
            .max_by_key(|(_, d)| **d)
            .map(|(k, _)| *k)
            .unwrap_or("none")
    }
}

fn kind(plan: &dyn ExecutionPlan) -> &'static str {
    let name = plan.name();
    if name.contains("DataSource") || name.contains("Iceberg") {
        "scan"
    } else if name.contains("Join") {
        "join"
    } else if name.contains("Aggregate") {
        "aggregation"
    } else if name.contains("Sort") || name.contains("TopK") {
        "sort"
    } else if name.contains("Filter") {
        "filter"
    } else if name.contains("Repartition") || name.contains("Coalesce") {
        "exchange"
    } else {
        "other"
    }
}

fn add_operator_times(plan: &Arc<dyn ExecutionPlan>, into: &mut BTreeMap<&'static str, Duration>) {
    if let Some(metrics) = plan.metrics() {
        let mut nanos = metrics.elapsed_compute().unwrap_or(0);
        // Parquet scans account their decoding separately.
        if let Some(v) = metrics.sum_by_name("time_elapsed_processing") {
            nanos += v.as_usize();
        }
        *into.entry(kind(plan.as_ref())).or_default() += Duration::from_nanos(nanos as u64);
    }
    for child in plan.children() {
        add_operator_times(child, into);
    }
}

async fn breakdown(session: &Session, sql: &str) -> Result<Breakdown> {
    let started = Instant::now();
    let query = session.plan(sql, &QueryOptions::default()).await?;
    let plan = started.elapsed();
    let _: Vec<RecordBatch> = query.execute()?.try_collect().await?;
    let mut operators = BTreeMap::new();
    add_operator_times(&query.physical_plan(), &mut operators);
    let analyzed = datafusion::physical_plan::display::DisplayableExecutionPlan::with_metrics(
        query.physical_plan().as_ref(),
    )
    .indent(true)
    .to_string();
    Ok(Breakdown {
        plan,
        operators,
        analyzed,
    })
}

/// Runs the comparison and writes its results; fails when results differ.
pub fn run(opts: &Options) -> Result<()> {
    let data = tpch_data::ensure_parquet(opts.scale);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut engines = runtime.block_on(Engines::start(opts, &data, opts.duckdb, opts.flight))?;
    let systems: Vec<System> = System::ALL
        .into_iter()
        .filter(|s| match s {
            System::DuckDb => opts.duckdb,
            System::Flight => opts.flight,
            _ => true,
        })
        .collect();
    let mut rows = Vec::new();
    let mut mismatches = Vec::new();
    for &n in &opts.queries {
        let sql = tpch_data::query_text(n);
        let ordered = is_ordered(&sql);
        let mut row = Row {
            n,
            ..Row::default()
        };
        // Warm-up, whose results are checked. Under a memory limit a
        // system that fails a query is recorded as failing it, and the run
        // goes on without it for that query.
        let mut results = BTreeMap::new();
        for &s in &systems {
            let warmed = runtime
                .block_on(engines.run(s, n))
                .with_context(|| format!("Q{n} on {}", s.name()));
            let fetched = match (warmed, s) {
                (Ok(_), System::DuckDb) => engines.duckdb_results(n),
                (Ok(_), System::Flight) => engines.flight_results(n),
                (Ok((batches, _)), _) => Ok(batches),
                (Err(e), _) => Err(e),
            };
            match fetched {
                Ok(batches) => {
                    results.insert(s, batches);
                }
                Err(e) if opts.memory_limit.is_some() => {
                    let message = format!("{e:#}");
                    eprintln!("Q{n:02} failed on {}: {message}", s.name());
                    row.failed.insert(s, message);
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(admin) = results.get(&System::Admin) {
            row.rows = admin.iter().map(RecordBatch::num_rows).sum();
            for s in [System::DataFusion, System::DuckDb, System::Flight] {
                if let Some(other) = results.get(&s)
                    && let Err(e) = same_results(admin, other, ordered)
                {
                    mismatches.push(format!("Q{n}: meshql and {} differ: {e}", s.name()));
                }
            }
            row.analyst_differs = results
                .get(&System::Analyst)
                .is_some_and(|analyst| same_results(admin, analyst, ordered).is_err());
        }
        // Timed runs, each round in a rotated order.
        let mut times: BTreeMap<System, Vec<Duration>> = BTreeMap::new();
        for round in 0..opts.runs {
            for i in 0..systems.len() {
                let s = systems[(round + i) % systems.len()];
                if row.failed.contains_key(&s) {
                    continue;
                }
                let (_, t) = runtime.block_on(engines.run(s, n))?;
                times.entry(s).or_default().push(t);
            }
        }
        row.medians = times.into_iter().map(|(s, t)| (s, median(t))).collect();
        if !row.failed.contains_key(&System::Admin)
            && (opts.explain
                || row
                    .ratio(System::Admin, System::DuckDb)
                    .is_some_and(|r| r > 1.0))
        {
            row.breakdown =
                Some(runtime.block_on(breakdown(&engines.admin, &tpch_data::query(n, "tpch")))?);
        }
        eprintln!(
            "Q{n:02}: admin {:.1} ms, analyst {:.1} ms, DataFusion {:.1} ms{}{}",
            row.medians.get(&System::Admin).map_or(0.0, |d| ms(*d)),
            row.medians.get(&System::Analyst).map_or(0.0, |d| ms(*d)),
            row.medians.get(&System::DataFusion).map_or(0.0, |d| ms(*d)),
            row.medians
                .get(&System::DuckDb)
                .map_or(String::new(), |d| format!(", DuckDB {:.1} ms", ms(*d))),
            row.medians
                .get(&System::Flight)
                .map_or(String::new(), |d| format!(
                    ", Flight SQL + ADBC {:.1} ms",
                    ms(*d)
                )),
        );
        rows.push(row);
    }
    let in_process_peak = peak_rss();
    let duck_version = engines
        .duck
        .as_ref()
        .map(|d| format!("{} ({} threads)", d.version, d.threads));
    // Written now, and again with the sweep and the memory runs.
    let mut report = Report {
        opts,
        rows: &rows,
        mismatches: &mismatches,
        in_process_peak,
        duck_version: duck_version.clone(),
        sweep: &[],
        memory: &BTreeMap::new(),
    };
    report.write()?;
    if !mismatches.is_empty() {
        bail!("results differ:\n{}", mismatches.join("\n"));
    }
    let sweep = if opts.sweep {
        let losing: Vec<usize> = rows
            .iter()
            .filter(|r| {
                r.ratio(System::Admin, System::DuckDb)
                    .is_some_and(|x| x > 1.0)
            })
            .map(|r| r.n)
            .collect();
        runtime.block_on(settings_sweep(opts, &data, &losing))?
    } else {
        Vec::new()
    };
    drop(engines);
    let memory = if opts.memory {
        // The Flight SQL server shares the harness's process: its memory
        // is admin's plus the server's, not measured apart.
        let alone: Vec<System> = systems
            .iter()
            .copied()
            .filter(|s| *s != System::Flight)
            .collect();
        memory_pass(opts, &alone)?
    } else {
        BTreeMap::new()
    };
    report.sweep = &sweep;
    report.memory = &memory;
    report.write()
}

/// The session settings tried on the queries DuckDB wins.
const SWEEP: &[(&str, &[(&str, &str)])] = &[
    (
        "Parquet filter pushdown with reordering",
        &[
            ("datafusion.execution.parquet.pushdown_filters", "true"),
            ("datafusion.execution.parquet.reorder_filters", "true"),
        ],
    ),
    (
        "no page index",
        &[("datafusion.execution.parquet.enable_page_index", "false")],
    ),
    (
        "twice the target partitions",
        &[("datafusion.execution.target_partitions", "{2cores}")],
    ),
    (
        "batch size 32768",
        &[("datafusion.execution.batch_size", "32768")],
    ),
];

/// A setting's median time over the queries, as a ratio to the defaults.
struct SweepResult {
    name: &'static str,
    settings: String,
    per_query: Vec<(usize, f64)>,
}

async fn settings_sweep(
    opts: &Options,
    data: &Path,
    queries: &[usize],
) -> Result<Vec<SweepResult>> {
    if queries.is_empty() {
        return Ok(Vec::new());
    }
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let baseline = Engines::start(opts, data, false, false).await?;
    let mut out = Vec::new();
    for (name, settings) in SWEEP {
        let mut variant_opts = opts.clone();
        variant_opts.settings.extend(settings.iter().map(|(k, v)| {
            (
                k.to_string(),
                v.replace("{2cores}", &(2 * cores).to_string()),
            )
        }));
        let variant = Engines::start(&variant_opts, data, false, false).await?;
        let mut per_query = Vec::new();
        for &n in queries {
            let sql = tpch_data::query(n, "tpch");
            let (mut base, mut var) = (Vec::new(), Vec::new());
            baseline.admin.collect(&sql).await?;
            variant.admin.collect(&sql).await?;
            for _ in 0..opts.runs {
                let t = Instant::now();
                baseline.admin.collect(&sql).await?;
                base.push(t.elapsed());
                let t = Instant::now();
                variant.admin.collect(&sql).await?;
                var.push(t.elapsed());
            }
            per_query.push((n, median(var).as_secs_f64() / median(base).as_secs_f64()));
        }
        let settings = variant_opts.settings[opts.settings.len()..]
            .iter()
            .map(|(k, v)| format!("`{k} = {v}`"))
            .collect::<Vec<_>>()
            .join(", ");
        eprintln!("sweep: {name}: done");
        out.push(SweepResult {
            name,
            settings,
            per_query,
        });
    }
    Ok(out)
}

/// Runs each system once over the queries in a fresh process of its own
/// and returns that process's peak resident memory.
fn memory_pass(opts: &Options, systems: &[System]) -> Result<BTreeMap<System, u64>> {
    let exe = std::env::current_exe()?;
    let queries: Vec<String> = opts.queries.iter().map(ToString::to_string).collect();
    let mut out = BTreeMap::new();
    for &s in systems {
        let output = std::process::Command::new(&exe)
            .args(["tpch-memory", "--system", s.name(), "--scale"])
            .arg(opts.scale.to_string())
            .args(["--queries", &queries.join(",")])
            .args(
                opts.memory_limit
                    .map(|l| vec!["--memory-limit".to_string(), (l >> 20).to_string()])
                    .unwrap_or_default(),
            )
            .stderr(std::process::Stdio::inherit())
            .output()?;
        if !output.status.success() {
            bail!("the memory run of {} failed", s.name());
        }
        let text = String::from_utf8(output.stdout)?;
        let bytes: u64 = text
            .trim()
            .parse()
            .with_context(|| format!("memory run of {} printed {text:?}", s.name()))?;
        out.insert(s, bytes);
    }
    Ok(out)
}

/// The child of [`memory_pass`]: runs every query once on `system` and
/// prints the process's peak resident memory in bytes.
pub fn memory_child(
    scale: f64,
    system: System,
    queries: &[usize],
    memory_limit: Option<usize>,
) -> Result<()> {
    let data = tpch_data::ensure_parquet(scale);
    let opts = Options {
        scale,
        runs: 0,
        queries: queries.to_vec(),
        out: PathBuf::new(),
        duckdb: system == System::DuckDb,
        flight: false,
        settings: Vec::new(),
        sweep: false,
        memory: false,
        explain: false,
        memory_limit,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if system == System::Flight {
        bail!("the memory run measures in-process systems and DuckDB, not flight");
    }
    let mut engines = runtime.block_on(Engines::start(&opts, &data, opts.duckdb, false))?;
    for &n in queries {
        // A query the system fails under the limit is reported by the
        // timing run; the peak of the others is still measured.
        match runtime.block_on(engines.run(system, n)) {
            Err(e) if memory_limit.is_some() => {
                eprintln!("Q{n:02} failed on {}: {e:#}", system.name());
            }
            other => {
                other?;
            }
        }
    }
    let peak = match system {
        System::DuckDb => engines
            .duck
            .as_mut()
            .ok_or_else(|| anyhow!("no DuckDB"))?
            .peak_rss()?,
        _ => peak_rss().ok_or_else(|| anyhow!("no /proc/self/status"))?,
    };
    println!("{peak}");
    Ok(())
}

struct Report<'a> {
    opts: &'a Options,
    rows: &'a [Row],
    mismatches: &'a [String],
    in_process_peak: Option<u64>,
    duck_version: Option<String>,
    sweep: &'a [SweepResult],
    memory: &'a BTreeMap<System, u64>,
}

fn fmt_ms(d: Option<&Duration>) -> String {
    d.map_or(String::new(), |d| format!("{:.1}", ms(*d)))
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or(String::new(), |r| format!("{r:.3}"))
}

/// The machine the run is on, in one line.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or("?".into(), |kb| format!("{:.0} GiB", kb / 1024.0 / 1024.0));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or("?".into(), |s| s.trim().to_string());
    format!("{cpu}, {cores} cores, {memory} memory, Linux {kernel}")
}

/// Today's date (UTC), from the system clock.
pub fn today() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

impl Report<'_> {
    fn stem(&self) -> String {
        format!("tpch-sf{}", self.opts.scale)
    }

    fn geomean_of(&self, a: System, b: System) -> Option<f64> {
        let ratios: Vec<f64> = self.rows.iter().filter_map(|r| r.ratio(a, b)).collect();
        (!ratios.is_empty()).then(|| geomean(&ratios))
    }

    fn write(&self) -> Result<()> {
        std::fs::create_dir_all(&self.opts.out)?;
        let csv = self.opts.out.join(format!("{}.csv", self.stem()));
        std::fs::write(&csv, self.csv())?;
        let md = self.opts.out.join(format!("{}.md", self.stem()));
        std::fs::write(&md, self.markdown())?;
        eprintln!("wrote {} and {}", md.display(), csv.display());
        // The analyzed plans of the queries DuckDB wins, where the causes
        // in benches/README.md are read from.
        let plans = self.opts.out.join(format!("{}-plans", self.stem()));
        for row in self.rows {
            if let Some(b) = &row.breakdown {
                std::fs::create_dir_all(&plans)?;
                std::fs::write(plans.join(format!("q{:02}.txt", row.n)), &b.analyzed)?;
            }
        }
        if self.opts.duckdb {
            let png = self.opts.out.join(format!("{}.png", self.stem()));
            chart(&csv, &png, &format!("TPC-H SF{}", self.opts.scale))?;
            eprintln!("wrote {}", png.display());
        }
        Ok(())
    }

    /// How each query's time grew from the SF1 run whose results are in
    /// the same directory (`tpch-sf1.csv`), for meshql (admin) and DuckDB.
    fn growth(&self, md: &mut String) {
        if self.opts.scale == 1.0 {
            return;
        }
        let Ok(text) = std::fs::read_to_string(self.opts.out.join("tpch-sf1.csv")) else {
            return;
        };
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
        let column = |name: &str| header.iter().position(|h| *h == name);
        let (Some(q), Some(admin), Some(duck)) =
            (column("query"), column("admin_ms"), column("duckdb_ms"))
        else {
            return;
        };
        let base: BTreeMap<String, (Option<f64>, Option<f64>)> = lines
            .map(|l| l.split(',').collect::<Vec<_>>())
            .filter(|c| c.len() == header.len())
            .map(|c| {
                (
                    c[q].to_string(),
                    (c[admin].parse().ok(), c[duck].parse().ok()),
                )
            })
            .collect();
        let mut growths: (Vec<f64>, Vec<f64>) = (Vec::new(), Vec::new());
        let mut table = String::new();
        for r in self.rows {
            let Some((sf1_admin, sf1_duck)) = base.get(&format!("Q{}", r.n)) else {
                continue;
            };
            let now = |s: System| {
                (!r.failed.contains_key(&s))
                    .then(|| r.medians.get(&s).map(|d| ms(*d)))
                    .flatten()
            };
            let grow = |then: &Option<f64>, now: Option<f64>, into: &mut Vec<f64>| {
                let g = now.zip(*then).map(|(n, t)| n / t);
                into.extend(g);
                g.map_or(String::new(), |g| format!("{g:.2}"))
            };
            let admin_now = now(System::Admin);
            let duck_now = now(System::DuckDb);
            let _ = writeln!(
                table,
                "| Q{} | {} | {} | {} | {} | {} | {} |",
                r.n,
                sf1_admin.map_or(String::new(), |t| format!("{t:.1}")),
                admin_now.map_or(String::new(), |t| format!("{t:.1}")),
                grow(sf1_admin, admin_now, &mut growths.0),
                sf1_duck.map_or(String::new(), |t| format!("{t:.1}")),
                duck_now.map_or(String::new(), |t| format!("{t:.1}")),
                grow(sf1_duck, duck_now, &mut growths.1),
            );
        }
        if growths.0.is_empty() {
            return;
        }
        let _ = writeln!(
            md,
            "## Growth from SF1\n\nEach query's median here over its median in `tpch-sf1.csv` (the SF1 run in this directory; a {}-fold scale).\n\n| query | admin SF1 ms | admin ms | admin growth | DuckDB SF1 ms | DuckDB ms | DuckDB growth |\n| --- | --: | --: | --: | --: | --: | --: |",
            self.opts.scale
        );
        md.push_str(&table);
        let mean = |g: &[f64]| (!g.is_empty()).then(|| geomean(g));
        let _ = writeln!(
            md,
            "| geometric mean | | | {} | | | {} |\n",
            mean(&growths.0).map_or(String::new(), |g| format!("{g:.2}")),
            mean(&growths.1).map_or(String::new(), |g| format!("{g:.2}")),
        );
    }

    fn csv(&self) -> String {
        let mut out = String::from(
            "query,admin_ms,analyst_ms,datafusion_ms,duckdb_ms,flight_ms,admin_over_datafusion,analyst_over_admin,admin_over_duckdb,flight_over_duckdb,rows,analyst_result_differs\n",
        );
        for r in self.rows {
            let mut cells = r.cells();
            cells.push(r.analyst_differs.to_string());
            out.push_str(&cells.join(","));
            out.push('\n');
        }
        out
    }

    fn markdown(&self) -> String {
        let o = self.opts;
        let mut md = String::new();
        let _ = writeln!(
            md,
            "# TPC-H at scale {}: meshql, DataFusion, DuckDB\n",
            o.scale
        );
        let _ = writeln!(
            md,
            "Run on {} ({}). `meshql-bench tpch --scale {} --runs {}{}`{}. Medians of {} timed runs per query and system after one warm-up, the systems alternating in rotated order; DataFusion {}{}.\n",
            today(),
            machine(),
            o.scale,
            o.runs,
            o.memory_limit
                .map_or(String::new(), |l| format!(" --memory-limit {}", l >> 20)),
            if o.settings.is_empty() {
                String::new()
            } else {
                format!(
                    " with {}",
                    o.settings
                        .iter()
                        .map(|(k, v)| format!("`{k} = {v}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
            o.runs,
            datafusion::DATAFUSION_VERSION,
            self.duck_version
                .as_ref()
                .map_or(String::new(), |v| format!(", DuckDB {v}")),
        );
        if let Some(l) = o.memory_limit {
            let _ = writeln!(
                md,
                "Every query of every system ran under a memory limit of {} MiB: meshql's per-query limit, DataFusion's memory pool, DuckDB's `memory_limit`; what can spill to disk, spills.\n",
                l >> 20
            );
        }
        let _ = writeln!(
            md,
            "- admin / DataFusion, geometric mean: **{}** (target at most 1.03)",
            fmt_ratio(self.geomean_of(System::Admin, System::DataFusion))
        );
        let _ = writeln!(
            md,
            "- analyst (masks and row filter) / admin, geometric mean: **{}** (target at most 1.10)",
            fmt_ratio(self.geomean_of(System::Analyst, System::Admin))
        );
        if o.duckdb {
            let _ = writeln!(
                md,
                "- admin / DuckDB, geometric mean: **{}**",
                fmt_ratio(self.geomean_of(System::Admin, System::DuckDb))
            );
        }
        if o.flight && o.duckdb {
            let _ = writeln!(
                md,
                "- meshql over Flight SQL, read with the Python ADBC driver (`meshql serve`'s defaults, admin) / DuckDB in-process, geometric mean: **{}** (target at most 1.05)",
                fmt_ratio(self.geomean_of(System::Flight, System::DuckDb))
            );
        }
        let _ = writeln!(
            md,
            "- results of meshql (admin), DataFusion{}{} {}\n",
            if o.duckdb { ", DuckDB" } else { "" },
            if o.flight {
                ", meshql over Flight SQL"
            } else {
                ""
            },
            if self.mismatches.is_empty() {
                "equal for every query".to_string()
            } else {
                format!("DIFFER: {}", self.mismatches.join("; "))
            }
        );
        md.push_str("| query | admin ms | analyst ms | DataFusion ms | DuckDB ms | Flight SQL + ADBC ms | admin / DataFusion | analyst / admin | admin / DuckDB | Flight SQL / DuckDB | rows | analyst sees other rows |\n");
        md.push_str("| --- | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --- |\n");
        for r in self.rows {
            let mut cells = r.cells();
            cells.push(if r.analyst_differs { "yes" } else { "no" }.into());
            let _ = writeln!(md, "| {} |", cells.join(" | "));
        }
        let _ = writeln!(
            md,
            "| geometric mean | | | | | | {} | {} | {} | {} | | |\n",
            fmt_ratio(self.geomean_of(System::Admin, System::DataFusion)),
            fmt_ratio(self.geomean_of(System::Analyst, System::Admin)),
            fmt_ratio(self.geomean_of(System::Admin, System::DuckDb)),
            fmt_ratio(self.geomean_of(System::Flight, System::DuckDb)),
        );
        let failures: Vec<String> = self
            .rows
            .iter()
            .flat_map(|r| {
                r.failed.iter().map(move |(s, e)| {
                    let first = e.lines().next().unwrap_or_default().replace('|', "\\|");
                    format!("| Q{} | {} | {first} |", r.n, s.name())
                })
            })
            .collect();
        if !failures.is_empty() {
            md.push_str("## Failed under the memory limit\n\n| query | system | error |\n| --- | --- | --- |\n");
            for f in &failures {
                let _ = writeln!(md, "{f}");
            }
            md.push('\n');
        }
        self.growth(&mut md);
        md.push_str("## Peak memory\n\n");
        let _ = writeln!(
            md,
            "The timing process (meshql, both principals, and DataFusion in one process): peak resident {} MiB.",
            mib(self.in_process_peak)
        );
        if !self.memory.is_empty() {
            md.push_str(
                "Each system alone, the queries run once in a fresh process (DuckDB's includes the Python interpreter and pyarrow):\n\n| system | peak resident MiB |\n| --- | --: |\n",
            );
            for (s, bytes) in self.memory {
                let _ = writeln!(md, "| {} | {} |", s.name(), mib(Some(*bytes)));
            }
        }
        md.push('\n');
        let losing: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| {
                r.breakdown.is_some()
                    && r.ratio(System::Admin, System::DuckDb)
                        .is_some_and(|x| x > 1.0)
            })
            .collect();
        if !losing.is_empty() {
            md.push_str("## Where DuckDB is faster\n\n");
            md.push_str("For each query meshql answers slower than DuckDB: meshql's planning time and the compute time of its operators by kind, summed over partitions, from the plan's metrics after one more run. The largest kind is named as the cause.\n\n| query | admin / DuckDB | cause | breakdown |\n| --- | --: | --- | --- |\n");
            for r in losing {
                if let Some(b) = &r.breakdown {
                    let _ = writeln!(
                        md,
                        "| Q{} | {} | {} | {} |",
                        r.n,
                        fmt_ratio(r.ratio(System::Admin, System::DuckDb)),
                        b.main_cause(),
                        b.describe()
                    );
                }
            }
            md.push('\n');
        }
        if !self.sweep.is_empty() {
            md.push_str("## Session settings on those queries\n\n");
            md.push_str(
                "Each setting against the defaults, admin, alternated, medians; below 1 helps.\n\n",
            );
            let queries: Vec<usize> = self.sweep[0].per_query.iter().map(|(n, _)| *n).collect();
            md.push_str("| setting | geometric mean |");
            for n in &queries {
                let _ = write!(md, " Q{n} |");
            }
            md.push_str("\n| --- | --: |");
            for _ in &queries {
                md.push_str(" --: |");
            }
            md.push('\n');
            for s in self.sweep {
                let ratios: Vec<f64> = s.per_query.iter().map(|(_, r)| *r).collect();
                let _ = write!(
                    md,
                    "| {} ({}) | {:.3} |",
                    s.name,
                    s.settings,
                    geomean(&ratios)
                );
                for r in &ratios {
                    let _ = write!(md, " {r:.2} |");
                }
                md.push('\n');
            }
            md.push('\n');
        }
        md
    }
}

/// Draws the per-query ratios of `csv` into `png` with matplotlib.
fn chart(csv: &Path, png: &Path, title: &str) -> Result<()> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("chart.py");
    let status = std::process::Command::new(crate::duckdb::python()?)
        .arg(&script)
        .arg(csv)
        .arg(png)
        .arg(title)
        .status()?;
    if !status.success() {
        bail!("{} failed ({status})", script.display());
    }
    Ok(())
}
