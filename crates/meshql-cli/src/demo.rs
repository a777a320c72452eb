//! `meshql demo generate`: the demo mesh's data at a scale.

use std::path::Path;
use std::process::ExitCode;

pub(crate) fn generate(out: &Path, scale: u32) -> anyhow::Result<ExitCode> {
    let start = std::time::Instant::now();
    let s = meshql::demo::generate(out, scale)?;
    eprintln!(
        "generated demo data at scale {scale} into {} in {:.1} s: {} customers, {} orders, {} order items, {} products, {} inventory levels, {} transactions, {} campaign days",
        out.display(),
        start.elapsed().as_secs_f64(),
        s.customers,
        s.orders,
        s.order_items,
        s.products,
        s.inventory_levels,
        s.transactions,
        s.campaign_days
    );
    Ok(ExitCode::SUCCESS)
}
