//! The Flight SQL service.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionBeginSavepointRequest, ActionBeginSavepointResult, ActionBeginTransactionRequest,
    ActionBeginTransactionResult, ActionCancelQueryRequest, ActionCancelQueryResult,
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, ActionCreatePreparedSubstraitPlanRequest,
    ActionEndSavepointRequest, ActionEndTransactionRequest, Any, CommandGetCatalogs,
    CommandGetCrossReference, CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys,
    CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables,
    CommandGetXdbcTypeInfo, CommandPreparedStatementQuery, CommandPreparedStatementUpdate,
    CommandStatementIngest, CommandStatementQuery, CommandStatementSubstraitPlan,
    CommandStatementUpdate, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    TicketStatementQuery,
};
use arrow_flight::{
    Action, ActionType, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, Criteria,
    Empty, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest,
    HandshakeResponse, IpcMessage, PollInfo, SchemaAsIpc, SchemaResult, Ticket,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use datafusion::common::{ParamValues, ScalarValue};
use futures::{Stream, StreamExt, TryStreamExt};
use meshql::audit::{AuditLog, AuditRecord, Outcome};
use meshql::{Mesh, Principal, QueryOptions, Session};
use prost::Message;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Response, Status, Streaming};

use crate::ServerOptions;
use crate::auth::{HandleClaims, Signer, parse_basic};
use crate::executor::{QueryExecutor, QueryTask};
use crate::metadata;
use crate::status::{outcome, to_status};

pub(crate) type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The table type of every data product.
mod auth;
mod catalog;
mod limits;
mod planned;
mod prepared;
mod session_options;
mod statements;

use statements::{RunState, crashed};

const TABLE_TYPE: &str = "TABLE";

/// The most result bytes [`MeshFlightSql::collect`] holds.
const COLLECTED_BYTES: usize = 256 * 1024 * 1024;

/// The Flight SQL implementation over one mesh.
pub struct MeshFlightSql {
    mesh: Mesh,
    options: ServerOptions,
    signer: Signer,
    permits: Arc<Semaphore>,
    /// Each principal's share of the permits, by user.
    shares: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Where queries plan and run, apart from the threads serving calls.
    executor: Arc<QueryExecutor>,
    /// Sessions by principal; building one decides every product's policy.
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// Running queries by id, to cancel them.
    running: Arc<Mutex<HashMap<String, watch::Sender<bool>>>>,
    /// Queries cancelled before they started, by id.
    cancelled_early: Mutex<HashMap<String, Instant>>,
    /// Statements `GetFlightInfo` planned, waiting for their `DoGet`.
    planned: planned::PlannedStatements,
    /// Each client's search path.
    paths: session_options::ClientPaths,
    audit: Option<Arc<AuditLog>>,
    jwt: Option<crate::jwt::JwtVerifier>,
}

impl std::fmt::Debug for MeshFlightSql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshFlightSql")
            .field("mesh", &self.mesh)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

type Caller = (Principal, Arc<Session>);

impl MeshFlightSql {
    pub fn new(mesh: Mesh, options: ServerOptions) -> meshql::Result<Self> {
        let audit = match &options.audit {
            Some(path) => Some(Arc::new(AuditLog::open(path)?)),
            None => None,
        };
        let jwt = match &options.jwt {
            Some(config) => Some(
                crate::jwt::JwtVerifier::new(config).map_err(meshql::Error::PermissionDenied)?,
            ),
            None => None,
        };
        Ok(Self {
            jwt,
            mesh,
            permits: Arc::new(Semaphore::new(options.max_concurrent_queries.max(1))),
            shares: Mutex::new(HashMap::new()),
            executor: Arc::new(
                QueryExecutor::new(options.max_concurrent_queries.clamp(2, 16)).map_err(|e| {
                    meshql::Error::Io {
                        context: "cannot start the query runtime".into(),
                        source: e,
                    }
                })?,
            ),
            options,
            signer: Signer::random(),
            sessions: Mutex::new(HashMap::new()),
            running: Arc::new(Mutex::new(HashMap::new())),
            cancelled_early: Mutex::new(HashMap::new()),
            planned: planned::PlannedStatements::default(),
            paths: session_options::ClientPaths::default(),
            audit,
        })
    }

    pub(crate) fn mesh(&self) -> &Mesh {
        &self.mesh
    }

    pub(crate) fn signer(&self) -> &Signer {
        &self.signer
    }

    pub(crate) fn options(&self) -> &ServerOptions {
        &self.options
    }

    /// Runs `sql` as `principal` exactly as a Flight SQL `DoGet` does (the
    /// guard, the slots, the limits, the audit log) and collects its
    /// result; `client` is the caller's address for the audit log.
    pub(crate) async fn collect(
        &self,
        principal: &Principal,
        sql: &str,
        client: Option<String>,
    ) -> Result<(SchemaRef, Vec<RecordBatch>), Status> {
        let session = self.session(principal);
        let claims = HandleClaims {
            u: principal.user.clone(),
            q: sql.to_string(),
            id: Self::new_id(),
            p: None,
            d: None,
        };
        let stream = self
            .run((principal.clone(), session), claims, client)
            .await?
            .into_inner();
        let mut decoded = arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(
            stream.map_err(|s| FlightError::Tonic(Box::new(s))),
        );
        let mut batches = Vec::new();
        let mut bytes = 0usize;
        while let Some(batch) = decoded.next().await {
            let batch = batch.map_err(|e| match e {
                FlightError::Tonic(status) => *status,
                other => Status::internal(other.to_string()),
            })?;
            // A result is held whole here, unlike a Flight SQL stream: one
            // too large to hold ends (and its query with it).
            bytes += batch.get_array_memory_size();
            if bytes > COLLECTED_BYTES {
                return Err(Status::resource_exhausted(format!(
                    "the result is larger than {} MiB, more than the web catalog holds: add a LIMIT, or read it over Flight SQL",
                    COLLECTED_BYTES / (1024 * 1024)
                )));
            }
            batches.push(batch);
        }
        let schema = decoded
            .schema()
            .cloned()
            .unwrap_or_else(|| Arc::new(Schema::empty()));
        Ok((schema, batches))
    }

    /// Runs `sql` as `principal`, resolving along `path`, exactly as a
    /// Flight SQL `DoGet` does (the guard, the slots, the limits, the
    /// audit log), and streams its batches: for the PostgreSQL endpoint.
    /// The statement has started when this returns: its first batch (or
    /// its end) is in.
    pub(crate) async fn batches(
        &self,
        principal: &Principal,
        session: &Session,
        sql: &str,
        params: Option<ParamValues>,
        client: Option<String>,
    ) -> Result<(SchemaRef, BoxStream<RecordBatch>), Status> {
        let path = session.search_path().to_vec();
        let session = Arc::new(session.clone());
        let claims = HandleClaims {
            u: principal.user.clone(),
            q: sql.to_string(),
            id: Self::new_id(),
            p: None,
            d: Some(path),
        };
        let stream = self
            .run_with((principal.clone(), session), claims, client, params)
            .await?
            .into_inner();
        let mut decoded = arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(
            stream.map_err(|s| FlightError::Tonic(Box::new(s))),
        );
        let to_status = |e: FlightError| match e {
            FlightError::Tonic(status) => *status,
            other => Status::internal(other.to_string()),
        };
        let first = decoded.next().await.transpose().map_err(to_status)?;
        let schema = decoded
            .schema()
            .cloned()
            .unwrap_or_else(|| Arc::new(Schema::empty()));
        let rest = decoded.map_err(to_status);
        let stream = futures::stream::iter(first.map(Ok)).chain(rest);
        Ok((schema, Box::pin(stream)))
    }

    pub(crate) fn session(&self, principal: &Principal) -> Arc<Session> {
        let key = format!("{principal:?}");
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if sessions.len() > 1024 {
            sessions.clear();
        }
        Arc::clone(
            sessions
                .entry(key)
                .or_insert_with(|| Arc::new(self.mesh.session(principal.clone()))),
        )
    }

    /// The principal a call comes from: a bearer token this server issued,
    /// or Basic credentials.
    #[allow(clippy::result_large_err)]
    fn caller(&self, metadata: &MetadataMap) -> Result<Caller, Status> {
        let value = metadata
            .get("authorization")
            .ok_or_else(|| {
                Status::unauthenticated(
                    "authentication required: log in with Basic credentials (Handshake) and send the bearer token",
                )
            })?
            .to_str()
            .map_err(|_| Status::unauthenticated("the authorization header is not text"))?;
        let principal = self.authorization(value)?;
        tracing::Span::current().record("user", principal.user.as_str());
        let session = self.session(&principal);
        Ok((principal, session))
    }

    /// The principal of an `authorization` header value: a bearer token
    /// this server issued, a JWT of the configured identity provider, or
    /// Basic credentials.
    #[allow(clippy::result_large_err)]
    pub(crate) fn authorization(&self, value: &str) -> Result<Principal, Status> {
        if let Some(token) = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
        {
            let token = token.trim();
            match &self.jwt {
                // meshql's own tokens have a kind in front; a JWT's header does not.
                Some(jwt) if !token.starts_with(crate::auth::TOKEN) => jwt.principal(token),
                _ => {
                    let user = self.signer.check_token(token)?;
                    self.mesh
                        .principal(&user)
                        .map_err(|_| Status::unauthenticated("the token's user no longer exists"))
                }
            }
        } else {
            let (user, password) = parse_basic(value)?;
            self.login(&user, &password)
        }
    }

    #[allow(clippy::result_large_err)]
    pub(crate) fn login(&self, user: &str, password: &str) -> Result<Principal, Status> {
        self.mesh.authenticate(user, password).map_err(|_| {
            tracing::info!(user, "login refused");
            Status::unauthenticated("invalid user name or password")
        })
    }

    fn new_id() -> String {
        meshql::random_id()
    }

    /// A FlightInfo whose one endpoint's ticket runs `claims`.
    #[allow(clippy::result_large_err)]
    fn flight_info(
        &self,
        schema: &Schema,
        claims: &HandleClaims,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, Status> {
        let ticket = TicketStatementQuery {
            statement_handle: self.signer.issue_handle(claims).into(),
        };
        let endpoint =
            FlightEndpoint::new().with_ticket(Ticket::new(ticket.as_any().encode_to_vec()));
        Ok(FlightInfo::new()
            .try_with_schema(schema)
            .map_err(|e| Status::internal(format!("cannot encode the schema: {e}")))?
            .with_endpoint(endpoint)
            .with_descriptor(descriptor)
            .with_total_records(-1)
            .with_total_bytes(-1))
    }

    /// A FlightInfo for a metadata command: the ticket is the command itself.
    #[allow(clippy::result_large_err)]
    fn metadata_info(
        &self,
        schema: &Schema,
        command: impl ProstMessageExt,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let endpoint =
            FlightEndpoint::new().with_ticket(Ticket::new(command.as_any().encode_to_vec()));
        Ok(Response::new(
            FlightInfo::new()
                .try_with_schema(schema)
                .map_err(|e| Status::internal(format!("cannot encode the schema: {e}")))?
                .with_endpoint(endpoint)
                .with_descriptor(descriptor),
        ))
    }

    /// The schema of `claims`' results and the number of its parameters;
    /// fails early on bad SQL. Planning to the logical plan finds every
    /// error of the statement itself; governance keeps names and types, so
    /// its schema is the result's. DoGet plans fully (tickets are stateless).
    async fn plan_schema(
        &self,
        session: &Arc<Session>,
        claims: &HandleClaims,
    ) -> Result<(SchemaRef, usize), Status> {
        let session = Self::statement_session(session, claims);
        let (schema, parameters) = self
            .describe(&session, &claims.q, &claims.id)
            .await
            .map_err(|e| to_status(&e, &claims.id))?;
        Ok((schema, parameters.len()))
    }

    /// Plans a statement for its ticket and keeps the plan for the ticket's
    /// `DoGet` ([`planned`]): its schema. Planned where the call is
    /// answered or on the caller's query lane ([`Self::here_or_on_lane`]).
    async fn plan_for_ticket(
        &self,
        principal: &Principal,
        session: &Arc<Session>,
        claims: &HandleClaims,
    ) -> Result<SchemaRef, Status> {
        let session = Self::statement_session(session, claims);
        let options = self.query_options(None);
        let sql = claims.q.clone();
        let query = self
            .here_or_on_lane(
                &principal.user,
                &claims.q,
                &claims.id,
                "planning",
                async move { session.plan(&sql, &options).await },
            )
            .await
            .map_err(|e| to_status(&e, &claims.id))?;
        let schema = Arc::clone(&query.schema);
        self.planned.keep(&claims.id, principal, query);
        Ok(schema)
    }

    /// The limits of one query, with its placeholders' values.
    fn query_options(&self, params: Option<ParamValues>) -> QueryOptions {
        QueryOptions {
            memory_limit: self.options.query_memory,
            params,
        }
    }

    /// [`Session::describe`], where [`Self::here_or_on_lane`] says
    /// (describing reads no storage).
    async fn describe(
        &self,
        session: &Arc<Session>,
        sql: &str,
        id: &str,
    ) -> meshql::Result<(SchemaRef, Vec<arrow::datatypes::Field>)> {
        let user = session.principal().user.clone();
        let session = Arc::clone(session);
        let owned = sql.to_string();
        self.here_or_on_lane(&user, sql, id, "describing", async move {
            session.describe(&owned).await
        })
        .await
    }

    /// Runs `work` on statement `sql`: where the call is answered when the
    /// statement is small (`meshql::is_small_statement`: the hop to a
    /// query lane would cost more than the work), otherwise on `user`'s
    /// query lane. A panic fails the call only.
    async fn here_or_on_lane<T: Send + 'static>(
        &self,
        user: &str,
        sql: &str,
        id: &str,
        what: &str,
        work: impl Future<Output = meshql::Result<T>> + Send + 'static,
    ) -> meshql::Result<T> {
        if meshql::is_small_statement(sql) {
            return answered_here(work, id, what).await;
        }
        self.executor
            .run(user, work)
            .await
            .unwrap_or_else(|e| Err(crashed(id, &e)))
    }

    fn batch_stream(batch: RecordBatch) -> Response<BoxStream<FlightData>> {
        let schema = batch.schema();
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(futures::stream::once(async move { Ok(batch) }))
            .map_err(Status::from);
        Response::new(Box::pin(stream))
    }

    /// The contracts a caller sees, narrowed by Flight SQL's catalog and
    /// schema arguments.
    fn visible(
        session: &Session,
        catalog: Option<&str>,
        domain: Option<&str>,
    ) -> Vec<meshql::manifest::Contract> {
        if catalog.is_some_and(|c| c != meshql::CATALOG_NAME) {
            return Vec::new();
        }
        session
            .visible_contracts()
            .into_iter()
            .filter(|c| domain.is_none_or(|d| d == c.domain))
            .collect()
    }

    /// `GetSchema`: the schema a command's results will have.
    async fn schema_of(&self, request: Request<FlightDescriptor>) -> Result<Schema, Status> {
        let caller = self.caller(request.metadata())?;
        let any = Any::decode(&*request.get_ref().cmd)
            .map_err(|_| Status::invalid_argument("the descriptor is not a Flight SQL command"))?;
        let command = arrow_flight::sql::Command::try_from(any)
            .map_err(|e| Status::invalid_argument(format!("unknown command: {e}")))?;
        use arrow_flight::sql::Command as C;
        let schema = match command {
            C::CommandStatementQuery(q) => {
                let claims = HandleClaims {
                    u: caller.0.user.clone(),
                    q: q.query,
                    id: Self::new_id(),
                    p: None,
                    d: Some(self.client_path(request.metadata())),
                };
                self.plan_schema(&caller.1, &claims)
                    .await?
                    .0
                    .as_ref()
                    .clone()
            }
            C::CommandPreparedStatementQuery(h) => {
                let claims = self
                    .signer
                    .check_handle(&h.prepared_statement_handle, &caller.0.user)?;
                self.plan_schema(&caller.1, &claims)
                    .await?
                    .0
                    .as_ref()
                    .clone()
            }
            C::CommandGetCatalogs(c) => c.into_builder().schema().as_ref().clone(),
            C::CommandGetDbSchemas(c) => c.into_builder().schema().as_ref().clone(),
            C::CommandGetTables(c) => c.into_builder().schema().as_ref().clone(),
            C::CommandGetTableTypes(c) => c.into_builder().schema().as_ref().clone(),
            C::CommandGetSqlInfo(_) => metadata::SQL_INFO.schema().as_ref().clone(),
            C::CommandGetXdbcTypeInfo(_) => metadata::XDBC_TYPES.schema().as_ref().clone(),
            C::CommandGetPrimaryKeys(_) => metadata::primary_keys_schema().as_ref().clone(),
            C::CommandGetExportedKeys(_)
            | C::CommandGetImportedKeys(_)
            | C::CommandGetCrossReference(_) => metadata::foreign_keys_schema().as_ref().clone(),
            other => {
                return Err(Status::unimplemented(format!(
                    "GetSchema does not apply to {}",
                    other.type_url()
                )));
            }
        };
        Ok(schema)
    }
}

/// A product's schema with what the shell's `\d` shows attached as schema
/// metadata: the contract as the principal sees it (`meshql.contract`,
/// JSON, without storage locations) and the masks and row filter that apply
/// to them (`meshql.policy`, JSON pairs of column and expression; the row
/// filter has an empty column). Drivers ignore it; `meshql --connect` reads it.
/// Runs `work` (planning or describing a small statement) where the call is
/// answered; a panic in it fails the statement with `Internal`, logged
/// under the query id, and the server goes on.
async fn answered_here<T>(
    work: impl Future<Output = meshql::Result<T>>,
    id: &str,
    what: &str,
) -> meshql::Result<T> {
    use futures::FutureExt;
    std::panic::AssertUnwindSafe(work)
        .catch_unwind()
        .await
        .unwrap_or_else(|_| {
            tracing::error!(query_id = id, "{what} the statement panicked");
            Err(meshql::Error::Execution(
                datafusion::error::DataFusionError::Internal(format!(
                    "{what} the statement panicked"
                )),
            ))
        })
}

fn described(session: &Session, contract: &meshql::manifest::Contract, schema: Schema) -> Schema {
    use meshql::governance::ColumnDecision;
    let mut contract = contract.clone();
    contract.servers.clear();
    contract.file = format!("{}/{}.yaml", contract.domain, contract.product.name).into();
    let mut policy: Vec<(String, String)> = Vec::new();
    if let Some(p) = session.policy(&contract.qualified_name()) {
        for c in &p.columns {
            if let ColumnDecision::Mask(m) = &c.action {
                policy.push((c.name.clone(), format!("masked: {}", m.sql)));
            }
        }
        if let Some(f) = &p.row_filter {
            policy.push((String::new(), f.sql.clone()));
        }
    }
    let mut metadata = schema.metadata().clone();
    if let Ok(json) = serde_json::to_string(&contract) {
        metadata.insert("meshql.contract".into(), json);
    }
    if let Ok(json) = serde_json::to_string(&policy) {
        metadata.insert("meshql.policy".into(), json);
    }
    schema.with_metadata(metadata)
}

/// Parameter values from a handle: one row in Arrow IPC.
#[allow(clippy::result_large_err)]
fn decode_params(encoded: Option<&str>) -> Result<Option<ParamValues>, Status> {
    let Some(encoded) = encoded else {
        return Ok(None);
    };
    let bytes = STANDARD
        .decode(encoded)
        .map_err(|_| Status::invalid_argument("corrupt parameter values"))?;
    let mut reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
        .map_err(|_| Status::invalid_argument("corrupt parameter values"))?;
    let batch = reader
        .next()
        .transpose()
        .map_err(|_| Status::invalid_argument("corrupt parameter values"))?
        .ok_or_else(|| Status::invalid_argument("no parameter values"))?;
    let values = batch
        .columns()
        .iter()
        .map(|c| ScalarValue::try_from_array(c, 0))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Status::invalid_argument(format!("unusable parameter value: {e}")))?;
    Ok(Some(ParamValues::from(values)))
}

#[allow(clippy::result_large_err)]
fn encode_params(batch: &RecordBatch) -> Result<String, Status> {
    let mut buf = Vec::new();
    {
        let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut buf, &batch.schema())
            .map_err(|e| Status::invalid_argument(format!("unusable parameter values: {e}")))?;
        writer
            .write(batch)
            .and_then(|_| writer.finish())
            .map_err(|e| Status::invalid_argument(format!("unusable parameter values: {e}")))?;
    }
    Ok(STANDARD.encode(buf))
}

#[allow(clippy::result_large_err)]
fn schema_bytes(schema: &Schema) -> Result<bytes::Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e| Status::internal(format!("cannot encode the schema: {e}")))?;
    Ok(bytes)
}

/// Writes a statement's audit record once, when its stream ends, fails or
/// is dropped (a client that went away).
struct AuditGuard {
    log: Option<Arc<AuditLog>>,
    record: AuditRecord,
    started: Instant,
    rows: Arc<AtomicU64>,
    bytes: u64,
    state: Arc<Mutex<RunState>>,
    written: AtomicBool,
    /// Whether the statement ran on a second plan (see
    /// [`meshql::Query::replanned`]).
    replanned: meshql::Replanned,
}

impl AuditGuard {
    fn new(log: Option<Arc<AuditLog>>, record: AuditRecord) -> Self {
        Self {
            log,
            record,
            started: Instant::now(),
            rows: Arc::new(AtomicU64::new(0)),
            bytes: 0,
            state: Arc::default(),
            written: AtomicBool::new(false),
            replanned: meshql::Replanned::default(),
        }
    }

    fn observe(&mut self, item: &Result<FlightData, Status>) {
        match item {
            Ok(data) => self.bytes += (data.data_body.len() + data.data_header.len()) as u64,
            Err(status) => {
                let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                if state.outcome.is_none() {
                    state.outcome = Some(outcome(status));
                }
            }
        }
    }

    fn fail(&mut self, o: Outcome) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).outcome = Some(o);
    }

    fn write(&mut self) {
        if self.written.swap(true, Ordering::Relaxed) {
            return;
        }
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let o = match (&state.outcome, state.finished) {
            (Some(o), _) => o.clone(),
            (None, true) => Outcome::Ok,
            // The client went away before the end.
            (None, false) => Outcome::Cancelled,
        };
        drop(state);
        self.record.rows = self.rows.load(Ordering::Relaxed);
        self.record.bytes = self.bytes;
        self.record.finish(self.started.elapsed(), o);
        self.record.replanned = self.replanned.get().map(str::to_owned);
        tracing::info!(
            query_id = self.record.query_id,
            user = self.record.user,
            rows = self.record.rows,
            bytes = self.record.bytes,
            duration_ms = self.record.duration_ms,
            outcome = ?self.record.outcome,
            "statement"
        );
        if let Some(log) = &self.log
            && let Err(e) = log.write(&self.record)
        {
            tracing::error!(error = %e, "cannot write the audit record");
        }
    }
}

impl Drop for AuditGuard {
    fn drop(&mut self) {
        self.write();
    }
}

fn read_only(what: &str) -> Status {
    Status::permission_denied(format!(
        "{what} is not allowed: meshql serves data products read-only; domain teams publish through their own pipelines"
    ))
}

fn no_transactions() -> Status {
    Status::unimplemented(
        "meshql has no transactions: every statement is a read-only query of the current data",
    )
}

fn client_addr<T>(request: &Request<T>) -> Option<String> {
    request.remote_addr().map(|a| a.to_string())
}

/// The Flight SQL service: a dispatcher. Each call is answered by the
/// method of the same name in its family's module: `auth` (the handshake),
/// `statements` (queries, their cancellation, refused writes and
/// transactions), `prepared` (prepared statements and their parameters),
/// `catalog` (catalogs, schemas, tables, keys, types, SQL info).
#[tonic::async_trait]
impl FlightSqlService for MeshFlightSql {
    type FlightService = MeshFlightSql;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<BoxStream<HandshakeResponse>>, Status> {
        MeshFlightSql::do_handshake(self, request).await
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        MeshFlightSql::get_flight_info_statement(self, query, request).await
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        MeshFlightSql::get_flight_info_prepared_statement(self, cmd, request).await
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<BoxStream<FlightData>>, Status> {
        MeshFlightSql::do_get_statement(self, ticket, request).await
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<BoxStream<FlightData>>, Status> {
        MeshFlightSql::do_get_prepared_statement(self, query, request).await
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        MeshFlightSql::get_flight_info_catalogs(self, query, request).await
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<BoxStream<FlightData>>, Status> {
        MeshFlightSql::do_get_catalogs(self, query, request).await
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        MeshFlightSql::get_flight_info_schemas(self, query, request).await
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<BoxStream<FlightData>>, Status> {
        MeshFlightSql::do_get_schemas(self, query, request).await
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        MeshFlightSql::get_flight_info_tables(self, query, request).await
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<BoxStream<FlightData>>, Status> {
        MeshFlightSql::do_get_tables(self, query, request).await
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        MeshFlightSql::get_flight_info_table_types(self, query, request).await
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<BoxStream<FlightData>>, Status> {
        MeshFlightSql::do_get_table_types(self, query, request).await
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        MeshFlightSql::get_flight_info_sql_info(self, query, request).await
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<BoxStream<FlightData>>, Status> {
        MeshFlightSql::do_get_sql_info(self, query, request).await
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        MeshFlightSql::get_flight_info_primary_keys(self, query, request).await
    }

    async fn do_get_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<Ticket>,
    ) -> Result<Response<BoxStream<FlightData>>, Status> {
        MeshFlightSql::do_get_primary_keys(self, query, request).await
    }

    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        MeshFlightSql::get_flight_info_exported_keys(self, query, request).await
    }

    async fn do_get_exported_keys(
        &self,
        _query: CommandGetExportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<BoxStream<FlightData>>, Status> {
        MeshFlightSql::do_get_exported_keys(self, _query, request).await
    }

    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        MeshFlightSql::get_flight_info_imported_keys(self, query, request).await
    }

    async fn do_get_imported_keys(
        &self,
        _query: CommandGetImportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<BoxStream<FlightData>>, Status> {
        MeshFlightSql::do_get_imported_keys(self, _query, request).await
    }

    async fn get_flight_info_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        MeshFlightSql::get_flight_info_cross_reference(self, query, request).await
    }

    async fn do_get_cross_reference(
        &self,
        _query: CommandGetCrossReference,
        request: Request<Ticket>,
    ) -> Result<Response<BoxStream<FlightData>>, Status> {
        MeshFlightSql::do_get_cross_reference(self, _query, request).await
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        MeshFlightSql::get_flight_info_xdbc_type_info(self, query, request).await
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<Ticket>,
    ) -> Result<Response<BoxStream<FlightData>>, Status> {
        MeshFlightSql::do_get_xdbc_type_info(self, query, request).await
    }

    async fn get_flight_info_substrait_plan(
        &self,
        _query: CommandStatementSubstraitPlan,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        MeshFlightSql::get_flight_info_substrait_plan(self, _query, request).await
    }

    async fn do_put_statement_update(
        &self,
        _ticket: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        MeshFlightSql::do_put_statement_update(self, _ticket, request).await
    }

    async fn do_put_statement_ingest(
        &self,
        _ticket: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        MeshFlightSql::do_put_statement_ingest(self, _ticket, request).await
    }

    async fn do_put_substrait_plan(
        &self,
        _ticket: CommandStatementSubstraitPlan,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        MeshFlightSql::do_put_substrait_plan(self, _ticket, request).await
    }

    async fn do_put_prepared_statement_update(
        &self,
        _query: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        MeshFlightSql::do_put_prepared_statement_update(self, _query, request).await
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        MeshFlightSql::do_put_prepared_statement_query(self, query, request).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        MeshFlightSql::do_action_create_prepared_statement(self, query, request).await
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        MeshFlightSql::do_action_close_prepared_statement(self, query, request).await
    }

    async fn do_action_create_prepared_substrait_plan(
        &self,
        _query: ActionCreatePreparedSubstraitPlanRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        MeshFlightSql::do_action_create_prepared_substrait_plan(self, _query, request).await
    }

    async fn do_action_begin_transaction(
        &self,
        _query: ActionBeginTransactionRequest,
        request: Request<Action>,
    ) -> Result<ActionBeginTransactionResult, Status> {
        MeshFlightSql::do_action_begin_transaction(self, _query, request).await
    }

    async fn do_action_end_transaction(
        &self,
        _query: ActionEndTransactionRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        MeshFlightSql::do_action_end_transaction(self, _query, request).await
    }

    async fn do_action_begin_savepoint(
        &self,
        _query: ActionBeginSavepointRequest,
        request: Request<Action>,
    ) -> Result<ActionBeginSavepointResult, Status> {
        MeshFlightSql::do_action_begin_savepoint(self, _query, request).await
    }

    async fn do_action_end_savepoint(
        &self,
        _query: ActionEndSavepointRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        MeshFlightSql::do_action_end_savepoint(self, _query, request).await
    }

    async fn do_action_cancel_query(
        &self,
        query: ActionCancelQueryRequest,
        request: Request<Action>,
    ) -> Result<ActionCancelQueryResult, Status> {
        MeshFlightSql::do_action_cancel_query(self, query, request).await
    }

    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<BoxStream<arrow_flight::Result>>, Status> {
        let (principal, session) = self.caller(request.metadata())?;
        match request.get_ref().r#type.as_str() {
            "SetSessionOptions" => return self.set_session_options(&session, &request),
            "GetSessionOptions" => return Ok(self.get_session_options(&request)),
            "CloseSession" => return Ok(self.close_session(&request)),
            _ => {}
        }
        if request.get_ref().r#type == "CancelFlightInfo" {
            let cancel =
                CancelFlightInfoRequest::decode(&*request.get_ref().body).map_err(|_| {
                    Status::invalid_argument("the CancelFlightInfo request is not valid")
                })?;
            let info = cancel
                .info
                .ok_or_else(|| Status::invalid_argument("CancelFlightInfo needs the FlightInfo"))?;
            let status = self.cancel(&info, &principal.user)?;
            let result = CancelFlightInfoResult {
                status: status as i32,
            };
            let body = arrow_flight::Result {
                body: result.encode_to_vec().into(),
            };
            return Ok(Response::new(Box::pin(futures::stream::iter([Ok(body)]))));
        }
        Err(Status::unimplemented(format!(
            "unknown action `{}`",
            request.get_ref().r#type
        )))
    }

    async fn list_custom_actions(&self) -> Option<Vec<Result<ActionType, Status>>> {
        let action = |name: &str, description: &str| {
            Ok(ActionType {
                r#type: name.into(),
                description: description.into(),
            })
        };
        Some(vec![
            action(
                "CancelFlightInfo",
                "Cancels a running query given its FlightInfo",
            ),
            action(
                "SetSessionOptions",
                "Sets `schema` (the domain, or a list: the search path unqualified names resolve along)",
            ),
            action("GetSessionOptions", "The catalog and the search path"),
            action("CloseSession", "Forgets the search path"),
        ])
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// The gRPC service: Flight SQL's, plus `GetSchema`, which arrow-flight's
/// Flight SQL helper does not route.
#[derive(Clone, Debug)]
pub struct MeshFlightService {
    inner: Arc<MeshFlightSql>,
}

impl MeshFlightService {
    pub fn new(inner: MeshFlightSql) -> Self {
        Self::shared(Arc::new(inner))
    }

    /// The service over an implementation other listeners share (the web
    /// catalog).
    pub fn shared(inner: Arc<MeshFlightSql>) -> Self {
        Self { inner }
    }
}

macro_rules! rpc_span {
    ($name:expr) => {
        tracing::info_span!(
            "rpc",
            method = $name,
            user = tracing::field::Empty,
            query_id = tracing::field::Empty
        )
    };
}

#[tonic::async_trait]
impl FlightService for MeshFlightService {
    type HandshakeStream = <MeshFlightSql as FlightService>::HandshakeStream;
    type ListFlightsStream = <MeshFlightSql as FlightService>::ListFlightsStream;
    type DoGetStream = <MeshFlightSql as FlightService>::DoGetStream;
    type DoPutStream = <MeshFlightSql as FlightService>::DoPutStream;
    type DoActionStream = <MeshFlightSql as FlightService>::DoActionStream;
    type ListActionsStream = <MeshFlightSql as FlightService>::ListActionsStream;
    type DoExchangeStream = <MeshFlightSql as FlightService>::DoExchangeStream;

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        use tracing::Instrument;
        FlightService::handshake(self.inner.as_ref(), request)
            .instrument(rpc_span!("Handshake"))
            .await
    }

    async fn list_flights(
        &self,
        request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        self.inner.caller(request.metadata())?;
        Err(Status::unimplemented(
            "ListFlights is not offered: use Flight SQL's GetTables",
        ))
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        use tracing::Instrument;
        FlightService::get_flight_info(self.inner.as_ref(), request)
            .instrument(rpc_span!("GetFlightInfo"))
            .await
    }

    async fn poll_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        self.inner.caller(request.metadata())?;
        Err(Status::unimplemented(
            "PollFlightInfo is not offered: use GetFlightInfo",
        ))
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        use tracing::Instrument;
        let schema = self
            .inner
            .schema_of(request)
            .instrument(rpc_span!("GetSchema"))
            .await?;
        let result: SchemaResult = SchemaAsIpc::new(&schema, &IpcWriteOptions::default())
            .try_into()
            .map_err(|e| Status::internal(format!("cannot encode the schema: {e}")))?;
        Ok(Response::new(result))
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        use tracing::Instrument;
        FlightService::do_get(self.inner.as_ref(), request)
            .instrument(rpc_span!("DoGet"))
            .await
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        use tracing::Instrument;
        FlightService::do_put(self.inner.as_ref(), request)
            .instrument(rpc_span!("DoPut"))
            .await
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        use tracing::Instrument;
        FlightService::do_action(self.inner.as_ref(), request)
            .instrument(rpc_span!("DoAction"))
            .await
    }

    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        FlightService::list_actions(self.inner.as_ref(), request).await
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        self.inner.caller(request.metadata())?;
        Err(Status::unimplemented("DoExchange is not offered"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_values_round_trip_through_a_handle() {
        use arrow::array::{Int64Array, StringArray};
        let schema = Arc::new(Schema::new(vec![
            arrow::datatypes::Field::new("a", arrow::datatypes::DataType::Utf8, true),
            arrow::datatypes::Field::new("b", arrow::datatypes::DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["EU"])),
                Arc::new(Int64Array::from(vec![7])),
            ],
        )
        .expect("batch");
        let encoded = encode_params(&batch).expect("encode");
        let Some(ParamValues::List(values)) = decode_params(Some(&encoded)).expect("decode") else {
            panic!("positional values expected");
        };
        let values: Vec<ScalarValue> = values.into_iter().map(|v| v.value).collect();
        assert_eq!(
            values,
            vec![
                ScalarValue::Utf8(Some("EU".into())),
                ScalarValue::Int64(Some(7))
            ]
        );
    }
}
