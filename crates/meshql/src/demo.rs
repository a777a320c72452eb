//! The demo e-commerce mesh's data: a deterministic generator of customers,
//! orders, order items, products, inventory, payments and marketing
//! performance, written as Parquet. The same scale always gives the same
//! bytes of data, so answers in the README and tests stay stable.
//!
//! Orders run from 2025-01-01 to 2026-09-30 (seven quarters, the last one
//! being 2026-Q3), grow over time and peak in November and December.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Date32Builder, Decimal128Builder, Int32Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;
use meshql_manifest::{Catalog, StorageKind};

use crate::error::{Error, Result};

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

/// SplitMix64: small, fast and the same on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn f64(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: usize) -> usize {
        (self.f64() * n as f64) as usize % n.max(1)
    }
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as usize) as i64
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    fn weighted<'a, T>(&mut self, items: &'a [(T, f64)]) -> &'a T {
        let total: f64 = items.iter().map(|(_, w)| w).sum();
        let mut x = self.f64() * total;
        for (item, w) in items {
            if x < *w {
                return item;
            }
            x -= w;
        }
        &items[items.len() - 1].0
    }
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
pub fn days_from_civil(y: i32, m: u32, d: u32) -> i32 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = m as i32;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i32 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date (year, month, day) of a day number.
pub fn civil_from_days(days: i32) -> (i32, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    let y = yoe + era * 400 + i32::from(m <= 2);
    (y, m, d)
}

fn month_of(days: i32) -> u32 {
    civil_from_days(days).1
}

fn year_month(days: i32) -> (i32, u32) {
    let (y, m, _) = civil_from_days(days);
    (y, m)
}

struct Country {
    code: &'static str,
    region: &'static str,
    currency: &'static str,
    fx: f64,
    dial: &'static str,
    weight: f64,
}

const COUNTRIES: &[Country] = &[
    Country {
        code: "DE",
        region: "EU",
        currency: "EUR",
        fx: 0.92,
        dial: "+49",
        weight: 9.0,
    },
    Country {
        code: "FR",
        region: "EU",
        currency: "EUR",
        fx: 0.92,
        dial: "+33",
        weight: 7.0,
    },
    Country {
        code: "NL",
        region: "EU",
        currency: "EUR",
        fx: 0.92,
        dial: "+31",
        weight: 3.0,
    },
    Country {
        code: "ES",
        region: "EU",
        currency: "EUR",
        fx: 0.92,
        dial: "+34",
        weight: 4.0,
    },
    Country {
        code: "IT",
        region: "EU",
        currency: "EUR",
        fx: 0.92,
        dial: "+39",
        weight: 4.0,
    },
    Country {
        code: "IE",
        region: "EU",
        currency: "EUR",
        fx: 0.92,
        dial: "+353",
        weight: 1.0,
    },
    Country {
        code: "SE",
        region: "EU",
        currency: "SEK",
        fx: 10.5,
        dial: "+46",
        weight: 2.0,
    },
    Country {
        code: "PL",
        region: "EU",
        currency: "PLN",
        fx: 4.0,
        dial: "+48",
        weight: 2.0,
    },
    Country {
        code: "US",
        region: "NA",
        currency: "USD",
        fx: 1.0,
        dial: "+1",
        weight: 26.0,
    },
    Country {
        code: "CA",
        region: "NA",
        currency: "CAD",
        fx: 1.36,
        dial: "+1",
        weight: 5.0,
    },
    Country {
        code: "MX",
        region: "NA",
        currency: "MXN",
        fx: 17.0,
        dial: "+52",
        weight: 3.0,
    },
    Country {
        code: "JP",
        region: "APAC",
        currency: "JPY",
        fx: 150.0,
        dial: "+81",
        weight: 6.0,
    },
    Country {
        code: "AU",
        region: "APAC",
        currency: "AUD",
        fx: 1.52,
        dial: "+61",
        weight: 5.0,
    },
    Country {
        code: "SG",
        region: "APAC",
        currency: "SGD",
        fx: 1.34,
        dial: "+65",
        weight: 2.0,
    },
    Country {
        code: "IN",
        region: "APAC",
        currency: "INR",
        fx: 83.0,
        dial: "+91",
        weight: 5.0,
    },
    Country {
        code: "KR",
        region: "APAC",
        currency: "KRW",
        fx: 1350.0,
        dial: "+82",
        weight: 2.0,
    },
];

const FIRST_NAMES: &[&str] = &[
    "Emma",
    "Liam",
    "Olivia",
    "Noah",
    "Sophia",
    "Lucas",
    "Mia",
    "Leon",
    "Hannah",
    "Finn",
    "Chloe",
    "Hugo",
    "Lea",
    "Mateo",
    "Sofia",
    "Luca",
    "Giulia",
    "Aoife",
    "Sean",
    "Elsa",
    "Oskar",
    "Zofia",
    "Jakub",
    "James",
    "Ava",
    "Ethan",
    "Isabella",
    "Mason",
    "Camila",
    "Diego",
    "Yuki",
    "Haruto",
    "Sakura",
    "Ren",
    "Charlotte",
    "Jack",
    "Wei",
    "Mei",
    "Arjun",
    "Priya",
    "Aarav",
    "Ananya",
    "Min-jun",
    "Seo-yeon",
    "Lena",
    "Marie",
    "Pierre",
    "Julia",
    "Daan",
    "Sanne",
];
const LAST_NAMES: &[&str] = &[
    "Müller",
    "Schmidt",
    "Martin",
    "Bernard",
    "de Jong",
    "Jansen",
    "García",
    "López",
    "Rossi",
    "Russo",
    "Murphy",
    "Kelly",
    "Andersson",
    "Nilsson",
    "Nowak",
    "Kowalski",
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Tremblay",
    "Roy",
    "Hernández",
    "Martínez",
    "Sato",
    "Suzuki",
    "Takahashi",
    "Wilson",
    "Taylor",
    "Tan",
    "Lim",
    "Sharma",
    "Patel",
    "Gupta",
    "Kim",
    "Lee",
    "Park",
    "Weber",
    "Dubois",
    "Moreau",
    "Visser",
    "Romano",
    "Byrne",
    "Lindqvist",
    "Wiśniewski",
    "Davis",
    "Clark",
    "Nguyen",
    "Chen",
    "Singh",
];
const MAIL_DOMAINS: &[&str] = &[
    "gmail.com",
    "outlook.com",
    "proton.me",
    "icloud.com",
    "yahoo.com",
];
const COMPANY_WORDS: &[&str] = &[
    "northwind",
    "contoso",
    "fabrikam",
    "initech",
    "globex",
    "umbrella",
    "stark",
    "wayne",
    "acme",
    "tyrell",
    "hooli",
    "vandelay",
    "wonka",
    "soylent",
    "cyberdyne",
];

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

struct Customer {
    id: i64,
    country: usize,
    signup: i32,
    segment: &'static str,
    cards: Vec<(String, &'static str)>,
}

struct Product {
    id: i64,
    list_price: f64,
    popularity: f64,
}

fn cents(v: f64) -> i128 {
    (v * 100.0).round() as i128
}

fn round_price(v: f64, currency: &str) -> f64 {
    if matches!(currency, "JPY" | "KRW") {
        v.round()
    } else {
        (v * 100.0).round() / 100.0
    }
}

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

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn ts_builder() -> TimestampMicrosecondBuilder {
    TimestampMicrosecondBuilder::new().with_timezone("UTC")
}

fn dec_builder(p: u8, s: i8) -> Result<Decimal128Builder> {
    Decimal128Builder::new()
        .with_precision_and_scale(p, s)
        .map_err(|e| Error::Execution(e.into()))
}

fn write_parquet(path: &Path, fields: Vec<Field>, columns: Vec<ArrayRef>) -> Result<usize> {
    let schema = Arc::new(Schema::new(fields));
    let batch =
        RecordBatch::try_new(schema.clone(), columns).map_err(|e| Error::Execution(e.into()))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| io(format!("cannot create {}", dir.display()), e))?;
    }
    let file = File::create(path).map_err(|e| io(format!("cannot write {}", path.display()), e))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(64 * 1024))
        .set_created_by("meshql demo generator".into())
        .build();
    let parquet_err = |e: datafusion::parquet::errors::ParquetError| Error::Execution(e.into());
    let mut writer = ArrowWriter::try_new(file, schema, Some(props)).map_err(parquet_err)?;
    writer.write(&batch).map_err(parquet_err)?;
    writer.close().map_err(parquet_err)?;
    Ok(batch.num_rows())
}

/// Generates the demo data at `scale` into `out` (created if missing).
pub fn generate(out: &Path, scale: u32) -> Result<Summary> {
    let scale = scale.max(1) as usize;
    let mut rng = Rng(0x6D65_7368_716C_0001);
    let mut summary = Summary::default();
    let first = days_from_civil(FIRST_ORDER_DATE.0, FIRST_ORDER_DATE.1, FIRST_ORDER_DATE.2);
    let last = days_from_civil(LAST_ORDER_DATE.0, LAST_ORDER_DATE.1, LAST_ORDER_DATE.2);
    let signup_first = days_from_civil(2021, 1, 1);
    const DAY_US: i64 = 86_400_000_000;

    // Products.
    let n_products = 300 * scale.min(10) + 20 * scale;
    let mut products = Vec::with_capacity(n_products);
    {
        let mut id = Int64Builder::new();
        let mut name = StringBuilder::new();
        let mut category = StringBuilder::new();
        let mut price = dec_builder(10, 2)?;
        for i in 0..n_products {
            let cat = &CATEGORIES[i % CATEGORIES.len()];
            let noun = rng.pick(cat.nouns);
            let adj = rng.pick(ADJECTIVES);
            let series = 1 + i / (CATEGORIES.len() * ADJECTIVES.len());
            let p = cat.low * (cat.high / cat.low).powf(rng.f64().powf(1.4));
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
        summary.products = write_parquet(
            &out.join("catalog/products/products.parquet"),
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
    }

    // Inventory levels: one row per product and warehouse, as of the end of the data.
    {
        let mut pid = Int64Builder::new();
        let mut wh = StringBuilder::new();
        let mut on_hand = Int32Builder::new();
        let mut updated = ts_builder();
        for p in &products {
            for w in WAREHOUSES {
                pid.append_value(p.id);
                wh.append_value(*w);
                let stock = if rng.f64() < 0.06 {
                    0
                } else {
                    rng.range(3, 800) as i32
                };
                on_hand.append_value(stock);
                updated.append_value((last as i64) * DAY_US - rng.range(0, 72 * 3600) * 1_000_000);
            }
        }
        summary.inventory_levels = write_parquet(
            &out.join("catalog/inventory_levels/inventory_levels.parquet"),
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
    }

    // Customers.
    let n_customers = 2_000 * scale;
    let country_weights: Vec<(usize, f64)> = COUNTRIES
        .iter()
        .enumerate()
        .map(|(i, c)| (i, c.weight))
        .collect();
    let mut customers = Vec::with_capacity(n_customers);
    {
        let mut id = Int64Builder::new();
        let mut full_name = StringBuilder::new();
        let mut email = StringBuilder::new();
        let mut phone = StringBuilder::new();
        let mut country = StringBuilder::new();
        let mut region = StringBuilder::new();
        let mut segment = StringBuilder::new();
        let mut signup = Date32Builder::new();
        for i in 0..n_customers {
            let ci = *rng.weighted(&country_weights);
            let c = &COUNTRIES[ci];
            let first_name = rng.pick(FIRST_NAMES);
            let last_name = rng.pick(LAST_NAMES);
            let seg = *rng.weighted(&[("consumer", 70.0), ("smb", 22.0), ("enterprise", 8.0)]);
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
                (*rng.pick(MAIL_DOMAINS)).to_string()
            } else {
                format!(
                    "{}.{}",
                    rng.pick(COMPANY_WORDS),
                    if c.region == "NA" {
                        "com".to_string()
                    } else {
                        c.code.to_lowercase()
                    }
                )
            };
            let cid = 1 + i as i64;
            // Later signups are more common: the business grows.
            let s = signup_first + ((last - 60 - signup_first) as f64 * rng.f64().sqrt()) as i32;
            id.append_value(cid);
            full_name.append_value(format!("{first_name} {last_name}"));
            // The customer id makes every address distinct (the contract
            // says so and `meshql check` holds it to that).
            email.append_value(format!("{local}{cid}@{domain}"));
            phone.append_value(format!(
                "{} {} {:03} {:04}",
                c.dial,
                rng.range(20, 999),
                rng.range(0, 999),
                rng.range(0, 9999)
            ));
            country.append_value(c.code);
            region.append_value(c.region);
            segment.append_value(seg);
            signup.append_value(s);
            let n_cards = if rng.f64() < 0.25 { 2 } else { 1 };
            let cards = (0..n_cards).map(|_| card_number(&mut rng)).collect();
            customers.push(Customer {
                id: cid,
                country: ci,
                signup: s,
                segment: seg,
                cards,
            });
        }
        summary.customers = write_parquet(
            &out.join("customers/customers/customers.parquet"),
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
    }

    // Orders, their items and their payments, written one file per month.
    struct Order {
        id: i64,
        customer: usize,
        date: i32,
        ts: i64,
        status: &'static str,
        total_cents: i128,
    }
    let n_orders = 20_000 * scale;
    let popularity: Vec<(usize, f64)> = products
        .iter()
        .enumerate()
        .map(|(i, p)| (i, p.popularity))
        .collect();
    let mut orders: Vec<Order> = Vec::with_capacity(n_orders);
    let mut items: Vec<(i64, i32, i64, i32, i128)> = Vec::with_capacity(n_orders * 3);
    let span = (last - first) as f64;
    while orders.len() < n_orders {
        // Growth over time, with a peak in November and December.
        let date = first + (span * rng.f64().powf(0.8)).round() as i32;
        let month = month_of(date);
        let season = match month {
            11 => 1.0,
            12 => 0.95,
            1 | 2 => 0.55,
            _ => 0.6,
        };
        if rng.f64() > season {
            continue;
        }
        let ci = ((rng.f64().powf(1.7)) * n_customers as f64) as usize % n_customers;
        let cust = &customers[ci];
        if cust.signup > date {
            continue;
        }
        let oid = 100_000 + orders.len() as i64;
        let age = last - date;
        let status = if age < 3 {
            *rng.weighted(&[("pending", 60.0), ("shipped", 40.0)])
        } else if age < 10 {
            *rng.weighted(&[("shipped", 55.0), ("delivered", 40.0), ("cancelled", 5.0)])
        } else {
            *rng.weighted(&[("delivered", 88.0), ("cancelled", 5.0), ("returned", 7.0)])
        };
        let c = &COUNTRIES[cust.country];
        let boost = match cust.segment {
            "enterprise" => 3.0,
            "smb" => 1.8,
            _ => 1.0,
        };
        let n_lines = 1 + (rng.f64().powf(1.8) * 5.0) as i32;
        let mut total = 0i128;
        for line in 1..=n_lines {
            let p = &products[*rng.weighted(&popularity)];
            let qty = (1.0 + rng.f64().powf(3.0) * 3.0 * boost) as i32;
            let discount = *rng.weighted(&[(0.0, 70.0), (0.05, 12.0), (0.10, 12.0), (0.20, 6.0)]);
            let unit = round_price(p.list_price * c.fx * (1.0 - discount), c.currency);
            let unit_cents = cents(unit);
            total += unit_cents * qty as i128;
            items.push((oid, line, p.id, qty, unit_cents));
        }
        let ts = date as i64 * DAY_US + rng.range(6 * 3600, 23 * 3600 + 3599) * 1_000_000;
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
    let mut txn_id = 1i64;
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

        let mut t_id = Int64Builder::new();
        let mut t_oid = Int64Builder::new();
        let mut t_amount = dec_builder(12, 2)?;
        let mut t_currency = StringBuilder::new();
        let mut t_card = StringBuilder::new();
        let mut t_brand = StringBuilder::new();
        let mut t_status = StringBuilder::new();
        let mut t_at = ts_builder();
        let mut t_region = StringBuilder::new();

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
            if o.status == "pending" {
                continue;
            }
            let (card, brand) = rng.pick(&cust.cards).clone();
            let mut at = o.ts + rng.range(20, 600) * 1_000_000;
            let mut txn = |amount: i128, st: &str, at: i64| {
                t_id.append_value(txn_id);
                txn_id += 1;
                t_oid.append_value(o.id);
                t_amount.append_value(amount);
                t_currency.append_value(c.currency);
                t_card.append_value(&card);
                t_brand.append_value(brand);
                t_status.append_value(st);
                t_at.append_value(at);
                t_region.append_value(c.region);
            };
            if rng.f64() < 0.04 {
                txn(o.total_cents, "declined", at);
                at += rng.range(60, 900) * 1_000_000;
            }
            if o.status == "cancelled" && rng.f64() < 0.5 {
                txn(o.total_cents, "voided", at);
                continue;
            }
            txn(o.total_cents, "captured", at);
            if matches!(o.status, "returned" | "cancelled") {
                txn(o.total_cents, "refunded", at + rng.range(2, 20) * DAY_US);
            }
        }
        summary.orders += write_parquet(
            &out.join(format!("{STAGING}/orders-{tag}.parquet")),
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
        summary.order_items += write_parquet(
            &out.join(format!("sales/order_items/order_items-{tag}.parquet")),
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
        summary.transactions += write_parquet(
            &out.join(format!("payments/transactions/transactions-{tag}.parquet")),
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
                Arc::new(t_id.finish()),
                Arc::new(t_oid.finish()),
                Arc::new(t_amount.finish()),
                Arc::new(t_currency.finish()),
                Arc::new(t_card.finish()),
                Arc::new(t_brand.finish()),
                Arc::new(t_status.finish()),
                Arc::new(t_at.finish()),
                Arc::new(t_region.finish()),
            ],
        )?;
    }

    // Marketing: daily performance of each campaign.
    {
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
        let n_campaigns = 36 * scale;
        for k in 0..n_campaigns {
            let (ch, ctr, cpc, roas) = channels[k % channels.len()];
            let start = first + rng.below((last - first - 30) as usize) as i32;
            let len = rng.range(21, 90) as i32;
            let (y, _) = year_month(start);
            let reach = 2_000.0 * (1.0 + rng.f64() * 20.0);
            let quality = 0.6 + rng.f64() * 0.8;
            for d in start..(start + len).min(last + 1) {
                let season = if matches!(month_of(d), 11 | 12) {
                    1.6
                } else {
                    1.0
                };
                let imp = (reach * season * (0.7 + rng.f64() * 0.6)) as i64;
                let clk = ((imp as f64) * ctr * quality * (0.8 + rng.f64() * 0.4)) as i64;
                let sp = clk as f64 * cpc * (0.85 + rng.f64() * 0.3);
                let rev = sp * roas * quality * (0.5 + rng.f64());
                id.append_value(format!("CMP-{y}-{:03}", k + 1));
                channel.append_value(ch);
                day.append_value(d);
                impressions.append_value(imp);
                clicks.append_value(clk);
                spend.append_value(cents(sp));
                revenue.append_value(cents(rev));
            }
        }
        summary.campaign_days = write_parquet(
            &out.join("marketing/campaign_performance/campaign_performance.parquet"),
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
    }

    Ok(summary)
}

/// Where `generate` writes the orders as Parquet, the landing files
/// [`build_lakehouse`] loads into the Iceberg table.
const STAGING: &str = "sales/orders";
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
fn build_lakehouse(out: &Path) -> Result<()> {
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
            crate::iceberg::iceberg_message(&e)
        ),
    };
    let warehouse = out.join(LAKEHOUSE_WAREHOUSE);
    std::fs::create_dir_all(&warehouse)
        .map_err(|e| io(format!("cannot create {}", warehouse.display()), e))?;
    let catalog = crate::iceberg::sql_catalog(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2025, 1, 1), 20_089);
        assert_eq!(year_month(days_from_civil(2026, 9, 30)), (2026, 9));
        assert_eq!(year_month(days_from_civil(2024, 2, 29)), (2024, 2));
        for days in -800..30_000 {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

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
