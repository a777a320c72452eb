//! Runs `tests/slt/*.slt` against the bundled demo mesh, each file as the
//! principal its `# principal: NAME` line names (users.yaml), or `admin`.
//! `EXPLAIN` keeps only the logical plan, which does not depend on paths or
//! the number of cores.
//!
//! Every file runs twice: in-process, then with the mesh as the
//! coordinator of two `meshql worker` processes on 127.0.0.1 that every
//! query is distributed to, so each principal's answers are the same on
//! workers as in-process (both are checked against the same expected
//! output).
//!
//! `cargo test --test sqllogictest` checks; `cargo test --test sqllogictest
//! -- --complete [FILTER]` rewrites the expected output from what meshql
//! returns now (in-process). Any other argument filters files by name.

use std::path::{Path, PathBuf};
use std::time::Duration;

use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use async_trait::async_trait;
use meshql::Mesh;
use sqllogictest::{DBOutput, DefaultColumnType};

struct MeshDb {
    session: meshql::Session,
}

#[derive(Debug)]
struct DbError(String);

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DbError {}

fn column_type(t: &DataType) -> DefaultColumnType {
    match t {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => DefaultColumnType::Integer,
        DataType::Float16
        | DataType::Float32
        | DataType::Float64
        | DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => DefaultColumnType::FloatingPoint,
        _ => DefaultColumnType::Text,
    }
}

#[async_trait]
impl sqllogictest::AsyncDB for MeshDb {
    type Error = DbError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, DbError> {
        let mut batches = self
            .session
            .collect(sql)
            .await
            .map_err(|e| DbError(e.to_string()))?;
        let explain = sql.trim_start().to_ascii_uppercase();
        let explain = explain.starts_with("EXPLAIN") && !explain.starts_with("EXPLAIN ANALYZE");
        if explain {
            batches = logical_only(&batches).map_err(|e| DbError(e.to_string()))?;
        }
        let schema = match batches.first() {
            Some(b) => b.schema(),
            None => self
                .session
                .sql(sql)
                .await
                .map_err(|e| DbError(e.to_string()))?
                .schema()
                .inner()
                .clone(),
        };
        let types = schema
            .fields()
            .iter()
            .map(|f| column_type(f.data_type()))
            .collect();
        let options = FormatOptions::default().with_null("NULL");
        let mut rows = Vec::new();
        for batch in &batches {
            let formatters = batch
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| DbError(e.to_string()))?;
            for row in 0..batch.num_rows() {
                rows.push(
                    formatters
                        .iter()
                        .map(|f| {
                            let s = f.value(row).to_string();
                            if s.is_empty() {
                                "(empty)".to_string()
                            } else {
                                s
                            }
                        })
                        .collect(),
                );
            }
        }
        if explain {
            rows = plan_lines(rows);
        }
        Ok(DBOutput::Rows { types, rows })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "meshql"
    }

    async fn sleep(dur: Duration) {
        tokio::time::sleep(dur).await;
    }
}

/// The rows of an `EXPLAIN` result that are not the physical plan.
fn logical_only(
    batches: &[arrow::record_batch::RecordBatch],
) -> Result<Vec<arrow::record_batch::RecordBatch>, arrow::error::ArrowError> {
    batches
        .iter()
        .map(|b| {
            let kinds = arrow::compute::cast(b.column(0), &DataType::Utf8)?;
            let kinds = kinds
                .as_any()
                .downcast_ref::<arrow::array::StringArray>()
                .ok_or_else(|| arrow::error::ArrowError::CastError("plan_type".into()))?;
            let keep: arrow::array::BooleanArray = kinds
                .iter()
                .map(|k| Some(k != Some("physical_plan")))
                .collect();
            arrow::compute::filter_record_batch(b, &keep)
        })
        .collect()
}

/// One row per line of each plan, numbered, indentation shown as `--`.
fn plan_lines(rows: Vec<Vec<String>>) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for row in rows {
        let (kind, plan) = match row.as_slice() {
            [kind, plan] => (kind.clone(), plan.clone()),
            _ => {
                out.push(row);
                continue;
            }
        };
        for (i, line) in plan.lines().enumerate() {
            let depth = line.len() - line.trim_start().len();
            out.push(vec![
                kind.clone(),
                format!("{:02}){}{}", i + 1, "-".repeat(depth), line.trim_start()),
            ]);
        }
    }
    out
}

/// The principal a file names in a `# principal: NAME` line.
fn principal_of(file: &Path) -> Result<String, Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(file)?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("# principal:"))
        .map(|p| p.trim().to_string())
        .unwrap_or_else(|| "admin".to_string()))
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let complete = args.iter().any(|a| a == "--complete");
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();

    let catalog_dir = root().join("catalog");
    let catalog = meshql::manifest::Catalog::load_strict(&catalog_dir)?;
    meshql::demo::ensure(&catalog)?;
    let mesh = Mesh::from_catalog(catalog)?;

    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("tests/slt"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .filter(|p| {
            filters.is_empty()
                || filters
                    .iter()
                    .any(|f| p.to_string_lossy().contains(f.as_str()))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err("no .slt files matched".into());
    }

    let mut failures = Vec::new();
    run_files(&mesh, &files, complete, "", &mut failures).await?;
    if !complete {
        // The same files on workers: every query is distributed.
        let workers = [Worker::start()?, Worker::start()?];
        let addrs: Vec<String> = workers.iter().map(|w| w.addr.clone()).collect();
        mesh.set_cluster(Some(meshql::cluster::Cluster::new(
            &addrs,
            Some(0),
            Some(SECRET.as_bytes()),
        )?));
        run_files(&mesh, &files, false, " (on workers)", &mut failures).await?;
        mesh.set_cluster(None);
        for w in &workers {
            if w.tasks() == 0 {
                failures.push(format!("worker {} ran no task", w.addr));
            }
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} slt file(s) failed: {}",
            failures.len(),
            failures.join(", ")
        )
        .into())
    }
}

const SECRET: &str = "cluster-secret-of-the-slt-run";

/// A `meshql worker` process on an ephemeral port of 127.0.0.1.
struct Worker {
    child: std::process::Child,
    addr: String,
    log: PathBuf,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Worker {
    fn start() -> Result<Worker, Box<dyn std::error::Error>> {
        use std::io::BufRead;
        let log = std::env::temp_dir().join(format!(
            "meshql-slt-worker-{}-{}.log",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_nanos()
        ));
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_meshql"))
            .current_dir(root())
            .args(["--mesh", "catalog", "worker", "--addr", "127.0.0.1:0"])
            .env_remove("MESHQL_MESH")
            .env_remove("MESHQL_WORKERS")
            .env_remove("MESHQL_CLUSTER_SECRET_FILE")
            .env("MESHQL_CLUSTER_SECRET", SECRET)
            .env("MESHQL_LOG", "info")
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let Some(addr) = line.trim().strip_prefix("meshql worker listening on ") else {
            return Err(format!(
                "meshql worker did not start: {line:?}; {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
            .into());
        };
        Ok(Worker {
            addr: addr.to_string(),
            child,
            log,
        })
    }

    fn tasks(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .matches("meshql worker runs a task")
            .count()
    }
}

async fn run_files(
    mesh: &Mesh,
    files: &[PathBuf],
    complete: bool,
    how: &str,
    failures: &mut Vec<String>,
) -> Result<(), Box<dyn std::error::Error>> {
    for file in files {
        let principal = mesh.principal(&principal_of(file)?)?;
        let mesh = mesh.clone();
        let mut runner = sqllogictest::Runner::new(move || {
            let mesh = mesh.clone();
            let principal = principal.clone();
            async move {
                Ok::<_, DbError>(MeshDb {
                    session: mesh.session(principal),
                })
            }
        });
        let name = file
            .strip_prefix(root())
            .unwrap_or(file)
            .display()
            .to_string();
        if complete {
            runner
                .update_test_file(
                    file,
                    " ",
                    sqllogictest::default_validator,
                    sqllogictest::default_normalizer,
                    sqllogictest::strict_column_validator,
                )
                .await
                .map_err(|e| format!("{name}: {e}"))?;
            println!("completed {name}");
        } else {
            match runner.run_file_async(file).await {
                Ok(()) => println!("ok      {name}{how}"),
                Err(e) => {
                    println!("FAILED  {name}{how}\n{e}");
                    failures.push(format!("{name}{how}"));
                }
            }
        }
    }
    Ok(())
}
