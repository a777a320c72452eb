//! How meshql's errors reach a Flight SQL client.

use meshql::Error;
use meshql::audit::Outcome;
use tonic::{Code, Status};

/// The status for an engine error. Users get the message they can act on,
/// with its position; a bug gets `Internal` and a query id to find it in
/// the server's log, never its details.
pub fn to_status(e: &Error, query_id: &str) -> Status {
    match e {
        Error::Sql(m) if m.starts_with("product `") && m.contains("does not exist") => {
            // Word for word the same for a hidden product and a missing one.
            Status::not_found(m.clone())
        }
        Error::Sql(m) => Status::invalid_argument(m.clone()),
        Error::PermissionDenied(m) => Status::permission_denied(m.clone()),
        Error::ResourcesExhausted(m) => Status::resource_exhausted(m.clone()),
        Error::Cancelled => Status::cancelled("the query was cancelled"),
        Error::Product { .. } => Status::unavailable(e.to_string()),
        Error::Unavailable(m) => Status::unavailable(m.clone()),
        Error::Execution(df) if meshql::cluster::unavailable_worker(&df.to_string()).is_some() => {
            Status::unavailable(
                meshql::cluster::unavailable_worker(&df.to_string()).unwrap_or_default(),
            )
        }
        Error::Execution(df) => match df.find_root() {
            datafusion::error::DataFusionError::Internal(_)
            | datafusion::error::DataFusionError::ExecutionJoin(_)
            | datafusion::error::DataFusionError::IoError(_) => internal(e, query_id),
            _ => Status::invalid_argument(e.to_string()),
        },
        Error::Manifest(_) | Error::Io { .. } => internal(e, query_id),
    }
}

fn internal(e: &Error, query_id: &str) -> Status {
    tracing::error!(query_id, error = %e, "internal error");
    Status::internal(format!(
        "internal error in meshql (query {query_id}); the server log has the details"
    ))
}

/// The audit outcome of a status sent to the client.
pub fn outcome(status: &Status) -> Outcome {
    let (kind, keep) = match status.code() {
        Code::Cancelled => return Outcome::Cancelled,
        Code::InvalidArgument => ("sql", true),
        Code::NotFound => ("not_found", true),
        Code::PermissionDenied => ("permission_denied", true),
        Code::Unauthenticated => ("unauthenticated", true),
        Code::ResourceExhausted => ("resources_exhausted", true),
        Code::Unavailable => ("product", false),
        _ => ("execution", false),
    };
    Outcome::Error {
        kind: kind.into(),
        message: keep.then(|| status.message().to_string()),
    }
}
