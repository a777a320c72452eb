//! Scale-out: a coordinator's governed physical plans run across worker
//! processes, on datafusion-distributed.
//!
//! The coordinator (`meshql serve` or the shell) plans every statement as
//! it does in-process: the principal's policies are applied to the logical
//! plan, and the physical plan holds the row filters and masks. Only then
//! does [`Distribute`] cut the plan into stages, and workers receive plan
//! fragments that already contain the policy. A worker knows no users and
//! no policies; it opens the mesh's storage and runs what a trusted
//! coordinator sends it. Trust is a cluster secret: every call carries a
//! token derived from it ([`ClusterToken`]), and a worker refuses calls
//! without it.
//!
//! Small queries stay local: a plan whose scans read fewer bytes than
//! [`Cluster::distribute_above`] runs in-process, so a one-row lookup pays
//! no network round trip per stage.

mod codec;
mod worker;

use std::sync::Arc;
use std::time::Duration;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::config::ConfigOptions;
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::SessionStateBuilder;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_distributed::{
    BoxCloneSyncChannel, ChannelResolver, DistributedExt, DistributedPhysicalOptimizerRule,
    WorkerResolver, WorkerServiceClient, create_worker_client,
};
use url::Url;

use crate::error::{Error, Result};
use crate::principal::Principal;

pub use codec::MeshCodec;
pub use worker::{WorkerOptions, WorkerTls, serve_worker};

/// Queries whose scans read fewer bytes than this run in-process unless a
/// mesh says otherwise: below it, a 2-core machine answers in well under a
/// second, and the stages' round trips would cost more than they save.
pub const DEFAULT_DISTRIBUTE_ABOVE_BYTES: u64 = 128 * 1024 * 1024;

/// The words every error about an unreachable worker starts with.
const UNAVAILABLE: &str = "meshql worker ";

/// Where a coordinator's workers are and when queries go to them.
#[derive(Clone)]
pub struct Cluster {
    workers: Vec<Url>,
    /// Queries whose scans read at least this many bytes are distributed.
    pub distribute_above: u64,
    token: Option<ClusterToken>,
    channels: Channels,
    down: Down,
}

/// Workers a call failed to reach, and when: the next queries are planned
/// for the others, until [`RETRY_DOWN_AFTER`] has passed.
#[derive(Clone, Default)]
struct Down(Arc<std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>>);

/// How long a worker that could not be reached is left out of new queries.
const RETRY_DOWN_AFTER: Duration = Duration::from_secs(10);

impl Down {
    fn mark(&self, worker: &str) {
        if let Ok(mut d) = self.0.lock() {
            d.insert(worker.to_string(), std::time::Instant::now());
        }
    }

    fn is_down(&self, worker: &str) -> bool {
        self.0.lock().is_ok_and(|mut d| match d.get(worker) {
            Some(at) if at.elapsed() < RETRY_DOWN_AFTER => true,
            Some(_) => {
                d.remove(worker);
                false
            }
            None => false,
        })
    }
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("workers", &self.workers())
            .field("distribute_above", &self.distribute_above)
            .field("secret", &self.token.is_some())
            .finish()
    }
}

impl Cluster {
    /// A cluster of the workers at `workers` (`HOST:PORT` each), reached
    /// with the cluster secret `secret` when there is one.
    pub fn new(
        workers: &[String],
        distribute_above: Option<u64>,
        secret: Option<&[u8]>,
    ) -> Result<Cluster> {
        let mut urls = Vec::new();
        for w in workers {
            let Some((host, port)) = meshql_manifest::split_host_port(w) else {
                return Err(Error::Sql(format!("worker address `{w}` is not HOST:PORT")));
            };
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host.to_string()
            };
            let url = Url::parse(&format!("http://{host}:{port}"))
                .map_err(|e| Error::Sql(format!("worker address `{w}`: {e}")))?;
            if !urls.contains(&url) {
                urls.push(url);
            }
        }
        let token = secret.map(ClusterToken::from_secret);
        let down = Down::default();
        Ok(Cluster {
            channels: Channels::new(token.clone(), down.clone(), None),
            down,
            workers: urls,
            distribute_above: distribute_above.unwrap_or(DEFAULT_DISTRIBUTE_ABOVE_BYTES),
            token,
        })
    }

    /// The same cluster with its workers reached over TLS, their
    /// certificates checked against the certificate authority `ca_pem`.
    pub fn with_tls(mut self, ca_pem: &[u8]) -> Cluster {
        for url in &mut self.workers {
            let _ = url.set_scheme("https");
        }
        self.channels = Channels::new(
            self.token.clone(),
            self.down.clone(),
            Some(client_tls(ca_pem)),
        );
        self
    }

    /// Whether its workers are reached over TLS.
    pub fn tls(&self) -> bool {
        self.workers.iter().any(|u| u.scheme() == "https")
    }

    /// The workers, as `HOST:PORT`.
    pub fn workers(&self) -> Vec<String> {
        self.workers.iter().map(worker_name).collect()
    }

    /// A session state builder that plans distributed queries for these
    /// workers, for `principal`; `pseudonym_secret` is the coordinator's
    /// key of `hash_pseudonym`, which the workers must share.
    pub(crate) fn configure(
        &self,
        builder: SessionStateBuilder,
        principal: &Principal,
        pseudonym_secret: Option<&[u8]>,
    ) -> SessionStateBuilder {
        let task = TaskPrincipal::new(principal, pseudonym_secret, self.token.as_ref());
        // A stage runs in as many tasks as there are workers, and in two
        // at least: datafusion-distributed keeps a plan of one-task stages
        // in-process, and a query planned for a cluster of one worker (or
        // of one worker left) must run on it, never silently on the
        // coordinator. Tasks are dealt over the workers that are up.
        let tasks = self.workers.len().max(2);
        let mut builder = builder;
        if let Some(config) = builder.config().as_mut() {
            config.set_extension(Arc::new(self.channels.assignments.clone()));
        }
        let mut builder = builder
            .with_distributed_option_extension(task)
            .with_distributed_worker_resolver(Workers {
                all: self.workers.clone(),
                down: self.down.clone(),
            })
            .with_distributed_channel_resolver(self.channels.clone())
            .with_distributed_user_codec(MeshCodec)
            .with_distributed_task_estimator(EveryWorker(tasks))
            .with_physical_optimizer_rule(Arc::new(Distribute {
                above: self.distribute_above,
            }));
        // The worker resolver above put datafusion-distributed's options
        // in the session; only now can they be set.
        if let Err(e) = builder.set_distributed_max_tasks_per_stage(tasks) {
            tracing::warn!(error = %e, "cannot set the tasks per stage");
        }
        // Stages are cut at exchanges. A query big enough to distribute
        // has files big enough to split into byte ranges, and join sides
        // big enough to partition by key rather than collect into one
        // hash table (a collected build side keeps its whole join in one
        // task, and datafusion-distributed then runs it in-process).
        let above = usize::try_from(self.distribute_above).unwrap_or(usize::MAX);
        if let Some(config) = builder.config().as_mut() {
            let options = &mut config.options_mut().optimizer;
            options.repartition_file_min_size = options.repartition_file_min_size.min(above);
            options.hash_join_single_partition_threshold =
                options.hash_join_single_partition_threshold.min(above);
            if above == 0 {
                options.hash_join_single_partition_threshold_rows = 0;
            }
        }
        builder
    }
}

datafusion::common::extensions_options! {
    /// What a task's worker knows of the principal it runs for, sent with
    /// every task in its headers. A plan fragment names meshql's functions
    /// only; the worker answers `current_user()`, `is_member()` and
    /// `current_attribute()` from `principal` (the coordinator binds them
    /// in row filters before planning, so these are the calls in a user's
    /// own SQL) and computes `hash_pseudonym` under its own key, which
    /// `pseudonym_check` proves to be the coordinator's. The check is an
    /// HMAC under the pseudonym key of a message that includes the cluster
    /// token, so it tells nothing of the key to someone who reads it
    /// without the cluster secret.
    pub struct TaskPrincipal {
        /// The principal's user, roles and attributes, as hex of JSON
        /// (a header value is ASCII).
        pub principal: String, default = String::new()
        /// See the struct.
        pub pseudonym_check: String, default = String::new()
        /// The query's memory limit in bytes (0: none), which each of its
        /// tasks gets on its worker.
        pub memory_limit: usize, default = 0
    }
}

impl datafusion::config::ConfigExtension for TaskPrincipal {
    const PREFIX: &'static str = "meshql_task";
}

impl TaskPrincipal {
    fn new(
        principal: &Principal,
        pseudonym_secret: Option<&[u8]>,
        token: Option<&ClusterToken>,
    ) -> TaskPrincipal {
        let value = (&principal.user, &principal.roles, &principal.attributes);
        TaskPrincipal {
            principal: hex(&serde_json::to_vec(&value).unwrap_or_default()),
            pseudonym_check: pseudonym_check(pseudonym_secret, token),
            memory_limit: 0,
        }
    }

    /// The principal, on a worker.
    fn principal(&self) -> DfResult<Principal> {
        let bytes = unhex(&self.principal)
            .ok_or_else(|| DataFusionError::Plan("a task's principal is not hex".into()))?;
        let (user, roles, attributes): (
            String,
            Vec<String>,
            std::collections::BTreeMap<String, String>,
        ) = serde_json::from_slice(&bytes)
            .map_err(|e| DataFusionError::Plan(format!("a task's principal: {e}")))?;
        Ok(Principal {
            user,
            roles,
            groups: Vec::new(),
            attributes,
        })
    }
}

/// The `authorization` header value a coordinator of the cluster secret
/// `secret` sends with every call to a worker: an HMAC of the secret, so
/// the secret itself never travels.
pub fn authorization(secret: &[u8]) -> String {
    ClusterToken::from_secret(secret).header()
}

/// The proof that a worker's pseudonym key is its coordinator's.
fn pseudonym_check(key: Option<&[u8]>, token: Option<&ClusterToken>) -> String {
    use hmac::{Hmac, Mac};
    let Some(key) = key else {
        return "none".to_string();
    };
    let mut mac =
        <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(b"meshql pseudonym check v1:");
    if let Some(t) = token {
        mac.update(t.0.as_bytes());
    }
    hex(&mac.finalize().into_bytes())
}

/// Gives the tasks of queries planned with `config` the memory limit
/// `limit`, on their workers.
pub(crate) fn limit_task_memory(config: &mut datafusion::prelude::SessionConfig, limit: usize) {
    if let Some(task) = config.options_mut().extensions.get_mut::<TaskPrincipal>() {
        task.memory_limit = limit;
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The cluster secret's proof: an HMAC of the secret, sent as a bearer
/// token on every call to a worker (so the secret itself is never on the
/// wire) and compared in constant time.
#[derive(Clone)]
pub(crate) struct ClusterToken(String);

impl ClusterToken {
    pub(crate) fn from_secret(secret: &[u8]) -> ClusterToken {
        ClusterToken(hex(&token_mac(secret)))
    }

    fn header(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// Whether an `authorization` header value carries this token.
    pub(crate) fn accepts(&self, presented: &str) -> bool {
        use subtle::ConstantTimeEq;
        let Some(token) = presented.strip_prefix("Bearer ") else {
            return false;
        };
        token.len() == self.0.len() && bool::from(token.as_bytes().ct_eq(self.0.as_bytes()))
    }
}

fn token_mac(secret: &[u8]) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    let mut mac =
        <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(b"meshql cluster token v1");
    mac.finalize().into_bytes().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The workers a query's tasks are spread over: those not found down
/// lately, or all of them when every one was.
#[derive(Clone)]
struct Workers {
    all: Vec<Url>,
    down: Down,
}

impl WorkerResolver for Workers {
    fn get_urls(&self) -> DfResult<Vec<Url>> {
        if self.all.is_empty() {
            return Err(DataFusionError::Execution(
                "the cluster has no workers".into(),
            ));
        }
        let up: Vec<Url> = self
            .all
            .iter()
            .filter(|u| !self.down.is_down(&worker_name(u)))
            .cloned()
            .collect();
        Ok(if up.is_empty() { self.all.clone() } else { up })
    }
}

fn worker_name(url: &Url) -> String {
    format!(
        "{}:{}",
        url.host_str().unwrap_or_default(),
        url.port().unwrap_or_default()
    )
}

/// Channels to workers, one per worker, reused across queries; each call
/// carries the cluster token, and a worker that cannot be reached fails
/// the call with `Unavailable` naming it.
#[derive(Clone)]
struct Channels {
    token: Option<ClusterToken>,
    down: Down,
    /// How `https` workers are reached: the certificate authority their
    /// certificates are checked against.
    tls: Option<tonic::transport::ClientTlsConfig>,
    assignments: Assignments,
    cache: Arc<std::sync::Mutex<std::collections::HashMap<Url, tonic::transport::Channel>>>,
}

impl Channels {
    fn new(
        token: Option<ClusterToken>,
        down: Down,
        tls: Option<tonic::transport::ClientTlsConfig>,
    ) -> Channels {
        Channels {
            token,
            down,
            tls,
            assignments: Assignments::default(),
            cache: Arc::default(),
        }
    }

    fn channel(&self, url: &Url) -> DfResult<tonic::transport::Channel> {
        let mut cache = self
            .cache
            .lock()
            .map_err(|_| DataFusionError::Internal("worker channels poisoned".into()))?;
        if let Some(c) = cache.get(url) {
            return Ok(c.clone());
        }
        let mut endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
            .map_err(|e| DataFusionError::Configuration(format!("worker {url}: {e}")))?;
        if url.scheme() == "https" {
            let Some(tls) = &self.tls else {
                return Err(DataFusionError::Configuration(format!(
                    "worker {url} is reached over TLS, and no certificate authority is set (MESHQL_CLUSTER_TLS_CA)"
                )));
            };
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| DataFusionError::Configuration(format!("worker {url}: {e}")))?;
        }
        let channel = endpoint
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .connect_lazy();
        cache.insert(url.clone(), channel.clone());
        Ok(channel)
    }
}

#[async_trait::async_trait]
impl ChannelResolver for Channels {
    async fn get_worker_client_for_url(
        &self,
        url: &Url,
    ) -> DfResult<WorkerServiceClient<BoxCloneSyncChannel>> {
        let named = Named {
            inner: self.channel(url)?,
            worker: worker_name(url),
            down: self.down.clone(),
            assignments: self.assignments.clone(),
            authorization: self
                .token
                .as_ref()
                .and_then(|t| http::HeaderValue::from_str(&t.header()).ok()),
        };
        Ok(create_worker_client(BoxCloneSyncChannel::new(named)))
    }
}

/// A channel to one worker that adds the cluster token to each call and
/// turns a transport failure into an `Unavailable` status naming the
/// worker.
#[derive(Clone)]
struct Named {
    inner: tonic::transport::Channel,
    worker: String,
    down: Down,
    assignments: Assignments,
    authorization: Option<http::HeaderValue>,
}

impl tower::Service<http::Request<tonic::body::Body>> for Named {
    type Response = http::Response<tonic::body::Body>;
    type Error = tonic::transport::Error;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = std::result::Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::result::Result<(), Self::Error>> {
        tower::Service::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        if let Some(value) = &self.authorization {
            request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, value.clone());
        }
        // The coordinator sends every task's plan (`CoordinatorChannel`,
        // one per task) and executes the top stage's tasks itself.
        let path = request.uri().path();
        let kind = if path.ends_with("/CoordinatorChannel") {
            Some(TaskCall::SetPlan)
        } else if path.ends_with("/ExecuteTask") {
            Some(TaskCall::Execute)
        } else {
            None
        };
        if let Some(kind) = kind {
            let (worker, assignments) = (self.worker.clone(), self.assignments.clone());
            request = request.map(|inner| {
                tonic::body::Body::new(ObservedTask {
                    inner,
                    kind,
                    worker,
                    assignments,
                    seen: false,
                })
            });
        }
        let worker = self.worker.clone();
        let down = self.down.clone();
        let call = tower::Service::call(&mut self.inner, request);
        Box::pin(async move {
            match call.await {
                // A worker that dies mid-stream breaks the body, not the call.
                Ok(response) => Ok(response.map(|inner| {
                    tonic::body::Body::new(WorkerBody {
                        inner,
                        worker,
                        down,
                    })
                })),
                Err(e) => {
                    down.mark(&worker);
                    let cause = std::error::Error::source(&e)
                        .map(ToString::to_string)
                        .unwrap_or_else(|| e.to_string());
                    Ok(tonic::Status::unavailable(format!(
                        "{UNAVAILABLE}{worker} is unavailable: {cause}"
                    ))
                    .into_http())
                }
            }
        })
    }
}

/// Which worker each task of the latest distributed queries went to, for
/// `EXPLAIN ANALYZE`: query id, stage, task, worker.
#[derive(Clone, Default)]
pub(crate) struct Assignments(Arc<std::sync::Mutex<std::collections::VecDeque<Assignment>>>);

/// A task of a query: query id, stage, task number, worker.
type Assignment = ([u8; 16], u64, u64, String);

/// How many task assignments are kept.
const ASSIGNMENTS_KEPT: usize = 4096;

impl Assignments {
    fn record(&self, query: [u8; 16], stage: u64, task: u64, worker: &str) {
        if let Ok(mut a) = self.0.lock() {
            if a.len() >= ASSIGNMENTS_KEPT {
                a.pop_front();
            }
            a.push_back((query, stage, task, worker.to_string()));
        }
    }

    /// The workers the tasks of `query` went to, by stage and task.
    pub(crate) fn of(&self, query: [u8; 16]) -> Vec<(u64, u64, String)> {
        let mut out: Vec<(u64, u64, String)> = self
            .0
            .lock()
            .map(|a| {
                a.iter()
                    .filter(|(q, ..)| *q == query)
                    .map(|(_, s, t, w)| (*s, *t, w.clone()))
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out.dedup();
        out
    }
}

/// datafusion-distributed's `TaskKey`.
#[derive(Clone, PartialEq, prost::Message)]
struct TaskKeyProto {
    #[prost(bytes = "vec", tag = "1")]
    query_id: Vec<u8>,
    #[prost(uint64, tag = "2")]
    stage_id: u64,
    #[prost(uint64, tag = "3")]
    task_number: u64,
}

#[derive(Clone, Copy)]
enum TaskCall {
    SetPlan,
    Execute,
}

/// The task key at the start of a gRPC message of `kind`: an
/// `ExecuteTaskRequest` (field 1) or a `CoordinatorToWorkerMsg` whose
/// `SetPlanRequest` (field 1) starts with it (field 1). Only the key is
/// read: the plan after it may go on in later frames.
fn task_key(kind: TaskCall, data: &[u8]) -> Option<TaskKeyProto> {
    use prost::encoding::decode_varint;
    // A flag byte and four bytes of length, then the message.
    let mut b = data.get(5..)?;
    let field = |b: &mut &[u8]| -> Option<usize> {
        // Field 1, length-delimited.
        if decode_varint(b).ok()? != 0x0a {
            return None;
        }
        usize::try_from(decode_varint(b).ok()?).ok()
    };
    if let TaskCall::SetPlan = kind {
        field(&mut b)?;
    }
    let len = field(&mut b)?;
    <TaskKeyProto as prost::Message>::decode(b.get(..len)?).ok()
}

/// A task call's request body, read as it is sent: its task key is
/// recorded with the worker it goes to.
struct ObservedTask {
    inner: tonic::body::Body,
    kind: TaskCall,
    worker: String,
    assignments: Assignments,
    seen: bool,
}

impl http_body::Body for ObservedTask {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<std::result::Result<http_body::Frame<Self::Data>, Self::Error>>>
    {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if !self.seen
            && let std::task::Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
            && data.len() > 5
        {
            self.seen = true;
            if let Some(key) = task_key(self.kind, data)
                && let Ok(query) = <[u8; 16]>::try_from(key.query_id.as_slice())
            {
                self.assignments
                    .record(query, key.stage_id, key.task_number, &self.worker);
            }
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

/// Which worker ran each task of the distributed plan `plan`, once it has
/// run, a line per task; `None` for a plan that did not run on workers.
pub(crate) fn workers_text(
    assignments: Option<&Assignments>,
    plan: &Arc<dyn ExecutionPlan>,
) -> Option<String> {
    let tasks = assignments?.of(query_id(plan)?);
    (!tasks.is_empty()).then(|| {
        tasks
            .iter()
            .map(|(stage, task, worker)| format!("Stage {stage} task {task}: {worker}"))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// The query id of a distributed plan, from the first stage below it
/// (datafusion-distributed shows it only in the stage's debug text).
pub(crate) fn query_id(plan: &Arc<dyn ExecutionPlan>) -> Option<[u8; 16]> {
    use datafusion_distributed::NetworkBoundaryExt;
    let mut found = None;
    let _ = plan.apply(|node| {
        if let Some(boundary) = node.as_network_boundary() {
            let text = format!("{:?}", boundary.input_stage());
            found = text
                .split_once("query_id: ")
                .and_then(|(_, rest)| rest.get(..36))
                .and_then(|id| uuid::Uuid::parse_str(id).ok())
                .map(|id| *id.as_bytes());
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// A worker's response body, whose transport failures (the worker died or
/// its connection broke while it streamed) become `Unavailable` statuses
/// naming the worker. A worker's own errors come in trailers, not here.
struct WorkerBody {
    inner: tonic::body::Body,
    worker: String,
    down: Down,
}

impl http_body::Body for WorkerBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<std::result::Result<http_body::Frame<Self::Data>, Self::Error>>>
    {
        match std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            std::task::Poll::Ready(Some(Err(e))) => {
                self.down.mark(&self.worker);
                std::task::Poll::Ready(Some(Err(tonic::Status::unavailable(format!(
                    "{UNAVAILABLE}{} is unavailable: {}",
                    self.worker,
                    e.message()
                )))))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The message of an error about a worker that could not be reached, if
/// `e` is one.
pub fn unavailable_worker(message: &str) -> Option<String> {
    let at = message.find(UNAVAILABLE)?;
    let text = &message[at..];
    // It ends at the end of its line, or of the quoted message it is in.
    let end = text.find(['\n', '"']).unwrap_or(text.len());
    Some(text[..end].trim_end_matches(['"', '\'', ')']).to_string())
}

/// The last physical optimizer rule of a coordinator's sessions: cuts a
/// plan that reads at least `above` bytes into stages for the workers
/// (datafusion-distributed's rule), and leaves a smaller one in-process.
/// An `EXPLAIN ANALYZE` distributes what it analyzes.
#[derive(Debug)]
struct Distribute {
    above: u64,
}

impl PhysicalOptimizerRule for Distribute {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if plan
            .as_any()
            .is::<crate::governance::explain::GovernedExplainExec>()
        {
            let Some(input) = plan.children().first().map(|c| Arc::clone(c)) else {
                return Ok(plan);
            };
            let input = self.optimize(input, config)?;
            return plan.with_new_children(vec![input]);
        }
        if scanned_bytes(&plan) < self.above || !distributable(&plan) {
            return Ok(plan);
        }
        let distributed = DistributedPhysicalOptimizerRule.optimize(Arc::clone(&plan), config)?;
        if is_distributed(&distributed) || !scans(&plan) {
            return Ok(distributed);
        }
        // datafusion-distributed keeps a plan without an exchange (one
        // partition end to end, or a bare scan) in-process. It passed the
        // threshold, so it runs whole, as one task, on a worker: correct by
        // construction, since nothing of it is split. The stage sits under
        // a coalesce, as datafusion-distributed's own stages do, which is
        // where its displays look for stages.
        let stage = datafusion_distributed::NetworkCoalesceExec::try_new(
            plan,
            uuid::Uuid::new_v4(),
            1,
            1,
            1,
        )?;
        let root = datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec::new(
            Arc::new(stage),
        );
        Ok(Arc::new(datafusion_distributed::DistributedExec::new(
            Arc::new(root),
        )))
    }

    fn name(&self) -> &str {
        "MeshDistribute"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Spreads a Parquet or Iceberg scan of a distributed query over every worker: the
/// query passed the size threshold, so its scans are worth the spread. The
/// files (or byte ranges) are dealt out to the tasks.
struct EveryWorker(usize);

impl datafusion_distributed::TaskEstimator for EveryWorker {
    fn task_estimation(
        &self,
        plan: &Arc<dyn ExecutionPlan>,
        _cfg: &ConfigOptions,
    ) -> Option<datafusion_distributed::TaskEstimation> {
        if crate::storage::iceberg::scan_distributable(plan.as_ref()) != Some(true) {
            let scan: &DataSourceExec = plan.as_any().downcast_ref()?;
            scan.data_source()
                .as_any()
                .downcast_ref::<FileScanConfig>()?;
        }
        Some(datafusion_distributed::TaskEstimation {
            task_count: datafusion_distributed::TaskCountAnnotation::Desired(self.0.max(1)),
        })
    }

    fn scale_up_leaf_node(
        &self,
        plan: &Arc<dyn ExecutionPlan>,
        task_count: usize,
        cfg: &ConfigOptions,
    ) -> Option<Arc<dyn ExecutionPlan>> {
        if task_count == 1 {
            return Some(Arc::clone(plan));
        }
        let min_split = cfg.optimizer.repartition_file_min_size;
        if let Some(spread) =
            crate::storage::iceberg::spread_scan(plan.as_ref(), task_count, min_split)
        {
            // An error leaves the scan as planned, in one task.
            let spread = spread.ok()?;
            return Some(Arc::new(
                datafusion_distributed::PartitionIsolatorExec::new(spread, task_count),
            ));
        }
        let scan: &DataSourceExec = plan.as_any().downcast_ref()?;
        let files: &FileScanConfig = scan.data_source().as_any().downcast_ref()?;
        let mut spread = files.clone();
        spread.file_groups = files
            .file_groups
            .iter()
            .flat_map(|g| g.clone().split_files(task_count))
            .collect();
        let plan = DataSourceExec::from_data_source(spread);
        Some(Arc::new(
            datafusion_distributed::PartitionIsolatorExec::new(plan, task_count),
        ))
    }
}

/// `EXPLAIN ANALYZE` of a distributed query, planned: DataFusion's
/// `AnalyzeExec` would show the metrics of the plan as planned, and a
/// distributed plan runs a copy of itself prepared for its workers, whose
/// metrics [`worker::DistributedAnalyzeExec`] collects. DataFusion plans
/// `AnalyzeExec` over an input it has already optimized, so this runs
/// after planning, not as an optimizer rule.
pub(crate) fn analyze_distributed(plan: Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
    use datafusion::physical_plan::analyze::AnalyzeExec;
    match plan.as_any().downcast_ref::<AnalyzeExec>() {
        Some(analyze) if is_distributed(analyze.input()) => {
            Arc::new(worker::DistributedAnalyzeExec::new(
                Arc::clone(analyze.input()),
                analyze.verbose(),
                analyze.schema(),
            ))
        }
        _ => plan,
    }
}

fn is_distributed(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.as_any()
        .is::<datafusion_distributed::DistributedExec>()
}

/// Whether a plan reads a Parquet or Iceberg product (a plan of constants
/// has nothing for a worker to do).
fn scans(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let mut found = false;
    let _ = plan.apply(|node| {
        let file_scan = node
            .as_any()
            .downcast_ref::<DataSourceExec>()
            .is_some_and(|s| s.data_source().as_any().is::<FileScanConfig>());
        if file_scan || crate::storage::iceberg::scan_distributable(node.as_ref()).is_some() {
            found = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// The bytes a plan's scans read: the sizes of the files (or byte ranges)
/// of its Parquet scans and of its Iceberg scans' files.
fn scanned_bytes(plan: &Arc<dyn ExecutionPlan>) -> u64 {
    let mut total = 0u64;
    let _ = plan.apply(|node| {
        if let Some(scan) = node.as_any().downcast_ref::<DataSourceExec>()
            && let Some(files) = scan.data_source().as_any().downcast_ref::<FileScanConfig>()
        {
            for group in &files.file_groups {
                for file in group.iter() {
                    total += match &file.range {
                        Some(r) => (r.end - r.start).max(0) as u64,
                        None => file.object_meta.size,
                    };
                }
            }
        } else if let Some(bytes) = crate::storage::iceberg::scan_bytes(node.as_ref()) {
            total += bytes;
        }
        Ok(TreeNodeRecursion::Continue)
    });
    total
}

/// Whether every operator of a plan can travel to a worker: meshql's
/// discovery tables, computed from the coordinator's catalog, stay on the
/// coordinator, and so does the rare Iceberg scan whose files with deletes
/// do not travel intact (see the README's limits).
fn distributable(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let mut ok = true;
    let _ = plan.apply(|node| {
        let iceberg = crate::storage::iceberg::scan_distributable(node.as_ref());
        if iceberg == Some(false)
            || (node.children().is_empty()
                && iceberg.is_none()
                && !node.as_any().is::<DataSourceExec>()
                && node.name() != "PlaceholderRowExec"
                && node.name() != "EmptyExec")
        {
            ok = false;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    ok
}

/// The cluster a mesh's coordinator uses, from `mesh.yaml` with
/// `MESHQL_WORKERS` and `MESHQL_CLUSTER_SECRET` (or
/// `MESHQL_CLUSTER_SECRET_FILE`) over it; `None` without workers.
pub fn from_config(
    config: &meshql_manifest::ClusterConfig,
    workers: Option<&str>,
    distribute_above: Option<u64>,
) -> Result<Option<Cluster>> {
    let env_workers = std::env::var("MESHQL_WORKERS")
        .ok()
        .filter(|s| !s.trim().is_empty());
    let list: Vec<String> = match workers.map(str::to_string).or(env_workers) {
        Some(list) => list
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        None => config.workers.clone(),
    };
    if list.is_empty() {
        return Ok(None);
    }
    let secret = cluster_secret()?;
    let cluster = Cluster::new(
        &list,
        distribute_above.or(config.distribute_above_bytes),
        secret.as_deref(),
    )?;
    Ok(Some(match cluster_tls_ca()? {
        Some(ca) => cluster.with_tls(&ca),
        None => cluster,
    }))
}

/// The certificate authority of the workers' TLS certificates, from the
/// file `MESHQL_CLUSTER_TLS_CA` names: with it, coordinators and workers
/// reach workers over TLS (`grpc+tls`).
pub fn cluster_tls_ca() -> Result<Option<Vec<u8>>> {
    match std::env::var("MESHQL_CLUSTER_TLS_CA")
        .ok()
        .filter(|s| !s.is_empty())
    {
        Some(path) => std::fs::read(&path).map(Some).map_err(|source| Error::Io {
            context: format!("cannot read the cluster's certificate authority {path}"),
            source,
        }),
        None => Ok(None),
    }
}

fn client_tls(ca_pem: &[u8]) -> tonic::transport::ClientTlsConfig {
    tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca_pem))
}

/// The cluster secret from `MESHQL_CLUSTER_SECRET`, or the file
/// `MESHQL_CLUSTER_SECRET_FILE` names.
pub fn cluster_secret() -> Result<Option<Vec<u8>>> {
    if let Some(s) = std::env::var("MESHQL_CLUSTER_SECRET")
        .ok()
        .filter(|s| !s.is_empty())
    {
        return Ok(Some(s.into_bytes()));
    }
    match std::env::var("MESHQL_CLUSTER_SECRET_FILE")
        .ok()
        .filter(|s| !s.is_empty())
    {
        Some(path) => {
            let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
                context: format!("cannot read the cluster secret file {path}"),
                source,
            })?;
            let secret = text.trim();
            if secret.is_empty() {
                return Err(Error::PermissionDenied(format!(
                    "the cluster secret file {path} is empty"
                )));
            }
            Ok(Some(secret.as_bytes().to_vec()))
        }
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_accepts_its_own_secret_only() {
        let token = ClusterToken::from_secret(b"s3cret");
        assert!(token.accepts(&token.header()));
        assert!(!token.accepts(&ClusterToken::from_secret(b"other").header()));
        assert!(!token.accepts("Bearer "));
        assert!(!token.accepts(&token.0));
        // The secret itself is not the token.
        assert!(!token.accepts("Bearer s3cret"));
    }

    #[test]
    fn worker_addresses_become_urls() {
        let c = Cluster::new(
            &[
                "127.0.0.1:7001".into(),
                "w2:7002".into(),
                "127.0.0.1:7001".into(),
            ],
            None,
            None,
        )
        .expect("valid");
        assert_eq!(c.workers(), vec!["127.0.0.1:7001", "w2:7002"]);
        assert_eq!(c.distribute_above, DEFAULT_DISTRIBUTE_ABOVE_BYTES);
        assert!(Cluster::new(&["nohost".into()], None, None).is_err());
    }

    #[test]
    fn unavailable_workers_are_named() {
        let m = "External error: status: Unavailable, message: \"meshql worker 127.0.0.1:9 is unavailable: connection refused\", details";
        assert_eq!(
            unavailable_worker(m).as_deref(),
            Some("meshql worker 127.0.0.1:9 is unavailable: connection refused")
        );
        assert_eq!(unavailable_worker("other"), None);
    }
}
