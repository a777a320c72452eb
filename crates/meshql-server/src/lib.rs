//! meshql's Arrow Flight SQL server: the governed mesh for BI tools and
//! drivers (ADBC, JDBC, ODBC) over gRPC.
//!
//! The server is a thin layer over [`meshql::Session`]: every statement,
//! metadata call included, runs as the authenticated principal and sees
//! exactly what the core library lets that principal see. Tickets and
//! prepared-statement handles are signed and name their user, so the
//! server keeps no per-client state and nothing can be forged or shared.

mod auth;
mod executor;
mod jwt;
mod metadata;
pub mod pg;
mod service;
pub mod status;
pub mod web;

pub use auth::Signer;
pub use jwt::JwtVerifier;
pub use service::{MeshFlightService, MeshFlightSql};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use futures::StreamExt;
use meshql::Mesh;
use meshql::manifest::ServerConfig;

/// Address `meshql serve` listens on unless told otherwise.
pub const DEFAULT_ADDR: &str = "127.0.0.1:32010";

/// How the server runs: limits, token lifetime, audit.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// How long a bearer token from a password login lasts.
    pub token_ttl: Duration,
    /// Queries that run at once; more wait up to `queue_timeout`.
    pub max_concurrent_queries: usize,
    /// Of those, the most one principal runs at once; their others wait in
    /// the queue. `None`: half of them, rounded up.
    pub max_queries_per_user: Option<usize>,
    pub queue_timeout: Duration,
    /// Memory one query may use, in bytes.
    pub query_memory: Option<usize>,
    /// How long one query may run.
    pub query_timeout: Option<Duration>,
    /// Rows one result may have; a larger one fails rather than being cut.
    pub max_result_rows: Option<u64>,
    /// The JSON-lines audit log.
    pub audit: Option<PathBuf>,
    /// Single sign-on with an identity provider's JWTs.
    pub jwt: Option<meshql::manifest::JwtConfig>,
    /// PostgreSQL connections open at once, logged in or not; another is
    /// refused (`53300`) rather than taking the process's file descriptors
    /// from Flight SQL and the web catalog.
    pub max_pg_connections: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            token_ttl: Duration::from_secs(3600),
            max_concurrent_queries: 16,
            max_queries_per_user: None,
            queue_timeout: Duration::from_secs(30),
            query_memory: Some(1024 * 1024 * 1024),
            query_timeout: None,
            max_result_rows: None,
            audit: None,
            jwt: None,
            max_pg_connections: 256,
        }
    }
}

impl ServerOptions {
    /// The slots one principal may hold: the setting, or half of all
    /// slots rounded up; never more than all of them.
    pub fn user_share(&self) -> usize {
        let all = self.max_concurrent_queries.max(1);
        self.max_queries_per_user
            .unwrap_or(all.div_ceil(2))
            .clamp(1, all)
    }

    /// The options `mesh.yaml` sets, defaults elsewhere.
    pub fn from_mesh(mesh: &Mesh) -> Self {
        let config: &ServerConfig = &mesh.catalog().mesh.server;
        let d = Self::default();
        Self {
            token_ttl: config
                .token_ttl_seconds
                .map_or(d.token_ttl, Duration::from_secs),
            max_concurrent_queries: config
                .max_concurrent_queries
                .unwrap_or(d.max_concurrent_queries),
            max_queries_per_user: config.max_queries_per_user,
            queue_timeout: config
                .queue_timeout_seconds
                .map_or(d.queue_timeout, Duration::from_secs),
            query_memory: config
                .query_memory_mb
                .map(|mb| mb * 1024 * 1024)
                .or(d.query_memory),
            query_timeout: config.query_timeout_seconds.map(Duration::from_secs),
            max_result_rows: config.max_result_rows,
            audit: mesh.catalog().mesh.audit.clone(),
            jwt: config.jwt.clone(),
            max_pg_connections: d.max_pg_connections,
        }
    }
}

/// The gRPC service for `mesh`, ready for a tonic server.
pub fn flight_service(
    mesh: Mesh,
    options: ServerOptions,
) -> meshql::Result<FlightServiceServer<MeshFlightService>> {
    let inner = MeshFlightSql::new(mesh, options)?;
    Ok(FlightServiceServer::new(MeshFlightService::new(inner))
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(64 * 1024 * 1024))
}

/// TLS certificate and key, PEM files.
#[derive(Clone, Debug)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Serves `mesh` on `listener` until `shutdown` resolves; then stops taking
/// new calls and gives running ones `grace` to finish before returning.
pub async fn serve(
    listener: tokio::net::TcpListener,
    mesh: Mesh,
    options: ServerOptions,
    tls: Option<Tls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> Result<(), String> {
    serve_with_web(listener, None, mesh, options, tls, shutdown, grace).await
}

/// [`serve`], and the web catalog on `http` when given: a second listener
/// in the same process and runtime, sharing the mesh, the sessions, the
/// query slots and limits and the audit log with Flight SQL.
pub async fn serve_with_web(
    listener: tokio::net::TcpListener,
    http: Option<tokio::net::TcpListener>,
    mesh: Mesh,
    options: ServerOptions,
    tls: Option<Tls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> Result<(), String> {
    let more = Listeners { http, pg: None };
    serve_all(listener, more, mesh, options, tls, shutdown, grace).await
}

/// The listeners beside Flight SQL's.
#[derive(Debug, Default)]
pub struct Listeners {
    /// The web catalog.
    pub http: Option<tokio::net::TcpListener>,
    /// The PostgreSQL wire protocol.
    pub pg: Option<tokio::net::TcpListener>,
}

/// [`serve`], with the web catalog and the PostgreSQL protocol on the
/// listeners given: in the same process and runtime, sharing the mesh, the
/// sessions, the query slots and limits and the audit log with Flight SQL.
pub async fn serve_all(
    listener: tokio::net::TcpListener,
    more: Listeners,
    mesh: Mesh,
    options: ServerOptions,
    tls: Option<Tls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> Result<(), String> {
    let Listeners { http, pg } = more;
    // Catalog connections live on this runtime, which always answers.
    mesh.connect_catalogs().await;
    let flight_addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let inner = std::sync::Arc::new(MeshFlightSql::new(mesh, options).map_err(|e| e.to_string())?);
    let (stop_web_tx, mut stop_web_rx) = tokio::sync::watch::channel(false);
    let web = http.map(|http| {
        let inner = std::sync::Arc::clone(&inner);
        let tls = tls.clone();
        tokio::spawn(async move {
            let stop = async move {
                let _ = stop_web_rx.wait_for(|s| *s).await;
            };
            if let Err(e) = web::serve(http, inner, flight_addr, stop, tls).await {
                tracing::error!("{e}");
            }
        })
    });
    let pg = pg.map(|pg| {
        let inner = std::sync::Arc::clone(&inner);
        let tls = tls.clone();
        let mut stop = stop_web_tx.subscribe();
        tokio::spawn(async move {
            let stop = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(e) = pg::serve(pg, inner, tls, stop).await {
                tracing::error!("{e}");
            }
        })
    });
    let shutdown = async move {
        shutdown.await;
        let _ = stop_web_tx.send(true);
    };
    let service = FlightServiceServer::new(MeshFlightService::shared(inner))
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(64 * 1024 * 1024);
    let served = serve_flight(listener, service, tls, shutdown, grace).await;
    for task in [web, pg].into_iter().flatten() {
        task.abort();
    }
    served
}

async fn serve_flight(
    listener: tokio::net::TcpListener,
    service: FlightServiceServer<MeshFlightService>,
    tls: Option<Tls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> Result<(), String> {
    // Large results: flow-control windows well above HTTP/2's 64 KiB default.
    let mut builder = tonic::transport::Server::builder()
        .initial_stream_window_size(Some(8 * 1024 * 1024))
        .initial_connection_window_size(Some(16 * 1024 * 1024))
        .max_frame_size(Some(1024 * 1024));
    if let Some(tls) = tls {
        let read =
            |p: &PathBuf| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
        let identity = tonic::transport::Identity::from_pem(read(&tls.cert)?, read(&tls.key)?);
        builder = builder
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .map_err(|e| format!("invalid TLS certificate or key: {e}"))?;
    }
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    // Small responses must not wait for Nagle's algorithm and delayed ACKs.
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
        conn.inspect(|c| {
            let _ = c.set_nodelay(true);
        })
    });
    let server = builder
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, async move {
            shutdown.await;
            tracing::info!("shutting down: no new calls; running queries get {grace:?}");
            let _ = stopping_tx.send(());
        });
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => r.map_err(|e| format!("server failed: {e}")),
        _ = async {
            let _ = stopping_rx.await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!("running queries did not finish within {grace:?}; cancelling them");
            Ok(())
        }
    }
}

/// Parses `HOST:PORT`, naming the flag or setting it came from.
pub fn parse_addr(text: &str, from: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|_| format!("{from}: `{text}` is not HOST:PORT with an IP address"))
}
