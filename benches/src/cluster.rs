//! Scale-out: the 22 TPC-H queries over the same Parquet files, in-process
//! and on `N` `meshql worker` processes on this machine, alternating in one
//! run after a warm-up that checks both answer the same. Workers on the
//! coordinator's own machine share its cores, so this measures what
//! distribution costs (plan shipping, stages, shuffles over loopback), not
//! what more machines gain. Results go to `<out>/cluster-sf<scale>.md`.

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
    pub workers: usize,
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

pub fn run(opts: &Options) -> Result<()> {
    let data = tpch_data::ensure_parquet(opts.scale);
    let mesh_dir = tempfile::tempdir()?;
    tpch_data::write_mesh(mesh_dir.path(), &data, false);
    let bin = meshql_binary()?;
    let workers = (0..opts.workers)
        .map(|_| start_worker(&bin, mesh_dir.path()))
        .collect::<Result<Vec<_>>>()?;
    let local = Mesh::open_strict(mesh_dir.path())?;
    let distributed = Mesh::open_strict(mesh_dir.path())?;
    let addrs: Vec<String> = workers.iter().map(|w| w.addr.clone()).collect();
    distributed.set_cluster(Some(Cluster::new(
        &addrs,
        Some(0),
        Some(SECRET.as_bytes()),
    )?));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut table = String::new();
    let mut ratios = Vec::new();
    runtime.block_on(async {
        let here = local.session(local.principal("admin")?);
        let there = distributed.session(distributed.principal("admin")?);
        for n in 1..=22 {
            let sql = tpch_data::query(n, "tpch");
            let a = here.collect(&sql).await?;
            let b = there.collect(&sql).await?;
            if let Err(e) = same_results(&a, &b, is_ordered(&sql)) {
                bail!("Q{n} differs on the workers: {e}");
            }
            let (mut tl, mut td) = (Vec::new(), Vec::new());
            for _ in 0..opts.runs {
                let t = Instant::now();
                here.collect(&sql).await?;
                tl.push(t.elapsed());
                let t = Instant::now();
                there.collect(&sql).await?;
                td.push(t.elapsed());
            }
            let (l, d): (Duration, Duration) = (median(tl), median(td));
            let ratio = d.as_secs_f64() / l.as_secs_f64();
            ratios.push(ratio);
            writeln!(
                table,
                "| Q{n} | {:.1} ms | {:.1} ms | {ratio:.2} |",
                ms(l),
                ms(d)
            )?;
            eprintln!("Q{n}: in-process {:.1} ms, workers {:.1} ms", ms(l), ms(d));
        }
        Ok(())
    })?;
    let mut md = format!(
        "# TPC-H at scale {} on {} local workers\n\n{} ({}), admin, medians of {} alternated runs after one warm-up that checks the answers agree. The workers run on the coordinator's machine and share its cores: this is what distribution costs, not what more machines gain.\n\n| query | in-process | {} workers | workers / in-process |\n| --- | --- | --- | --- |\n",
        opts.scale,
        opts.workers,
        crate::tpch::machine(),
        crate::tpch::today(),
        opts.runs,
        opts.workers
    );
    md.push_str(&table);
    writeln!(md, "| geometric mean | | | {:.2} |", geomean(&ratios))?;
    std::fs::create_dir_all(&opts.out)?;
    let path = opts.out.join(format!("cluster-sf{}.md", opts.scale));
    std::fs::write(&path, &md)?;
    println!("{md}\nwritten to {}", path.display());
    drop(workers);
    Ok(())
}
