//! The catalog as JSON under `/api/v1/`, for tools and scripts: the same
//! data as the pages, read the same way as the viewer, and `POST
//! /api/v1/query`, which answers Arrow IPC or JSON.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::pages::{ProductRow, Rows};
use super::{Client, Viewer, Web, csrf_ok, product_name};

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

fn unauthenticated() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "authentication required: send Authorization: Bearer TOKEN, or sign in at /login",
    )
}

fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such data product")
}

/// Rows as JSON objects.
fn objects((names, rows): &Rows) -> Value {
    Value::Array(
        rows.iter()
            .map(|r| {
                Value::Object(
                    names
                        .iter()
                        .zip(r)
                        .map(|(n, v)| (n.clone(), v.clone().map_or(Value::Null, Value::String)))
                        .collect(),
                )
            })
            .collect(),
    )
}

fn product_json(p: &ProductRow) -> Value {
    let mut fields: serde_json::Map<String, Value> = p
        .fields
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    fields.insert("name".into(), Value::String(p.name()));
    Value::Object(fields)
}

pub(crate) async fn products(State(web): State<Web>, headers: HeaderMap) -> Response {
    let Some(viewer) = web.viewer(&headers) else {
        return unauthenticated();
    };
    match web.products(&viewer).await {
        Ok(list) => Json(json!({
            "products": list.iter().map(product_json).collect::<Vec<_>>()
        }))
        .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e),
    }
}

async fn visible(web: &Web, viewer: &Viewer, name: &str) -> Result<ProductRow, Response> {
    let Some((domain, product)) = product_name(name) else {
        return Err(not_found());
    };
    match web.product_row(viewer, &domain, &product).await {
        Ok(Some(row)) => Ok(row),
        Ok(None) => Err(not_found()),
        Err(e) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, &e)),
    }
}

pub(crate) async fn product(
    State(web): State<Web>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let Some(viewer) = web.viewer(&headers) else {
        return unauthenticated();
    };
    match visible(&web, &viewer, &name).await {
        Ok(row) => Json(product_json(&row)).into_response(),
        Err(r) => r,
    }
}

pub(crate) async fn product_part(
    State(web): State<Web>,
    headers: HeaderMap,
    Path((name, part)): Path<(String, String)>,
) -> Response {
    let Some(viewer) = web.viewer(&headers) else {
        return unauthenticated();
    };
    let row = match visible(&web, &viewer, &name).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let lit = super::lit;
    let result = match part.as_str() {
        "columns" => web.columns(&viewer, &row).await,
        "quality" => {
            web.meta(
                &viewer,
                &format!(
                    "SELECT \"check\", rule, column_name, outcome, message, CAST(checked_at AS VARCHAR) AS checked_at, location \
                     FROM meshql.quality WHERE domain = {} AND product = {}",
                    lit(&row.domain),
                    lit(&row.product)
                ),
            )
            .await
        }
        "lineage" => {
            let visible: std::collections::BTreeSet<String> = match web.products(&viewer).await {
                Ok(p) => p.iter().map(ProductRow::name).collect(),
                Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e),
            };
            let me = row.name();
            let mut rows = Vec::new();
            for c in &web.sql.mesh().catalog().contracts {
                let Some(up) = c.custom_properties.get("upstream") else {
                    continue;
                };
                for u in up.split(',').map(str::trim) {
                    let (from, to) = (c.qualified_name(), u.to_string());
                    if (from == me || to == me) && visible.contains(&from) && visible.contains(&to) {
                        rows.push(vec![Some(to), Some(from), Some("upstream".into())]);
                    }
                }
            }
            Ok((
                vec!["upstream".into(), "downstream".into(), "relation".into()],
                rows,
            ))
        }
        _ => return not_found(),
    };
    match result {
        Ok(rows) => Json(json!({ "product": row.name(), part: objects(&rows) })).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e),
    }
}

#[derive(Deserialize)]
pub(crate) struct QueryRequest {
    sql: String,
    /// `json` (the default) or `arrow` (an Arrow IPC stream).
    #[serde(default)]
    format: Option<String>,
}

pub(crate) async fn query(
    State(web): State<Web>,
    headers: HeaderMap,
    Client(client): Client,
    body: axum::body::Bytes,
) -> Response {
    let Some(viewer) = web.viewer(&headers) else {
        return unauthenticated();
    };
    // A browser session must send its CSRF token in a header.
    let sent = headers.get("x-csrf-token").and_then(|v| v.to_str().ok());
    if !csrf_ok(&viewer, sent) {
        return error(
            StatusCode::FORBIDDEN,
            "missing or wrong X-CSRF-Token for this session",
        );
    }
    let request: QueryRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "the body must be JSON {{\"sql\": \"...\", \"format\": \"json\" | \"arrow\"}}: {e}"
                ),
            );
        }
    };
    let started = std::time::Instant::now();
    let (schema, batches) = match web
        .sql
        .collect(&viewer.principal, &request.sql, client)
        .await
    {
        Ok(r) => r,
        Err(status) => return error(super::http_status(&status), status.message()),
    };
    match request.format.as_deref().unwrap_or("json") {
        "arrow" => match ipc(&schema, &batches) {
            Ok(bytes) => (
                [(header::CONTENT_TYPE, "application/vnd.apache.arrow.stream")],
                bytes,
            )
                .into_response(),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e),
        },
        "json" => {
            let rows = super::html::cells(&batches, usize::MAX);
            Json(json!({
                "columns": schema.fields().iter().map(|f| json!({"name": f.name(), "type": f.data_type().to_string()})).collect::<Vec<_>>(),
                "rows": objects(&rows),
                "row_count": rows.1.len(),
                "elapsed_ms": started.elapsed().as_secs_f64() * 1e3,
            }))
            .into_response()
        }
        other => error(
            StatusCode::BAD_REQUEST,
            &format!("unknown format `{other}`: json or arrow"),
        ),
    }
}

/// A result as an Arrow IPC stream.
fn ipc(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut writer =
        arrow::ipc::writer::StreamWriter::try_new(&mut out, schema).map_err(|e| e.to_string())?;
    for b in batches {
        writer.write(b).map_err(|e| e.to_string())?;
    }
    writer.finish().map_err(|e| e.to_string())?;
    drop(writer);
    Ok(out)
}

/// A result as CSV with a header row.
pub(crate) fn csv(batches: &[RecordBatch]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    {
        let mut writer = arrow::csv::WriterBuilder::new()
            .with_header(true)
            .build(&mut out);
        for b in batches {
            writer.write(b).map_err(|e| e.to_string())?;
        }
    }
    Ok(out)
}

/// A result as a Parquet file.
pub(crate) fn parquet(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut writer =
        datafusion::parquet::arrow::ArrowWriter::try_new(&mut out, Arc::clone(schema), None)
            .map_err(|e| e.to_string())?;
    for b in batches {
        writer.write(b).map_err(|e| e.to_string())?;
    }
    writer.close().map_err(|e| e.to_string())?;
    Ok(out)
}
