//! Statements: planning a query for `GetFlightInfo`, running it for
//! `DoGet`, cancelling it; writes, ingestion, Substrait and transactions
//! are refused (meshql is read-only).

use super::*;

impl MeshFlightSql {
    pub(super) async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let (principal, session) = self.caller(request.metadata())?;
        if query.transaction_id.is_some() {
            return Err(no_transactions());
        }
        if let Some(changed) = self.change_client_path(&session, request.metadata(), &query.query) {
            changed?;
            // Nothing to fetch: no endpoints.
            let info = FlightInfo::new()
                .try_with_schema(&Schema::empty())
                .map_err(|e| Status::internal(format!("cannot encode the schema: {e}")))?
                .with_descriptor(request.into_inner())
                .with_total_records(0)
                .with_total_bytes(0);
            return Ok(Response::new(info));
        }
        let claims = HandleClaims {
            u: principal.user.clone(),
            q: query.query,
            id: Self::new_id(),
            p: None,
            d: Some(self.client_path(request.metadata())),
        };
        // Planned here and kept for the ticket's DoGet, which then only
        // runs it.
        let schema = self
            .plan_for_ticket(&principal, &session, &claims)
            .await
            .map_err(|s| self.refused(&principal, &request, &claims, s))?;
        let info = self.flight_info(&schema, &claims, request.into_inner())?;
        Ok(Response::new(info))
    }

    pub(super) async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<BoxStream<FlightData>>, Status> {
        let caller = self.caller(request.metadata())?;
        let claims = self
            .signer
            .check_handle(&ticket.statement_handle, &caller.0.user)?;
        self.run(caller, claims, client_addr(&request)).await
    }

    pub(super) async fn get_flight_info_substrait_plan(
        &self,
        _query: CommandStatementSubstraitPlan,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(request.metadata())?;
        Err(Status::unimplemented(
            "meshql takes SQL, not Substrait plans",
        ))
    }

    pub(super) async fn do_put_statement_update(
        &self,
        _ticket: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.caller(request.metadata())?;
        Err(read_only("an update statement"))
    }

    pub(super) async fn do_put_statement_ingest(
        &self,
        _ticket: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.caller(request.metadata())?;
        Err(read_only("bulk ingestion"))
    }

    pub(super) async fn do_put_substrait_plan(
        &self,
        _ticket: CommandStatementSubstraitPlan,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.caller(request.metadata())?;
        Err(Status::unimplemented(
            "meshql takes SQL, not Substrait plans",
        ))
    }

    pub(super) async fn do_action_begin_transaction(
        &self,
        _query: ActionBeginTransactionRequest,
        request: Request<Action>,
    ) -> Result<ActionBeginTransactionResult, Status> {
        self.caller(request.metadata())?;
        Err(no_transactions())
    }

    pub(super) async fn do_action_end_transaction(
        &self,
        _query: ActionEndTransactionRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        self.caller(request.metadata())?;
        Err(no_transactions())
    }

    pub(super) async fn do_action_begin_savepoint(
        &self,
        _query: ActionBeginSavepointRequest,
        request: Request<Action>,
    ) -> Result<ActionBeginSavepointResult, Status> {
        self.caller(request.metadata())?;
        Err(no_transactions())
    }

    pub(super) async fn do_action_end_savepoint(
        &self,
        _query: ActionEndSavepointRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        self.caller(request.metadata())?;
        Err(no_transactions())
    }

    pub(super) async fn do_action_cancel_query(
        &self,
        query: ActionCancelQueryRequest,
        request: Request<Action>,
    ) -> Result<ActionCancelQueryResult, Status> {
        let (principal, _) = self.caller(request.metadata())?;
        let info = FlightInfo::decode(&*query.info)
            .map_err(|_| Status::invalid_argument("the FlightInfo to cancel is not valid"))?;
        self.cancel(&info, &principal.user)?;
        Ok(ActionCancelQueryResult {
            // CANCEL_RESULT_CANCELLED
            result: 1,
        })
    }

    /// Runs a ticket's statement and streams its results.
    pub(super) async fn run(
        &self,
        caller: Caller,
        claims: HandleClaims,
        client: Option<String>,
    ) -> Result<Response<BoxStream<FlightData>>, Status> {
        let params = match decode_params(claims.p.as_deref()) {
            Ok(p) => p,
            Err(status) => {
                let mut guard = AuditGuard::new(
                    self.audit.clone(),
                    AuditRecord::start(SystemTime::now(), &claims.id, &caller.0, client, &claims.q),
                );
                guard.fail(outcome(&status));
                return Err(status);
            }
        };
        self.run_with(caller, claims, client, params).await
    }

    /// [`Self::run`] with the parameter values decoded (or given by another
    /// protocol).
    pub(crate) async fn run_with(
        &self,
        caller: Caller,
        claims: HandleClaims,
        client: Option<String>,
        params: Option<ParamValues>,
    ) -> Result<Response<BoxStream<FlightData>>, Status> {
        let (principal, session) = caller;
        let session = Self::statement_session(&session, &claims);
        let id = claims.id.clone();
        tracing::Span::current().record("query_id", id.as_str());
        let mut guard = AuditGuard::new(
            self.audit.clone(),
            AuditRecord::start(SystemTime::now(), &id, &principal, client, &claims.q),
        );
        let early = self
            .cancelled_early
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        if early.is_some() {
            guard.fail(Outcome::Cancelled);
            return Err(Status::cancelled("the query was cancelled"));
        }
        let permit = match self.slots(&principal.user).await {
            Ok(p) => p,
            Err(status) => {
                guard.fail(outcome(&status));
                return Err(status);
            }
        };
        let options = self.query_options(params);
        let deadline = self
            .options
            .query_timeout
            .map(|t| (tokio::time::Instant::now() + t, t));
        // A small statement is planned where the call is answered, as it is
        // described (quick and shallow, see `meshql::is_small_statement`);
        // others are planned on the query runtime. Every statement runs
        // there; batches come back through a channel of eight, so a slow
        // client holds up its own query only. The plan GetFlightInfo kept
        // for this ticket is run as it is; without one, the statement is
        // planned now.
        let kept = self.planned.take(&id, &principal);
        let inline = if kept.is_some() {
            kept
        } else if meshql::is_small_statement(&claims.q) {
            match answered_here(session.plan(&claims.q, &options), &id, "planning").await {
                Ok(q) => Some(q),
                Err(e) => {
                    guard.fail(Outcome::from_error(&e));
                    return Err(to_status(&e, &id));
                }
            }
        } else {
            None
        };
        let inline_access = inline.as_ref().map(|q| (q.access.clone(), q.replanned()));
        let (planned_tx, planned_rx) = tokio::sync::oneshot::channel();
        let (batches_tx, batches_rx) = tokio::sync::mpsc::channel(8);
        let task = {
            let session = Arc::clone(&session);
            let sql = claims.q.clone();
            self.executor.spawn(&principal.user, async move {
                let planned_inline = inline.is_some();
                let query = match inline {
                    Some(q) => Ok(q),
                    None => session.plan(&sql, &options).await,
                };
                let stream = query.and_then(|q| {
                    let stream = q.execute()?;
                    Ok((q.access.clone(), q.replanned(), q.schema.clone(), stream))
                });
                let (schema, stream) = match stream {
                    Ok((access, replanned, schema, stream)) => {
                        if !planned_inline && planned_tx.send(Ok((access, replanned))).is_err() {
                            return;
                        }
                        (schema, stream)
                    }
                    // Nobody waits for the plan of a statement planned
                    // inline: its failure to start ends its stream.
                    Err(e) if planned_inline => {
                        let e = match e {
                            meshql::Error::Execution(e) => e,
                            other => datafusion::error::DataFusionError::External(Box::new(other)),
                        };
                        let _ = batches_tx.send(Item::Failed(e)).await;
                        return;
                    }
                    Err(e) => {
                        let _ = planned_tx.send(Err(e));
                        return;
                    }
                };
                // Cut to size and encoded here, on the query's threads,
                // while each batch is still in the cache of the core that
                // made it; the serving runtime only passes the messages on.
                let pieces = stream
                    .map_ok(|batch| {
                        let mut pieces = Vec::new();
                        sized_for_grpc(batch, MESSAGE_BYTES, &mut pieces);
                        futures::stream::iter(
                            pieces
                                .into_iter()
                                .map(Ok::<_, datafusion::error::DataFusionError>),
                        )
                    })
                    .try_flatten()
                    .map_err(|e: datafusion::error::DataFusionError| {
                        FlightError::ExternalError(Box::new(e))
                    });
                // The encoder, which would cut again by the size of the
                // buffers a slice shares, leaves the pieces whole.
                let mut encoded = FlightDataEncoderBuilder::new()
                    .with_schema(schema)
                    .with_max_flight_data_size(usize::MAX)
                    .build(pieces);
                while let Some(item) = encoded.next().await {
                    let item = match item {
                        Ok(data) => {
                            let rows = message_rows(&data);
                            Item::Data(data, rows)
                        }
                        Err(e) => Item::Failed(engine_error(e)),
                    };
                    let failed = matches!(item, Item::Failed(_));
                    if batches_tx.send(item).await.is_err() || failed {
                        return;
                    }
                }
                let _ = batches_tx.send(Item::Done).await;
            })
        };
        let planned = match inline_access {
            Some(access) => Ok(access),
            None => tokio::select! {
                planned = planned_rx => match planned {
                    Ok(planned) => planned,
                    Err(_) => Err(meshql::Error::Execution(
                        datafusion::error::DataFusionError::Internal("the query stopped while it was planned".into()),
                    )),
                },
                _ = until(deadline) => Err(timed_out(deadline)),
            },
        };
        let (access, replanned) = match planned {
            Ok(p) => p,
            Err(e) => {
                guard.fail(Outcome::from_error(&e));
                return Err(to_status(&e, &id));
            }
        };
        guard.record.products = access;
        guard.replanned = replanned;
        let (cancel_tx, cancel_rx) = watch::channel(false);
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), cancel_tx);
        let run = Run {
            batches: batches_rx,
            _task: task,
            session,
            sql: claims.q,
            id: id.clone(),
            deadline,
            cancel: cancel_rx,
            rows: Arc::clone(&guard.rows),
            max_rows: self.options.max_result_rows,
            state: Arc::clone(&guard.state),
            done: false,
            _permit: permit,
            _registration: Registration {
                running: Arc::clone(&self.running),
                id,
            },
        };
        let encoded = futures::stream::unfold(run, Run::next).map(move |item| {
            guard.observe(&item);
            item
        });
        Ok(Response::new(Box::pin(encoded)))
    }

    /// `CancelFlightInfo` and the older `CancelQuery`: stops the query a
    /// FlightInfo's ticket runs.
    #[allow(clippy::result_large_err)]
    pub(super) fn cancel(&self, info: &FlightInfo, user: &str) -> Result<CancelStatus, Status> {
        let ticket = info
            .endpoint
            .first()
            .and_then(|e| e.ticket.as_ref())
            .ok_or_else(|| Status::invalid_argument("the FlightInfo to cancel has no ticket"))?;
        let any = Any::decode(&*ticket.ticket).map_err(|_| {
            Status::invalid_argument("the ticket to cancel is not a Flight SQL ticket")
        })?;
        let ticket: TicketStatementQuery =
            any.unpack().ok().flatten().ok_or_else(|| {
                Status::invalid_argument("only statement queries can be cancelled")
            })?;
        let claims = self.signer.check_handle(&ticket.statement_handle, user)?;
        let sender = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&claims.id)
            .cloned();
        match sender {
            Some(tx) => {
                let _ = tx.send(true);
                tracing::info!(query_id = claims.id, "query cancelled");
                Ok(CancelStatus::Cancelled)
            }
            None => {
                let mut early = self
                    .cancelled_early
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                early.retain(|_, at| at.elapsed() < self.options.token_ttl);
                early.insert(claims.id, Instant::now());
                Ok(CancelStatus::Cancelled)
            }
        }
    }
}

/// Removes a query from the running set when its stream ends or is dropped.
struct Registration {
    running: Arc<Mutex<HashMap<String, watch::Sender<bool>>>>,
    id: String,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

/// What the query runtime sends of a running query.
enum Item {
    /// An encoded message and the number of rows it carries.
    Data(FlightData, u64),
    Failed(datafusion::error::DataFusionError),
    /// The last batch was sent. A channel that closes without it belongs to
    /// a query that panicked.
    Done,
}

/// The most a batch sent as one gRPC message may carry. gRPC clients refuse
/// messages over 4 MiB unless told otherwise, and the Flight encoder cuts a
/// batch into pieces of equal row counts, which for rows of very different
/// sizes (the plan rows of `EXPLAIN VERBOSE`) leaves a piece over the limit;
/// so batches are cut by the bytes of their rows first.
const MESSAGE_BYTES: usize = 3 * 1024 * 1024;

/// The size pieces are cut to when a batch is over [`MESSAGE_BYTES`]: the
/// Flight encoder's own target.
const PIECE_BYTES: usize = 2 * 1024 * 1024;

/// Cuts `batch` into row ranges of at most `max` bytes each (a single row
/// larger than that stays whole) and appends them to `out`. A batch whose
/// buffers are within `max` is passed on as it is, without measuring rows.
fn sized_for_grpc(batch: RecordBatch, max: usize, out: &mut Vec<RecordBatch>) {
    let buffers: usize = batch
        .columns()
        .iter()
        .map(|c| c.get_buffer_memory_size())
        .sum();
    if buffers <= max || batch.num_rows() <= 1 {
        out.push(batch);
        return;
    }
    cut(batch, max, max.min(PIECE_BYTES), out);

    /// The bytes of the rows a (sliced) batch holds, not of the buffers it
    /// shares with the batch it was sliced from.
    fn bytes(batch: &RecordBatch) -> usize {
        batch
            .columns()
            .iter()
            .map(|c| {
                c.to_data()
                    .get_slice_memory_size()
                    .unwrap_or_else(|_| c.get_buffer_memory_size())
            })
            .sum()
    }

    /// Equal row counts of about `target` bytes, as the encoder would cut,
    /// then each piece still over `max` (rows of uneven sizes) cut again.
    fn cut(batch: RecordBatch, max: usize, target: usize, out: &mut Vec<RecordBatch>) {
        let rows = batch.num_rows();
        let size = bytes(&batch);
        if rows <= 1 || size <= max {
            out.push(batch);
            return;
        }
        let per = rows.div_ceil(size.div_ceil(target).clamp(2, rows));
        let mut offset = 0;
        while offset < rows {
            let len = per.min(rows - offset);
            cut(batch.slice(offset, len), max, target, out);
            offset += len;
        }
    }
}

/// The rows an encoded message carries: those of a record batch message,
/// none for the schema and dictionaries.
fn message_rows(data: &FlightData) -> u64 {
    arrow::ipc::root_as_message(&data.data_header)
        .ok()
        .and_then(|m| m.header_as_record_batch())
        .map_or(0, |b| b.length().max(0) as u64)
}

/// The engine's error behind an encoder's, so that it is explained as the
/// engine's errors are.
fn engine_error(e: FlightError) -> datafusion::error::DataFusionError {
    use datafusion::error::DataFusionError;
    match e {
        FlightError::ExternalError(e) => match e.downcast::<DataFusionError>() {
            Ok(e) => *e,
            Err(e) => DataFusionError::External(e),
        },
        FlightError::Arrow(e) => DataFusionError::from(e),
        other => DataFusionError::External(Box::new(other)),
    }
}

/// Resolves at the deadline, never without one.
async fn until(deadline: Option<(tokio::time::Instant, std::time::Duration)>) {
    match deadline {
        Some((at, _)) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn timed_out(deadline: Option<(tokio::time::Instant, std::time::Duration)>) -> meshql::Error {
    let limit = deadline.map(|d| d.1).unwrap_or_default();
    meshql::Error::ResourcesExhausted(format!(
        "the query ran longer than its limit of {limit:?} and was stopped"
    ))
}

/// The error of a query whose work panicked or was stopped: the query
/// fails, the server goes on.
pub(super) fn crashed(id: &str, e: &tokio::task::JoinError) -> meshql::Error {
    tracing::error!(query_id = id, error = %e, "the query's work stopped");
    meshql::Error::Execution(datafusion::error::DataFusionError::Internal(format!(
        "the query's work stopped: {e}"
    )))
}

/// One running query: its batches, under the server's limits.
struct Run {
    batches: tokio::sync::mpsc::Receiver<Item>,
    /// The query's work; dropping the run aborts it.
    _task: QueryTask<()>,
    session: Arc<Session>,
    sql: String,
    id: String,
    deadline: Option<(tokio::time::Instant, std::time::Duration)>,
    cancel: watch::Receiver<bool>,
    rows: Arc<AtomicU64>,
    max_rows: Option<u64>,
    state: Arc<Mutex<RunState>>,
    done: bool,
    _permit: (OwnedSemaphorePermit, OwnedSemaphorePermit),
    _registration: Registration,
}

#[derive(Default)]
pub(super) struct RunState {
    pub(super) finished: bool,
    pub(super) outcome: Option<Outcome>,
}

impl Run {
    async fn next(mut self) -> Option<(Result<FlightData, Status>, Self)> {
        if self.done {
            return None;
        }
        let deadline = self.deadline;
        // A batch that is ready is taken at once: the deadline and the
        // cancel flag are read, not waited for, and no timer is set.
        let cancelled = *self.cancel.borrow();
        let late = deadline.is_some_and(|(at, _)| tokio::time::Instant::now() >= at);
        let ready = if cancelled || late {
            None
        } else {
            match self.batches.try_recv() {
                Ok(item) => Some(Some(item)),
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => Some(None),
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => None,
            }
        };
        let result = match ready {
            Some(item) => self.take(item),
            None => {
                let sleep = async move {
                    match deadline {
                        Some((at, _)) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                };
                let mut cancel = self.cancel.clone();
                tokio::select! {
                    biased;
                    _ = cancel.wait_for(|c| *c) => {
                        Err((Status::cancelled("the query was cancelled"), Outcome::Cancelled))
                    }
                    _ = sleep => {
                        let e = timed_out(deadline);
                        Err((to_status(&e, &self.id), Outcome::from_error(&e)))
                    }
                    next = self.batches.recv() => self.take(next),
                }
            }
        };
        match result {
            Ok(Some(data)) => Some((Ok(data), self)),
            Ok(None) => None,
            Err((status, o)) => {
                self.done = true;
                self.lock().outcome = Some(o);
                Some((Err(status), self))
            }
        }
    }

    /// What one item from the query runtime means: a batch to send, the end
    /// (`None`), or the error that ends the stream.
    fn take(&mut self, item: Option<Item>) -> Result<Option<FlightData>, (Status, Outcome)> {
        match item {
            Some(Item::Done) => {
                self.lock().finished = true;
                Ok(None)
            }
            None => {
                let e = meshql::Error::Execution(datafusion::error::DataFusionError::Internal(
                    "the query's work stopped before its end".into(),
                ));
                tracing::error!(
                    query_id = self.id,
                    "the query's work stopped before its end"
                );
                Err((to_status(&e, &self.id), Outcome::from_error(&e)))
            }
            Some(Item::Data(data, rows)) => self.deliver(data, rows),
            Some(Item::Failed(e)) => {
                let e = self.session.explain(&self.sql, e);
                Err((to_status(&e, &self.id), Outcome::from_error(&e)))
            }
        }
    }

    /// One message to send, within the server's limit of result rows.
    fn deliver(
        &mut self,
        data: FlightData,
        rows: u64,
    ) -> Result<Option<FlightData>, (Status, Outcome)> {
        let total = self.rows.fetch_add(rows, Ordering::Relaxed) + rows;
        match self.max_rows {
            Some(max) if total > max => {
                let s = Status::resource_exhausted(format!(
                    "the result has more than {max} rows, the server's limit; add a LIMIT or aggregate"
                ));
                let o = outcome(&s);
                Err((s, o))
            }
            _ => Ok(Some(data)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RunState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_cut_by_the_bytes_of_their_rows() {
        use arrow::array::StringArray;
        use arrow_flight::encode::FlightDataEncoderBuilder;
        // Forty small rows and one of a megabyte: cut by row count, as the
        // Flight encoder does, the piece with the big row would be over.
        let mut values: Vec<String> = (0..40).map(|i| format!("row {i}")).collect();
        values.insert(17, "x".repeat(1 << 20));
        values.insert(30, "y".repeat(600 << 10));
        let schema = Arc::new(Schema::new(vec![arrow::datatypes::Field::new(
            "plan",
            arrow::datatypes::DataType::Utf8,
            false,
        )]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(values.clone()))])
            .expect("batch");
        let max = 512 << 10;
        let mut pieces = Vec::new();
        sized_for_grpc(batch.clone(), max, &mut pieces);
        assert!(pieces.len() > 2, "{} pieces", pieces.len());
        let rows: Vec<String> = pieces
            .iter()
            .flat_map(|p| {
                let a = p
                    .column(0)
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .expect("strings");
                a.iter()
                    .map(|v| v.expect("value").to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(rows, values, "every row once, in order");
        // Encoded as the server encodes them, each piece is one message
        // within the limit, or the one row that is larger by itself.
        for piece in pieces {
            let rows = piece.num_rows();
            let encoded = futures::executor::block_on(
                FlightDataEncoderBuilder::new()
                    .with_max_flight_data_size(usize::MAX)
                    .build(futures::stream::once(async move { Ok(piece) }))
                    .map(|d| d.expect("encodes"))
                    .collect::<Vec<_>>(),
            );
            let body: Vec<usize> = encoded
                .iter()
                .map(|d| d.data_body.len())
                .filter(|l| *l > 0)
                .collect();
            assert_eq!(body.len(), 1, "one message per piece");
            assert!(
                rows == 1 || body[0] <= max,
                "{rows} rows in a message of {} bytes",
                body[0]
            );
        }
        // A batch within the limit is passed on whole.
        let mut whole = Vec::new();
        sized_for_grpc(batch.slice(0, 10), usize::MAX, &mut whole);
        assert_eq!(whole.len(), 1);
    }
}
