//! Running one statement: streaming its results to the output, a spinner on
//! slow queries, and Ctrl-C cancelling the query rather than the shell.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::backend::Backend;
use crate::print::{PrintFormat, StreamWriter};

pub struct Outcome {
    pub rows: usize,
    pub elapsed: Duration,
}

pub enum ExecError {
    Failed(String),
    Cancelled,
}

/// Runs `sql`, writing its result to `out` in `format`.
pub async fn run_statement(
    backend: &dyn Backend,
    sql: &str,
    format: PrintFormat,
    out: &mut dyn Write,
) -> Result<Outcome, ExecError> {
    let start = Instant::now();
    let rows = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let spinner = std::io::stderr().is_terminal().then(|| {
        let rows = Arc::clone(&rows);
        let done = Arc::clone(&done);
        tokio::spawn(spin(start, rows, done))
    });

    let work = async {
        let (schema, mut stream) = backend.execute(sql).await.map_err(ExecError::Failed)?;
        let fail = |e: &dyn std::fmt::Display| ExecError::Failed(e.to_string());
        if schema.fields().is_empty() {
            // A statement with no result (`USE sales`): nothing to print.
            while let Some(batch) = stream.next().await {
                batch.map_err(|e| ExecError::Failed(meshql_error(e)))?;
            }
        } else if format.buffers() {
            let mut batches = Vec::new();
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(|e| ExecError::Failed(meshql_error(e)))?;
                rows.fetch_add(batch.num_rows(), Ordering::Relaxed);
                batches.push(batch);
            }
            done.store(true, Ordering::Relaxed);
            clear_spinner();
            format
                .write_all(out, &schema, &batches)
                .map_err(|e| fail(&e))?;
        } else {
            let mut writer = StreamWriter::new(format, out, &schema);
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(|e| ExecError::Failed(meshql_error(e)))?;
                rows.fetch_add(batch.num_rows(), Ordering::Relaxed);
                writer.write(&batch).map_err(|e| fail(&e))?;
            }
            writer.finish().map_err(|e| fail(&e))?;
        }
        Ok::<(), ExecError>(())
    };

    let result = tokio::select! {
        r = work => r,
        _ = tokio::signal::ctrl_c() => Err(ExecError::Cancelled),
    };
    done.store(true, Ordering::Relaxed);
    if let Some(handle) = spinner {
        let _ = handle.await;
    }
    result.map(|()| Outcome {
        rows: rows.load(Ordering::Relaxed),
        elapsed: start.elapsed(),
    })
}

fn meshql_error(e: datafusion::error::DataFusionError) -> String {
    meshql::Error::Execution(e).to_string()
}

fn clear_spinner() {
    if std::io::stderr().is_terminal() {
        eprint!("\r\x1b[2K");
    }
}

async fn spin(start: Instant, rows: Arc<AtomicUsize>, done: Arc<AtomicBool>) {
    const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
    let mut shown = false;
    let mut i = 0;
    while !done.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let elapsed = start.elapsed();
        if elapsed < Duration::from_secs(1) || done.load(Ordering::Relaxed) {
            continue;
        }
        shown = true;
        eprint!(
            "\r\x1b[2K{} {:.1}s  {} rows  (Ctrl-C cancels)",
            FRAMES[i % FRAMES.len()],
            elapsed.as_secs_f64(),
            group_digits(rows.load(Ordering::Relaxed))
        );
        let _ = std::io::stderr().flush();
        i += 1;
    }
    if shown {
        eprint!("\r\x1b[2K");
    }
}

pub fn group_digits(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The line printed after each result.
pub fn summary(outcome: &Outcome, timing: bool) -> String {
    let rows = match outcome.rows {
        1 => "1 row".to_string(),
        n => format!("{} rows", group_digits(n)),
    };
    if timing {
        format!("({rows}, {:.3} s)", outcome.elapsed.as_secs_f64())
    } else {
        format!("({rows})")
    }
}
