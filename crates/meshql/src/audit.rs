//! The audit log: one JSON line per statement, appended to a file.
//!
//! A record says who ran what, from where, what it read, which masks and
//! row filters applied, how much came back and how it ended. It never holds
//! a row value, a password or a token: errors of execution are recorded by
//! kind, not by message, since an engine message may quote a value.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::principal::Principal;

/// What a statement reads of one product, as its audit record tells it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProductAccess {
    /// `domain.product`.
    pub product: String,
    /// Columns read from storage, including those the row filter needs.
    pub columns: Vec<String>,
    /// Masks applied to columns read: column and mask expression.
    pub masks: Vec<(String, String)>,
    /// The row filter applied, if any.
    pub row_filter: Option<String>,
}

/// How a statement ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    /// The statement was refused or failed; `kind` is one of `sql`,
    /// `permission_denied`, `not_found`, `resources_exhausted`, `product`,
    /// `execution`, `timeout`.
    Error {
        kind: String,
        message: Option<String>,
    },
    Cancelled,
}

impl Outcome {
    /// The outcome of a failed statement. Only messages that cannot carry
    /// row values (they describe the statement or the catalog) are kept.
    pub fn from_error(e: &Error) -> Self {
        let (kind, message) = match e {
            Error::Sql(m) => ("sql", Some(m.clone())),
            Error::PermissionDenied(m) => ("permission_denied", Some(m.clone())),
            Error::ResourcesExhausted(m) => ("resources_exhausted", Some(m.clone())),
            Error::Product { product, .. } => ("product", Some(format!("data product {product}"))),
            Error::Unavailable(m) => ("unavailable", Some(m.clone())),
            Error::Cancelled => return Outcome::Cancelled,
            Error::Manifest(_) | Error::Io { .. } | Error::Execution(_) => ("execution", None),
        };
        Outcome::Error {
            kind: kind.to_string(),
            message,
        }
    }
}

/// One statement, as the audit log records it.
#[derive(Clone, Debug, Serialize)]
pub struct AuditRecord {
    /// When the statement started, RFC 3339 UTC with milliseconds.
    pub time: String,
    pub query_id: String,
    pub user: String,
    pub roles: Vec<String>,
    /// The client's address, for statements that came over the network.
    pub client: Option<String>,
    pub statement: String,
    pub products: Vec<ProductAccess>,
    pub rows: u64,
    pub bytes: u64,
    pub duration_ms: f64,
    pub outcome: Outcome,
    /// Why the statement ran on a second plan, when it did: its hash join
    /// did not fit in its memory limit and it was planned again with
    /// sort-merge joins.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replanned: Option<String>,
}

impl AuditRecord {
    /// A record of a statement that started at `started` and has not ended.
    pub fn start(
        started: SystemTime,
        query_id: impl Into<String>,
        principal: &Principal,
        client: Option<String>,
        statement: impl Into<String>,
    ) -> Self {
        Self {
            time: rfc3339(started),
            query_id: query_id.into(),
            user: principal.user.clone(),
            roles: principal.roles.clone(),
            client,
            statement: statement.into(),
            products: Vec::new(),
            rows: 0,
            bytes: 0,
            duration_ms: 0.0,
            outcome: Outcome::Ok,
            replanned: None,
        }
    }

    pub fn finish(&mut self, duration: Duration, outcome: Outcome) {
        self.duration_ms = duration.as_secs_f64() * 1000.0;
        self.outcome = outcome;
    }
}

/// An append-only JSON-lines audit file, shared by every session of a process.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl AuditLog {
    /// Opens (creating if needed) the audit file for appending.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                context: format!("cannot create the audit directory {}", dir.display()),
                source,
            })?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| Error::Io {
                context: format!("cannot open the audit log {}", path.display()),
                source,
            })?;
        Ok(Self {
            path,
            file: Mutex::new(file),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record as one line, written with a single `write` so
    /// concurrent writers never interleave.
    pub fn write(&self, record: &AuditRecord) -> Result<()> {
        let mut line = serde_json::to_vec(record).map_err(|e| Error::Io {
            context: "cannot encode an audit record".into(),
            source: std::io::Error::other(e),
        })?;
        line.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.write_all(&line).map_err(|source| Error::Io {
            context: format!("cannot append to the audit log {}", self.path.display()),
            source,
        })
    }
}

/// `2026-11-21T10:04:05.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A result stream that writes its statement's audit record when it ends,
/// fails, or is dropped unfinished.
pub(crate) struct AuditedStream {
    pub(crate) inner: datafusion::execution::SendableRecordBatchStream,
    pub(crate) log: std::sync::Arc<AuditLog>,
    pub(crate) record: Option<AuditRecord>,
    pub(crate) started: std::time::Instant,
    pub(crate) outcome: Option<Outcome>,
    pub(crate) replanned: crate::session::Replanned,
}

impl AuditedStream {
    fn write(&mut self) {
        if let Some(mut record) = self.record.take() {
            let outcome = self.outcome.take().unwrap_or(Outcome::Cancelled);
            record.finish(self.started.elapsed(), outcome);
            record.replanned = self.replanned.get().map(str::to_owned);
            // An audit failure must not pass silently, but cannot fail a
            // result already delivered: it goes to the process's log.
            if let Err(e) = self.log.write(&record) {
                report_audit_failure(&e);
            }
        }
    }
}

fn report_audit_failure(e: &Error) {
    eprintln!("meshql: cannot write the audit record: {e}");
}

impl futures::Stream for AuditedStream {
    type Item = datafusion::error::Result<arrow::record_batch::RecordBatch>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let polled = self.inner.as_mut().poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(batch))) => {
                if let Some(r) = self.record.as_mut() {
                    r.rows += batch.num_rows() as u64;
                    r.bytes += batch.get_array_memory_size() as u64;
                }
            }
            Poll::Ready(Some(Err(e))) => {
                let message = crate::error::clean_datafusion_message(e);
                let err = if matches!(
                    e.find_root(),
                    datafusion::error::DataFusionError::ResourcesExhausted(_)
                ) {
                    Error::ResourcesExhausted(message)
                } else {
                    Error::Execution(datafusion::error::DataFusionError::Execution(message))
                };
                self.outcome = Some(Outcome::from_error(&err));
                self.write();
            }
            Poll::Ready(None) => {
                if self.outcome.is_none() {
                    self.outcome = Some(Outcome::Ok);
                }
                self.write();
            }
            Poll::Pending => {}
        }
        polled
    }
}

impl datafusion::execution::RecordBatchStream for AuditedStream {
    fn schema(&self) -> arrow::datatypes::SchemaRef {
        self.inner.schema()
    }
}

impl Drop for AuditedStream {
    fn drop(&mut self) {
        self.write();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40.123Z");
    }

    #[test]
    fn records_append_one_line_each_and_keep_no_execution_messages() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = AuditLog::open(dir.path().join("a/audit.jsonl")).expect("open");
        let p = Principal::new("analyst").with_role("analyst");
        let mut r = AuditRecord::start(SystemTime::now(), "q1", &p, None, "SELECT 1");
        r.finish(Duration::from_millis(3), Outcome::Ok);
        log.write(&r).expect("write");
        let e = Error::Execution(datafusion::error::DataFusionError::Execution(
            "cannot cast 'alice@example.com' to Int64".into(),
        ));
        r.finish(Duration::from_millis(1), Outcome::from_error(&e));
        log.write(&r).expect("write");
        let text = std::fs::read_to_string(log.path()).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let second: serde_json::Value = serde_json::from_str(lines[1]).expect("json");
        assert_eq!(second["outcome"]["error"]["kind"], "execution");
        assert!(!text.contains("alice@example.com"), "{text}");
    }
}
