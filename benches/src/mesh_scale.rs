//! How meshql's cost grows with the size of the mesh: generated meshes of
//! N contracts across 100 domains (ten columns each, three of them personal
//! data, under masking policies and a row filter), each measured in a
//! process of its own: time to open the mesh strictly (every contract and
//! policy validated, every policy expression type-checked), time to start a
//! session, time to plan a query that joins two products (parse, analyze
//! with the policies, optimize, physical plan), resident memory after the
//! open and at the peak.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use arrow::array::{Date32Array, Decimal128Array, Int32Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use meshql::{Mesh, QueryOptions};
use serde_json::json;

use crate::measure::{current_rss, median, mib, ms, peak_rss};

const DOMAINS: usize = 100;

const COLUMNS: &[(&str, &str, &str)] = &[
    ("id", "bigint", "primaryKey: true"),
    ("email", "varchar", "classification: pii"),
    ("full_name", "varchar", "classification: pii"),
    (
        "phone",
        "varchar",
        "classification: pii\n        tags: [contact]",
    ),
    ("region", "varchar", ""),
    ("country", "varchar", ""),
    ("amount", "decimal(15,2)", ""),
    ("quantity", "int", ""),
    ("status", "varchar", ""),
    ("order_date", "date", ""),
];

const POLICIES: &str = "apiVersion: meshql/v1
kind: Policies
rules:
  - name: platform admins read everything raw
    role: platform_admin
    access: allow
  - name: region-bound analysts see their region's rows, personal data masked
    role: analyst
    hasAttribute: region
    hasColumn: region
    unlessRole: pii_reader
    columns:
      - name: email
        mask: mask_email
      - name: phone
        mask: \"mask_partial({column}, 3, 2, '*')\"
      - classification: pii
        mask: redact
    rowFilter: region = current_attribute('region')
  - name: everyone else reads personal data masked
    role: analyst|finance|guest
    unlessRole: pii_reader
    columns:
      - classification: pii
        mask: redact
";

fn domain(d: usize) -> String {
    format!("domain_{d:03}")
}

fn product(p: usize) -> String {
    format!("product_{p:04}")
}

/// Writes a mesh of `contracts` products into `dir`, all reading one small
/// Parquet file.
pub fn generate(dir: &Path, contracts: usize) -> Result<()> {
    let data = dir.join("data");
    std::fs::create_dir_all(data.join("shared"))?;
    write_rows(&data.join("shared/part-0.parquet"))?;
    std::fs::write(
        dir.join("mesh.yaml"),
        format!(
            "apiVersion: meshql/v1\nkind: Mesh\nname: scale\nstorage:\n  data:\n    type: local\n    root: {}\ngovernance:\n  roles: [pii_reader]\n",
            data.display()
        ),
    )?;
    std::fs::write(dir.join("policies.yaml"), POLICIES)?;
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../catalog/users.yaml"),
        dir.join("users.yaml"),
    )?;
    let per_domain = contracts.div_ceil(DOMAINS);
    let mut written = 0;
    'outer: for p in 0..per_domain {
        for d in 0..DOMAINS {
            if written == contracts {
                break 'outer;
            }
            let (dom, prod) = (domain(d), product(p));
            let mut text = format!(
                "apiVersion: v3.1.0\nkind: DataContract\nid: urn:meshql:scale:{dom}:{prod}\nname: {prod}\nversion: 1.0.0\nstatus: active\ndomain: {dom}\ndescription:\n  purpose: Generated product {p} of {dom}\nteam:\n  name: team-{d}\nschema:\n  - name: {prod}\n    physicalType: table\n    properties:\n"
            );
            for (name, ty, extra) in COLUMNS {
                let _ = write!(
                    text,
                    "      - name: {name}\n        physicalType: {ty}\n        required: true\n"
                );
                if !extra.is_empty() {
                    let _ = writeln!(text, "        {extra}");
                }
            }
            text.push_str("servers:\n  - server: data\n    type: local\n    format: parquet\n    path: shared\n");
            let folder = dir.join(&dom);
            std::fs::create_dir_all(&folder)?;
            std::fs::write(folder.join(format!("{prod}.yaml")), text)?;
            written += 1;
        }
    }
    Ok(())
}

fn write_rows(path: &Path) -> Result<()> {
    let fields: Vec<Field> = COLUMNS
        .iter()
        .map(|(name, ty, _)| {
            let t = match *ty {
                "bigint" => DataType::Int64,
                "int" => DataType::Int32,
                "decimal(15,2)" => DataType::Decimal128(15, 2),
                "date" => DataType::Date32,
                _ => DataType::Utf8,
            };
            Field::new(*name, t, false)
        })
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let n = 1000;
    let text = |f: &dyn Fn(i64) -> String| {
        Arc::new(StringArray::from_iter_values((0..n).map(f))) as arrow::array::ArrayRef
    };
    let regions = ["EU", "NA", "APAC"];
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(Int64Array::from_iter_values(0..n)),
            text(&|i| format!("user{i}@example.com")),
            text(&|i| format!("User {i}")),
            text(&|i| format!("+44 20 7946 {i:04}")),
            text(&|i| regions[i as usize % 3].to_string()),
            text(&|i| ["DE", "US", "JP"][i as usize % 3].to_string()),
            Arc::new(
                Decimal128Array::from_iter_values((0..n).map(|i| i as i128 * 125))
                    .with_precision_and_scale(15, 2)?,
            ),
            Arc::new(Int32Array::from_iter_values((0..n).map(|i| (i % 7) as i32))),
            text(&|i| ["open", "shipped", "paid"][i as usize % 3].to_string()),
            Arc::new(Date32Array::from_iter_values(
                (0..n).map(|i| 20_454 + (i % 365) as i32),
            )),
        ],
    )?;
    let file = std::fs::File::create(path)?;
    let mut writer = datafusion::parquet::arrow::ArrowWriter::try_new(file, schema, None)?;
    writer.write(&batch)?;
    writer.close()?;
    Ok(())
}

/// The query that touches two products of different domains.
fn two_product_query(contracts: usize) -> String {
    let last_domain = domain(contracts.min(DOMAINS) - 1);
    format!(
        "SELECT a.region, a.status, count(*) AS orders, sum(b.amount) AS amount \
         FROM domain_000.product_0000 a JOIN {last_domain}.product_0000 b ON a.id = b.id \
         WHERE a.order_date >= DATE '2026-03-01' AND b.email LIKE '%example.com' \
         GROUP BY a.region, a.status"
    )
}

/// The measurements of one mesh size.
#[derive(Debug)]
pub struct Measured {
    pub contracts: usize,
    pub open: Duration,
    pub session: Duration,
    pub plan_admin: Duration,
    pub plan_analyst: Duration,
    pub rss_after_open: Option<u64>,
    pub peak: Option<u64>,
    /// `meshql check --static` over the whole mesh.
    pub check_static: Duration,
    /// `meshql check`'s data checks, per product.
    pub check_data: Duration,
}

/// How many products the data checks are timed on.
const DATA_CHECKED: usize = 100;

/// The child process's work: generates a mesh of `contracts`, measures,
/// prints one JSON line.
pub fn child(contracts: usize) -> Result<()> {
    let dir = tempfile::tempdir()?;
    generate(dir.path(), contracts)?;
    let baseline = current_rss();
    let mut opens = Vec::new();
    let mut mesh = None;
    for _ in 0..3 {
        drop(mesh.take());
        let started = Instant::now();
        let m = Mesh::open_strict(dir.path()).context("the generated mesh")?;
        opens.push(started.elapsed());
        mesh = Some(m);
    }
    let Some(mesh) = mesh else {
        bail!("no mesh");
    };
    if mesh.product_names().len() != contracts {
        bail!(
            "the mesh has {} products, not {contracts}",
            mesh.product_names().len()
        );
    }
    let rss_after_open = current_rss();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let sql = two_product_query(contracts);
    let mut sessions = Vec::new();
    let mut plans = Vec::new();
    for user in ["admin", "eu_analyst"] {
        let principal = mesh.principal(user)?;
        let mut times = Vec::new();
        let mut session = None;
        for _ in 0..5 {
            drop(session.take());
            let started = Instant::now();
            session = Some(mesh.session(principal.clone()));
            times.push(started.elapsed());
        }
        sessions.extend(times);
        let Some(session) = session else {
            bail!("no session");
        };
        // The first query opens the products' storage; the rest plan.
        let rows = runtime.block_on(session.collect(&sql))?;
        if rows.iter().map(RecordBatch::num_rows).sum::<usize>() == 0 {
            bail!("the two-product query answered nothing for {user}");
        }
        let mut times = Vec::new();
        for _ in 0..50 {
            let started = Instant::now();
            runtime.block_on(session.plan(&sql, &QueryOptions::default()))?;
            times.push(started.elapsed());
        }
        plans.push(median(times));
    }
    // The gate: the static checks over every contract (median of 3), and
    // the data checks of up to DATA_CHECKED products, per product.
    let mut statics = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let report = runtime.block_on(meshql::check::run(
            &mesh,
            &meshql::check::CheckOptions::default(),
        ));
        statics.push(started.elapsed());
        if report.findings.len() < contracts {
            bail!("the static checks found {} findings", report.findings.len());
        }
    }
    let checked: Vec<String> = mesh
        .product_names()
        .into_iter()
        .take(DATA_CHECKED)
        .collect();
    let started = Instant::now();
    let report = runtime.block_on(meshql::check::run(
        &mesh,
        &meshql::check::CheckOptions {
            products: checked.clone(),
            data: true,
            against: None,
        },
    ));
    let check_data = started.elapsed() / checked.len() as u32;
    if let Some(f) = report
        .findings
        .iter()
        .find(|f| f.check == "schema" && f.outcome == meshql::check::Outcome::Failed)
    {
        bail!("a data check failed: {}", f.message);
    }
    let out = json!({
        "contracts": contracts,
        "open_ns": median(opens).as_nanos() as u64,
        "session_ns": median(sessions).as_nanos() as u64,
        "plan_admin_ns": plans[0].as_nanos() as u64,
        "plan_analyst_ns": plans[1].as_nanos() as u64,
        "rss_after_open": rss_after_open.zip(baseline).map(|(a, b)| a.saturating_sub(b)),
        "peak": peak_rss(),
        "check_static_ns": median(statics).as_nanos() as u64,
        "check_data_ns": check_data.as_nanos() as u64,
    });
    println!("{out}");
    Ok(())
}

/// Measures each size in a child process and writes `mesh-scale.md` and
/// `.csv` into `out`.
pub fn run(sizes: &[usize], out: &Path) -> Result<Vec<Measured>> {
    let exe = std::env::current_exe()?;
    let mut results = Vec::new();
    for &n in sizes {
        if n == 0 {
            bail!("a mesh needs at least one contract");
        }
        let output = std::process::Command::new(&exe)
            .args(["mesh-child", &n.to_string()])
            .stderr(std::process::Stdio::inherit())
            .output()?;
        if !output.status.success() {
            bail!("the mesh of {n} contracts failed");
        }
        let v: serde_json::Value = serde_json::from_slice(&output.stdout).with_context(|| {
            format!("mesh of {n}: {:?}", String::from_utf8_lossy(&output.stdout))
        })?;
        let d = |k: &str| Duration::from_nanos(v[k].as_u64().unwrap_or(0));
        let m = Measured {
            contracts: n,
            open: d("open_ns"),
            session: d("session_ns"),
            plan_admin: d("plan_admin_ns"),
            plan_analyst: d("plan_analyst_ns"),
            rss_after_open: v["rss_after_open"].as_u64(),
            peak: v["peak"].as_u64(),
            check_static: d("check_static_ns"),
            check_data: d("check_data_ns"),
        };
        eprintln!(
            "{n} contracts: open {:.1} ms, session {:.2} ms, plan {:.2} / {:.2} ms, check --static {:.1} ms, data checks {:.2} ms per product",
            ms(m.open),
            ms(m.session),
            ms(m.plan_admin),
            ms(m.plan_analyst),
            ms(m.check_static),
            ms(m.check_data)
        );
        results.push(m);
    }
    let mut md = format!(
        "# Mesh scale\n\nRun on {} ({}). `meshql-bench mesh --sizes {}`. Each size in a process of its own: contracts of ten columns (three personal data) across {DOMAINS} domains, three policy rules (masks by name and classification, a row filter by attribute). Open: `Mesh::open_strict`, median of 3. Session: `Mesh::session`, median of 5. Plan: a join of two products of different domains with a filter and a grouping, parsed, analyzed, optimized and physically planned, median of 50; as `admin` and as `eu_analyst` (masks and row filter on both products). Memory: resident memory the open added, and the process's peak. Check: `meshql check --static` over every contract (naming, owners, personal data for every user and role), median of 3; data checks (storage schema, a first row, row count and NULLs of required columns) of the first {DATA_CHECKED} products, per product.\n\n| contracts | open ms | session ms | plan ms (admin) | plan ms (eu_analyst) | MiB after open | peak MiB | check --static ms | data checks ms/product |\n| --: | --: | --: | --: | --: | --: | --: | --: | --: |\n",
        crate::tpch::today(),
        crate::tpch::machine(),
        sizes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
    );
    let mut csv = String::from(
        "contracts,open_ms,session_ms,plan_admin_ms,plan_analyst_ms,rss_after_open_bytes,peak_bytes,check_static_ms,check_data_ms_per_product\n",
    );
    for m in &results {
        let _ = writeln!(
            md,
            "| {} | {:.1} | {:.2} | {:.2} | {:.2} | {} | {} | {:.1} | {:.2} |",
            m.contracts,
            ms(m.open),
            ms(m.session),
            ms(m.plan_admin),
            ms(m.plan_analyst),
            mib(m.rss_after_open),
            mib(m.peak),
            ms(m.check_static),
            ms(m.check_data)
        );
        let _ = writeln!(
            csv,
            "{},{:.3},{:.3},{:.3},{:.3},{},{},{:.3},{:.3}",
            m.contracts,
            ms(m.open),
            ms(m.session),
            ms(m.plan_admin),
            ms(m.plan_analyst),
            m.rss_after_open.map_or(String::new(), |b| b.to_string()),
            m.peak.map_or(String::new(), |b| b.to_string()),
            ms(m.check_static),
            ms(m.check_data)
        );
    }
    md.push_str("\nTargets: a 10,000-contract mesh opens in under 1 s and plans a two-product query in under 5 ms.\n");
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join("mesh-scale.md"), md)?;
    std::fs::write(out.join("mesh-scale.csv"), csv)?;
    eprintln!("wrote {}", out.join("mesh-scale.md").display());
    Ok(results)
}
