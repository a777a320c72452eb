//! Scale-out: the 22 TPC-H queries over the same Parquet files, in-process
//! and on clusters of `N` `meshql worker` processes on this machine (one
//! cluster per size, all started up front), alternating in one run after a
//! warm-up that checks every way answers the same. One `EXPLAIN ANALYZE`
//! per query and cluster then reads what moved: the bytes shipped between
//! stages (`bytes_transferred` of the network boundaries), the plan bytes
//! sent to the workers and the bytes the scans read. A one-row lookup shows
//! what a small query costs with workers configured.
//!
//! Workers on the coordinator's own machine share its cores, so this
//! measures what distribution costs (plan shipping, stages, shuffles over
//! loopback), not what more machines gain. Results go to
//! `<out>/cluster-sf<scale>.md`.

use std::fmt::Write as _;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use meshql::Mesh;
use meshql::cluster::Cluster;

use crate::compare::{is_ordered, same_results};
use crate::measure::{geomean, median, ms};
use crate::tpch_data;

/// What to run.
pub struct Options {
    pub scale: f64,
    pub runs: usize,
    /// Cluster sizes to compare with in-process, e.g. `[1, 2, 4]`.
    pub workers: Vec<usize>,
    pub queries: Vec<usize>,
    pub out: PathBuf,
}

const SECRET: &str = "meshql-bench-cluster-secret";

/// A worker process, stopped when dropped.
struct Worker {
    child: Child,
    addr: String,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `meshql` binary built with this harness (same profile).
fn meshql_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .context("the harness's directory")?
        .join("meshql");
    if !bin.exists() {
        bail!(
            "{} is missing: build it with the harness, `cargo build --profile bench -p meshql-cli -p meshql-bench`",
            bin.display()
        );
    }
    Ok(bin)
}

fn start_worker(bin: &Path, mesh: &Path) -> Result<Worker> {
    let mut child = Command::new(bin)
        .arg("--mesh")
        .arg(mesh)
        .args(["worker", "--addr", "127.0.0.1:0"])
        .env("MESHQL_CLUSTER_SECRET", SECRET)
        .env("MESHQL_LOG", "warn")
        .env_remove("MESHQL_WORKERS")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starts meshql worker")?;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    let addr = line
        .trim()
        .strip_prefix("meshql worker listening on ")
        .with_context(|| format!("the worker did not start: {line:?}"))?
        .to_string();
    Ok(Worker { child, addr })
}

/// One query's measurements.
struct Row {
    query: usize,
    local: Duration,
    /// Per cluster size, in the order of [`Options::workers`].
    clusters: Vec<Duration>,
    /// What `EXPLAIN ANALYZE` read, per cluster size.
    moved: Vec<Moved>,
}

/// What a distributed query moved, from its `EXPLAIN ANALYZE`.
#[derive(Clone, Copy, Default)]
struct Moved {
    /// Bytes across the network boundaries (between stages and to the
    /// coordinator).
    shipped: f64,
    /// Plan bytes sent to the workers.
    plans: f64,
    /// Bytes the scans read.
    scanned: f64,
    /// Whether the plan ran distributed at all.
    distributed: bool,
}

/// A metric's value as DataFusion displays it: `human_readable_size`
/// (`21.2 KB`, 1024-based) when `size`, else `human_readable_count`
/// (`178.1 K`, 1000-based).
fn parse_metric(text: &str, size: bool) -> Option<f64> {
    let mut words = text.split_whitespace();
    let number = words.next()?.trim_end_matches([',', ']']);
    let value: f64 = number.parse().ok()?;
    let unit = words.next().unwrap_or("").trim_end_matches([',', ']']);
    let scale = if size {
        match unit {
            "B" => 1.0,
            "KB" => 1024.0,
            "MB" => 1024.0 * 1024.0,
            "GB" => 1024.0 * 1024.0 * 1024.0,
            "TB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
            _ => return None,
        }
    } else {
        match unit {
            "K" => 1e3,
            "M" => 1e6,
            "B" => 1e9,
            "T" => 1e12,
            _ => 1.0,
        }
    };
    Some(value * scale)
}

/// The sum of every `key=` metric in an `EXPLAIN ANALYZE` text.
fn sum_metric(text: &str, key: &str, size: bool) -> f64 {
    let pattern = format!("{key}=");
    text.match_indices(&pattern)
        .filter(|(at, _)| {
            // `bytes_scanned=` must not match inside `plan_bytes_scanned=`.
            text[..*at]
                .chars()
                .next_back()
                .is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
        })
        .filter_map(|(at, _)| {
            let rest = &text[at + pattern.len()..];
            // Custom metrics display as `name:KEY VALUE`.
            let rest = rest.strip_prefix(&format!("name:{key} ")).unwrap_or(rest);
            parse_metric(rest, size)
        })
        .sum()
}

fn moved(explain: &str) -> Moved {
    Moved {
        shipped: sum_metric(explain, "bytes_transferred", true),
        plans: (0..64)
            .map(|t| sum_metric(explain, &format!("plan_bytes_sent_{t}"), false))
            .sum(),
        scanned: sum_metric(explain, "bytes_scanned", false),
        distributed: explain.contains("DistributedExec"),
    }
}

/// The text of an `EXPLAIN ANALYZE`'s plan column.
fn plan_text(batches: &[arrow::record_batch::RecordBatch]) -> String {
    use arrow::array::AsArray;
    let mut out = String::new();
    for batch in batches {
        let Some(col) = batch.column_by_name("plan") else {
            continue;
        };
        for v in col.as_string::<i32>().iter().flatten() {
            out.push_str(v);
            out.push('\n');
        }
    }
    out
}

fn mb(bytes: f64) -> String {
    format!("{:.1}", bytes / (1024.0 * 1024.0))
}

const LOOKUP: &str = "SELECT c_name, c_acctbal FROM tpch.customer WHERE c_custkey = 4242";

pub fn run(opts: &Options) -> Result<()> {
    if opts.workers.is_empty() || opts.workers.contains(&0) {
        bail!("--workers takes cluster sizes of at least one worker, e.g. 1,2,4");
    }
    let data = tpch_data::ensure_parquet(opts.scale);
    let mesh_dir = tempfile::tempdir()?;
    tpch_data::write_mesh(mesh_dir.path(), &data, false);
    let bin = meshql_binary()?;
    let local = Mesh::open_strict(mesh_dir.path())?;
    // Every cluster's workers, kept alive to the end.
    let mut processes = Vec::new();
    let mut clusters = Vec::new();
    let mut sized = Vec::new();
    for &n in &opts.workers {
        let workers = (0..n)
            .map(|_| start_worker(&bin, mesh_dir.path()))
            .collect::<Result<Vec<_>>>()?;
        let addrs: Vec<String> = workers.iter().map(|w| w.addr.clone()).collect();
        processes.extend(workers);
        // Threshold 0: every query of the run is distributed.
        let mesh = Mesh::open_strict(mesh_dir.path())?;
        mesh.set_cluster(Some(Cluster::new(
            &addrs,
            Some(0),
            Some(SECRET.as_bytes()),
        )?));
        clusters.push(mesh);
        // The default threshold, for the lookup.
        let mesh = Mesh::open_strict(mesh_dir.path())?;
        mesh.set_cluster(Some(Cluster::new(&addrs, None, Some(SECRET.as_bytes()))?));
        sized.push(mesh);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    let lookup = runtime.block_on(async {
        let here = local.session(local.principal("admin")?);
        let there = clusters
            .iter()
            .map(|m| Ok(m.session(m.principal("admin")?)))
            .collect::<Result<Vec<_>>>()?;
        for &n in &opts.queries {
            let sql = tpch_data::query(n, "tpch");
            let a = here.collect(&sql).await?;
            for (session, size) in there.iter().zip(&opts.workers) {
                let b = session.collect(&sql).await?;
                if let Err(e) = same_results(&a, &b, is_ordered(&sql)) {
                    bail!("Q{n} differs on {size} workers: {e}");
                }
            }
            let mut tl = Vec::new();
            let mut td = vec![Vec::new(); there.len()];
            for _ in 0..opts.runs {
                let t = Instant::now();
                here.collect(&sql).await?;
                tl.push(t.elapsed());
                for (session, times) in there.iter().zip(&mut td) {
                    let t = Instant::now();
                    session.collect(&sql).await?;
                    times.push(t.elapsed());
                }
            }
            let mut moves = Vec::new();
            for session in &there {
                let explain = session.collect(&format!("EXPLAIN ANALYZE {sql}")).await?;
                let text = plan_text(&explain);
                let m = moved(&text);
                // A distributed plan ships something and sends plans: zeros
                // here mean the metrics' display changed, not a free query.
                if m.distributed && (m.shipped == 0.0 || m.plans == 0.0) {
                    bail!("Q{n}: no bytes_transferred or plan_bytes_sent in:\n{text}");
                }
                moves.push(m);
            }
            let row = Row {
                query: n,
                local: median(tl),
                clusters: td.into_iter().map(median).collect(),
                moved: moves,
            };
            eprintln!(
                "Q{n}: in-process {:.1} ms, on workers {}",
                ms(row.local),
                row.clusters
                    .iter()
                    .zip(&opts.workers)
                    .map(|(d, w)| format!("{w}: {:.1} ms", ms(*d)))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            rows.push(row);
        }
        // The lookup: in-process, with workers at the default threshold
        // (local), and forced onto the largest cluster.
        let default = sized
            .last()
            .map(|m| Ok::<_, anyhow::Error>(m.session(m.principal("admin")?)))
            .transpose()?
            .context("a cluster")?;
        let forced = there.last().context("a cluster")?;
        let ways = [&here, &default, forced];
        let mut times = vec![Vec::new(); ways.len()];
        for s in ways {
            s.collect(LOOKUP).await?;
        }
        for _ in 0..20 {
            for (s, t) in ways.iter().zip(&mut times) {
                let at = Instant::now();
                s.collect(LOOKUP).await?;
                t.push(at.elapsed());
            }
        }
        let default_plan = plan_text(&default.collect(&format!("EXPLAIN {LOOKUP}")).await?);
        let forced_plan = plan_text(&forced.collect(&format!("EXPLAIN {LOOKUP}")).await?);
        if default_plan.contains("DistributedExec") {
            bail!("the lookup was distributed under the default threshold:\n{default_plan}");
        }
        if !forced_plan.contains("DistributedExec") {
            bail!("the lookup stayed local at threshold 0:\n{forced_plan}");
        }
        Ok(times.into_iter().map(median).collect::<Vec<_>>())
    })?;
    let md = report(opts, &rows, &lookup)?;
    std::fs::create_dir_all(&opts.out)?;
    let path = opts.out.join(format!("cluster-sf{}.md", opts.scale));
    std::fs::write(&path, &md)?;
    println!("{md}\nwritten to {}", path.display());
    drop(processes);
    Ok(())
}

fn report(opts: &Options, rows: &[Row], lookup: &[Duration]) -> Result<String> {
    let sizes = &opts.workers;
    let mut md = format!(
        "# TPC-H at scale {} on local workers\n\n{} ({}), admin, medians of {} alternated runs after one warm-up that checks every way answers the same; `--distribute-above 0`, so every query runs distributed. The workers run on the coordinator's machine and share its cores: this is what distribution costs, not what more machines gain.\n\n",
        opts.scale,
        crate::tpch::machine(),
        crate::tpch::today(),
        opts.runs,
    );
    md.push_str("## Time\n\n| query | in-process |");
    for n in sizes {
        write!(md, " {n} worker{} |", if *n == 1 { "" } else { "s" })?;
    }
    for n in sizes {
        write!(md, " {n} / in-process |")?;
    }
    md.push_str("\n| --- | --- |");
    for _ in 0..sizes.len() * 2 {
        md.push_str(" --- |");
    }
    md.push('\n');
    let mut ratios = vec![Vec::new(); sizes.len()];
    for row in rows {
        write!(md, "| Q{} | {:.1} ms |", row.query, ms(row.local))?;
        for d in &row.clusters {
            write!(md, " {:.1} ms |", ms(*d))?;
        }
        for (d, r) in row.clusters.iter().zip(&mut ratios) {
            let ratio = d.as_secs_f64() / row.local.as_secs_f64();
            r.push(ratio);
            write!(md, " {ratio:.2} |")?;
        }
        md.push('\n');
    }
    md.push_str("| geometric mean | |");
    for _ in sizes {
        md.push_str(" |");
    }
    for r in &ratios {
        write!(md, " {:.2} |", geomean(r))?;
    }
    md.push_str("\n\n## What moved\n\nFrom one `EXPLAIN ANALYZE` per query and cluster: MiB the scans read (the same for every size), MiB shipped across the network boundaries (between stages and to the coordinator) and KiB of plans sent to the workers.\n\n| query | scanned |");
    for n in sizes {
        write!(md, " shipped, {n} w |")?;
    }
    for n in sizes {
        write!(md, " plans, {n} w |")?;
    }
    md.push_str("\n| --- | --- |");
    for _ in 0..sizes.len() * 2 {
        md.push_str(" --- |");
    }
    md.push('\n');
    let mut totals = vec![Moved::default(); sizes.len()];
    for row in rows {
        let scanned = row.moved.first().map_or(0.0, |m| m.scanned);
        write!(md, "| Q{} | {} |", row.query, mb(scanned))?;
        for m in &row.moved {
            write!(
                md,
                " {}{} |",
                mb(m.shipped),
                if m.distributed { "" } else { " (local)" }
            )?;
        }
        for m in &row.moved {
            write!(md, " {:.0} |", m.plans / 1024.0)?;
        }
        for (m, t) in row.moved.iter().zip(&mut totals) {
            t.shipped += m.shipped;
            t.plans += m.plans;
            t.scanned += m.scanned;
        }
        md.push('\n');
    }
    write!(
        md,
        "| all | {} |",
        mb(totals.first().map_or(0.0, |t| t.scanned))
    )?;
    for t in &totals {
        write!(md, " {} |", mb(t.shipped))?;
    }
    for t in &totals {
        write!(md, " {:.0} |", t.plans / 1024.0)?;
    }
    let largest = sizes.last().copied().unwrap_or(0);
    write!(
        md,
        "\n\n## A one-row lookup\n\n`{LOOKUP}`, medians of 20 alternated runs.\n\n| way | time |\n| --- | --- |\n| in-process | {:.2} ms |\n| {largest} workers configured, default threshold (runs locally) | {:.2} ms |\n| {largest} workers, `--distribute-above 0` (distributed) | {:.2} ms |\n",
        ms(lookup[0]),
        ms(lookup[1]),
        ms(lookup[2])
    )?;
    Ok(md)
}
