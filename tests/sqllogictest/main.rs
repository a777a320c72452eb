//! Runs `tests/slt/*.slt` against the bundled demo mesh.
//!
//! `cargo test --test sqllogictest` checks; `cargo test --test sqllogictest
//! -- --complete [FILTER]` rewrites the expected output from what meshql
//! returns now. Any other argument filters files by name.

use std::path::{Path, PathBuf};
use std::time::Duration;

use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use async_trait::async_trait;
use meshql::{Mesh, Principal};
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
        let batches = self
            .session
            .collect(sql)
            .await
            .map_err(|e| DbError(e.to_string()))?;
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
    for file in &files {
        let mesh = mesh.clone();
        let mut runner = sqllogictest::Runner::new(move || {
            let mesh = mesh.clone();
            async move {
                Ok::<_, DbError>(MeshDb {
                    session: mesh.session(Principal::new("admin").with_role("platform_admin")),
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
                Ok(()) => println!("ok      {name}"),
                Err(e) => {
                    println!("FAILED  {name}\n{e}");
                    failures.push(name);
                }
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
