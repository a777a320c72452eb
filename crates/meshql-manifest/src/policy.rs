//! Governance as code: `users.yaml`, `policies.yaml` (or `policies/*.yaml`)
//! and Trino's file-based access control `rules.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use regex::Regex;
use serde::Serialize;

use crate::decode::{Ctx, Fields, check_header};
use crate::yaml::{Node, Pos, Value};

/// A regular expression from a rule, matched against a whole name.
#[derive(Debug, Clone, Serialize)]
pub struct Pattern {
    pub text: String,
    pub pos: Pos,
    #[serde(skip)]
    regex: Regex,
}

impl Pattern {
    pub fn is_match(&self, s: &str) -> bool {
        self.regex.is_match(s)
    }

    /// Whether the pattern is a plain name rather than a regular expression.
    pub fn literal(&self) -> Option<&str> {
        self.text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            .then_some(self.text.as_str())
    }

    /// The names the pattern is written as: `a|b|c` gives three.
    pub fn alternatives(&self) -> Vec<&str> {
        self.text.split('|').collect()
    }
}

/// An SQL expression from a policy file, with where it was written.
#[derive(Debug, Clone, Serialize)]
pub struct Expression {
    pub sql: String,
    pub pos: Pos,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Access {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Serialize)]
pub enum ColumnAction {
    Allow,
    /// The column disappears.
    Deny,
    /// The column's values are replaced by the expression's. A bare function
    /// name `f` means `f(column)`; `{column}` stands for the column.
    Mask(Expression),
}

/// Which columns a column rule applies to: every given selector must match.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnRule {
    pub pos: Pos,
    pub name: Option<Pattern>,
    pub classification: Option<Pattern>,
    pub tag: Option<Pattern>,
    pub action: ColumnAction,
}

/// One policy rule. Rules are evaluated in file order for each principal and
/// product; the first that matches both decides.
#[derive(Debug, Clone, Serialize)]
pub struct Rule {
    pub file: PathBuf,
    pub pos: Pos,
    pub name: String,
    pub user: Option<Pattern>,
    pub role: Option<Pattern>,
    pub group: Option<Pattern>,
    /// The rule does not apply to principals holding a matching role.
    pub unless_role: Option<Pattern>,
    /// The rule applies only to principals with these attributes.
    pub has_attribute: Vec<String>,
    /// Trino's catalog pattern; meshql's catalog is `mesh`.
    pub catalog: Option<Pattern>,
    pub domain: Option<Pattern>,
    pub product: Option<Pattern>,
    /// The rule applies only to products with all these columns.
    pub has_column: Vec<String>,
    pub access: Access,
    pub columns: Vec<ColumnRule>,
    pub row_filter: Option<Expression>,
}

impl Rule {
    /// Where the rule was written, for explanations.
    pub fn location(&self) -> String {
        format!("{}:{}", self.file.display(), self.pos.line)
    }
}

/// A local principal from `users.yaml`.
#[derive(Clone, Serialize)]
pub struct User {
    pub name: String,
    pub pos: Pos,
    #[serde(skip)]
    pub password_hash: Option<String>,
    /// What SCRAM-SHA-256 needs to check the password without knowing it
    /// (PostgreSQL's `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`).
    #[serde(skip)]
    pub scram_sha256: Option<String>,
    pub roles: Vec<String>,
    pub groups: Vec<String>,
    pub attributes: BTreeMap<String, String>,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("roles", &self.roles)
            .field("groups", &self.groups)
            .field("attributes", &self.attributes)
            .finish_non_exhaustive()
    }
}

/// `users.yaml`.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Users {
    pub file: PathBuf,
    /// The secrets are the documented demo ones: never serve them beyond loopback.
    pub demo_secrets: bool,
    /// The principal the shell runs as when none is chosen.
    pub default_user: Option<String>,
    pub users: Vec<User>,
}

impl Users {
    pub fn get(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }
}

fn pattern(ctx: &mut Ctx<'_>, f: &Fields<'_>, key: &str) -> Option<Pattern> {
    let node = f.get(key)?;
    let text = ctx.text(node, &format!("`{key}`"))?;
    match Regex::new(&format!("^(?:{text})$")) {
        Ok(regex) => Some(Pattern {
            text,
            pos: node.pos,
            regex,
        }),
        Err(e) => {
            let detail = e.to_string();
            let last = detail.lines().last().unwrap_or("").trim().to_string();
            ctx.err(
                node.pos,
                format!("`{key}` is not a valid regular expression: {last}"),
            );
            None
        }
    }
}

fn expression(ctx: &mut Ctx<'_>, f: &Fields<'_>, key: &str) -> Option<Expression> {
    let node = f.get(key)?;
    let sql = ctx.string(node, &format!("`{key}`"))?;
    if sql.trim().is_empty() {
        ctx.err(node.pos, format!("`{key}` must not be empty"));
        return None;
    }
    Some(Expression { sql, pos: node.pos })
}

const POLICY_KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "rules",
    "sensitiveTags",
    "exemptRoles",
    "auditorRoles",
];

/// What the policy files say besides their rules, merged over all of them:
/// personal data (`sensitiveTags`, `exemptRoles`) and who reads the audit
/// (`auditorRoles`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PolicySettings {
    /// Column tags that mark personal data as `classification: pii` does.
    pub sensitive_tags: Vec<String>,
    /// Roles allowed to read personal data unmasked; `meshql check` refuses
    /// a product that would show it to any other role.
    pub exempt_roles: Vec<String>,
    /// Roles that may read `meshql.audit` and `meshql.lineage`.
    pub auditor_roles: Vec<String>,
}

impl PolicySettings {
    pub(crate) fn merge(&mut self, other: PolicySettings) {
        for t in other.sensitive_tags {
            if !self.sensitive_tags.contains(&t) {
                self.sensitive_tags.push(t);
            }
        }
        for r in other.exempt_roles {
            if !self.exempt_roles.contains(&r) {
                self.exempt_roles.push(r);
            }
        }
        for r in other.auditor_roles {
            if !self.auditor_roles.contains(&r) {
                self.auditor_roles.push(r);
            }
        }
    }

    /// Whether a column holds personal data: classified `pii`, or carrying
    /// a sensitive tag.
    pub fn is_personal(&self, column: &crate::model::Column) -> bool {
        column
            .classification
            .as_deref()
            .is_some_and(|c| c.eq_ignore_ascii_case("pii"))
            || column.tags.iter().any(|t| self.sensitive_tags.contains(t))
    }
}
const RULE_KEYS: &[&str] = &[
    "name",
    "description",
    "user",
    "role",
    "group",
    "unlessRole",
    "hasAttribute",
    "domain",
    "product",
    "hasColumn",
    "access",
    "columns",
    "rowFilter",
];
const COLUMN_RULE_KEYS: &[&str] = &["name", "classification", "tag", "access", "mask"];

pub(crate) fn decode_policies(ctx: &mut Ctx<'_>, node: &Node) -> (Vec<Rule>, PolicySettings) {
    let Some(f) = ctx.fields(node, "a policy file", POLICY_KEYS) else {
        return Default::default();
    };
    check_header(ctx, &f, "Policies");
    let personal = PolicySettings {
        sensitive_tags: f
            .get("sensitiveTags")
            .map(|n| ctx.string_list(n, "`sensitiveTags`"))
            .unwrap_or_default(),
        exempt_roles: f
            .get("exemptRoles")
            .map(|n| ctx.string_list(n, "`exemptRoles`"))
            .unwrap_or_default(),
        auditor_roles: f
            .get("auditorRoles")
            .map(|n| ctx.string_list(n, "`auditorRoles`"))
            .unwrap_or_default(),
    };
    let Some(items) = f.req(ctx, "rules").and_then(|n| ctx.list(n, "`rules`")) else {
        return (Vec::new(), personal);
    };
    let rules = items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| decode_rule(ctx, item, i))
        .collect();
    (rules, personal)
}

fn decode_rule(ctx: &mut Ctx<'_>, node: &Node, index: usize) -> Option<Rule> {
    let f = ctx.fields(node, "a rule", RULE_KEYS)?;
    let name = f
        .opt_string(ctx, "name")
        .unwrap_or_else(|| format!("rule {}", index + 1));
    let access = match f.get("access") {
        None => Access::Allow,
        Some(n) => match ctx.string(n, "`access`").as_deref() {
            Some("allow") => Access::Allow,
            Some("deny") => Access::Deny,
            Some(other) => {
                ctx.err(
                    n.pos,
                    format!("`access` must be `allow` or `deny`, found `{other}`"),
                );
                Access::Deny
            }
            None => Access::Deny,
        },
    };
    let has_attribute = f
        .get("hasAttribute")
        .map(|n| string_or_list(ctx, n, "`hasAttribute`"))
        .unwrap_or_default();
    let has_column = f
        .get("hasColumn")
        .map(|n| string_or_list(ctx, n, "`hasColumn`"))
        .unwrap_or_default();
    let columns = f
        .get("columns")
        .and_then(|n| ctx.list(n, "`columns`"))
        .map(|items| {
            items
                .iter()
                .filter_map(|c| decode_column_rule(ctx, c))
                .collect()
        })
        .unwrap_or_default();
    let row_filter = expression(ctx, &f, "rowFilter");
    if access == Access::Deny
        && let Some(n) = f.get("rowFilter").or(f.get("columns"))
    {
        ctx.err(
            n.pos,
            "a rule that denies the product has no columns or row filter",
        );
    }
    Some(Rule {
        file: ctx.file.to_path_buf(),
        pos: f.pos,
        name,
        user: pattern(ctx, &f, "user"),
        role: pattern(ctx, &f, "role"),
        group: pattern(ctx, &f, "group"),
        unless_role: pattern(ctx, &f, "unlessRole"),
        has_attribute,
        catalog: None,
        domain: pattern(ctx, &f, "domain"),
        product: pattern(ctx, &f, "product"),
        has_column,
        access,
        columns,
        row_filter,
    })
}

fn string_or_list(ctx: &mut Ctx<'_>, node: &Node, what: &str) -> Vec<String> {
    match &node.value {
        Value::Scalar(..) => ctx.string(node, what).into_iter().collect(),
        _ => ctx.string_list(node, what),
    }
}

fn decode_column_rule(ctx: &mut Ctx<'_>, node: &Node) -> Option<ColumnRule> {
    let f = ctx.fields(node, "a column rule", COLUMN_RULE_KEYS)?;
    let name = pattern(ctx, &f, "name");
    let classification = pattern(ctx, &f, "classification");
    let tag = pattern(ctx, &f, "tag");
    if name.is_none() && classification.is_none() && tag.is_none() && f.get("name").is_none() {
        ctx.err(
            f.pos,
            "a column rule selects columns by `name`, `classification` or `tag`",
        );
    }
    let action = match (f.get("access"), expression(ctx, &f, "mask")) {
        (Some(n), Some(_)) => {
            ctx.err(
                n.pos,
                "a column rule has either `access` or `mask`, not both",
            );
            return None;
        }
        (None, Some(m)) => ColumnAction::Mask(m),
        (Some(n), None) => match ctx.string(n, "`access`").as_deref() {
            Some("allow") => ColumnAction::Allow,
            Some("deny") => ColumnAction::Deny,
            Some(other) => {
                ctx.err(
                    n.pos,
                    format!("`access` must be `allow` or `deny`, found `{other}`"),
                );
                return None;
            }
            None => return None,
        },
        (None, None) => {
            ctx.err(
                f.pos,
                "a column rule needs `access: allow|deny` or a `mask`",
            );
            return None;
        }
    };
    Some(ColumnRule {
        pos: f.pos,
        name,
        classification,
        tag,
        action,
    })
}

const TRINO_KEYS: &[&str] = &[
    "catalogs",
    "schemas",
    "tables",
    "system_information",
    "catalog_session_properties",
    "system_session_properties",
    "functions",
    "procedures",
    "queries",
    "impersonation",
    "principals",
    "authorization",
    "table_procedures",
];
const TRINO_TABLE_KEYS: &[&str] = &[
    "user",
    "role",
    "group",
    "catalog",
    "schema",
    "table",
    "privileges",
    "columns",
    "filter",
    "filter_environment",
];

/// Trino's file-based access control: the `tables` section becomes meshql
/// rules (catalog = `mesh`, schema = domain, table = product). The other
/// sections govern things meshql does not have and are accepted unread.
pub(crate) fn decode_trino(ctx: &mut Ctx<'_>, node: &Node) -> Vec<Rule> {
    let Some(f) = ctx.fields(node, "rules.json", TRINO_KEYS) else {
        return Vec::new();
    };
    let Some(items) = f.get("tables").and_then(|n| ctx.list(n, "`tables`")) else {
        return Vec::new();
    };
    let mut rules = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Some(t) = ctx.fields(item, "a Trino table rule", TRINO_TABLE_KEYS) else {
            continue;
        };
        let privileges = t
            .get("privileges")
            .map(|n| ctx.string_list(n, "`privileges`"))
            .unwrap_or_default();
        for p in &privileges {
            if ![
                "SELECT",
                "INSERT",
                "DELETE",
                "UPDATE",
                "OWNERSHIP",
                "GRANT_SELECT",
            ]
            .contains(&p.as_str())
            {
                ctx.err(t.pos, format!("unknown Trino privilege `{p}`"));
            }
        }
        let readable = privileges
            .iter()
            .any(|p| p == "SELECT" || p == "OWNERSHIP" || p == "GRANT_SELECT");
        let mut columns = Vec::new();
        if let Some(list) = t.get("columns").and_then(|n| ctx.list(n, "`columns`")) {
            for c in list {
                let Some(cf) = ctx.fields(
                    c,
                    "a Trino column rule",
                    &["name", "allow", "mask", "mask_environment"],
                ) else {
                    continue;
                };
                let Some((cname, cpos)) = cf.req_string(ctx, "name") else {
                    continue;
                };
                let name = Pattern {
                    regex: Regex::new(&format!("^{}$", regex::escape(&cname)))
                        .expect("an escaped name is a valid regex"),
                    text: cname,
                    pos: cpos,
                };
                let allow = cf.opt_bool(ctx, "allow").unwrap_or(true);
                let action = match (allow, expression(ctx, &cf, "mask")) {
                    (false, _) => ColumnAction::Deny,
                    (true, Some(m)) => ColumnAction::Mask(m),
                    (true, None) => ColumnAction::Allow,
                };
                columns.push(ColumnRule {
                    pos: cf.pos,
                    name: Some(name),
                    classification: None,
                    tag: None,
                    action,
                });
            }
        }
        let access = if readable {
            Access::Allow
        } else {
            Access::Deny
        };
        let row_filter = expression(ctx, &t, "filter");
        rules.push(Rule {
            file: ctx.file.to_path_buf(),
            pos: t.pos,
            name: format!("rules.json tables[{i}]"),
            user: pattern(ctx, &t, "user"),
            role: pattern(ctx, &t, "role"),
            group: pattern(ctx, &t, "group"),
            unless_role: None,
            has_attribute: Vec::new(),
            catalog: pattern(ctx, &t, "catalog"),
            domain: pattern(ctx, &t, "schema"),
            product: pattern(ctx, &t, "table"),
            has_column: Vec::new(),
            access,
            columns: if readable { columns } else { Vec::new() },
            row_filter: if readable { row_filter } else { None },
        });
    }
    rules
}

/// `SCRAM-SHA-256$4096:<salt>$<StoredKey>:<ServerKey>`, the keys 32 bytes.
fn is_scram_verifier(v: &str) -> bool {
    let Some(rest) = v.strip_prefix("SCRAM-SHA-256$") else {
        return false;
    };
    let Some((params, keys)) = rest.split_once('$') else {
        return false;
    };
    let Some((iterations, salt)) = params.split_once(':') else {
        return false;
    };
    let Some((stored, server)) = keys.split_once(':') else {
        return false;
    };
    let b64 = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
    };
    iterations.parse::<u32>().is_ok_and(|i| i > 0)
        && b64(salt)
        && stored.len() == 44
        && server.len() == 44
        && b64(stored)
        && b64(server)
}

const USERS_KEYS: &[&str] = &["apiVersion", "kind", "demoSecrets", "defaultUser", "users"];
const USER_KEYS: &[&str] = &[
    "name",
    "passwordHash",
    "scramSha256",
    "roles",
    "groups",
    "attributes",
    "description",
];

pub(crate) fn decode_users(ctx: &mut Ctx<'_>, node: &Node, file: &Path) -> Option<Users> {
    let f = ctx.fields(node, "users.yaml", USERS_KEYS)?;
    check_header(ctx, &f, "Users");
    let mut users: Vec<User> = Vec::new();
    if let Some(items) = f.req(ctx, "users").and_then(|n| ctx.list(n, "`users`")) {
        for item in items {
            let Some(u) = ctx.fields(item, "a user", USER_KEYS) else {
                continue;
            };
            let Some((name, pos)) = u.req_string(ctx, "name") else {
                continue;
            };
            if users.iter().any(|o| o.name == name) {
                ctx.err(pos, format!("user `{name}` is defined twice"));
                continue;
            }
            let password_hash = u.opt_string(ctx, "passwordHash");
            if let (Some(h), Some(n)) = (&password_hash, u.get("passwordHash"))
                && !h.starts_with("$argon2")
            {
                ctx.err(n.pos, "`passwordHash` must be an argon2 hash in PHC format (`meshql user hash-password` makes one)");
            }
            let scram_sha256 = u.opt_string(ctx, "scramSha256");
            if let (Some(v), Some(n)) = (&scram_sha256, u.get("scramSha256"))
                && !is_scram_verifier(v)
            {
                ctx.err(n.pos, "`scramSha256` must be a SCRAM-SHA-256 verifier, `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` in base64 (`meshql user hash-password` makes one)");
            }
            let mut attributes = BTreeMap::new();
            if let Some(n) = u.get("attributes") {
                if let Value::Map(entries) = &n.value {
                    for (k, v) in entries {
                        if let (Some(k), Some(v)) = (
                            ctx.string(k, "an attribute name"),
                            ctx.text(v, "an attribute value"),
                        ) {
                            attributes.insert(k, v);
                        }
                    }
                } else {
                    ctx.err(
                        n.pos,
                        format!("`attributes` must be a mapping, found {}", n.kind()),
                    );
                }
            }
            users.push(User {
                name,
                pos,
                password_hash,
                scram_sha256,
                roles: u
                    .get("roles")
                    .map(|n| ctx.string_list(n, "`roles`"))
                    .unwrap_or_default(),
                groups: u
                    .get("groups")
                    .map(|n| ctx.string_list(n, "`groups`"))
                    .unwrap_or_default(),
                attributes,
            });
        }
    }
    let default_user = f.get("defaultUser").and_then(|n| {
        let name = ctx.string(n, "`defaultUser`")?;
        if !users.iter().any(|u| u.name == name) {
            ctx.err(
                n.pos,
                format!("`defaultUser` names `{name}`, which is not defined here"),
            );
        }
        Some(name)
    });
    Some(Users {
        file: file.to_path_buf(),
        demo_secrets: f.opt_bool(ctx, "demoSecrets").unwrap_or(false),
        default_user,
        users,
    })
}
