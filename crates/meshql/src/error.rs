use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;

/// Errors of the meshql engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The mesh's catalog files are invalid or unreadable.
    #[error(transparent)]
    Manifest(#[from] meshql_manifest::Error),
    /// A SQL statement could not be parsed or planned; the message says
    /// where, and what exists nearby.
    #[error("{0}")]
    Sql(String),
    /// The statement is not allowed: meshql is a read-only engine.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// A data product's storage could not be opened or does not match its contract.
    #[error("data product {product}: {message}")]
    Product { product: String, message: String },
    /// The query needed more than its limits allow (memory, rows, time).
    #[error("resources exhausted: {0}")]
    ResourcesExhausted(String),
    /// A worker the query's stages ran on could not be reached.
    #[error("{0}")]
    Unavailable(String),
    /// The query was cancelled.
    #[error("query cancelled")]
    Cancelled,
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// Any other failure while executing a query.
    #[error("{}", clean_datafusion_message(.0))]
    Execution(#[source] DataFusionError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// DataFusion wraps errors in layers of context; the user wants the message.
pub(crate) fn clean_datafusion_message(e: &DataFusionError) -> String {
    let mut current = e;
    loop {
        match current {
            DataFusionError::Context(_, inner) => current = inner,
            DataFusionError::Diagnostic(_, inner) => current = inner,
            DataFusionError::Shared(inner) => current = inner,
            DataFusionError::External(inner) => {
                if let Some(product) = inner.downcast_ref::<Error>() {
                    return product.to_string();
                }
                if let Some(df) = inner.downcast_ref::<DataFusionError>() {
                    current = df;
                    continue;
                }
                return inner.to_string();
            }
            DataFusionError::ArrowError(inner, _) => return required_but_null(inner.to_string()),
            DataFusionError::ObjectStore(inner) => return inner.to_string(),
            DataFusionError::ParquetError(inner) => return parquet_message(inner),
            DataFusionError::Plan(m) | DataFusionError::Execution(m) => return m.clone(),
            DataFusionError::SQL(inner, _) => return inner.to_string(),
            DataFusionError::SchemaError(inner, _) => return inner.to_string(),
            other => return other.strip_backtrace(),
        }
    }
}

/// The Parquet reader's error. A filter evaluated while the file is decoded
/// comes back as text (`Error evaluating filter predicate: <the error's
/// Debug form>`); the user gets the failure in the words the same filter
/// has when it runs above the scan.
fn parquet_message(e: &datafusion::parquet::errors::ParquetError) -> String {
    use datafusion::parquet::errors::ParquetError;
    let text = match e {
        ParquetError::External(inner) => inner.to_string(),
        other => return other.to_string(),
    };
    let Some((_, debug)) = text.split_once("Error evaluating filter predicate: ") else {
        return text;
    };
    predicate_failure(debug).unwrap_or(text)
}

/// The message inside the Debug form of a DataFusion error raised by a
/// filter, for the errors a filter raises: Arrow's (division by zero,
/// overflow, casts) and DataFusion's execution errors.
fn predicate_failure(debug: &str) -> Option<String> {
    if debug.starts_with("ArrowError(DivideByZero") {
        return Some(ArrowError::DivideByZero.to_string());
    }
    let inner = debug
        .strip_prefix("ArrowError(")
        .or_else(|| debug.strip_prefix("Execution("))?;
    let start = inner.find('"')?;
    let message = &inner[start + 1..];
    // The message ends at the first quote that is not escaped.
    let mut out = String::new();
    let mut chars = message.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            '"' => return Some(out),
            c => out.push(c),
        }
    }
    None
}

/// Arrow's refusal of NULLs in a column the schema declares non-nullable,
/// in the words of a contract.
fn required_but_null(message: String) -> String {
    let column = message
        .split_once("Column '")
        .and_then(|(_, rest)| {
            rest.split_once("' is declared as non-nullable but contains null values")
        })
        .map(|(column, _)| column.to_string());
    match column {
        Some(c) => format!(
            "column `{c}` holds NULLs, but its contract declares it required; `meshql check` counts them"
        ),
        None => message,
    }
}

/// Finds a meshql product error inside a DataFusion error, if there is one.
pub(crate) fn product_error(e: &DataFusionError) -> Option<&Error> {
    let mut current = e;
    loop {
        match current {
            DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
                current = inner
            }
            DataFusionError::Shared(inner) => current = inner,
            DataFusionError::External(inner) => {
                if let Some(err) = inner.downcast_ref::<Error>() {
                    return Some(err);
                }
                current = inner.downcast_ref::<DataFusionError>()?;
            }
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::parquet::errors::ParquetError;

    /// How the Parquet reader reports a failed filter.
    fn from_reader(e: DataFusionError) -> DataFusionError {
        let text = format!("Error evaluating filter predicate: {e:?}");
        DataFusionError::ParquetError(Box::new(ParquetError::External(Box::new(
            ArrowError::ComputeError(text),
        ))))
    }

    #[test]
    fn a_filter_failing_inside_the_parquet_reader_says_what_failed() {
        let divide = from_reader(DataFusionError::ArrowError(
            Box::new(ArrowError::DivideByZero),
            Some(String::new()),
        ));
        assert_eq!(clean_datafusion_message(&divide), "Divide by zero error");
        let cast = from_reader(DataFusionError::ArrowError(
            Box::new(ArrowError::CastError(
                "Cannot cast string \"x\" to Int64".into(),
            )),
            None,
        ));
        assert_eq!(
            clean_datafusion_message(&cast),
            "Cannot cast string \"x\" to Int64"
        );
        let execution = from_reader(DataFusionError::Execution("no such value".into()));
        assert_eq!(clean_datafusion_message(&execution), "no such value");
        // Anything else keeps the reader's own words.
        let other =
            DataFusionError::ParquetError(Box::new(ParquetError::General("bad page".into())));
        assert!(clean_datafusion_message(&other).contains("bad page"));
    }
}
