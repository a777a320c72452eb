//! `meshql serve`: the Arrow Flight SQL server on a mesh, until SIGINT or
//! SIGTERM.

use super::*;

/// `meshql serve`.
pub(crate) fn serve(
    mesh_dir: &Path,
    args: &ServeArgs,
    cluster: &ClusterArgs,
    runtime: tokio::runtime::Runtime,
) -> anyhow::Result<ExitCode> {
    init_log();
    let mesh = open_mesh(mesh_dir)?;
    use_cluster(&mesh, cluster)?;
    let configured = mesh.catalog().mesh.server.addr.clone();
    let (text, from) = match (&args.addr, &configured) {
        (Some(a), _) => (a.clone(), "--addr".to_string()),
        (None, Some(a)) => (
            a.clone(),
            format!("{}: server.addr", mesh.catalog().mesh.file.display()),
        ),
        (None, None) => (
            meshql_server::DEFAULT_ADDR.to_string(),
            "default".to_string(),
        ),
    };
    let addr = meshql_server::parse_addr(&text, &from).map_err(anyhow::Error::msg)?;
    meshql::governance::check_serving_address(
        &mesh.catalog().users,
        addr,
        args.allow_demo_secrets,
    )?;
    let http = match (&args.http, &mesh.catalog().mesh.server.http) {
        (Some(a), _) => Some(meshql_server::parse_addr(a, "--http").map_err(anyhow::Error::msg)?),
        (None, Some(a)) => Some(
            meshql_server::parse_addr(
                a,
                &format!("{}: server.http", mesh.catalog().mesh.file.display()),
            )
            .map_err(anyhow::Error::msg)?,
        ),
        (None, None) => None,
    };
    let pg = match (&args.pg, &mesh.catalog().mesh.server.pg) {
        (Some(a), _) => Some(meshql_server::parse_addr(a, "--pg").map_err(anyhow::Error::msg)?),
        (None, Some(a)) => Some(
            meshql_server::parse_addr(
                a,
                &format!("{}: server.pg", mesh.catalog().mesh.file.display()),
            )
            .map_err(anyhow::Error::msg)?,
        ),
        (None, None) => None,
    };
    for extra in [http, pg].into_iter().flatten() {
        meshql::governance::check_serving_address(
            &mesh.catalog().users,
            extra,
            args.allow_demo_secrets,
        )?;
    }
    let mut options = meshql_server::ServerOptions::from_mesh(&mesh);
    if let Some(n) = args.max_concurrent_queries {
        options.max_concurrent_queries = n.max(1);
    }
    if let Some(n) = args.max_queries_per_user {
        options.max_queries_per_user = Some(n.max(1));
    }
    if let Some(n) = args.max_pg_connections {
        options.max_pg_connections = n.max(1);
    }
    if let Some(s) = args.queue_timeout_seconds {
        options.queue_timeout = std::time::Duration::from_secs(s);
    }
    if let Some(mb) = args.query_memory_mb {
        options.query_memory = Some(mb * 1024 * 1024);
    }
    if let Some(s) = args.query_timeout_seconds {
        options.query_timeout = Some(std::time::Duration::from_secs(s));
    }
    if let Some(n) = args.max_result_rows {
        options.max_result_rows = Some(n);
    }
    if let Some(s) = args.token_ttl_seconds {
        options.token_ttl = std::time::Duration::from_secs(s);
    }
    if let Some(p) = &args.audit {
        options.audit = Some(p.clone());
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(meshql_server::Tls {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    };
    let scheme = if tls.is_some() { "grpc+tls" } else { "grpc" };
    let grace = std::time::Duration::from_secs(args.grace_seconds);
    let served = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let bound = listener.local_addr()?;
        println!(
            "meshql serving mesh `{}` ({} products) over Flight SQL at {scheme}://{bound}",
            mesh.catalog().mesh.name,
            mesh.product_names().len()
        );
        let web = match http {
            Some(http) => {
                let web = tokio::net::TcpListener::bind(http)
                    .await
                    .with_context(|| format!("cannot listen on {http}"))?;
                println!(
                    "meshql web catalog at {}://{}",
                    if tls.is_some() { "https" } else { "http" },
                    web.local_addr()?
                );
                Some(web)
            }
            None => None,
        };
        let pg = match pg {
            Some(pg) => {
                let pg = tokio::net::TcpListener::bind(pg)
                    .await
                    .with_context(|| format!("cannot listen on {pg}"))?;
                let bound = pg.local_addr()?;
                println!(
                    "meshql PostgreSQL protocol at postgresql://{}:{}/{}{}",
                    bound.ip(),
                    bound.port(),
                    meshql::CATALOG_NAME,
                    if tls.is_some() {
                        "?sslmode=require"
                    } else {
                        ""
                    }
                );
                Some(pg)
            }
            None => None,
        };
        std::io::stdout().flush()?;
        let more = meshql_server::Listeners { http: web, pg };
        meshql_server::serve_all(listener, more, mesh, options, tls, shutdown_signal(), grace)
            .await
            .map_err(anyhow::Error::msg)
    });
    // The grace period is over: whatever still runs is not waited for.
    runtime.shutdown_background();
    served?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// `meshql worker`: runs plan fragments for coordinators until SIGINT or
/// SIGTERM.
pub(crate) fn worker(
    mesh_dir: &Path,
    addr: &str,
    tls: Option<(&Path, &Path)>,
    runtime: tokio::runtime::Runtime,
) -> anyhow::Result<ExitCode> {
    init_log();
    let mesh = open_mesh(mesh_dir)?;
    let addr = meshql_server::parse_addr(addr, "--addr").map_err(anyhow::Error::msg)?;
    let read = |p: &Path, what: &str| {
        std::fs::read(p).with_context(|| format!("cannot read the TLS {what} {}", p.display()))
    };
    let tls = match tls {
        Some((cert, key)) => Some(meshql::cluster::WorkerTls {
            cert: read(cert, "certificate")?,
            key: read(key, "key")?,
            ca: meshql::cluster::cluster_tls_ca()?,
        }),
        None => None,
    };
    let options = meshql::cluster::WorkerOptions {
        secret: meshql::cluster::cluster_secret()?,
        tls,
    };
    runtime.block_on(async {
        mesh.connect_catalogs().await;
        meshql::cluster::serve_worker(mesh, addr, options, shutdown_signal()).await
    })?;
    runtime.shutdown_background();
    Ok(ExitCode::SUCCESS)
}

/// Logs to standard error, as `MESHQL_LOG` filters them (info by default).
fn init_log() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MESHQL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // A log file or a pipe gets plain text; colours only on a terminal.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
