//! `meshql`: the analyst's shell and command line over a data mesh.

/// meshql's allocator: contracts, plans and batches make many small
/// allocations on several threads, where mimalloc is faster than the
/// system's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod backend;
mod check;
mod command;
mod demo;
mod exec;
mod policy;
mod print;
mod remote;
mod serve;
mod shell;
mod split;
mod user;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use meshql::governance::ColumnDecision;
use meshql::manifest::Catalog;
use meshql::{Mesh, Principal};

use crate::backend::{Backend, Embedded};
use crate::print::PrintFormat;
use crate::shell::{Flow, Item, Shell, parse_script};

/// Governed SQL over the data products of a data mesh.
///
/// With no command and no -c/-f, opens an interactive shell on the mesh.
#[derive(Debug, Parser)]
#[command(name = "meshql", version, about)]
struct Cli {
    /// The mesh directory (holding mesh.yaml). Defaults to ./catalog, then to
    /// the demo mesh bundled with meshql.
    #[arg(long, env = "MESHQL_MESH", global = true)]
    mesh: Option<PathBuf>,

    /// The principal to run queries as, from the mesh's users.yaml. Defaults
    /// to its `defaultUser`.
    #[arg(long, short = 'u', env = "MESHQL_USER", global = true)]
    user: Option<String>,

    /// Run these SQL statements (or a backslash command) and exit. Repeatable.
    #[arg(short = 'c', long = "command", value_name = "SQL")]
    command: Vec<String>,

    /// Run the statements in this file and exit. Repeatable.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Vec<PathBuf>,

    /// Output format of results.
    #[arg(long, value_enum, default_value_t = PrintFormat::Table, env = "MESHQL_FORMAT")]
    format: PrintFormat,

    /// Write results to this file instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,

    /// Do not print the row count and time after each result.
    #[arg(long, short = 'q')]
    quiet: bool,

    /// Run against a meshql server instead of a local mesh:
    /// grpc://HOST:PORT, or grpc+tls://HOST:PORT. The password comes from
    /// MESHQL_PASSWORD or a prompt.
    #[arg(long, value_name = "URL", env = "MESHQL_CONNECT")]
    connect: Option<String>,

    /// With --connect: a bearer token (from an identity provider) instead of
    /// a user name and password.
    #[arg(long, env = "MESHQL_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// With --connect to grpc+tls://: the CA certificate (PEM) of the server's certificate.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,

    /// The domain unqualified product names resolve in (`orders` for
    /// `sales.orders`), as `USE DOMAIN` or `\c DOMAIN` sets it.
    #[arg(long, short = 'd', value_name = "DOMAIN", env = "MESHQL_DOMAIN")]
    domain: Option<String>,

    #[command(flatten)]
    cluster: ClusterArgs,

    #[command(subcommand)]
    sub: Option<Sub>,
}

/// Where the workers are that queries are spread over.
#[derive(Debug, Clone, Default, clap::Args)]
struct ClusterArgs {
    /// Spread queries over these workers (`meshql worker`), HOST:PORT,...
    /// [default: `cluster.workers` of mesh.yaml; MESHQL_WORKERS overrides it]
    #[arg(long, value_name = "HOST:PORT,...", global = true)]
    workers: Option<String>,
    /// Queries whose scans read fewer bytes than this run in-process
    /// [default: `cluster.distributeAboveBytes` of mesh.yaml, else 134217728]; 0
    /// sends every query to the workers.
    #[arg(long, value_name = "BYTES", global = true)]
    distribute_above: Option<u64>,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// The governance gate: contracts and policies valid, names, owners,
    /// personal data protected, data matching its contract, quality rules,
    /// freshness SLAs, breaking changes. Exit 0 when all holds, 1 on any
    /// violation, 2 when the mesh cannot be read.
    Check {
        /// Check only this product (`domain.product`); repeatable.
        #[arg(long = "product", value_name = "DOMAIN.PRODUCT")]
        products: Vec<String>,
        /// How findings are printed: text for people, json for tools, junit
        /// for CI systems (each check a test case).
        #[arg(long, value_enum, default_value = "text")]
        format: check::Format,
        /// Only the checks that read no data: contracts, policies, naming,
        /// owners, personal data, breaking changes.
        #[arg(long = "static")]
        static_only: bool,
        /// Flag breaking changes against an earlier catalog: a directory, or
        /// a git revision of the repository the mesh is in.
        #[arg(long, value_name = "REV_OR_DIR")]
        against: Option<String>,
        /// Do not keep the data checks' results in the file `check.results`
        /// of mesh.yaml names (which `meshql.quality` shows).
        #[arg(long)]
        no_save: bool,
        /// Data checks are on by default; kept for scripts.
        #[arg(long, hide = true)]
        data: bool,
    },
    /// The demo mesh's data.
    Demo {
        #[command(subcommand)]
        cmd: DemoCmd,
    },
    /// Governance policies.
    Policy {
        #[command(subcommand)]
        cmd: PolicyCmd,
    },
    /// Discover data products.
    Products {
        #[command(subcommand)]
        cmd: ProductsCmd,
    },
    /// Serve the mesh over Arrow Flight SQL to BI tools, drivers and remote shells.
    Serve(Box<ServeArgs>),
    /// Run plan fragments for coordinators (`meshql serve` or the shell
    /// with --workers). Calls must carry the cluster token derived from
    /// MESHQL_CLUSTER_SECRET (or MESHQL_CLUSTER_SECRET_FILE), which is
    /// required on any address but loopback.
    Worker {
        /// HOST:PORT to listen on.
        #[arg(long, default_value = "127.0.0.1:32020", env = "MESHQL_WORKER_ADDR")]
        addr: String,
        /// Serve over TLS with this certificate (PEM); coordinators and the
        /// other workers then need MESHQL_CLUSTER_TLS_CA, the certificate
        /// authority it is checked against.
        #[arg(long, env = "MESHQL_WORKER_TLS_CERT", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The TLS certificate's private key (PEM).
        #[arg(long, env = "MESHQL_WORKER_TLS_KEY", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// Local principals.
    User {
        #[command(subcommand)]
        cmd: UserCmd,
    },
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// HOST:PORT to listen on [default: `server.addr` of mesh.yaml, else 127.0.0.1:32010]
    #[arg(long, env = "MESHQL_ADDR")]
    addr: Option<String>,
    /// Also serve the web catalog at HOST:PORT (e.g. 127.0.0.1:8080) [default: `server.http` of mesh.yaml, else off]
    #[arg(long, env = "MESHQL_HTTP")]
    http: Option<String>,
    /// Also serve the PostgreSQL wire protocol at HOST:PORT (e.g. 127.0.0.1:5433); database `mesh` [default: `server.pg` of mesh.yaml, else off]
    #[arg(long, env = "MESHQL_PG")]
    pg: Option<String>,
    /// TLS certificate chain (PEM); with --tls-key, clients connect with grpc+tls://.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve a users.yaml marked `demoSecrets: true` on an address other than loopback.
    #[arg(long)]
    allow_demo_secrets: bool,
    /// Queries that run at once; more wait in a queue.
    #[arg(long)]
    max_concurrent_queries: Option<usize>,
    /// Of those, how many one user may run at once [default: half, rounded up].
    #[arg(long)]
    max_queries_per_user: Option<usize>,
    /// Seconds a query waits for its turn before it is refused.
    #[arg(long)]
    queue_timeout_seconds: Option<u64>,
    /// PostgreSQL connections open at once; another is refused [default: 256].
    #[arg(long)]
    max_pg_connections: Option<usize>,
    /// Memory one query may use, in MiB.
    #[arg(long)]
    query_memory_mb: Option<usize>,
    /// Seconds one query may run.
    #[arg(long)]
    query_timeout_seconds: Option<u64>,
    /// Rows one result may have; a larger result fails.
    #[arg(long)]
    max_result_rows: Option<u64>,
    /// Seconds a bearer token from a password login lasts.
    #[arg(long)]
    token_ttl_seconds: Option<u64>,
    /// Append one JSON line per statement to this file [default: `audit.path` of mesh.yaml].
    #[arg(long)]
    audit: Option<PathBuf>,
    /// Seconds running queries get to finish after SIGINT/SIGTERM.
    #[arg(long, default_value_t = 30)]
    grace_seconds: u64,
}

#[derive(Debug, Subcommand)]
enum PolicyCmd {
    /// Show which rule governs a product for a principal, and the resulting
    /// access, column masks and row filter.
    Explain {
        /// `domain.product`
        product: String,
    },
}

#[derive(Debug, Subcommand)]
enum ProductsCmd {
    /// Products whose name, description, tags or columns mention TERM (the
    /// shell's `\find`), among those the user may see.
    Search {
        #[arg(required = true)]
        term: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum UserCmd {
    /// Print what users.yaml holds of a password (read from standard input): its argon2 hash and SCRAM-SHA-256 verifier.
    HashPassword,
}

#[derive(Debug, Subcommand)]
enum DemoCmd {
    /// Generate the demo e-commerce data as Parquet, deterministically.
    Generate {
        /// Scale factor, 1 to 1000: 1 is 2,000 customers and 20,000 orders.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
        scale: u32,
        /// Directory to write into.
        #[arg(long)]
        out: PathBuf,
    },
}

fn default_mesh() -> PathBuf {
    let local = PathBuf::from("catalog");
    if local.join("mesh.yaml").is_file() {
        return local;
    }
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../catalog");
    if bundled.join("mesh.yaml").is_file() {
        return bundled;
    }
    local
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ERROR: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(mut cli: Cli) -> anyhow::Result<ExitCode> {
    // `meshql products search TERM` is the shell's `\find TERM`, locally or
    // on a server.
    if let Some(Sub::Products {
        cmd: ProductsCmd::Search { term },
    }) = &cli.sub
    {
        cli.command = vec![format!("\\find {}", term.join(" "))];
        cli.file.clear();
        cli.sub = None;
    }
    let mesh_dir = cli.mesh.clone().unwrap_or_else(default_mesh);
    let remote = cli.connect.is_some() && cli.sub.is_none();
    if !remote && !mesh_dir.join("mesh.yaml").is_file() {
        let message = format!(
            "no mesh at {}: expected {}; pass --mesh DIR",
            mesh_dir.display(),
            mesh_dir.join("mesh.yaml").display()
        );
        // `meshql check` says "cannot read the mesh" apart from "violations".
        if matches!(cli.sub, Some(Sub::Check { .. })) {
            eprintln!("meshql check: {message}");
            return Ok(ExitCode::from(2));
        }
        anyhow::bail!(message);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;

    match &cli.sub {
        Some(Sub::Demo {
            cmd: DemoCmd::Generate { scale, out },
        }) => return demo::generate(out, *scale),
        Some(Sub::User {
            cmd: UserCmd::HashPassword,
        }) => return user::hash_password(),
        Some(Sub::Check {
            products,
            format,
            static_only,
            against,
            no_save,
            data: _,
        }) => {
            let args = check::Args {
                products,
                format: *format,
                static_only: *static_only,
                against: against.as_deref(),
                no_save: *no_save,
            };
            return Ok(check::run(&mesh_dir, &args, &runtime));
        }
        Some(Sub::Policy {
            cmd: PolicyCmd::Explain { product },
        }) => return policy::explain(&mesh_dir, cli.user.as_deref(), product),
        Some(Sub::Serve(args)) => return serve::serve(&mesh_dir, args, &cli.cluster, runtime),
        Some(Sub::Worker {
            addr,
            tls_cert,
            tls_key,
        }) => {
            let tls = tls_cert.as_deref().zip(tls_key.as_deref());
            return serve::worker(&mesh_dir, addr, tls, runtime);
        }
        Some(Sub::Products { .. }) | None => {}
    }

    let backend: Box<dyn Backend> = match &cli.connect {
        Some(url) => {
            let password = match (&cli.token, &cli.user) {
                (None, Some(user)) => Some(match std::env::var("MESHQL_PASSWORD") {
                    Ok(p) => p,
                    Err(_) if std::io::stdin().is_terminal() => {
                        rpassword::prompt_password(format!("password for {user}: "))
                            .context("cannot read the password")?
                    }
                    Err(_) => anyhow::bail!(
                        "--connect: no password for {user}: set MESHQL_PASSWORD or run on a terminal"
                    ),
                }),
                _ => None,
            };
            let connect = remote::Connect {
                url: url.clone(),
                user: cli.user.clone(),
                password,
                token: cli.token.clone(),
                tls_ca: cli.tls_ca.clone(),
            };
            Box::new(
                runtime
                    .block_on(remote::Remote::connect(connect))
                    .map_err(anyhow::Error::msg)?,
            )
        }
        None => {
            let mesh = open_mesh(&mesh_dir)?;
            use_cluster(&mesh, &cli.cluster)?;
            let principal = principal(&mesh, cli.user.as_deref())?;
            let audit = match &mesh.catalog().mesh.audit {
                Some(path) => Some(std::sync::Arc::new(meshql::audit::AuditLog::open(path)?)),
                None => None,
            };
            Box::new(Embedded {
                session: mesh.session(principal),
                audit,
            })
        }
    };
    let out: Box<dyn Write> = match &cli.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot write {}", path.display()))?,
        )),
        None => Box::new(std::io::stdout()),
    };
    let mut shell = Shell {
        backend,
        format: cli.format,
        timing: true,
        quiet: cli.quiet,
        out,
        runtime,
    };
    if let Some(domain) = &cli.domain
        && let Err(e) = shell.run_item(&Item::Meta(0, format!("\\c {domain}")))
    {
        anyhow::bail!("--domain: {e}");
    }

    if cli.command.is_empty() && cli.file.is_empty() {
        if !std::io::stdin().is_terminal() {
            // Statements piped in: run them like a file.
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
            return Ok(run_items(&mut shell, "<stdin>", &parse_script(&text)));
        }
        let history = std::env::var_os("MESHQL_HISTORY")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".meshql_history")));
        shell.interactive(history)?;
        return Ok(ExitCode::SUCCESS);
    }
    for sql in &cli.command {
        let items = if sql.trim_start().starts_with('\\') {
            vec![Item::Meta(1, sql.trim().to_string())]
        } else {
            parse_script(sql)
        };
        let code = run_items(&mut shell, "-c", &items);
        if code != ExitCode::SUCCESS {
            return Ok(code);
        }
    }
    for file in &cli.file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let code = run_items(
            &mut shell,
            &file.display().to_string(),
            &parse_script(&text),
        );
        if code != ExitCode::SUCCESS {
            return Ok(code);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Opens the mesh leniently, generating the demo data on first use and
/// warning about what was left out.
fn open_mesh(mesh_dir: &Path) -> anyhow::Result<Mesh> {
    let catalog = Catalog::load(mesh_dir)?;
    for p in &catalog.problems {
        eprintln!("warning: left out of the mesh: {p}");
    }
    if let Some(demo) = &catalog.mesh.demo {
        let generating = !catalog
            .mesh
            .storage
            .get(&demo.storage)
            .map(|s| matches!(&s.kind, meshql::manifest::StorageKind::Local { root } if root.join(".meshql-demo").exists()))
            .unwrap_or(true);
        if generating {
            eprintln!(
                "generating the demo mesh's data (scale {}) on first use...",
                demo.scale
            );
        }
        meshql::demo::ensure(&catalog)?;
    }
    let mesh = Mesh::from_catalog(catalog)?;
    for p in mesh.problems().iter().filter(|p| {
        p.file.ends_with("policies.yaml")
            || p.file.ends_with("rules.json")
            || p.file.parent().is_some_and(|d| d.ends_with("policies"))
    }) {
        eprintln!("warning: {p}");
    }
    Ok(mesh)
}

/// Spreads the mesh's queries over its workers, if it has any.
fn use_cluster(mesh: &Mesh, args: &ClusterArgs) -> anyhow::Result<()> {
    let cluster = meshql::cluster::from_config(
        &mesh.catalog().mesh.cluster,
        args.workers.as_deref(),
        args.distribute_above,
    )?;
    if let Some(c) = &cluster {
        tracing::info!(workers = ?c.workers(), distribute_above = c.distribute_above, "queries are spread over workers");
    }
    mesh.set_cluster(cluster);
    Ok(())
}

/// Runs items in order, stopping at the first error (exit code 1).
fn run_items(shell: &mut Shell, source: &str, items: &[Item]) -> ExitCode {
    for item in items {
        match shell.run_item(item) {
            Ok(Flow::Continue) => {}
            Ok(Flow::Quit) => break,
            Err(e) => {
                let line = match item {
                    Item::Sql(l, _) | Item::Meta(l, _) => *l,
                };
                if source == "-c" {
                    eprintln!("ERROR: {e}");
                } else {
                    eprintln!("ERROR: {source}:{line}: {e}");
                }
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

/// The principal to run as: `--user`, else the mesh's default user. A mesh
/// without users.yaml takes any name, with no roles.
fn principal(mesh: &Mesh, user: Option<&str>) -> anyhow::Result<Principal> {
    let users = &mesh.catalog().users;
    let name = match (user, &users.default_user) {
        (Some(u), _) => u.to_string(),
        (None, Some(d)) => d.clone(),
        (None, None) if users.users.is_empty() => "anonymous".to_string(),
        (None, None) => {
            anyhow::bail!("choose a principal with --user (users.yaml sets no defaultUser)")
        }
    };
    if users.users.is_empty() {
        return Ok(Principal::new(name));
    }
    Ok(mesh.principal(&name)?)
}
