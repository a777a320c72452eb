//! `meshql check`, the governance gate: the demo passes; broken copies of
//! it fail with the finding that names the problem.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::util::*;

fn check(mesh: &Path, args: &[&str]) -> Output {
    demo_data();
    Command::new(env!("CARGO_BIN_EXE_meshql"))
        .current_dir(root())
        .arg("--mesh")
        .arg(mesh)
        .arg("check")
        .args(args)
        .env_remove("MESHQL_MESH")
        .env_remove("MESHQL_USER")
        .output()
        .expect("runs meshql")
}

fn out(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", out(o)))
}

/// The failed findings of a JSON report as `check: message`.
fn failures(o: &Output) -> Vec<String> {
    json(o)["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["outcome"] == "failed")
        .map(|f| {
            format!(
                "{} {}: {}",
                f["product"].as_str().unwrap_or("-"),
                f["check"].as_str().unwrap_or(""),
                f["message"].as_str().unwrap_or("")
            )
        })
        .collect()
}

/// A copy of the demo catalog reading the demo's data, to break.
fn demo_copy() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("catalog");
    copy_dir(&root().join("catalog"), &dir);
    let data = demo_data();
    let mesh = std::fs::read_to_string(dir.join("mesh.yaml"))
        .expect("mesh.yaml")
        .replace("../data/demo", &data.display().to_string())
        .replace(
            "../data/audit.jsonl",
            &tmp.path().join("audit.jsonl").display().to_string(),
        );
    std::fs::write(dir.join("mesh.yaml"), mesh).expect("write");
    (tmp, dir)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).expect("copy");
        }
    }
}

/// The character (from 1) at which `needle` first stands on its line.
fn text_col(text: &str, needle: &str) -> usize {
    text.lines().find_map(|l| l.find(needle)).expect("needle") + 1
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).expect("read");
    assert!(text.contains(from), "{} has no `{from}`", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).expect("write");
}

#[test]
fn the_demo_mesh_passes_in_every_format() {
    let demo = root().join("catalog");
    let o = check(&demo, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(out(&o).contains("ok     sales.orders"), "{}", out(&o));
    assert!(out(&o).contains(" 0 failed"), "{}", out(&o));

    let o = check(&demo, &["--format", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let report = json(&o);
    assert_eq!(report["failed"], 0);
    let findings = report["findings"].as_array().expect("findings");
    for kind in [
        "naming",
        "ownership",
        "pii",
        "schema",
        "quality",
        "freshness",
    ] {
        assert!(
            findings.iter().any(|f| f["check"] == kind),
            "no {kind} check in {report}"
        );
    }
    // The demo's own quality rule ran and measured its value.
    let rule = findings
        .iter()
        .find(|f| f["name"] == "positive_totals")
        .expect("positive_totals");
    assert_eq!(rule["outcome"], "passed");
    assert_eq!(rule["product"], "sales.orders");
    assert!(rule["line"].as_u64().is_some());

    let o = check(&demo, &["--format", "junit", "--product", "sales.orders"]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let xml = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(xml.starts_with("<?xml"), "{xml}");
    assert!(xml.contains("<testsuite name=\"sales.orders\""), "{xml}");
    assert!(xml.contains("name=\"positive_totals\""), "{xml}");
    assert!(
        !xml.contains("customers.customers"),
        "--product keeps to one: {xml}"
    );
    assert!(!xml.contains("<failure"), "{xml}");

    // No mesh: exit 2.
    let o = check(&root().join("no-such-mesh"), &[]);
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    let o = check(&demo, &["--product", "sales.nope"]);
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    assert!(out(&o).contains("no product `sales.nope`"), "{}", out(&o));
}

#[test]
fn broken_copies_of_the_demo_fail_with_the_finding_that_names_the_problem() {
    let (_tmp, dir) = demo_copy();
    // Personal data left unmasked for analysts.
    edit(
        &dir.join("policies.yaml"),
        "rules:\n",
        "rules:\n  - name: analysts read customers raw\n    role: analyst\n    domain: customers\n    access: allow\n",
    );
    // Schema drift: the contract names a column the data does not have.
    edit(
        &dir.join("sales/order_items.yaml"),
        "name: quantity",
        "name: qty",
    );
    // A stale product.
    edit(
        &dir.join("marketing/campaign_performance.yaml"),
        "slaProperties:\n",
        "slaProperties:\n  - property: freshness\n    value: 0\n    unit: s\n",
    );
    // Quality rules that fail: an invalid value, a row count.
    edit(
        &dir.join("sales/orders.yaml"),
        "quality:\n",
        "quality:\n  - type: library\n    metric: rowCount\n    mustBeGreaterThan: 1000000\n",
    );
    edit(
        &dir.join("sales/orders.yaml"),
        "        description: pending, shipped, delivered, cancelled or returned\n",
        "        description: pending, shipped, delivered, cancelled or returned\n        quality:\n          - metric: invalidValues\n            arguments:\n              validValues: [pending, shipped]\n            mustBe: 0\n          - metric: nullValues\n            mustBe: 0\n          - metric: missingValues\n            arguments:\n              missingValues: ['', 'n/a']\n            unit: percent\n            mustBeLessThan: 1\n",
    );
    // A rename close enough to be suggested: reported once, as missing.
    edit(
        &dir.join("payments/transactions.yaml"),
        "name: card_brand",
        "name: cardbrand",
    );
    // A column in the data that the contract leaves out.
    edit(
        &dir.join("catalog/inventory_levels.yaml"),
        "      - name: updated_at\n        logicalType: timestamp\n        required: true\n",
        "",
    );
    // A contract outside its domain's folder.
    std::fs::rename(
        dir.join("catalog/products.yaml"),
        dir.join("sales/products.yaml"),
    )
    .expect("move");

    let o = check(&dir, &["--format", "json"]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    let failed = failures(&o);
    let has = |needle: &str| {
        assert!(
            failed.iter().any(|f| f.contains(needle)),
            "no failure with `{needle}` in {failed:#?}"
        )
    };
    has(
        "customers.customers pii: customers.customers would expose PII column email to user `analyst`, user `eu_analyst`, role `analyst`",
    );
    // A rename too far from the data's name to be suggested: the data has
    // a column the contract leaves out as well.
    has(
        "sales.order_items schema: column `qty` is declared in the contract but missing from the data",
    );
    has(
        "sales.order_items schema: the data has a column the contract does not declare: `quantity` (int)",
    );
    has(
        "catalog.inventory_levels schema: the data has a column the contract does not declare: `updated_at` (timestamp with time zone)",
    );
    has(
        "marketing.campaign_performance freshness: marketing.campaign_performance was last updated",
    );
    has("its freshness SLA is 0 s");
    has("sales.orders quality: row count is 20000; it must be greater than 1000000");
    has("sales.orders quality: invalid values in `status` is");
    has(
        "contract: contract for domain `catalog` is in directory `sales`: move it to `catalog/products.yaml`",
    );
    // Rules that hold are not failures.
    assert!(
        !failed.iter().any(|f| f.contains("NULL values in `status`")),
        "{failed:#?}"
    );
    assert!(
        !failed.iter().any(|f| f.contains("missing values")),
        "{failed:#?}"
    );
    has(
        "payments.transactions schema: column `cardbrand` is declared in the contract but missing from the data (the data has `card_brand`)",
    );
    // Nothing but what was broken.
    assert_eq!(failed.len(), 11, "{failed:#?}");
    // A finding names the line and character of what it is about.
    let report = json(&o);
    let qty = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["outcome"] == "failed" && f["column"] == "qty")
        .expect("the qty finding");
    let items = std::fs::read_to_string(dir.join("sales/order_items.yaml")).expect("read");
    let (line, text) = items
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains("name: qty"))
        .expect("qty line");
    assert_eq!(qty["line"], line as u64 + 1, "{qty}");
    assert_eq!(
        qty["col"],
        text.find("qty").expect("qty") as u64 + 1,
        "{qty}"
    );

    // The text report says where.
    let o = check(&dir, &[]);
    assert_eq!(o.status.code(), Some(1));
    let text = out(&o);
    assert!(text.contains("FAILED sales.orders"), "{text}");
    assert!(
        text.contains(&format!("{}:", dir.join("sales/orders.yaml").display())),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{}:{}:{}: column `qty` is declared",
            dir.join("sales/order_items.yaml").display(),
            line + 1,
            text_col(&items, "qty")
        )),
        "{text}"
    );

    // --static reads no data: only the policy and naming findings remain.
    let o = check(&dir, &["--static", "--format", "json"]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    let failed = failures(&o);
    assert!(
        failed
            .iter()
            .all(|f| f.contains(" pii: ") || f.contains(" contract: ")),
        "{failed:#?}"
    );
    assert_eq!(failed.len(), 4, "{failed:#?}");
}

#[test]
fn breaking_changes_fail_unless_the_major_version_goes_up() {
    let (_tmp, dir) = demo_copy();
    let before = dir.parent().expect("parent").join("before");
    copy_dir(&dir, &before);
    let orders = dir.join("sales/orders.yaml");
    // Remove a column (one no policy names), narrow another, change the key.
    edit(
        &orders,
        "      - name: order_ts\n        logicalType: timestamp\n        physicalType: timestamp with time zone\n        required: true\n",
        "",
    );
    edit(
        &orders,
        "        physicalType: decimal(12,2)",
        "        physicalType: decimal(10,2)",
    );
    edit(
        &orders,
        "        primaryKey: true\n",
        "        required: true\n",
    );
    // A compatible change elsewhere: a wider type.
    edit(
        &dir.join("sales/order_items.yaml"),
        "        physicalType: int\n",
        "        physicalType: bigint\n",
    );
    let o = check(
        &dir,
        &[
            "--static",
            "--format",
            "json",
            "--against",
            before.to_str().expect("utf8"),
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    let failed = failures(&o);
    assert_eq!(failed.len(), 1, "{failed:#?}");
    let f = &failed[0];
    assert!(
        f.starts_with(
            "sales.orders evolution: breaking changes without a new major version (2.0.0 -> 2.0.0)"
        ),
        "{f}"
    );
    assert!(f.contains("column `order_ts` was removed"), "{f}");
    assert!(
        f.contains("column `total_order_value` changed type from decimal(12,2) to decimal(10,2)"),
        "{f}"
    );
    assert!(
        f.contains("the primary key changed from (order_id) to ()"),
        "{f}"
    );

    // The same changes with a new major version pass.
    edit(&orders, "version: 2.0.0", "version: 3.0.0");
    let o = check(
        &dir,
        &["--static", "--against", before.to_str().expect("utf8")],
    );
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));

    // A git revision works as well as a directory.
    let git = |args: &[&str]| {
        let o = Command::new("git")
            .arg("-C")
            .arg(&before)
            .args(args)
            .output()
            .expect("git");
        assert!(o.status.success(), "git {args:?}: {}", out(&o));
    };
    git(&["init", "-q"]);
    git(&["add", "."]);
    git(&[
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@example.com",
        "commit",
        "-qm",
        "before",
    ]);
    edit(
        &before.join("sales/orders.yaml"),
        "      - name: currency\n        logicalType: string\n        required: true\n        description: ISO 4217 currency code\n",
        "",
    );
    let o = check(
        &before,
        &["--static", "--format", "json", "--against", "HEAD"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    let failed = failures(&o);
    assert!(
        failed.len() == 1 && failed[0].contains("column `currency` was removed"),
        "{failed:#?}"
    );
    let o = check(&before, &["--static", "--against", "no-such-rev"]);
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auditors_read_the_audit_and_lineage_and_nobody_else_does() {
    let (tmp, dir) = demo_copy();
    let mesh = meshql::Mesh::open_strict(&dir).expect("opens");
    let log = std::sync::Arc::new(
        meshql::audit::AuditLog::open(tmp.path().join("audit.jsonl")).expect("log"),
    );
    let analyst = mesh.session(mesh.principal("analyst").expect("user"));
    let stream = analyst
        .execute_audited(
            "SELECT c.email, count(*) FROM sales.orders o JOIN customers.customers c ON o.customer_id = c.customer_id GROUP BY c.email",
            &log,
            Some("127.0.0.1:9".into()),
        )
        .await
        .expect("runs");
    futures::TryStreamExt::try_collect::<Vec<_>>(stream)
        .await
        .expect("reads");
    // Not an auditor: the tables do not exist for them.
    for table in ["audit", "lineage"] {
        let err = analyst
            .collect(&format!("SELECT * FROM meshql.{table}"))
            .await
            .expect_err("not an auditor");
        assert!(err.to_string().contains("does not exist"), "{err}");
    }
    let admin = mesh.session(mesh.principal("admin").expect("user"));
    let audit = rows(
        &admin
            .collect("SELECT user, client, product, columns, masks, outcome FROM meshql.audit WHERE user = 'analyst' ORDER BY product")
            .await
            .expect("audit"),
    );
    assert_eq!(audit.len(), 2, "{audit:?}");
    assert_eq!(audit[0][0], "analyst");
    assert_eq!(audit[0][1], "127.0.0.1:9");
    assert_eq!(audit[0][2], "customers.customers");
    assert!(audit[0][3].contains("email"), "{audit:?}");
    assert!(audit[0][4].contains("email: mask_email"), "{audit:?}");
    assert_eq!(audit[0][5], "ok");
    assert_eq!(audit[1][2], "sales.orders");
    let lineage = rows(
        &admin
            .collect("SELECT product, related_product, relation, coalesce(user, '') FROM meshql.lineage ORDER BY relation, product, related_product")
            .await
            .expect("lineage"),
    );
    let row = |a: &str, b: &str, r: &str, u: &str| {
        vec![a.to_string(), b.to_string(), r.to_string(), u.to_string()]
    };
    assert_eq!(
        lineage,
        vec![
            row(
                "customers.customers",
                "sales.orders",
                "read together",
                "analyst"
            ),
            row(
                "sales.orders",
                "customers.customers",
                "read together",
                "analyst"
            ),
            row("sales.order_items", "catalog.products", "upstream", ""),
            row("sales.order_items", "sales.orders", "upstream", ""),
        ]
    );
}

async fn count(session: &meshql::Session, sql: &str) -> Vec<Vec<String>> {
    rows(&session.collect(sql).await.expect("runs"))
}

/// Runs the shell on `dir` as `user`.
fn shell(dir: &Path, user: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshql"))
        .arg("--mesh")
        .arg(dir)
        .args(["--user", user])
        .args(args)
        .env_remove("MESHQL_MESH")
        .output()
        .expect("runs meshql")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_check_results_are_kept_and_each_principal_sees_their_part() {
    let (tmp, dir) = demo_copy();
    let kept = tmp.path().join("data/check-results.json");
    // Checks that read no data keep nothing.
    let o = check(&dir, &["--static"]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(!kept.exists(), "--static keeps no results");
    let o = check(&dir, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(out(&o).contains("results kept in"), "{}", out(&o));
    let first = std::fs::read(&kept).expect("results kept");

    let mesh = meshql::Mesh::open_strict(&dir).expect("opens");
    let admin = mesh.session(mesh.principal("admin").expect("user"));
    let guest = mesh.session(mesh.principal("guest").expect("user"));
    let per_product = "SELECT domain || '.' || product, count(*), count(*) FILTER (WHERE outcome <> 'passed') FROM meshql.quality GROUP BY 1 ORDER BY 1";
    let all = count(&admin, per_product).await;
    assert_eq!(all.len(), 7, "every product's results: {all:?}");
    assert!(all.iter().all(|r| r[2] == "0"), "{all:?}");
    let seen = count(&guest, per_product).await;
    let products: Vec<&str> = seen.iter().map(|r| r[0].as_str()).collect();
    assert!(
        products.contains(&"sales.orders")
            && !products.contains(&"payments.transactions")
            && !products.contains(&"customers.customers"),
        "a guest sees the results of the products they see: {products:?}"
    );
    // A check about a column hidden from the principal is hidden too.
    let about = "SELECT count(*) FROM meshql.quality WHERE column_name = 'attributed_revenue'";
    assert_ne!(count(&admin, about).await[0][0], "0");
    assert_eq!(count(&guest, about).await[0][0], "0");

    // A failing rule on one product: its results are replaced, the
    // others' kept.
    edit(
        &dir.join("sales/orders.yaml"),
        "quality:\n",
        "quality:\n  - name: enough_orders\n    type: library\n    metric: rowCount\n    mustBeGreaterThan: 1000000\n",
    );
    let o = check(&dir, &["--product", "sales.orders", "--no-save"]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert_eq!(std::fs::read(&kept).expect("kept"), first, "--no-save");
    let o = check(&dir, &["--product", "sales.orders"]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    let mesh = meshql::Mesh::open_strict(&dir).expect("opens");
    let analyst = mesh.session(mesh.principal("analyst").expect("user"));
    let failed = count(
        &analyst,
        "SELECT domain, product, \"check\", rule, outcome, message, location FROM meshql.quality WHERE outcome = 'failed'",
    )
    .await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(
        failed[0][..6],
        [
            "sales",
            "orders",
            "quality",
            "enough_orders",
            "failed",
            "row count is 20000; it must be greater than 1000000"
        ],
    );
    assert!(failed[0][6].starts_with("sales/orders.yaml:"), "{failed:?}");
    let others = count(
        &analyst,
        "SELECT count(DISTINCT domain || '.' || product) FROM meshql.quality WHERE domain <> 'sales' OR product <> 'orders'",
    )
    .await;
    assert_eq!(
        others[0][0],
        (count(&analyst, "SELECT count(*) FROM meshql.products").await[0][0]
            .parse::<usize>()
            .expect("a number")
            - 1)
        .to_string(),
        "the other products' results are kept"
    );

    // Who reads the product restricted sees the outcome, not what was
    // measured over the raw rows: guest (a mask) and eu_analyst (a row
    // filter) on sales.orders.
    let failed_sql = "SELECT outcome, message FROM meshql.quality WHERE rule = 'enough_orders'";
    assert!(
        count(&analyst, failed_sql).await[0][1].contains("20000"),
        "an unrestricted reader sees the measured row count"
    );
    for user in ["guest", "eu_analyst"] {
        let restricted = mesh.session(mesh.principal(user).expect("user"));
        let seen = count(&restricted, failed_sql).await;
        assert_eq!(seen.len(), 1, "{user}: {seen:?}");
        assert_eq!(seen[0][0], "failed", "{user}: the outcome is shown");
        assert!(
            !seen[0][1].contains("20000") && seen[0][1].contains("withheld"),
            "{user} learns no raw row count: {seen:?}"
        );
        let all = count(
            &restricted,
            "SELECT message FROM meshql.quality_history WHERE domain = 'sales' AND product = 'orders' AND message <> '' AND (\"check\" = 'quality' OR rule LIKE 'required column%')",
        )
        .await;
        assert!(
            !all.is_empty() && all.iter().all(|r| r[0].contains("withheld")),
            "{user}: the history withholds the same: {all:?}"
        );
        // What the schema and storage say is not measured over rows.
        let schema = count(
            &restricted,
            "SELECT count(*) FROM meshql.quality WHERE product = 'orders' AND message LIKE '%in storage'",
        )
        .await;
        assert_ne!(
            schema[0][0], "0",
            "{user}: schema findings keep their message"
        );
    }

    // The history keeps every saved run (not --no-save), per product.
    let runs = "SELECT domain || '.' || product, count(DISTINCT checked_at), count(*) FILTER (WHERE rule = 'enough_orders') FROM meshql.quality_history GROUP BY 1 ORDER BY 1";
    let history = count(&analyst, runs).await;
    for r in &history {
        let expect = if r[0] == "sales.orders" {
            ["2", "1"]
        } else {
            ["1", "0"]
        };
        assert_eq!(r[1..], expect, "{history:?}");
    }
    assert_eq!(history.len(), others[0][0].parse::<usize>().expect("n") + 1);
    let guest_history = count(&guest, runs).await;
    assert!(
        guest_history
            .iter()
            .all(|r| !r[0].starts_with("payments.") && !r[0].starts_with("customers.")),
        "a guest sees the history of the products they see: {guest_history:?}"
    );
    let about_history =
        "SELECT count(*) FROM meshql.quality_history WHERE column_name = 'attributed_revenue'";
    assert_ne!(count(&admin, about_history).await[0][0], "0");
    assert_eq!(count(&guest, about_history).await[0][0], "0");

    // It is bounded: with 40 older runs of sales.orders in the file, the
    // next run keeps the last HISTORY_RUNS.
    let mut file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&kept).expect("kept")).expect("json");
    let entries = file["history"].as_array().expect("a history").clone();
    let oldest = entries
        .iter()
        .filter_map(|e| e["checked_at"].as_i64())
        .min()
        .expect("runs");
    // Copies of its first run, which had no `enough_orders`.
    let orders: Vec<serde_json::Value> = entries
        .iter()
        .filter(|e| e["product"] == "sales.orders" && e["checked_at"] == oldest)
        .cloned()
        .collect();
    let mut older = Vec::new();
    for run in 1..=40i64 {
        for e in &orders {
            let mut e = e.clone();
            e["checked_at"] = (oldest - run * 1000).into();
            older.push(e);
        }
    }
    older.extend(entries);
    file["history"] = older.into();
    std::fs::write(&kept, serde_json::to_vec(&file).expect("json")).expect("write");
    assert_eq!(
        count(
            &analyst,
            "SELECT count(DISTINCT checked_at) FROM meshql.quality_history WHERE product = 'orders'"
        )
        .await[0][0],
        "42"
    );
    let o = check(&dir, &["--product", "sales.orders"]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    let history = count(&analyst, runs).await;
    for r in &history {
        let expect = if r[0] == "sales.orders" {
            [meshql::check::HISTORY_RUNS.to_string(), "2".to_string()]
        } else {
            ["1".to_string(), "0".to_string()]
        };
        assert_eq!(r[1..], expect, "{history:?}");
    }
    let newest = count(
        &analyst,
        "SELECT max(h.checked_at) = max(q.checked_at) FROM meshql.quality_history h, meshql.quality q WHERE h.product = 'orders' AND q.product = 'orders'",
    )
    .await;
    assert_eq!(newest[0][0], "true", "the newest run is the last results");

    // The shell's \d shows the freshness and the last checks.
    let o = shell(
        &dir,
        "analyst",
        &["-c", "\\d sales.orders", "-c", "\\d customers.customers"],
    );
    assert!(o.status.success(), "{}", out(&o));
    let text = out(&o);
    assert!(text.contains(" 1 failed"), "{text}");
    assert!(
        text.contains(
            "  x [quality] enough_orders: row count is 20000; it must be greater than 1000000"
        ),
        "{text}"
    );
    assert!(text.contains("Fresh:    yes, within its"), "{text}");

    // Results that are not meshql's are an error that says so.
    std::fs::write(&kept, "{ not json").expect("write");
    let err = analyst
        .collect("SELECT * FROM meshql.quality")
        .await
        .expect_err("unreadable results");
    assert!(
        err.to_string()
            .contains("are not meshql's (line 1, column 3"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_columns_are_checked_against_the_stored_nulls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data/t");
    std::fs::create_dir_all(&data).expect("mkdir");
    // Parquet whose `note` column allows NULLs and has one; `id` is NOT NULL.
    let ctx = datafusion::prelude::SessionContext::new();
    ctx.sql(&format!(
        "COPY (SELECT arrow_cast(id, 'Int64') AS id, note FROM (VALUES (1, 'a'), (2, NULL), (3, 'c')) AS v(id, note)) TO '{}' STORED AS PARQUET",
        data.join("t.parquet").display()
    ))
    .await
    .expect("plans")
    .collect()
    .await
    .expect("writes");
    write(
        dir.path(),
        "mesh.yaml",
        "apiVersion: meshql/v1\nkind: Mesh\nname: t\nstorage:\n  local:\n    type: local\n    root: data\n",
    );
    allow_all(dir.path());
    write(
        dir.path(),
        "shop/notes.yaml",
        "apiVersion: v3.1.0\nkind: DataContract\nid: shop.notes\nname: notes\nversion: 1.0.0\nstatus: active\ndomain: shop\ndescription:\n  purpose: Notes\nteam:\n  name: shop-team\nschema:\n  - name: notes\n    properties:\n      - name: id\n        physicalType: bigint\n        required: true\n      - name: note\n        physicalType: varchar\n        required: true\nservers:\n  - server: local\n    type: local\n    path: t\n",
    );
    let o = check(dir.path(), &["--format", "json"]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert_eq!(
        failures(&o),
        vec!["shop.notes schema: 1 row has NULL in `note`, which the contract declares required"]
    );
    let report = json(&o);
    let message = |name: &str| {
        report["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .find(|f| f["name"] == name)
            .map(|f| f["message"].as_str().unwrap_or("").to_string())
            .unwrap_or_else(|| panic!("no `{name}` in {report}"))
    };
    assert_eq!(
        message("column `note` matches storage"),
        "varchar, storage allows NULLs (the data is checked for them)"
    );
    assert_eq!(message("required column `id` has no NULLs"), "");

    // A query that reads the NULLs fails, and says why.
    let o = shell(dir.path(), "anyone", &["-c", "SELECT note FROM shop.notes"]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(
        out(&o).contains(
            "column `note` holds NULLs, but its contract declares it required; `meshql check` counts them"
        ),
        "{}",
        out(&o)
    );
}
