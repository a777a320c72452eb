//! How meshql's own operators and functions travel in plan fragments.
//! DataFusion's operators (Parquet scans, filters, projections, joins,
//! aggregates) travel as DataFusion protobuf; this codec adds the policy
//! boundary and the Iceberg scan (its files, partition by partition, read
//! on the worker by DataFusion's Parquet scan) under the contract's schema. meshql's functions travel by name and a worker resolves them
//! in a registry of its own (`governance::functions::worker_functions`):
//! the masks, `hash_pseudonym` under the worker's key and the principal
//! functions for the principal the task's headers name.

use std::sync::Arc;

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
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
        ctx: &TaskContext,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if let Some(node) = crate::storage::iceberg::decode_node(buf, inputs, ctx) {
            return node;
        }
        let Some((b'P', json)) = buf.split_first() else {
            return Err(DataFusionError::Internal(
                "an unknown meshql plan node".into(),
            ));
        };
        let node: Node = serde_json::from_slice(json)
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
        if let Some(bytes) = crate::storage::iceberg::encode_node(node.as_ref()) {
            buf.extend_from_slice(&bytes?);
            return Ok(());
        }
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
        buf.push(b'P');
        serde_json::to_writer(buf, &node)
            .map_err(|e| DataFusionError::Internal(format!("a meshql plan node: {e}")))
    }
}
