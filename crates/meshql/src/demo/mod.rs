//! The demo e-commerce mesh's data: a deterministic generator of customers,
//! orders, order items, products, inventory, payments and marketing
//! performance, written as Parquet, and the Iceberg table of the orders.
//! The same scale always gives the same bytes of data, so answers in the
//! README and tests stay stable.
//!
//! Orders run from 2025-01-01 to 2026-09-30 (seven quarters, the last one
//! being 2026-Q3), grow over time and peak in November and December.
//!
//! One file per domain ([`catalog`], [`customers`], [`sales`] with
//! [`payments`], [`marketing`]), each writing its products. They draw from
//! one random sequence in turn, in the order [`generate`] calls them: a
//! change that draws more or fewer numbers, or calls them in another
//! order, changes every product after it.

mod calendar;
mod catalog;
mod customers;
mod lakehouse;
mod marketing;
mod parquet;
mod payments;
mod random;
mod sales;
mod world;

use std::path::{Path, PathBuf};

use meshql_manifest::{Catalog, StorageKind};

use crate::error::{Error, Result};
use lakehouse::build_lakehouse;
pub use lakehouse::{LAKEHOUSE_CATALOG, LAKEHOUSE_DB, LAKEHOUSE_WAREHOUSE};
use random::Rng;

const MARKER: &str = ".meshql-demo";
const GENERATOR_VERSION: u32 = 4;

/// First and last order dates of the demo data.
pub const FIRST_ORDER_DATE: (i32, u32, u32) = (2025, 1, 1);
pub const LAST_ORDER_DATE: (i32, u32, u32) = (2026, 9, 30);

/// What one run of the generator wrote.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub customers: usize,
    pub orders: usize,
    pub order_items: usize,
    pub products: usize,
    pub inventory_levels: usize,
    pub transactions: usize,
    pub campaign_days: usize,
}

/// Generates the demo data into `out` unless data of the same scale is
/// already there. Returns whether it generated.
pub fn ensure_at(out: &Path, scale: u32) -> Result<bool> {
    // One generation at a time in this process; other processes are handled
    // by generating into a directory of their own and renaming it into place.
    static GENERATING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    static ATTEMPT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let _one_at_a_time = GENERATING.lock().unwrap_or_else(|e| e.into_inner());
    let expected = marker_text(scale);
    if std::fs::read_to_string(out.join(MARKER)).is_ok_and(|m| m == expected) {
        return Ok(false);
    }
    let parent = out.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .map_err(|e| io(format!("cannot create {}", parent.display()), e))?;
    let tmp = parent.join(format!(
        ".{}.tmp-{}-{}",
        out.file_name().and_then(|n| n.to_str()).unwrap_or("demo"),
        std::process::id(),
        ATTEMPT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    generate(&tmp, scale)?;
    // The Iceberg table records absolute file locations, so it is built
    // in the temporary directory's final place: generated data moves into
    // `out` first, and the marker that says it is complete comes last.
    // Another process may have finished first; its data is the same.
    if std::fs::read_to_string(out.join(MARKER)).is_ok_and(|m| m == expected) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Ok(false);
    }
    let _ = std::fs::remove_dir_all(out);
    if let Err(e) = std::fs::rename(&tmp, out) {
        let _ = std::fs::remove_dir_all(&tmp);
        if std::fs::read_to_string(out.join(MARKER)).is_ok_and(|m| m == expected) {
            return Ok(false);
        }
        return Err(io(
            format!("cannot move demo data into {}", out.display()),
            e,
        ));
    }
    build_lakehouse(out)?;
    std::fs::write(out.join(MARKER), &expected)
        .map_err(|e| io(format!("cannot write {}", out.join(MARKER).display()), e))?;
    Ok(true)
}

/// Generates the data of a mesh whose `mesh.yaml` has a `demo` section, on
/// first use. Returns the directory it generated into, if it did.
pub fn ensure(catalog: &Catalog) -> Result<Option<PathBuf>> {
    let Some(demo) = &catalog.mesh.demo else {
        return Ok(None);
    };
    let Some(storage) = catalog.mesh.storage.get(&demo.storage) else {
        return Ok(None);
    };
    let StorageKind::Local { root } = &storage.kind else {
        return Err(Error::Product {
            product: format!("storage `{}`", storage.name),
            message: "demo data can only be generated into a local storage".into(),
        });
    };
    Ok(ensure_at(root, demo.scale)?.then(|| root.clone()))
}

fn marker_text(scale: u32) -> String {
    format!("generator={GENERATOR_VERSION} scale={scale}\n")
}

fn io(context: String, source: std::io::Error) -> Error {
    Error::Io { context, source }
}

/// What the domains' generators share: where they write, the scale, the
/// days the orders run over, the one random sequence they draw from in
/// turn, and what they wrote.
struct Generation<'a> {
    out: &'a Path,
    scale: usize,
    /// The first and last order day (days since 1970-01-01).
    first: i32,
    last: i32,
    rng: Rng,
    summary: Summary,
}

/// Generates the demo data at `scale` into `out` (created if missing).
pub fn generate(out: &Path, scale: u32) -> Result<Summary> {
    use calendar::days_from_civil;
    let mut g = Generation {
        out,
        scale: scale.max(1) as usize,
        first: days_from_civil(FIRST_ORDER_DATE.0, FIRST_ORDER_DATE.1, FIRST_ORDER_DATE.2),
        last: days_from_civil(LAST_ORDER_DATE.0, LAST_ORDER_DATE.1, LAST_ORDER_DATE.2),
        rng: Rng(0x6D65_7368_716C_0001),
        summary: Summary::default(),
    };
    let products = catalog::products(&mut g)?;
    catalog::inventory_levels(&mut g, &products)?;
    let customers = customers::customers(&mut g)?;
    sales::orders(&mut g, &products, &customers)?;
    marketing::campaign_performance(&mut g)?;
    Ok(g.summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_first_use_generates_once_and_completely() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("demo");
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let out = out.clone();
                std::thread::spawn(move || ensure_at(&out, 1).map_err(|e| e.to_string()))
            })
            .collect();
        let generated: Vec<bool> = handles
            .into_iter()
            .map(|h| h.join().expect("thread").expect("ensure"))
            .collect();
        assert_eq!(generated.iter().filter(|g| **g).count(), 1, "{generated:?}");
        assert!(out.join(MARKER).is_file());
        assert!(out.join("sales/orders/orders-2026-09.parquet").is_file());
    }

    #[test]
    fn generation_is_deterministic() {
        let a = tempfile::tempdir().expect("tempdir");
        let b = tempfile::tempdir().expect("tempdir");
        let sa = generate(a.path(), 1).expect("generates");
        generate(b.path(), 1).expect("generates");
        assert_eq!(sa.customers, 2_000);
        assert_eq!(sa.orders, 20_000);
        for rel in [
            "customers/customers/customers.parquet",
            "sales/orders/orders-2026-09.parquet",
            "payments/transactions/transactions-2025-11.parquet",
        ] {
            let x = std::fs::read(a.path().join(rel)).expect("written");
            let y = std::fs::read(b.path().join(rel)).expect("written");
            assert!(x == y, "{rel} differs between runs");
        }
    }
}
