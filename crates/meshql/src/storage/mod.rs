//! Where products' data lives: local directories and S3-compatible buckets
//! named in `mesh.yaml`, registered once with the mesh's runtime, and the
//! Iceberg tables among it ([`iceberg`]).
//!
//! Storage knows contracts only as Arrow schemas (`crate::types`); it uses
//! nothing of governance, sessions or the mesh above it.

pub(crate) mod iceberg;

use std::sync::Arc;
use std::time::Duration;

use datafusion::execution::runtime_env::RuntimeEnv;
use meshql_manifest::{S3Storage, Server, Storage, StorageKind};
use object_store::aws::AmazonS3Builder;
use object_store::{ClientOptions, RetryConfig};
use url::Url;

use crate::error::{Error, Result};

/// Registers every S3 storage's object store with the runtime. Building a
/// store does not contact it: storage is touched only when a product is read.
pub(crate) fn register_stores(
    runtime: &RuntimeEnv,
    storage: &std::collections::BTreeMap<String, Storage>,
) -> Result<iceberg::io::Buckets> {
    let mut buckets: std::collections::HashMap<String, Arc<dyn object_store::ObjectStore>> =
        std::collections::HashMap::new();
    for st in storage.values() {
        if let StorageKind::S3(s3) = &st.kind {
            let store = build_s3(s3).map_err(|e| Error::Product {
                product: format!("storage `{}`", st.name),
                message: e,
            })?;
            let url = Url::parse(&format!("s3://{}", s3.bucket)).map_err(|e| Error::Product {
                product: format!("storage `{}`", st.name),
                message: format!("invalid bucket name `{}`: {e}", s3.bucket),
            })?;
            let store: Arc<dyn object_store::ObjectStore> = Arc::new(store);
            runtime.register_object_store(&url, Arc::clone(&store));
            buckets.insert(s3.bucket.clone(), store);
        }
    }
    Ok(Arc::new(buckets))
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The usual AWS environment variables override what `mesh.yaml` says.
fn build_s3(s3: &S3Storage) -> Result<object_store::aws::AmazonS3, String> {
    let endpoint = env("AWS_ENDPOINT_URL_S3")
        .or_else(|| env("AWS_ENDPOINT_URL"))
        .or_else(|| s3.endpoint.clone());
    let region = env("AWS_REGION")
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .or_else(|| s3.region.clone())
        .unwrap_or_else(|| "us-east-1".to_string());
    let key = env("AWS_ACCESS_KEY_ID").or_else(|| s3.access_key_id.clone());
    let secret = env("AWS_SECRET_ACCESS_KEY").or_else(|| s3.secret_access_key.clone());
    let token = env("AWS_SESSION_TOKEN").or_else(|| s3.session_token.clone());
    let allow_http = match env("AWS_ALLOW_HTTP") {
        Some(v) => v == "true" || v == "1",
        None => {
            s3.allow_http
                || endpoint
                    .as_deref()
                    .is_some_and(|e| e.starts_with("http://"))
        }
    };

    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(&s3.bucket)
        .with_region(region)
        .with_virtual_hosted_style_request(!s3.path_style)
        .with_allow_http(allow_http)
        .with_client_options(
            ClientOptions::new()
                .with_connect_timeout(Duration::from_secs(s3.connect_timeout_secs.max(1)))
                .with_allow_http(allow_http),
        )
        .with_retry(RetryConfig {
            max_retries: s3.max_retries,
            retry_timeout: Duration::from_secs(s3.connect_timeout_secs.max(1) * 4),
            ..RetryConfig::default()
        });
    if let Some(endpoint) = endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    match (key, secret) {
        (Some(key), Some(secret)) => {
            builder = builder
                .with_access_key_id(key)
                .with_secret_access_key(secret);
            if let Some(token) = token {
                builder = builder.with_token(token);
            }
        }
        // Without credentials, read anonymously rather than asking an
        // instance-metadata endpoint.
        _ => builder = builder.with_skip_signature(true),
    }
    builder
        .build()
        .map_err(|e| format!("cannot configure S3 access: {e}"))
}

/// The listing URL of a product: a file, a glob, or a directory / prefix.
pub(crate) fn product_url(storage: &Storage, server: &Server) -> String {
    let path = server.path.trim_start_matches("./");
    let is_file = path.ends_with(".parquet") || path.contains(['*', '?', '[']);
    let suffix = if is_file || path.ends_with('/') {
        ""
    } else {
        "/"
    };
    match &storage.kind {
        StorageKind::Local { root } => {
            let base = std::path::absolute(root).unwrap_or_else(|_| root.clone());
            let mut s = base.join(path).to_string_lossy().into_owned();
            s.push_str(suffix);
            s
        }
        StorageKind::S3(s3) => {
            let prefix = if s3.prefix.is_empty() {
                String::new()
            } else {
                format!("{}/", s3.prefix)
            };
            format!("s3://{}/{prefix}{path}{suffix}", s3.bucket)
        }
    }
}
