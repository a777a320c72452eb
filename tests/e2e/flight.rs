//! The Flight SQL server over the wire: a real tonic server on 127.0.0.1
//! and arrow-flight's Flight SQL client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetCrossReference,
    CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys, CommandGetPrimaryKeys,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandGetXdbcTypeInfo,
    CommandPreparedStatementQuery, CommandStatementQuery, CommandStatementUpdate,
    DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
};
use arrow_flight::{
    Action, CancelFlightInfoRequest, CancelFlightInfoResult, FlightData, FlightDescriptor,
    FlightInfo, HandshakeRequest, Ticket,
};
use base64::Engine;
use futures::{StreamExt, TryStreamExt};
use meshql::Mesh;
use meshql_server::ServerOptions;
use prost::Message;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use crate::util::*;

pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub(crate) async fn start(mesh: Mesh, options: ServerOptions) -> TestServer {
    start_with(mesh, options, None).await
}

pub(crate) async fn start_with(
    mesh: Mesh,
    options: ServerOptions,
    tls: Option<meshql_server::Tls>,
) -> TestServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
        };
        meshql_server::serve(
            listener,
            mesh,
            options,
            tls,
            shutdown,
            Duration::from_secs(1),
        )
        .await
        .expect("serves");
    });
    TestServer {
        addr,
        stop: Some(stop),
    }
}

pub(crate) async fn demo_server() -> TestServer {
    start(demo_mesh(), ServerOptions::default()).await
}

pub(crate) async fn channel(addr: SocketAddr) -> FlightServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connects");
    FlightServiceClient::new(channel)
}

/// A logged-in client that keeps gRPC status codes.
pub(crate) struct Wire {
    pub(crate) inner: FlightServiceClient<Channel>,
    pub(crate) auth: String,
}

pub(crate) fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

pub(crate) async fn login(addr: SocketAddr, user: &str, password: &str) -> Result<Wire, Status> {
    let mut inner = channel(addr).await;
    let mut req = Request::new(futures::stream::iter([HandshakeRequest::default()]));
    req.metadata_mut().insert(
        "authorization",
        basic(user, password).parse().expect("header"),
    );
    let resp = inner.handshake(req).await?;
    let auth = resp
        .metadata()
        .get("authorization")
        .expect("a bearer token header")
        .to_str()
        .expect("text")
        .to_string();
    let payload: Vec<_> = resp.into_inner().try_collect().await?;
    assert_eq!(
        format!("Bearer {}", String::from_utf8_lossy(&payload[0].payload)),
        auth,
        "the token is in the header and the payload"
    );
    Ok(Wire { inner, auth })
}

pub(crate) async fn demo_login(addr: SocketAddr, user: &str) -> Wire {
    login(addr, user, &format!("{user}-demo"))
        .await
        .expect("logs in")
}

impl Wire {
    pub(crate) fn req<T>(&self, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        req.metadata_mut()
            .insert("authorization", self.auth.parse().expect("header"));
        req
    }

    pub(crate) async fn info(&mut self, cmd: impl ProstMessageExt) -> Result<FlightInfo, Status> {
        let desc = FlightDescriptor::new_cmd(cmd.as_any().encode_to_vec());
        let req = self.req(desc);
        Ok(self.inner.get_flight_info(req).await?.into_inner())
    }

    pub(crate) async fn stream(
        &mut self,
        ticket: Ticket,
    ) -> Result<FlightRecordBatchStream, Status> {
        let req = self.req(ticket);
        let stream = self.inner.do_get(req).await?.into_inner();
        Ok(FlightRecordBatchStream::new_from_flight_data(
            stream.map_err(FlightError::from),
        ))
    }

    pub(crate) async fn fetch(&mut self, info: &FlightInfo) -> Result<Vec<RecordBatch>, Status> {
        let ticket = info.endpoint[0].ticket.clone().expect("ticket");
        let stream = self.stream(ticket).await?;
        stream.try_collect().await.map_err(status)
    }

    pub(crate) async fn sql(&mut self, sql: &str) -> Result<Vec<RecordBatch>, Status> {
        let info = self
            .info(CommandStatementQuery {
                query: sql.into(),
                transaction_id: None,
            })
            .await?;
        self.fetch(&info).await
    }

    async fn command(&mut self, cmd: impl ProstMessageExt) -> Result<Vec<RecordBatch>, Status> {
        let info = self.info(cmd).await?;
        self.fetch(&info).await
    }

    pub(crate) async fn action(
        &mut self,
        kind: &str,
        body: Vec<u8>,
    ) -> Result<Vec<Vec<u8>>, Status> {
        let req = self.req(Action {
            r#type: kind.into(),
            body: body.into(),
        });
        let results: Vec<_> = self
            .inner
            .do_action(req)
            .await?
            .into_inner()
            .try_collect()
            .await?;
        Ok(results.into_iter().map(|r| r.body.to_vec()).collect())
    }

    async fn prepare(&mut self, sql: &str) -> Result<ActionCreatePreparedStatementResult, Status> {
        let body = ActionCreatePreparedStatementRequest {
            query: sql.into(),
            transaction_id: None,
        }
        .as_any()
        .encode_to_vec();
        let out = self.action("CreatePreparedStatement", body).await?;
        let any = Any::decode(&*out[0]).expect("any");
        Ok(any.unpack().expect("unpacks").expect("a result"))
    }

    /// Binds one row of parameters; returns the handle to execute.
    async fn bind(&mut self, handle: &[u8], params: RecordBatch) -> Result<Vec<u8>, Status> {
        let cmd = CommandPreparedStatementQuery {
            prepared_statement_handle: handle.to_vec().into(),
        };
        let data: Vec<FlightData> = FlightDataEncoderBuilder::new()
            .with_flight_descriptor(Some(FlightDescriptor::new_cmd(
                cmd.as_any().encode_to_vec(),
            )))
            .build(futures::stream::iter([Ok(params)]))
            .try_collect()
            .await
            .expect("encodes");
        let req = self.req(futures::stream::iter(data));
        let mut results = self.inner.do_put(req).await?.into_inner();
        let first = results.message().await?.expect("a put result");
        let result = DoPutPreparedStatementResult::decode(&*first.app_metadata).expect("decodes");
        Ok(result
            .prepared_statement_handle
            .map(|h| h.to_vec())
            .unwrap_or_else(|| handle.to_vec()))
    }

    async fn execute_prepared(&mut self, handle: &[u8]) -> Result<Vec<RecordBatch>, Status> {
        self.command(CommandPreparedStatementQuery {
            prepared_statement_handle: handle.to_vec().into(),
        })
        .await
    }
}

pub(crate) fn status(e: FlightError) -> Status {
    match e {
        FlightError::Tonic(s) => *s,
        other => Status::unknown(other.to_string()),
    }
}

pub(crate) fn strings(batches: &[RecordBatch], column: &str) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        let i = b.schema().index_of(column).expect("column");
        let a = arrow::compute::cast(b.column(i), &DataType::Utf8).expect("cast");
        let a = a.as_any().downcast_ref::<StringArray>().expect("strings");
        out.extend((0..a.len()).map(|r| a.value(r).to_string()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn governed_results_over_the_wire_equal_the_embedded_library_for_every_demo_principal() {
    governed_results_over_the_wire(&demo_server().await).await;
}

/// What each demo principal gets from `server` equals what the embedded
/// library gives it, and the masks and row filters are there. (Also run
/// against a coordinator with workers, in `cluster`.)
pub(crate) async fn governed_results_over_the_wire(server: &TestServer) {
    let mesh = demo_mesh();
    let queries = [
        "SELECT customer_id, email, region FROM customers.customers ORDER BY customer_id LIMIT 20",
        "SELECT region, count(*) AS n FROM sales.orders GROUP BY region ORDER BY region",
        "SELECT transaction_id, amount, card_number FROM payments.transactions ORDER BY transaction_id LIMIT 10",
    ];
    for user in ["admin", "analyst", "eu_analyst", "finance", "guest"] {
        let mut wire = demo_login(server.addr, user).await;
        let session = mesh.session(mesh.principal(user).expect("principal"));
        for sql in queries {
            let embedded = session.collect(sql).await;
            let remote = wire.sql(sql).await;
            match (embedded, remote) {
                (Ok(e), Ok(r)) => assert_eq!(rows(&e), rows(&r), "{user}: {sql}"),
                (Err(e), Err(r)) => {
                    assert_eq!(r.code(), Code::NotFound, "{user}: {sql}: {r}");
                    assert_eq!(r.message(), e.to_string(), "{user}: {sql}");
                }
                (e, r) => panic!("{user}: {sql}: embedded {e:?}, remote {r:?}"),
            }
        }
    }
    // And the governance is really there, not just equal.
    let mut analyst = demo_login(server.addr, "analyst").await;
    let emails = strings(
        &analyst
            .sql("SELECT email FROM customers.customers LIMIT 50")
            .await
            .expect("runs"),
        "email",
    );
    assert!(
        emails.iter().all(|e| e.contains("***@") && e.len() > 5),
        "{emails:?}"
    );
    let mut eu = demo_login(server.addr, "eu_analyst").await;
    let regions = strings(
        &eu.sql("SELECT DISTINCT region FROM sales.orders")
            .await
            .expect("runs"),
        "region",
    );
    assert_eq!(regions, vec!["EU"]);
    let mut finance = demo_login(server.addr, "finance").await;
    let cards = strings(
        &finance
            .sql("SELECT card_number FROM payments.transactions LIMIT 20")
            .await
            .expect("runs"),
        "card_number",
    );
    assert!(
        cards.iter().all(|c| {
            let (stars, last) = c.split_at(c.len() - 4);
            stars.len() >= 8
                && stars.chars().all(|x| x == '*')
                && last.chars().all(|x| x.is_ascii_digit())
        }),
        "{cards:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_and_missing_products_fail_alike_with_not_found() {
    hidden_and_missing_products_fail_alike(&demo_server().await).await;
}

/// A product hidden from guest and one that does not exist give `server`'s
/// guest the same error. (Also run against a coordinator with workers.)
pub(crate) async fn hidden_and_missing_products_fail_alike(server: &TestServer) {
    let mut guest = demo_login(server.addr, "guest").await;
    let hidden = guest
        .sql("SELECT * FROM payments.transactions")
        .await
        .expect_err("hidden");
    let missing = guest
        .sql("SELECT * FROM payments.refunds")
        .await
        .expect_err("missing");
    assert_eq!(hidden.code(), Code::NotFound);
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(
        hidden.message().replace("transactions", "X"),
        missing.message().replace("refunds", "X")
    );
    let syntax = guest.sql("SELEC 1").await.expect_err("syntax");
    assert_eq!(syntax.code(), Code::InvalidArgument);
    let column = guest
        .sql("SELECT ordr_id FROM sales.orders")
        .await
        .expect_err("unknown column");
    assert_eq!(column.code(), Code::InvalidArgument);
    assert!(column.message().contains("line 1, column 8"), "{column}");
    let ddl = guest
        .sql("DROP TABLE sales.orders")
        .await
        .expect_err("read-only");
    assert_eq!(ddl.code(), Code::PermissionDenied, "{ddl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_is_required_and_checked() {
    let server = start(
        demo_mesh(),
        ServerOptions {
            token_ttl: Duration::from_secs(1),
            ..ServerOptions::default()
        },
    )
    .await;
    let wrong = login(server.addr, "analyst", "nope")
        .await
        .err()
        .expect("refused");
    assert_eq!(wrong.code(), Code::Unauthenticated);
    let unknown = login(server.addr, "mallory", "x")
        .await
        .err()
        .expect("refused");
    assert_eq!(unknown.code(), Code::Unauthenticated);
    assert_eq!(
        wrong.message(),
        unknown.message(),
        "no hint which part was wrong"
    );

    // No credentials at all.
    let mut anonymous = channel(server.addr).await;
    let desc = FlightDescriptor::new_cmd(CommandGetCatalogs {}.as_any().encode_to_vec());
    let err = anonymous.get_flight_info(desc).await.expect_err("refused");
    assert_eq!(err.code(), Code::Unauthenticated);

    // A made-up bearer token.
    let mut forged = Wire {
        inner: channel(server.addr).await,
        auth: "Bearer mqt1.eyJ1IjoiYWRtaW4iLCJleHAiOjQxMDI0NDQ4MDAsIm4iOiIxIn0.AAAA".into(),
    };
    let err = forged.sql("SELECT 1").await.expect_err("refused");
    assert_eq!(err.code(), Code::Unauthenticated);

    // Basic credentials on a call work too.
    let mut direct = Wire {
        inner: channel(server.addr).await,
        auth: basic("analyst", "analyst-demo"),
    };
    assert_eq!(
        rows(&direct.sql("SELECT 1 AS one").await.expect("runs")),
        vec![vec!["1"]]
    );

    // Tokens expire.
    let mut analyst = demo_login(server.addr, "analyst").await;
    analyst.sql("SELECT 1").await.expect("fresh token works");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let err = analyst.sql("SELECT 1").await.expect_err("expired");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("expired"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_and_prepared_handles_cannot_be_forged_or_shared() {
    let server = demo_server().await;
    let mut analyst = demo_login(server.addr, "analyst").await;
    let mut guest = demo_login(server.addr, "guest").await;

    let info = analyst
        .info(CommandStatementQuery {
            query: "SELECT email FROM customers.customers LIMIT 5".into(),
            transaction_id: None,
        })
        .await
        .expect("plans");
    let err = guest.fetch(&info).await.expect_err("not guest's ticket");
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    assert_eq!(
        analyst.fetch(&info).await.expect("own ticket")[0].num_rows(),
        5
    );

    let prepared = analyst
        .prepare("SELECT order_id FROM sales.orders LIMIT 3")
        .await
        .expect("prepares");
    let handle = prepared.prepared_statement_handle.to_vec();
    let err = guest
        .execute_prepared(&handle)
        .await
        .expect_err("not guest's");
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    let close = ActionClosePreparedStatementRequest {
        prepared_statement_handle: handle.clone().into(),
    };
    let err = guest
        .action("ClosePreparedStatement", close.as_any().encode_to_vec())
        .await
        .expect_err("not guest's");
    assert_eq!(err.code(), Code::PermissionDenied);

    // Tampered: one byte of the handle changed.
    let mut tampered = handle.clone();
    let i = tampered.len() / 2;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let err = analyst
        .execute_prepared(&tampered)
        .await
        .expect_err("forged");
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = analyst
        .execute_prepared(b"SELECT * FROM payments.transactions")
        .await
        .expect_err("forged");
    assert_eq!(err.code(), Code::PermissionDenied);
    let forged_ticket = Ticket::new(
        arrow_flight::sql::TicketStatementQuery {
            statement_handle: b"mqh1.e30.AAAA".to_vec().into(),
        }
        .as_any()
        .encode_to_vec(),
    );
    let err = match analyst.stream(forged_ticket).await {
        Err(e) => e,
        Ok(s) => s
            .try_collect::<Vec<_>>()
            .await
            .map_err(status)
            .expect_err("forged"),
    };
    assert_eq!(err.code(), Code::PermissionDenied);

    // The owner can run and close it.
    assert_eq!(
        analyst.execute_prepared(&handle).await.expect("runs")[0].num_rows(),
        3
    );
    analyst
        .action("ClosePreparedStatement", close.as_any().encode_to_vec())
        .await
        .expect("closes");
}

/// The time `SELECT now()` answered, in nanoseconds since 1970: fixed when
/// the statement is planned.
fn planned_at(batches: &[RecordBatch]) -> i64 {
    let column = batches[0].column(0);
    column
        .as_any()
        .downcast_ref::<arrow::array::TimestampNanosecondArray>()
        .unwrap_or_else(|| panic!("a timestamp, not {}", column.data_type()))
        .value(0)
}

fn nanos_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_is_planned_once_and_its_ticket_stays_stateless() {
    let server = demo_server().await;
    let mut admin = demo_login(server.addr, "admin").await;
    let mut guest = demo_login(server.addr, "guest").await;
    let now = CommandStatementQuery {
        query: "SELECT now() AS t".into(),
        transaction_id: None,
    };
    let info = admin.info(now.clone()).await.expect("plans");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Someone else's DoGet of the ticket is refused and leaves the plan be.
    let err = guest.fetch(&info).await.expect_err("not guest's ticket");
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    let before_first = nanos_now();
    let first = planned_at(&admin.fetch(&info).await.expect("runs"));
    assert!(
        first < before_first - 200_000_000,
        "the DoGet ran the plan GetFlightInfo made: now() is of the planning, {} ms before the fetch",
        (before_first - first) / 1_000_000
    );
    // The plan was taken; the same ticket fetched again plans anew.
    let before_second = nanos_now();
    let second = planned_at(&admin.fetch(&info).await.expect("runs again"));
    assert!(
        second >= before_second - 5_000_000,
        "a second fetch plans again: {} ms before it",
        (before_second - second) / 1_000_000
    );

    // Kept plans answer as the principal who planned them: eu_analyst's
    // row filter holds in the plan GetFlightInfo made, and admin's plan of
    // the same statement sees every region.
    let mut eu = demo_login(server.addr, "eu_analyst").await;
    let outside = CommandStatementQuery {
        query: "SELECT count(*) AS n FROM customers.customers WHERE region <> 'EU'".into(),
        transaction_id: None,
    };
    let count = |batches: Vec<RecordBatch>| {
        batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("count")
            .value(0)
    };
    let eu_info = eu.info(outside.clone()).await.expect("plans");
    let admin_info = admin.info(outside).await.expect("plans");
    assert_eq!(count(eu.fetch(&eu_info).await.expect("runs")), 0);
    assert!(count(admin.fetch(&admin_info).await.expect("runs")) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_bind_parameters() {
    let server = demo_server().await;
    let mesh = demo_mesh();
    let mut eu = demo_login(server.addr, "eu_analyst").await;
    let sql = "SELECT order_id, region FROM sales.orders WHERE region = ? AND order_id < ? ORDER BY order_id";
    let prepared = eu.prepare(sql).await.expect("prepares");
    let params = Schema::try_from(arrow_flight::IpcMessage(prepared.parameter_schema.clone()))
        .expect("parameter schema");
    assert_eq!(params.fields().len(), 2, "{params:?}");
    let dataset = Schema::try_from(arrow_flight::IpcMessage(prepared.dataset_schema.clone()))
        .expect("dataset schema");
    assert_eq!(
        dataset
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect::<Vec<_>>(),
        ["order_id", "region"]
    );

    // Unbound: a clear error.
    let err = eu
        .execute_prepared(&prepared.prepared_statement_handle)
        .await
        .expect_err("unbound");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("2 parameter"), "{err}");

    let bind = |region: &str, below: i64| {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("region", DataType::Utf8, true),
                Field::new("below", DataType::Int64, true),
            ])),
            vec![
                Arc::new(StringArray::from(vec![region])) as ArrayRef,
                Arc::new(Int64Array::from(vec![below])),
            ],
        )
        .expect("batch")
    };
    let session = mesh.session(mesh.principal("eu_analyst").expect("principal"));
    for (region, below) in [("EU", 100_200), ("NA", 105_000)] {
        let handle = eu
            .bind(&prepared.prepared_statement_handle, bind(region, below))
            .await
            .expect("binds");
        let remote = eu.execute_prepared(&handle).await.expect("runs");
        let inline =
            sql.replacen('?', &format!("'{region}'"), 1)
                .replacen('?', &below.to_string(), 1);
        let embedded = session.collect(&inline).await.expect("runs");
        assert_eq!(rows(&remote), rows(&embedded), "{region} {below}");
        if region == "NA" {
            // The row filter still holds with parameters.
            assert!(
                remote.iter().all(|b| b.num_rows() == 0),
                "eu_analyst sees no NA rows"
            );
        } else {
            assert!(!rows(&remote).is_empty());
        }
    }
    // Two rows of parameters for one query: refused.
    let two = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("a", DataType::Utf8, true),
            Field::new("b", DataType::Int64, true),
        ])),
        vec![
            Arc::new(StringArray::from(vec!["EU", "NA"])) as ArrayRef,
            Arc::new(Int64Array::from(vec![1, 2])),
        ],
    )
    .expect("batch");
    let err = eu
        .bind(&prepared.prepared_statement_handle, two)
        .await
        .expect_err("two rows");
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_calls_answer_and_obey_visibility() {
    let server = demo_server().await;
    let mut guest = demo_login(server.addr, "guest").await;
    let mut analyst = demo_login(server.addr, "analyst").await;

    let catalogs = guest
        .command(CommandGetCatalogs {})
        .await
        .expect("catalogs");
    assert_eq!(strings(&catalogs, "catalog_name"), ["mesh"]);

    let all = CommandGetDbSchemas {
        catalog: None,
        db_schema_filter_pattern: None,
    };
    let analyst_domains = strings(
        &analyst.command(all.clone()).await.expect("schemas"),
        "db_schema_name",
    );
    assert_eq!(
        analyst_domains,
        ["catalog", "customers", "marketing", "payments", "sales"]
    );
    let guest_domains = strings(
        &guest.command(all).await.expect("schemas"),
        "db_schema_name",
    );
    assert!(
        !guest_domains.contains(&"payments".to_string()),
        "{guest_domains:?}"
    );
    assert!(
        !guest_domains.contains(&"customers".to_string()),
        "{guest_domains:?}"
    );
    assert!(guest_domains.contains(&"sales".to_string()));

    let tables = |pattern: Option<&str>, types: Vec<&str>, include_schema: bool| CommandGetTables {
        catalog: Some("mesh".into()),
        db_schema_filter_pattern: None,
        table_name_filter_pattern: pattern.map(Into::into),
        table_types: types.into_iter().map(Into::into).collect(),
        include_schema,
    };
    let guest_tables = guest
        .command(tables(None, vec![], false))
        .await
        .expect("tables");
    let names: Vec<String> = strings(&guest_tables, "db_schema_name")
        .into_iter()
        .zip(strings(&guest_tables, "table_name"))
        .map(|(d, t)| format!("{d}.{t}"))
        .collect();
    assert_eq!(
        names,
        guest_session_products(),
        "GetTables lists what SELECT can read"
    );
    let only_views = guest
        .command(tables(None, vec!["VIEW"], false))
        .await
        .expect("tables");
    assert_eq!(
        only_views.iter().map(RecordBatch::num_rows).sum::<usize>(),
        0
    );
    let only_tables = guest
        .command(tables(None, vec!["TABLE"], false))
        .await
        .expect("tables");
    assert_eq!(
        only_tables.iter().map(RecordBatch::num_rows).sum::<usize>(),
        names.len()
    );

    // include_schema: the schema the principal gets from SELECT *.
    let with_schema = analyst
        .command(tables(Some("customers"), vec![], true))
        .await
        .expect("tables");
    let i = with_schema[0]
        .schema()
        .index_of("table_schema")
        .expect("table_schema");
    let bytes = with_schema[0]
        .column(i)
        .as_any()
        .downcast_ref::<arrow::array::BinaryArray>()
        .expect("binary")
        .value(0)
        .to_vec();
    let schema = Schema::try_from(arrow_flight::IpcMessage(bytes.into())).expect("schema");
    let star = analyst
        .sql("SELECT * FROM customers.customers LIMIT 1")
        .await
        .expect("runs");
    let star_names: Vec<String> = star[0]
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let listed: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(listed, star_names);

    let types = guest.command(CommandGetTableTypes {}).await.expect("types");
    assert_eq!(strings(&types, "table_type"), ["TABLE"]);

    let pk = analyst
        .command(CommandGetPrimaryKeys {
            catalog: None,
            db_schema: Some("sales".into()),
            table: "orders".into(),
        })
        .await
        .expect("primary keys");
    assert_eq!(strings(&pk, "column_name"), ["order_id"]);
    assert_eq!(strings(&pk, "key_sequence"), ["1"]);
    let hidden_pk = guest
        .command(CommandGetPrimaryKeys {
            catalog: None,
            db_schema: Some("payments".into()),
            table: "transactions".into(),
        })
        .await
        .expect("primary keys");
    assert_eq!(
        hidden_pk.iter().map(RecordBatch::num_rows).sum::<usize>(),
        0
    );

    for batches in [
        analyst
            .command(CommandGetExportedKeys {
                catalog: None,
                db_schema: Some("sales".into()),
                table: "orders".into(),
            })
            .await
            .expect("exported"),
        analyst
            .command(CommandGetImportedKeys {
                catalog: None,
                db_schema: Some("sales".into()),
                table: "orders".into(),
            })
            .await
            .expect("imported"),
        analyst
            .command(CommandGetCrossReference {
                pk_catalog: None,
                pk_db_schema: Some("sales".into()),
                pk_table: "orders".into(),
                fk_catalog: None,
                fk_db_schema: Some("sales".into()),
                fk_table: "order_items".into(),
            })
            .await
            .expect("cross reference"),
    ] {
        assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 0);
        assert!(
            batches
                .iter()
                .all(|b| b.schema().index_of("fk_table_name").is_ok())
        );
    }

    let info = analyst
        .command(CommandGetSqlInfo {
            info: vec![
                SqlInfo::FlightSqlServerName as u32,
                SqlInfo::FlightSqlServerReadOnly as u32,
                SqlInfo::SqlIdentifierQuoteChar as u32,
            ],
        })
        .await
        .expect("sql info");
    assert_eq!(info[0].num_rows(), 3);
    let text = arrow::util::pretty::pretty_format_batches(&info)
        .expect("prints")
        .to_string();
    assert!(text.contains("meshql"), "{text}");
    assert!(text.contains("true"), "{text}");
    assert!(text.contains('"'), "{text}");

    let types = analyst
        .command(CommandGetXdbcTypeInfo { data_type: None })
        .await
        .expect("type info");
    let type_names = strings(&types, "type_name");
    for t in [
        "BIGINT",
        "VARCHAR",
        "DECIMAL",
        "DATE",
        "TIMESTAMP",
        "BOOLEAN",
    ] {
        assert!(type_names.contains(&t.to_string()), "{type_names:?}");
    }

    // GetSchema for a statement and a metadata command.
    let desc = FlightDescriptor::new_cmd(
        CommandStatementQuery {
            query: "SELECT order_id, region FROM sales.orders".into(),
            transaction_id: None,
        }
        .as_any()
        .encode_to_vec(),
    );
    let req = analyst.req(desc);
    let result = analyst
        .inner
        .get_schema(req)
        .await
        .expect("schema")
        .into_inner();
    let schema = Schema::try_from(&result).expect("decodes");
    assert_eq!(
        schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect::<Vec<_>>(),
        ["order_id", "region"]
    );
    let desc = FlightDescriptor::new_cmd(
        CommandStatementQuery {
            query: "SELECT * FROM payments.transactions".into(),
            transaction_id: None,
        }
        .as_any()
        .encode_to_vec(),
    );
    let req = guest.req(desc);
    let err = guest.inner.get_schema(req).await.expect_err("hidden");
    assert_eq!(err.code(), Code::NotFound);
}

fn guest_session_products() -> Vec<String> {
    let mesh = demo_mesh();
    mesh.session(mesh.principal("guest").expect("guest"))
        .product_names()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_transactions_are_refused_clearly() {
    let server = demo_server().await;
    let mut admin = demo_login(server.addr, "admin").await;
    let update = CommandStatementUpdate {
        query: "DELETE FROM sales.orders".into(),
        transaction_id: None,
    };
    let data = FlightData {
        flight_descriptor: Some(FlightDescriptor::new_cmd(update.as_any().encode_to_vec())),
        ..Default::default()
    };
    let req = admin.req(futures::stream::iter([data]));
    let err = admin.inner.do_put(req).await.expect_err("refused");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("read-only"), "{err}");
    let begin = arrow_flight::sql::ActionBeginTransactionRequest {}
        .as_any()
        .encode_to_vec();
    let err = admin
        .action("BeginTransaction", begin)
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(err.message().contains("transactions"), "{err}");
}

/// A query that streams for a long time: a cross join of the order lines.
pub(crate) const ENDLESS: &str = "SELECT a.order_id, b.order_id AS other FROM sales.order_items a CROSS JOIN sales.order_items b";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_query_can_be_cancelled() {
    let server = demo_server().await;
    let mut analyst = demo_login(server.addr, "analyst").await;
    let info = analyst
        .info(CommandStatementQuery {
            query: ENDLESS.into(),
            transaction_id: None,
        })
        .await
        .expect("plans");
    let ticket = info.endpoint[0].ticket.clone().expect("ticket");
    let mut stream = analyst.stream(ticket).await.expect("starts");
    let first = stream.next().await.expect("a batch").expect("ok");
    assert!(first.num_rows() > 0);

    // Another principal cannot cancel it.
    let mut guest = demo_login(server.addr, "guest").await;
    let cancel = CancelFlightInfoRequest {
        info: Some(info.clone()),
    };
    let err = guest
        .action("CancelFlightInfo", cancel.encode_to_vec())
        .await
        .expect_err("not guest's");
    assert_eq!(err.code(), Code::PermissionDenied);

    let out = analyst
        .action("CancelFlightInfo", cancel.encode_to_vec())
        .await
        .expect("cancels");
    let result = CancelFlightInfoResult::decode(&*out[0]).expect("decodes");
    assert_eq!(result.status, arrow_flight::CancelStatus::Cancelled as i32);
    let rest = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match stream.next().await {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Some(status(e)),
                None => return None,
            }
        }
    })
    .await
    .expect("the stream stops promptly");
    let err = rest.expect("ends with an error, not as if complete");
    assert_eq!(err.code(), Code::Cancelled, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_over_its_memory_limit_fails_and_the_server_stays_up() {
    let server = start(
        demo_mesh(),
        ServerOptions {
            query_memory: Some(256 * 1024),
            ..ServerOptions::default()
        },
    )
    .await;
    let mut admin = demo_login(server.addr, "admin").await;
    let err = admin
        .sql("SELECT count(*) FROM sales.order_items a JOIN sales.order_items b ON a.product_id = b.product_id")
        .await
        .expect_err("over the limit");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    // Small queries, on this and other connections, still run.
    assert_eq!(
        rows(&admin.sql("SELECT 1 AS one").await.expect("runs")),
        vec![vec!["1"]]
    );
    let mut other = demo_login(server.addr, "analyst").await;
    let n = other
        .sql("SELECT count(*) AS n FROM sales.orders")
        .await
        .expect("runs");
    assert_eq!(n[0].num_rows(), 1);
}

/// The audit log at `path` once it holds `n` records (within 5 s): its
/// text and its records.
async fn audit_records(path: &std::path::Path, n: usize) -> (String, Vec<serde_json::Value>) {
    let text = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if text.lines().count() >= n {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{n} audit records"));
    let records = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    (text, records)
}

/// Lines paired with the other lines of their order, per ship mode, and
/// the longest comment of all: at TPC-H scale 0.3 the pairs' hash join
/// needs more than [`JOIN_MEMORY`] for its build side, which sort-merge
/// joins answer within it by spilling.
const OVER_MEMORY_JOIN: &str = "SELECT a.l_shipmode, count(*) AS pairs, \
     (SELECT max(l_comment) FROM tpch.lineitem) AS comment \
     FROM tpch.lineitem a JOIN tpch.lineitem b ON a.l_orderkey = b.l_orderkey \
     GROUP BY a.l_shipmode ORDER BY a.l_shipmode";
const JOIN_MEMORY: usize = 48 << 20;

/// A TPC-H mesh at `scale` whose region-bound analysts (`eu_analyst`) see
/// no lines shipped by mail and lines' comments redacted.
fn tpch_mesh_with_line_policy(scale: f64) -> (tempfile::TempDir, Mesh) {
    let data = meshql_bench::tpch_data::ensure_parquet(scale);
    let dir = tempfile::tempdir().expect("tempdir");
    meshql_bench::tpch_data::write_mesh(dir.path(), &data, false);
    let policies = dir.path().join("policies.yaml");
    let rule = "  - name: region-bound analysts see no mail lines, comments redacted
    role: analyst
    hasAttribute: region
    domain: tpch
    product: lineitem
    columns:
      - name: l_comment
        mask: redact
    rowFilter: l_shipmode <> 'MAIL'
";
    let text = std::fs::read_to_string(&policies).expect("policies");
    let at = text
        .find("  - name: analysts see customers'")
        .expect("the analysts' rules");
    std::fs::write(&policies, format!("{}{rule}{}", &text[..at], &text[at..])).expect("policies");
    let mesh = Mesh::open_strict(dir.path()).expect("mesh");
    (dir, mesh)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hash_join_over_the_memory_limit_is_answered_by_sort_merge_as_the_principal_asking() {
    let (_dir, mesh) = tokio::task::spawn_blocking(|| tpch_mesh_with_line_policy(0.3))
        .await
        .expect("the TPC-H mesh");
    let audit_dir = tempfile::tempdir().expect("tempdir");
    let audit = audit_dir.path().join("audit.jsonl");
    let unlimited = start(mesh.clone(), ServerOptions::default()).await;
    let limited = start(
        mesh,
        ServerOptions {
            query_memory: Some(JOIN_MEMORY),
            audit: Some(audit.clone()),
            ..ServerOptions::default()
        },
    )
    .await;
    let mut answers = Vec::new();
    for user in ["admin", "eu_analyst"] {
        let expected = demo_login(unlimited.addr, user)
            .await
            .sql(OVER_MEMORY_JOIN)
            .await
            .expect("runs without a limit");
        let mut client = demo_login(limited.addr, user).await;
        let got = client
            .sql(OVER_MEMORY_JOIN)
            .await
            .expect("answers under the limit");
        assert_eq!(rows(&got), rows(&expected), "{user}: the same answer");
        // The plan shown is the second one, and says why.
        let explained = client
            .sql(&format!("EXPLAIN ANALYZE {OVER_MEMORY_JOIN}"))
            .await
            .expect("explains");
        let text = strings(&explained, "plan").join("\n");
        assert!(text.contains("SortMergeJoin"), "{user}: {text}");
        assert!(
            text.contains("planned again with sort-merge joins"),
            "{user}: {text}"
        );
        assert!(!text.contains("HashJoinExec"), "{user}: {text}");
        answers.push((got, text));
    }
    let (admin, _) = &answers[0];
    let (eu, eu_plan) = &answers[1];
    // Both sides: the admin's answer has every ship mode and the raw
    // comment; the EU analyst's no mail lines, fewer pairs, the comment
    // redacted.
    let admin_modes = strings(admin, "l_shipmode");
    let eu_modes = strings(eu, "l_shipmode");
    assert!(admin_modes.contains(&"MAIL".to_string()), "{admin_modes:?}");
    assert!(
        !eu_modes.is_empty() && !eu_modes.contains(&"MAIL".to_string()),
        "{eu_modes:?}"
    );
    let raw = strings(admin, "comment");
    let masked = strings(eu, "comment");
    assert!(
        raw.iter().all(|c| !c.is_empty() && c != "[REDACTED]"),
        "{raw:?}"
    );
    assert!(masked.iter().all(|c| c == "[REDACTED]"), "{masked:?}");
    // Nor does the second plan show the EU analyst what is below the policy
    // boundary.
    assert!(eu_plan.contains("MeshPolicy"), "{eu_plan}");
    assert!(!eu_plan.contains("DataSourceExec"), "{eu_plan}");
    for c in &raw {
        assert!(
            !eu_plan.contains(c.as_str()),
            "the raw comment in {eu_plan}"
        );
    }
    drop(limited);

    let (text, records) = audit_records(&audit, 4).await;
    assert_eq!(records.len(), 4, "{text}");
    for record in &records {
        assert_eq!(record["outcome"], "ok", "{record}");
        let why = record["replanned"].as_str().unwrap_or_default();
        assert!(
            why.contains("48 MiB") && why.contains("sort-merge"),
            "{record}"
        );
    }
    assert!(!text.contains(&raw[0]), "no row values in the audit log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excess_queries_queue_then_are_refused_and_a_disconnect_frees_the_slot() {
    let server = start(
        demo_mesh(),
        ServerOptions {
            max_concurrent_queries: 1,
            queue_timeout: Duration::from_millis(500),
            ..ServerOptions::default()
        },
    )
    .await;
    let mut first = demo_login(server.addr, "analyst").await;
    let info = first
        .info(CommandStatementQuery {
            query: ENDLESS.into(),
            transaction_id: None,
        })
        .await
        .expect("plans");
    let mut stream = first
        .stream(info.endpoint[0].ticket.clone().expect("ticket"))
        .await
        .expect("starts");
    stream.next().await.expect("a batch").expect("ok");

    let mut second = demo_login(server.addr, "analyst").await;
    let err = second.sql("SELECT 1").await.expect_err("busy");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert!(err.message().contains("busy"), "{err}");

    // The first client goes away mid-stream: its query stops and frees the slot.
    drop(stream);
    drop(first);
    let ok = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match second.sql("SELECT 1 AS one").await {
                Ok(b) => return b,
                Err(e) if e.code() == Code::ResourceExhausted => continue,
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
    .expect("the slot is freed promptly");
    assert_eq!(rows(&ok), vec![vec!["1"]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_on_rows_and_time_fail_rather_than_cut_results() {
    let server = start(
        demo_mesh(),
        ServerOptions {
            max_result_rows: Some(100),
            query_timeout: Some(Duration::from_millis(300)),
            ..ServerOptions::default()
        },
    )
    .await;
    let mut admin = demo_login(server.addr, "admin").await;
    assert_eq!(
        admin
            .sql("SELECT order_id FROM sales.orders LIMIT 100")
            .await
            .expect("fits")
            .iter()
            .map(|b| b.num_rows())
            .sum::<usize>(),
        100
    );
    let err = admin
        .sql("SELECT order_id FROM sales.orders LIMIT 101")
        .await
        .expect_err("too many rows");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("100 rows"), "{err}");
    let err = admin
        .sql("SELECT count(*) FROM sales.order_items a CROSS JOIN sales.order_items b WHERE a.quantity + b.quantity > 100")
        .await
        .expect_err("too slow");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("longer than its limit"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_statement_is_audited_without_row_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let audit = dir.path().join("audit.jsonl");
    let server = start(
        demo_mesh(),
        ServerOptions {
            audit: Some(audit.clone()),
            ..ServerOptions::default()
        },
    )
    .await;
    let mut analyst = demo_login(server.addr, "analyst").await;
    let got = analyst
        .sql("SELECT customer_id, email FROM customers.customers ORDER BY customer_id LIMIT 7")
        .await
        .expect("runs");
    assert_eq!(got[0].num_rows(), 7);
    analyst
        .sql("SELECT * FROM nowhere.nothing")
        .await
        .expect_err("missing");
    let mut eu = demo_login(server.addr, "eu_analyst").await;
    eu.sql("SELECT count(*) FROM sales.orders")
        .await
        .expect("runs");
    drop(server);

    // Raw e-mail addresses, which the analyst never saw, must not be in the log.
    let mesh = demo_mesh();
    let raw = mesh
        .session(admin())
        .collect("SELECT email FROM customers.customers ORDER BY customer_id LIMIT 7")
        .await
        .expect("raw");
    let (text, records) = audit_records(&audit, 3).await;
    for email in strings(&raw, "email") {
        assert!(!text.contains(&email), "{email} leaked into the audit log");
    }
    assert!(!text.contains("analyst-demo"), "no passwords");
    let first = &records[0];
    assert_eq!(first["user"], "analyst");
    assert_eq!(first["roles"][0], "analyst");
    assert!(
        first["client"]
            .as_str()
            .expect("client")
            .starts_with("127.0.0.1:")
    );
    assert_eq!(first["rows"], 7);
    assert!(first["bytes"].as_u64().expect("bytes") > 0);
    assert_eq!(first["outcome"], "ok");
    assert_eq!(first["products"][0]["product"], "customers.customers");
    let masks = first["products"][0]["masks"].to_string();
    assert!(
        masks.contains("email") && masks.contains("mask_email"),
        "{masks}"
    );
    assert!(first["time"].as_str().expect("time").ends_with('Z'));
    assert_eq!(records[1]["outcome"]["error"]["kind"], "not_found");
    assert_eq!(records[2]["user"], "eu_analyst");
    assert!(
        records[2]["products"][0]["row_filter"]
            .as_str()
            .expect("row filter")
            .contains("current_attribute('region')"),
        "{}",
        records[2]
    );
}

/// The Python ADBC Flight SQL driver (Go's Flight SQL client inside) against
/// `meshql serve`: queries, a parameterised prepared statement, catalog
/// browsing, get_info, and masks per principal. The driver is installed
/// into a cached venv by `tests/python/setup.sh` (from PyPI) unless
/// `MESHQL_TEST_PYTHON` names a Python that has it.
#[test]
fn the_adbc_flight_sql_driver_works_against_meshql_serve() {
    demo_mesh();
    let python = python_peers();
    let out = std::process::Command::new(&python)
        .arg(root().join("tests/python/adbc_interop.py"))
        .arg(env!("CARGO_BIN_EXE_meshql"))
        .arg(root().join("catalog"))
        .env("MESHQL_LOG", "warn")
        .output()
        .expect("runs python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("checks passed"), "{stdout}\n{stderr}");
}

/// flightsql-dbapi's SQLAlchemy dialect (Superset's for Flight SQL), in a
/// venv of its own (`tests/python/setup-flightsql-dbapi.sh`, SQLAlchemy <
/// 2) unless `MESHQL_TEST_FLIGHTSQL_DBAPI` names its Python: the inspector
/// per principal and governed rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flightsql_dbapi_inspects_and_reads_as_each_principal() {
    let python = peer_venv("MESHQL_TEST_FLIGHTSQL_DBAPI", "setup-flightsql-dbapi.sh");
    let server = demo_server().await;
    let args = vec![
        server.addr.ip().to_string().into(),
        server.addr.port().to_string().into(),
    ];
    python_checks_pass(&python, "flightsql_dbapi.py", args).await;
}

#[test]
fn serve_refuses_demo_secrets_on_a_public_address() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meshql"))
        .args(["--mesh"])
        .arg(root().join("catalog"))
        .args(["serve", "--addr", "0.0.0.0:0"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refusing to serve on 0.0.0.0:0"),
        "{stderr}"
    );
    assert!(stderr.contains("--allow-demo-secrets"), "{stderr}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meshql"))
        .args(["serve", "--addr", "localhost:1"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--addr: `localhost:1` is not HOST:PORT"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_new_calls_and_bounds_running_queries() {
    use std::io::BufRead;
    demo_mesh();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_meshql"))
        .arg("--mesh")
        .arg(root().join("catalog"))
        .args(["serve", "--addr", "127.0.0.1:0", "--grace-seconds", "1"])
        .env("MESHQL_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("starts");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("announces");
    let addr: SocketAddr = line
        .rsplit("grpc://")
        .next()
        .expect("address")
        .trim()
        .parse()
        .expect("parses");
    let mut analyst = demo_login(addr, "analyst").await;
    let info = analyst
        .info(CommandStatementQuery {
            query: ENDLESS.into(),
            transaction_id: None,
        })
        .await
        .expect("plans");
    let mut stream = analyst
        .stream(info.endpoint[0].ticket.clone().expect("ticket"))
        .await
        .expect("starts");
    stream.next().await.expect("a batch").expect("ok");

    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid fits"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("signal");
    let started = std::time::Instant::now();
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("joins")
        .expect("waits");
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the running query held shutdown for {:?}",
        started.elapsed()
    );
    // Nothing is listening any more.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shell_runs_against_a_remote_server() {
    let server = demo_server().await;
    let url = format!("grpc://{}", server.addr);
    let shell = |user: &str, password: &str, args: Vec<String>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_meshql"));
        cmd.args(["--connect", &url, "--user", user, "--format", "csv"])
            .args(args)
            .env("MESHQL_PASSWORD", password)
            .env_remove("MESHQL_MESH");
        cmd
    };
    let c = |s: &str| vec!["-c".to_string(), s.to_string()];
    let out = tokio::task::spawn_blocking({
        let mut cmd = shell(
            "analyst",
            "analyst-demo",
            [
                c("\\d customers.customers"),
                c("SELECT email FROM customers.customers ORDER BY customer_id LIMIT 3"),
                c("\\d sales.orders"),
                c("\\find EMAIL"),
            ]
            .concat(),
        );
        move || cmd.output().expect("runs")
    })
    .await
    .expect("joins");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("masked: mask_email(\"\"email\"\")"),
        "{stdout}"
    );
    assert!(stdout.contains("Owner:    customer-data"), "{stdout}");
    // The Iceberg product's freshness, as the local shell shows it.
    let updated = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Updated:  "))
        .unwrap_or_else(|| panic!("no Updated: line in {stdout}"));
    assert!(
        updated.starts_with("20") && updated.ends_with('Z'),
        "{updated}"
    );
    // Search runs on the server, over what the analyst sees.
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("customers.customers,customer-data,")
                && l.contains("column email")),
        "{stdout}"
    );
    // \d of the Iceberg product comes from the server's meshql tables.
    assert!(
        stdout.contains("Storage:  Iceberg table sales.orders in catalog `lakehouse`"),
        "{stdout}"
    );
    let emails: Vec<&str> = stdout.lines().filter(|l| l.contains("***@")).collect();
    assert_eq!(emails.len(), 3, "{stdout}");

    // A current domain over the wire: `--domain`, then `\c`, each
    // resolving unqualified names on the server for this connection.
    let out = tokio::task::spawn_blocking({
        let mut cmd = shell(
            "eu_analyst",
            "eu_analyst-demo",
            [
                vec!["--domain".to_string(), "sales".to_string()],
                c("SELECT count(*) AS n FROM orders"),
                c("SELECT count(*) AS n FROM sales.orders WHERE region = 'EU'"),
                c("\\c customers"),
                c("SELECT email FROM customers ORDER BY customer_id LIMIT 1"),
            ]
            .concat(),
        );
        move || cmd.output().expect("runs")
    })
    .await
    .expect("joins");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 6, "{stdout}");
    assert_eq!(
        lines[1], lines[3],
        "the row filter holds in the domain: {stdout}"
    );
    assert!(lines[5].contains("***@"), "{stdout}");

    let out = tokio::task::spawn_blocking({
        let mut cmd = shell(
            "guest",
            "guest-demo",
            [c("\\dn"), c("SELECT * FROM payments.transactions")].concat(),
        );
        move || cmd.output().expect("runs")
    })
    .await
    .expect("joins");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(!stdout.contains("payments"), "{stdout}");
    assert!(
        stderr.contains("product `payments.transactions` does not exist (line 1, column 15)"),
        "{stderr}"
    );

    let out = tokio::task::spawn_blocking({
        let mut cmd = shell("analyst", "wrong", c("SELECT 1"));
        move || cmd.output().expect("runs")
    })
    .await
    .expect("joins");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid user name or password"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sso_token(
    claims: serde_json::Value,
    alg: jsonwebtoken::Algorithm,
    key: &jsonwebtoken::EncodingKey,
) -> String {
    jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), &claims, key).expect("signs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_provider_tokens_map_to_principals() {
    use jsonwebtoken::{Algorithm, EncodingKey};
    let now = meshql_now();
    let hs = |secret: &str| EncodingKey::from_secret(secret.as_bytes());
    let hs_server = start(
        demo_mesh(),
        ServerOptions {
            jwt: Some(meshql::manifest::JwtConfig {
                hs256_secret: Some("idp-shared-secret".into()),
                audience: Some("meshql".into()),
                issuer: Some("https://idp.example".into()),
                roles_claim: "meshql_roles".into(),
                ..Default::default()
            }),
            ..ServerOptions::default()
        },
    )
    .await;
    let claims = |sub: &str, roles: &[&str], exp: u64, aud: &str| {
        serde_json::json!({
            "sub": sub, "meshql_roles": roles, "region": "EU", "aud": aud,
            "iss": "https://idp.example", "exp": exp, "iat": now,
        })
    };
    let hs_channel = channel(hs_server.addr).await;
    let bearer = |token: String| Wire {
        inner: hs_channel.clone(),
        auth: format!("Bearer {token}"),
    };
    let token = sso_token(
        claims("maria@corp", &["analyst"], now + 600, "meshql"),
        Algorithm::HS256,
        &hs("idp-shared-secret"),
    );
    let mut maria = bearer(token);
    let started = {
        let mut c = claims("maria@corp", &["analyst"], now + 600, "meshql");
        c["nbf"] = serde_json::json!(now - 60);
        sso_token(c, Algorithm::HS256, &hs("idp-shared-secret"))
    };
    bearer(started)
        .sql("SELECT 1")
        .await
        .expect("a token whose nbf has passed is valid");
    let regions = strings(
        &maria
            .sql("SELECT DISTINCT region FROM sales.orders")
            .await
            .expect("runs"),
        "region",
    );
    assert_eq!(regions, ["EU"], "the region claim drives the row filter");
    let me = strings(
        &maria.sql("SELECT current_user() AS u").await.expect("runs"),
        "u",
    );
    assert_eq!(me, ["maria@corp"]);
    let emails = strings(
        &maria
            .sql("SELECT email FROM customers.customers LIMIT 5")
            .await
            .expect("runs"),
        "email",
    );
    assert!(emails.iter().all(|e| e.contains("***@")), "{emails:?}");

    for (what, token, needle) in [
        (
            "expired",
            sso_token(
                claims("maria@corp", &["analyst"], now - 120, "meshql"),
                Algorithm::HS256,
                &hs("idp-shared-secret"),
            ),
            "expired",
        ),
        (
            "wrong audience",
            sso_token(
                claims("maria@corp", &["analyst"], now + 600, "other-app"),
                Algorithm::HS256,
                &hs("idp-shared-secret"),
            ),
            "audience",
        ),
        (
            "not valid yet",
            sso_token(
                {
                    let mut c = claims("maria@corp", &["analyst"], now + 1200, "meshql");
                    c["nbf"] = serde_json::json!(now + 600);
                    c
                },
                Algorithm::HS256,
                &hs("idp-shared-secret"),
            ),
            "not valid yet",
        ),
        (
            "wrong key",
            sso_token(
                claims("maria@corp", &["platform_admin"], now + 600, "meshql"),
                Algorithm::HS256,
                &hs("guessed"),
            ),
            "signature",
        ),
    ] {
        let err = bearer(token).sql("SELECT 1").await.expect_err(what);
        assert_eq!(err.code(), Code::Unauthenticated, "{what}");
        assert!(err.message().contains(needle), "{what}: {err}");
    }

    // ES256 with a public key file.
    let es_server = start(
        demo_mesh(),
        ServerOptions {
            jwt: Some(meshql::manifest::JwtConfig {
                public_key_file: Some(root().join("testdata/jwt/es256-public.pem")),
                roles_claim: "roles".into(),
                ..Default::default()
            }),
            ..ServerOptions::default()
        },
    )
    .await;
    let private = std::fs::read(root().join("testdata/jwt/es256-private.pem")).expect("key");
    let key = EncodingKey::from_ec_pem(&private).expect("pem");
    let token = sso_token(
        serde_json::json!({"sub": "ops@corp", "roles": "platform_admin", "exp": now + 600}),
        Algorithm::ES256,
        &key,
    );
    let mut ops = Wire {
        inner: channel(es_server.addr).await,
        auth: format!("Bearer {token}"),
    };
    let emails = strings(
        &ops.sql("SELECT email FROM customers.customers LIMIT 5")
            .await
            .expect("runs"),
        "email",
    );
    assert!(emails.iter().all(|e| !e.contains("***")), "{emails:?}");
    // An HS256 token is not accepted by a server that trusts only the EC key.
    let forged = sso_token(
        serde_json::json!({"sub": "ops@corp", "roles": "platform_admin", "exp": now + 600}),
        Algorithm::HS256,
        &hs("anything"),
    );
    let mut forged = Wire {
        inner: channel(es_server.addr).await,
        auth: format!("Bearer {forged}"),
    };
    assert_eq!(
        forged.sql("SELECT 1").await.expect_err("refused").code(),
        Code::Unauthenticated
    );
    // Local logins keep working next to single sign-on.
    let mut analyst = demo_login(es_server.addr, "analyst").await;
    analyst.sql("SELECT 1").await.expect("runs");
}

pub(crate) fn meshql_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_encrypted_and_refuses_plaintext() {
    let tls = meshql_server::Tls {
        cert: root().join("testdata/tls/server.crt"),
        key: root().join("testdata/tls/server.key"),
    };
    let server = start_with(demo_mesh(), ServerOptions::default(), Some(tls)).await;
    let ca = std::fs::read(root().join("testdata/tls/server.crt")).expect("cert");
    let channel = Channel::from_shared(format!("https://{}", server.addr))
        .expect("uri")
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(&ca))
                .domain_name("localhost"),
        )
        .expect("tls config")
        .connect()
        .await
        .expect("TLS handshake");
    let mut inner = FlightServiceClient::new(channel);
    let mut req = Request::new(futures::stream::iter([HandshakeRequest::default()]));
    req.metadata_mut().insert(
        "authorization",
        basic("analyst", "analyst-demo").parse().expect("header"),
    );
    let resp = inner.handshake(req).await.expect("logs in over TLS");
    let auth = resp
        .metadata()
        .get("authorization")
        .expect("token")
        .to_str()
        .expect("text")
        .to_string();
    let mut wire = Wire { inner, auth };
    assert_eq!(
        rows(&wire.sql("SELECT 1 AS one").await.expect("runs")),
        vec![vec!["1"]]
    );

    // A plaintext client gets nowhere.
    let plain = Channel::from_shared(format!("http://{}", server.addr))
        .expect("uri")
        .connect()
        .await;
    if let Ok(plain) = plain {
        let mut client = FlightServiceClient::new(plain);
        let mut req = Request::new(futures::stream::iter([HandshakeRequest::default()]));
        req.metadata_mut().insert(
            "authorization",
            basic("analyst", "analyst-demo").parse().expect("header"),
        );
        assert!(client.handshake(req).await.is_err());
    }

    // The shell connects over TLS with the CA.
    let url = format!("grpc+tls://{}", server.addr);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_meshql"))
            .args(["--connect", &url, "--user", "analyst", "--tls-ca"])
            .arg(root().join("testdata/tls/server.crt"))
            .args(["--format", "csv", "-c", "SELECT 40 + 2 AS answer"])
            .env("MESHQL_PASSWORD", "analyst-demo")
            .output()
            .expect("runs")
    })
    .await
    .expect("joins");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("42"), "{stdout}");
}
