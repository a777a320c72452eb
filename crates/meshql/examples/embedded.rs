//! Embedding meshql: open the bundled demo mesh, run a cross-domain
//! question as a principal, and stream the answer.
//!
//! `cargo run -p meshql --example embedded`

use futures::StreamExt;
use meshql::manifest::Catalog;
use meshql::{Mesh, Principal};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../catalog");
    let catalog = Catalog::load(&dir)?;
    // The demo mesh's data is generated on first use.
    meshql::demo::ensure(&catalog)?;
    let mesh = Mesh::from_catalog(catalog)?;

    let session = mesh.session(Principal::new("analyst").with_role("analyst"));
    let mut stream = session
        .execute(
            "SELECT c.segment, count(*) AS orders, count(DISTINCT c.customer_id) AS customers
             FROM sales.orders o
             JOIN customers.customers c ON c.customer_id = o.customer_id
             WHERE o.order_date BETWEEN DATE '2026-07-01' AND DATE '2026-09-30'
             GROUP BY c.segment
             ORDER BY orders DESC",
        )
        .await?;
    let mut batches = Vec::new();
    while let Some(batch) = stream.next().await {
        batches.push(batch?);
    }
    println!("Orders per customer segment, 2026-Q3:");
    println!("{}", arrow::util::pretty::pretty_format_batches(&batches)?);
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    if rows != 3 {
        return Err(format!("expected three segments, got {rows}").into());
    }
    Ok(())
}
