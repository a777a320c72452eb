//! The PostgreSQL wire protocol with real clients: Debian's `psql` against
//! a server on 127.0.0.1, as each demo principal.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use meshql::Mesh;
use meshql_server::ServerOptions;

use crate::util::*;

pub(crate) struct PgServer {
    pub(crate) addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Flight SQL and the PostgreSQL protocol on 127.0.0.1, one process.
pub(crate) async fn start(mesh: Mesh, options: ServerOptions) -> PgServer {
    start_tls(mesh, options, None).await
}

pub(crate) async fn start_tls(
    mesh: Mesh,
    options: ServerOptions,
    tls: Option<meshql_server::Tls>,
) -> PgServer {
    let flight = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let pg = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = pg.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
        };
        let more = meshql_server::Listeners {
            http: None,
            pg: Some(pg),
        };
        meshql_server::serve_all(
            flight,
            more,
            mesh,
            options,
            tls,
            shutdown,
            Duration::from_secs(1),
        )
        .await
        .expect("serves");
    });
    PgServer {
        addr,
        stop: Some(stop),
    }
}

/// `psql`, or `None` (and a message) when the machine has none.
pub(crate) fn psql_binary() -> Option<String> {
    let found = Command::new("psql").arg("--version").output().is_ok();
    if !found {
        eprintln!(
            "SKIPPED: no psql on this machine (Debian's postgresql-client; .ci/run installs it)"
        );
    }
    found.then(|| "psql".to_string())
}

/// Runs `psql` as `user` with `args`, unaligned and tuples-only, errors
/// with their SQLSTATE.
pub(crate) async fn psql(addr: SocketAddr, user: &str, password: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new("psql");
    cmd.arg(format!(
        "host={} port={} user={user} dbname=mesh sslmode=disable",
        addr.ip(),
        addr.port()
    ))
    .args([
        "-X",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        "-v",
        "VERBOSITY=verbose",
    ])
    .args(args)
    .env("PGPASSWORD", password)
    .env("PGCONNECT_TIMEOUT", "10");
    tokio::task::spawn_blocking(move || cmd.output().expect("runs psql"))
        .await
        .expect("joins")
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_queries_as_each_principal_with_masks_filters_and_sqlstates() {
    if psql_binary().is_none() {
        return;
    }
    let server = start(demo_mesh(), ServerOptions::default()).await;
    let addr = server.addr;

    // Masks and row filters hold, per principal.
    let emails = "SELECT email FROM customers.customers ORDER BY customer_id LIMIT 3";
    let analyst = psql(addr, "analyst", "analyst-demo", &["-c", emails]).await;
    assert!(analyst.status.success(), "{}", err(&analyst));
    let analyst_emails = out(&analyst);
    let lines: Vec<&str> = analyst_emails.lines().map(str::trim).collect();
    assert_eq!(lines.len(), 3, "{analyst_emails}");
    assert!(lines.iter().all(|l| l.contains("***@")), "{analyst_emails}");
    let admin = psql(addr, "admin", "admin-demo", &["-c", emails]).await;
    assert!(admin.status.success(), "{}", err(&admin));
    assert!(
        out(&admin)
            .lines()
            .all(|l| l.contains('@') && !l.contains("***")),
        "{}",
        out(&admin)
    );

    let regions = "SELECT region, count(*) FROM sales.orders GROUP BY region ORDER BY region";
    let eu = psql(addr, "eu_analyst", "eu_analyst-demo", &["-c", regions]).await;
    assert!(eu.status.success(), "{}", err(&eu));
    let eu_rows: Vec<String> = out(&eu).lines().map(str::to_string).collect();
    assert_eq!(eu_rows.len(), 1, "{eu_rows:?}");
    assert!(eu_rows[0].starts_with("EU|"), "{eu_rows:?}");
    let all = psql(addr, "analyst", "analyst-demo", &["-c", regions]).await;
    assert!(out(&all).lines().count() > 1, "{}", out(&all));

    // A hidden product answers word for word as a missing one, 42P01.
    let hidden = psql(
        addr,
        "guest",
        "guest-demo",
        &["-c", "SELECT * FROM payments.transactions"],
    )
    .await;
    let missing = psql(
        addr,
        "guest",
        "guest-demo",
        &["-c", "SELECT * FROM payments.transactionz"],
    )
    .await;
    assert!(!hidden.status.success());
    assert!(err(&hidden).contains("42P01"), "{}", err(&hidden));
    assert_eq!(
        err(&hidden).replace("transactions", "X"),
        err(&missing).replace("transactionz", "X")
    );
    let admin_reads = psql(
        addr,
        "admin",
        "admin-demo",
        &["-c", "SELECT count(*) FROM payments.transactions"],
    )
    .await;
    assert!(admin_reads.status.success(), "{}", err(&admin_reads));

    // The guard: writes are refused with 42501; the connection goes on.
    let refused = psql(
        addr,
        "admin",
        "admin-demo",
        &["-c", "DROP TABLE sales.orders"],
    )
    .await;
    assert!(err(&refused).contains("42501"), "{}", err(&refused));

    // A current domain, and transactions as drivers send them.
    let domain = psql(
        addr,
        "eu_analyst",
        "eu_analyst-demo",
        &[
            "-c",
            "BEGIN",
            "-c",
            "SET search_path = sales",
            "-c",
            "SHOW search_path",
            "-c",
            "SELECT count(*) FROM orders",
            "-c",
            "SELECT count(*) FROM sales.orders WHERE region = 'EU'",
            "-c",
            "COMMIT",
        ],
    )
    .await;
    assert!(domain.status.success(), "{}", err(&domain));
    let lines: Vec<String> = out(&domain)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    assert_eq!(
        lines[..2],
        ["BEGIN".to_string(), "SET".to_string()],
        "{lines:?}"
    );
    assert_eq!(lines[2], "sales", "{lines:?}");
    assert_eq!(
        lines[3], lines[4],
        "the row filter holds in the domain: {lines:?}"
    );

    // \copy (COPY ... TO STDOUT) exports governed rows; COPY to a server
    // file is refused.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("customers.csv");
    let copy = psql(
        addr,
        "eu_analyst",
        "eu_analyst-demo",
        &[
            "-c",
            &format!(
                "\\copy (SELECT email, region FROM customers.customers ORDER BY customer_id LIMIT 5) TO '{}' WITH (FORMAT csv, HEADER)",
                file.display()
            ),
        ],
    )
    .await;
    assert!(copy.status.success(), "{}", err(&copy));
    // The command tag counts rows, not the header.
    assert_eq!(out(&copy).trim(), "COPY 5", "{}", out(&copy));
    let exported = std::fs::read_to_string(&file).expect("exported");
    let mut lines = exported.lines();
    assert_eq!(lines.next(), Some("email,region"), "{exported}");
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 5, "{exported}");
    assert!(
        rows.iter()
            .all(|r| r.contains("***@") && r.ends_with(",EU")),
        "{exported}"
    );
    let admin_copy = psql(
        addr,
        "admin",
        "admin-demo",
        &[
            "-c",
            "COPY (SELECT email FROM customers.customers ORDER BY customer_id LIMIT 5) TO STDOUT",
        ],
    )
    .await;
    assert!(
        out(&admin_copy).lines().all(|l| !l.contains("***")),
        "{}",
        out(&admin_copy)
    );
    let to_file = psql(
        addr,
        "admin",
        "admin-demo",
        &["-c", "COPY (SELECT 1) TO '/tmp/meshql-copy'"],
    )
    .await;
    assert!(err(&to_file).contains("42501"), "{}", err(&to_file));

    // Wrong password, unknown user: the same refusal, 28P01.
    let wrong = psql(addr, "analyst", "nope", &["-c", "SELECT 1"]).await;
    let nobody = psql(addr, "nobody", "nope", &["-c", "SELECT 1"]).await;
    assert!(!wrong.status.success());
    assert!(
        err(&wrong).contains("password authentication failed for user \"analyst\""),
        "{}",
        err(&wrong)
    );
    assert_eq!(
        err(&wrong).replace("analyst", "X"),
        err(&nobody).replace("nobody", "X")
    );

    // Another database is not there.
    let mut cmd = Command::new("psql");
    cmd.arg(format!(
        "host={} port={} user=analyst dbname=postgres sslmode=disable",
        addr.ip(),
        addr.port()
    ))
    .args(["-X", "-c", "SELECT 1"])
    .env("PGPASSWORD", "analyst-demo");
    let other = tokio::task::spawn_blocking(move || cmd.output().expect("runs"))
        .await
        .expect("joins");
    assert!(
        err(&other).contains("database \"postgres\" does not exist"),
        "{}",
        err(&other)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_psql_query_stops_with_57014() {
    if psql_binary().is_none() {
        return;
    }
    let server = start(demo_mesh(), ServerOptions::default()).await;
    let addr = server.addr;
    let mut cmd = Command::new("psql");
    cmd.arg(format!(
        "host={} port={} user=admin dbname=mesh sslmode=disable",
        addr.ip(),
        addr.port()
    ))
    .args(["-X", "-v", "VERBOSITY=verbose", "-c"])
    .arg(
        "SELECT count(*) FROM sales.order_items a JOIN sales.order_items b ON a.product_id = b.product_id \
         JOIN sales.order_items c ON b.product_id = c.product_id",
    )
    .env("PGPASSWORD", "admin-demo")
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().expect("runs psql");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    // Ctrl-C: psql sends a CancelRequest with the connection's key.
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("signal");
    let started = std::time::Instant::now();
    let output = tokio::task::spawn_blocking(move || child.wait_with_output().expect("waits"))
        .await
        .expect("joins");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the cancel took {:?}",
        started.elapsed()
    );
    assert!(
        err(&output).contains("57014"),
        "{}{}",
        out(&output),
        err(&output)
    );
}

/// psql's own catalog commands answer from `pg_catalog`, per principal: a
/// hidden domain, product or column is absent there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_describes_what_each_principal_may_see() {
    if psql_binary().is_none() {
        return;
    }
    let server = start(demo_mesh(), ServerOptions::default()).await;
    let addr = server.addr;
    let analyst = psql(addr, "analyst", "analyst-demo", &["-c", "\\dn"]).await;
    let guest = psql(addr, "guest", "guest-demo", &["-c", "\\dn"]).await;
    assert!(analyst.status.success(), "{}", err(&analyst));
    let names = |o: &Output| -> Vec<String> {
        out(o)
            .lines()
            .filter_map(|l| l.split('|').next())
            .map(str::to_string)
            .collect()
    };
    let (a, g) = (names(&analyst), names(&guest));
    for d in ["customers", "payments", "sales", "marketing"] {
        assert!(a.iter().any(|n| n == d), "analyst: {a:?}");
    }
    assert!(g.iter().any(|n| n == "sales"), "guest: {g:?}");
    assert!(
        !g.iter().any(|n| n == "payments" || n == "customers"),
        "guest: {g:?}"
    );

    let tables = psql(addr, "analyst", "analyst-demo", &["-c", "\\dt sales.*"]).await;
    let listed: Vec<String> = out(&tables)
        .lines()
        .map(|l| l.split('|').take(2).collect::<Vec<_>>().join("."))
        .collect();
    assert_eq!(
        listed,
        ["sales.order_items", "sales.orders"],
        "{}",
        out(&tables)
    );

    let described = psql(
        addr,
        "analyst",
        "analyst-demo",
        &["-c", "\\d customers.customers"],
    )
    .await;
    assert!(described.status.success(), "{}", err(&described));
    let text = out(&described);
    for column in ["customer_id|bigint", "email|text", "region|text"] {
        assert!(text.contains(column), "{text}");
    }
    let hidden = psql(
        addr,
        "guest",
        "guest-demo",
        &["-c", "\\d customers.customers"],
    )
    .await;
    assert!(
        err(&hidden).contains("Did not find any relation named \"customers.customers\""),
        "{}{}",
        out(&hidden),
        err(&hidden)
    );
    // Primary keys from the contracts are constraints, and descriptions
    // comments, for what the principal sees only.
    let keys = "SELECT n.nspname || '.' || c.relname || ' ' || array_to_string(k.conkey, ',') FROM pg_catalog.pg_constraint k \
                JOIN pg_catalog.pg_class c ON c.oid = k.conrelid \
                JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE k.contype = 'p' ORDER BY 1";
    let analyst_keys = out(&psql(addr, "analyst", "analyst-demo", &["-c", keys]).await);
    let guest_keys = out(&psql(addr, "guest", "guest-demo", &["-c", keys]).await);
    assert!(
        analyst_keys.contains("customers.customers 1\n"),
        "{analyst_keys}"
    );
    assert!(
        analyst_keys.contains("sales.order_items 1,2\n"),
        "{analyst_keys}"
    );
    assert!(guest_keys.contains("sales.orders 1\n"), "{guest_keys}");
    assert!(
        !guest_keys.contains("customers.") && !guest_keys.contains("payments."),
        "{guest_keys}"
    );
    let comments = "SELECT a.attname || '=' || coalesce(pg_catalog.col_description(a.attrelid, a.attnum), '') \
                    FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
                    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                    WHERE n.nspname = 'customers' AND c.relname = 'customers' ORDER BY a.attnum";
    let described = out(&psql(addr, "analyst", "analyst-demo", &["-c", comments]).await);
    assert!(
        described.contains("customer_id=Customer identifier"),
        "{described}"
    );
    let guest_comments = psql(addr, "guest", "guest-demo", &["-c", comments]).await;
    assert_eq!(out(&guest_comments).trim(), "", "{}", out(&guest_comments));

    // A column hidden from the guest is not listed; the admin's has it.
    let cols = |o: &Output| out(o);
    let guest_campaigns = psql(
        addr,
        "guest",
        "guest-demo",
        &["-c", "\\d marketing.campaign_performance"],
    )
    .await;
    let admin_campaigns = psql(
        addr,
        "admin",
        "admin-demo",
        &["-c", "\\d marketing.campaign_performance"],
    )
    .await;
    assert!(
        cols(&admin_campaigns).contains("attributed_revenue|"),
        "{}",
        cols(&admin_campaigns)
    );
    assert!(
        cols(&guest_campaigns).contains("clicks|"),
        "{}",
        cols(&guest_campaigns)
    );
    assert!(
        !cols(&guest_campaigns).contains("attributed_revenue"),
        "{}",
        cols(&guest_campaigns)
    );
}

/// The PostgreSQL drivers BI tools are built on: psycopg 3 (text and
/// binary), asyncpg, SQLAlchemy 2's inspector and pandas, installed into a
/// cached venv by `tests/python/setup-pg.sh` (from PyPI) unless
/// `MESHQL_TEST_PG_PYTHON` names a Python that has them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_drivers_read_governed_rows() {
    let python = peer_venv("MESHQL_TEST_PG_PYTHON", "setup-pg.sh");
    let server = start(demo_mesh(), ServerOptions::default()).await;
    let addr = server.addr;
    let args = vec![addr.ip().to_string().into(), addr.port().to_string().into()];
    python_checks_pass(&python, "pg_interop.py", args).await;
}

/// Apache Superset (from PyPI, in a venv of its own that
/// `tests/python/setup-superset.sh` installs once, with its metadata
/// database prepared) adds meshql as a PostgreSQL database per principal
/// through its own REST API: the connection test, schemas, tables, table
/// metadata (SQLAlchemy 1.4's inspector, which Superset pins), a dataset,
/// and a chart's query, where `eu_analyst` sees only EU rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn superset_connects_and_charts_as_each_principal() {
    let python = peer_venv("MESHQL_TEST_SUPERSET", "setup-superset.sh");
    let template = Path::new(&python)
        .parent()
        .and_then(Path::parent)
        .expect("the venv")
        .join("meshql-superset");
    let server = start(demo_mesh(), ServerOptions::default()).await;
    let work = tempfile::tempdir().expect("tempdir");
    let args = vec![
        server.addr.ip().to_string().into(),
        server.addr.port().to_string().into(),
        template.into_os_string(),
        work.path().as_os_str().to_owned(),
    ];
    python_checks_pass(&python, "superset_interop.py", args).await;
}

/// Over TLS the client sends the password itself: the users.yaml password,
/// or a JWT of the identity provider for single sign-on; a token for
/// another user, or a wrong password, is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_a_password_or_an_identity_provider_token_logs_in() {
    if psql_binary().is_none() {
        return;
    }
    let tls = meshql_server::Tls {
        cert: root().join("testdata/tls/server.crt"),
        key: root().join("testdata/tls/server.key"),
    };
    let options = ServerOptions {
        jwt: Some(meshql::manifest::JwtConfig {
            hs256_secret: Some("idp-shared-secret".into()),
            audience: Some("meshql".into()),
            roles_claim: "meshql_roles".into(),
            ..Default::default()
        }),
        ..ServerOptions::default()
    };
    let server = start_tls(demo_mesh(), options, Some(tls)).await;
    let addr = server.addr;
    let run = |user: &str, password: &str, sql: &str| {
        let mut cmd = Command::new("psql");
        cmd.arg(format!(
            "host=127.0.0.1 port={} user={user} dbname=mesh sslmode=verify-full sslrootcert={} sslsni=0",
            addr.port(),
            root().join("testdata/tls/server.crt").display()
        ))
        .args(["-X", "-A", "-t", "-c", sql])
        .env("PGPASSWORD", password)
        .env("PGHOSTADDR", "127.0.0.1");
        // The certificate names localhost.
        cmd.env("PGHOST", "localhost");
        async move {
            tokio::task::spawn_blocking(move || cmd.output().expect("runs psql"))
                .await
                .expect("joins")
        }
    };
    // sslmode=verify-full: the connection is TLS with the server's
    // certificate, or psql refuses it.
    let plain = run(
        "analyst",
        "analyst-demo",
        "SELECT count(*) FROM sales.orders",
    )
    .await;
    assert!(plain.status.success(), "{}{}", out(&plain), err(&plain));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let token = |sub: &str| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &serde_json::json!({
                "sub": sub, "meshql_roles": ["analyst"], "region": "EU",
                "aud": "meshql", "exp": now + 600, "iat": now,
            }),
            &jsonwebtoken::EncodingKey::from_secret(b"idp-shared-secret"),
        )
        .expect("signs")
    };
    // maria's token makes her an EU-bound analyst: EU rows only.
    let sso = run(
        "maria@corp",
        &token("maria@corp"),
        "SELECT DISTINCT region FROM sales.orders",
    )
    .await;
    assert!(sso.status.success(), "{}{}", out(&sso), err(&sso));
    assert_eq!(out(&sso).trim(), "EU");
    let other = run("analyst", &token("maria@corp"), "SELECT 1").await;
    assert!(!other.status.success());
    assert!(
        err(&other).contains("the token is for user \"maria@corp\""),
        "{}",
        err(&other)
    );
    let wrong = run("analyst", "wrong", "SELECT 1").await;
    assert!(
        err(&wrong).contains("password authentication failed"),
        "{}",
        err(&wrong)
    );
}

/// Connections over the limit, logged in or not, are refused as PostgreSQL
/// refuses them (`53300`), so that no one can take every file descriptor
/// of the process; a slot freed takes the next connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_refused_with_53300() {
    if psql_binary().is_none() {
        return;
    }
    let options = ServerOptions {
        max_pg_connections: 2,
        ..ServerOptions::default()
    };
    let server = start(demo_mesh(), options).await;
    let addr = server.addr;
    // Two connections that never log in hold both slots.
    let held: Vec<std::net::TcpStream> = (0..2)
        .map(|_| std::net::TcpStream::connect(addr).expect("connects"))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = psql(addr, "analyst", "analyst-demo", &["-c", "SELECT 1"]).await;
    assert!(!refused.status.success(), "{}", out(&refused));
    assert!(
        err(&refused).contains("FATAL:  sorry, too many clients already"),
        "{}",
        err(&refused)
    );
    // The SQLSTATE, as the server sends it.
    let answer = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut third = std::net::TcpStream::connect(addr).expect("connects");
        third
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut bytes = Vec::new();
        let _ = third.read_to_end(&mut bytes);
        bytes
    })
    .await
    .expect("joins");
    assert_eq!(answer.first(), Some(&b'E'), "{answer:?}");
    assert!(
        String::from_utf8_lossy(&answer).contains("C53300\0"),
        "{answer:?}"
    );
    drop(held);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ok = psql(addr, "analyst", "analyst-demo", &["-c", "SELECT 41 + 1"]).await;
        if ok.status.success() {
            assert_eq!(out(&ok).trim(), "42");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a freed slot takes no connection: {}",
            err(&ok)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
