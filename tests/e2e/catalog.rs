//! Opening meshes: lazily, leniently, and with clear errors per product.

use meshql::{Error, Mesh};

use crate::util::*;

const UNREACHABLE_S3: &str = "  lake:\n    type: s3\n    bucket: nowhere\n    endpoint: http://127.0.0.1:1\n    pathStyle: true\n    accessKeyId: k\n    secretAccessKey: s\n    connectTimeoutSeconds: 1\n    maxRetries: 0\n";

fn mesh_yaml(data: &std::path::Path) -> String {
    format!(
        "apiVersion: meshql/v1\nkind: Mesh\nname: t\nstorage:\n  demo:\n    type: local\n    root: {}\n{UNREACHABLE_S3}",
        data.display()
    )
}

#[tokio::test]
async fn a_mesh_of_ten_thousand_contracts_opens_without_touching_storage() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "mesh.yaml", &mesh_yaml(&demo_data()));
    allow_all(dir.path());
    for d in 0..100 {
        for p in 0..100 {
            let domain = format!("domain_{d:03}");
            let product = format!("product_{p:03}");
            write(
                dir.path(),
                &format!("{domain}/{product}.yaml"),
                &contract(
                    &domain,
                    &product,
                    &[("id", "bigint"), ("name", "varchar")],
                    "lake",
                    "s3",
                    &format!("{domain}/{product}"),
                ),
            );
        }
    }
    // Every product's storage is an S3 endpoint nothing listens on: opening
    // the mesh and reading its metadata would fail if they touched storage.
    let mesh = Mesh::open_strict(dir.path()).expect("opens");
    assert_eq!(mesh.product_names().len(), 10_000);
    let session = mesh.session(admin());
    let tables = session
        .collect("SELECT count(*) FROM information_schema.tables WHERE table_catalog = 'mesh' AND table_schema LIKE 'domain_%'")
        .await
        .expect("metadata query");
    assert_eq!(rows(&tables), vec![vec!["10000".to_string()]]);
    let columns = session
        .collect("SELECT data_type FROM information_schema.columns WHERE table_schema = 'domain_042' AND table_name = 'product_007' ORDER BY ordinal_position")
        .await
        .expect("columns");
    assert_eq!(
        rows(&columns),
        // Strings are computed as views inside queries (and delivered as
        // Utf8).
        vec![vec!["Int64".to_string()], vec!["Utf8View".to_string()]]
    );
    // Planning (not executing) a query on a product is also storage-free.
    session
        .sql("SELECT a.id FROM domain_001.product_001 a JOIN domain_002.product_002 b ON a.id = b.id")
        .await
        .expect("plans without storage");
}

#[tokio::test]
async fn an_unreachable_product_fails_alone_and_names_itself() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "mesh.yaml", &mesh_yaml(&demo_data()));
    allow_all(dir.path());
    write(
        dir.path(),
        "sales/remote_orders.yaml",
        &contract(
            "sales",
            "remote_orders",
            &[("order_id", "bigint")],
            "lake",
            "s3",
            "orders/",
        ),
    );
    write(
        dir.path(),
        "catalog/products.yaml",
        &contract(
            "catalog",
            "products",
            &[("product_id", "bigint"), ("name", "varchar")],
            "demo",
            "local",
            "catalog/products/products.parquet",
        ),
    );
    let mesh = Mesh::open_strict(dir.path()).expect("opens");
    let session = mesh.session(admin());
    let err = session
        .collect("SELECT count(*) FROM sales.remote_orders")
        .await
        .expect_err("storage is unreachable");
    let msg = err.to_string();
    assert!(matches!(err, Error::Product { .. }), "{msg}");
    assert!(
        msg.starts_with(
            "data product sales.remote_orders: cannot read its storage at s3://nowhere/orders/"
        ),
        "{msg}"
    );
    assert!(
        !msg.contains("secretAccessKey") && !msg.contains("\"s\""),
        "{msg}"
    );
    let ok = session
        .collect("SELECT count(*) FROM catalog.products")
        .await
        .expect("the other product still works");
    assert_eq!(rows(&ok), vec![vec!["320".to_string()]]);
}

#[tokio::test]
async fn data_that_drifted_from_its_contract_is_reported_per_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "mesh.yaml", &mesh_yaml(&demo_data()));
    allow_all(dir.path());
    write(
        dir.path(),
        "catalog/products.yaml",
        &contract(
            "catalog",
            "products",
            &[
                ("product_id", "bigint"),
                ("list_price", "double"),
                ("sku", "varchar"),
            ],
            "demo",
            "local",
            "catalog/products/products.parquet",
        ),
    );
    let mesh = Mesh::open_strict(dir.path()).expect("opens");
    let err = mesh
        .session(admin())
        .collect("SELECT product_id FROM catalog.products")
        .await
        .expect_err("drifted");
    let msg = err.to_string();
    assert!(
        msg.contains("data product catalog.products: the data does not match the contract"),
        "{msg}"
    );
    assert!(
        msg.contains(
            "column `list_price`: the contract declares double, the data has decimal(10,2)"
        ),
        "{msg}"
    );
    assert!(
        msg.contains("column `sku` is declared in the contract but missing from the data"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_product_with_no_files_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "mesh.yaml", &mesh_yaml(dir.path()));
    allow_all(dir.path());
    write(
        dir.path(),
        "sales/empty.yaml",
        &contract(
            "sales",
            "empty",
            &[("id", "bigint")],
            "demo",
            "local",
            "nothing/here",
        ),
    );
    let mesh = Mesh::open_strict(dir.path()).expect("opens");
    let err = mesh
        .session(admin())
        .collect("SELECT * FROM sales.empty")
        .await
        .expect_err("no data");
    assert!(
        err.to_string().starts_with("data product sales.empty: "),
        "{err}"
    );
}

#[tokio::test]
async fn a_broken_contract_is_left_out_leniently_and_fails_strictly() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "mesh.yaml", &mesh_yaml(&demo_data()));
    allow_all(dir.path());
    write(
        dir.path(),
        "catalog/products.yaml",
        &contract(
            "catalog",
            "products",
            &[("product_id", "bigint")],
            "demo",
            "local",
            "catalog/products/products.parquet",
        ),
    );
    write(
        dir.path(),
        "sales/orders.yaml",
        &contract(
            "sales",
            "orders",
            &[("order_id", "geometry")],
            "demo",
            "local",
            "sales/orders",
        ),
    );
    let mesh = Mesh::open(dir.path()).expect("lenient open succeeds");
    assert_eq!(mesh.product_names(), vec!["catalog.products".to_string()]);
    assert_eq!(mesh.problems().len(), 1);
    let problem = mesh.problems()[0].to_string();
    assert!(
        problem.contains("orders.yaml:14:23: meshql cannot map physicalType `geometry`"),
        "{problem}"
    );
    let session = mesh.session(admin());
    session
        .collect("SELECT count(*) FROM catalog.products")
        .await
        .expect("the good product works");

    let err = Mesh::open_strict(dir.path()).expect_err("strict open fails");
    assert!(err.to_string().contains("orders.yaml:14:23"), "{err}");
}

#[tokio::test]
async fn writes_and_file_reads_are_refused() {
    let session = demo_mesh().session(admin());
    for sql in [
        "CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/etc/'",
        "INSERT INTO sales.orders SELECT * FROM sales.orders",
        "COPY (SELECT 1) TO '/tmp/meshql-copy.parquet'",
        "CREATE TABLE t AS SELECT 1",
        "SET datafusion.execution.target_partitions = 1",
    ] {
        let err = session.collect(sql).await.expect_err(sql);
        assert!(matches!(err, Error::PermissionDenied(_)), "{sql}: {err}");
    }
    // Files are reached only through contracts.
    for sql in [
        "SELECT * FROM '/etc/passwd'",
        "SELECT * FROM \"/etc/passwd\"",
        "SELECT * FROM read_parquet('/etc/passwd')",
    ] {
        let err = session.collect(sql).await.expect_err("no file reads");
        assert!(matches!(err, Error::PermissionDenied(_)), "{sql}: {err}");
    }
}

#[tokio::test]
async fn a_product_can_be_a_file_a_directory_or_a_glob() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "mesh.yaml", &mesh_yaml(&demo_data()));
    allow_all(dir.path());
    let cols = [("order_id", "bigint"), ("order_date", "date")];
    write(
        dir.path(),
        "sales/all.yaml",
        &contract("sales", "all", &cols, "demo", "local", "sales/orders"),
    );
    write(
        dir.path(),
        "sales/one_month.yaml",
        &contract(
            "sales",
            "one_month",
            &cols,
            "demo",
            "local",
            "sales/orders/orders-2026-09.parquet",
        ),
    );
    write(
        dir.path(),
        "sales/this_year.yaml",
        &contract(
            "sales",
            "this_year",
            &cols,
            "demo",
            "local",
            "sales/orders/orders-2026-*.parquet",
        ),
    );
    let session = Mesh::open_strict(dir.path())
        .expect("opens")
        .session(admin());
    let got = session
        .collect(
            "SELECT (SELECT count(*) FROM sales.all WHERE order_date >= DATE '2026-09-01') AS a, \
                    (SELECT count(*) FROM sales.one_month) AS b, \
                    (SELECT count(*) FROM sales.all WHERE order_date >= DATE '2026-01-01') AS c, \
                    (SELECT count(*) FROM sales.this_year) AS d",
        )
        .await
        .expect("query");
    let r = &rows(&got)[0];
    assert_eq!(r[0], r[1], "a single file is one month");
    assert_eq!(r[2], r[3], "a glob selects this year's files");
    assert_ne!(r[1], r[3]);
}

#[tokio::test]
async fn the_meshql_domain_shows_each_principal_only_what_they_may_see() {
    let mesh = demo_mesh();
    let session = |user: &str| mesh.session(mesh.principal(user).expect("user"));
    let guest = session("guest");
    let products = rows(
        &guest
            .collect("SELECT domain || '.' || product FROM meshql.products ORDER BY 1")
            .await
            .expect("products"),
    );
    let names: Vec<&str> = products.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(
        names,
        [
            "catalog.inventory_levels",
            "catalog.products",
            "marketing.campaign_performance",
            "sales.order_items",
            "sales.orders"
        ]
    );
    // A denied column is not there; a masked one says so.
    let cols = rows(
        &guest
            .collect("SELECT column_name, masked FROM meshql.columns WHERE domain = 'marketing' AND column_name = 'attributed_revenue' UNION ALL SELECT column_name, masked FROM meshql.columns WHERE product = 'orders' AND column_name = 'customer_id'")
            .await
            .expect("columns"),
    );
    assert_eq!(
        cols,
        vec![vec!["customer_id".to_string(), "true".to_string()]]
    );
    let rules = rows(
        &guest
            .collect("SELECT rule, access, location FROM meshql.my_policies")
            .await
            .expect("policies"),
    );
    assert_eq!(rules.len(), 4, "{rules:?}");
    assert_eq!(rules[0][0], "guests never see payments or customers");
    assert_eq!(rules[0][1], "deny");
    let line = std::fs::read_to_string(root().join("catalog/policies.yaml"))
        .expect("policies")
        .lines()
        .position(|l| l.contains("- name: guests never see payments or customers"))
        .expect("the rule")
        + 1;
    assert!(
        rules[0][2].ends_with(&format!("policies.yaml:{line}")),
        "{rules:?}"
    );
    assert!(
        rules.iter().all(|r| !r[0].contains("platform admins")),
        "{rules:?}"
    );

    let admin = session("admin");
    let all = rows(
        &admin
            .collect("SELECT count(*), count(last_updated), count(DISTINCT storage) FROM meshql.products")
            .await
            .expect("products"),
    );
    assert_eq!(
        all,
        vec![vec!["7".to_string(), "7".to_string(), "2".to_string()]]
    );
    let masked = rows(
        &admin
            .collect("SELECT count(*) FROM meshql.columns WHERE masked")
            .await
            .expect("columns"),
    );
    assert_eq!(masked, vec![vec!["0".to_string()]]);
    let sla = rows(
        &admin
            .collect("SELECT freshness_sla, freshness_met FROM meshql.products WHERE product = 'customers'")
            .await
            .expect("sla"),
    );
    assert_eq!(sla, vec![vec!["365 d".to_string(), "true".to_string()]]);
    let rules = rows(
        &admin
            .collect("SELECT rule FROM meshql.my_policies")
            .await
            .expect("policies"),
    );
    assert_eq!(
        rules,
        vec![vec!["platform admins read everything raw".to_string()]]
    );

    let analyst = session("analyst");
    let email = rows(
        &analyst
            .collect("SELECT masked, classification FROM meshql.columns WHERE product = 'customers' AND column_name = 'email'")
            .await
            .expect("columns"),
    );
    assert_eq!(email, vec![vec!["true".to_string(), "pii".to_string()]]);
    let mask = rows(
        &analyst
            .collect("SELECT mask FROM meshql.columns WHERE product = 'customers' AND column_name = 'email'")
            .await
            .expect("columns"),
    );
    assert_eq!(mask, vec![vec!["mask_email(\"email\")".to_string()]]);
    // The row filter is the one that applies to the principal asking.
    let filters = |user: &str| {
        let s = session(user);
        async move {
            rows(
                &s.collect("SELECT coalesce(row_filter, '') FROM meshql.products WHERE domain = 'sales' AND product = 'orders'")
                    .await
                    .expect("products"),
            )
        }
    };
    assert_eq!(filters("analyst").await, vec![vec![String::new()]]);
    let eu = filters("eu_analyst").await;
    assert!(eu[0][0].contains("region"), "{eu:?}");
    // The domain is read-only and reserved.
    let err = analyst
        .collect("SELECT * FROM meshql.nope")
        .await
        .expect_err("no such table");
    assert!(err.to_string().contains("meshql.nope"), "{err}");
}
