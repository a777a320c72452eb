//! The PostgreSQL wire protocol: `meshql serve --pg`. The database is the
//! catalog `mesh`, domains are schemas and products tables. Every
//! statement runs through the Flight SQL service's path (the guard, the
//! query slots, the limits, the audit log) as the principal who logged in,
//! with the connection's own search path; results are encoded for
//! PostgreSQL clients in text or binary as they ask.
//!
//! Logins: SCRAM-SHA-256 against the `scramSha256` verifier of
//! `users.yaml` on a plain connection; over TLS the password itself (the
//! `users.yaml` password, or a JWT of the configured identity provider).

mod auth;
mod catalog;
pub mod scram;
mod sql;

use std::fmt::Debug;
use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch, into_pg_type};
use async_trait::async_trait;
use futures::{Sink, StreamExt, stream};
use meshql::{Principal, Session};
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    DescribePortalResponse, DescribeStatementResponse, FieldInfo, QueryResponse, Response, Tag,
};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::PortalStore;
use pgwire::api::{
    ClientInfo, ClientPortalStore, ConnectionManager, ErrorHandler, PgWireServerHandlers, Type,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::data::DataRow;
use pgwire::types::format::FormatOptions;
use tonic::{Code, Status};

use crate::MeshFlightSql;
use sql::Kind;

/// What a connection holds once its user has logged in.
pub(crate) struct Conn {
    pub(crate) principal: Principal,
    /// The principal's session with this connection's own search path.
    pub(crate) session: Session,
    /// `SET` values of the client (`application_name`, `DateStyle`, ...),
    /// answered by `SHOW`.
    pub(crate) settings: std::sync::Mutex<std::collections::BTreeMap<String, String>>,
    /// Open cursors (`DECLARE`), by name: their queries run and wait for
    /// `FETCH`; a transaction's end closes them.
    pub(crate) cursors: tokio::sync::Mutex<std::collections::HashMap<String, Cursor>>,
}

/// A declared cursor: its query's schema and the rest of its batches.
pub(crate) struct Cursor {
    schema: SchemaRef,
    batches: crate::service::BoxStream<RecordBatch>,
    /// The part of a batch the last `FETCH` did not take.
    pending: Option<RecordBatch>,
}

/// The handlers of every connection of one server.
pub struct PgHandlers {
    startup: Arc<auth::Startup>,
    queries: Arc<Queries>,
    cancel: Arc<DefaultCancelHandler>,
}

impl PgHandlers {
    pub fn new(flight: Arc<MeshFlightSql>) -> Self {
        let manager = Arc::new(ConnectionManager::new());
        Self {
            startup: Arc::new(auth::Startup::new(
                Arc::clone(&flight),
                Arc::clone(&manager),
            )),
            queries: Arc::new(Queries {
                flight,
                parser: Arc::new(Parser),
            }),
            cancel: Arc::new(DefaultCancelHandler::new(manager)),
        }
    }
}

impl PgWireServerHandlers for PgHandlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::clone(&self.queries)
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::clone(&self.queries)
    }

    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        Arc::clone(&self.startup)
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(Logged)
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        Arc::clone(&self.cancel)
    }
}

struct Logged;

impl ErrorHandler for Logged {
    fn on_error<C>(&self, client: &C, error: &mut PgWireError)
    where
        C: ClientInfo,
    {
        tracing::debug!(client = %client.socket_addr(), "postgres error: {error}");
    }
}

/// Serves the PostgreSQL protocol on `listener` until `stop` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    flight: Arc<MeshFlightSql>,
    tls: Option<crate::Tls>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let acceptor = match &tls {
        Some(tls) => Some(crate::web::tls_acceptor(tls, &[b"postgresql"])?),
        None => None,
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(
        flight.options().max_pg_connections.max(1),
    ));
    let handlers = Arc::new(PgHandlers::new(flight));
    tokio::pin!(stop);
    loop {
        let (socket, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("postgres: cannot accept a connection: {e}");
                    continue;
                }
            },
            _ = &mut stop => return Ok(()),
        };
        let _ = socket.set_nodelay(true);
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!("postgres: refused a connection from {addr}: too many connections");
            tokio::spawn(too_many_connections(socket));
            continue;
        };
        let handlers = Arc::clone(&handlers);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            if let Err(e) = pgwire::tokio::process_socket(socket, acceptor, handlers).await {
                tracing::debug!("postgres connection from {addr}: {e}");
            }
            drop(slot);
        });
    }
}

/// What PostgreSQL answers a connection over its limit, before reading
/// anything from it: a FATAL `53300` ErrorResponse, then the end.
async fn too_many_connections(mut socket: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let mut fields = Vec::new();
    for (tag, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', "53300"),
        (b'M', "sorry, too many clients already"),
    ] {
        fields.push(tag);
        fields.extend_from_slice(value.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let mut message = vec![b'E'];
    message.extend_from_slice(&(fields.len() as i32 + 4).to_be_bytes());
    message.extend_from_slice(&fields);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let _ = socket.write_all(&message).await;
        let _ = socket.shutdown().await;
    })
    .await;
}

/// The error a PostgreSQL client gets for a status of the shared path:
/// its message, and the SQLSTATE drivers act on.
pub(crate) fn status_error(status: &Status) -> PgWireError {
    let message = status.message();
    let code = match status.code() {
        Code::NotFound => "42P01",
        Code::PermissionDenied => "42501",
        Code::Cancelled => "57014",
        Code::DeadlineExceeded => "57014",
        Code::ResourceExhausted
            if message.contains("timeout") || message.contains("longer than") =>
        {
            "57014"
        }
        Code::ResourceExhausted if message.contains("memory") || message.contains("Memory") => {
            "53200"
        }
        Code::ResourceExhausted => "53000",
        Code::InvalidArgument
            if message.contains("column `") && message.contains("does not exist") =>
        {
            "42703"
        }
        Code::InvalidArgument
            if message.contains("domain `") && message.contains("does not exist") =>
        {
            "3F000"
        }
        Code::InvalidArgument if message.contains("ParserError") || message.contains("syntax") => {
            "42601"
        }
        Code::InvalidArgument => "42000",
        Code::Unauthenticated => "28000",
        Code::Unavailable => "58000",
        _ => "XX000",
    };
    user_error(code, message)
}

pub(crate) fn user_error(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_string(),
        code.to_string(),
        message.into(),
    )))
}

fn meshql_error(e: &meshql::Error) -> PgWireError {
    status_error(&crate::status::to_status(e, ""))
}

fn conn<C: ClientInfo + ?Sized>(client: &C) -> PgWireResult<Arc<Conn>> {
    client
        .session_extensions()
        .get::<Conn>()
        .ok_or_else(|| user_error("28000", "not logged in"))
}

/// A parsed statement: its text and what it is.
#[derive(Clone, Debug)]
pub struct Prepared {
    sql: String,
    kind: Kind,
    /// A query's result schema and parameter types, as planned.
    described: Option<(SchemaRef, Vec<DataType>)>,
}

pub struct Parser;

#[async_trait]
impl QueryParser for Parser {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Prepared>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let kind = sql::classify(sql);
        let mut sql = match &kind {
            Kind::Query => catalog::rewrite(sql),
            _ => sql.to_string(),
        };
        let described = match &kind {
            Kind::Query => {
                let conn = conn(client)?;
                let (schema, params) = match conn.session.describe(&sql).await {
                    Ok(described) => described,
                    // The engine could not type a parameter by itself:
                    // with the types the client declared, if it did.
                    Err(e) => match sql::typed_placeholders(&sql, types) {
                        Some(typed) => {
                            let described = conn
                                .session
                                .describe(&typed)
                                .await
                                .map_err(|_| meshql_error(&e))?;
                            sql = typed;
                            described
                        }
                        None => return Err(meshql_error(&e)),
                    },
                };
                Some((
                    schema,
                    params.iter().map(|f| f.data_type().clone()).collect(),
                ))
            }
            Kind::Show(name) => Some((sql::show_schema(name), Vec::new())),
            Kind::Fetch { name, .. } => {
                let conn = conn(client)?;
                let cursors = conn.cursors.lock().await;
                cursors
                    .get(name)
                    .map(|c| (Arc::clone(&c.schema), Vec::new()))
            }
            _ => None,
        };
        Ok(Prepared {
            sql,
            kind,
            described,
        })
    }

    fn get_parameter_types(&self, stmt: &Prepared) -> PgWireResult<Vec<Type>> {
        let Some((_, params)) = &stmt.described else {
            return Ok(Vec::new());
        };
        params
            .iter()
            .map(|t| match t {
                DataType::Null => Ok(Type::UNKNOWN),
                t => into_pg_type(t),
            })
            .collect()
    }

    fn get_result_schema(
        &self,
        stmt: &Prepared,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        match &stmt.described {
            Some((schema, _)) if !schema.fields().is_empty() => arrow_schema_to_pg_fields(
                schema,
                column_format.unwrap_or(&Format::UnifiedText),
                None,
            ),
            _ => Ok(Vec::new()),
        }
    }
}

/// Simple and extended queries.
pub struct Queries {
    flight: Arc<MeshFlightSql>,
    parser: Arc<Parser>,
}

impl Queries {
    /// Starts a query of a connection, in PostgreSQL's dialect, through
    /// the Flight SQL run path as the connection's principal.
    async fn start<C>(
        &self,
        client: &C,
        conn: &Conn,
        sql: &str,
        params: Option<datafusion::common::ParamValues>,
    ) -> PgWireResult<(SchemaRef, crate::service::BoxStream<RecordBatch>)>
    where
        C: ClientInfo + Send + Sync,
    {
        self.flight
            .batches(
                &conn.principal,
                &conn.session,
                &catalog::rewrite(sql),
                params,
                Some(client.socket_addr().to_string()),
            )
            .await
            .map_err(|s| status_error(&s))
    }

    /// Runs one statement of a connection.
    async fn run<C>(
        &self,
        client: &C,
        sql: &str,
        kind: &Kind,
        params: Option<datafusion::common::ParamValues>,
        format: &Format,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + Send + Sync,
    {
        let conn = conn(client)?;
        let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        match kind {
            Kind::Empty => Ok(Response::EmptyQuery),
            Kind::Begin => Ok(Response::TransactionStart(Tag::new("BEGIN"))),
            Kind::Commit => {
                conn.cursors.lock().await.clear();
                Ok(Response::TransactionEnd(Tag::new("COMMIT")))
            }
            Kind::Rollback => {
                conn.cursors.lock().await.clear();
                Ok(Response::TransactionEnd(Tag::new("ROLLBACK")))
            }
            Kind::Declare { name, query } => {
                let (schema, batches) = self.start(client, &conn, query, params).await?;
                let mut cursors = conn.cursors.lock().await;
                if cursors.contains_key(name) {
                    return Err(user_error(
                        "42P03",
                        format!("cursor \"{name}\" already exists"),
                    ));
                }
                cursors.insert(
                    name.clone(),
                    Cursor {
                        schema,
                        batches,
                        pending: None,
                    },
                );
                Ok(Response::Execution(Tag::new("DECLARE CURSOR")))
            }
            Kind::Close(name) => {
                let mut cursors = conn.cursors.lock().await;
                match name {
                    None => cursors.clear(),
                    Some(n) => {
                        if cursors.remove(n).is_none() {
                            return Err(user_error(
                                "34000",
                                format!("cursor \"{n}\" does not exist"),
                            ));
                        }
                    }
                }
                Ok(Response::Execution(Tag::new("CLOSE CURSOR")))
            }
            Kind::Fetch { name, count } => {
                let mut cursors = conn.cursors.lock().await;
                let cursor = cursors.get_mut(name).ok_or_else(|| {
                    user_error("34000", format!("cursor \"{name}\" does not exist"))
                })?;
                let mut taken = Vec::new();
                let mut rows = 0usize;
                let wanted = count.unwrap_or(usize::MAX);
                while rows < wanted {
                    let batch = match cursor.pending.take() {
                        Some(b) => b,
                        None => match cursor.batches.next().await {
                            Some(Ok(b)) => b,
                            Some(Err(status)) => return Err(status_error(&status)),
                            None => break,
                        },
                    };
                    let n = (wanted - rows).min(batch.num_rows());
                    if n < batch.num_rows() {
                        cursor.pending = Some(batch.slice(n, batch.num_rows() - n));
                    }
                    rows += n;
                    taken.push(batch.slice(0, n));
                }
                let fields = Arc::new(arrow_schema_to_pg_fields(
                    &cursor.schema,
                    format,
                    Some(options),
                )?);
                let encoded: Vec<PgWireResult<DataRow>> = taken
                    .into_iter()
                    .flat_map(|b| encode_recordbatch(Arc::clone(&fields), b))
                    .collect();
                let mut response = QueryResponse::new(fields, stream::iter(encoded));
                response.set_command_tag("FETCH");
                Ok(Response::Query(response))
            }
            Kind::Done(tag) => Ok(Response::Execution(Tag::new(tag))),
            Kind::SearchPath(change) => {
                conn.session
                    .change_search_path(change.clone())
                    .map_err(|e| meshql_error(&e))?;
                Ok(Response::Execution(Tag::new("SET")))
            }
            Kind::Set(name, value) => {
                conn.settings
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(name.clone(), value.clone());
                Ok(Response::Execution(Tag::new("SET")))
            }
            Kind::Unsupported(message) => Err(user_error("0A000", message.clone())),
            Kind::Show(name) => {
                let value = sql::show(&conn, client, name)?;
                let schema = sql::show_schema(name);
                let batch = RecordBatch::try_new(
                    Arc::clone(&schema),
                    vec![Arc::new(arrow::array::StringArray::from(vec![value]))],
                )
                .map_err(|e| user_error("XX000", e.to_string()))?;
                let fields = Arc::new(arrow_schema_to_pg_fields(&schema, format, Some(options))?);
                let rows = encode_recordbatch(Arc::clone(&fields), batch).collect::<Vec<_>>();
                let mut response = QueryResponse::new(fields, stream::iter(rows));
                response.set_command_tag("SHOW");
                Ok(Response::Query(response))
            }
            Kind::CopyOut { query, format } => {
                let (schema, batches) = self.start(client, &conn, query, params).await?;
                Ok(Response::CopyOut(copy_out(schema, batches, format)?))
            }
            Kind::Query => {
                let (schema, batches) = self.start(client, &conn, sql, params).await?;
                if schema.fields().is_empty() {
                    return Ok(Response::Execution(Tag::new("SELECT").with_rows(0)));
                }
                let fields = Arc::new(arrow_schema_to_pg_fields(&schema, format, Some(options))?);
                Ok(Response::Query(QueryResponse::new(
                    Arc::clone(&fields),
                    rows(fields, batches),
                )))
            }
        }
    }
}

/// A result as COPY data, row by row.
fn copy_out(
    schema: SchemaRef,
    batches: crate::service::BoxStream<RecordBatch>,
    format: &sql::CopyFormat,
) -> PgWireResult<pgwire::api::results::CopyResponse> {
    use pgwire::api::results::{CopyCsvOptions, CopyEncoder, CopyResponse, CopyTextOptions};
    use pgwire::messages::copy::CopyData;
    let wire = match format {
        sql::CopyFormat::Binary => Format::UnifiedBinary,
        _ => Format::UnifiedText,
    };
    let fields = Arc::new(arrow_schema_to_pg_fields(&schema, &wire, None)?);
    let columns = fields.len();
    let mut header = None;
    let mut encoder = match format {
        sql::CopyFormat::Binary => CopyEncoder::new_binary(Arc::clone(&fields)),
        sql::CopyFormat::Text => {
            CopyEncoder::new_text(Arc::clone(&fields), CopyTextOptions::default())
        }
        sql::CopyFormat::Csv {
            header: h,
            delimiter,
        } => {
            if *h {
                let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
                header = Some(format!("{}\n", names.join(delimiter)).into_bytes());
            }
            CopyEncoder::new_csv(
                Arc::clone(&fields),
                CopyCsvOptions {
                    delimiter: delimiter.as_str().into(),
                    ..CopyCsvOptions::default()
                },
            )
        }
    };
    let code = i8::from(matches!(format, sql::CopyFormat::Binary));
    // The header goes out in the first row's message, as the command tag
    // counts messages as rows; alone when there is no row.
    let header = Arc::new(std::sync::Mutex::new(header));
    let last = Arc::clone(&header);
    let rows = batches
        .map(move |batch| {
            let out: Vec<PgWireResult<CopyData>> = match batch {
                Ok(batch) => {
                    let mut out = Vec::with_capacity(batch.num_rows());
                    'rows: for row in 0..batch.num_rows() {
                        for (i, column) in batch.columns().iter().enumerate() {
                            if let Err(e) = arrow_pg::encoder::encode_value(
                                &mut encoder,
                                column,
                                row,
                                batch.schema().field(i),
                                &fields[i],
                            ) {
                                out.push(Err(e));
                                break 'rows;
                            }
                        }
                        let row = encoder.take_copy();
                        let first = header.lock().unwrap_or_else(|p| p.into_inner()).take();
                        out.push(Ok(match first {
                            Some(h) => CopyData::new([h.as_slice(), &row.data].concat().into()),
                            None => row,
                        }));
                    }
                    out
                }
                Err(status) => vec![Err(status_error(&status))],
            };
            stream::iter(out)
        })
        .flatten();
    let alone = stream::iter(std::iter::from_fn(move || {
        last.lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .map(|h| Ok(CopyData::new(h.into())))
    }));
    Ok(CopyResponse::new(code, columns, rows.chain(alone)))
}

/// The data rows of a stream of batches.
fn rows(
    fields: Arc<Vec<FieldInfo>>,
    batches: crate::service::BoxStream<RecordBatch>,
) -> impl futures::Stream<Item = PgWireResult<DataRow>> + Send + 'static {
    batches
        .map(move |batch| {
            let rows: Box<dyn Iterator<Item = PgWireResult<DataRow>> + Send> = match batch {
                Ok(batch) => encode_recordbatch(Arc::clone(&fields), batch),
                Err(status) => Box::new(std::iter::once(Err(status_error(&status)))),
            };
            stream::iter(rows)
        })
        .flatten()
}

#[async_trait]
impl SimpleQueryHandler for Queries {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut out = Vec::new();
        for statement in sql::split(query) {
            let kind = sql::classify(&statement);
            match self
                .run(&*client, &statement, &kind, None, &Format::UnifiedText)
                .await
            {
                Ok(r) => out.push(r),
                // The statements before it have answered; this one fails
                // the rest of the query string.
                Err(PgWireError::UserError(info)) if !out.is_empty() => {
                    out.push(Response::Error(info));
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl ExtendedQueryHandler for Queries {
    type Statement = Prepared;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        Arc::clone(&self.parser)
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Prepared>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let prepared = &portal.statement.statement;
        let params = match &prepared.described {
            Some((_, types)) if !types.is_empty() => {
                let inferred: Vec<Option<&DataType>> = types
                    .iter()
                    .map(|t| (!matches!(t, DataType::Null)).then_some(t))
                    .collect();
                Some(arrow_pg::datatypes::df::deserialize_parameters(
                    portal, &inferred,
                )?)
            }
            _ => None,
        };
        self.run(
            &*client,
            &prepared.sql,
            &prepared.kind,
            params,
            &portal.result_column_format,
        )
        .await
    }

    /// A portal's description; a cursor `DECLARE` opened is a portal of
    /// the same name, as in PostgreSQL (psycopg describes it so).
    async fn on_describe<C>(
        &self,
        client: &mut C,
        message: pgwire::messages::extendedquery::Describe,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if message.target_type == pgwire::messages::extendedquery::TARGET_TYPE_BYTE_PORTAL
            && let Some(name) = message.name.as_deref()
            && client.portal_store().get_portal(name).is_none()
        {
            let conn = conn(&*client)?;
            let schema = conn
                .cursors
                .lock()
                .await
                .get(name)
                .map(|c| Arc::clone(&c.schema));
            if let Some(schema) = schema {
                let fields = arrow_schema_to_pg_fields(&schema, &Format::UnifiedText, None)?;
                let response = DescribePortalResponse::new(fields);
                return pgwire::api::query::send_describe_response(client, &response).await;
            }
        }
        self._on_describe(client, message).await
    }

    async fn do_describe_statement<C>(
        &self,
        _client: &mut C,
        target: &StoredStatement<Prepared>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // Types the client gave win over those the planner inferred.
        let inferred = self.parser.get_parameter_types(&target.statement)?;
        let params = inferred
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                target
                    .parameter_types
                    .get(i)
                    .cloned()
                    .flatten()
                    .unwrap_or(t)
            })
            .collect();
        let fields = self.parser.get_result_schema(&target.statement, None)?;
        Ok(DescribeStatementResponse::new(params, fields))
    }

    async fn do_describe_portal<C>(
        &self,
        _client: &mut C,
        portal: &Portal<Prepared>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let fields = self.parser.get_result_schema(
            &portal.statement.statement,
            Some(&portal.result_column_format),
        )?;
        Ok(DescribePortalResponse::new(fields))
    }
}
