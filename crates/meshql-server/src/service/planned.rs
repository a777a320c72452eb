//! Statements planned by `GetFlightInfo`, kept for the `DoGet` of their
//! ticket, so that a statement is planned once.
//!
//! A ticket stays stateless: it carries the signed statement, and a `DoGet`
//! that finds no kept plan (a second fetch of the same ticket, another
//! server behind a balancer, a plan dropped for room or age) plans it
//! again. A kept plan is taken by its query id together with the whole
//! principal that planned it (user, roles, groups, attributes), so a
//! ticket presented by anyone else, or by the same user holding other
//! roles, never meets it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use meshql::{Principal, Query};

/// At most this many plans wait for their `DoGet`; a new one pushes out the
/// oldest. Plans hold no data before they run, only operators.
const CAPACITY: usize = 256;

/// A plan not fetched within this long is dropped; its ticket plans again.
const KEPT_FOR: Duration = Duration::from_secs(60);

/// Plans waiting for their `DoGet`, by query id.
#[derive(Default)]
pub(super) struct PlannedStatements {
    plans: Mutex<HashMap<String, Kept>>,
}

struct Kept {
    principal: Principal,
    at: Instant,
    query: Query,
}

impl PlannedStatements {
    /// Keeps `query`, planned as `principal` for the ticket of query `id`.
    pub(super) fn keep(&self, id: &str, principal: &Principal, query: Query) {
        let mut plans = self.lock();
        if plans.len() >= CAPACITY {
            plans.retain(|_, k| k.at.elapsed() < KEPT_FOR);
        }
        if plans.len() >= CAPACITY
            && let Some(oldest) = plans
                .iter()
                .min_by_key(|(_, k)| k.at)
                .map(|(id, _)| id.clone())
        {
            plans.remove(&oldest);
        }
        plans.insert(
            id.to_string(),
            Kept {
                principal: principal.clone(),
                at: Instant::now(),
                query,
            },
        );
    }

    /// The plan kept for query `id`, if `principal` made it and it is not
    /// too old; it is taken, so a second `DoGet` of the ticket plans anew.
    pub(super) fn take(&self, id: &str, principal: &Principal) -> Option<Query> {
        let mut plans = self.lock();
        let kept = plans.get(id)?;
        if kept.principal != *principal {
            return None;
        }
        let kept = plans.remove(id)?;
        (kept.at.elapsed() < KEPT_FOR).then_some(kept.query)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Kept>> {
        self.plans.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mesh with no products: the plans here are of `SELECT 1`.
    fn mesh() -> (tempfile::TempDir, meshql::Mesh) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("mesh.yaml"),
            "apiVersion: meshql/v1\nkind: Mesh\nname: test\nstorage:\n  local:\n    type: local\n    root: data\n",
        )
        .expect("writes mesh.yaml");
        let catalog = meshql::manifest::Catalog::load_strict(dir.path()).expect("loads");
        (dir, meshql::Mesh::from_catalog(catalog).expect("mesh"))
    }

    async fn query(session: &meshql::Session) -> Query {
        session
            .plan("SELECT 1 AS one", &meshql::QueryOptions::default())
            .await
            .expect("plans")
    }

    #[tokio::test]
    async fn a_plan_is_taken_once_and_only_by_the_principal_that_made_it() {
        let (_dir, mesh) = mesh();
        let admin = Principal::new("admin").with_role("admin");
        let session = mesh.session(admin.clone());
        let kept = PlannedStatements::default();
        kept.keep("q1", &admin, query(&session).await);
        // The same user with other roles, or another user, is not given it.
        assert!(kept.take("q1", &Principal::new("admin")).is_none());
        assert!(kept.take("q1", &Principal::new("guest")).is_none());
        assert!(kept.take("q2", &admin).is_none());
        let q = kept.take("q1", &admin).expect("kept for its principal");
        assert_eq!(q.schema.field(0).name(), "one");
        assert!(kept.take("q1", &admin).is_none(), "taken once");
    }

    #[tokio::test]
    async fn the_oldest_plan_makes_room() {
        let (_dir, mesh) = mesh();
        let admin = Principal::new("admin");
        let session = mesh.session(admin.clone());
        let kept = PlannedStatements::default();
        for i in 0..CAPACITY + 3 {
            kept.keep(&format!("q{i}"), &admin, query(&session).await);
        }
        assert_eq!(kept.len(), CAPACITY);
        for i in 0..3 {
            assert!(
                kept.take(&format!("q{i}"), &admin).is_none(),
                "q{i} pushed out"
            );
        }
        assert!(kept.take(&format!("q{}", CAPACITY + 2), &admin).is_some());
    }
}
