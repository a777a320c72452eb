//! Scale-out: a coordinator and `meshql worker` processes on 127.0.0.1,
//! started here as real processes and killed here.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use meshql::cluster::Cluster;
use meshql::{Mesh, QueryOptions};

use crate::util::*;

pub(crate) const SECRET: &str = "cluster-secret-of-the-tests";

/// A `meshql worker` process on an ephemeral port of 127.0.0.1.
pub(crate) struct Worker {
    child: Child,
    pub(crate) addr: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Worker {
    fn start(secret: Option<&str>) -> Worker {
        demo_data();
        Worker::start_on(&root().join("catalog"), secret)
    }

    /// A worker of the mesh in `mesh`.
    pub(crate) fn start_on(mesh: &std::path::Path, secret: Option<&str>) -> Worker {
        Worker::start_logging(mesh, secret, "info")
    }

    /// A worker of the mesh in `mesh` whose log has `level` (`MESHQL_LOG`).
    fn start_logging(mesh: &std::path::Path, secret: Option<&str>, level: &str) -> Worker {
        Worker::start_with(mesh, secret, level, false)
    }

    /// A worker serving over TLS with the tests' certificate, which is
    /// also the certificate authority it checks the other workers with.
    fn start_tls(secret: Option<&str>) -> Worker {
        demo_data();
        Worker::start_with(&root().join("catalog"), secret, "info", true)
    }

    fn start_with(mesh: &std::path::Path, secret: Option<&str>, level: &str, tls: bool) -> Worker {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("worker.log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_meshql"));
        command
            .current_dir(root())
            .arg("--mesh")
            .arg(mesh)
            .args(["worker", "--addr", "127.0.0.1:0"])
            .env_remove("MESHQL_MESH")
            .env_remove("MESHQL_WORKERS")
            .env_remove("MESHQL_CLUSTER_SECRET_FILE")
            .env("MESHQL_LOG", level)
            .env_remove("MESHQL_WORKER_TLS_CERT")
            .env_remove("MESHQL_WORKER_TLS_KEY")
            .env_remove("MESHQL_CLUSTER_TLS_CA")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"));
        match secret {
            Some(s) => command.env("MESHQL_CLUSTER_SECRET", s),
            None => command.env_remove("MESHQL_CLUSTER_SECRET"),
        };
        if tls {
            command
                .arg("--tls-cert")
                .arg(root().join("testdata/tls/server.crt"))
                .arg("--tls-key")
                .arg(root().join("testdata/tls/server.key"));
        }
        let mut child = command.spawn().expect("starts meshql worker");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("reads");
        let addr = line
            .trim()
            .strip_prefix("meshql worker listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "worker did not start: {line:?}; log: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            })
            .to_string();
        Worker {
            child,
            addr,
            log,
            _dir: dir,
        }
    }

    /// The tasks this worker's log says it ran.
    pub(crate) fn tasks(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .matches("meshql worker runs a task")
            .count()
    }
}

/// `mesh` as a coordinator of `workers`, distributing every query.
pub(crate) fn on_workers(mesh: &Mesh, workers: &[&Worker]) {
    let addrs: Vec<String> = workers.iter().map(|w| w.addr.clone()).collect();
    let cluster = Cluster::new(&addrs, Some(0), Some(SECRET.as_bytes())).expect("cluster");
    mesh.set_cluster(Some(cluster));
}

/// The demo mesh as a coordinator of `workers`, distributing every query.
fn coordinator(workers: &[&Worker], secret: Option<&str>) -> Mesh {
    let mesh = demo_mesh();
    let addrs: Vec<String> = workers.iter().map(|w| w.addr.clone()).collect();
    let cluster = Cluster::new(&addrs, Some(0), secret.map(str::as_bytes)).expect("cluster");
    mesh.set_cluster(Some(cluster));
    mesh
}

async fn plan_name(mesh: &Mesh, user: &str, sql: &str) -> String {
    let session = mesh.session(mesh.principal(user).expect("principal"));
    let query = session
        .plan(sql, &QueryOptions::default())
        .await
        .expect("plans");
    query.physical_plan().name().to_string()
}

const QUERIES: &[&str] = &[
    "SELECT customer_id, email, region FROM customers.customers ORDER BY customer_id LIMIT 20",
    "SELECT region, count(*) AS n, count(DISTINCT segment) AS segments FROM customers.customers GROUP BY region ORDER BY region",
    "SELECT transaction_id, amount, card_number FROM payments.transactions ORDER BY transaction_id LIMIT 10",
    "SELECT t.currency, count(*) AS n, sum(i.quantity) AS q FROM payments.transactions t JOIN sales.order_items i ON t.order_id = i.order_id GROUP BY t.currency ORDER BY t.currency",
    "SELECT product_id, sum(quantity * unit_price) AS revenue FROM sales.order_items GROUP BY product_id ORDER BY revenue DESC, product_id LIMIT 5",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn governed_answers_are_the_same_on_workers_for_every_principal() {
    demo_data();
    let catalog = root().join("catalog");
    // Logging everything, of every library, so the check below covers
    // what the gRPC and HTTP/2 layers would print.
    let w1 = Worker::start_logging(&catalog, Some(SECRET), "trace");
    let w2 = Worker::start_logging(&catalog, Some(SECRET), "trace");
    let local = demo_mesh();
    let distributed = coordinator(&[&w1, &w2], Some(SECRET));
    for user in ["admin", "analyst", "eu_analyst", "finance", "guest"] {
        let here = local.session(local.principal(user).expect("principal"));
        let there = distributed.session(distributed.principal(user).expect("principal"));
        for sql in QUERIES {
            match (here.collect(sql).await, there.collect(sql).await) {
                (Ok(a), Ok(b)) => assert_eq!(rows(&a), rows(&b), "{user}: {sql}"),
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{user}: {sql}"),
                (a, b) => panic!("{user}: {sql}: in-process {a:?}, distributed {b:?}"),
            }
        }
    }
    // The queries really went to the workers, and both ran tasks. The
    // first one reads one small file: one partition end to end, no
    // exchange to cut at, so it runs whole as one task on a worker.
    for user in ["admin", "analyst"] {
        for sql in QUERIES {
            assert_eq!(
                plan_name(&distributed, user, sql).await,
                "DistributedExec",
                "{user}: {sql}"
            );
        }
    }
    let admin = distributed.session(distributed.principal("admin").expect("p"));
    let analyzed = rows(
        &admin
            .collect(&format!("EXPLAIN ANALYZE {}", QUERIES[0]))
            .await
            .expect("analyzes"),
    );
    let workers = analyzed
        .iter()
        .find(|r| r[0] == "Workers")
        .unwrap_or_else(|| panic!("no Workers row: {analyzed:?}"));
    assert!(
        workers[1].starts_with("Stage 1 task 0: ")
            && (workers[1].contains(&w1.addr) || workers[1].contains(&w2.addr)),
        "{workers:?}"
    );
    assert!(
        w1.tasks() > 0 && w2.tasks() > 0,
        "{} {}",
        w1.tasks(),
        w2.tasks()
    );

    // The governance is there on the workers, not just equal.
    let analyst = distributed.session(distributed.principal("analyst").expect("p"));
    let emails = rows(&analyst.collect(QUERIES[0]).await.expect("runs"));
    assert!(emails.iter().all(|r| r[1].contains("***@")), "{emails:?}");
    let raw = rows(&admin.collect(QUERIES[0]).await.expect("runs"));
    assert!(raw.iter().any(|r| !r[1].contains("***@")), "{raw:?}");

    // The workers' logs, at their most verbose, hold neither secret nor
    // the principals' attributes that tasks carry (in the headers
    // `meshql_task.*`, as hex of JSON).
    let attribute = r#""region":"EU""#;
    let attribute_hex: String = attribute.bytes().map(|b| format!("{b:02x}")).collect();
    for w in [&w1, &w2] {
        let log = w.log_text();
        assert!(log.contains("TRACE"), "the log is not at trace level");
        for secret in [
            "demo-pseudonym-secret-change-me",
            SECRET,
            "meshql_task",
            attribute,
            attribute_hex.as_str(),
        ] {
            assert!(!log.contains(secret), "{} logs {secret}", w.addr);
        }
    }
    let eu = distributed.session(distributed.principal("eu_analyst").expect("p"));
    let regions = rows(
        &eu.collect("SELECT DISTINCT region FROM customers.customers")
            .await
            .expect("runs"),
    );
    let all = rows(
        &admin
            .collect("SELECT DISTINCT region FROM customers.customers")
            .await
            .expect("runs"),
    );
    assert!(all.len() > 1, "{all:?}");
    assert!(regions.iter().all(|r| r[0] == "EU"), "{regions:?}");

    // EXPLAIN shows the stages; a restricted principal's stops at the
    // policy boundary, an unrestricted one's shows the files.
    let explain = |rows: Vec<Vec<String>>| rows.concat().join("\n");
    let sql = "EXPLAIN SELECT region, count(*) FROM customers.customers GROUP BY region";
    let admin_plan = explain(rows(&admin.collect(sql).await.expect("explains")));
    assert!(admin_plan.contains("[Stage 1]"), "{admin_plan}");
    assert!(admin_plan.contains("customers.parquet"), "{admin_plan}");
    let analyst_plan = explain(rows(&analyst.collect(sql).await.expect("explains")));
    assert!(analyst_plan.contains("[Stage 1]"), "{analyst_plan}");
    assert!(analyst_plan.contains("MeshPolicy"), "{analyst_plan}");
    assert!(
        !analyst_plan.contains("customers.parquet"),
        "{analyst_plan}"
    );
    let analyzed = explain(rows(
        &admin
            .collect(&format!("EXPLAIN ANALYZE {}", &sql["EXPLAIN ".len()..]))
            .await
            .expect("analyzes"),
    ));
    assert!(analyzed.contains("output_rows"), "{analyzed}");
    assert!(analyzed.contains("Stage"), "{analyzed}");
    // It says which worker ran each task: both did.
    for w in [&w1, &w2] {
        assert!(
            analyzed.contains(&format!("task 0: {}", w.addr))
                || analyzed.contains(&format!("task 1: {}", w.addr)),
            "{analyzed}"
        );
    }
    // So does a restricted principal's, which stops at the policy.
    let analyst_analyzed = explain(rows(
        &analyst
            .collect(&format!("EXPLAIN ANALYZE {}", &sql["EXPLAIN ".len()..]))
            .await
            .expect("analyzes"),
    ));
    assert!(
        analyst_analyzed.contains("Stage 1 task"),
        "{analyst_analyzed}"
    );
    assert!(
        !analyst_analyzed.contains("customers.parquet"),
        "{analyst_analyzed}"
    );

    // With the default threshold a one-row lookup stays in-process.
    let small = demo_mesh();
    small.set_cluster(Some(
        Cluster::new(
            std::slice::from_ref(&w1.addr),
            None,
            Some(SECRET.as_bytes()),
        )
        .expect("cluster"),
    ));
    assert_ne!(
        plan_name(
            &small,
            "admin",
            "SELECT email FROM customers.customers WHERE customer_id = 7"
        )
        .await,
        "DistributedExec"
    );
}

/// The worker protocol's messages (datafusion-distributed's
/// `worker.proto`), as a client that is not meshql writes them.
mod wire {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TaskKey {
        #[prost(bytes = "vec", tag = "1")]
        pub query_id: Vec<u8>,
        #[prost(uint64, tag = "2")]
        pub stage_id: u64,
        #[prost(uint64, tag = "3")]
        pub task_number: u64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SetPlanRequest {
        #[prost(message, optional, tag = "1")]
        pub task_key: Option<TaskKey>,
        #[prost(uint64, tag = "2")]
        pub task_count: u64,
        #[prost(bytes = "vec", tag = "3")]
        pub plan_proto: Vec<u8>,
    }
    /// A `oneof` of one message is, on the wire, that message's field.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CoordinatorToWorkerMsg {
        #[prost(message, optional, tag = "1")]
        pub set_plan_request: Option<SetPlanRequest>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WorkerToCoordinatorMsg {}
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExecuteTaskRequest {
        #[prost(message, optional, tag = "1")]
        pub task_key: Option<TaskKey>,
        #[prost(uint64, tag = "2")]
        pub target_partition_start: u64,
        #[prost(uint64, tag = "3")]
        pub target_partition_end: u64,
    }
}

/// Sends a worker a plan built by hand with plain DataFusion (a raw scan
/// of customers.customers' file, no policy in it) the way a coordinator
/// sends a task, with `authorization` when given, and returns what comes
/// back.
async fn send_raw_plan(
    addr: &str,
    authorization: Option<&str>,
) -> Result<Vec<arrow::record_batch::RecordBatch>, tonic::Status> {
    use datafusion::prelude::{ParquetReadOptions, SessionContext};
    use datafusion_proto::physical_plan::{AsExecutionPlan, DefaultPhysicalExtensionCodec};
    use futures::TryStreamExt;
    use prost::Message;

    let file = demo_data().join("customers/customers/customers.parquet");
    let ctx = SessionContext::new();
    let plan = ctx
        .read_parquet(file.to_str().expect("path"), ParquetReadOptions::default())
        .await
        .expect("reads")
        .select_columns(&["customer_id", "email"])
        .expect("columns")
        .create_physical_plan()
        .await
        .expect("plans");
    let node = datafusion_proto::protobuf::PhysicalPlanNode::try_from_physical_plan(
        plan,
        &DefaultPhysicalExtensionCodec {},
    )
    .expect("encodes");
    let key = wire::TaskKey {
        query_id: vec![7; 16],
        stage_id: 1,
        task_number: 0,
    };
    let with_auth = |metadata: &mut tonic::metadata::MetadataMap| {
        if let Some(a) = authorization {
            metadata.insert("authorization", a.parse().expect("header"));
        }
    };
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connects");
    let mut grpc = tonic::client::Grpc::new(channel);

    let message = wire::CoordinatorToWorkerMsg {
        set_plan_request: Some(wire::SetPlanRequest {
            task_key: Some(key.clone()),
            task_count: 1,
            plan_proto: node.encode_to_vec(),
        }),
    };
    let mut request = tonic::Request::new(futures::stream::iter(vec![message]));
    with_auth(request.metadata_mut());
    grpc.ready().await.expect("ready");
    let _coordinator: tonic::Response<tonic::Streaming<wire::WorkerToCoordinatorMsg>> = grpc
        .streaming(
            request,
            http::uri::PathAndQuery::from_static("/worker.WorkerService/CoordinatorChannel"),
            tonic_prost::ProstCodec::default(),
        )
        .await?;

    let mut request = tonic::Request::new(wire::ExecuteTaskRequest {
        task_key: Some(key),
        target_partition_start: 0,
        target_partition_end: 1,
    });
    with_auth(request.metadata_mut());
    grpc.ready().await.expect("ready");
    let response: tonic::Response<tonic::Streaming<arrow_flight::FlightData>> = grpc
        .server_streaming(
            request,
            http::uri::PathAndQuery::from_static("/worker.WorkerService/ExecuteTask"),
            tonic_prost::ProstCodec::default(),
        )
        .await?;
    let flight = response
        .into_inner()
        .map_err(arrow_flight::error::FlightError::from);
    arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(flight)
        .try_collect()
        .await
        .map_err(|e| tonic::Status::unknown(e.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_runs_no_plan_without_the_cluster_token() {
    let worker = Worker::start(Some(SECRET));
    // A client that reached the worker sends a plan it built by hand: a
    // raw scan of customers.customers. Without the token, or with the
    // token of another secret, it is refused and no row comes back.
    let wrong = meshql::cluster::authorization(b"not-the-secret");
    for authorization in [None, Some(wrong.as_str())] {
        let status = send_raw_plan(&worker.addr, authorization)
            .await
            .expect_err("the worker refuses the plan");
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status}");
        assert!(
            status
                .message()
                .contains("does not carry the cluster's token"),
            "{status}"
        );
        assert!(!status.message().contains('@'), "{status}");
    }
    // With the token the call gets past the door (the worker then wants
    // the task's principal, which only a coordinator sends): the token is
    // what stops the calls above.
    let right = meshql::cluster::authorization(SECRET.as_bytes());
    match send_raw_plan(&worker.addr, Some(&right)).await {
        Err(status) => assert_ne!(status.code(), tonic::Code::PermissionDenied, "{status}"),
        Ok(batches) => assert!(rows(&batches).iter().any(|r| r[1].contains('@'))),
    }

    // A coordinator without the token, or of another secret, gets the
    // worker's refusal as its query's error; with the token its plan of
    // the raw product runs.
    let sql = "SELECT region, count(DISTINCT email) AS n FROM customers.customers GROUP BY region";
    for secret in [None, Some("not-the-secret")] {
        let mesh = coordinator(&[&worker], secret);
        let admin = mesh.session(mesh.principal("admin").expect("principal"));
        assert_eq!(plan_name(&mesh, "admin", sql).await, "DistributedExec");
        let err = admin
            .collect(sql)
            .await
            .expect_err("the worker refuses the plan");
        assert!(
            err.to_string()
                .contains("does not carry the cluster's token"),
            "{secret:?}: {err}"
        );
    }
    let mesh = coordinator(&[&worker], Some(SECRET));
    let admin = mesh.session(mesh.principal("admin").expect("principal"));
    let got = admin.collect(sql).await.expect("runs with the token");
    assert_eq!(rows(&got).len(), 3, "{got:?}");
    assert!(worker.tasks() > 0);

    // A direct call of any kind is refused too.
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", worker.addr))
        .expect("uri")
        .connect()
        .await
        .expect("connects");
    let mut client = datafusion_distributed::WorkerServiceClient::new(channel);
    let status = client
        .get_worker_info(datafusion_distributed::GetWorkerInfoRequest {})
        .await
        .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_fails_its_query_by_name_and_the_next_query_runs_on_the_others() {
    let mut w1 = Worker::start(Some(SECRET));
    let w2 = Worker::start(Some(SECRET));
    let mesh = coordinator(&[&w1, &w2], Some(SECRET));
    let admin = mesh.session(mesh.principal("admin").expect("principal"));
    let sql = QUERIES[1];
    let expected = rows(&admin.collect(sql).await.expect("runs on both"));

    w1.child.kill().expect("kills");
    w1.child.wait().expect("waits");
    let err = admin.collect(sql).await.expect_err("a worker is gone");
    assert!(
        matches!(&err, meshql::Error::Unavailable(m) if m.contains(&w1.addr)),
        "{err:?}"
    );
    // The status a Flight SQL client gets.
    let status = meshql_server::status::to_status(&err, "q");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");
    assert!(status.message().contains(&w1.addr), "{status}");

    // The next query runs on the worker that is left, with the same answer.
    let again = rows(&admin.collect(sql).await.expect("runs on the other"));
    assert_eq!(again, expected);

    // With no worker left, a distributed query fails: no silent local run.
    drop(w2);
    let err = admin.collect(sql).await.expect_err("no workers");
    assert!(matches!(err, meshql::Error::Unavailable(_)), "{err:?}");
}

#[test]
fn a_worker_refuses_a_public_address_without_a_cluster_secret() {
    demo_data();
    let out = Command::new(env!("CARGO_BIN_EXE_meshql"))
        .current_dir(root())
        .args(["--mesh", "catalog", "worker", "--addr", "0.0.0.0:0"])
        .env_remove("MESHQL_CLUSTER_SECRET")
        .env_remove("MESHQL_CLUSTER_SECRET_FILE")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("MESHQL_CLUSTER_SECRET"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_22_tpch_queries_answer_the_same_on_workers_as_in_process() {
    use meshql_bench::{compare, tpch_data};
    let data = tpch_data::ensure_parquet(0.01);
    let dir = tempfile::tempdir().expect("tempdir");
    tpch_data::write_mesh(dir.path(), &data, false);
    let w1 = Worker::start_on(dir.path(), Some(SECRET));
    let w2 = Worker::start_on(dir.path(), Some(SECRET));
    let local = Mesh::open_strict(dir.path()).expect("the TPC-H mesh");
    let distributed = Mesh::open_strict(dir.path()).expect("the TPC-H mesh");
    on_workers(&distributed, &[&w1, &w2]);
    // admin reads raw; analyst has masked customer columns and a row
    // filter on nation (the TPC-H mesh's policies).
    let mut on_workers = 0;
    let mut local_only = Vec::new();
    let mut q10 = Vec::new();
    for user in ["admin", "analyst"] {
        let here = local.session(local.principal(user).expect("principal"));
        let there = distributed.session(distributed.principal(user).expect("principal"));
        for n in 1..=22 {
            let sql = tpch_data::query(n, "tpch");
            let expected = here.collect(&sql).await.expect("runs in-process");
            let got = there
                .collect(&sql)
                .await
                .unwrap_or_else(|e| panic!("{user} Q{n} on workers: {e}"));
            compare::same_results(&expected, &got, compare::is_ordered(&sql))
                .unwrap_or_else(|e| panic!("{user} Q{n}: {e}"));
            if n == 10 {
                q10.push(rows(&got));
            }
            if plan_name(&distributed, user, &sql).await == "DistributedExec" {
                on_workers += 1;
            } else {
                local_only.push(format!("{user} Q{n}"));
            }
        }
    }
    // With the threshold at 0 every query goes to the workers.
    assert_eq!(on_workers, 44, "in-process: {local_only:?}");
    // Q10 shows customers' phone numbers: raw to admin, masked to the
    // analyst, on the workers as in-process.
    let phone = |r: &Vec<String>| r[6].clone();
    assert!(
        q10[0].iter().all(|r| !phone(r).contains('*')),
        "{:?}",
        q10[0]
    );
    assert!(
        q10[1].iter().all(|r| phone(r).contains('*')),
        "{:?}",
        q10[1]
    );
    assert!(w1.tasks() > 0 && w2.tasks() > 0);
}

/// The TPC-H mesh (SF 0.01) in a directory of its own, for queries that
/// keep workers busy.
fn tpch_mesh() -> tempfile::TempDir {
    use meshql_bench::tpch_data;
    let data = tpch_data::ensure_parquet(0.01);
    let dir = tempfile::tempdir().expect("tempdir");
    tpch_data::write_mesh(dir.path(), &data, false);
    dir
}

/// Lineitem joined with itself on the supplier, then on the part: about
/// a billion joined rows, a long time of work on the workers (the tests
/// stop it).
const BUSY: &str = "SELECT count(*) FROM tpch.lineitem a \
     JOIN tpch.lineitem b ON a.l_suppkey = b.l_suppkey \
     JOIN tpch.lineitem c ON b.l_partkey = c.l_partkey";

/// The CPU time a process has used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // The fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

/// Waits until each worker has started a task after `before` of them.
async fn until_running(workers: &[&Worker], before: &[usize]) {
    for _ in 0..200 {
        if workers.iter().zip(before).all(|(w, b)| w.tasks() > *b) {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the workers did not start the query's tasks");
}

impl Worker {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_query_fails_that_query_by_name_and_the_next_runs_on_the_other() {
    let mesh_dir = tpch_mesh();
    let mut w1 = Worker::start_on(mesh_dir.path(), Some(SECRET));
    let w2 = Worker::start_on(mesh_dir.path(), Some(SECRET));
    let mesh = Mesh::open_strict(mesh_dir.path()).expect("mesh");
    on_workers(&mesh, &[&w1, &w2]);
    let admin = mesh.session(mesh.principal("admin").expect("principal"));
    let small = "SELECT l_returnflag, count(*) FROM tpch.lineitem GROUP BY l_returnflag ORDER BY 1";
    let expected = rows(&admin.collect(small).await.expect("runs"));

    let before = [w1.tasks(), w2.tasks()];
    let running = {
        let mesh = mesh.clone();
        tokio::spawn(async move {
            let admin = mesh.session(mesh.principal("admin").expect("principal"));
            admin.collect(BUSY).await
        })
    };
    until_running(&[&w1, &w2], &before).await;
    if running.is_finished() {
        panic!("the query ended before the kill: {:?}", running.await);
    }
    w1.child.kill().expect("kills");
    w1.child.wait().expect("waits");
    let err = tokio::time::timeout(std::time::Duration::from_secs(60), running)
        .await
        .expect("the query ends soon after the kill")
        .expect("joins")
        .expect_err("the query lost a worker");
    assert!(
        matches!(&err, meshql::Error::Unavailable(m) if m.contains(&w1.addr)),
        "{err:?}"
    );

    // The coordinator keeps serving: the next query runs on the worker
    // that is left.
    let before = w2.tasks();
    assert_eq!(plan_name(&mesh, "admin", small).await, "DistributedExec");
    let again = rows(&admin.collect(small).await.expect("runs on the other"));
    assert_eq!(again, expected);
    assert!(w2.tasks() > before, "{before}: {}", w2.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_query_stops_its_tasks_on_the_workers() {
    let mesh_dir = tpch_mesh();
    let w1 = Worker::start_on(mesh_dir.path(), Some(SECRET));
    let w2 = Worker::start_on(mesh_dir.path(), Some(SECRET));
    let mesh = Mesh::open_strict(mesh_dir.path()).expect("mesh");
    on_workers(&mesh, &[&w1, &w2]);
    let admin = mesh.session(mesh.principal("admin").expect("principal"));

    let running = {
        let mesh = mesh.clone();
        tokio::spawn(async move {
            let admin = mesh.session(mesh.principal("admin").expect("principal"));
            admin.collect(BUSY).await
        })
    };
    until_running(&[&w1, &w2], &[0, 0]).await;
    assert!(!running.is_finished(), "the query ended before the cancel");
    // The workers are busy with it...
    let busy = cpu_ticks(w1.child.id()) + cpu_ticks(w2.child.id());
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let busy = cpu_ticks(w1.child.id()) + cpu_ticks(w2.child.id()) - busy;
    assert!(busy > 10, "the workers used {busy} ticks in 0.5 s");
    // ...until the query is cancelled (what Ctrl-C in the shell, a Flight
    // SQL CancelFlightInfo and a client disconnect do).
    running.abort();
    let _ = running.await;
    until_stopped(&[&w1, &w2], &[0, 0], "cancel").await;
    // An operator in the middle of a batch finishes it before it sees the
    // drop, which takes longer on a loaded machine; the query itself would
    // keep both workers busy for minutes.
    let mut idle = u64::MAX;
    for _ in 0..8 {
        let before = cpu_ticks(w1.child.id()) + cpu_ticks(w2.child.id());
        tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
        idle = cpu_ticks(w1.child.id()) + cpu_ticks(w2.child.id()) - before;
        if idle < 20 {
            break;
        }
    }
    assert!(
        idle < 20,
        "the workers still used {idle} ticks a second, 8 s after the cancel"
    );

    // And they serve the next query.
    let got = admin
        .collect("SELECT count(*) FROM tpch.nation")
        .await
        .expect("runs");
    assert_eq!(rows(&got), vec![vec!["25".to_string()]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_memory_limit_holds_on_its_workers() {
    use futures::TryStreamExt;
    let mesh_dir = tpch_mesh();
    let w1 = Worker::start_on(mesh_dir.path(), Some(SECRET));
    let w2 = Worker::start_on(mesh_dir.path(), Some(SECRET));
    let mesh = Mesh::open_strict(mesh_dir.path()).expect("mesh");
    on_workers(&mesh, &[&w1, &w2]);
    let admin = mesh.session(mesh.principal("admin").expect("principal"));
    // The join's hash tables (lineitem's comments, about a megabyte per
    // task) are built on the workers; the coordinator only adds up counts.
    let sql = "SELECT count(*) FROM tpch.lineitem a JOIN tpch.lineitem b \
               ON a.l_orderkey = b.l_orderkey AND a.l_comment = b.l_comment";
    let run = |limit: Option<usize>| {
        let admin = &admin;
        async move {
            let options = QueryOptions {
                memory_limit: limit,
                ..QueryOptions::default()
            };
            let query = admin.plan(sql, &options).await.expect("plans");
            assert_eq!(query.physical_plan().name(), "DistributedExec");
            let stream = query.execute().expect("starts");
            stream.try_collect::<Vec<_>>().await
        }
    };
    let unlimited = run(None).await.expect("runs without a limit");
    assert_eq!(rows(&unlimited).len(), 1);
    let err = run(Some(256 * 1024))
        .await
        .expect_err("the workers' hash tables are over the limit");
    assert!(err.to_string().contains("Resources exhausted"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iceberg_products_split_across_workers_with_the_same_answers() {
    use meshql_bench::{compare, tpch_data};
    let data = tokio::task::spawn_blocking(|| tpch_data::ensure(0.01))
        .await
        .expect("the TPC-H Iceberg tables");
    let dir = tempfile::tempdir().expect("tempdir");
    tpch_data::write_mesh(dir.path(), &data, true);
    // The analyst's policies of the Parquet domain, for the Iceberg one.
    let analyst_rules = tpch_data::POLICIES
        .split_once("  - name: analysts")
        .map(|(_, rest)| format!("  - name: analysts{rest}"))
        .expect("analyst rules")
        .replace("domain: tpch\n", "domain: tpch_iceberg\n")
        .replace("name: analysts", "name: Iceberg analysts");
    let policies = dir.path().join("policies.yaml");
    let text = std::fs::read_to_string(&policies).expect("policies") + &analyst_rules;
    std::fs::write(&policies, text).expect("policies");
    let w1 = Worker::start_on(dir.path(), Some(SECRET));
    let w2 = Worker::start_on(dir.path(), Some(SECRET));
    let open = |dir: PathBuf| async move {
        tokio::task::spawn_blocking(move || Mesh::open_strict(&dir))
            .await
            .expect("opens")
            .expect("the TPC-H mesh")
    };
    let local = open(dir.path().to_path_buf()).await;
    let distributed = open(dir.path().to_path_buf()).await;
    assert!(
        local
            .session(local.principal("admin").expect("admin"))
            .collect("SELECT count(*) FROM tpch_iceberg.nation")
            .await
            .is_ok(),
        "the Iceberg products are there"
    );
    on_workers(&distributed, &[&w1, &w2]);
    for user in ["admin", "analyst"] {
        let here = local.session(local.principal(user).expect("principal"));
        let there = distributed.session(distributed.principal(user).expect("principal"));
        for n in 1..=22 {
            let sql = tpch_data::query(n, "tpch_iceberg");
            let expected = here.collect(&sql).await.expect("runs in-process");
            let got = there
                .collect(&sql)
                .await
                .unwrap_or_else(|e| panic!("{user} Q{n} on workers: {e}"));
            compare::same_results(&expected, &got, compare::is_ordered(&sql))
                .unwrap_or_else(|e| panic!("{user} Q{n}: {e}"));
            if n == 10 {
                // Phone numbers: raw to admin, masked to the analyst.
                let masked = rows(&got).iter().all(|r| r[6].contains('*'));
                assert_eq!(masked, user == "analyst", "{user}: {:?}", rows(&got));
            }
            assert_eq!(
                plan_name(&distributed, user, &sql).await,
                "DistributedExec",
                "{user} Q{n}"
            );
        }
    }
    // The scan of one Iceberg table is dealt out to both workers' tasks.
    let admin = distributed.session(distributed.principal("admin").expect("principal"));
    let plan = rows(
        &admin
            .collect("EXPLAIN SELECT l_returnflag, count(*) FROM tpch_iceberg.lineitem GROUP BY 1")
            .await
            .expect("explains"),
    )
    .concat()
    .join("\n");
    assert!(plan.contains("[Stage 1]"), "{plan}");
    let isolated = plan
        .lines()
        .skip_while(|l| !l.contains("PartitionIsolatorExec: tasks=2"))
        .nth(1)
        .unwrap_or_default();
    assert!(isolated.contains("IcebergScan"), "{plan}");
    assert!(w1.tasks() > 0 && w2.tasks() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_serve_over_tls_and_refuse_plaintext() {
    let (w1, w2) = (
        Worker::start_tls(Some(SECRET)),
        Worker::start_tls(Some(SECRET)),
    );
    let addrs = [w1.addr.clone(), w2.addr.clone()];
    let ca = std::fs::read(root().join("testdata/tls/server.crt")).expect("ca");
    let local = demo_mesh();
    let mesh = demo_mesh();
    let cluster = Cluster::new(&addrs, Some(0), Some(SECRET.as_bytes()))
        .expect("cluster")
        .with_tls(&ca);
    assert!(cluster.tls());
    mesh.set_cluster(Some(cluster));
    // A query with a shuffle: its second stage reads the first from the
    // other workers, worker to worker, over TLS too.
    let sql = QUERIES[1];
    for user in ["admin", "eu_analyst"] {
        let here = local.session(local.principal(user).expect("principal"));
        let there = mesh.session(mesh.principal(user).expect("principal"));
        assert_eq!(plan_name(&mesh, user, sql).await, "DistributedExec");
        assert_eq!(
            rows(&there.collect(sql).await.expect("runs over TLS")),
            rows(&here.collect(sql).await.expect("runs in-process")),
            "{user}"
        );
    }
    assert!(w1.tasks() > 0 && w2.tasks() > 0);

    // A coordinator that speaks plaintext to them gets nowhere.
    let plain = demo_mesh();
    plain.set_cluster(Some(
        Cluster::new(&addrs, Some(0), Some(SECRET.as_bytes())).expect("cluster"),
    ));
    let admin = plain.session(plain.principal("admin").expect("principal"));
    let err = admin.collect(sql).await.expect_err("plaintext is refused");
    assert!(matches!(err, meshql::Error::Unavailable(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_sql_governance_holds_on_a_coordinator_with_workers() {
    let (w1, w2) = (Worker::start(Some(SECRET)), Worker::start(Some(SECRET)));
    let mesh = coordinator(&[&w1, &w2], Some(SECRET));
    let server = crate::flight::start(mesh, meshql_server::ServerOptions::default()).await;
    crate::flight::governed_results_over_the_wire(&server).await;
    crate::flight::hidden_and_missing_products_fail_alike(&server).await;
    assert!(w1.tasks() > 0 && w2.tasks() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_sql_cancel_and_disconnect_stop_the_tasks_on_the_workers() {
    use arrow_flight::sql::CommandStatementQuery;
    use futures::StreamExt;
    use prost::Message;
    let mesh_dir = tpch_mesh();
    let w1 = Worker::start_on(mesh_dir.path(), Some(SECRET));
    let w2 = Worker::start_on(mesh_dir.path(), Some(SECRET));
    let mesh = Mesh::open_strict(mesh_dir.path()).expect("mesh");
    on_workers(&mesh, &[&w1, &w2]);
    let server = crate::flight::start(mesh, meshql_server::ServerOptions::default()).await;
    let workers = [&w1, &w2];

    // CancelFlightInfo, then a client that goes away mid-query.
    for how in ["CancelFlightInfo", "disconnect"] {
        let before: Vec<usize> = workers.iter().map(|w| w.tasks()).collect();
        let stopped_before: Vec<usize> = workers.iter().map(|w| w.stopped()).collect();
        let mut analyst = crate::flight::demo_login(server.addr, "analyst").await;
        let info = analyst
            .info(CommandStatementQuery {
                query: BUSY.into(),
                transaction_id: None,
            })
            .await
            .expect("plans");
        let ticket = info.endpoint[0].ticket.clone().expect("ticket");
        let mut stream = analyst.stream(ticket).await.expect("starts");
        let reading = tokio::spawn(async move { stream.next().await.map(|r| r.is_ok()) });
        until_running(&workers, &before).await;
        assert!(!reading.is_finished(), "{how}: the query ended early");
        match how {
            "CancelFlightInfo" => {
                let cancel = arrow_flight::CancelFlightInfoRequest { info: Some(info) };
                analyst
                    .action("CancelFlightInfo", cancel.encode_to_vec())
                    .await
                    .expect("cancels");
                let ended = tokio::time::timeout(std::time::Duration::from_secs(20), reading)
                    .await
                    .expect("the stream ends promptly")
                    .expect("joins");
                assert_ne!(ended, Some(true), "{how}: a result after the cancel");
            }
            _ => {
                reading.abort();
                drop(analyst);
            }
        }
        until_stopped(&workers, &stopped_before, how).await;
    }
}

/// Waits until each worker has logged stopping a task more often than
/// `before` says.
async fn until_stopped(workers: &[&Worker], before: &[usize], how: &str) {
    for _ in 0..200 {
        if workers.iter().zip(before).all(|(w, b)| w.stopped() > *b) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for (w, b) in workers.iter().zip(before) {
        assert!(
            w.stopped() > *b,
            "{how}: {} kept its tasks: {}",
            w.addr,
            w.log_text()
        );
    }
}

impl Worker {
    /// The tasks this worker's log says it stopped because their
    /// coordinator dropped them.
    fn stopped(&self) -> usize {
        self.log_text()
            .matches("stopped a task its coordinator dropped")
            .count()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_in_the_shell_and_the_query_timeout_stop_the_tasks_on_the_workers() {
    let mesh_dir = tpch_mesh();
    let w1 = Worker::start_on(mesh_dir.path(), Some(SECRET));
    let w2 = Worker::start_on(mesh_dir.path(), Some(SECRET));
    let workers = [&w1, &w2];
    let addrs = format!("{},{}", w1.addr, w2.addr);

    // Ctrl-C in a shell that coordinates the workers.
    let before: Vec<usize> = workers.iter().map(|w| w.tasks()).collect();
    let stopped_before: Vec<usize> = workers.iter().map(|w| w.stopped()).collect();
    let shell = Command::new(env!("CARGO_BIN_EXE_meshql"))
        .current_dir(root())
        .arg("--mesh")
        .arg(mesh_dir.path())
        .args(["--workers", &addrs, "--distribute-above", "0"])
        .args(["-u", "admin", "-c", BUSY])
        .env("MESHQL_CLUSTER_SECRET", SECRET)
        .env_remove("MESHQL_WORKERS")
        .env_remove("MESHQL_MESH")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts the shell");
    until_running(&workers, &before).await;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(shell.id()).expect("pid fits"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT sent");
    let out = tokio::task::spawn_blocking(move || shell.wait_with_output())
        .await
        .expect("joins")
        .expect("waits");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("query cancelled"), "{err}");
    until_stopped(&workers, &stopped_before, "Ctrl-C").await;

    // The server's query timeout, on a coordinator with the workers.
    let mesh = Mesh::open_strict(mesh_dir.path()).expect("mesh");
    on_workers(&mesh, &[&w1, &w2]);
    let server = crate::flight::start(
        mesh,
        meshql_server::ServerOptions {
            query_timeout: Some(std::time::Duration::from_secs(3)),
            ..meshql_server::ServerOptions::default()
        },
    )
    .await;
    let before: Vec<usize> = workers.iter().map(|w| w.tasks()).collect();
    let stopped_before: Vec<usize> = workers.iter().map(|w| w.stopped()).collect();
    let mut analyst = crate::flight::demo_login(server.addr, "analyst").await;
    let err = analyst.sql(BUSY).await.expect_err("stopped at the timeout");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
    assert!(err.message().contains("longer than its limit"), "{err}");
    assert!(
        workers.iter().zip(&before).all(|(w, b)| w.tasks() > *b),
        "the query did not run on both workers"
    );
    until_stopped(&workers, &stopped_before, "timeout").await;
}

/// What `docker/compose.yaml` deploys, as processes: a coordinator and two
/// workers over one S3-compatible store, each reading it with the
/// credentials of its `mesh.yaml`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_and_workers_over_a_shared_s3_store_answer_as_in_process() {
    use crate::s3::{ACCESS_KEY, QUESTIONS as S3_QUESTIONS, SECRET_KEY};
    let server = crate::s3::start("shared").await;
    crate::s3::upload(&server.endpoint, "shared", "mesh/v1", &demo_data()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    crate::s3::s3_mesh(
        dir.path(),
        &server.endpoint,
        "shared",
        ACCESS_KEY,
        SECRET_KEY,
    );
    let w1 = Worker::start_on(dir.path(), Some(SECRET));
    let w2 = Worker::start_on(dir.path(), Some(SECRET));
    let local = Mesh::open_strict(dir.path()).expect("opens");
    let distributed = Mesh::open_strict(dir.path()).expect("opens");
    on_workers(&distributed, &[&w1, &w2]);
    for user in ["admin", "eu_analyst"] {
        let here = local.session(local.principal(user).expect("principal"));
        let there = distributed.session(distributed.principal(user).expect("principal"));
        for sql in S3_QUESTIONS {
            let expected = rows(&here.collect(sql).await.expect("in-process"));
            let got = rows(
                &there
                    .collect(sql)
                    .await
                    .unwrap_or_else(|e| panic!("{user}: {sql}: {e}")),
            );
            assert_eq!(got, expected, "{user}: {sql}");
            assert!(!got.is_empty(), "{user}: {sql}");
            assert_eq!(
                plan_name(&distributed, user, sql).await,
                "DistributedExec",
                "{user}: {sql}"
            );
        }
    }
    // The EU analyst's row filter holds on the workers: fewer orders.
    let count = "SELECT count(*) FROM sales.orders";
    let admin = distributed.session(distributed.principal("admin").expect("p"));
    let eu = distributed.session(distributed.principal("eu_analyst").expect("p"));
    let all = rows(&admin.collect(count).await.expect("runs"));
    let eu_rows = rows(&eu.collect(count).await.expect("runs"));
    assert!(
        eu_rows[0][0].parse::<u64>().expect("n") < all[0][0].parse::<u64>().expect("n"),
        "{eu_rows:?} {all:?}"
    );
    assert!(
        w1.tasks() > 0 && w2.tasks() > 0,
        "both workers read the store"
    );
}
