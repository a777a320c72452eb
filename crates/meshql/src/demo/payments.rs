//! The payments domain: the card transactions of each order, drawn while
//! the orders are written (so that they come out of the one random
//! sequence in the same order as always): a capture per paid order, some
//! declined first, voids of cancelled orders, refunds of cancelled and
//! returned ones.

use std::sync::Arc;

use arrow::array::{Decimal128Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder};
use arrow::datatypes::{DataType, Field};

use super::Generation;
use super::calendar::DAY_US;
use super::customers::Customer;
use super::parquet::{dec_builder, ts_builder, ts_type, write_parquet};
use super::random::Rng;
use super::sales::Order;
use super::world::COUNTRIES;
use crate::error::Result;

/// `payments.transactions`, a month at a time; ids run on across months.
pub(super) struct Transactions {
    next_id: i64,
    id: Int64Builder,
    order_id: Int64Builder,
    amount: Decimal128Builder,
    currency: StringBuilder,
    card: StringBuilder,
    brand: StringBuilder,
    status: StringBuilder,
    at: TimestampMicrosecondBuilder,
    region: StringBuilder,
}

impl Transactions {
    pub(super) fn new() -> Result<Self> {
        Ok(Self {
            next_id: 1,
            id: Int64Builder::new(),
            order_id: Int64Builder::new(),
            amount: dec_builder(12, 2)?,
            currency: StringBuilder::new(),
            card: StringBuilder::new(),
            brand: StringBuilder::new(),
            status: StringBuilder::new(),
            at: ts_builder(),
            region: StringBuilder::new(),
        })
    }

    /// The transactions of one order placed by `customer`: none while it is
    /// pending.
    pub(super) fn record(&mut self, rng: &mut Rng, order: &Order, customer: &Customer) {
        if order.status == "pending" {
            return;
        }
        let (card, brand) = rng.pick(&customer.cards).clone();
        let country = &COUNTRIES[customer.country];
        let mut at = order.ts + rng.range(20, 600) * 1_000_000;
        let mut txn = |amount: i128, status: &str, at: i64| {
            self.id.append_value(self.next_id);
            self.next_id += 1;
            self.order_id.append_value(order.id);
            self.amount.append_value(amount);
            self.currency.append_value(country.currency);
            self.card.append_value(&card);
            self.brand.append_value(brand);
            self.status.append_value(status);
            self.at.append_value(at);
            self.region.append_value(country.region);
        };
        if rng.f64() < 0.04 {
            txn(order.total_cents, "declined", at);
            at += rng.range(60, 900) * 1_000_000;
        }
        if order.status == "cancelled" && rng.f64() < 0.5 {
            txn(order.total_cents, "voided", at);
            return;
        }
        txn(order.total_cents, "captured", at);
        if matches!(order.status, "returned" | "cancelled") {
            txn(
                order.total_cents,
                "refunded",
                at + rng.range(2, 20) * DAY_US,
            );
        }
    }

    /// Writes the month `tag`'s transactions recorded since the last write,
    /// and returns how many.
    pub(super) fn write(&mut self, g: &Generation<'_>, tag: &str) -> Result<usize> {
        write_parquet(
            &g.out
                .join(format!("payments/transactions/transactions-{tag}.parquet")),
            vec![
                Field::new("transaction_id", DataType::Int64, false),
                Field::new("order_id", DataType::Int64, false),
                Field::new("amount", DataType::Decimal128(12, 2), false),
                Field::new("currency", DataType::Utf8, false),
                Field::new("card_number", DataType::Utf8, false),
                Field::new("card_brand", DataType::Utf8, false),
                Field::new("status", DataType::Utf8, false),
                Field::new("processed_at", ts_type(), false),
                Field::new("region", DataType::Utf8, false),
            ],
            vec![
                Arc::new(self.id.finish()),
                Arc::new(self.order_id.finish()),
                Arc::new(self.amount.finish()),
                Arc::new(self.currency.finish()),
                Arc::new(self.card.finish()),
                Arc::new(self.brand.finish()),
                Arc::new(self.status.finish()),
                Arc::new(self.at.finish()),
                Arc::new(self.region.finish()),
            ],
        )
    }
}
