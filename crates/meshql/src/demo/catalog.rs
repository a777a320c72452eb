//! The catalog domain: the products sold and their stock in each
//! warehouse.

use std::sync::Arc;

use arrow::array::{Int32Builder, Int64Builder, StringBuilder};
use arrow::datatypes::{DataType, Field};

use super::Generation;
use super::calendar::DAY_US;
use super::parquet::{cents, dec_builder, ts_builder, ts_type, write_parquet};
use crate::error::Result;

/// A category of products and the range of its list prices.
struct Category {
    name: &'static str,
    low: f64,
    high: f64,
    nouns: &'static [&'static str],
}

const CATEGORIES: &[Category] = &[
    Category {
        name: "electronics",
        low: 19.0,
        high: 1499.0,
        nouns: &[
            "Headphones",
            "Speaker",
            "Monitor",
            "Keyboard",
            "Webcam",
            "Tablet",
            "Charger",
            "Smartwatch",
            "Router",
            "SSD",
        ],
    },
    Category {
        name: "home",
        low: 9.0,
        high: 499.0,
        nouns: &[
            "Lamp",
            "Kettle",
            "Blender",
            "Cookware Set",
            "Throw Blanket",
            "Vacuum",
            "Coffee Maker",
            "Knife Block",
        ],
    },
    Category {
        name: "apparel",
        low: 12.0,
        high: 249.0,
        nouns: &[
            "Jacket",
            "Sneakers",
            "Hoodie",
            "Jeans",
            "T-Shirt",
            "Rain Coat",
            "Backpack",
        ],
    },
    Category {
        name: "beauty",
        low: 6.0,
        high: 129.0,
        nouns: &[
            "Serum",
            "Moisturizer",
            "Shampoo",
            "Hair Dryer",
            "Perfume",
            "Sunscreen",
        ],
    },
    Category {
        name: "sports",
        low: 10.0,
        high: 899.0,
        nouns: &[
            "Yoga Mat",
            "Dumbbells",
            "Running Shoes",
            "Bike Helmet",
            "Tent",
            "Water Bottle",
            "Road Bike",
        ],
    },
    Category {
        name: "books",
        low: 8.0,
        high: 69.0,
        nouns: &[
            "Cookbook",
            "Novel",
            "Atlas",
            "Field Guide",
            "Textbook",
            "Comic Collection",
        ],
    },
    Category {
        name: "toys",
        low: 7.0,
        high: 199.0,
        nouns: &[
            "Puzzle",
            "Building Set",
            "Board Game",
            "Plush Bear",
            "RC Car",
            "Train Set",
        ],
    },
    Category {
        name: "grocery",
        low: 3.0,
        high: 59.0,
        nouns: &[
            "Coffee Beans",
            "Olive Oil",
            "Green Tea",
            "Dark Chocolate",
            "Granola",
            "Spice Kit",
        ],
    },
];
const ADJECTIVES: &[&str] = &[
    "Aurora", "Nimbus", "Summit", "Harbor", "Cedar", "Vertex", "Lumen", "Atlas", "Breeze", "Ember",
    "Nova", "Pioneer", "Quartz", "Sierra", "Tundra", "Zephyr",
];
const WAREHOUSES: &[&str] = &["AMS-1", "FRA-2", "NYC-1", "DAL-1", "SIN-1", "SYD-1"];

/// A product as the orders need it.
pub(super) struct Product {
    pub(super) id: i64,
    pub(super) list_price: f64,
    pub(super) popularity: f64,
}

/// `catalog.products`: a few hundred products per category mix, more at
/// larger scales.
pub(super) fn products(g: &mut Generation<'_>) -> Result<Vec<Product>> {
    let n_products = 300 * g.scale.min(10) + 20 * g.scale;
    let mut products = Vec::with_capacity(n_products);
    let mut id = Int64Builder::new();
    let mut name = StringBuilder::new();
    let mut category = StringBuilder::new();
    let mut price = dec_builder(10, 2)?;
    for i in 0..n_products {
        let cat = &CATEGORIES[i % CATEGORIES.len()];
        let noun = g.rng.pick(cat.nouns);
        let adj = g.rng.pick(ADJECTIVES);
        let series = 1 + i / (CATEGORIES.len() * ADJECTIVES.len());
        let p = cat.low * (cat.high / cat.low).powf(g.rng.f64().powf(1.4));
        let p = (p.floor() + 0.99).min(cat.high);
        let pid = 1000 + i as i64;
        id.append_value(pid);
        name.append_value(if series > 1 {
            format!("{adj} {noun} {series}")
        } else {
            format!("{adj} {noun}")
        });
        category.append_value(cat.name);
        price.append_value(cents(p));
        products.push(Product {
            id: pid,
            list_price: p,
            popularity: 1.0 / (1.0 + (i % 97) as f64).sqrt(),
        });
    }
    g.summary.products = write_parquet(
        &g.out.join("catalog/products/products.parquet"),
        vec![
            Field::new("product_id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, false),
            Field::new("category", DataType::Utf8, false),
            Field::new("list_price", DataType::Decimal128(10, 2), false),
        ],
        vec![
            Arc::new(id.finish()),
            Arc::new(name.finish()),
            Arc::new(category.finish()),
            Arc::new(price.finish()),
        ],
    )?;
    Ok(products)
}

/// `catalog.inventory_levels`: one row per product and warehouse, as of
/// the end of the data.
pub(super) fn inventory_levels(g: &mut Generation<'_>, products: &[Product]) -> Result<()> {
    let mut pid = Int64Builder::new();
    let mut wh = StringBuilder::new();
    let mut on_hand = Int32Builder::new();
    let mut updated = ts_builder();
    for p in products {
        for w in WAREHOUSES {
            pid.append_value(p.id);
            wh.append_value(*w);
            let stock = if g.rng.f64() < 0.06 {
                0
            } else {
                g.rng.range(3, 800) as i32
            };
            on_hand.append_value(stock);
            updated.append_value((g.last as i64) * DAY_US - g.rng.range(0, 72 * 3600) * 1_000_000);
        }
    }
    g.summary.inventory_levels = write_parquet(
        &g.out
            .join("catalog/inventory_levels/inventory_levels.parquet"),
        vec![
            Field::new("product_id", DataType::Int64, false),
            Field::new("warehouse", DataType::Utf8, false),
            Field::new("on_hand", DataType::Int32, false),
            Field::new("updated_at", ts_type(), false),
        ],
        vec![
            Arc::new(pid.finish()),
            Arc::new(wh.finish()),
            Arc::new(on_hand.finish()),
            Arc::new(updated.finish()),
        ],
    )?;
    Ok(())
}
