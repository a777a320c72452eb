//! The customers domain: who buys, where they live, and the cards they
//! pay with (the payments domain charges those cards).

use std::sync::Arc;

use arrow::array::{Date32Builder, Int64Builder, StringBuilder};
use arrow::datatypes::{DataType, Field};

use super::Generation;
use super::calendar::days_from_civil;
use super::parquet::write_parquet;
use super::random::Rng;
use super::world::{COMPANY_WORDS, COUNTRIES, FIRST_NAMES, LAST_NAMES, MAIL_DOMAINS};
use crate::error::Result;

/// A customer as the orders and payments need them.
pub(super) struct Customer {
    pub(super) id: i64,
    pub(super) country: usize,
    pub(super) signup: i32,
    pub(super) segment: &'static str,
    pub(super) cards: Vec<(String, &'static str)>,
}

/// `customers.customers`: 2,000 per unit of scale, signing up from 2021
/// on, more of them later.
pub(super) fn customers(g: &mut Generation<'_>) -> Result<Vec<Customer>> {
    let signup_first = days_from_civil(2021, 1, 1);
    let n_customers = 2_000 * g.scale;
    let country_weights: Vec<(usize, f64)> = COUNTRIES
        .iter()
        .enumerate()
        .map(|(i, c)| (i, c.weight))
        .collect();
    let mut customers = Vec::with_capacity(n_customers);
    let mut id = Int64Builder::new();
    let mut full_name = StringBuilder::new();
    let mut email = StringBuilder::new();
    let mut phone = StringBuilder::new();
    let mut country = StringBuilder::new();
    let mut region = StringBuilder::new();
    let mut segment = StringBuilder::new();
    let mut signup = Date32Builder::new();
    for i in 0..n_customers {
        let ci = *g.rng.weighted(&country_weights);
        let c = &COUNTRIES[ci];
        let first_name = g.rng.pick(FIRST_NAMES);
        let last_name = g.rng.pick(LAST_NAMES);
        let seg = *g
            .rng
            .weighted(&[("consumer", 70.0), ("smb", 22.0), ("enterprise", 8.0)]);
        let local: String = format!("{first_name}.{last_name}")
            .to_lowercase()
            .chars()
            .map(|ch| match ch {
                'ü' => 'u',
                'é' => 'e',
                'í' => 'i',
                'á' => 'a',
                'ś' => 's',
                ' ' | '-' => '_',
                other => other,
            })
            .filter(|ch| ch.is_ascii_alphanumeric() || *ch == '.' || *ch == '_')
            .collect();
        let domain = if seg == "consumer" {
            (*g.rng.pick(MAIL_DOMAINS)).to_string()
        } else {
            format!(
                "{}.{}",
                g.rng.pick(COMPANY_WORDS),
                if c.region == "NA" {
                    "com".to_string()
                } else {
                    c.code.to_lowercase()
                }
            )
        };
        let cid = 1 + i as i64;
        // Later signups are more common: the business grows.
        let s = signup_first + ((g.last - 60 - signup_first) as f64 * g.rng.f64().sqrt()) as i32;
        id.append_value(cid);
        full_name.append_value(format!("{first_name} {last_name}"));
        // The customer id makes every address distinct (the contract
        // says so and `meshql check` holds it to that).
        email.append_value(format!("{local}{cid}@{domain}"));
        phone.append_value(format!(
            "{} {} {:03} {:04}",
            c.dial,
            g.rng.range(20, 999),
            g.rng.range(0, 999),
            g.rng.range(0, 9999)
        ));
        country.append_value(c.code);
        region.append_value(c.region);
        segment.append_value(seg);
        signup.append_value(s);
        let n_cards = if g.rng.f64() < 0.25 { 2 } else { 1 };
        let cards = (0..n_cards).map(|_| card_number(&mut g.rng)).collect();
        customers.push(Customer {
            id: cid,
            country: ci,
            signup: s,
            segment: seg,
            cards,
        });
    }
    g.summary.customers = write_parquet(
        &g.out.join("customers/customers/customers.parquet"),
        vec![
            Field::new("customer_id", DataType::Int64, false),
            Field::new("full_name", DataType::Utf8, false),
            Field::new("email", DataType::Utf8, false),
            Field::new("phone", DataType::Utf8, true),
            Field::new("country", DataType::Utf8, false),
            Field::new("region", DataType::Utf8, false),
            Field::new("segment", DataType::Utf8, false),
            Field::new("signup_date", DataType::Date32, false),
        ],
        vec![
            Arc::new(id.finish()),
            Arc::new(full_name.finish()),
            Arc::new(email.finish()),
            Arc::new(phone.finish()),
            Arc::new(country.finish()),
            Arc::new(region.finish()),
            Arc::new(segment.finish()),
            Arc::new(signup.finish()),
        ],
    )?;
    Ok(customers)
}

/// A card number of a weighted brand, with a valid Luhn check digit.
fn card_number(rng: &mut Rng) -> (String, &'static str) {
    let (prefix, len, brand) = *rng.weighted(&[
        (("4", 16, "visa"), 55.0),
        (("5", 16, "mastercard"), 35.0),
        (("37", 15, "amex"), 10.0),
    ]);
    let mut digits: Vec<u32> = prefix.chars().filter_map(|c| c.to_digit(10)).collect();
    if brand == "mastercard" {
        digits.push(1 + rng.below(5) as u32);
    }
    while digits.len() < len - 1 {
        digits.push(rng.below(10) as u32);
    }
    // Luhn check digit.
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 0 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    digits.push((10 - sum % 10) % 10);
    (
        digits
            .iter()
            .map(|d| char::from_digit(*d, 10).unwrap_or('0'))
            .collect(),
        brand,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_numbers_pass_the_luhn_check() {
        let mut rng = Rng(7);
        for _ in 0..100 {
            let (card, brand) = card_number(&mut rng);
            let sum: u32 = card
                .chars()
                .rev()
                .filter_map(|c| c.to_digit(10))
                .enumerate()
                .map(|(i, d)| {
                    if i % 2 == 1 {
                        let x = d * 2;
                        if x > 9 { x - 9 } else { x }
                    } else {
                        d
                    }
                })
                .sum();
            assert_eq!(sum % 10, 0, "{card}");
            assert_eq!(card.len(), if brand == "amex" { 15 } else { 16 });
        }
    }
}
