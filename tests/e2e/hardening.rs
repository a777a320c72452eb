//! meshql tried from outside as an attacker would: over the wire against a
//! real server, as `guest`, `analyst`, `eu_analyst` and `finance`. Every
//! test asserts both sides: what an unrestricted principal sees, and that
//! a restricted one does not, so that none passes vacuously.

use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use meshql_server::ServerOptions;
use tonic::Code;

use crate::flight::*;
use crate::util::*;

/// Every cell of a result, one per line.
fn text(batches: &[RecordBatch]) -> String {
    rows(batches)
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("\n")
}

/// The row counts a plan text states: operators' `output_rows=N` (metrics
/// print `20.00 K` for 20,000) and the statistics' `Rows=Exact(N)` /
/// `Rows=Inexact(N)`.
fn row_counts(plan: &str) -> Vec<u64> {
    let mut out = Vec::new();
    for marker in ["output_rows=", "Rows=Exact(", "Rows=Inexact("] {
        for (i, _) in plan.match_indices(marker) {
            let rest = &plan[i + marker.len()..];
            let number: String = rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            let Ok(n) = number.parse::<f64>() else {
                continue;
            };
            let scale = match rest[number.len()..]
                .strip_prefix(' ')
                .and_then(|r| r.chars().next())
            {
                Some('K') => 1e3,
                Some('M') => 1e6,
                Some('B') => 1e9,
                _ => 1.0,
            };
            out.push((n * scale).round() as u64);
        }
    }
    out
}

/// Whether `counts` holds `n`, to the precision metrics print (three
/// significant digits).
fn states(counts: &[u64], n: u64) -> bool {
    counts.iter().any(|c| c.abs_diff(n) * 200 <= n)
}

/// The plan formats that could carry statistics or metrics.
const EXPLAINS: &[&str] = &[
    "EXPLAIN",
    "EXPLAIN VERBOSE",
    "EXPLAIN FORMAT tree",
    "EXPLAIN FORMAT indent",
    "EXPLAIN FORMAT graphviz",
    "EXPLAIN FORMAT pgjson",
    "EXPLAIN ANALYZE",
    "EXPLAIN ANALYZE VERBOSE",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_show_restricted_principals_nothing_below_the_policy() {
    let server = demo_server().await;
    let mut admin = demo_login(server.addr, "admin").await;
    let raw = |batches: Vec<RecordBatch>| -> Vec<String> {
        rows(&batches)
            .remove(0)
            .into_iter()
            .filter(|v| v.len() >= 6)
            .collect()
    };
    // The extremes of masked columns: what Parquet statistics hold.
    let people = raw(admin
        .sql("SELECT min(full_name), max(full_name), min(phone), max(phone), min(email), max(email) FROM customers.customers")
        .await
        .expect("admin reads customers"));
    let cards = raw(admin
        .sql("SELECT min(card_number), max(card_number) FROM payments.transactions")
        .await
        .expect("admin reads payments"));
    assert_eq!(people.len(), 6, "{people:?}");
    assert_eq!(cards.len(), 2, "{cards:?}");
    let mut analyst = demo_login(server.addr, "analyst").await;
    let mut finance = demo_login(server.addr, "finance").await;

    let mut admin_saw_raw = 0;
    for explain in EXPLAINS {
        for (sql, secrets) in [
            ("SELECT * FROM customers.customers", &people),
            ("SELECT * FROM payments.transactions", &cards),
            (
                "SELECT c.segment, count(*) FROM sales.orders o JOIN customers.customers c ON c.customer_id = o.customer_id GROUP BY c.segment",
                &people,
            ),
        ] {
            let statement = format!("{explain} {sql}");
            let seen = text(&admin.sql(&statement).await.expect("admin explains"));
            admin_saw_raw += secrets.iter().filter(|s| seen.contains(s.as_str())).count();
            let shown = text(&analyst.sql(&statement).await.expect("analyst explains"));
            for s in secrets.iter() {
                assert!(
                    !shown.contains(s.as_str()),
                    "{statement} shows the analyst the raw value {s}:\n{shown}"
                );
            }
            assert!(
                shown.contains("MeshPolicy"),
                "the boundary is shown: {shown}"
            );
            if sql.contains("payments") {
                let shown = text(&finance.sql(&statement).await.expect("finance explains"));
                for s in cards.iter() {
                    assert!(
                        !shown.contains(s.as_str()),
                        "{statement} shows finance the raw card number {s}:\n{shown}"
                    );
                }
            }
        }
    }
    assert!(
        admin_saw_raw > 0,
        "an unrestricted principal's EXPLAIN VERBOSE shows the statistics"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_metrics_do_not_count_the_rows_a_row_filter_hides() {
    let server = demo_server().await;
    let mut admin = demo_login(server.addr, "admin").await;
    let mut eu = demo_login(server.addr, "eu_analyst").await;
    let count =
        |batches: Vec<RecordBatch>| -> u64 { rows(&batches)[0][0].parse().expect("a count") };
    let all_orders = count(
        admin
            .sql("SELECT count(*) FROM sales.orders")
            .await
            .expect("count"),
    );
    let all_customers = count(
        admin
            .sql("SELECT count(*) FROM customers.customers")
            .await
            .expect("count"),
    );
    let eu_orders = count(
        eu.sql("SELECT count(*) FROM sales.orders")
            .await
            .expect("count"),
    );
    assert!(eu_orders < all_orders);
    let snapshot = rows(
        &admin
            .sql("SELECT snapshot_id FROM sales.\"orders$snapshots\" ORDER BY committed_at LIMIT 1")
            .await
            .expect("snapshots"),
    )[0][0]
        .clone();
    // Statements that scan every row (a plain count(*) is answered from
    // the statistics, without a scan).
    for sql in [
        "SELECT count(DISTINCT status) FROM sales.orders".to_string(),
        "SELECT region, count(*) FROM customers.customers GROUP BY region".to_string(),
        format!("SELECT count(DISTINCT status) FROM sales.orders FOR VERSION AS OF {snapshot}"),
    ] {
        let hidden = if sql.contains("customers") {
            all_customers
        } else {
            all_orders
        };
        for explain in [
            "EXPLAIN ANALYZE",
            "EXPLAIN ANALYZE VERBOSE",
            "EXPLAIN VERBOSE",
        ] {
            let statement = format!("{explain} {sql}");
            let seen = text(&admin.sql(&statement).await.expect("admin explains"));
            if explain.contains("ANALYZE") {
                assert!(
                    states(&row_counts(&seen), hidden),
                    "admin's {statement} counts every row ({hidden}):\n{seen}"
                );
            }
            let shown = text(&eu.sql(&statement).await.expect("eu_analyst explains"));
            let counts = row_counts(&shown);
            assert!(
                !states(&counts, hidden),
                "{statement} tells eu_analyst the hidden total {hidden}:\n{shown}"
            );
            assert!(
                !shown.contains("Rows=Exact") && !shown.contains("Rows=Inexact"),
                "{statement} shows eu_analyst statistics:\n{shown}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_mask_functions_resolve_only_in_policies() {
    let server = demo_server().await;
    for user in ["guest", "analyst", "admin"] {
        let mut w = demo_login(server.addr, user).await;
        let keyed = w
            .sql("SELECT hash_pseudonym(x) FROM range(1, 2001) AS t(x)")
            .await
            .expect_err("not callable");
        let missing = w
            .sql("SELECT hash_pseudonymz(x) FROM range(1, 2001) AS t(x)")
            .await
            .expect_err("does not exist");
        assert_eq!(keyed.code(), missing.code(), "{user}: {keyed} / {missing}");
        assert_eq!(
            keyed.message().replace("hash_pseudonym", "NAME"),
            missing.message().replace("hash_pseudonymz", "NAME"),
            "{user}: the same error as for a function that does not exist"
        );
    }
    // The policy still pseudonymises: the guest's keys are not the raw ones.
    let mut admin = demo_login(server.addr, "admin").await;
    let mut guest = demo_login(server.addr, "guest").await;
    let sql = "SELECT customer_id FROM sales.orders ORDER BY order_id LIMIT 20";
    let raw = strings(&admin.sql(sql).await.expect("admin reads"), "customer_id");
    let pseudonyms = strings(&guest.sql(sql).await.expect("guest reads"), "customer_id");
    assert_eq!(raw.len(), 20);
    assert!(
        raw.iter().zip(&pseudonyms).all(|(r, p)| r != p),
        "{raw:?} / {pseudonyms:?}"
    );
}

#[test]
fn a_mesh_without_demo_secrets_does_not_open_with_the_demo_pseudonym_key() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    write(
        dir,
        "mesh.yaml",
        "apiVersion: meshql/v1\nkind: Mesh\nname: t\nstorage:\n  s:\n    type: local\n    root: data\ngovernance:\n  pseudonymSecret: demo-pseudonym-secret-change-me\n",
    );
    allow_all(dir);
    let err = meshql::Mesh::open(dir).expect_err("refused");
    assert!(
        err.to_string().contains("demo mesh's documented one"),
        "{err}"
    );
    write(
        dir,
        "mesh.yaml",
        "apiVersion: meshql/v1\nkind: Mesh\nname: t\nstorage:\n  s:\n    type: local\n    root: data\ngovernance:\n  pseudonymSecret: a-secret-of-its-own\n",
    );
    meshql::Mesh::open(dir).expect("a secret of its own opens");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_too_large_to_plan_are_refused_and_the_server_goes_on() {
    let server = demo_server().await;
    let mut guest = demo_login(server.addr, "guest").await;
    let ors: Vec<String> = (0..20_000).map(|i| format!("order_id = {i}")).collect();
    let cases = [
        (
            "a 20,000-term OR",
            format!(
                "SELECT count(*) FROM sales.orders WHERE {}",
                ors.join(" OR ")
            ),
            "operators",
        ),
        (
            "a 10,000-deep nesting",
            format!("SELECT {}1{}", "(".repeat(10_000), ")".repeat(10_000)),
            "recursion limit",
        ),
        (
            "a 10 MB statement",
            format!("SELECT '{}' AS x", "x".repeat(10 * 1024 * 1024)),
            "bytes long",
        ),
        (
            "a 5,000-term sum",
            format!("SELECT {} AS x", vec!["1"; 5_000].join(" + ")),
            "operators",
        ),
    ];
    for (what, sql, needle) in cases {
        let err = guest.sql(&sql).await.expect_err(what);
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err}");
        assert!(
            err.message().to_lowercase().contains(needle),
            "{what}: {}",
            err.message().chars().take(300).collect::<String>()
        );
        let ok = guest.sql("SELECT 1 AS one").await.expect("still serving");
        assert_eq!(rows(&ok), vec![vec!["1"]]);
    }
    // Within the limits, long statements plan.
    let first: i64 = rows(
        &guest
            .sql("SELECT min(order_id) FROM sales.orders")
            .await
            .expect("runs"),
    )[0][0]
        .parse()
        .expect("an id");
    let within: Vec<String> = (0..2_000)
        .map(|i| format!("order_id = {}", first + i))
        .collect();
    let sql = format!(
        "SELECT count(*) AS n FROM sales.orders WHERE {}",
        within.join(" OR ")
    );
    let n = rows(&guest.sql(&sql).await.expect("2,000 terms plan"));
    assert_eq!(n, vec![vec!["2000"]], "order ids are consecutive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_that_build_large_values_stay_within_the_memory_limit() {
    let server = start(
        demo_mesh(),
        ServerOptions {
            query_memory: Some(512 * 1024 * 1024),
            ..ServerOptions::default()
        },
    )
    .await;
    let mut guest = demo_login(server.addr, "guest").await;
    for sql in [
        "SELECT length(repeat('x', 1073741824)) AS n",
        "SELECT cardinality(generate_series(1, 134217728)) AS n",
        "SELECT cardinality(range(1, 134217728)) AS n",
        "SELECT length(lpad('x', 1073741824)) AS n",
        "SELECT cardinality(array_repeat(1, 134217728)) AS n",
        "SELECT length(repeat('x', 9223372036854775807)) AS n",
    ] {
        let err = guest.sql(sql).await.expect_err(sql);
        assert_eq!(err.code(), Code::ResourceExhausted, "{sql}: {err}");
        assert!(err.message().contains("MB"), "{sql}: {err}");
    }
    let ok = guest
        .sql("SELECT length(repeat('x', 1000)) AS a, cardinality(range(1, 1001)) AS b")
        .await
        .expect("small values build");
    assert_eq!(rows(&ok), vec![vec!["1000", "1000"]]);
}

const SLOW: &str = "SELECT count(*) FROM sales.order_items a CROSS JOIN sales.order_items b WHERE a.quantity + b.quantity > 100";
/// Runs for minutes: a query only its timeout ends.
const ENDLESS: &str = "SELECT count(*) FROM sales.order_items a CROSS JOIN sales.order_items b CROSS JOIN sales.order_items c WHERE a.quantity + b.quantity + c.quantity > 100";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_principal_cannot_starve_the_others() {
    // The slow queries hold their slots until this timeout; a starved login
    // or query would wait at least 4.5 s, so the 2.5 s bounds below leave room
    // for a loaded machine without letting starvation pass.
    let timeout = Duration::from_secs(6);
    let server = start(
        demo_mesh(),
        ServerOptions {
            max_concurrent_queries: 8,
            query_timeout: Some(timeout),
            queue_timeout: Duration::from_secs(60),
            ..ServerOptions::default()
        },
    )
    .await;
    let mut slow = Vec::new();
    for _ in 0..8 {
        let mut analyst = demo_login(server.addr, "analyst").await;
        slow.push(tokio::spawn(async move {
            let started = Instant::now();
            let result = analyst.sql(ENDLESS).await;
            (result, started.elapsed())
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Another user logs in and runs a one-row query at once.
    let started = Instant::now();
    let mut eu = demo_login(server.addr, "eu_analyst").await;
    let login = started.elapsed();
    let started = Instant::now();
    let one = eu
        .sql("SELECT count(*) AS n FROM sales.orders")
        .await
        .expect("answers");
    let query = started.elapsed();
    assert_eq!(rows(&one).len(), 1);
    let bound = Duration::from_millis(2500);
    assert!(login < bound, "handshake took {login:?}");
    assert!(query < bound, "the query took {query:?}");
    // The slow ones end at their timeout: half run, half wait their turn.
    for task in slow {
        let (result, took) = task.await.expect("joins");
        let err = result.expect_err("stopped at the timeout");
        assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
        assert!(err.message().contains("longer than its limit"), "{err}");
        assert!(took < timeout * 2 + Duration::from_secs(5), "took {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_within_the_grace_period() {
    use std::io::BufRead;
    demo_mesh();
    let log = tempfile::NamedTempFile::new().expect("a log file");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_meshql"))
        .arg("--mesh")
        .arg(root().join("catalog"))
        .args(["serve", "--addr", "127.0.0.1:0", "--grace-seconds", "1"])
        .args([
            "--max-concurrent-queries",
            "8",
            "--max-queries-per-user",
            "8",
        ])
        .env("MESHQL_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(log.reopen().expect("the log file"))
        .spawn()
        .expect("starts");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("announces");
    let addr: std::net::SocketAddr = line
        .rsplit("grpc://")
        .next()
        .expect("address")
        .trim()
        .parse()
        .expect("parses");
    let mut running = Vec::new();
    for _ in 0..8 {
        let mut analyst = demo_login(addr, "analyst").await;
        running.push(tokio::spawn(async move { analyst.sql(SLOW).await }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid fits"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("signal");
    let started = Instant::now();
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("joins")
        .expect("waits");
    let took = started.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(
        took < Duration::from_secs(4),
        "eight busy queries held shutdown for {took:?} (grace 1 s)"
    );
    for task in running {
        assert!(
            task.await.expect("joins").is_err(),
            "cut off by the shutdown"
        );
    }
    // A log file gets plain text: no terminal colour codes.
    let text = std::fs::read_to_string(log.path()).expect("the log");
    assert!(text.contains("shutting down"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "colour codes in the log: {text:?}"
    );
}

/// A small deterministic generator, so that a failing shape can be rerun.
struct Shapes(u64);

impl Shapes {
    fn pick(&mut self, n: usize) -> usize {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

/// Random query shapes over masked columns, run as `analyst`: no cell of
/// any result and no plan text holds a raw value of a masked column. The
/// same statements as `admin` do show raw values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_query_shape_shows_the_analyst_a_raw_masked_value() {
    use std::collections::HashSet;
    let mesh = demo_mesh();
    let admin = mesh.session(admin());
    let analyst = mesh.session(mesh.principal("analyst").expect("user"));
    let masked = [
        (
            "customers.customers",
            "full_name",
            ["segment", "region", "country"],
        ),
        (
            "customers.customers",
            "email",
            ["segment", "region", "country"],
        ),
        (
            "customers.customers",
            "phone",
            ["segment", "region", "customer_id"],
        ),
        (
            "payments.transactions",
            "card_number",
            ["status", "currency", "card_brand"],
        ),
    ];
    // Every raw value, for the cells; the extremes (what statistics hold)
    // and a sample, for plan texts.
    let mut raw: HashSet<String> = HashSet::new();
    let mut needles: Vec<String> = Vec::new();
    for (product, column, _) in &masked {
        let values = rows(
            &admin
                .collect(&format!(
                    "SELECT DISTINCT {column} FROM {product} WHERE {column} IS NOT NULL ORDER BY 1"
                ))
                .await
                .expect("admin reads"),
        );
        let values: Vec<String> = values.into_iter().map(|mut r| r.remove(0)).collect();
        needles.extend(values.first().cloned());
        needles.extend(values.last().cloned());
        needles.extend(values.iter().step_by(values.len() / 25 + 1).cloned());
        raw.extend(values);
    }
    needles.retain(|n| n.len() >= 6);
    let shapes = [
        "SELECT {c} FROM {p} WHERE {o} = (SELECT min({o}) FROM {p}) LIMIT 5",
        "SELECT {o}, min({c}), max({c}) FROM {p} GROUP BY {o}",
        "SELECT string_agg({c}, ',') FROM (SELECT {c} FROM {p} ORDER BY {c} LIMIT 20) t",
        "WITH t AS (SELECT {c} AS v FROM {p}) SELECT v FROM t ORDER BY v DESC LIMIT 3",
        "SELECT {c} FROM {p} UNION SELECT {c} FROM {p} ORDER BY 1 LIMIT 5",
        "SELECT first_value({c}) OVER (PARTITION BY {o} ORDER BY {c}) AS v FROM {p} LIMIT 5",
        "SELECT count(*) FROM {p} WHERE {c} IN (SELECT {c} FROM {p} ORDER BY {c} LIMIT 10)",
        "SELECT upper({c}), length({c}), {o} FROM {p} ORDER BY {c}, {o} LIMIT 5",
        "SELECT {c} FROM {p} WHERE {c} LIKE '%a%' AND {o} IS NOT NULL ORDER BY {c} LIMIT 5",
        "SELECT {o}, array_agg({c} ORDER BY {c}) FROM {p} GROUP BY {o} LIMIT 2",
        "SELECT {c} FROM {p} WHERE {c} > (SELECT min({c}) FROM {p}) ORDER BY {c} LIMIT 3",
    ];
    let prefixes = ["", "", "EXPLAIN ", "EXPLAIN VERBOSE ", "EXPLAIN ANALYZE "];
    let mut rng = Shapes(0x6d65_7368_716c);
    let mut admin_saw = 0usize;
    for _ in 0..60 {
        let (product, column, others) = masked[rng.pick(masked.len())];
        let other = others[rng.pick(others.len())];
        let shape = shapes[rng.pick(shapes.len())];
        let prefix = prefixes[rng.pick(prefixes.len())];
        let sql = format!(
            "{prefix}{}",
            shape
                .replace("{c}", column)
                .replace("{o}", other)
                .replace("{p}", product)
        );
        let output = |r: meshql::Result<Vec<RecordBatch>>| match r {
            Ok(b) => rows(&b),
            Err(e) => vec![vec![e.to_string()]],
        };
        let seen = output(admin.collect(&sql).await);
        let shown = output(analyst.collect(&sql).await);
        let seen_text = seen.concat().join("\n");
        admin_saw += seen.iter().flatten().filter(|c| raw.contains(*c)).count()
            + needles
                .iter()
                .filter(|n| seen_text.contains(n.as_str()))
                .count();
        for cell in shown.iter().flatten() {
            assert!(
                !raw.contains(cell),
                "{sql}: the analyst sees the raw value {cell}"
            );
            for n in &needles {
                assert!(
                    !cell.contains(n.as_str()),
                    "{sql}: the analyst's output holds the raw value {n}:\n{cell}"
                );
            }
        }
    }
    assert!(admin_saw > 0, "the shapes read raw values as admin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_announced_is_the_schema_streamed() {
    use arrow_flight::sql::CommandStatementQuery;
    let server = demo_server().await;
    let mut analyst = demo_login(server.addr, "analyst").await;
    for sql in [
        "SELECT length(repeat('x', 3)) AS n",
        "SELECT cardinality(make_array(1, 2, 3)) AS n",
        "SELECT (SELECT max(order_id) FROM sales.orders) AS newest",
        "SELECT (SELECT order_id FROM sales.orders WHERE order_id = 100000) AS one",
        "SELECT order_id, total_order_value FROM sales.orders ORDER BY order_id LIMIT 2",
        "SELECT email, count(*) AS n FROM customers.customers GROUP BY email ORDER BY n DESC LIMIT 1",
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT n FROM r",
        "WITH RECURSIVE c(id, email, depth) AS (SELECT customer_id, email, 1 FROM customers.customers WHERE customer_id = 1 UNION ALL SELECT k.customer_id, k.email, c.depth + 1 FROM c JOIN customers.customers k ON k.customer_id = c.id + 1 WHERE c.depth < 3) SELECT * FROM c ORDER BY depth",
    ] {
        let info = analyst
            .info(CommandStatementQuery {
                query: sql.into(),
                transaction_id: None,
            })
            .await
            .expect(sql);
        let announced = info.clone().try_decode_schema().expect("a schema");
        let batches = analyst.fetch(&info).await.expect(sql);
        assert!(!batches.is_empty(), "{sql}");
        for b in &batches {
            assert_eq!(b.schema().as_ref(), &announced, "{sql}");
        }
    }
}

/// gRPC clients refuse messages over 4 MiB unless told otherwise. A result
/// whose rows differ much in size (the plan rows of an unrestricted
/// `EXPLAIN VERBOSE` over many files) must still reach such a client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_of_uneven_sizes_reach_a_client_with_the_default_message_limit() {
    let server = demo_server().await;
    let mut admin = demo_login(server.addr, "admin").await;
    // Two rows of 2.5 MB at the start of a batch of 1,000: cut into equal
    // row counts, the first piece would be a message of 5 MB.
    let sql = "SELECT v, CASE WHEN v <= 2 THEN repeat('x', 2500000) ELSE 'y' END AS s \
               FROM generate_series(1, 1000) AS t(v)";
    let batches = admin.sql(sql).await.expect("the whole result arrives");
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 1000);
    let bytes: usize = batches
        .iter()
        .map(|b| {
            let s = arrow::compute::cast(b.column(1), &arrow::datatypes::DataType::Utf8)
                .expect("strings");
            let s = s
                .as_any()
                .downcast_ref::<arrow::array::StringArray>()
                .expect("strings");
            s.iter().map(|v| v.map_or(0, str::len)).sum::<usize>()
        })
        .sum();
    assert_eq!(bytes, 2 * 2_500_000 + 998);
    // The unrestricted principal's plans with every file and statistic.
    let plan = text(
        &admin
            .sql("EXPLAIN VERBOSE SELECT c.segment, count(*) FROM sales.orders o JOIN customers.customers c ON c.customer_id = o.customer_id GROUP BY c.segment")
            .await
            .expect("admin's verbose plan arrives"),
    );
    assert!(plan.contains("physical_plan_with_stats"), "{plan}");
}
