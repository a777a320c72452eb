//! `meshql check`: the governance gate. Every check of every product is a
//! [`Finding`] that passed, failed or was skipped, with the file and line it
//! is about, so that CI can show each as a test case.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use arrow::array::Array;
use meshql_manifest::{Catalog, Contract, Expectation, Quality};
use serde::Serialize;

use crate::governance::{ColumnDecision, decide};
use crate::mesh::Mesh;
use crate::principal::Principal;

pub use crate::discovery::findings::HISTORY_RUNS;
pub use crate::discovery::findings::{Finding, Outcome};
use crate::discovery::findings::{KeptResult, KeptResults, kept_results};

/// Which checks to run.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// Only these products (`domain.product`); all when empty.
    pub products: Vec<String>,
    /// Also check the live data: schema, quality rules, freshness.
    pub data: bool,
    /// The catalog as it was, to flag breaking changes against.
    pub against: Option<Catalog>,
}

/// Every finding of a run, in order: the mesh's, then product by product.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn failed(&self) -> usize {
        self.count(Outcome::Failed)
    }

    pub fn count(&self, outcome: Outcome) -> usize {
        self.findings
            .iter()
            .filter(|f| f.outcome == outcome)
            .count()
    }
}

/// Runs the checks on `mesh` (opened leniently: its problems are findings).
pub async fn run(mesh: &Mesh, options: &CheckOptions) -> Report {
    let catalog = mesh.catalog();
    let mut report = Report::default();
    let wanted = |c: &Contract| {
        options.products.is_empty() || options.products.contains(&c.qualified_name())
    };
    // Problems of the files: contracts left out, policies that do not
    // type-check, references that do not resolve.
    for p in mesh.problems() {
        let product = catalog
            .contracts
            .iter()
            .find(|c| c.file == p.file)
            .map(Contract::qualified_name);
        report.findings.push(Finding::problem(p, product));
    }
    let principals = principals(catalog);
    for contract in catalog.contracts.iter().filter(|c| wanted(c)) {
        report.findings.extend(naming(contract));
        report.findings.extend(ownership(contract));
        report
            .findings
            .extend(personal_data(catalog, contract, &principals));
        if let Some(before) = &options.against {
            report.findings.extend(evolution(before, contract));
        }
    }
    if let Some(before) = &options.against {
        for old in before.contracts.iter().filter(|c| wanted(c)) {
            let name = old.qualified_name();
            if !catalog.contracts.iter().any(|c| c.qualified_name() == name) {
                report.findings.push(
                    Finding::new(Some(old), "evolution", "product kept").failed(format!(
                        "{name} was removed: its consumers' queries would fail (deprecate it with `status: deprecated` first)"
                    )),
                );
            }
        }
    }
    if options.data {
        let system = mesh.system_session();
        for contract in catalog.contracts.iter().filter(|c| wanted(c)) {
            report.findings.extend(data_checks(&system, contract).await);
        }
    }
    report
}

/// The checks of the live data, which `meshql check` keeps as the
/// products' last results.
const DATA_CHECKS: [&str; 3] = ["schema", "quality", "freshness"];

/// The schema check that reads the data, and the start of the name of the
/// one that counts a required column's NULLs.
const READ_DATA: &str = "data can be read";
const REQUIRED_NULLS: &str = "required column ";

/// Whether a finding's message says something measured over the product's
/// raw rows (a rule's value, a count of NULLs, an error reading the data),
/// which only who reads the product unrestricted may learn; the other
/// messages are about the schema and storage, which everyone who sees the
/// product sees.
pub(crate) fn measures_rows(f: &Finding) -> bool {
    f.check == "quality"
        || (f.check == "schema" && (f.name == READ_DATA || f.name.starts_with(REQUIRED_NULLS)))
}

/// Keeps the results of this run's data checks in the file `check.results`
/// of `mesh.yaml` names, for `meshql.quality`: they replace the kept
/// results of the products checked, and those of products that no longer
/// exist are dropped. Returns the file, or `None` when `mesh.yaml` names
/// none or the run checked no data.
pub fn keep_results(mesh: &Mesh, report: &Report) -> Result<Option<PathBuf>, String> {
    let Some(path) = &mesh.catalog().mesh.check_results else {
        return Ok(None);
    };
    let fresh: Vec<&Finding> = report
        .findings
        .iter()
        .filter(|f| f.product.is_some() && DATA_CHECKS.contains(&f.check.as_str()))
        .collect();
    if fresh.is_empty() {
        return Ok(None);
    }
    let checked: BTreeSet<&str> = fresh.iter().filter_map(|f| f.product.as_deref()).collect();
    let exists: BTreeSet<String> = mesh
        .catalog()
        .contracts
        .iter()
        .map(Contract::qualified_name)
        .collect();
    // Results that cannot be read are replaced, not merged.
    let kept = kept_results(mesh).unwrap_or_default();
    let keeps = |r: &KeptResult| {
        r.finding
            .product
            .as_deref()
            .is_some_and(|p| exists.contains(p))
    };
    // A file kept before the history was: its last results start it.
    let mut history: Vec<KeptResult> = if kept.history.is_empty() {
        kept.results.iter().filter(|r| keeps(r)).cloned().collect()
    } else {
        kept.history.into_iter().filter(keeps).collect()
    };
    let mut results: Vec<KeptResult> = kept
        .results
        .into_iter()
        .filter(|r| keeps(r) && !checked.contains(r.finding.product.as_deref().unwrap_or("")))
        .collect();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    // Two runs in one millisecond stay two runs.
    let last = history.iter().map(|r| r.checked_at).max().unwrap_or(0);
    let now = now.max(last + 1);
    results.extend(fresh.into_iter().map(|f| KeptResult {
        finding: f.clone(),
        checked_at: now,
    }));
    history.extend(results.iter().filter(|r| r.checked_at == now).cloned());
    let history = bounded_history(history);
    let text = serde_json::to_string_pretty(&KeptResults { results, history })
        .map_err(|e| format!("cannot write the check results: {e}"))?;
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        // Written aside and renamed, so readers see the old file or the new.
        let aside = path.with_extension(format!("{}.{now}.tmp", std::process::id()));
        std::fs::write(&aside, text)?;
        std::fs::rename(&aside, path)
    };
    write().map_err(|e| format!("cannot write the check results {}: {e}", path.display()))?;
    Ok(Some(path.clone()))
}

/// The history without the runs beyond the last [`HISTORY_RUNS`] of each
/// product, oldest first.
fn bounded_history(mut history: Vec<KeptResult>) -> Vec<KeptResult> {
    let mut runs: BTreeMap<&str, BTreeSet<i64>> = BTreeMap::new();
    for r in &history {
        if let Some(p) = r.finding.product.as_deref() {
            runs.entry(p).or_default().insert(r.checked_at);
        }
    }
    let oldest_kept: BTreeMap<String, i64> = runs
        .into_iter()
        .map(|(p, at)| {
            let skip = at.len().saturating_sub(HISTORY_RUNS);
            (p.to_string(), at.into_iter().nth(skip).unwrap_or(i64::MIN))
        })
        .collect();
    history.retain(|r| {
        r.finding
            .product
            .as_deref()
            .and_then(|p| oldest_kept.get(p))
            .is_some_and(|oldest| r.checked_at >= *oldest)
    });
    history.sort_by_key(|r| r.checked_at);
    history
}

/// Domain and product names are snake_case; a contract lives in the folder
/// of its domain.
fn naming(contract: &Contract) -> Vec<Finding> {
    let snake = |s: &str| {
        let mut chars = s.chars();
        chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    let mut out = Vec::new();
    for (what, name) in [
        ("domain", contract.domain.as_str()),
        ("product", contract.product.name.as_str()),
    ] {
        let f = Finding::new(
            Some(contract),
            "naming",
            format!("{what} name is snake_case"),
        );
        out.push(if snake(name) {
            f.passed(format!("`{name}`"))
        } else {
            f.failed(format!(
                "{what} name `{name}` is not snake_case (lower-case letters, digits and underscores, starting with a letter)"
            ))
        });
    }
    let folder = contract
        .file
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("");
    let f = Finding::new(
        Some(contract),
        "naming",
        "contract is in its domain's folder",
    );
    out.push(if folder == contract.domain {
        f.passed(format!("{folder}/"))
    } else {
        f.failed(format!(
            "the contract declares domain `{}` but is in folder `{folder}/`: move it to `{}/`",
            contract.domain, contract.domain
        ))
    });
    out
}

/// Every product has an owning team and a description.
fn ownership(contract: &Contract) -> Vec<Finding> {
    let owner = Finding::new(Some(contract), "ownership", "has an owner");
    let owner = match contract.owner() {
        Some(o) if !o.trim().is_empty() => owner.passed(format!("team `{o}`")),
        _ => owner.failed("the contract names no owner: add `team.name`"),
    };
    let described = Finding::new(Some(contract), "ownership", "has a description");
    let has = contract
        .description
        .as_deref()
        .is_some_and(|d| !d.trim().is_empty())
        || contract
            .product
            .description
            .as_deref()
            .is_some_and(|d| !d.trim().is_empty());
    let described = if has {
        described.passed("")
    } else {
        described.failed("the contract has no description: add `description.purpose`")
    };
    vec![owner, described]
}

/// The principals personal data is checked against: every local user as
/// they are, and every role someone can hold, alone and with each
/// attribute a rule asks for.
fn principals(catalog: &Catalog) -> Vec<(String, Principal)> {
    let mut out = Vec::new();
    for u in &catalog.users.users {
        let p = Principal {
            user: u.name.clone(),
            roles: u.roles.clone(),
            groups: u.groups.clone(),
            attributes: u.attributes.clone(),
        };
        out.push((format!("user `{}`", u.name), p));
    }
    let roles = catalog.known_roles();
    let attributes: BTreeSet<&str> = catalog
        .rules
        .iter()
        .flat_map(|r| r.has_attribute.iter().map(String::as_str))
        .collect();
    for role in roles {
        out.push((
            format!("role `{role}`"),
            Principal::new("meshql-check").with_role(role),
        ));
        for a in &attributes {
            out.push((
                format!("role `{role}` with attribute `{a}`"),
                Principal::new("meshql-check")
                    .with_role(role)
                    .with_attribute(*a, "any"),
            ));
        }
    }
    out
}

/// No principal outside the exempt roles reads a personal-data column raw.
fn personal_data(
    catalog: &Catalog,
    contract: &Contract,
    principals: &[(String, Principal)],
) -> Vec<Finding> {
    let personal = &catalog.policy_settings;
    let mut out = Vec::new();
    for column in contract
        .product
        .columns
        .iter()
        .filter(|c| personal.is_personal(c))
    {
        // Who would read it raw, by the rule that lets them.
        let mut exposed: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for (who, principal) in principals {
            if principal
                .roles
                .iter()
                .any(|r| personal.exempt_roles.contains(r))
            {
                continue;
            }
            let policy = decide(&catalog.rules, principal, contract);
            let raw = policy.visible
                && policy
                    .columns
                    .iter()
                    .any(|c| c.name == column.name && matches!(c.action, ColumnDecision::Allow));
            if raw {
                let rule = policy.rule.unwrap_or_else(|| "no rule".into());
                let whom = exposed.entry(rule).or_default();
                // A role with an attribute says nothing new after the role.
                if !whom.iter().any(|w| who.starts_with(w)) {
                    whom.push(who);
                }
            }
        }
        let exposed: Vec<String> = exposed
            .into_iter()
            .map(|(rule, whom)| format!("{} (rule {rule})", whom.join(", ")))
            .collect();
        let f = Finding::of_column(
            contract,
            "pii",
            format!("personal data column `{}` is protected", column.name),
            column,
        );
        out.push(if exposed.is_empty() {
            f.passed("masked or denied for every role that is not exempt")
        } else {
            f.failed(format!(
                "{} would expose PII column {} to {}; mask or deny it, or list the role in `exemptRoles`",
                contract.qualified_name(),
                column.name,
                exposed.join("; ")
            ))
        });
    }
    out
}

/// Breaking changes since `before`, unless the major version went up.
fn evolution(before: &Catalog, contract: &Contract) -> Vec<Finding> {
    let name = contract.qualified_name();
    let Some(old) = before.contracts.iter().find(|c| c.qualified_name() == name) else {
        return vec![
            Finding::new(
                Some(contract),
                "evolution",
                "compatible with the previous version",
            )
            .passed("a new product"),
        ];
    };
    let major = |v: &str| {
        v.trim_start_matches('v')
            .split('.')
            .next()
            .and_then(|m| m.parse::<u64>().ok())
    };
    let bumped =
        matches!((major(&old.version), major(&contract.version)), (Some(a), Some(b)) if b > a);
    let mut breaks = Vec::new();
    let new_cols = &contract.product.columns;
    for oc in &old.product.columns {
        match new_cols.iter().find(|c| c.name == oc.name) {
            None => {
                let renamed = new_cols.iter().find(|c| {
                    c.data_type == oc.data_type
                        && !old.product.columns.iter().any(|o| o.name == c.name)
                });
                breaks.push(match renamed {
                    Some(r) => format!("column `{}` was renamed to `{}`", oc.name, r.name),
                    None => format!("column `{}` was removed", oc.name),
                });
            }
            Some(nc) => {
                let old_t = crate::types::arrow_type(oc.data_type);
                let new_t = crate::types::arrow_type(nc.data_type);
                if !crate::types::widens(&new_t, &old_t) {
                    breaks.push(format!(
                        "column `{}` changed type from {} to {}, which does not hold every old value",
                        oc.name, oc.data_type, nc.data_type
                    ));
                }
            }
        }
    }
    let key = |c: &Contract| -> Vec<String> {
        c.product
            .columns
            .iter()
            .filter(|c| c.primary_key)
            .map(|c| c.name.clone())
            .collect()
    };
    if key(old) != key(contract) {
        breaks.push(format!(
            "the primary key changed from ({}) to ({})",
            key(old).join(", "),
            key(contract).join(", ")
        ));
    }
    let f = Finding::new(
        Some(contract),
        "evolution",
        "compatible with the previous version",
    );
    vec![if breaks.is_empty() {
        f.passed(format!("{} -> {}", old.version, contract.version))
    } else if bumped {
        f.passed(format!(
            "breaking changes with a new major version ({} -> {}): {}",
            old.version,
            contract.version,
            breaks.join("; ")
        ))
    } else {
        f.failed(format!(
            "breaking changes without a new major version ({} -> {}): {}",
            old.version,
            contract.version,
            breaks.join("; ")
        ))
    }]
}

/// Reads the product: its data against its contract, its quality rules,
/// its freshness.
async fn data_checks(system: &crate::Session, contract: &Contract) -> Vec<Finding> {
    let name = contract.qualified_name();
    let mut out = Vec::new();
    let readable = schema(system, contract, &mut out).await;
    if readable {
        quality_checks(system, contract, &mut out).await;
    } else {
        for rule in &contract.quality {
            out.push(
                Finding::of_rule(contract, rule)
                    .skipped("the data cannot be read as the contract declares it"),
            );
        }
    }
    for sla in contract.sla.iter().filter(|s| s.is_freshness()) {
        let f =
            Finding::new(Some(contract), "freshness", format!("{} SLA", sla.property)).at(sla.pos);
        let Ok(max_age) = sla.max_age() else {
            out.push(f.failed("the SLA's value or unit is not a duration"));
            continue;
        };
        out.push(match system.last_updated(&name).await {
            Ok(Some(at)) => {
                let age = SystemTime::now()
                    .duration_since(at)
                    .unwrap_or(Duration::ZERO);
                if age <= max_age {
                    f.passed(format!("updated {} ago", human(age)))
                } else {
                    f.failed(format!(
                        "{name} was last updated {} ago; its {} SLA is {} {}",
                        human(age),
                        sla.property,
                        sla.value,
                        sla.unit.as_deref().unwrap_or("d")
                    ))
                }
            }
            Ok(None) => f.failed(format!("{name} has no data yet")),
            Err(e) => f.failed(e.to_string()),
        });
    }
    out
}

/// The contract against the data as stored: each declared column present
/// with a type it can be read as, and no column the contract leaves out.
/// Returns whether the data can be read as declared.
async fn schema(system: &crate::Session, contract: &Contract, out: &mut Vec<Finding>) -> bool {
    let name = contract.qualified_name();
    let stored = match system.storage_schema(contract).await {
        Ok(s) => s,
        Err(e) => {
            out.push(
                Finding::new(Some(contract), "schema", "storage can be read")
                    .failed(format!("{name}: {e}")),
            );
            return false;
        }
    };
    let declared = crate::types::contract_schema(contract);
    let mut matches = true;
    for (column, field) in contract.product.columns.iter().zip(declared.fields()) {
        let f = Finding::of_column(
            contract,
            "schema",
            format!("column `{}` matches storage", column.name),
            column,
        );
        if let Some(problem) = crate::types::column_problem(field, &stored) {
            matches = false;
            out.push(f.failed(problem));
            continue;
        }
        let Ok(actual) = stored.field_with_name(&column.name) else {
            continue;
        };
        let nullability = match (column.required, actual.is_nullable()) {
            (true, true) => ", storage allows NULLs (the data is checked for them)",
            (true, false) | (false, false) => ", NOT NULL in storage",
            (false, true) => "",
        };
        out.push(f.passed(format!(
            "{}{nullability}",
            crate::types::sql_name(actual.data_type())
        )));
    }
    // A column renamed in the data is reported once: as missing, with the
    // data's name for it.
    let renamed: Vec<String> = contract
        .product
        .columns
        .iter()
        .filter(|c| stored.field_with_name(&c.name).is_err())
        .filter_map(|c| {
            meshql_manifest::closest_names(
                &c.name,
                stored.fields().iter().map(|f| f.name().as_str()),
            )
            .into_iter()
            .next()
            .map(str::to_string)
        })
        .collect();
    let extra: Vec<String> = stored
        .fields()
        .iter()
        .filter(|f| !contract.product.columns.iter().any(|c| &c.name == f.name()))
        .filter(|f| !renamed.contains(f.name()))
        .map(|f| format!("`{}` ({})", f.name(), crate::types::sql_name(f.data_type())))
        .collect();
    let f = Finding::new(
        Some(contract),
        "schema",
        "storage has no undeclared columns",
    );
    out.push(if extra.is_empty() {
        f.passed("")
    } else {
        let (what, them) = if extra.len() == 1 {
            ("a column", "it")
        } else {
            ("columns", "them")
        };
        f.failed(format!(
            "the data has {what} the contract does not declare: {}; meshql does not publish {them} and nothing classifies {them}: declare {them} in the contract or drop {them} from the data",
            extra.join(", ")
        ))
    });
    if !matches {
        return false;
    }
    let read = Finding::new(Some(contract), "schema", READ_DATA);
    match system
        .collect(&format!("SELECT * FROM {name} LIMIT 1"))
        .await
    {
        Ok(_) => {
            out.push(read.passed(""));
            true
        }
        Err(e) => {
            out.push(read.failed(e.to_string()));
            false
        }
    }
}

/// One scan for the row count (percent rules divide by it) and the NULLs
/// of every required column; then each quality rule.
async fn quality_checks(system: &crate::Session, contract: &Contract, out: &mut Vec<Finding>) {
    let name = contract.qualified_name();
    let required: Vec<_> = contract
        .product
        .columns
        .iter()
        .filter(|c| c.required)
        .collect();
    let mut sql = String::from("SELECT count(*)");
    for c in &required {
        sql.push_str(&format!(
            ", count(*) FILTER (WHERE {} IS NULL)",
            ident(&c.name)
        ));
    }
    let counts = numbers(system, &format!("{sql} FROM {name}")).await;
    for (i, column) in required.iter().enumerate() {
        let f = Finding::of_column(
            contract,
            "schema",
            format!("{REQUIRED_NULLS}`{}` has no NULLs", column.name),
            column,
        );
        out.push(match counts.as_ref().map(|c| c[i + 1]) {
            Ok(0.0) => f.passed(""),
            Ok(n) => f.failed(format!(
                "{n} {} NULL in `{}`, which the contract declares required",
                if n == 1.0 { "row has" } else { "rows have" },
                column.name
            )),
            Err(e) => f.failed(e.clone()),
        });
    }
    let total = counts.as_ref().map(|c| c[0]).map_err(Clone::clone);
    for rule in &contract.quality {
        out.push(quality(system, contract, rule, &total).await);
    }
}

/// Runs one quality rule: the measured value against its operator.
async fn quality(
    system: &crate::Session,
    contract: &Contract,
    rule: &Quality,
    total: &Result<f64, String>,
) -> Finding {
    let f = Finding::of_rule(contract, rule);
    let Some(sql) = quality_sql(contract, rule) else {
        return f.skipped(format!("`{}` rules are not executed by meshql", rule.kind));
    };
    let Some(expect) = rule.expect else {
        return f.skipped("the rule has no operator");
    };
    let measured = match number(system, &sql).await {
        Ok(v) => v,
        Err(e) => return f.failed(format!("the rule's query failed: {e}")),
    };
    let value = if rule.unit.as_deref() == Some("percent") && rule.kind == "library" {
        let total = match total {
            Ok(t) => *t,
            Err(e) => return f.failed(e.clone()),
        };
        if total == 0.0 {
            0.0
        } else {
            measured * 100.0 / total
        }
    } else {
        measured
    };
    let what = measure_name(rule);
    if expect.holds(value) {
        f.passed(format!("{what}: {value}"))
    } else {
        f.failed(format!(
            "{what} is {value}; it {}",
            describe_expectation(&expect, rule)
        ))
    }
}

fn describe_expectation(e: &Expectation, rule: &Quality) -> String {
    match rule.unit.as_deref() {
        Some("percent") => format!("{e} percent"),
        _ => e.to_string(),
    }
}

fn measure_name(rule: &Quality) -> String {
    let col = rule.column.as_deref().unwrap_or("");
    match rule.metric.as_deref() {
        Some("nullValues") => format!("NULL values in `{col}`"),
        Some("missingValues") => format!("missing values in `{col}`"),
        Some("invalidValues") => format!("invalid values in `{col}`"),
        Some("duplicateValues") => "duplicate values".into(),
        Some("rowCount") => "row count".into(),
        _ => "the query's result".into(),
    }
}

/// The SQL that measures a rule: one number.
pub(crate) fn quality_sql(contract: &Contract, rule: &Quality) -> Option<String> {
    let table = contract.qualified_name();
    let col = rule.column.as_deref().map(ident);
    match rule.kind.as_str() {
        "sql" => {
            let q = rule.query.as_deref()?;
            Some(
                q.replace("{object}", &table)
                    .replace("{property}", col.as_deref().unwrap_or("")),
            )
        }
        "library" => {
            let metric = rule.metric.as_deref()?;
            let text = |c: &str| format!("CAST({c} AS VARCHAR)");
            Some(match (metric, col.as_deref()) {
                ("nullValues", Some(c)) => {
                    format!("SELECT count(*) FROM {table} WHERE {c} IS NULL")
                }
                ("missingValues", Some(c)) => {
                    let mut cond = format!("{c} IS NULL");
                    if !rule.missing_values.is_empty() {
                        cond.push_str(&format!(
                            " OR {} IN ({})",
                            text(c),
                            literals(&rule.missing_values)
                        ));
                    }
                    format!("SELECT count(*) FROM {table} WHERE {cond}")
                }
                ("invalidValues", Some(c)) => {
                    let mut bad = Vec::new();
                    if !rule.valid_values.is_empty() {
                        bad.push(format!(
                            "{} NOT IN ({})",
                            text(c),
                            literals(&rule.valid_values)
                        ));
                    }
                    if let Some(p) = &rule.pattern {
                        bad.push(format!("NOT regexp_like({}, {})", text(c), literal(p)));
                    }
                    if bad.is_empty() {
                        return None;
                    }
                    format!(
                        "SELECT count(*) FROM {table} WHERE {c} IS NOT NULL AND ({})",
                        bad.join(" OR ")
                    )
                }
                ("duplicateValues", _) => {
                    let cols: Vec<String> = match (&col, rule.properties.is_empty()) {
                        (Some(c), _) => vec![c.clone()],
                        (None, false) => rule.properties.iter().map(|p| ident(p)).collect(),
                        (None, true) => contract
                            .product
                            .columns
                            .iter()
                            .map(|c| ident(&c.name))
                            .collect(),
                    };
                    let cols = cols.join(", ");
                    format!(
                        "SELECT (SELECT count(*) FROM {table}) - (SELECT count(*) FROM (SELECT DISTINCT {cols} FROM {table}))"
                    )
                }
                ("rowCount", _) => format!("SELECT count(*) FROM {table}"),
                _ => return None,
            })
        }
        _ => None,
    }
}

fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn literals(values: &[String]) -> String {
    values
        .iter()
        .map(|v| literal(v))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The first value of the first row, as a number.
async fn number(system: &crate::Session, sql: &str) -> Result<f64, String> {
    numbers(system, sql)
        .await?
        .first()
        .copied()
        .ok_or_else(|| "the query returned no columns".to_string())
}

/// The values of the first row, as numbers (NULL as 0).
async fn numbers(system: &crate::Session, sql: &str) -> Result<Vec<f64>, String> {
    let batches = system.collect(sql).await.map_err(|e| e.to_string())?;
    let batch = batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .ok_or_else(|| "the query returned no rows".to_string())?;
    batch
        .columns()
        .iter()
        .map(|column| {
            if column.is_null(0) {
                return Ok(0.0);
            }
            let as_f64 = arrow::compute::cast(column, &arrow::datatypes::DataType::Float64)
                .map_err(|e| format!("the query's result is not a number: {e}"))?;
            as_f64
                .as_any()
                .downcast_ref::<arrow::array::Float64Array>()
                .map(|v| v.value(0))
                .ok_or_else(|| "the query's result is not a number".to_string())
        })
        .collect()
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..120 => format!("{s} s"),
        120..7200 => format!("{} min", s / 60),
        7200..172_800 => format!("{} h", s / 3600),
        _ => format!("{} days", s / 86_400),
    }
}
