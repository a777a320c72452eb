//! A second plan for a query whose hash join runs out of memory.
//!
//! A hash join holds its whole build side in memory and cannot spill, so
//! under a per-query memory limit a join whose build side is larger than
//! the limit fails, while the same join by sort and merge (whose sorts
//! spill to disk) would answer. DataFusion picks hash joins up front
//! (`optimizer.prefer_hash_join`) because they are faster when they fit.
//! meshql keeps that choice and, when the query fails with
//! `ResourcesExhausted` where hash joins hold memory, before it has
//! delivered a row, drops the first plan (a hash join keeps its build side
//! in its plan node), waits for its memory to come back and plans the same
//! optimized logical plan again with sort-merge joins. The logical plan is the one
//! governance already rewrote for the principal, and only the physical
//! planner reads the option, so the second plan applies the same masks and
//! row filters. The audit record and `EXPLAIN ANALYZE` say that it
//! happened.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{FairSpillPool, MemoryPool};
use datafusion::execution::session_state::SessionState;
use datafusion::execution::{SendableRecordBatchStream, SessionStateBuilder, TaskContext};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use futures::{StreamExt, TryStreamExt};

use super::limits;

/// How long the failed attempt's operators may take to give their memory
/// back (their tasks are aborted, which completes asynchronously).
const SETTLE: Duration = Duration::from_secs(2);

/// Why a query ran on its second plan, once it has; shared with whoever
/// records the query (the audit log).
#[derive(Clone, Debug, Default)]
pub struct Replanned(Arc<OnceLock<String>>);

impl Replanned {
    /// Why the query was planned again, when it was.
    pub fn get(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }
}

/// A plan and the context it runs in (its memory pool).
pub(crate) type Running = (Arc<dyn ExecutionPlan>, Arc<TaskContext>);

/// What planning the query again takes: its own state (its memory pool,
/// its options) and its optimized, governed logical plan.
pub(crate) struct Fallback {
    state: SessionState,
    logical: LogicalPlan,
    limit: usize,
    /// The plan it runs: the first, then the second. The first is dropped
    /// when the second replaces it, since a hash join keeps its build side
    /// in its plan node (shared by the partitions that probe it) until the
    /// node is dropped.
    current: Mutex<Running>,
    /// Set, with the reason, when the second plan replaces the first.
    replanned: Replanned,
}

impl Fallback {
    /// A fallback for `physical`, when it has one: a query under a memory
    /// limit whose plan joins by hash, in a state that prefers hash joins.
    pub(crate) fn for_plan(
        physical: &Arc<dyn ExecutionPlan>,
        task: &Arc<TaskContext>,
        state: SessionState,
        logical: LogicalPlan,
        limit: Option<usize>,
    ) -> Option<Arc<Self>> {
        let limit = limit?;
        if !state.config_options().optimizer.prefer_hash_join || !joins_by_hash(physical) {
            return None;
        }
        Some(Arc::new(Self {
            state,
            logical,
            limit,
            current: Mutex::new((Arc::clone(physical), Arc::clone(task))),
            replanned: Replanned::default(),
        }))
    }

    /// Starts the query: on its second plan once it has one, else on the
    /// first, ready to fall back to the second.
    pub(crate) fn execute(self: &Arc<Self>) -> Result<SendableRecordBatchStream> {
        let replaced = self.replaced();
        let (plan, task) = self.current();
        let stream = execute_stream(plan, Arc::clone(&task))?;
        if replaced {
            return Ok(stream);
        }
        let schema = stream.schema();
        let attempt = futures::stream::once(attempt(stream, Arc::clone(self), task)).try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, attempt)))
    }

    /// Why the query ran on its second plan, once it has.
    pub(crate) fn replanned(&self) -> Replanned {
        self.replanned.clone()
    }

    /// The plan the query runs now.
    pub(crate) fn current(&self) -> Running {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn replaced(&self) -> bool {
        self.replanned.get().is_some()
    }

    /// Plans the query again with sort-merge joins and makes that its
    /// plan, dropping the first.
    async fn plan_again(&self) -> Result<Running> {
        if self.replaced() {
            return Ok(self.current());
        }
        let mut config = self.state.config().clone();
        config.options_mut().optimizer.prefer_hash_join = false;
        // A pool of its own, of the same limit, so that nothing the first
        // attempt may still hold counts against the second; a fair one,
        // which gives each spilling operator its share of what the others
        // leave. (Under a first-come pool the sorts of the partitions
        // race: a sort frees its merge reservation before it merges, and
        // another partition's sort may take it, so the same query under
        // the same limit answers or fails by chance. Under the fair pool it
        // does one or the other every time.)
        let mut runtime = self.state.runtime_env().as_ref().clone();
        runtime.memory_pool = limits::tracked_pool(FairSpillPool::new(self.limit));
        let state = SessionStateBuilder::new_from_existing(self.state.clone())
            .with_config(config)
            .with_runtime_env(Arc::new(runtime))
            .build();
        let physical = state
            .query_planner()
            .create_physical_plan(&self.logical, &state)
            .await?;
        let second = (limits::yielding(physical)?, state.task_ctx());
        let first = std::mem::replace(
            &mut *self.current.lock().unwrap_or_else(|p| p.into_inner()),
            second.clone(),
        );
        drop(first);
        let _ = self.replanned.0.set(self.reason());
        Ok(second)
    }

    fn reason(&self) -> String {
        format!(
            "hash joins, which cannot spill, did not fit in the query's memory limit of {}; \
             planned again with sort-merge joins, which spill to disk",
            human_bytes(self.limit)
        )
    }

    /// Whether the query's root is `EXPLAIN ANALYZE`, whose output then
    /// says that the plan shown is the second one.
    fn analyzes(&self) -> bool {
        match &self.logical {
            LogicalPlan::Analyze(_) => true,
            LogicalPlan::Extension(e) => e.node.name() == "MeshExplain",
            _ => false,
        }
    }
}

fn joins_by_hash(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.as_any().is::<HashJoinExec>() || plan.children().into_iter().any(joins_by_hash)
}

/// `first`, the stream of the query's first plan (run in `task`); when it
/// fails for memory held by hash joins before its first batch, the stream
/// of the second plan instead.
async fn attempt(
    mut first: SendableRecordBatchStream,
    fallback: Arc<Fallback>,
    task: Arc<TaskContext>,
) -> Result<SendableRecordBatchStream> {
    let failure = match first.next().await {
        Some(Err(e)) if held_by_hash_joins(&e) => e,
        Some(item) => {
            let schema = first.schema();
            let rest = futures::stream::once(async { item }).chain(first);
            return Ok(Box::pin(RecordBatchStreamAdapter::new(schema, rest)));
        }
        None => return Ok(first),
    };
    drop(first);
    let (plan, second) = fallback
        .plan_again()
        .await
        .map_err(|e| DataFusionError::Context(format!("{e}"), Box::new(failure)))?;
    settle(task.memory_pool().as_ref()).await;
    let stream = execute_stream(plan, second)?;
    if fallback.analyzes() {
        return Ok(annotated(stream, &fallback.reason()));
    }
    Ok(stream)
}

/// Whether `e` is the memory limit, reached where hash joins hold memory:
/// the allocation that failed was a hash join's, or hash joins are among
/// the largest holders the query's pool names.
fn held_by_hash_joins(e: &DataFusionError) -> bool {
    match e.find_root() {
        DataFusionError::ResourcesExhausted(message) => message.contains("HashJoinInput"),
        _ => false,
    }
}

fn human_bytes(n: usize) -> String {
    if n >= 1 << 30 && n.is_multiple_of(1 << 30) {
        format!("{} GiB", n >> 30)
    } else if n >= 1 << 20 {
        format!("{} MiB", n >> 20)
    } else {
        format!("{} KiB", n >> 10)
    }
}

/// Waits, a bounded time, until the failed attempt's memory is back in the
/// query's pool. (The pool is the query's own: nothing else reserves from
/// it.)
async fn settle(pool: &dyn MemoryPool) {
    let until = tokio::time::Instant::now() + SETTLE;
    while pool.reserved() > 0 && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `EXPLAIN ANALYZE`'s rows and one more, `Memory fallback`: why the plan
/// shown is the second one.
fn annotated(stream: SendableRecordBatchStream, reason: &str) -> SendableRecordBatchStream {
    let schema = stream.schema();
    let note = note_batch(&schema, reason);
    let rest = futures::stream::iter(note.map(Ok));
    Box::pin(RecordBatchStreamAdapter::new(schema, stream.chain(rest)))
}

fn note_batch(schema: &SchemaRef, reason: &str) -> Option<RecordBatch> {
    let strings = schema.fields().len() == 2
        && schema
            .fields()
            .iter()
            .all(|f| f.data_type() == &DataType::Utf8);
    if !strings {
        return None;
    }
    RecordBatch::try_new(
        Arc::clone(schema),
        vec![
            Arc::new(StringArray::from(vec!["Memory fallback"])),
            Arc::new(StringArray::from(vec![reason])),
        ],
    )
    .ok()
}
