//! Governance beyond the demo policies: Trino rules, validation of policy
//! files, parameters, passwords, and the shell's view of what is hidden.

use std::path::Path;
use std::process::Command;

use datafusion::common::ScalarValue;
use meshql::{Error, Mesh};

use crate::util::*;

/// The demo contracts and users in `dir`, over the demo data, without policies.
fn demo_without_policies(dir: &Path) {
    write(
        dir,
        "mesh.yaml",
        &format!(
            "apiVersion: meshql/v1\nkind: Mesh\nname: t\nstorage:\n  demo:\n    type: local\n    root: {data}\ncatalogs:\n  lakehouse:\n    type: sql\n    uri: sqlite:{data}/lakehouse.db\n    storage: demo\n    warehouse: lakehouse\ngovernance:\n  pseudonymSecret: t\n  roles: [pii_reader]\n",
            data = demo_data().display()
        ),
    );
    let catalog = root().join("catalog");
    write(
        dir,
        "users.yaml",
        &std::fs::read_to_string(catalog.join("users.yaml")).expect("users"),
    );
    for domain in ["customers", "sales", "catalog", "payments", "marketing"] {
        for file in std::fs::read_dir(catalog.join(domain)).expect("domain") {
            let file = file.expect("entry").path();
            let rel = file.strip_prefix(&catalog).expect("relative");
            write(
                dir,
                &rel.to_string_lossy(),
                &std::fs::read_to_string(&file).expect("contract"),
            );
        }
    }
}

const TRINO_RULES: &str = r#"{
  "tables": [
    {"role": "platform_admin", "privileges": ["SELECT", "OWNERSHIP"]},
    {
      "user": "eu_.*", "catalog": "mesh", "schema": "customers", "table": "customers",
      "privileges": ["SELECT"],
      "columns": [
        {"name": "email", "mask": "mask_email(email)"},
        {"name": "phone", "allow": false}
      ],
      "filter": "region = 'EU'"
    },
    {"catalog": "hive", "privileges": ["SELECT"]},
    {"privileges": []}
  ]
}"#;

#[tokio::test]
async fn trino_rules_json_is_enforced_with_catalog_schema_table_as_mesh_domain_product() {
    let dir = tempfile::tempdir().expect("tempdir");
    demo_without_policies(dir.path());
    write(dir.path(), "rules.json", TRINO_RULES);
    let mesh = Mesh::open_strict(dir.path()).expect("valid rules.json");

    let eu = mesh.session(mesh.principal("eu_analyst").expect("user"));
    assert_eq!(eu.product_names(), vec!["customers.customers".to_string()]);
    let got = eu
        .collect("SELECT region, count(*), min(email) LIKE '_***@%' FROM customers.customers GROUP BY region")
        .await
        .expect("query");
    assert_eq!(
        rows(&got),
        vec![vec![
            "EU".to_string(),
            "751".to_string(),
            "true".to_string()
        ]]
    );
    let err = eu
        .collect("SELECT phone FROM customers.customers")
        .await
        .expect_err("hidden");
    assert!(
        err.to_string().starts_with("column `phone` does not exist"),
        "{err}"
    );
    let err = eu
        .collect("SELECT * FROM sales.orders")
        .await
        .expect_err("denied");
    assert!(
        err.to_string()
            .starts_with("product `sales.orders` does not exist"),
        "{err}"
    );

    let admin = mesh.session(mesh.principal("admin").expect("user"));
    assert_eq!(admin.product_names().len(), 7);
}

#[test]
fn strict_opening_reports_every_policy_problem_with_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    demo_without_policies(dir.path());
    write(
        dir.path(),
        "policies.yaml",
        "apiVersion: meshql/v1\nkind: Policies\nrules:\n  - name: bad masks\n    role: analyts\n    columns:\n      - name: signup_date\n        mask: redact\n      - name: emial\n        access: deny\n      - name: phone\n        mask: mask_foo\n    rowFilter: region\n",
    );
    let err = Mesh::open_strict(dir.path()).expect_err("invalid policies");
    let msg = err.to_string();
    for expected in [
        "policies.yaml:5:11: rule `bad masks` names role `analyts`, which no user holds (did you mean `analyst`?)",
        "policies.yaml:9:15: rule `bad masks` names column `emial`, which no product it applies to has",
        "policies.yaml:8:15: mask `redact(\"signup_date\")` of rule `bad masks` does not apply to customers.customers.signup_date: redact masks text, not Date32",
        "policies.yaml:12:15: mask `mask_foo(\"phone\")` of rule `bad masks` does not apply to customers.customers.phone",
        "policies.yaml:13:16: row filter `region` of rule `bad masks` is Utf8 on customers.customers, not boolean",
    ] {
        assert!(msg.contains(expected), "missing `{expected}` in:\n{msg}");
    }
}

#[test]
fn a_broken_policy_file_stops_even_a_lenient_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    demo_without_policies(dir.path());
    write(
        dir.path(),
        "policies.yaml",
        "apiVersion: meshql/v1\nkind: Policies\nrules:\n  - name: deny payments\n    domain: \"payments(\"\n    access: deny\n  - access: allow\n",
    );
    let err = Mesh::open(dir.path()).expect_err("a rule that cannot be read must not be skipped");
    assert!(
        err.to_string()
            .contains("policies.yaml:5:13: `domain` is not a valid regular expression"),
        "{err}"
    );
}

#[tokio::test]
async fn a_mask_that_does_not_type_check_fails_closed_when_opened_leniently() {
    let dir = tempfile::tempdir().expect("tempdir");
    demo_without_policies(dir.path());
    write(
        dir.path(),
        "policies.yaml",
        "apiVersion: meshql/v1\nkind: Policies\nrules:\n  - role: analyst\n    columns:\n      - name: email\n        mask: no_such_mask\n",
    );
    let mesh = Mesh::open(dir.path()).expect("lenient");
    assert!(
        mesh.problems()
            .iter()
            .any(|p| p.message.contains("no_such_mask")),
        "{:?}",
        mesh.problems()
    );
    let analyst = mesh.session(mesh.principal("analyst").expect("user"));
    let err = analyst
        .collect("SELECT email FROM customers.customers")
        .await
        .expect_err("fails closed");
    assert!(err.to_string().contains("no_such_mask"), "{err}");
    // A query that does not touch the product is unaffected.
    analyst
        .collect("SELECT count(*) FROM sales.orders")
        .await
        .expect("other products work");
}

#[tokio::test]
async fn parameters_compare_with_the_masked_value() {
    let mesh = demo_mesh();
    let sql = "SELECT count(*) FROM customers.customers WHERE email = $1";
    let raw = ScalarValue::from("charlotte.smith1@soylent.fr");
    for (user, expected) in [("admin", "1"), ("analyst", "0")] {
        let session = mesh.session(mesh.principal(user).expect("user"));
        let df = session
            .sql(sql)
            .await
            .expect("plans")
            .with_param_values(vec![raw.clone()])
            .expect("binds");
        let got = df.collect().await.expect("runs");
        assert_eq!(rows(&got), vec![vec![expected.to_string()]], "{user}");
    }
}

#[tokio::test]
async fn strings_computed_as_views_are_delivered_as_the_contracts_strings() {
    use arrow::datatypes::DataType;
    let mesh = demo_mesh();
    let session = mesh.session(mesh.principal("analyst").expect("user"));
    // Inside the query, product strings are views.
    let typed = session
        .collect("SELECT arrow_typeof(region) FROM customers.customers LIMIT 1")
        .await
        .expect("runs");
    assert_eq!(rows(&typed), vec![vec!["Utf8View".to_string()]]);
    // Results, masked or not, computed or not, arrive as Utf8; and the
    // masked values are the masks' values.
    let sql = "SELECT region, lower(region) AS r, email, phone || '' AS p, customer_id \
               FROM customers.customers ORDER BY customer_id LIMIT 2";
    for batches in [
        session.collect(sql).await.expect("runs"),
        futures::TryStreamExt::try_collect::<Vec<_>>(session.execute(sql).await.expect("runs"))
            .await
            .expect("streams"),
    ] {
        let schema = batches[0].schema();
        let types: Vec<&DataType> = schema.fields().iter().map(|f| f.data_type()).collect();
        assert_eq!(
            types,
            vec![
                &DataType::Utf8,
                &DataType::Utf8,
                &DataType::Utf8,
                &DataType::Utf8,
                &DataType::Int64
            ]
        );
        let got = rows(&batches);
        assert_eq!(got[0][0], "EU");
        assert_eq!(got[0][1], "eu");
        assert!(got[0][2].contains("***@"), "{got:?}");
        assert!(got[0][3].contains("****"), "{got:?}");
    }
    let (schema, _) = session.describe(sql).await.expect("describes");
    assert_eq!(schema.field(0).data_type(), &DataType::Utf8);
    let product = session
        .product_schema("customers.customers")
        .await
        .expect("visible");
    assert_eq!(
        product.field_with_name("email").expect("email").data_type(),
        &DataType::Utf8
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sorted_result_of_many_batches_stays_sorted_when_its_strings_are_delivered() {
    let mesh = demo_mesh();
    let session = mesh.session(mesh.principal("admin").expect("user"));
    // More rows than a batch holds, sorted by strings first.
    let sql =
        "SELECT region, status, order_id FROM sales.orders ORDER BY region DESC, status, order_id";
    let check = |batches: &[arrow::record_batch::RecordBatch]| {
        let got = rows(batches);
        assert_eq!(got.len(), 20_000);
        let key = |r: &Vec<String>| {
            (
                std::cmp::Reverse(r[0].clone()),
                r[1].clone(),
                r[2].parse::<i64>().expect("id"),
            )
        };
        for (i, w) in got.windows(2).enumerate() {
            assert!(
                key(&w[0]) <= key(&w[1]),
                "rows {i} and {} out of order: {w:?}",
                i + 1
            );
        }
    };
    check(&session.collect(sql).await.expect("collects"));
    let stream = session.execute(sql).await.expect("runs");
    check(
        &futures::TryStreamExt::try_collect::<Vec<_>>(stream)
            .await
            .expect("streams"),
    );
    let query = session
        .plan(sql, &meshql::QueryOptions::default())
        .await
        .expect("plans");
    let stream = query.execute().expect("runs");
    check(
        &futures::TryStreamExt::try_collect::<Vec<_>>(stream)
            .await
            .expect("streams"),
    );
}

#[test]
fn demo_passwords_authenticate_and_nothing_else_does() {
    let mesh = demo_mesh();
    let p = mesh
        .authenticate("eu_analyst", "eu_analyst-demo")
        .expect("right password");
    assert_eq!(p.attributes.get("region").map(String::as_str), Some("EU"));
    for (user, password) in [
        ("eu_analyst", "wrong"),
        ("nobody", "eu_analyst-demo"),
        ("admin", ""),
    ] {
        let err = mesh.authenticate(user, password).expect_err("refused");
        assert!(matches!(err, Error::PermissionDenied(_)));
        assert_eq!(
            err.to_string(),
            "permission denied: invalid user name or password"
        );
    }
}

fn meshql(args: &[&str]) -> std::process::Output {
    demo_data();
    Command::new(env!("CARGO_BIN_EXE_meshql"))
        .current_dir(root())
        .args(args)
        .env_remove("MESHQL_USER")
        .output()
        .expect("runs")
}

#[test]
fn the_shell_shows_a_guest_only_what_a_guest_sees() {
    let o = meshql(&["--user", "guest", "--format", "csv", "-c", "\\d"]);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("sales,orders,"), "{out}");
    assert!(
        !out.contains("payments") && !out.contains("customers,customers"),
        "{out}"
    );

    let hidden = meshql(&["--user", "guest", "-c", "\\d payments.transactions"]);
    let missing = meshql(&["--user", "guest", "-c", "\\d payments.refunds"]);
    let hidden_err = String::from_utf8_lossy(&hidden.stderr).replace("transactions", "NAME");
    let missing_err = String::from_utf8_lossy(&missing.stderr).replace("refunds", "NAME");
    assert_eq!(hidden.status.code(), Some(1));
    assert_eq!(
        hidden_err, missing_err,
        "a hidden product reads as a missing one"
    );

    let o = meshql(&[
        "--user",
        "guest",
        "--format",
        "csv",
        "-c",
        "\\d marketing.campaign_performance",
    ]);
    assert!(!String::from_utf8_lossy(&o.stdout).contains("attributed_revenue"));

    let o = meshql(&[
        "--user",
        "analyst",
        "--format",
        "csv",
        "-c",
        "\\d customers.customers",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("masked: mask_email(\"\"email\"\")"), "{out}");
}

#[test]
fn policy_explain_shows_the_rule_the_masks_and_the_filter() {
    let o = meshql(&[
        "policy",
        "explain",
        "--user",
        "eu_analyst",
        "customers.customers",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(
            "rule      region-bound analysts see their region's rows only (catalog/policies.yaml:"
        ),
        "{out}"
    );
    assert!(
        out.contains("rows      only where region = current_attribute('region')"),
        "{out}"
    );
    assert!(
        out.contains("  email                masked as mask_email(\"email\")"),
        "{out}"
    );
    assert!(out.contains("  country              raw"), "{out}");

    let o = meshql(&[
        "policy",
        "explain",
        "--user",
        "guest",
        "payments.transactions",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("access    denied"), "{out}");
    assert!(
        out.contains("guests never see payments or customers"),
        "{out}"
    );

    let o = meshql(&["--user", "nobody", "-c", "SELECT 1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains(
        "unknown user `nobody` (users.yaml defines admin, analyst, eu_analyst, finance, guest)"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_library_writes_the_same_audit_records() {
    use futures::TryStreamExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = std::sync::Arc::new(
        meshql::audit::AuditLog::open(dir.path().join("audit.jsonl")).expect("opens"),
    );
    let mesh = demo_mesh();
    let session = mesh.session(mesh.principal("eu_analyst").expect("principal"));
    let stream = session
        .execute_audited(
            "SELECT customer_id, email FROM customers.customers LIMIT 4",
            &log,
            Some("embedded-test".into()),
        )
        .await
        .expect("runs");
    let batches: Vec<_> = stream.try_collect().await.expect("collects");
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 4);
    let Err(err) = session
        .execute_audited("SELECT * FROM payments.refunds", &log, None)
        .await
    else {
        panic!("payments.refunds does not exist");
    };
    assert!(err.to_string().contains("does not exist"));
    // Dropped before the end: recorded as cancelled.
    let stream = session
        .execute_audited("SELECT * FROM sales.order_items", &log, None)
        .await
        .expect("starts");
    drop(stream);

    let text = std::fs::read_to_string(log.path()).expect("reads");
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(records.len(), 3, "{text}");
    assert_eq!(records[0]["user"], "eu_analyst");
    assert_eq!(records[0]["client"], "embedded-test");
    assert_eq!(records[0]["rows"], 4);
    assert_eq!(records[0]["outcome"], "ok");
    let access = &records[0]["products"][0];
    assert_eq!(access["product"], "customers.customers");
    assert!(
        access["row_filter"]
            .as_str()
            .expect("filter")
            .contains("region")
    );
    assert!(
        access["masks"].to_string().contains("mask_email"),
        "{access}"
    );
    assert_eq!(records[1]["outcome"]["error"]["kind"], "sql");
    assert_eq!(records[2]["outcome"], "cancelled");
    let raw = mesh
        .session(admin())
        .collect("SELECT email FROM customers.customers WHERE region = 'EU' LIMIT 50")
        .await
        .expect("raw");
    for row in rows(&raw) {
        assert!(
            !text.contains(&row[0]),
            "a raw e-mail reached the audit log"
        );
    }
}

/// A row filter that reads another product is checked like a query: the
/// products it names must exist, and its types must agree.
#[test]
fn row_filters_over_other_products_are_resolved_and_type_checked() {
    let policy = |filter: &str| {
        format!(
            "apiVersion: meshql/v1\nkind: Policies\nrules:\n  - name: lines follow their order\n    role: analyst\n    domain: sales\n    product: order_items\n    rowFilter: \"{filter}\"\n  - name: the rest\n    access: allow\n"
        )
    };
    for (filter, needle) in [
        (
            "order_id IN (SELECT order_id FROM sales.ordrs WHERE region = 'EU')",
            "sales.ordrs",
        ),
        (
            "order_id IN (SELECT order_id, region FROM sales.orders)",
            "only return one column",
        ),
    ] {
        let tmp = tempfile::tempdir().expect("tempdir");
        demo_without_policies(tmp.path());
        write(tmp.path(), "policies.yaml", &policy(filter));
        let err = Mesh::open_strict(tmp.path()).expect_err(filter);
        let msg = err.to_string();
        assert!(msg.contains("policies.yaml:8"), "{filter}: {msg}");
        assert!(msg.contains(needle), "{filter}: {msg}");
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    demo_without_policies(tmp.path());
    write(
        tmp.path(),
        "policies.yaml",
        &policy("order_id IN (SELECT order_id FROM sales.orders WHERE region = 'EU')"),
    );
    Mesh::open_strict(tmp.path()).expect("a valid filter over another product");
}
