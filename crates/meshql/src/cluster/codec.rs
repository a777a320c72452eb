//! How meshql's own operators and functions travel in plan fragments.
//! DataFusion's operators (Parquet scans, filters, projections, joins,
//! aggregates) travel as DataFusion protobuf; this codec adds the policy
//! boundary and meshql's functions (masks, `hash_pseudonym` with its key,
//! the principal functions with the principal's values). Plan fragments
//! therefore carry a secret: they go to workers over the cluster's
//! channels and are never logged.

use std::sync::Arc;

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::ScalarUDF;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::PhysicalExtensionCodec;

use crate::governance::rewrite::PolicyBoundaryExec;

/// meshql's [`PhysicalExtensionCodec`], on the coordinator and the workers.
#[derive(Debug, Default)]
pub struct MeshCodec;

#[derive(serde::Serialize, serde::Deserialize)]
enum Node {
    /// A `MeshPolicyExec`: the product and the row filter, for display.
    Policy {
        product: String,
        filter: Option<String>,
    },
}

impl PhysicalExtensionCodec for MeshCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        _ctx: &TaskContext,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let node: Node = serde_json::from_slice(buf)
            .map_err(|e| DataFusionError::Internal(format!("a meshql plan node: {e}")))?;
        match node {
            Node::Policy { product, filter } => {
                let [input] = inputs else {
                    return Err(DataFusionError::Internal(
                        "MeshPolicyExec has one input".into(),
                    ));
                };
                Ok(Arc::new(PolicyBoundaryExec::new(
                    Arc::clone(input),
                    product,
                    filter,
                )))
            }
        }
    }

    fn try_encode(&self, node: Arc<dyn ExecutionPlan>, buf: &mut Vec<u8>) -> Result<()> {
        let Some(b) = node.as_any().downcast_ref::<PolicyBoundaryExec>() else {
            return Err(DataFusionError::NotImplemented(format!(
                "{} cannot run on a worker",
                node.name()
            )));
        };
        let node = Node::Policy {
            product: b.product.clone(),
            filter: b.filter.clone(),
        };
        serde_json::to_writer(buf, &node)
            .map_err(|e| DataFusionError::Internal(format!("a meshql plan node: {e}")))
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        crate::governance::functions::decode_udf(name, buf)
            .map(Arc::new)
            .ok_or_else(|| DataFusionError::Plan(format!("unknown meshql function `{name}`")))
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        crate::governance::functions::encode_udf(node, buf);
        Ok(())
    }
}
