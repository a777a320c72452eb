//! The runtime queries plan and execute on, apart from the one that serves
//! gRPC.
//!
//! The server's own runtime accepts connections, authenticates, answers
//! metadata calls, enforces deadlines and handles signals. A query keeps
//! the cores busy for as long as it runs; on the same runtime, eight slow
//! queries would leave no thread for a handshake, a deadline or SIGTERM.
//! So queries run here, on threads of their own (as DataFusion's
//! `thread_pools` example and influxdb3's dedicated executor do), in lanes
//! per principal (see [`QueryExecutor`]), and their batches cross to the
//! serving runtime through a bounded channel.
//! A query that ends, fails, times out or is cancelled is aborted here; a
//! panic fails that query only.
//!
//! Its threads have a large stack: planning walks expression trees
//! recursively, and the statement's limits (`meshql::limits`) keep the
//! depth within what that stack holds.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::runtime::{Handle, Runtime};
use tokio::task::{JoinError, JoinHandle};

/// The stack of a query thread. Only what planning touches is committed.
const STACK_BYTES: usize = 256 * 1024 * 1024;

/// The query runtimes: lanes of one thread per core each. A principal's
/// queries run in one lane while any of them runs, and principals with
/// queries running at once get lanes of their own as far as there are
/// lanes: the kernel then shares the cores among the principals, not among
/// the queries, so a user with eight heavy queries gets the share of one
/// user, and another's one-row query waits for no one's operators.
pub(crate) struct QueryExecutor {
    lanes: Vec<Lane>,
    /// Principals with work running: their lane and how much work.
    busy: Arc<Mutex<HashMap<String, (usize, usize)>>>,
}

struct Lane {
    runtime: Option<Runtime>,
    handle: Handle,
}

impl std::fmt::Debug for QueryExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryExecutor")
            .field("lanes", &self.lanes.len())
            .finish_non_exhaustive()
    }
}

impl QueryExecutor {
    /// `lanes` runtimes of one thread per core.
    pub(crate) fn new(lanes: usize) -> std::io::Result<Self> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let lanes = (0..lanes.max(1))
            .map(|i| {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(cores)
                    .thread_name(format!("meshql-query-{i}"))
                    .thread_stack_size(STACK_BYTES)
                    .enable_all()
                    .build()?;
                Ok(Lane {
                    handle: runtime.handle().clone(),
                    runtime: Some(runtime),
                })
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Self {
            lanes,
            busy: Arc::default(),
        })
    }

    /// The lane of `user`'s next work: theirs while they have work running,
    /// else the one fewest principals use.
    fn lane(&self, user: &str) -> (Handle, LaneGuard) {
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        let lane = match busy.get_mut(user) {
            Some((lane, count)) => {
                *count += 1;
                *lane
            }
            None => {
                let mut users = vec![0usize; self.lanes.len()];
                for (lane, _) in busy.values() {
                    users[*lane] += 1;
                }
                let lane = (0..users.len()).min_by_key(|i| users[*i]).unwrap_or(0);
                busy.insert(user.to_string(), (lane, 1));
                lane
            }
        };
        let guard = LaneGuard {
            busy: Arc::clone(&self.busy),
            user: user.to_string(),
        };
        (self.lanes[lane].handle.clone(), guard)
    }

    /// Starts `work` of `user` on their lane. Dropping the returned task
    /// aborts the work.
    pub(crate) fn spawn<T: Send + 'static>(
        &self,
        user: &str,
        work: impl Future<Output = T> + Send + 'static,
    ) -> QueryTask<T> {
        let (handle, guard) = self.lane(user);
        QueryTask {
            handle: handle.spawn(work),
            _lane: guard,
        }
    }

    /// Runs `work` of `user` on their lane and waits for it; `Err` when it
    /// panicked.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        user: &str,
        work: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, JoinError> {
        let mut task = self.spawn(user, work);
        (&mut task.handle).await
    }
}

impl Drop for QueryExecutor {
    /// Stops at once: a query that does not yield must not hold up the
    /// server's exit.
    fn drop(&mut self) {
        for lane in &mut self.lanes {
            if let Some(runtime) = lane.runtime.take() {
                runtime.shutdown_background();
            }
        }
    }
}

/// A principal's claim on a lane, for as long as their work runs.
struct LaneGuard {
    busy: Arc<Mutex<HashMap<String, (usize, usize)>>>,
    user: String,
}

impl Drop for LaneGuard {
    fn drop(&mut self) {
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, count)) = busy.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                busy.remove(&self.user);
            }
        }
    }
}

/// Work on a query lane, aborted when dropped.
pub(crate) struct QueryTask<T> {
    handle: JoinHandle<T>,
    _lane: LaneGuard,
}

impl<T> Drop for QueryTask<T> {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_fails_its_query_only_and_a_dropped_task_stops() {
        let executor = QueryExecutor::new(2).expect("a runtime");
        let serving = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        serving.block_on(async {
            let err = executor
                .run("u", async { panic!("a bug in one query") })
                .await
                .expect_err("the panic is caught");
            assert!(err.is_panic());
            assert_eq!(executor.run("u", async { 1 + 1 }).await.ok(), Some(2));
            // Principals running at once get lanes of their own.
            let (a, _a) = executor.lane("a");
            let (b, _b) = executor.lane("b");
            let (a2, _a2) = executor.lane("a");
            assert_eq!(a.id(), a2.id());
            assert_ne!(a.id(), b.id());
            // Dropping the task aborts its work at the next yield.
            let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
            let task = executor.spawn("u", async move {
                let _keep = tx;
                std::future::pending::<()>().await;
            });
            drop(task);
            assert!(
                rx.recv().await.is_none(),
                "the aborted work dropped its sender"
            );
        });
    }
}
