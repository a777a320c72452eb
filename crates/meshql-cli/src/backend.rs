//! What the shell talks to. The embedded engine today; a remote Flight SQL
//! server implements the same trait.

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::execution::SendableRecordBatchStream;
use meshql::Session;
use meshql::manifest::Contract;

#[async_trait]
pub trait Backend: Send + Sync {
    /// Starts one statement; results stream from the returned value.
    async fn execute(&self, sql: &str) -> Result<(SchemaRef, SendableRecordBatchStream), String>;
    /// Contracts of the products the principal can see.
    fn contracts(&self) -> Vec<Contract>;
    /// Names of every product, `domain.product`.
    fn product_names(&self) -> Vec<String>;
}

pub struct Embedded {
    pub session: Session,
    /// The mesh's audit log (`audit.path` of mesh.yaml), if it keeps one.
    pub audit: Option<std::sync::Arc<meshql::audit::AuditLog>>,
}

#[async_trait]
impl Backend for Embedded {
    async fn execute(&self, sql: &str) -> Result<(SchemaRef, SendableRecordBatchStream), String> {
        let stream = match &self.audit {
            Some(log) => self.session.execute_audited(sql, log, None).await,
            None => self.session.execute(sql).await,
        }
        .map_err(|e| e.to_string())?;
        Ok((stream.schema(), stream))
    }

    fn contracts(&self) -> Vec<Contract> {
        self.session.visible_contracts()
    }

    fn product_names(&self) -> Vec<String> {
        self.session.product_names()
    }
}
