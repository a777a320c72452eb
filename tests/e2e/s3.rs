//! Products on a real S3-compatible server (s3s-fs, in process, speaking the
//! S3 protocol over HTTP on 127.0.0.1), uploaded by a real S3 client.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use meshql::Mesh;
use object_store::aws::AmazonS3Builder;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::util::*;

pub const ACCESS_KEY: &str = "meshql-test";
pub const SECRET_KEY: &str = "meshql-test-secret";

pub struct S3Server {
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

/// Starts an S3 server with one empty bucket, on a free port of 127.0.0.1.
pub async fn start(bucket: &str) -> S3Server {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join(bucket)).expect("bucket dir");
    let fs = s3s_fs::FileSystem::new(dir.path()).expect("s3s-fs");
    let mut builder = s3s::service::S3ServiceBuilder::new(fs);
    builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
    let service = builder.build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let service = service.clone();
            tokio::spawn(async move {
                let _ = ConnBuilder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(socket), service)
                    .await;
            });
        }
    });
    S3Server {
        endpoint: format!("http://{addr}"),
        _dir: dir,
    }
}

/// Uploads every file under `local` to `bucket/prefix/...` through the S3 API.
pub async fn upload(endpoint: &str, bucket: &str, prefix: &str, local: &Path) {
    let store = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_endpoint(endpoint)
        .with_region("us-east-1")
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .with_access_key_id(ACCESS_KEY)
        .with_secret_access_key(SECRET_KEY)
        .build()
        .expect("client");
    let store: Arc<dyn ObjectStore> = Arc::new(store);
    let mut stack: Vec<PathBuf> = vec![local.to_path_buf()];
    while let Some(p) = stack.pop() {
        for entry in std::fs::read_dir(&p).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                let rel = path
                    .strip_prefix(local)
                    .expect("relative")
                    .to_string_lossy()
                    .replace('\\', "/");
                let key = object_store::path::Path::from(format!("{prefix}/{rel}"));
                let bytes = std::fs::read(&path).expect("read");
                store.put(&key, bytes.into()).await.expect("upload");
            }
        }
    }
}

/// The demo mesh's contracts, moved onto an S3 storage.
pub fn s3_mesh(dir: &Path, endpoint: &str, bucket: &str, key: &str, secret: &str) {
    write(
        dir,
        "mesh.yaml",
        &format!(
            "apiVersion: meshql/v1\nkind: Mesh\nname: s3-demo\nstorage:\n  lake:\n    type: s3\n    bucket: {bucket}\n    prefix: mesh/v1\n    endpoint: {endpoint}\n    region: us-east-1\n    pathStyle: true\n    accessKeyId: {key}\n    secretAccessKey: {secret}\n    connectTimeoutSeconds: 2\n    maxRetries: 0\ngovernance:\n  pseudonymSecret: s3-test\n  roles: [pii_reader]\n"
        ),
    );
    let catalog = root().join("catalog");
    for governance in ["users.yaml", "policies.yaml"] {
        let text = std::fs::read_to_string(catalog.join(governance)).expect("governance file");
        write(dir, governance, &text);
    }
    for domain in std::fs::read_dir(&catalog).expect("catalog") {
        let domain = domain.expect("entry").path();
        if !domain.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&domain).expect("domain") {
            let file = file.expect("entry").path();
            let text = std::fs::read_to_string(&file).expect("contract");
            let text = text
                .replace(
                    "server: demo\n    type: local",
                    "server: lake\n    type: s3",
                )
                // The Iceberg orders, as their Parquet landing files.
                .replace(
                    "server: lakehouse\n    type: iceberg\n    schema: sales\n    table: orders",
                    "server: lake\n    type: s3\n    format: parquet\n    path: sales/orders",
                );
            let rel = file.strip_prefix(&catalog).expect("relative");
            write(dir, &rel.to_string_lossy(), &text);
        }
    }
}

pub(crate) const QUESTIONS: &[&str] = &[
    "SELECT count(*), sum(total_order_value) FROM sales.orders",
    "SELECT c.segment, count(*) AS orders FROM sales.orders o JOIN customers.customers c ON o.customer_id = c.customer_id \
     WHERE o.order_date BETWEEN DATE '2026-07-01' AND DATE '2026-09-30' GROUP BY c.segment ORDER BY c.segment",
    "SELECT t.currency, sum(CASE WHEN t.status = 'captured' THEN t.amount WHEN t.status = 'refunded' THEN -t.amount ELSE 0 END) \
     FROM payments.transactions t JOIN sales.orders o ON t.order_id = o.order_id GROUP BY t.currency ORDER BY t.currency",
    "SELECT name, list_price FROM catalog.products WHERE product_id = 1005",
];

#[tokio::test]
async fn products_on_s3_answer_exactly_as_on_local_disk() {
    let server = start("lakehouse").await;
    upload(&server.endpoint, "lakehouse", "mesh/v1", &demo_data()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    s3_mesh(
        dir.path(),
        &server.endpoint,
        "lakehouse",
        ACCESS_KEY,
        SECRET_KEY,
    );

    let s3 = Mesh::open_strict(dir.path())
        .expect("opens")
        .session(admin());
    let local = demo_mesh().session(admin());
    for sql in QUESTIONS {
        let remote = s3
            .collect(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let expected = local.collect(sql).await.expect("local");
        assert_eq!(rows(&remote), rows(&expected), "{sql}");
        assert!(!rows(&remote).is_empty(), "{sql}");
    }
}

#[tokio::test]
async fn wrong_credentials_give_an_error_naming_the_product_without_the_secret() {
    let server = start("lakehouse").await;
    upload(&server.endpoint, "lakehouse", "mesh/v1", &demo_data()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    s3_mesh(
        dir.path(),
        &server.endpoint,
        "lakehouse",
        ACCESS_KEY,
        "not-the-secret",
    );
    let session = Mesh::open_strict(dir.path())
        .expect("opens")
        .session(admin());
    let err = session
        .collect("SELECT count(*) FROM sales.orders")
        .await
        .expect_err("denied by S3");
    let msg = err.to_string();
    assert!(msg.starts_with("data product sales.orders: cannot read its storage at s3://lakehouse/mesh/v1/sales/orders/"), "{msg}");
    assert!(!msg.contains("not-the-secret"), "{msg}");
}
