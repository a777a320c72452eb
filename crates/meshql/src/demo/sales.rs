//! The sales domain: orders and their items, one file per month, and,
//! drawn in the same pass, the payments domain's transactions of each
//! order (see [`super::payments`]). The orders are written as Parquet
//! first; [`super::lakehouse`] loads them into the Iceberg table.

use std::sync::Arc;

use arrow::array::{Date32Builder, Int32Builder, Int64Builder, StringBuilder};
use arrow::datatypes::{DataType, Field};

use super::Generation;
use super::calendar::{DAY_US, month_of, year_month};
use super::catalog::Product;
use super::customers::Customer;
use super::lakehouse::STAGING;
use super::parquet::{cents, dec_builder, ts_builder, ts_type, write_parquet};
use super::payments::Transactions;
use super::world::COUNTRIES;
use crate::error::Result;

/// An order as its items and payments need it.
pub(super) struct Order {
    pub(super) id: i64,
    pub(super) customer: usize,
    pub(super) date: i32,
    pub(super) ts: i64,
    pub(super) status: &'static str,
    pub(super) total_cents: i128,
}

/// `sales.orders` (staged as Parquet), `sales.order_items` and
/// `payments.transactions`: 20,000 orders per unit of scale, growing over
/// time and peaking in November and December, ids in time order.
pub(super) fn orders(
    g: &mut Generation<'_>,
    products: &[Product],
    customers: &[Customer],
) -> Result<()> {
    let n_customers = customers.len();
    let n_orders = 20_000 * g.scale;
    let popularity: Vec<(usize, f64)> = products
        .iter()
        .enumerate()
        .map(|(i, p)| (i, p.popularity))
        .collect();
    let mut orders: Vec<Order> = Vec::with_capacity(n_orders);
    let mut items: Vec<(i64, i32, i64, i32, i128)> = Vec::with_capacity(n_orders * 3);
    let span = (g.last - g.first) as f64;
    while orders.len() < n_orders {
        // Growth over time, with a peak in November and December.
        let date = g.first + (span * g.rng.f64().powf(0.8)).round() as i32;
        let month = month_of(date);
        let season = match month {
            11 => 1.0,
            12 => 0.95,
            1 | 2 => 0.55,
            _ => 0.6,
        };
        if g.rng.f64() > season {
            continue;
        }
        let ci = ((g.rng.f64().powf(1.7)) * n_customers as f64) as usize % n_customers;
        let cust = &customers[ci];
        if cust.signup > date {
            continue;
        }
        let oid = 100_000 + orders.len() as i64;
        let age = g.last - date;
        let status = if age < 3 {
            *g.rng.weighted(&[("pending", 60.0), ("shipped", 40.0)])
        } else if age < 10 {
            *g.rng
                .weighted(&[("shipped", 55.0), ("delivered", 40.0), ("cancelled", 5.0)])
        } else {
            *g.rng
                .weighted(&[("delivered", 88.0), ("cancelled", 5.0), ("returned", 7.0)])
        };
        let c = &COUNTRIES[cust.country];
        let boost = match cust.segment {
            "enterprise" => 3.0,
            "smb" => 1.8,
            _ => 1.0,
        };
        let n_lines = 1 + (g.rng.f64().powf(1.8) * 5.0) as i32;
        let mut total = 0i128;
        for line in 1..=n_lines {
            let p = &products[*g.rng.weighted(&popularity)];
            let qty = (1.0 + g.rng.f64().powf(3.0) * 3.0 * boost) as i32;
            let discount = *g
                .rng
                .weighted(&[(0.0, 70.0), (0.05, 12.0), (0.10, 12.0), (0.20, 6.0)]);
            let unit = round_price(p.list_price * c.fx * (1.0 - discount), c.currency);
            let unit_cents = cents(unit);
            total += unit_cents * qty as i128;
            items.push((oid, line, p.id, qty, unit_cents));
        }
        let ts = date as i64 * DAY_US + g.rng.range(6 * 3600, 23 * 3600 + 3599) * 1_000_000;
        orders.push(Order {
            id: oid,
            customer: ci,
            date,
            ts,
            status,
            total_cents: total,
        });
    }
    // Ids follow time order, as a real sequence would.
    orders.sort_by_key(|o| (o.ts, o.id));
    let mut renumber = std::collections::HashMap::with_capacity(orders.len());
    for (i, o) in orders.iter_mut().enumerate() {
        let new_id = 100_000 + i as i64;
        renumber.insert(o.id, new_id);
        o.id = new_id;
    }
    for it in items.iter_mut() {
        it.0 = renumber[&it.0];
    }
    items.sort_by_key(|it| (it.0, it.1));

    let months: Vec<(i32, u32)> = {
        let mut m: Vec<(i32, u32)> = orders.iter().map(|o| year_month(o.date)).collect();
        m.dedup();
        m
    };
    let mut item_pos = 0usize;
    let mut transactions = Transactions::new()?;
    for (y, m) in months {
        let month_orders: Vec<&Order> = orders
            .iter()
            .filter(|o| year_month(o.date) == (y, m))
            .collect();
        let tag = format!("{y}-{m:02}");

        let mut oid = Int64Builder::new();
        let mut cid = Int64Builder::new();
        let mut odate = Date32Builder::new();
        let mut ots = ts_builder();
        let mut status = StringBuilder::new();
        let mut currency = StringBuilder::new();
        let mut total = dec_builder(12, 2)?;
        let mut region = StringBuilder::new();

        let mut i_oid = Int64Builder::new();
        let mut i_line = Int32Builder::new();
        let mut i_pid = Int64Builder::new();
        let mut i_qty = Int32Builder::new();
        let mut i_price = dec_builder(10, 2)?;

        for o in month_orders {
            let cust = &customers[o.customer];
            let c = &COUNTRIES[cust.country];
            oid.append_value(o.id);
            cid.append_value(cust.id);
            odate.append_value(o.date);
            ots.append_value(o.ts);
            status.append_value(o.status);
            currency.append_value(c.currency);
            total.append_value(o.total_cents);
            region.append_value(c.region);
            while item_pos < items.len() && items[item_pos].0 < o.id {
                item_pos += 1;
            }
            while item_pos < items.len() && items[item_pos].0 == o.id {
                let it = items[item_pos];
                i_oid.append_value(it.0);
                i_line.append_value(it.1);
                i_pid.append_value(it.2);
                i_qty.append_value(it.3);
                i_price.append_value(it.4);
                item_pos += 1;
            }
            transactions.record(&mut g.rng, o, cust);
        }

        g.summary.orders += write_parquet(
            &g.out.join(format!("{STAGING}/orders-{tag}.parquet")),
            vec![
                Field::new("order_id", DataType::Int64, false),
                Field::new("customer_id", DataType::Int64, false),
                Field::new("order_date", DataType::Date32, false),
                Field::new("order_ts", ts_type(), false),
                Field::new("status", DataType::Utf8, false),
                Field::new("currency", DataType::Utf8, false),
                Field::new("total_order_value", DataType::Decimal128(12, 2), false),
                Field::new("region", DataType::Utf8, false),
            ],
            vec![
                Arc::new(oid.finish()),
                Arc::new(cid.finish()),
                Arc::new(odate.finish()),
                Arc::new(ots.finish()),
                Arc::new(status.finish()),
                Arc::new(currency.finish()),
                Arc::new(total.finish()),
                Arc::new(region.finish()),
            ],
        )?;
        g.summary.order_items += write_parquet(
            &g.out
                .join(format!("sales/order_items/order_items-{tag}.parquet")),
            vec![
                Field::new("order_id", DataType::Int64, false),
                Field::new("line_no", DataType::Int32, false),
                Field::new("product_id", DataType::Int64, false),
                Field::new("quantity", DataType::Int32, false),
                Field::new("unit_price", DataType::Decimal128(10, 2), false),
            ],
            vec![
                Arc::new(i_oid.finish()),
                Arc::new(i_line.finish()),
                Arc::new(i_pid.finish()),
                Arc::new(i_qty.finish()),
                Arc::new(i_price.finish()),
            ],
        )?;
        g.summary.transactions += transactions.write(g, &tag)?;
    }
    Ok(())
}

/// A price in a currency: whole units for the yen and the won, cents
/// otherwise.
fn round_price(v: f64, currency: &str) -> f64 {
    if matches!(currency, "JPY" | "KRW") {
        v.round()
    } else {
        (v * 100.0).round() / 100.0
    }
}
