//! Limits: each principal's share of the concurrent query slots, and the
//! audit record of a statement refused before it ran.

use super::*;

impl MeshFlightSql {
    /// Waits for a slot of the caller's share, then one of the server's,
    /// both within the queue timeout.
    pub(super) async fn slots(
        &self,
        user: &str,
    ) -> Result<(OwnedSemaphorePermit, OwnedSemaphorePermit), Status> {
        let share = Arc::clone(
            self.shares
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(user.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(self.options.user_share()))),
        );
        let wait = async {
            let mine = share.acquire_owned().await.ok()?;
            let any = Arc::clone(&self.permits).acquire_owned().await.ok()?;
            Some((mine, any))
        };
        match tokio::time::timeout(self.options.queue_timeout, wait).await {
            Ok(Some(permits)) => Ok(permits),
            _ => Err(Status::resource_exhausted(format!(
                "the server is busy: this query waited {:?} for its turn ({} queries run at once, at most {} of one user); try again later",
                self.options.queue_timeout,
                self.options.max_concurrent_queries,
                self.options.user_share()
            ))),
        }
    }

    /// Audits a statement refused before it ran, and passes on the status.
    pub(super) fn refused<T>(
        &self,
        principal: &Principal,
        request: &Request<T>,
        claims: &HandleClaims,
        status: Status,
    ) -> Status {
        let mut guard = AuditGuard::new(
            self.audit.clone(),
            AuditRecord::start(
                SystemTime::now(),
                &claims.id,
                principal,
                client_addr(request),
                &claims.q,
            ),
        );
        guard.fail(outcome(&status));
        status
    }
}
