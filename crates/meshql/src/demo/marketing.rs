//! The marketing domain: the daily performance of each campaign, by
//! channel, busier in November and December.

use arrow::array::{Date32Builder, Int64Builder, StringBuilder};
use arrow::datatypes::{DataType, Field};
use std::sync::Arc;

use super::Generation;
use super::calendar::{month_of, year_month};
use super::parquet::{cents, dec_builder, write_parquet};
use crate::error::Result;

/// `marketing.campaign_performance`: 36 campaigns per unit of scale, each
/// running three to thirteen weeks.
pub(super) fn campaign_performance(g: &mut Generation<'_>) -> Result<()> {
    let channels: &[(&str, f64, f64, f64)] = &[
        // channel, click-through rate, cost per click, return on ad spend
        ("email", 0.035, 0.05, 6.0),
        ("paid_search", 0.045, 0.90, 3.2),
        ("social", 0.012, 0.45, 2.1),
        ("display", 0.004, 0.60, 1.4),
        ("affiliate", 0.020, 0.35, 2.8),
    ];
    let mut id = StringBuilder::new();
    let mut channel = StringBuilder::new();
    let mut day = Date32Builder::new();
    let mut impressions = Int64Builder::new();
    let mut clicks = Int64Builder::new();
    let mut spend = dec_builder(12, 2)?;
    let mut revenue = dec_builder(12, 2)?;
    let n_campaigns = 36 * g.scale;
    for k in 0..n_campaigns {
        let (ch, ctr, cpc, roas) = channels[k % channels.len()];
        let start = g.first + g.rng.below((g.last - g.first - 30) as usize) as i32;
        let len = g.rng.range(21, 90) as i32;
        let (y, _) = year_month(start);
        let reach = 2_000.0 * (1.0 + g.rng.f64() * 20.0);
        let quality = 0.6 + g.rng.f64() * 0.8;
        for d in start..(start + len).min(g.last + 1) {
            let season = if matches!(month_of(d), 11 | 12) {
                1.6
            } else {
                1.0
            };
            let imp = (reach * season * (0.7 + g.rng.f64() * 0.6)) as i64;
            let clk = ((imp as f64) * ctr * quality * (0.8 + g.rng.f64() * 0.4)) as i64;
            let sp = clk as f64 * cpc * (0.85 + g.rng.f64() * 0.3);
            let rev = sp * roas * quality * (0.5 + g.rng.f64());
            id.append_value(format!("CMP-{y}-{:03}", k + 1));
            channel.append_value(ch);
            day.append_value(d);
            impressions.append_value(imp);
            clicks.append_value(clk);
            spend.append_value(cents(sp));
            revenue.append_value(cents(rev));
        }
    }
    g.summary.campaign_days = write_parquet(
        &g.out
            .join("marketing/campaign_performance/campaign_performance.parquet"),
        vec![
            Field::new("campaign_id", DataType::Utf8, false),
            Field::new("channel", DataType::Utf8, false),
            Field::new("day", DataType::Date32, false),
            Field::new("impressions", DataType::Int64, false),
            Field::new("clicks", DataType::Int64, false),
            Field::new("spend", DataType::Decimal128(12, 2), false),
            Field::new("attributed_revenue", DataType::Decimal128(12, 2), false),
        ],
        vec![
            Arc::new(id.finish()),
            Arc::new(channel.finish()),
            Arc::new(day.finish()),
            Arc::new(impressions.finish()),
            Arc::new(clicks.finish()),
            Arc::new(spend.finish()),
            Arc::new(revenue.finish()),
        ],
    )?;
    Ok(())
}
