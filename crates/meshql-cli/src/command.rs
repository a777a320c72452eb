//! Backslash commands of the shell.

use std::str::FromStr;
use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use meshql::manifest::Contract;

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
            _ => Err(format!("unknown command `{s}`: \\? lists the commands")),
        }
    }
}

pub const HELP: &str = "\
meshql shell commands:
  \\d                   list data products (domain, product, owner, status, description)
  \\d DOMAIN.PRODUCT    describe a product: columns, types, classification, owner, SLA
  \\dn                  list domains
  \\find TERM          find products by name, description, tag or column
  \\timing [on|off]     show the time each statement took
  \\pset format FORMAT  table, csv, tsv, json or ndjson
  \\?                   this help
  \\q                   quit
SQL statements end with `;` and may span lines. Ctrl-C cancels a running query.";

fn strings(columns: &[(&str, Vec<String>)]) -> RecordBatch {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(n, _)| Field::new(*n, DataType::Utf8, false))
        .collect();
    let arrays: Vec<ArrayRef> = columns
        .iter()
        .map(|(_, v)| Arc::new(StringArray::from(v.clone())) as ArrayRef)
        .collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).expect("columns of equal length")
}

fn one_line(s: &str, max: usize) -> String {
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.chars().count() > max {
        format!("{}…", s.chars().take(max - 1).collect::<String>())
    } else {
        s
    }
}

pub fn list_products(contracts: &[Contract]) -> RecordBatch {
    strings(&[
        (
            "domain",
            contracts.iter().map(|c| c.domain.clone()).collect(),
        ),
        (
            "product",
            contracts.iter().map(|c| c.product.name.clone()).collect(),
        ),
        (
            "owner",
            contracts
                .iter()
                .map(|c| c.owner().unwrap_or("").to_string())
                .collect(),
        ),
        (
            "status",
            contracts.iter().map(|c| c.status.clone()).collect(),
        ),
        (
            "description",
            contracts
                .iter()
                .map(|c| {
                    one_line(
                        c.description
                            .as_deref()
                            .or(c.product.description.as_deref())
                            .unwrap_or(""),
                        70,
                    )
                })
                .collect(),
        ),
    ])
}

pub fn list_domains(contracts: &[Contract]) -> RecordBatch {
    let mut domains: Vec<(String, usize, Vec<String>)> = Vec::new();
    for c in contracts {
        let owner = c.owner().unwrap_or("").to_string();
        match domains.iter_mut().find(|(d, ..)| *d == c.domain) {
            Some((_, n, owners)) => {
                *n += 1;
                if !owner.is_empty() && !owners.contains(&owner) {
                    owners.push(owner);
                }
            }
            None => domains.push((
                c.domain.clone(),
                1,
                if owner.is_empty() {
                    vec![]
                } else {
                    vec![owner]
                },
            )),
        }
    }
    domains.sort();
    for d in &mut domains {
        d.2.sort();
    }
    strings(&[
        ("domain", domains.iter().map(|d| d.0.clone()).collect()),
        (
            "products",
            domains.iter().map(|d| d.1.to_string()).collect(),
        ),
        ("owners", domains.iter().map(|d| d.2.join(", ")).collect()),
    ])
}

/// The columns of a product, and lines about its contract to print after them.
/// `masks` are the principal's masks and row filter (see `Backend::masks`).
pub fn describe(c: &Contract, masks: &[(String, String)]) -> (RecordBatch, Vec<String>) {
    let cols = &c.product.columns;
    let policy_of = |name: &str| {
        masks
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    };
    let batch = strings(&[
        ("column", cols.iter().map(|c| c.name.clone()).collect()),
        (
            "type",
            cols.iter().map(|c| c.data_type.to_string()).collect(),
        ),
        (
            "nullable",
            cols.iter()
                .map(|c| if c.required { "NO" } else { "YES" }.to_string())
                .collect(),
        ),
        (
            "key",
            cols.iter()
                .map(|c| if c.primary_key { "PK" } else { "" }.to_string())
                .collect(),
        ),
        (
            "classification",
            cols.iter()
                .map(|c| c.classification.clone().unwrap_or_default())
                .collect(),
        ),
        ("tags", cols.iter().map(|c| c.tags.join(", ")).collect()),
        (
            "description",
            cols.iter()
                .map(|c| one_line(c.description.as_deref().unwrap_or(""), 50))
                .collect(),
        ),
        ("policy", cols.iter().map(|c| policy_of(&c.name)).collect()),
    ]);
    let mut lines = vec![format!(
        "Product:  {} ({}), contract {} v{}, {}",
        c.qualified_name(),
        c.name,
        c.id,
        c.version,
        c.status
    )];
    if let Some(owner) = c.owner() {
        let members: Vec<String> = c
            .team
            .iter()
            .flat_map(|t| &t.members)
            .map(|m| match &m.role {
                Some(r) => format!("{} ({r})", m.username),
                None => m.username.clone(),
            })
            .collect();
        if members.is_empty() {
            lines.push(format!("Owner:    {owner}"));
        } else {
            lines.push(format!("Owner:    {owner}: {}", members.join(", ")));
        }
    }
    if let Some(d) = &c.description {
        lines.push(format!("About:    {}", one_line(d, 100)));
    }
    if !c.sla.is_empty() {
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
        lines.push(format!("SLA:      {}", sla.join("; ")));
    }
    if !c.quality.is_empty() {
        let q: Vec<String> = c
            .quality
            .iter()
            .map(|q| {
                q.name
                    .clone()
                    .or_else(|| q.description.clone())
                    .unwrap_or_else(|| q.kind.clone())
            })
            .collect();
        lines.push(format!("Quality:  {}", q.join("; ")));
    }
    if let Some((_, filter)) = masks.iter().find(|(n, _)| n.is_empty()) {
        lines.push(format!("Rows:     only those where {filter}"));
    }
    if let Some(s) = c.servers.first() {
        match &s.iceberg {
            Some(t) => lines.push(format!(
                "Storage:  Iceberg table {}.{} in catalog `{}`",
                t.namespace.join("."),
                t.table,
                s.server
            )),
            None => lines.push(format!("Storage:  {} `{}` {}", s.format, s.server, s.path)),
        }
    }
    (batch, lines)
}

/// The search behind `\find` and `meshql products search`, over the
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
    }
}
