//! The PostgreSQL protocol, measured: meshql's PostgreSQL endpoint next to
//! its Flight SQL endpoint, and both next to a real PostgreSQL server
//! (Debian's) holding the same rows, in one run over the same loopback.
//!
//! - one-row query latency, p50 and p99: psycopg 3 against meshql's
//!   PostgreSQL endpoint and against PostgreSQL, the Python ADBC Flight SQL
//!   driver against meshql's Flight SQL endpoint (`pg_clients.py`, a
//!   process of its own);
//! - a large result (every order line of the demo mesh at `--scale`; 2.35
//!   million rows at 50): binary `COPY ... TO STDOUT` and a server-side
//!   cursor with psycopg, one Arrow table with ADBC;
//! - queries per second of 16 and 64 concurrent clients of the one-row
//!   query: `pgbench` (PostgreSQL's own load generator, extended protocol)
//!   against both PostgreSQL servers, arrow-flight clients against Flight
//!   SQL.
//!
//! meshql serves in this process as `admin` (no masks apply to admin, so
//! both engines return the same bytes); PostgreSQL is started on
//! 127.0.0.1 in a temporary directory and loaded through meshql's own
//! PostgreSQL endpoint (`COPY ... TO STDOUT` piped into `COPY ... FROM
//! STDIN`), with the contract's primary keys as PostgreSQL primary keys.
//! Results go to `<out>/pg.md`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use arrow::datatypes::{DataType, Schema};
use meshql::Mesh;
use meshql::manifest::Catalog;
use meshql_server::{Listeners, ServerOptions};
use serde_json::Value;

use crate::common;

/// One row from a small product, by primary key: the cost is the round
/// trips, planning and the protocol.
pub const TINY: &str = "SELECT product_id, name FROM catalog.products WHERE product_id = 1042";
/// Every order line.
pub const LARGE: &str = "SELECT * FROM sales.order_items";
/// The products copied into PostgreSQL, with their primary keys.
const TABLES: &[(&str, &str)] = &[
    ("catalog.products", "product_id"),
    ("sales.order_items", "order_id, line_no"),
];

pub struct Options {
    /// The demo mesh's scale: 50 makes 2.35 million order lines.
    pub scale: u32,
    /// Concurrent clients, e.g. 16 and 64.
    pub clients: Vec<usize>,
    /// How long each concurrency run lasts.
    pub seconds: u64,
    pub out: PathBuf,
}

/// The directory of PostgreSQL's programs (`initdb`, `postgres`, `pgbench`):
/// Debian's `postgresql` package.
fn postgres_bin() -> Result<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists() && p.join("pgbench").exists())
        .collect();
    found.sort();
    found.pop().context(
        "no PostgreSQL server under /usr/lib/postgresql: install Debian's `postgresql` package",
    )
}

fn output(c: &mut Command, what: &str) -> Result<String> {
    let out = c.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A PostgreSQL server of the benchmark's own on 127.0.0.1.
struct Postgres {
    child: std::process::Child,
    data: PathBuf,
    port: u16,
    version: String,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // The child may be `runuser`, which passes no signal on: stop the
        // postmaster itself (its pid is postmaster.pid's first line).
        if let Some(pid) = std::fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()
            .and_then(|t| t.lines().next().map(str::trim).map(str::to_string))
        {
            let _ = Command::new("kill").args(["-QUIT", &pid]).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Postgres {
    /// PostgreSQL refuses to run as root: as root, its programs run as the
    /// `postgres` user of Debian's package.
    fn command(program: &Path, root: bool) -> Command {
        if root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    fn start(bin: &Path, dir: &Path) -> Result<Postgres> {
        use std::os::unix::fs::PermissionsExt;
        let root = output(Command::new("id").arg("-u"), "id -u")?.trim() == "0";
        let data = dir.join("pg");
        std::fs::create_dir_all(&data)?;
        if root {
            let id = |flag: &str| -> Result<u32> {
                Ok(
                    output(Command::new("id").args([flag, "postgres"]), "id postgres")?
                        .trim()
                        .parse()?,
                )
            };
            std::os::unix::fs::chown(&data, Some(id("-u")?), Some(id("-g")?))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))?;
        }
        output(
            Self::command(&bin.join("initdb"), root)
                .arg("-D")
                .arg(&data)
                .args(["-A", "trust", "-U", "meshql", "-E", "UTF8", "--no-sync"]),
            "initdb",
        )?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let version = output(
            Command::new(bin.join("postgres")).arg("--version"),
            "postgres",
        )?
        .trim()
        .to_string();
        let child = Self::command(&bin.join("postgres"), root)
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(&data)
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-c", "max_connections=200", "-c", "fsync=off"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting postgres")?;
        let server = Postgres {
            child,
            data,
            port,
            version,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("PostgreSQL did not start on port {port}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(server)
    }

    fn dsn(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=meshql dbname=postgres",
            self.port
        )
    }
}

/// PostgreSQL's name for an Arrow column type of the demo products.
fn pg_type(t: &DataType) -> Result<String> {
    Ok(match t {
        DataType::Int16 => "smallint".into(),
        DataType::Int32 => "integer".into(),
        DataType::Int64 => "bigint".into(),
        DataType::Float32 => "real".into(),
        DataType::Float64 => "double precision".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text".into(),
        DataType::Date32 => "date".into(),
        DataType::Timestamp(_, None) => "timestamp".into(),
        DataType::Timestamp(_, Some(_)) => "timestamptz".into(),
        DataType::Decimal128(p, s) => format!("numeric({p},{s})"),
        other => bail!("no PostgreSQL type for {other}"),
    })
}

fn create_table(name: &str, schema: &Schema, key: &str) -> Result<String> {
    let mut sql = format!("CREATE TABLE {name} (");
    for f in schema.fields() {
        let null = if f.is_nullable() { "" } else { " NOT NULL" };
        write!(sql, "{} {}{null}, ", f.name(), pg_type(f.data_type())?)?;
    }
    write!(sql, "PRIMARY KEY ({key}))")?;
    Ok(sql)
}

fn psql(dsn: &str, password: Option<&str>) -> Command {
    let mut c = Command::new("psql");
    c.arg(dsn).args(["-X", "-q", "-v", "ON_ERROR_STOP=1"]);
    if let Some(p) = password {
        c.env("PGPASSWORD", p);
    }
    c
}

/// Copies the products into PostgreSQL through meshql's own PostgreSQL
/// endpoint: `COPY (SELECT ...) TO STDOUT` there, `COPY ... FROM STDIN`
/// here, psql to psql.
fn load(
    pg: &Postgres,
    meshql_dsn: &str,
    mesh: &Mesh,
    runtime: &tokio::runtime::Runtime,
) -> Result<()> {
    let session = mesh.session(mesh.principal("admin")?);
    let mut ddl = String::from("CREATE SCHEMA catalog; CREATE SCHEMA sales; ");
    for (name, key) in TABLES {
        let stream = runtime.block_on(session.execute(&format!("SELECT * FROM {name} LIMIT 0")))?;
        write!(ddl, "{}; ", create_table(name, &stream.schema(), key)?)?;
    }
    output(
        psql(&pg.dsn(), None).args(["-c", &ddl]),
        "creating the tables",
    )?;
    for (name, _) in TABLES {
        let mut from = psql(meshql_dsn, Some("admin-demo"))
            .args([
                "-c",
                &format!("COPY (SELECT * FROM {name}) TO STDOUT (FORMAT csv)"),
            ])
            .stdout(Stdio::piped())
            .spawn()
            .context("psql to meshql")?;
        let rows = from.stdout.take().context("psql's output")?;
        output(
            psql(&pg.dsn(), None)
                .args(["-c", &format!("COPY {name} FROM STDIN (FORMAT csv)")])
                .stdin(rows),
            &format!("loading {name} into PostgreSQL"),
        )?;
        if !from.wait()?.success() {
            bail!("reading {name} from meshql's PostgreSQL endpoint failed");
        }
    }
    output(
        psql(&pg.dsn(), None).args(["-c", "VACUUM ANALYZE"]),
        "VACUUM",
    )?;
    Ok(())
}

/// `pg_clients.py` with `args`: its JSON.
fn clients(python: &Path, args: &[&str]) -> Result<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("pg_clients.py");
    let out = output(Command::new(python).arg(script).args(args), "pg_clients.py")?;
    Ok(serde_json::from_str(out.trim())?)
}

/// Queries per second of `clients` pgbench clients running [`TINY`] for
/// `seconds` (extended protocol, as drivers use it; two client threads).
fn pgbench(
    bin: &Path,
    dsn: &str,
    password: Option<&str>,
    clients: usize,
    seconds: u64,
) -> Result<f64> {
    let script = tempfile::NamedTempFile::new()?;
    std::fs::write(script.path(), format!("{TINY};\n"))?;
    let mut c = Command::new(bin.join("pgbench"));
    c.args(["-n", "-M", "extended", "-j", "2"])
        .args(["-c", &clients.to_string(), "-T", &seconds.to_string()])
        .arg("-f")
        .arg(script.path())
        .arg(dsn);
    if let Some(p) = password {
        c.env("PGPASSWORD", p);
    }
    let out = output(&mut c, "pgbench")?;
    let tps = out
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .with_context(|| format!("pgbench printed no tps: {out}"))?;
    if out.contains("number of failed transactions: ") && !out.contains("failed transactions: 0 ") {
        bail!("pgbench saw failures: {out}");
    }
    Ok(tps)
}

fn f(v: &Value, path: &[&str]) -> Result<f64> {
    let mut at = v;
    for p in path {
        at = at.get(p).with_context(|| format!("{path:?} in {v}"))?;
    }
    at.as_f64()
        .with_context(|| format!("{path:?} is not a number in {v}"))
}

pub fn run(o: &Options) -> Result<()> {
    let python = crate::duckdb::python()?;
    let bin = postgres_bin()?;
    let (mesh_dir, data) = common::demo_mesh_at_scale(o.scale);
    let catalog = Catalog::load_strict(mesh_dir.path())?;
    eprintln!("demo data at scale {} in {}", o.scale, data.display());
    meshql::demo::ensure(&catalog)?;
    let mesh = Mesh::from_catalog(catalog)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (flight, pg_listener) = runtime.block_on(async {
        let flight = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let pg = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        anyhow::Ok((flight, pg))
    })?;
    let flight_addr: SocketAddr = flight.local_addr()?;
    let pg_addr = pg_listener.local_addr()?;
    let biggest = o.clients.iter().copied().max().unwrap_or(16).max(16);
    let options = ServerOptions {
        query_memory: None,
        max_concurrent_queries: biggest,
        max_queries_per_user: Some(biggest),
        ..ServerOptions::default()
    };
    runtime.spawn(meshql_server::serve_all(
        flight,
        Listeners {
            http: None,
            pg: Some(pg_listener),
        },
        mesh.clone(),
        options,
        None,
        std::future::pending(),
        Duration::from_secs(1),
    ));
    let meshql_dsn = format!(
        "host=127.0.0.1 port={} user=admin dbname=mesh sslmode=disable",
        pg_addr.port()
    );
    let meshql_dsn_pw = format!("{meshql_dsn} password=admin-demo");

    let dir = tempfile::tempdir()?;
    let pg = Postgres::start(&bin, dir.path())?;
    eprintln!("{} on 127.0.0.1:{}; loading it", pg.version, pg.port);
    let started = Instant::now();
    load(&pg, &meshql_dsn, &mesh, &runtime)?;
    eprintln!("loaded in {:.0} s", started.elapsed().as_secs_f64());

    eprintln!("psycopg against meshql");
    let m = clients(&python, &["pg", &meshql_dsn_pw, TINY, LARGE])?;
    eprintln!("psycopg against PostgreSQL");
    let p = clients(&python, &["pg", &pg.dsn(), TINY, LARGE])?;
    eprintln!("ADBC against meshql's Flight SQL");
    let uri = format!("grpc://{flight_addr}");
    let a = clients(&python, &["adbc", &uri, "admin", "admin-demo", TINY, LARGE])?;

    let rows = f(&a, &["arrow", "rows"])?;
    for (who, v, part) in [
        ("meshql", &m, "copy"),
        ("meshql", &m, "cursor"),
        ("PostgreSQL", &p, "copy"),
        ("PostgreSQL", &p, "cursor"),
    ] {
        let got = f(v, &[part, "rows"])?;
        if got != rows {
            bail!("{who}'s {part} read {got} rows, Flight SQL {rows}");
        }
    }
    // Every read is put in MB/s of the same result: its size as Arrow.
    let arrow_mb = f(&a, &["arrow", "bytes"])? / 1e6;
    let speed = |v: &Value, part: &str| -> Result<String> {
        let secs = f(v, &[part, "secs"])?;
        Ok(format!(
            "{:.0} MB/s, {:.2} M rows/s ({secs:.2} s)",
            arrow_mb / secs,
            rows / secs / 1e6
        ))
    };

    let mut concurrency = Vec::new();
    for &n in &o.clients {
        eprintln!("{n} concurrent clients");
        let length = Duration::from_secs(o.seconds);
        let flight_qps = runtime.block_on(crate::flight_client::queries_per_second(
            flight_addr,
            ("admin", "admin-demo"),
            n,
            length,
            TINY,
        ))?;
        let meshql_qps = pgbench(&bin, &meshql_dsn, Some("admin-demo"), n, o.seconds)?;
        let pg_qps = pgbench(&bin, &pg.dsn(), None, n, o.seconds)?;
        concurrency.push((n, meshql_qps, flight_qps, pg_qps));
    }

    let ms = |v: &Value, q: &str| f(v, &["one_row", q]);
    let mut md = String::new();
    writeln!(
        md,
        "# The PostgreSQL protocol: meshql against its Flight SQL and a real PostgreSQL\n"
    )?;
    writeln!(
        md,
        "`meshql-bench pg --scale {}`, {} cores, {}; meshql as `admin` in the \
         harness's process, PostgreSQL ({}) and the clients in processes of \
         their own, all on 127.0.0.1 of one machine (clients and servers share \
         its cores). The large result: `{LARGE}`, {rows} rows, {arrow_mb:.0} MB \
         as Arrow; MB/s are of that size for every read. The one-row query: `{TINY}`.\n",
        o.scale,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        chrono::Utc::now().format("%Y-%m-%d"),
        pg.version
    )?;
    writeln!(
        md,
        "| measure | meshql, PostgreSQL protocol | meshql, Flight SQL | PostgreSQL |"
    )?;
    writeln!(md, "| --- | --: | --: | --: |")?;
    for q in ["p50_ms", "p99_ms"] {
        writeln!(
            md,
            "| one-row query, {} (psycopg / ADBC) | {:.2} ms | {:.2} ms | {:.2} ms |",
            &q[..3],
            ms(&m, q)?,
            ms(&a, q)?,
            ms(&p, q)?
        )?;
    }
    writeln!(
        md,
        "| large result, binary COPY (psycopg) | {} | | {} |",
        speed(&m, "copy")?,
        speed(&p, "copy")?
    )?;
    writeln!(
        md,
        "| large result, server-side cursor (psycopg, binary, 10,000 rows a fetch) | {} | | {} |",
        speed(&m, "cursor")?,
        speed(&p, "cursor")?
    )?;
    writeln!(
        md,
        "| large result as one Arrow table (ADBC) | | {} | |",
        speed(&a, "arrow")?
    )?;
    for (n, meshql_qps, flight_qps, pg_qps) in &concurrency {
        writeln!(
            md,
            "| one-row queries per second, {n} concurrent clients (pgbench / arrow-flight) | {meshql_qps:.0} | {flight_qps:.0} | {pg_qps:.0} |"
        )?;
    }
    writeln!(
        md,
        "\nBinary COPY moved {:.0} MB from meshql and {:.0} MB from PostgreSQL \
         (PostgreSQL's binary format: lengths and values). The concurrency runs \
         last {} s each; pgbench runs in the extended protocol with two threads, \
         the Flight SQL clients are arrow-flight's in the harness's process.",
        f(&m, &["copy", "bytes"])? / 1e6,
        f(&p, &["copy", "bytes"])? / 1e6,
        o.seconds
    )?;
    std::fs::create_dir_all(&o.out)?;
    let path = o.out.join("pg.md");
    std::fs::write(&path, &md)?;
    print!("{md}");
    eprintln!("wrote {}", path.display());
    drop(mesh_dir);
    Ok(())
}
