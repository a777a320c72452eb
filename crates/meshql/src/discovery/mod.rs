//! The reserved domain `meshql`: discovery tables built from the contracts
//! and policies, each showing only what the principal asking may see, and
//! the findings of checks that `meshql.quality` shows ([`findings`]).
//!
//! Discovery reads the mesh, the principal's policies and the files the
//! mesh keeps (check results, the audit log); every session registers its
//! tables. It runs no queries itself.

pub(crate) mod findings;

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use arrow::array::{ArrayRef, BooleanArray, Int32Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::{Session as DfSession, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;
use meshql_manifest::{Access, ColumnAction, Contract};

use crate::governance::{ColumnDecision, ProductPolicy};
use crate::mesh::Mesh;
use crate::principal::Principal;
use findings::read_if_present;

/// The domain's name.
pub(crate) const DOMAIN: &str = "meshql";

/// What every system table of one session knows.
#[derive(Debug)]
pub(crate) struct SystemContext {
    pub(crate) mesh: Mesh,
    pub(crate) principal: Principal,
    pub(crate) policies: BTreeMap<String, Arc<ProductPolicy>>,
}

impl SystemContext {
    /// The contracts of the products the principal can see, with their
    /// policy, within `only`.
    fn visible<'a>(
        &'a self,
        only: &'a Only,
    ) -> impl Iterator<Item = (&'a Contract, &'a ProductPolicy)> + 'a {
        self.mesh
            .catalog()
            .contracts
            .iter()
            .filter(move |c| only.admits(c))
            .filter_map(|c| {
                let p = self.policies.get(&c.qualified_name())?;
                p.visible.then_some((c, p.as_ref()))
            })
    }
}

/// The products a scan's filters name (`domain = '...'`, `product =
/// '...'`), so that a lookup of one product does not build, or read the
/// storage of, every other. The filters still run over what is built.
#[derive(Debug, Default)]
pub(crate) struct Only {
    domain: Option<Vec<String>>,
    product: Option<Vec<String>>,
}

impl Only {
    fn from_filters(filters: &[Expr]) -> Only {
        use datafusion::logical_expr::expr::InList;
        use datafusion::logical_expr::{BinaryExpr, Operator};
        use datafusion::scalar::ScalarValue;
        fn text(e: &Expr) -> Option<String> {
            match e {
                Expr::Literal(
                    ScalarValue::Utf8(Some(v))
                    | ScalarValue::Utf8View(Some(v))
                    | ScalarValue::LargeUtf8(Some(v)),
                    _,
                ) => Some(v.clone()),
                _ => None,
            }
        }
        let mut only = Only::default();
        for f in filters {
            let (column, values) = match f {
                Expr::BinaryExpr(BinaryExpr {
                    left,
                    op: Operator::Eq,
                    right,
                }) => match (left.as_ref(), right.as_ref()) {
                    (Expr::Column(c), v) | (v, Expr::Column(c)) => match text(v) {
                        Some(v) => (c, vec![v]),
                        None => continue,
                    },
                    _ => continue,
                },
                Expr::InList(InList {
                    expr,
                    list,
                    negated: false,
                }) => match expr.as_ref() {
                    Expr::Column(c) => match list.iter().map(text).collect::<Option<Vec<_>>>() {
                        Some(values) => (c, values),
                        None => continue,
                    },
                    _ => continue,
                },
                _ => continue,
            };
            match column.name.as_str() {
                "domain" => only.domain = Some(values),
                "product" => only.product = Some(values),
                _ => {}
            }
        }
        only
    }

    fn admits(&self, c: &Contract) -> bool {
        self.domain.as_ref().is_none_or(|d| d.contains(&c.domain))
            && self
                .product
                .as_ref()
                .is_none_or(|p| p.contains(&c.product.name))
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    Products,
    Columns,
    MyPolicies,
    Quality,
    QualityHistory,
    Audit,
    Lineage,
}

impl Kind {
    /// The tables every principal has.
    pub(crate) const ALL: [(&'static str, Kind); 5] = [
        ("products", Kind::Products),
        ("columns", Kind::Columns),
        ("quality", Kind::Quality),
        ("quality_history", Kind::QualityHistory),
        ("my_policies", Kind::MyPolicies),
    ];
    /// The tables only principals holding an auditor role have.
    pub(crate) const AUDITOR: [(&'static str, Kind); 2] =
        [("audit", Kind::Audit), ("lineage", Kind::Lineage)];
}

/// A row of `meshql.columns`: the product, the column's index, the column
/// and its mask, if masked.
type ColumnRow<'a> = (
    &'a Contract,
    usize,
    &'a meshql_manifest::Column,
    Option<&'a str>,
);

/// A row of `meshql.quality`: the domain, the product, the kept result and
/// whether the principal reads the product restricted.
type QualityRow<'a> = (&'a str, &'a str, &'a findings::KeptResult, bool);

/// The message of a check shown to a principal who reads its product
/// restricted (a row filter, a mask or a hidden column) when it says what
/// was measured ([`crate::check::measures_rows`]): the outcome is the
/// contract's, the measured value came from rows they do not see raw.
pub(crate) const WITHHELD: &str = "(withheld: measured over rows you do not see raw)";

/// One system table; its rows are computed when it is read.
#[derive(Debug)]
pub(crate) struct SystemTable {
    kind: Kind,
    context: Arc<SystemContext>,
    schema: SchemaRef,
}

fn text(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
}

impl SystemTable {
    pub(crate) fn new(kind: Kind, context: Arc<SystemContext>) -> SystemTable {
        let fields = match kind {
            Kind::Products => vec![
                text("domain"),
                text("product"),
                text("version"),
                text("status"),
                text("owner"),
                text("members"),
                text("description"),
                text("tags"),
                text("storage"),
                text("location"),
                text("sla"),
                Field::new(
                    "last_updated",
                    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                    true,
                ),
                text("freshness_sla"),
                Field::new("freshness_met", DataType::Boolean, true),
                text("row_filter"),
            ],
            Kind::Columns => vec![
                text("domain"),
                text("product"),
                text("column_name"),
                Field::new("position", DataType::Int32, false),
                text("data_type"),
                Field::new("required", DataType::Boolean, false),
                Field::new("primary_key", DataType::Boolean, false),
                text("classification"),
                text("tags"),
                text("description"),
                Field::new("masked", DataType::Boolean, false),
                text("mask"),
            ],
            Kind::Quality | Kind::QualityHistory => vec![
                text("domain"),
                text("product"),
                text("check"),
                text("rule"),
                text("column_name"),
                text("outcome"),
                text("message"),
                Field::new(
                    "checked_at",
                    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                    true,
                ),
                text("location"),
            ],
            Kind::Audit => vec![
                Field::new(
                    "time",
                    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                    true,
                ),
                text("query_id"),
                text("user"),
                text("roles"),
                text("client"),
                text("statement"),
                text("product"),
                text("columns"),
                text("masks"),
                text("row_filter"),
                Field::new("rows", DataType::Int64, true),
                Field::new("bytes", DataType::Int64, true),
                Field::new("duration_ms", DataType::Float64, true),
                text("outcome"),
            ],
            Kind::Lineage => vec![
                text("product"),
                text("related_product"),
                text("relation"),
                text("user"),
                text("query_id"),
                Field::new(
                    "time",
                    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                    true,
                ),
            ],
            Kind::MyPolicies => vec![
                text("rule"),
                text("location"),
                text("access"),
                text("domain"),
                text("product"),
                text("columns"),
                text("row_filter"),
            ],
        };
        SystemTable {
            kind,
            context,
            schema: Arc::new(Schema::new(fields)),
        }
    }

    async fn batch(&self, projection: Option<&Vec<usize>>, only: &Only) -> DfResult<RecordBatch> {
        let columns: Vec<ArrayRef> = match self.kind {
            Kind::Products => self.products(projection, only).await,
            Kind::Columns => self.columns(only),
            Kind::MyPolicies => self.my_policies(),
            Kind::Quality => self.quality(only, false)?,
            Kind::QualityHistory => self.quality(only, true)?,
            Kind::Audit => self.audit()?,
            Kind::Lineage => self.lineage()?,
        };
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }

    async fn products(&self, projection: Option<&Vec<usize>>, only: &Only) -> Vec<ArrayRef> {
        let ctx = &self.context;
        let rows: Vec<(&Contract, &ProductPolicy)> = ctx.visible(only).collect();
        // Storage is only touched when the freshness columns are read.
        let first_time = self.schema.index_of("last_updated").unwrap_or(0);
        let wants_time = projection.is_none_or(|p| p.iter().any(|i| *i >= first_time));
        let mut updated: Vec<Option<i64>> = Vec::with_capacity(rows.len());
        for (c, _) in &rows {
            updated.push(if wants_time {
                ctx.mesh.last_updated_ms(c).await
            } else {
                None
            });
        }
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        fn sla(c: &Contract) -> Option<&meshql_manifest::SlaProperty> {
            c.sla.iter().find(|s| s.is_freshness())
        }
        let s = |f: &dyn Fn(&Contract) -> Option<String>| -> ArrayRef {
            Arc::new(StringArray::from(
                rows.iter().map(|(c, _)| f(c)).collect::<Vec<_>>(),
            ))
        };
        vec![
            s(&|c| Some(c.domain.clone())),
            s(&|c| Some(c.product.name.clone())),
            s(&|c| Some(c.version.clone())),
            s(&|c| Some(c.status.clone())),
            s(&|c| c.owner().map(str::to_string)),
            s(&|c| {
                let members: Vec<String> = c
                    .team
                    .iter()
                    .flat_map(|t| &t.members)
                    .map(|m| match &m.role {
                        Some(r) => format!("{} ({r})", m.username),
                        None => m.username.clone(),
                    })
                    .collect();
                (!members.is_empty()).then(|| members.join(", "))
            }),
            s(&|c| {
                c.description
                    .clone()
                    .or_else(|| c.product.description.clone())
            }),
            s(&|c| (!c.tags.is_empty()).then(|| c.tags.join(", "))),
            s(&|c| {
                c.servers.first().map(|s| {
                    if s.is_iceberg() {
                        "iceberg".to_string()
                    } else {
                        s.format.clone()
                    }
                })
            }),
            s(&|c| {
                c.servers.first().map(|s| match &s.iceberg {
                    Some(t) => format!(
                        "Iceberg table {}.{} in catalog `{}`",
                        t.namespace.join("."),
                        t.table,
                        s.server
                    ),
                    None => format!("{} `{}` {}", s.format, s.server, s.path),
                })
            }),
            s(&|c| {
                let sla: Vec<String> = c
                    .sla
                    .iter()
                    .map(|s| {
                        let mut t = format!("{} {}", s.property, s.value);
                        if let Some(u) = &s.unit {
                            t.push_str(&format!(" {u}"));
                        }
                        if let Some(e) = &s.element {
                            t.push_str(&format!(" on {e}"));
                        }
                        t
                    })
                    .collect();
                (!sla.is_empty()).then(|| sla.join("; "))
            }),
            Arc::new(
                arrow::array::TimestampMillisecondArray::from(updated.clone()).with_timezone("UTC"),
            ),
            s(&|c| sla(c).map(|s| format!("{} {}", s.value, s.unit.as_deref().unwrap_or("d")))),
            Arc::new(BooleanArray::from(
                rows.iter()
                    .zip(&updated)
                    .map(|((c, _), at)| {
                        let max = sla(c)?.max_age().ok()?;
                        let at = (*at)?;
                        Some(now - at <= max.as_millis() as i64)
                    })
                    .collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                rows.iter()
                    .map(|(_, p)| p.row_filter.as_ref().map(|f| f.sql.clone()))
                    .collect::<Vec<_>>(),
            )),
        ]
    }

    fn columns(&self, only: &Only) -> Vec<ArrayRef> {
        let mut rows = Vec::new();
        for (c, policy) in self.context.visible(only) {
            for (i, col) in c.product.columns.iter().enumerate() {
                let decision = policy.columns.iter().find(|p| p.name == col.name);
                let masked = match decision.map(|d| &d.action) {
                    Some(ColumnDecision::Deny) | None => continue,
                    Some(ColumnDecision::Mask(m)) => Some(m.sql.as_str()),
                    Some(ColumnDecision::Allow) => None,
                };
                rows.push((c, i, col, masked));
            }
        }
        let s = |f: &dyn Fn(&ColumnRow<'_>) -> Option<String>| -> ArrayRef {
            Arc::new(StringArray::from(rows.iter().map(f).collect::<Vec<_>>()))
        };
        let b = |f: &dyn Fn(&ColumnRow<'_>) -> bool| -> ArrayRef {
            Arc::new(BooleanArray::from(rows.iter().map(f).collect::<Vec<_>>()))
        };
        vec![
            s(&|r| Some(r.0.domain.clone())),
            s(&|r| Some(r.0.product.name.clone())),
            s(&|r| Some(r.2.name.clone())),
            Arc::new(Int32Array::from(
                rows.iter().map(|r| r.1 as i32 + 1).collect::<Vec<_>>(),
            )),
            s(&|r| Some(r.2.data_type.to_string())),
            b(&|r| r.2.required),
            b(&|r| r.2.primary_key),
            s(&|r| r.2.classification.clone()),
            s(&|r| (!r.2.tags.is_empty()).then(|| r.2.tags.join(", "))),
            s(&|r| r.2.description.clone()),
            b(&|r| r.3.is_some()),
            s(&|r| r.3.map(str::to_string)),
        ]
    }

    /// The kept results of `meshql check`'s data checks (the last ones, or
    /// every kept run's), for the products the principal sees; a check
    /// about a column they cannot see is left out, and where they read the
    /// product restricted, what a check measured is withheld: it was
    /// measured over every raw row.
    fn quality(&self, only: &Only, history: bool) -> DfResult<Vec<ArrayRef>> {
        let kept = findings::kept_results(&self.context.mesh)
            .map_err(datafusion::error::DataFusionError::Execution)?;
        let kept = if history { kept.history } else { kept.results };
        let dir = self.context.mesh.catalog().dir.clone();
        let visible: BTreeMap<String, &ProductPolicy> = self
            .context
            .visible(only)
            .map(|(c, p)| (c.qualified_name(), p))
            .collect();
        let rows: Vec<_> =
            kept.iter()
                .filter_map(|r| {
                    let product = r.finding.product.as_deref()?;
                    let policy = visible.get(product)?;
                    let (domain, name) = product.split_once('.')?;
                    if let Some(column) = &r.finding.column {
                        let seen = policy.columns.iter().any(|c| {
                            &c.name == column && !matches!(c.action, ColumnDecision::Deny)
                        });
                        if !seen {
                            return None;
                        }
                    }
                    Some((domain, name, r, !policy.is_unrestricted()))
                })
                .collect();
        let s = |f: &dyn Fn(&QualityRow<'_>) -> Option<String>| -> ArrayRef {
            Arc::new(StringArray::from(rows.iter().map(f).collect::<Vec<_>>()))
        };
        Ok(vec![
            s(&|r| Some(r.0.to_string())),
            s(&|r| Some(r.1.to_string())),
            s(&|r| Some(r.2.finding.check.clone())),
            s(&|r| Some(r.2.finding.name.clone())),
            s(&|r| r.2.finding.column.clone()),
            s(&|r| {
                Some(
                    match r.2.finding.outcome {
                        findings::Outcome::Passed => "passed",
                        findings::Outcome::Failed => "failed",
                        findings::Outcome::Skipped => "skipped",
                    }
                    .to_string(),
                )
            }),
            s(&|r| {
                let f = &r.2.finding;
                Some(
                    if r.3 && !f.message.is_empty() && crate::check::measures_rows(f) {
                        WITHHELD.to_string()
                    } else {
                        f.message.clone()
                    },
                )
            }),
            Arc::new(
                arrow::array::TimestampMillisecondArray::from(
                    rows.iter().map(|r| r.2.checked_at).collect::<Vec<_>>(),
                )
                .with_timezone("UTC"),
            ),
            s(&|r| {
                let file = r.2.finding.file.as_ref()?;
                let file = file.strip_prefix(&dir).unwrap_or(file);
                Some(match r.2.finding.line {
                    Some(line) => format!("{}:{line}", file.display()),
                    None => file.display().to_string(),
                })
            }),
        ])
    }

    /// The audit log's records, one row per product a statement read (one
    /// row with no product for statements that read none).
    fn records(&self) -> DfResult<Vec<serde_json::Value>> {
        let Some(path) = &self.context.mesh.catalog().mesh.audit else {
            return Ok(Vec::new());
        };
        let text = match read_if_present(path) {
            Ok(Some(t)) => t,
            Ok(None) => return Ok(Vec::new()),
            Err(e) => {
                return Err(datafusion::error::DataFusionError::Execution(format!(
                    "cannot read the audit log {}: {e}",
                    path.display()
                )));
            }
        };
        // A line being written when the file is read is left for next time.
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }

    fn audit(&self) -> DfResult<Vec<ArrayRef>> {
        let records = self.records()?;
        let mut rows: Vec<(&serde_json::Value, Option<&serde_json::Value>)> = Vec::new();
        for r in &records {
            match r["products"].as_array() {
                Some(ps) if !ps.is_empty() => rows.extend(ps.iter().map(|p| (r, Some(p)))),
                _ => rows.push((r, None)),
            }
        }
        let join = |v: &serde_json::Value| -> Option<String> {
            let items: Vec<String> = v
                .as_array()?
                .iter()
                .map(|x| match x {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Array(pair) => pair
                        .iter()
                        .filter_map(|p| p.as_str())
                        .collect::<Vec<_>>()
                        .join(": "),
                    other => other.to_string(),
                })
                .collect();
            (!items.is_empty()).then(|| items.join(", "))
        };
        let s = |f: &dyn Fn(&serde_json::Value, Option<&serde_json::Value>) -> Option<String>| -> ArrayRef {
            Arc::new(StringArray::from(
                rows.iter().map(|(r, p)| f(r, *p)).collect::<Vec<_>>(),
            ))
        };
        let i = |key: &str| -> ArrayRef {
            Arc::new(arrow::array::Int64Array::from(
                rows.iter()
                    .map(|(r, _)| r[key].as_i64())
                    .collect::<Vec<_>>(),
            ))
        };
        Ok(vec![
            timestamps(rows.iter().map(|(r, _)| r["time"].as_str()))?,
            s(&|r, _| r["query_id"].as_str().map(str::to_string)),
            s(&|r, _| r["user"].as_str().map(str::to_string)),
            s(&|r, _| join(&r["roles"])),
            s(&|r, _| r["client"].as_str().map(str::to_string)),
            s(&|r, _| r["statement"].as_str().map(str::to_string)),
            s(&|_, p| p.and_then(|p| p["product"].as_str()).map(str::to_string)),
            s(&|_, p| p.and_then(|p| join(&p["columns"]))),
            s(&|_, p| p.and_then(|p| join(&p["masks"]))),
            s(&|_, p| p.and_then(|p| p["row_filter"].as_str()).map(str::to_string)),
            i("rows"),
            i("bytes"),
            Arc::new(arrow::array::Float64Array::from(
                rows.iter()
                    .map(|(r, _)| r["duration_ms"].as_f64())
                    .collect::<Vec<_>>(),
            )),
            s(&|r, _| {
                Some(match &r["outcome"] {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Object(o) => match o.get("error") {
                        Some(e) => format!("error: {}", e["kind"].as_str().unwrap_or("")),
                        None => serde_json::Value::Object(o.clone()).to_string(),
                    },
                    other => other.to_string(),
                })
            }),
        ])
    }

    /// Which products were read together, by whom (from the audit), and
    /// which products a contract declares upstream (`customProperties`
    /// `upstream`, comma-separated).
    fn lineage(&self) -> DfResult<Vec<ArrayRef>> {
        // (product, related, relation, user, query id, time)
        type Row = (
            String,
            String,
            &'static str,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let mut rows: Vec<Row> = Vec::new();
        for r in self.records()? {
            let products: Vec<String> = r["products"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .filter_map(|p| p["product"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            for a in &products {
                for b in products.iter().filter(|b| *b != a) {
                    rows.push((
                        a.clone(),
                        b.clone(),
                        "read together",
                        r["user"].as_str().map(str::to_string),
                        r["query_id"].as_str().map(str::to_string),
                        r["time"].as_str().map(str::to_string),
                    ));
                }
            }
        }
        for c in &self.context.mesh.catalog().contracts {
            if let Some(up) = c.custom_properties.get("upstream") {
                for u in up.split(',').map(str::trim).filter(|u| !u.is_empty()) {
                    rows.push((
                        c.qualified_name(),
                        u.to_string(),
                        "upstream",
                        None,
                        None,
                        None,
                    ));
                }
            }
        }
        let s = |f: &dyn Fn(&Row) -> Option<String>| -> ArrayRef {
            Arc::new(StringArray::from(rows.iter().map(f).collect::<Vec<_>>()))
        };
        Ok(vec![
            s(&|r| Some(r.0.clone())),
            s(&|r| Some(r.1.clone())),
            s(&|r| Some(r.2.to_string())),
            s(&|r| r.3.clone()),
            s(&|r| r.4.clone()),
            timestamps(rows.iter().map(|r| r.5.as_deref()))?,
        ])
    }

    fn my_policies(&self) -> Vec<ArrayRef> {
        let ctx = &self.context;
        let rules: Vec<_> = ctx
            .mesh
            .catalog()
            .rules
            .iter()
            .filter(|r| crate::governance::decide::principal_matches(r, &ctx.principal))
            .collect();
        let s = |f: &dyn Fn(&meshql_manifest::Rule) -> Option<String>| -> ArrayRef {
            Arc::new(StringArray::from(
                rules.iter().map(|r| f(r)).collect::<Vec<_>>(),
            ))
        };
        vec![
            s(&|r| Some(r.name.clone())),
            s(&|r| Some(r.location())),
            s(&|r| {
                Some(match r.access {
                    Access::Allow => "allow".into(),
                    Access::Deny => "deny".into(),
                })
            }),
            s(&|r| Some(r.domain.as_ref().map_or("*".into(), |p| p.text.clone()))),
            s(&|r| Some(r.product.as_ref().map_or("*".into(), |p| p.text.clone()))),
            s(&|r| {
                let parts: Vec<String> = r
                    .columns
                    .iter()
                    .map(|c| {
                        let which = [
                            c.name.as_ref().map(|p| format!("name {}", p.text)),
                            c.classification
                                .as_ref()
                                .map(|p| format!("classification {}", p.text)),
                            c.tag.as_ref().map(|p| format!("tag {}", p.text)),
                        ]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join(" and ");
                        let what = match &c.action {
                            ColumnAction::Allow => "allow".to_string(),
                            ColumnAction::Deny => "deny".to_string(),
                            ColumnAction::Mask(e) => format!("mask {}", e.sql),
                        };
                        format!("{which}: {what}")
                    })
                    .collect();
                (!parts.is_empty()).then(|| parts.join("; "))
            }),
            s(&|r| r.row_filter.as_ref().map(|f| f.sql.clone())),
        ]
    }
}

#[async_trait]
impl TableProvider for SystemTable {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    /// Filters reach the scan, which builds only the products they name;
    /// they still run above it.
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<datafusion::logical_expr::TableProviderFilterPushDown>> {
        Ok(vec![
            datafusion::logical_expr::TableProviderFilterPushDown::Inexact;
            filters.len()
        ])
    }

    async fn scan(
        &self,
        state: &dyn DfSession,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        // Only the tables with one row per product (or per column) may be
        // cut by product; the others keep every row.
        let only = match self.kind {
            Kind::Products | Kind::Columns | Kind::Quality | Kind::QualityHistory => {
                Only::from_filters(filters)
            }
            _ => Only::default(),
        };
        let batch = self.batch(projection, &only).await?;
        let table = MemTable::try_new(Arc::clone(&self.schema), vec![vec![batch]])?;
        table.scan(state, projection, filters, limit).await
    }
}

/// RFC 3339 texts as UTC timestamps in milliseconds.
fn timestamps<'a>(values: impl Iterator<Item = Option<&'a str>>) -> DfResult<ArrayRef> {
    let text = StringArray::from(values.collect::<Vec<_>>());
    Ok(arrow::compute::cast(
        &text,
        &DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
    )?)
}

/// A product that [`search_sql`] finds, with where the term was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchHit {
    /// `domain.product`.
    pub product: String,
    pub owner: Option<String>,
    pub description: Option<String>,
    /// `name`, `description`, `tag` or `column NAME`, sorted, each once.
    pub matches: Vec<String>,
}

/// The search of [`search_sql`] without planning a query: the same
/// matches over the contracts and the principal's policies, products sorted
/// by name. For a server that holds the mesh (the web catalog), where
/// building `meshql.columns` for every search would be the cost.
pub(crate) fn search(
    mesh: &Mesh,
    policies: &BTreeMap<String, Arc<ProductPolicy>>,
    term: &str,
) -> Vec<SearchHit> {
    let term = term.to_lowercase();
    let has = |text: Option<&str>| text.unwrap_or("").to_lowercase().contains(&term);
    let joined = |tags: &[String]| (!tags.is_empty()).then(|| tags.join(", "));
    let mut hits: Vec<SearchHit> = Vec::new();
    for c in &mesh.catalog().contracts {
        let name = c.qualified_name();
        let Some(policy) = policies.get(&name).filter(|p| p.visible) else {
            continue;
        };
        let description = c
            .description
            .clone()
            .or_else(|| c.product.description.clone());
        let mut matches = std::collections::BTreeSet::new();
        if has(Some(&name)) {
            matches.insert("name".to_string());
        }
        if has(description.as_deref()) {
            matches.insert("description".to_string());
        }
        if has(joined(&c.tags).as_deref()) {
            matches.insert("tag".to_string());
        }
        for col in &c.product.columns {
            let seen = policy
                .columns
                .iter()
                .any(|p| p.name == col.name && !matches!(p.action, ColumnDecision::Deny));
            if seen
                && (has(Some(&col.name))
                    || has(col.description.as_deref())
                    || has(joined(&col.tags).as_deref())
                    || has(col.classification.as_deref()))
            {
                matches.insert(format!("column {}", col.name));
            }
        }
        if !matches.is_empty() {
            hits.push(SearchHit {
                product: name,
                owner: c.owner().map(str::to_string),
                description,
                matches: matches.into_iter().collect(),
            });
        }
    }
    hits.sort_by(|a, b| a.product.cmp(&b.product));
    hits
}

/// The search behind the shell's `\find`, `meshql products search` and the
/// web catalog, over the
/// `meshql` discovery tables: it runs as the user, locally or on a server,
/// and finds only what they may see. Case-insensitive; each product once,
/// with where the term was found.
pub fn search_sql(term: &str) -> String {
    let like = format!(
        "'%{}%'",
        term.to_lowercase()
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
            .replace('\'', "''")
    );
    let m = |e: &str| format!("lower(coalesce({e}, '')) LIKE {like} ESCAPE '\\'");
    format!(
        "SELECT domain || '.' || product AS product, owner, description, \
         string_agg(DISTINCT hit, ', ' ORDER BY hit) AS matches FROM (\
         SELECT domain, product, owner, description, 'name' AS hit FROM meshql.products WHERE {} \
         UNION ALL SELECT domain, product, owner, description, 'description' FROM meshql.products WHERE {} \
         UNION ALL SELECT domain, product, owner, description, 'tag' FROM meshql.products WHERE {} \
         UNION ALL SELECT p.domain, p.product, p.owner, p.description, 'column ' || c.column_name \
         FROM meshql.columns c JOIN meshql.products p ON c.domain = p.domain AND c.product = p.product \
         WHERE {} OR {} OR {} OR {}) \
         GROUP BY domain, product, owner, description ORDER BY 1",
        m("domain || '.' || product"),
        m("description"),
        m("tags"),
        m("c.column_name"),
        m("c.description"),
        m("c.tags"),
        m("c.classification"),
    )
}
