//! What the shell talks to. The embedded engine today; a remote Flight SQL
//! server implements the same trait.

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::execution::SendableRecordBatchStream;
use meshql::manifest::Contract;
use meshql::{Mesh, Session};

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
    pub mesh: Mesh,
    pub session: Session,
}

#[async_trait]
impl Backend for Embedded {
    async fn execute(&self, sql: &str) -> Result<(SchemaRef, SendableRecordBatchStream), String> {
        let stream = self.session.execute(sql).await.map_err(|e| e.to_string())?;
        Ok((stream.schema(), stream))
    }

    fn contracts(&self) -> Vec<Contract> {
        let mut c = self.mesh.catalog().contracts.clone();
        c.sort_by_key(Contract::qualified_name);
        c
    }

    fn product_names(&self) -> Vec<String> {
        self.mesh.product_names()
    }
}
