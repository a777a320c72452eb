//! The demo's Iceberg table: the staged orders loaded into `sales.orders`
//! in an embedded SQLite catalog, through iceberg-rust.

use std::path::Path;
use std::sync::Arc;

use super::io;
use crate::error::{Error, Result};

/// Where `generate` writes the orders as Parquet, the landing files
/// [`build_lakehouse`] loads into the Iceberg table.
pub(super) const STAGING: &str = "sales/orders";
/// The demo's embedded Iceberg catalog (SQLite) and its warehouse, inside
/// the demo storage; `catalog/mesh.yaml` names both.
pub const LAKEHOUSE_DB: &str = "lakehouse.db";
pub const LAKEHOUSE_WAREHOUSE: &str = "lakehouse";
/// The catalog name in the SQL catalog's tables.
pub const LAKEHOUSE_CATALOG: &str = "lakehouse";

/// Loads the staged orders into the Iceberg table `sales.orders`,
/// partitioned by day of `order_date`, in the SQLite catalog at `out`,
/// through iceberg-rust. Runs on a runtime of its own, so it can be called
/// from inside or outside one.
pub(super) fn build_lakehouse(out: &Path) -> Result<()> {
    let out = std::fs::canonicalize(out).unwrap_or_else(|_| out.to_path_buf());
    let worker = std::thread::spawn(move || -> Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| io("cannot start a runtime for the demo lakehouse".into(), e))?;
        runtime.block_on(load_orders(&out))
    });
    worker.join().unwrap_or_else(|_| {
        Err(Error::Execution(
            datafusion::error::DataFusionError::Execution(
                "the demo lakehouse writer panicked".into(),
            ),
        ))
    })
}

async fn load_orders(out: &Path) -> Result<()> {
    use iceberg::spec::{
        NestedField, PrimitiveType, Schema as IcebergSchema, Transform, Type, UnboundPartitionSpec,
    };
    use iceberg::{NamespaceIdent, TableCreation};

    let fail = |what: &str, e: iceberg::Error| Error::Product {
        product: "sales.orders".into(),
        message: format!(
            "cannot {what} the demo Iceberg table: {}",
            crate::storage::iceberg::iceberg_message(&e)
        ),
    };
    let warehouse = out.join(LAKEHOUSE_WAREHOUSE);
    std::fs::create_dir_all(&warehouse)
        .map_err(|e| io(format!("cannot create {}", warehouse.display()), e))?;
    let catalog = crate::storage::iceberg::sql_catalog(
        LAKEHOUSE_CATALOG,
        &format!("sqlite://{}?mode=rwc", out.join(LAKEHOUSE_DB).display()),
        Some(&format!("file://{}", warehouse.display())),
        Default::default(),
    )
    .await
    .map_err(|e| fail("create the catalog of", e))?;
    let ns = NamespaceIdent::new("sales".into());
    catalog
        .create_namespace(&ns, std::collections::HashMap::new())
        .await
        .map_err(|e| fail("create the namespace of", e))?;
    let long = || Type::Primitive(PrimitiveType::Long);
    let string = || Type::Primitive(PrimitiveType::String);
    let schema = IcebergSchema::builder()
        .with_schema_id(0)
        .with_identifier_field_ids([1])
        .with_fields([
            NestedField::required(1, "order_id", long()).into(),
            NestedField::required(2, "customer_id", long()).into(),
            NestedField::required(3, "order_date", Type::Primitive(PrimitiveType::Date)).into(),
            NestedField::required(4, "order_ts", Type::Primitive(PrimitiveType::Timestamptz))
                .into(),
            NestedField::required(5, "status", string()).into(),
            NestedField::required(6, "currency", string()).into(),
            NestedField::required(
                7,
                "total_order_value",
                Type::Primitive(PrimitiveType::Decimal {
                    precision: 12,
                    scale: 2,
                }),
            )
            .into(),
            NestedField::required(8, "region", string()).into(),
        ])
        .build()
        .map_err(|e| fail("define", e))?;
    let spec = UnboundPartitionSpec::builder()
        .add_partition_field(3, "order_date_day", Transform::Day)
        .map_err(|e| fail("partition", e))?
        .build();
    let creation = TableCreation::builder()
        .name("orders".into())
        .schema(schema)
        .partition_spec(spec)
        .properties([("write.format.default".to_string(), "parquet".to_string())])
        .build();
    catalog
        .create_table(&ns, creation)
        .await
        .map_err(|e| fail("create", e))?;

    // Append the staged orders through DataFusion, which splits them into
    // one data file per day.
    let ctx = datafusion::prelude::SessionContext::new();
    let provider = iceberg_datafusion::IcebergCatalogProvider::try_new(catalog)
        .await
        .map_err(|e| fail("open", e))?;
    ctx.register_catalog("lake", Arc::new(provider));
    let staged = out.join(STAGING);
    ctx.register_parquet(
        "staged",
        staged.to_string_lossy().as_ref(),
        datafusion::prelude::ParquetReadOptions::default(),
    )
    .await
    .map_err(Error::Execution)?;
    ctx.sql("INSERT INTO lake.sales.orders SELECT * FROM staged ORDER BY order_id")
        .await
        .map_err(Error::Execution)?
        .collect()
        .await
        .map_err(Error::Execution)?;
    Ok(())
}
