//! DuckDB on the same Parquet files, through its Python package: a runner
//! process (`benches/duckdb_runner.py`) that answers one JSON command per
//! line. Queries are timed inside that process (execute and fetch as
//! Arrow), so the pipe costs nothing of DuckDB's time.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use arrow::record_batch::RecordBatch;
use serde_json::{Value, json};

/// The Python that has DuckDB: `$MESHQL_BENCH_PYTHON`, or the venv that
/// `benches/setup-venv.sh` creates (it runs here when needed).
pub fn python() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("MESHQL_BENCH_PYTHON").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("setup-venv.sh");
    let out = Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!("{} failed ({})", script.display(), out.status);
    }
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

/// A running DuckDB.
pub struct DuckDb {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// DuckDB's version.
    pub version: String,
    /// Its `threads` setting.
    pub threads: String,
}

impl DuckDb {
    /// Starts DuckDB over the Parquet files of `tables` under `data_dir`.
    pub fn start(python: &Path, data_dir: &Path, tables: &[&str]) -> Result<DuckDb> {
        let data_dir = data_dir.to_string_lossy();
        Self::spawn(python, "duckdb_runner.py", &[&data_dir, &tables.join(",")])
    }

    /// Starts a client of meshql's Flight SQL server at `addr`: the Python
    /// ADBC driver (`benches/adbc_runner.py`), which answers the same
    /// commands; its `version` is the driver's.
    pub fn start_adbc(python: &Path, addr: &str, user: &str, password: &str) -> Result<DuckDb> {
        Self::spawn(python, "adbc_runner.py", &[addr, user, password])
    }

    fn spawn(python: &Path, script: &str, args: &[&str]) -> Result<DuckDb> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(script);
        let mut child = Command::new(python)
            .arg(&script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {} {}", python.display(), script.display()))?;
        let stdin = child.stdin.take().ok_or_else(|| anyhow!("no stdin"))?;
        let stdout = BufReader::new(child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?);
        let mut duck = DuckDb {
            child,
            stdin,
            stdout,
            version: String::new(),
            threads: String::new(),
        };
        let hello = duck.read()?;
        duck.version = hello["version"].as_str().unwrap_or("?").to_string();
        duck.threads = hello["threads"].to_string();
        Ok(duck)
    }

    fn read(&mut self) -> Result<Value> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            bail!("the Python runner exited");
        }
        let value: Value = serde_json::from_str(&line)?;
        if let Some(e) = value.get("error") {
            bail!("{}", e.as_str().unwrap_or("?"));
        }
        Ok(value)
    }

    fn call(&mut self, command: Value) -> Result<Value> {
        writeln!(self.stdin, "{command}")?;
        self.stdin.flush()?;
        self.read()
    }

    /// Runs a `SET` statement.
    pub fn set(&mut self, sql: &str) -> Result<()> {
        self.call(json!({"op": "set", "sql": sql}))?;
        Ok(())
    }

    /// Runs `sql`; the time DuckDB took to answer it.
    pub fn run(&mut self, sql: &str) -> Result<Duration> {
        let answer = self.call(json!({"op": "run", "sql": sql}))?;
        let ms = answer["ms"].as_f64().ok_or_else(|| anyhow!("no time"))?;
        Ok(Duration::from_secs_f64(ms / 1e3))
    }

    /// Runs `sql` and returns its result (through a Parquet file in `scratch`).
    pub fn results(&mut self, sql: &str, scratch: &Path) -> Result<Vec<RecordBatch>> {
        let path = scratch.join("duckdb-result.parquet");
        self.call(json!({"op": "dump", "sql": sql, "path": path}))?;
        let file = std::fs::File::open(&path)?;
        let reader =
            datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                file,
            )?
            .build()?;
        Ok(reader.collect::<Result<Vec<_>, _>>()?)
    }

    /// Queries per second of `clients` threads of DuckDB's process, each
    /// with a cursor of its own, running `sql` over and over for `seconds`.
    pub fn concurrent(&mut self, sql: &str, clients: usize, seconds: u64) -> Result<f64> {
        let answer = self.call(json!({
            "op": "concurrent", "sql": sql, "clients": clients, "seconds": seconds
        }))?;
        answer["qps"].as_f64().ok_or_else(|| anyhow!("no qps"))
    }

    /// Peak resident memory of the DuckDB process so far, in bytes.
    pub fn peak_rss(&mut self) -> Result<u64> {
        let answer = self.call(json!({"op": "memory"}))?;
        answer["peak_rss"]
            .as_u64()
            .ok_or_else(|| anyhow!("no peak_rss"))
    }
}

impl Drop for DuckDb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
