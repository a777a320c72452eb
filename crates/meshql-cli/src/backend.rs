//! What the shell talks to. The embedded engine today; a remote Flight SQL
//! server implements the same trait.

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::execution::SendableRecordBatchStream;
use meshql::Session;
use meshql::governance::ColumnDecision;
use meshql::manifest::Contract;

#[async_trait]
pub trait Backend: Send + Sync {
    /// Starts one statement; results stream from the returned value.
    async fn execute(&self, sql: &str) -> Result<(SchemaRef, SendableRecordBatchStream), String>;
    /// Contracts of the products the principal can see.
    fn contracts(&self) -> Vec<Contract>;
    /// Names of every product, `domain.product`.
    fn product_names(&self) -> Vec<String>;
    /// The masks on a product's columns (`column`, `masked: expr`) and its
    /// row filter (empty column name), as they apply to the principal.
    fn masks(&self, product: &str) -> Vec<(String, String)>;
    /// When the product's data last changed (an Iceberg table's current
    /// snapshot's commit time), as RFC 3339 text, where the backend knows.
    async fn last_updated(&self, _product: &str) -> Option<String> {
        None
    }
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

    async fn last_updated(&self, product: &str) -> Option<String> {
        match self.session.last_updated(product).await {
            Ok(Some(t)) => Some(meshql::audit::rfc3339(t)),
            Ok(None) => None,
            Err(e) => Some(format!("unknown ({e})")),
        }
    }

    fn masks(&self, product: &str) -> Vec<(String, String)> {
        let Some(policy) = self.session.policy(product) else {
            return Vec::new();
        };
        let mut out: Vec<(String, String)> = policy
            .columns
            .iter()
            .filter_map(|c| match &c.action {
                ColumnDecision::Mask(m) => Some((c.name.clone(), format!("masked: {}", m.sql))),
                _ => None,
            })
            .collect();
        if let Some(f) = &policy.row_filter {
            out.push((String::new(), f.sql.clone()));
        }
        out
    }
}
