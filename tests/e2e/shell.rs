//! The real `meshql` binary: non-interactive modes, formats, meta-commands,
//! errors and exit codes.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::util::*;

fn meshql(args: &[&str]) -> Output {
    meshql_in(&root(), args, &[])
}

fn meshql_in(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    demo_data();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshql"));
    cmd.current_dir(cwd)
        .args(args)
        .env_remove("MESHQL_MESH")
        .env_remove("MESHQL_USER");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("runs meshql")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn no_flags_from_the_repository_root_uses_the_demo_mesh() {
    let o = meshql(&[
        "-c",
        "SELECT count(*) AS customers FROM customers.customers",
        "--format",
        "csv",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "customers\n2000\n");
    assert!(stderr(&o).contains("(1 row, "), "{}", stderr(&o));
}

#[test]
fn table_output_and_row_count() {
    let o = meshql(&[
        "-c",
        "SELECT segment, count(*) AS n FROM customers.customers GROUP BY segment ORDER BY segment",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("| segment    | n    |"), "{out}");
    assert!(out.contains("| consumer   |"), "{out}");
    assert!(out.contains("| enterprise |"), "{out}");
    assert!(stderr(&o).contains("(3 rows, "), "{}", stderr(&o));
}

#[test]
fn every_output_format() {
    let sql = "SELECT product_id, name FROM catalog.products WHERE product_id IN (1000, 1001) ORDER BY product_id";
    let csv = stdout(&meshql(&["-q", "--format", "csv", "-c", sql]));
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "product_id,name");
    assert!(lines[1].starts_with("1000,"), "{csv}");
    assert_eq!(lines.len(), 3, "{csv}");

    let tsv = stdout(&meshql(&["-q", "--format", "tsv", "-c", sql]));
    assert!(tsv.starts_with("product_id\tname\n1000\t"), "{tsv}");

    let json = stdout(&meshql(&["-q", "--format", "json", "-c", sql]));
    let parsed: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    assert_eq!(parsed.as_array().map(Vec::len), Some(2), "{json}");
    assert_eq!(parsed[1]["product_id"], 1001);

    let ndjson = stdout(&meshql(&["-q", "--format", "ndjson", "-c", sql]));
    let objects: Vec<serde_json::Value> = ndjson
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON object per line"))
        .collect();
    assert_eq!(objects.len(), 2);
    assert_eq!(objects[0]["product_id"], 1000);

    let empty = stdout(&meshql(&[
        "-q",
        "--format",
        "json",
        "-c",
        "SELECT * FROM catalog.products WHERE product_id < 0",
    ]));
    assert_eq!(empty.trim(), "[]");
}

#[test]
fn output_goes_to_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("out.csv");
    let o = meshql(&[
        "-q",
        "--format",
        "csv",
        "--output",
        file.to_str().expect("utf8"),
        "-c",
        "SELECT count(*) AS n FROM sales.orders",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "");
    assert_eq!(
        std::fs::read_to_string(&file).expect("written"),
        "n\n20000\n"
    );
}

#[test]
fn a_script_file_runs_statements_and_commands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("q.sql");
    std::fs::write(
        &script,
        "-- a comment; with a semicolon\n\\pset format csv\nSELECT count(*) AS n\n  FROM sales.order_items;\nSELECT 'a;b' AS s;\n",
    )
    .expect("write");
    let o = meshql(&["-q", "-f", script.to_str().expect("utf8")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "n");
    assert!(lines[1].parse::<u64>().expect("a count") > 20_000, "{out}");
    assert_eq!(&lines[2..], ["s", "a;b"]);
}

#[test]
fn statements_piped_to_stdin_run_like_a_file() {
    demo_data();
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshql"))
        .current_dir(root())
        .args(["-q", "--format", "csv"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"SELECT 1 AS one;\n\\dn\n")
        .expect("write");
    let o = child.wait_with_output().expect("wait");
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with("one\n1\n"), "{out}");
    assert!(out.contains("domain,products,owners\ncatalog,2,"), "{out}");
}

#[test]
fn backslash_d_lists_products_with_owner_and_status() {
    let o = meshql(&["-c", "\\d"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for header in ["domain", "product", "owner", "status", "description"] {
        assert!(
            out.lines().nth(1).is_some_and(|l| l.contains(header)),
            "{header}: {out}"
        );
    }
    for (domain, product, owner) in [
        ("customers", "customers", "customer-data"),
        ("sales", "orders", "sales-engineering"),
        ("sales", "order_items", "sales-engineering"),
        ("catalog", "products", "merchandising"),
        ("catalog", "inventory_levels", "fulfilment"),
        ("payments", "transactions", "payments-platform"),
        ("marketing", "campaign_performance", "growth-marketing"),
    ] {
        assert!(
            out.lines().any(|l| l.contains(&format!("| {domain} "))
                && l.contains(&format!("| {product} "))
                && l.contains(owner)
                && l.contains("active")),
            "{domain}.{product}: {out}"
        );
    }
}

#[test]
fn backslash_d_product_describes_columns_classification_owner_and_sla() {
    let o = meshql(&["-c", "\\d customers.customers"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let email = out
        .lines()
        .find(|l| l.contains("| email "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        email.contains("varchar") && email.contains("pii") && email.contains("contact"),
        "{email}"
    );
    let id = out
        .lines()
        .find(|l| l.contains("| customer_id "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        id.contains("bigint") && id.contains("PK") && id.contains("NO"),
        "{id}"
    );
    assert!(
        out.contains("Owner:    customer-data: ana.lopez (owner)"),
        "{out}"
    );
    assert!(
        out.contains("SLA:      frequency 1 d; latency 365 d"),
        "{out}"
    );

    let o = meshql(&["-c", "\\d sales.order"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("product `sales.order` does not exist; did you mean `sales.orders`?"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn backslash_dn_lists_domains() {
    let out = stdout(&meshql(&["--format", "csv", "-c", "\\dn"]));
    assert_eq!(
        out,
        "domain,products,owners\ncatalog,2,\"fulfilment, merchandising\"\ncustomers,1,customer-data\nmarketing,1,growth-marketing\npayments,1,payments-platform\nsales,2,sales-engineering\n"
    );
}

#[test]
fn timing_and_pset_toggle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("t.sql");
    std::fs::write(
        &script,
        "\\timing off\n\\pset format ndjson\nSELECT 1 AS x;\n\\?\n",
    )
    .expect("write");
    let o = meshql(&["-f", script.to_str().expect("utf8")]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("{\"x\":1}\n"), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("\\d DOMAIN.PRODUCT"),
        "help is printed: {}",
        stdout(&o)
    );
    let err = stderr(&o);
    assert!(
        err.contains("Timing is off.") && err.contains("Output format is ndjson."),
        "{err}"
    );
    assert!(
        err.contains("(1 row)\n"),
        "no time when timing is off: {err}"
    );
}

#[test]
fn an_unknown_product_suggests_names_and_points_at_the_position() {
    let o = meshql(&["-c", "SELECT *\nFROM sales.ordrs"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains(
            "product `sales.ordrs` does not exist (line 2, column 6); did you mean `sales.orders`?"
        ),
        "{err}"
    );
}

#[test]
fn syntax_errors_point_at_the_position_and_stop_the_script() {
    let o = meshql(&["-c", "SELECT count(* FROM sales.orders; SELECT 1"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("Line: 1, Column: 16"), "{err}");
    assert_eq!(stdout(&o), "", "the script stops at the first error");
}

#[test]
fn a_file_error_names_the_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("bad.sql");
    std::fs::write(&script, "SELECT 1;\n\nSELECT nope FROM sales.orders;\n").expect("write");
    let o = meshql(&["-q", "-f", script.to_str().expect("utf8")]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("bad.sql:3: "), "{err}");
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn writes_are_refused_with_a_permission_error() {
    let o = meshql(&["-c", "DROP TABLE sales.orders"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("permission denied: DROP TABLE is not allowed"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn check_passes_on_the_demo_mesh_and_reports_every_problem_otherwise() {
    let o = meshql(&["check", "--static"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o)
            .lines()
            .filter(|l| l.starts_with("ok     "))
            .count(),
        7,
        "{}",
        stdout(&o)
    );
    assert!(stdout(&o).contains(" 0 failed"), "{}", stdout(&o));

    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "mesh.yaml",
        "apiVersion: meshql/v1\nkind: Mesh\nname: t\nstorage:\n  demo:\n    type: local\n    root: data\n",
    );
    write(
        dir.path(),
        "sales/orders.yaml",
        &contract("sales", "orders", &[("id", "bigint")], "demo", "local", "x"),
    );
    allow_all(dir.path());
    write(
        dir.path(),
        "sales/bad.yaml",
        "apiVersion: v3.1.0\nkind: DataContract\nid: b\nname: bad\nversion: 1\nstatus: active\ndomain: sales\nschema: []\nservers: []\nowner: me\n",
    );
    let o = meshql(&[
        "--mesh",
        dir.path().to_str().expect("utf8"),
        "check",
        "--static",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(out.contains("3 failed"), "{out}");
    assert!(
        out.contains("bad.yaml:8:9: `schema` must describe the product's table"),
        "{out}"
    );
    assert!(out.contains("bad.yaml:10:1: unknown key `owner`"), "{out}");

    // Opened leniently, the shell warns and goes on with the good product.
    let o = meshql(&["--mesh", dir.path().to_str().expect("utf8"), "-c", "\\d"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("warning: left out of the mesh: "),
        "{}",
        stderr(&o)
    );
    assert!(stdout(&o).contains("| orders "), "{}", stdout(&o));
}

#[test]
fn demo_generate_writes_every_product() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = meshql(&[
        "demo",
        "generate",
        "--scale",
        "1",
        "--out",
        dir.path().to_str().expect("utf8"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("2000 customers, 20000 orders"),
        "{}",
        stderr(&o)
    );
    for rel in [
        "customers/customers/customers.parquet",
        "sales/orders/orders-2025-01.parquet",
        "sales/orders/orders-2026-09.parquet",
        "sales/order_items/order_items-2026-09.parquet",
        "catalog/products/products.parquet",
        "catalog/inventory_levels/inventory_levels.parquet",
        "payments/transactions/transactions-2026-09.parquet",
        "marketing/campaign_performance/campaign_performance.parquet",
    ] {
        assert!(dir.path().join(rel).is_file(), "{rel}");
    }
}

#[test]
fn ctrl_c_cancels_the_running_query() {
    demo_data();
    let child = Command::new(env!("CARGO_BIN_EXE_meshql"))
        .current_dir(root())
        .args([
            "-c",
            "SELECT count(*) FROM sales.order_items a, sales.order_items b WHERE a.quantity * b.quantity > 1000000",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid fits"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT sent");
    let o = child.wait_with_output().expect("wait");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("query cancelled"), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_environment_variables_override_mesh_yaml_credentials() {
    let server = crate::s3::start("envbucket").await;
    crate::s3::upload(&server.endpoint, "envbucket", "mesh/v1", &demo_data()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    crate::s3::s3_mesh(
        dir.path(),
        &server.endpoint,
        "envbucket",
        crate::s3::ACCESS_KEY,
        "wrong-secret",
    );
    let mesh = dir.path().to_str().expect("utf8").to_string();
    let sql = "SELECT count(*) AS n FROM sales.orders";
    let (m1, m2) = (mesh.clone(), mesh);
    let denied = tokio::task::spawn_blocking(move || {
        meshql_in(
            &root(),
            &["--mesh", &m1, "-q", "--format", "csv", "-c", sql],
            &[],
        )
    })
    .await
    .expect("join");
    assert_eq!(denied.status.code(), Some(1));
    assert!(
        !stderr(&denied).contains("wrong-secret"),
        "{}",
        stderr(&denied)
    );
    let allowed = tokio::task::spawn_blocking(move || {
        meshql_in(
            &root(),
            &["--mesh", &m2, "-q", "--format", "csv", "-c", sql],
            &[("AWS_SECRET_ACCESS_KEY", crate::s3::SECRET_KEY)],
        )
    })
    .await
    .expect("join");
    assert!(allowed.status.success(), "{}", stderr(&allowed));
    assert_eq!(stdout(&allowed), "n\n20000\n");
}

/// The interactive shell on a real pseudo-terminal: tab completion inserts
/// product names, statements span lines until `;`, Ctrl-C cancels the
/// running query and the shell goes on, and history persists.
#[test]
fn the_interactive_shell_completes_continues_cancels_and_remembers() {
    demo_data();
    let dir = tempfile::tempdir().expect("tempdir");
    let history = dir.path().join("history");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshql"));
    cmd.current_dir(root())
        .env("MESHQL_HISTORY", &history)
        .env("TERM", "xterm")
        .env_remove("MESHQL_MESH");
    let mut p = rexpect::session::spawn_command(cmd, Some(60_000)).expect("spawn on a pty");
    p.exp_string("meshql> ").expect("prompt");

    // `customers.cus<Tab>` completes to the only product that fits.
    p.send("SELECT count(*) AS n FROM customers.cus\t")
        .expect("send");
    p.flush().expect("flush");
    p.send(";\r").expect("send");
    p.flush().expect("flush");
    p.exp_string("| 2000 |")
        .expect("the completed statement ran");
    p.exp_string("(1 row, ").expect("row count and time");

    // A statement continues over lines until its `;`.
    p.send("SELECT 40\r").expect("send");
    p.flush().expect("flush");
    p.send("  + 2 AS answer;\r").expect("send");
    p.flush().expect("flush");
    p.exp_string("| 42     |").expect("multi-line statement");

    // Ctrl-C cancels the running query, not the shell.
    p.send("SELECT count(*) FROM sales.order_items a, sales.order_items b WHERE a.quantity * b.quantity > 1000000;\r")
        .expect("send");
    p.flush().expect("flush");
    // After a second on a terminal, a spinner shows the elapsed time.
    p.exp_string("(Ctrl-C cancels)").expect("spinner");
    p.send_control('c').expect("ctrl-c");
    p.flush().expect("flush");
    p.exp_string("ERROR: query cancelled").expect("cancelled");
    p.send("SELECT 7 AS seven;\r").expect("send");
    p.flush().expect("flush");
    p.exp_string("| 7     |").expect("the shell goes on");

    p.send("\\q\r").expect("send");
    p.flush().expect("flush");
    p.exp_eof().expect("exits");
    let saved = std::fs::read_to_string(&history).expect("history written");
    assert!(
        saved.contains("SELECT count(*) AS n FROM customers.customers;"),
        "{saved}"
    );
    assert!(saved.contains("SELECT 7 AS seven;"), "{saved}");
}

#[test]
fn products_search_and_find_show_only_what_the_user_may_see() {
    let o = meshql(&[
        "-u", "analyst", "--format", "csv", "products", "search", "EMAIL",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.lines()
            .any(|l| l.starts_with("customers.customers,customer-data,")
                && l.ends_with(",column email")),
        "{out}"
    );
    // The same search as a guest, who cannot see customers.
    let o = meshql(&[
        "-u", "guest", "--format", "csv", "products", "search", "email",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        !stdout(&o).contains("customers.customers"),
        "{}",
        stdout(&o)
    );
    // `\find` in the shell: descriptions, column names and classifications.
    let o = meshql(&["-u", "analyst", "--format", "csv", "-c", "\\find currency"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("sales.orders,sales-engineering,"), "{out}");
    assert!(out.contains("\"column currency, description\""), "{out}");
    let o = meshql(&["-u", "analyst", "--format", "csv", "-c", "\\find pii"]);
    assert!(stdout(&o).contains("customers.customers"), "{}", stdout(&o));
    // A term with quotes and wildcards is a term, not SQL.
    let o = meshql(&["-u", "analyst", "-c", "\\find 100%' OR 1=1 --"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("(0 rows"), "{}", stderr(&o));
    let o = meshql(&["-c", "\\find"]);
    assert!(stderr(&o).contains("usage: \\find TERM"), "{}", stderr(&o));
}

#[test]
fn a_current_domain_resolves_unqualified_names_from_use_backslash_c_and_the_flag() {
    let count = "SELECT count(*) AS n FROM orders";
    // None: unqualified names are unknown, with the qualified suggestion.
    let o = meshql(&["--format", "csv", "-c", count]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("product `orders` does not exist"),
        "{}",
        stderr(&o)
    );
    let qualified = meshql(&[
        "--format",
        "csv",
        "-c",
        "SELECT count(*) AS n FROM sales.orders",
    ]);
    assert!(qualified.status.success(), "{}", stderr(&qualified));
    let all = stdout(&qualified);

    for args in [
        vec!["-c", "USE sales", "-c", count],
        vec!["-c", "\\c sales", "-c", count],
        vec!["--domain", "sales", "-c", count],
        vec!["-c", "SET search_path = marketing, sales", "-c", count],
    ] {
        let mut all_args = vec!["--format", "csv"];
        all_args.extend(args.iter().copied());
        let o = meshql(&all_args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        assert_eq!(stdout(&o), all, "{args:?}");
    }

    // The row filter and the masks hold: eu_analyst counts EU orders only.
    let eu = meshql(&[
        "-u",
        "eu_analyst",
        "--format",
        "csv",
        "--domain",
        "sales",
        "-c",
        count,
    ]);
    let eu_qualified = meshql(&[
        "-u",
        "eu_analyst",
        "--format",
        "csv",
        "-c",
        "SELECT count(*) AS n FROM sales.orders WHERE region = 'EU'",
    ]);
    assert!(eu.status.success(), "{}", stderr(&eu));
    assert_eq!(stdout(&eu), stdout(&eu_qualified));
    assert_ne!(stdout(&eu), all);

    // A typo in the current domain is suggested by its short name.
    let o = meshql(&["--domain", "sales", "-c", "SELECT * FROM ordrs"]);
    assert!(
        stderr(&o).contains("product `ordrs` does not exist") && stderr(&o).contains("`orders`"),
        "{}",
        stderr(&o)
    );

    // A domain hidden from the principal is one that does not exist.
    let hidden = meshql(&["-u", "guest", "--domain", "payments", "-c", "SELECT 1"]);
    let missing = meshql(&["-u", "guest", "--domain", "paymants", "-c", "SELECT 1"]);
    assert_eq!(hidden.status.code(), Some(1));
    assert_eq!(
        stderr(&hidden).replace("payments", "X"),
        stderr(&missing).replace("paymants", "X")
    );
    let admin = meshql(&["-u", "admin", "--domain", "payments", "-c", "SELECT 1"]);
    assert!(admin.status.success(), "{}", stderr(&admin));
}
