//! `meshql worker`: a process that runs plan fragments for its
//! coordinators, and the coordinator's `EXPLAIN ANALYZE` of a distributed
//! plan.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::SchemaRef;
use datafusion::common::internal_err;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::memory_pool::GreedyMemoryPool;
use datafusion::execution::{SendableRecordBatchStream, SessionState, TaskContext};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties, execute_stream,
};
use datafusion_distributed::{
    DistributedExt, DistributedMetricsFormat, Worker, WorkerQueryContext, WorkerSessionBuilder,
};
use futures::StreamExt;

use super::{Channels, ClusterToken, MeshCodec, TaskPrincipal, pseudonym_check};
use crate::error::{Error, Result};
use crate::mesh::Mesh;

/// How a worker serves.
#[derive(Debug, Default)]
pub struct WorkerOptions {
    /// The cluster secret coordinators prove they hold; required on any
    /// address but loopback.
    pub secret: Option<Vec<u8>>,
    /// Serves over TLS with this certificate and key.
    pub tls: Option<WorkerTls>,
}

/// A worker's TLS identity, as PEM, and the certificate authority it
/// checks the other workers' certificates against (it reads a stage's
/// input from them); without one, its own certificate.
#[derive(Debug, Default)]
pub struct WorkerTls {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
    pub ca: Option<Vec<u8>>,
}

/// What a worker has done, for its log and its operators.
#[derive(Default)]
struct Counters {
    sessions: AtomicU64,
    refused: AtomicU64,
}

/// Serves plan fragments on `addr` until `shutdown` completes. The mesh
/// gives the worker its storage (object stores, Iceberg catalogs); its
/// users and policies are not used: the fragments carry the policy.
pub async fn serve_worker(
    mesh: Mesh,
    addr: SocketAddr,
    options: WorkerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    if options.secret.is_none() && !addr.ip().is_loopback() {
        return Err(Error::PermissionDenied(format!(
            "a worker on {addr} would run any plan sent to it; set MESHQL_CLUSTER_SECRET (or MESHQL_CLUSTER_SECRET_FILE) on the workers and their coordinators, or listen on 127.0.0.1"
        )));
    }
    let token = options.secret.as_deref().map(ClusterToken::from_secret);
    let counters = Arc::new(Counters::default());
    let sessions = WorkerSessions {
        channels: Channels::new(
            token.clone(),
            super::Down::default(),
            options
                .tls
                .as_ref()
                .map(|t| super::client_tls(t.ca.as_deref().unwrap_or(&t.cert))),
        ),
        counters: Arc::clone(&counters),
        token: token.clone(),
        pseudonym_secret: mesh.inner.secret.clone(),
        runtime: Arc::clone(&mesh.inner.runtime),
    };
    let worker = Worker::from_session_builder(sessions)
        .with_runtime_env(Arc::clone(&mesh.inner.runtime))
        .with_version(env!("CARGO_PKG_VERSION"));
    let check = {
        let counters = Arc::clone(&counters);
        move |request: tonic::Request<()>| -> std::result::Result<tonic::Request<()>, tonic::Status> {
            let Some(token) = &token else {
                return Ok(request);
            };
            let presented = request
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if token.accepts(presented) {
                Ok(request)
            } else {
                counters.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("refused a call without the cluster token");
                Err(tonic::Status::permission_denied(
                    "this meshql worker runs plans from its coordinators only, and the call does not carry the cluster's token",
                ))
            }
        }
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Io {
            context: format!("cannot listen on {addr}"),
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| Error::Io {
        context: format!("cannot listen on {addr}"),
        source,
    })?;
    tracing::info!(
        addr = %bound,
        secret = options.secret.is_some(),
        tls = options.tls.is_some(),
        "meshql worker listening"
    );
    // Tests and scripts wait for this line.
    println!("meshql worker listening on {bound}");
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = &options.tls {
        let identity = tonic::transport::Identity::from_pem(&tls.cert, &tls.key);
        server = server
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .map_err(|e| Error::Io {
                context: "the worker's TLS certificate or key".into(),
                source: std::io::Error::other(e),
            })?;
    }
    let served = server
        .tcp_nodelay(true)
        .layer(tonic::service::InterceptorLayer::new(check))
        .layer(WatchTasks)
        .add_service(worker.into_worker_server())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    tracing::info!(
        tasks = counters.sessions.load(Ordering::Relaxed),
        refused = counters.refused.load(Ordering::Relaxed),
        "meshql worker stopped"
    );
    served.map_err(|e| Error::Io {
        context: format!("worker on {bound}"),
        source: std::io::Error::other(e),
    })
}

/// The session each task runs in: meshql's codec, and channels to other
/// workers (a stage reads its input from the workers that ran the stage
/// below) that carry the cluster token.
struct WorkerSessions {
    channels: Channels,
    counters: Arc<Counters>,
    token: Option<ClusterToken>,
    pseudonym_secret: Option<Vec<u8>>,
    runtime: Arc<datafusion::execution::runtime_env::RuntimeEnv>,
}

#[async_trait::async_trait]
impl WorkerSessionBuilder for WorkerSessions {
    async fn build_session_state(&self, ctx: WorkerQueryContext) -> DfResult<SessionState> {
        let n = self.counters.sessions.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::info!(task = n, "meshql worker runs a task");
        let mut builder = ctx.builder;
        builder.set_distributed_option_extension_from_headers::<TaskPrincipal>(&ctx.headers)?;
        let task = builder
            .config()
            .as_ref()
            .and_then(|c| c.options().extensions.get::<TaskPrincipal>().cloned())
            .unwrap_or_default();
        if task.pseudonym_check
            != pseudonym_check(self.pseudonym_secret.as_deref(), self.token.as_ref())
        {
            return Err(DataFusionError::Plan(
                "this meshql worker's pseudonym secret is not its coordinator's, so its pseudonyms would differ; give the workers the coordinator's governance.pseudonymSecret (or MESHQL_PSEUDONYM_SECRET)".into(),
            ));
        }
        let principal = task.principal()?;
        if task.memory_limit > 0 {
            // The query's memory limit, for this task.
            let mut runtime = self.runtime.as_ref().clone();
            runtime.memory_pool =
                crate::session::limits::tracked_pool(GreedyMemoryPool::new(task.memory_limit));
            builder = builder.with_runtime_env(Arc::new(runtime));
        }
        builder.scalar_functions().get_or_insert_default().extend(
            crate::governance::functions::worker_functions(
                &principal,
                self.pseudonym_secret.as_deref(),
            ),
        );
        Ok(builder
            .with_distributed_user_codec(MeshCodec)
            .with_distributed_channel_resolver(self.channels.clone())
            .build())
    }
}

/// Logs how each task's result stream ends: read to its end, or dropped
/// by the coordinator before (a cancelled or failed query), which drops
/// the task's DataFusion streams and so stops its work.
#[derive(Clone, Copy)]
struct WatchTasks;

impl<S> tower::Layer<S> for WatchTasks {
    type Service = Watched<S>;
    fn layer(&self, inner: S) -> Watched<S> {
        Watched { inner }
    }
}

#[derive(Clone)]
struct Watched<S> {
    inner: S,
}

type BoxFuture<T> = std::pin::Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> tower::Service<http::Request<B>> for Watched<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<TaskBody<RB>>;
    type Error = S::Error;
    type Future = BoxFuture<std::result::Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::result::Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let task = request.uri().path().ends_with("/ExecuteTask");
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|inner| TaskBody {
                inner,
                task,
                ended: false,
            }))
        })
    }
}

/// A response body that logs, for a task's stream, whether it was read to
/// its end.
struct TaskBody<B> {
    inner: B,
    task: bool,
    ended: bool,
}

impl<B: http_body::Body + Unpin> http_body::Body for TaskBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<std::result::Result<http_body::Frame<Self::Data>, Self::Error>>>
    {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let std::task::Poll::Ready(None) = &polled {
            self.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for TaskBody<B> {
    fn drop(&mut self) {
        if !self.task {
            return;
        }
        if self.ended {
            tracing::info!("meshql worker finished a task");
        } else {
            tracing::info!("meshql worker stopped a task its coordinator dropped");
        }
    }
}

/// `EXPLAIN ANALYZE` of a distributed plan: runs it, then shows each
/// stage with the rows and time of its operators, summed over the tasks
/// that ran them.
#[derive(Debug)]
pub(crate) struct DistributedAnalyzeExec {
    input: Arc<dyn ExecutionPlan>,
    verbose: bool,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl DistributedAnalyzeExec {
    pub(crate) fn new(input: Arc<dyn ExecutionPlan>, verbose: bool, schema: SchemaRef) -> Self {
        let properties = Arc::new(PlanProperties::new(
            datafusion::physical_expr::EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Self {
            input,
            verbose,
            schema,
            properties,
        }
    }
}

impl DisplayAs for DistributedAnalyzeExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DistributedAnalyzeExec")
    }
}

impl ExecutionPlan for DistributedAnalyzeExec {
    fn name(&self) -> &str {
        "DistributedAnalyzeExec"
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let Some(input) = children.pop() else {
            return internal_err!("DistributedAnalyzeExec has one input");
        };
        Ok(Arc::new(Self::new(
            input,
            self.verbose,
            Arc::clone(&self.schema),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        if partition != 0 {
            return internal_err!("DistributedAnalyzeExec has one partition, not {partition}");
        }
        let input = Arc::clone(&self.input);
        let schema = Arc::clone(&self.schema);
        let verbose = self.verbose;
        let out = Arc::clone(&schema);
        let once = futures::stream::once(async move {
            let started = std::time::Instant::now();
            let recorded = context
                .session_config()
                .get_extension::<super::Assignments>();
            let mut stream = execute_stream(Arc::clone(&input), context)?;
            let mut rows = 0usize;
            while let Some(batch) = stream.next().await {
                rows += batch?.num_rows();
            }
            let format = if verbose {
                DistributedMetricsFormat::PerTask
            } else {
                DistributedMetricsFormat::Aggregated
            };
            let workers = super::workers_text(recorded.as_deref(), &input);
            let text = datafusion_distributed::explain_analyze(input, format)?;
            let mut kinds = vec!["Plan with Metrics".to_string()];
            let mut texts = vec![text];
            if let Some(workers) = workers {
                kinds.push("Workers".into());
                texts.push(workers);
            }
            if verbose {
                kinds.push("Output Rows".into());
                texts.push(rows.to_string());
                kinds.push("Duration".into());
                texts.push(format!("{:?}", started.elapsed()));
            }
            RecordBatch::try_new(
                out,
                vec![
                    Arc::new(StringArray::from(kinds)),
                    Arc::new(StringArray::from(texts)),
                ],
            )
            .map_err(|e| DataFusionError::ArrowError(Box::new(e), None))
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, once)))
    }
}
