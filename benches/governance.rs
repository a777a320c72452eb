//! Planning cost of governance: a 5-way cross-domain join planned (parsed,
//! analyzed, optimized; not executed) as `admin`, whom no mask or filter
//! applies to, and as `eu_analyst`, whose plan gets masks and row filters on
//! three of the five products; and, as the baseline without any
//! governance, a bare DataFusion context over the same Parquet files.
//!
//! `cargo bench -p meshql-bench --bench governance`

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use datafusion::catalog::MemorySchemaProvider;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use meshql::Mesh;
use meshql::manifest::Catalog;

const QUERY: &str = "
SELECT c.segment, p.category, count(*) AS lines, sum(t.amount) AS paid
FROM sales.orders o
JOIN customers.customers c ON c.customer_id = o.customer_id
JOIN payments.transactions t ON t.order_id = o.order_id AND t.status = 'captured'
JOIN sales.order_items i ON i.order_id = o.order_id
JOIN catalog.products p ON p.product_id = i.product_id
WHERE o.order_date >= DATE '2026-07-01' AND c.email LIKE '%.com'
GROUP BY c.segment, p.category";

fn planning(c: &mut Criterion) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../catalog");
    let catalog = Catalog::load_strict(&dir).expect("demo mesh");
    meshql::demo::ensure(&catalog).expect("demo data");
    let mesh = Mesh::from_catalog(catalog).expect("mesh");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut group = c.benchmark_group("plan 5-way join");

    let bare = runtime.block_on(async {
        let ctx = SessionContext::new();
        let default = ctx.catalog("datafusion").expect("default catalog");
        let data = dir.join("../data/demo");
        for (domain, product) in [
            ("sales", "orders"),
            ("sales", "order_items"),
            ("customers", "customers"),
            ("payments", "transactions"),
            ("catalog", "products"),
        ] {
            if default.schema(domain).is_none() {
                default
                    .register_schema(domain, Arc::new(MemorySchemaProvider::new()))
                    .expect("schema");
            }
            let path = data.join(domain).join(product);
            let path = format!("{}/", path.display());
            ctx.register_parquet(
                format!("{domain}.{product}"),
                path,
                ParquetReadOptions::default(),
            )
            .await
            .expect("register");
        }
        ctx
    });
    group.bench_function("datafusion, no governance", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let df = bare.sql(QUERY).await.expect("plans");
                df.into_optimized_plan().expect("optimizes")
            })
        })
    });
    for user in ["admin", "eu_analyst"] {
        let session = mesh.session(mesh.principal(user).expect("demo user"));
        group.bench_function(user, |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let df = session.sql(QUERY).await.expect("plans");
                    df.into_optimized_plan().expect("optimizes")
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, planning);
criterion_main!(benches);
