//! One list of governance attack cases, run over every protocol a client
//! can reach meshql by (Flight SQL with arrow-flight's client, the
//! PostgreSQL protocol with psql), so the protocols cannot drift apart.
//! Each case says who asks, what, and what must come back; the cases come
//! in pairs, so that one principal's answer shows the check can fail.

use std::net::SocketAddr;

use meshql_server::ServerOptions;
use tonic::Code;

use crate::util::*;

/// What a protocol answered: rows as text, or an error's kind and message.
#[derive(Debug)]
pub(crate) enum Answer {
    Rows(Vec<Vec<String>>),
    Failed(Refusal, String),
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub(crate) enum Refusal {
    /// A product that does not exist (or is hidden).
    Missing,
    /// A statement the guard refuses.
    Denied,
    /// A bad password.
    Unauthenticated,
    /// Anything else (bad SQL, a missing column).
    Other,
}

type Check = fn(&Answer) -> Result<(), String>;

pub(crate) struct Case {
    pub(crate) what: &'static str,
    pub(crate) user: &'static str,
    /// The password, when not `<user>-demo`.
    pub(crate) password: Option<&'static str>,
    pub(crate) sql: &'static str,
    pub(crate) check: Check,
}

fn cells(a: &Answer) -> Result<Vec<String>, String> {
    match a {
        Answer::Rows(r) if !r.is_empty() => Ok(r.iter().flatten().cloned().collect()),
        other => Err(format!("expected rows, got {other:?}")),
    }
}

fn all_masked(a: &Answer) -> Result<(), String> {
    let c = cells(a)?;
    c.iter()
        .all(|v| v.contains("***"))
        .then_some(())
        .ok_or_else(|| format!("a raw value: {c:?}"))
}

fn none_masked(a: &Answer) -> Result<(), String> {
    let c = cells(a)?;
    c.iter()
        .all(|v| v.contains('@') && !v.contains("***"))
        .then_some(())
        .ok_or_else(|| format!("not raw: {c:?}"))
}

fn only_eu(a: &Answer) -> Result<(), String> {
    let c = cells(a)?;
    (c == ["EU"]).then_some(()).ok_or_else(|| format!("{c:?}"))
}

fn more_than_eu(a: &Answer) -> Result<(), String> {
    let c = cells(a)?;
    (c.len() > 1 && c.contains(&"EU".to_string()))
        .then_some(())
        .ok_or_else(|| format!("{c:?}"))
}

fn refused(kind: Refusal) -> impl Fn(&Answer) -> Result<(), String> {
    move |a| match a {
        Answer::Failed(k, _) if *k == kind => Ok(()),
        other => Err(format!("expected {kind:?}, got {other:?}")),
    }
}

fn missing(a: &Answer) -> Result<(), String> {
    refused(Refusal::Missing)(a)
}

fn denied(a: &Answer) -> Result<(), String> {
    refused(Refusal::Denied)(a)
}

fn unauthenticated(a: &Answer) -> Result<(), String> {
    refused(Refusal::Unauthenticated)(a)
}

fn other_error(a: &Answer) -> Result<(), String> {
    refused(Refusal::Other)(a)
}

fn some_rows(a: &Answer) -> Result<(), String> {
    cells(a).map(|_| ())
}

const EMAILS: &[&str] = &[
    "SELECT email FROM customers.customers ORDER BY customer_id LIMIT 5",
    "SELECT max(email) FROM customers.customers",
    "SELECT e FROM (SELECT email AS e FROM customers.customers) t ORDER BY e LIMIT 3",
    "WITH t AS (SELECT lower(email) AS e FROM customers.customers) SELECT e FROM t LIMIT 3",
    "SELECT email FROM customers.customers WHERE email LIKE '%@%' ORDER BY 1 LIMIT 3",
    "SELECT email FROM customers.customers UNION SELECT email FROM customers.customers ORDER BY 1 LIMIT 3",
];

/// The cases. Masks under query shapes come from [`EMAILS`], each as the
/// analyst (masked) and as the admin (raw).
pub(crate) fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for sql in EMAILS {
        out.push(Case {
            what: "a mask under this query shape",
            user: "analyst",
            password: None,
            sql,
            check: all_masked,
        });
        out.push(Case {
            what: "the admin reads it raw",
            user: "admin",
            password: None,
            sql,
            check: none_masked,
        });
    }
    let region = "SELECT DISTINCT region FROM sales.orders ORDER BY 1";
    out.extend([
        Case {
            what: "the row filter",
            user: "eu_analyst",
            password: None,
            sql: region,
            check: only_eu,
        },
        Case {
            what: "no row filter for the analyst",
            user: "analyst",
            password: None,
            sql: region,
            check: more_than_eu,
        },
        Case {
            what: "a hidden product is missing",
            user: "guest",
            password: None,
            sql: "SELECT * FROM payments.transactions",
            check: missing,
        },
        Case {
            what: "a missing product",
            user: "guest",
            password: None,
            sql: "SELECT * FROM payments.refunds",
            check: missing,
        },
        Case {
            what: "the admin reads the product the guest cannot",
            user: "admin",
            password: None,
            sql: "SELECT count(*) FROM payments.transactions",
            check: some_rows,
        },
        Case {
            what: "a hidden column is missing",
            user: "guest",
            password: None,
            sql: "SELECT attributed_revenue FROM marketing.campaign_performance",
            check: other_error,
        },
        Case {
            what: "the admin reads the column",
            user: "admin",
            password: None,
            sql: "SELECT count(attributed_revenue) FROM marketing.campaign_performance",
            check: some_rows,
        },
        Case {
            what: "the guard refuses DDL",
            user: "admin",
            password: None,
            sql: "DROP TABLE sales.orders",
            check: denied,
        },
        Case {
            what: "the guard refuses writes",
            user: "admin",
            password: None,
            sql: "DELETE FROM sales.orders",
            check: denied,
        },
        Case {
            what: "the guard refuses files",
            user: "admin",
            password: None,
            sql: "SELECT * FROM '/etc/passwd'",
            check: denied,
        },
        Case {
            what: "the guard refuses engine settings",
            user: "admin",
            password: None,
            sql: "SET datafusion.execution.batch_size = 1",
            check: denied,
        },
        Case {
            what: "a wrong password",
            user: "analyst",
            password: Some("wrong"),
            sql: "SELECT 1",
            check: unauthenticated,
        },
    ]);
    out
}

/// Runs every case through `ask` and fails with every case that did not
/// hold; hidden and missing products must also answer word for word alike.
async fn run_all<F, Fut>(protocol: &str, ask: F)
where
    F: Fn(&'static str, String, &'static str) -> Fut,
    Fut: Future<Output = Answer>,
{
    let mut failures = Vec::new();
    let mut answers = Vec::new();
    for case in cases() {
        let password = case
            .password
            .map_or_else(|| format!("{}-demo", case.user), str::to_string);
        let answer = ask(case.user, password, case.sql).await;
        if let Err(e) = (case.check)(&answer) {
            failures.push(format!(
                "{protocol}: {} ({} as {}): {e}",
                case.what, case.sql, case.user
            ));
        }
        answers.push((case.sql, answer));
    }
    let message = |sql: &str| {
        answers.iter().find_map(|(s, a)| match a {
            Answer::Failed(_, m) if *s == sql => Some(m.clone()),
            _ => None,
        })
    };
    let hidden = message("SELECT * FROM payments.transactions").unwrap_or_default();
    let absent = message("SELECT * FROM payments.refunds").unwrap_or_default();
    if hidden.replace("transactions", "X") != absent.replace("refunds", "X") {
        failures.push(format!(
            "{protocol}: hidden and missing differ: {hidden:?} vs {absent:?}"
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_attack_cases_hold_over_flight_sql() {
    let server = crate::flight::demo_server().await;
    let addr = server.addr;
    run_all("Flight SQL", |user, password, sql| async move {
        let mut wire = match crate::flight::login(addr, user, &password).await {
            Ok(w) => w,
            Err(s) => return Answer::Failed(flight_refusal(s.code()), s.message().to_string()),
        };
        match wire.sql(sql).await {
            Ok(batches) => Answer::Rows(rows(&batches)),
            Err(s) => Answer::Failed(flight_refusal(s.code()), s.message().to_string()),
        }
    })
    .await;
}

fn flight_refusal(code: Code) -> Refusal {
    match code {
        Code::NotFound => Refusal::Missing,
        Code::PermissionDenied => Refusal::Denied,
        Code::Unauthenticated => Refusal::Unauthenticated,
        _ => Refusal::Other,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_attack_cases_hold_over_postgresql() {
    if crate::pg::psql_binary().is_none() {
        return;
    }
    let server = crate::pg::start(demo_mesh(), ServerOptions::default()).await;
    let addr = server.addr;
    run_all("PostgreSQL", |user, password, sql| {
        psql_answer(addr, user, password, sql)
    })
    .await;
}

async fn psql_answer(addr: SocketAddr, user: &str, password: String, sql: &str) -> Answer {
    let out = crate::pg::psql(addr, user, &password, &["-F", "\t", "-c", sql]).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        return Answer::Rows(
            stdout
                .lines()
                .map(|l| l.split('\t').map(str::to_string).collect())
                .collect(),
        );
    }
    // "ERROR:  42P01: product ..." or "... failed: FATAL:  28P01: ...".
    let at = ["ERROR:  ", "FATAL:  "]
        .iter()
        .filter_map(|p| stderr.find(p).map(|i| i + p.len()))
        .min()
        .unwrap_or(0);
    let rest = &stderr[at..];
    // A login's error comes before psql's verbosity applies: no code then.
    let coded = rest.get(5..7) == Some(": ");
    let code = if coded { &rest[..5] } else { "" };
    let kind = match code {
        "42P01" => Refusal::Missing,
        "42501" => Refusal::Denied,
        c if c.starts_with("28") => Refusal::Unauthenticated,
        "" if rest.starts_with("password authentication failed") => Refusal::Unauthenticated,
        _ => Refusal::Other,
    };
    let message = rest
        .get(if coded { 7 } else { 0 }..)
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    Answer::Failed(kind, message)
}
