//! A Flight SQL client for the benchmarks: arrow-flight's, over a tuned
//! loopback channel, logged in with a password.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use arrow::array::RecordBatch;
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::StreamExt;
use tonic::transport::Channel;

/// Serves `mesh` over Flight SQL on 127.0.0.1 (a port the system picks)
/// on the current runtime until the process ends; its address.
pub async fn serve(
    mesh: &meshql::Mesh,
    options: meshql_server::ServerOptions,
) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(meshql_server::serve(
        listener,
        mesh.clone(),
        options,
        None,
        std::future::pending(),
        Duration::from_secs(1),
    ));
    Ok(addr)
}

/// A client of the server at `addr`, logged in as `user`.
pub async fn connect(
    addr: SocketAddr,
    user: &str,
    password: &str,
) -> Result<FlightSqlServiceClient<Channel>> {
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .initial_stream_window_size(Some(8 * 1024 * 1024))
        .initial_connection_window_size(Some(16 * 1024 * 1024))
        .max_frame_size(Some(1024 * 1024))
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let mut c = FlightSqlServiceClient::new(channel);
    c.handshake(user, password)
        .await
        .with_context(|| format!("logging in as {user}"))?;
    Ok(c)
}

/// Runs `sql` (GetFlightInfo, then DoGet of its one endpoint): rows and
/// Arrow bytes received.
pub async fn run(c: &mut FlightSqlServiceClient<Channel>, sql: &str) -> Result<(usize, usize)> {
    let info = c.execute(sql.to_string(), None).await?;
    let ticket = info
        .endpoint
        .first()
        .and_then(|e| e.ticket.clone())
        .context("a ticket")?;
    let mut stream = c.do_get(ticket).await?;
    let (mut rows, mut bytes) = (0, 0);
    while let Some(b) = stream.next().await {
        let b: RecordBatch = b?;
        rows += b.num_rows();
        bytes += b.get_array_memory_size();
    }
    Ok((rows, bytes))
}

/// Queries per second of `clients` concurrent clients, each running `sql`
/// over and over for `length`.
pub async fn queries_per_second(
    addr: SocketAddr,
    (user, password): (&str, &str),
    clients: usize,
    length: Duration,
    sql: &str,
) -> Result<f64> {
    let mut connected = Vec::new();
    for _ in 0..clients {
        connected.push(connect(addr, user, password).await?);
    }
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + length;
    let tasks: Vec<_> = connected
        .into_iter()
        .map(|mut c| {
            let (done, sql) = (Arc::clone(&done), sql.to_string());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    run(&mut c, &sql).await?;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}
