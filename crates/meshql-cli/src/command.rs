//! Backslash commands of the shell.

use std::str::FromStr;

use crate::print::PrintFormat;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Quit,
    Help,
    /// `\d`: every product.
    ListProducts,
    /// `\d domain.product`: one product's columns and contract.
    Describe(String),
    /// `\dn`: the domains.
    ListDomains,
    /// `\timing [on|off]`.
    Timing(Option<bool>),
    /// `\pset format FORMAT`.
    Format(PrintFormat),
    /// `\find TERM`: products whose name, description, tags or columns
    /// mention the term.
    Find(String),
    /// `\c DOMAIN`: unqualified names resolve in the domain, as `USE
    /// DOMAIN` does.
    Connect(String),
}

impl FromStr for Command {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().trim_end_matches(';').trim();
        let mut parts = s.split_whitespace();
        let head = parts.next().unwrap_or("");
        let args: Vec<&str> = parts.collect();
        match (head, args.as_slice()) {
            ("\\q" | "\\quit", []) => Ok(Command::Quit),
            ("\\?" | "\\h" | "\\help", _) => Ok(Command::Help),
            ("\\d" | "\\dt", []) => Ok(Command::ListProducts),
            ("\\d" | "\\dt", [name]) => Ok(Command::Describe((*name).to_string())),
            ("\\dn", []) => Ok(Command::ListDomains),
            ("\\timing", []) => Ok(Command::Timing(None)),
            ("\\timing", ["on"]) => Ok(Command::Timing(Some(true))),
            ("\\timing", ["off"]) => Ok(Command::Timing(Some(false))),
            ("\\pset", ["format", f]) => f.parse().map(Command::Format),
            ("\\pset", _) => Err("usage: \\pset format table|csv|tsv|json|ndjson".into()),
            ("\\find", []) => Err("usage: \\find TERM".into()),
            ("\\find", terms) => Ok(Command::Find(terms.join(" "))),
            ("\\c" | "\\connect", [domain]) => Ok(Command::Connect((*domain).to_string())),
            ("\\c" | "\\connect", _) => Err("usage: \\c DOMAIN".into()),
            _ => Err(format!("unknown command `{s}`: \\? lists the commands")),
        }
    }
}

pub const HELP: &str = "\
meshql shell commands:
  \\d                   list data products (domain, product, owner, status, description)
  \\d DOMAIN.PRODUCT    describe a product: columns, masks, owner, SLA, freshness, checks
  \\d meshql.TABLE      the columns of a discovery table (products, columns, quality, ...)
  \\dn                  list domains
  \\find TERM           find products by name, description, tag or column
  \\c DOMAIN           resolve unqualified names in DOMAIN (as USE DOMAIN)
  \\timing [on|off]     show the time each statement took
  \\pset format FORMAT  table, csv, tsv, json or ndjson
  \\?                   this help
  \\q                   quit
SQL statements end with `;` and may span lines. Ctrl-C cancels a running query.";

/// A string literal of SQL.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `expr` on one line (runs of white space made one space) and at most
/// `max` characters, the last an ellipsis when it was cut.
fn short(expr: &str, max: usize) -> String {
    let flat = format!("trim(regexp_replace(coalesce({expr}, ''), '\\s+', ' ', 'g'))");
    format!(
        "CASE WHEN char_length({flat}) > {max} THEN left({flat}, {}) || '…' ELSE {flat} END",
        max - 1
    )
}

/// `\d`: the products the user sees, from `meshql.products`.
pub fn list_products_sql() -> String {
    format!(
        "SELECT domain, product, coalesce(owner, '') AS owner, status, {} AS description \
         FROM meshql.products ORDER BY domain, product",
        short("description", 70)
    )
}

/// `\dn`: the domains, with their products and owners.
pub fn list_domains_sql() -> &'static str {
    "SELECT domain, count(*) AS products, \
     coalesce(string_agg(DISTINCT owner, ', ' ORDER BY owner), '') AS owners \
     FROM meshql.products GROUP BY domain ORDER BY domain"
}

/// `\d DOMAIN.PRODUCT`: what the product is, from `meshql.products`.
pub fn product_sql(domain: &str, product: &str) -> String {
    format!(
        "SELECT version, status, owner, members, description, tags, location, sla, \
         CAST(last_updated AS VARCHAR) AS last_updated, freshness_sla, freshness_met, row_filter \
         FROM meshql.products WHERE domain = {} AND product = {}",
        literal(domain),
        literal(product)
    )
}

/// `\d DOMAIN.PRODUCT`: its columns as the user sees them, from
/// `meshql.columns`.
pub fn columns_sql(domain: &str, product: &str) -> String {
    format!(
        "SELECT column_name AS \"column\", data_type AS type, \
         CASE WHEN required THEN 'NO' ELSE 'YES' END AS nullable, \
         CASE WHEN primary_key THEN 'PK' ELSE '' END AS key, \
         coalesce(classification, '') AS classification, coalesce(tags, '') AS tags, \
         {} AS description, \
         CASE WHEN masked THEN 'masked: ' || mask ELSE '' END AS policy \
         FROM meshql.columns WHERE domain = {} AND product = {} ORDER BY position",
        short("description", 50),
        literal(domain),
        literal(product)
    )
}

/// `\d DOMAIN.PRODUCT`: the last results of `meshql check`, from
/// `meshql.quality`, failures first.
pub fn checks_sql(domain: &str, product: &str) -> String {
    format!(
        "SELECT outcome, \"check\", rule, message, CAST(checked_at AS VARCHAR) AS checked_at \
         FROM meshql.quality WHERE domain = {} AND product = {} \
         ORDER BY outcome = 'failed' DESC, location, rule",
        literal(domain),
        literal(product)
    )
}

/// `\d meshql.TABLE`: a system table's columns.
pub fn system_table_sql(table: &str) -> String {
    format!(
        "SELECT column_name AS \"column\", data_type AS type, is_nullable AS nullable \
         FROM information_schema.columns WHERE table_schema = 'meshql' AND table_name = {} \
         ORDER BY ordinal_position",
        literal(table)
    )
}

/// One row of a query, as text by column name.
pub type Row = std::collections::BTreeMap<String, Option<String>>;

/// The lines `\d DOMAIN.PRODUCT` prints after the columns: the product's
/// row of `meshql.products` and its rows of `meshql.quality`.
pub fn describe_lines(name: &str, product: &Row, checks: &[Row]) -> Vec<String> {
    let get = |row: &Row, k: &str| row.get(k).cloned().flatten().filter(|v| !v.is_empty());
    let mut lines = vec![format!(
        "Product:  {name} v{}, {}",
        get(product, "version").unwrap_or_default(),
        get(product, "status").unwrap_or_default()
    )];
    match (get(product, "owner"), get(product, "members")) {
        (Some(owner), Some(members)) => lines.push(format!("Owner:    {owner}: {members}")),
        (Some(owner), None) => lines.push(format!("Owner:    {owner}")),
        _ => {}
    }
    if let Some(d) = get(product, "description") {
        let d = d.split_whitespace().collect::<Vec<_>>().join(" ");
        let d = if d.chars().count() > 100 {
            format!("{}…", d.chars().take(99).collect::<String>())
        } else {
            d
        };
        lines.push(format!("About:    {d}"));
    }
    if let Some(t) = get(product, "tags") {
        lines.push(format!("Tags:     {t}"));
    }
    if let Some(s) = get(product, "sla") {
        lines.push(format!("SLA:      {s}"));
    }
    if let Some(u) = get(product, "last_updated") {
        lines.push(format!("Updated:  {u}"));
    }
    if let Some(sla) = get(product, "freshness_sla") {
        match get(product, "freshness_met").as_deref() {
            Some("true") => lines.push(format!("Fresh:    yes, within its {sla} SLA")),
            Some(_) => lines.push(format!("Fresh:    NO, older than its {sla} SLA")),
            None => lines.push(format!("Fresh:    unknown (SLA {sla})")),
        }
    }
    if let Some(f) = get(product, "row_filter") {
        lines.push(format!("Rows:     only those where {f}"));
    }
    if let Some(l) = get(product, "location") {
        lines.push(format!("Storage:  {l}"));
    }
    if checks.is_empty() {
        lines.push("Checks:   none kept (`meshql check` runs and keeps them)".into());
    } else {
        let count = |o: &str| {
            checks
                .iter()
                .filter(|r| get(r, "outcome").as_deref() == Some(o))
                .count()
        };
        let at = checks
            .iter()
            .filter_map(|r| get(r, "checked_at"))
            .max()
            .unwrap_or_default();
        lines.push(format!(
            "Checks:   {} passed, {} failed, {} skipped (meshql check, {at})",
            count("passed"),
            count("failed"),
            count("skipped")
        ));
        for r in checks
            .iter()
            .filter(|r| get(r, "outcome").as_deref() == Some("failed"))
        {
            lines.push(format!(
                "  x [{}] {}: {}",
                get(r, "check").unwrap_or_default(),
                get(r, "rule").unwrap_or_default(),
                get(r, "message").unwrap_or_default()
            ));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        assert_eq!("\\q".parse::<Command>(), Ok(Command::Quit));
        assert_eq!("\\d".parse::<Command>(), Ok(Command::ListProducts));
        assert_eq!(
            "\\d sales.orders".parse::<Command>(),
            Ok(Command::Describe("sales.orders".into()))
        );
        assert_eq!("\\dn".parse::<Command>(), Ok(Command::ListDomains));
        assert_eq!(
            "\\timing off".parse::<Command>(),
            Ok(Command::Timing(Some(false)))
        );
        assert_eq!(
            "\\pset format csv".parse::<Command>(),
            Ok(Command::Format(PrintFormat::Csv))
        );
        assert!("\\pset format xml".parse::<Command>().is_err());
        assert!("\\x".parse::<Command>().is_err());
        assert_eq!(
            "\\c sales".parse::<Command>(),
            Ok(Command::Connect("sales".into()))
        );
        assert!("\\c".parse::<Command>().is_err());
    }
}
