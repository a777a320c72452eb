//! What a PostgreSQL client's statement is before it reaches the engine:
//! transaction control (accepted: every statement reads the current data,
//! so a transaction changes nothing), the session settings drivers send
//! and ask for, the search path, and queries.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use pgwire::api::ClientInfo;
use pgwire::error::PgWireResult;

use super::{Conn, user_error};

#[derive(Clone, Debug)]
pub(crate) enum Kind {
    Empty,
    Begin,
    Commit,
    Rollback,
    /// Accepted and answered with its tag, changing nothing.
    Done(String),
    SearchPath(meshql::PathChange),
    /// A client setting (`SET application_name = ...`), kept for `SHOW`.
    Set(String, String),
    Show(String),
    /// `COPY (query) TO STDOUT` or `COPY product TO STDOUT`: the query's
    /// rows as COPY data.
    CopyOut {
        query: String,
        format: CopyFormat,
    },
    /// `DECLARE name CURSOR FOR query`: the query starts; `FETCH` reads it.
    Declare {
        name: String,
        query: String,
    },
    /// `FETCH [FORWARD] [n | ALL] [FROM | IN] name`; `None` is all.
    Fetch {
        name: String,
        count: Option<usize>,
    },
    /// `CLOSE name` (or `CLOSE ALL`: `None`).
    Close(Option<String>),
    Unsupported(String),
    /// Anything else: the engine (and its guard) decide.
    Query,
}

/// How `COPY ... TO STDOUT` writes rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CopyFormat {
    Text,
    Csv { header: bool, delimiter: String },
    Binary,
}

/// Settings a client may set; `SHOW` answers them.
const SETTINGS: &[(&str, &str)] = &[
    ("application_name", ""),
    ("bytea_output", "hex"),
    ("client_encoding", "UTF8"),
    ("client_min_messages", "notice"),
    ("datestyle", "ISO, MDY"),
    ("default_transaction_isolation", "read committed"),
    ("default_transaction_read_only", "on"),
    ("extra_float_digits", "1"),
    ("idle_in_transaction_session_timeout", "0"),
    ("integer_datetimes", "on"),
    ("intervalstyle", "postgres"),
    ("lc_collate", "C"),
    ("lc_ctype", "C"),
    ("lc_messages", "C"),
    ("lock_timeout", "0"),
    ("max_identifier_length", "63"),
    ("server_encoding", "UTF8"),
    ("standard_conforming_strings", "on"),
    ("statement_timeout", "0"),
    ("timezone", "UTC"),
    ("transaction_isolation", "read committed"),
    ("transaction_read_only", "on"),
];

/// The server's version as `SHOW server_version` and `version()` give it.
pub(crate) const SERVER_VERSION: &str = "16.6";

/// Splits a simple query's text into statements, outside quotes, quoted
/// names, dollar quotes and comments.
pub(crate) fn split(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\'' | b'"' => {
                let q = bytes[i];
                i += 1;
                while i < bytes.len() && bytes[i] != q {
                    i += 1;
                }
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < bytes.len() && !(bytes[i] == b'*' && bytes[i + 1] == b'/') {
                    i += 1;
                }
                i += 1;
            }
            b'$' => {
                // `$tag$ ... $tag$`
                if let Some(len) = text[i + 1..].find('$') {
                    let tag = &text[i..i + len + 2];
                    if tag[1..tag.len() - 1]
                        .chars()
                        .all(|c| c.is_alphanumeric() || c == '_')
                        && !tag[1..].starts_with(|c: char| c.is_ascii_digit())
                        && let Some(end) = text[i + tag.len()..].find(tag)
                    {
                        i += tag.len() + end + tag.len() - 1;
                    }
                }
            }
            b';' => {
                let s = text[start..i].trim();
                if !s.is_empty() {
                    out.push(s.to_string());
                }
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    let s = text[start.min(text.len())..].trim();
    if !s.is_empty() {
        out.push(s.to_string());
    }
    out
}

/// The words of a statement's start, lower case, comments skipped.
fn words(sql: &str, n: usize) -> Vec<String> {
    let mut rest = sql.trim_start();
    loop {
        if let Some(r) = rest.strip_prefix("--") {
            rest = r.split_once('\n').map_or("", |(_, r)| r).trim_start();
        } else if let Some(r) = rest.strip_prefix("/*") {
            rest = r.split_once("*/").map_or("", |(_, r)| r).trim_start();
        } else {
            break;
        }
    }
    rest.split(|c: char| c.is_whitespace() || c == ';' || c == '=' || c == '(')
        .filter(|w| !w.is_empty())
        .take(n)
        .map(str::to_lowercase)
        .collect()
}

pub(crate) fn classify(sql: &str) -> Kind {
    if sql.trim().trim_matches(';').trim().is_empty() {
        return Kind::Empty;
    }
    if let Some(change) = meshql::search_path_change(sql) {
        return Kind::SearchPath(change);
    }
    let w = words(sql, 3);
    let w: Vec<&str> = w.iter().map(String::as_str).collect();
    match w.as_slice() {
        ["begin", ..] | ["start", "transaction", ..] => Kind::Begin,
        ["commit", ..] | ["end", ..] => Kind::Commit,
        ["rollback", "to", ..] | ["rollback", "transaction", "to"] => Kind::Done("ROLLBACK".into()),
        ["rollback", ..] | ["abort", ..] => Kind::Rollback,
        ["savepoint", ..] => Kind::Done("SAVEPOINT".into()),
        ["release", ..] => Kind::Done("RELEASE".into()),
        ["discard", ..] => Kind::Done("DISCARD ALL".into()),
        ["deallocate", ..] => Kind::Done("DEALLOCATE".into()),
        ["close", ..] => close(sql),
        ["unlisten", ..] => Kind::Done("UNLISTEN".into()),
        ["set", "transaction", ..] | ["set", "session", "characteristics"] => {
            Kind::Done("SET".into())
        }
        ["set", ..] | ["reset", ..] => setting(sql),
        ["copy", ..] => copy_out(sql).unwrap_or(Kind::Query),
        ["show", "transaction", "isolation"] => Kind::Show("transaction_isolation".into()),
        ["show", name, ..] => Kind::Show(name.trim_matches('"').to_string()),
        ["declare", ..] => declare(sql),
        ["fetch", ..] => fetch(sql),
        ["move", ..] => {
            Kind::Unsupported("MOVE is not supported: cursors read forward with FETCH".into())
        }
        _ => Kind::Query,
    }
}

/// A cursor's name as written: quoted names keep their case.
fn cursor_name(word: &str) -> String {
    match word.strip_prefix('"').and_then(|w| w.strip_suffix('"')) {
        Some(quoted) => quoted.replace("\"\"", "\""),
        None => word.to_lowercase(),
    }
}

fn declare(sql: &str) -> Kind {
    let body = sql.trim().trim_end_matches(';').trim();
    let mut parts = body.splitn(3, char::is_whitespace);
    let (_, name, rest) = (parts.next(), parts.next(), parts.next().unwrap_or(""));
    let Some(name) = name else {
        return Kind::Unsupported("DECLARE needs a cursor name".into());
    };
    let lower = rest.to_ascii_lowercase();
    // `[BINARY] [INSENSITIVE] [NO SCROLL] CURSOR [WITH[OUT] HOLD] FOR query`
    let Some(cursor) = lower.find("cursor") else {
        return Kind::Unsupported("DECLARE ... CURSOR FOR query".into());
    };
    if lower[..cursor].contains("binary") {
        return Kind::Unsupported(
            "binary cursors are not supported: fetch with the binary result format instead".into(),
        );
    }
    let after = &lower[cursor + "cursor".len()..];
    let Some(for_at) = after.find("for") else {
        return Kind::Unsupported("DECLARE ... CURSOR FOR query".into());
    };
    let start = cursor + "cursor".len() + for_at + "for".len();
    Kind::Declare {
        name: cursor_name(name),
        query: rest[start..].trim().to_string(),
    }
}

fn fetch(sql: &str) -> Kind {
    let body = sql.trim().trim_end_matches(';').trim();
    let words: Vec<&str> = body.split_whitespace().skip(1).collect();
    let Some((name, rest)) = words.split_last() else {
        return Kind::Unsupported("FETCH needs a cursor name".into());
    };
    let mut count = Some(1);
    for w in rest {
        match w.to_lowercase().as_str() {
            "forward" | "next" | "from" | "in" => {}
            "all" => count = None,
            n => match n.parse::<usize>() {
                Ok(n) => count = Some(n),
                Err(_) => {
                    return Kind::Unsupported(format!(
                        "FETCH {w} is not supported: cursors read forward (FETCH [FORWARD] n | ALL FROM name)"
                    ));
                }
            },
        }
    }
    Kind::Fetch {
        name: cursor_name(name),
        count,
    }
}

fn close(sql: &str) -> Kind {
    let body = sql.trim().trim_end_matches(';').trim();
    match body.split_whitespace().nth(1) {
        Some(w) if w.eq_ignore_ascii_case("all") => Kind::Close(None),
        Some(w) => Kind::Close(Some(cursor_name(w))),
        None => Kind::Close(None),
    }
}

/// `COPY (query) TO STDOUT [WITH] [(FORMAT csv|text|binary, HEADER,
/// DELIMITER 'c')]`, the older `WITH CSV HEADER` and `BINARY`, and `COPY
/// domain.product [(columns)] TO STDOUT`. Any other COPY (a server file,
/// FROM) goes to the engine, whose guard refuses it.
fn copy_out(sql: &str) -> Option<Kind> {
    let body = sql.trim().trim_end_matches(';').trim();
    // ASCII case only: byte offsets in `lower` are offsets in `body`.
    let lower = body.to_ascii_lowercase();
    let to = lower.rfind(" to stdout")?;
    let source = body[4..to].trim();
    let options = lower[to + " to stdout".len()..].trim().to_string();
    let query = if let Some(inner) = source.strip_prefix('(') {
        inner.strip_suffix(')')?.trim().to_string()
    } else {
        let (table, columns) = match source.find('(') {
            Some(i) => (
                source[..i].trim(),
                source[i + 1..].trim_end_matches(')').trim(),
            ),
            None => (source, "*"),
        };
        if table.is_empty() || table.contains(char::is_whitespace) {
            return None;
        }
        format!("SELECT {columns} FROM {table}")
    };
    let words: Vec<&str> = options
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == ',')
        .filter(|w| !w.is_empty() && *w != "with")
        .collect();
    let mut format = CopyFormat::Text;
    let mut header = false;
    let mut delimiter = ",".to_string();
    let mut i = 0;
    while i < words.len() {
        match words[i] {
            "format" => {
                format = match words.get(i + 1).copied() {
                    Some("csv") => CopyFormat::Csv {
                        header: false,
                        delimiter: ",".into(),
                    },
                    Some("binary") => CopyFormat::Binary,
                    Some("text") => CopyFormat::Text,
                    other => {
                        return Some(Kind::Unsupported(format!(
                            "COPY format {} is not supported: text, csv or binary",
                            other.unwrap_or("")
                        )));
                    }
                };
                i += 1;
            }
            "csv" => {
                format = CopyFormat::Csv {
                    header: false,
                    delimiter: ",".into(),
                }
            }
            "binary" => format = CopyFormat::Binary,
            "header" => {
                header = !matches!(words.get(i + 1).copied(), Some("false" | "off" | "0"));
                if matches!(
                    words.get(i + 1).copied(),
                    Some("true" | "on" | "1" | "false" | "off" | "0")
                ) {
                    i += 1;
                }
            }
            "delimiter" => {
                if let Some(d) = words.get(i + 1) {
                    delimiter = d.trim_matches('\'').to_string();
                    i += 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    if let CopyFormat::Csv { .. } = format {
        format = CopyFormat::Csv { header, delimiter };
    }
    Some(Kind::CopyOut { query, format })
}

/// `SET [SESSION | LOCAL] name { TO | = } value` and `RESET name` of a
/// client setting; others go to the engine, whose guard refuses them.
fn setting(sql: &str) -> Kind {
    let body = sql.trim().trim_end_matches(';').trim();
    let lower = body.to_lowercase();
    let reset = lower.starts_with("reset");
    let rest = body[if reset { 5 } else { 3 }..].trim_start();
    let rest = ["session ", "local "]
        .iter()
        .find_map(|p| {
            rest.to_lowercase()
                .starts_with(p)
                .then(|| rest[p.len()..].trim_start())
        })
        .unwrap_or(rest);
    let (name, value) = match rest.find(|c: char| c.is_whitespace() || c == '=') {
        Some(i) => (&rest[..i], rest[i..].trim_start()),
        None => (rest, ""),
    };
    let name = name.trim_matches('"').to_lowercase();
    if name == "time" && value.to_lowercase().starts_with("zone") {
        let v = value[4..].trim().trim_matches('\'').to_string();
        return Kind::Set("timezone".into(), v);
    }
    if !SETTINGS.iter().any(|(n, _)| *n == name) {
        return Kind::Query;
    }
    if reset {
        let default = SETTINGS
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("", |(_, v)| v);
        return Kind::Set(name, default.to_string());
    }
    let value = value
        .strip_prefix('=')
        .or_else(|| {
            value
                .get(..2)
                .filter(|t| t.eq_ignore_ascii_case("to"))
                .map(|_| &value[2..])
        })
        .unwrap_or(value)
        .trim()
        .trim_matches('\'')
        .to_string();
    Kind::Set(name, value)
}

pub(crate) fn show_schema(name: &str) -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        name.to_lowercase(),
        DataType::Utf8,
        true,
    )]))
}

/// `SHOW name`: the client's setting, the search path, or the server's
/// fixed values.
pub(crate) fn show<C: ClientInfo + ?Sized>(
    conn: &Conn,
    client: &C,
    name: &str,
) -> PgWireResult<String> {
    let name = name.to_lowercase();
    if let Some(v) = conn
        .settings
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&name)
    {
        return Ok(v.clone());
    }
    match name.as_str() {
        "search_path" => Ok(conn.session.search_path().join(", ")),
        "server_version" => Ok(SERVER_VERSION.to_string()),
        "server_version_num" => Ok("160006".to_string()),
        "session_authorization" | "user" => Ok(conn.principal.user.clone()),
        "application_name" => Ok(client
            .metadata()
            .get("application_name")
            .cloned()
            .unwrap_or_default()),
        _ => SETTINGS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.to_string())
            .ok_or_else(|| {
                user_error(
                    "42704",
                    format!("unrecognized configuration parameter \"{name}\""),
                )
            }),
    }
}

/// One SQL expression in PostgreSQL's dialect, as the rewrites of client
/// statements build their replacements; `None` where it does not parse.
pub(crate) fn parse_expr(sql: &str) -> Option<datafusion::sql::sqlparser::ast::Expr> {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_expr())
        .ok()
}

/// `sql` with each parameter whose type the client declared (in `Parse`)
/// cast to that type, `$1` as `CAST($1 AS BOOLEAN)`: for a statement the
/// engine cannot type by itself, such as a parameter passed to a function
/// with several signatures. `None` when no parameter changes or the
/// statement does not parse.
pub(crate) fn typed_placeholders(sql: &str, types: &[Option<pgwire::api::Type>]) -> Option<String> {
    use datafusion::sql::sqlparser::ast::{Expr, Value, visit_expressions_mut};
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    use pgwire::api::Type;
    let name = |t: &Type| {
        Some(match *t {
            Type::BOOL => "BOOLEAN",
            Type::INT2 => "SMALLINT",
            Type::INT4 => "INTEGER",
            Type::INT8 => "BIGINT",
            Type::FLOAT4 => "REAL",
            Type::FLOAT8 => "DOUBLE PRECISION",
            Type::TEXT | Type::VARCHAR => "TEXT",
            Type::DATE => "DATE",
            Type::TIMESTAMP => "TIMESTAMP",
            _ => return None,
        })
    };
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    let [statement] = statements.as_mut_slice() else {
        return None;
    };
    let mut changed = false;
    let _ = visit_expressions_mut(statement, |expr| {
        if let Expr::Value(v) = expr
            && let Value::Placeholder(p) = &v.value
            && let Some(i) = p.strip_prefix('$').and_then(|n| n.parse::<usize>().ok())
            && let Some(Some(t)) = types.get(i.wrapping_sub(1))
            && let Some(ty) = name(t)
            && let Some(cast) = parse_expr(&format!("CAST({p} AS {ty})"))
        {
            *expr = cast;
            changed = true;
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    changed.then(|| statement.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_outside_quotes_and_comments() {
        assert_eq!(
            split("SELECT ';' AS a; -- x; y\nSELECT \"b;\" FROM t;; SELECT $$;$$"),
            vec![
                "SELECT ';' AS a",
                "-- x; y\nSELECT \"b;\" FROM t",
                "SELECT $$;$$"
            ]
        );
        assert_eq!(split("  ;  "), Vec::<String>::new());
    }

    #[test]
    fn client_statements_are_told_apart_from_queries() {
        assert!(matches!(classify("BEGIN"), Kind::Begin));
        assert!(matches!(classify("begin read only"), Kind::Begin));
        assert!(matches!(classify("COMMIT"), Kind::Commit));
        assert!(matches!(classify("ROLLBACK"), Kind::Rollback));
        assert!(matches!(classify("ROLLBACK TO SAVEPOINT a"), Kind::Done(t) if t == "ROLLBACK"));
        assert!(matches!(classify("SAVEPOINT \"_pg3_1\""), Kind::Done(t) if t == "SAVEPOINT"));
        assert!(matches!(
            classify("SET search_path = sales"),
            Kind::SearchPath(_)
        ));
        assert!(
            matches!(classify("SET extra_float_digits = 3"), Kind::Set(n, v) if n == "extra_float_digits" && v == "3")
        );
        assert!(
            matches!(classify("SET application_name TO 'psql'"), Kind::Set(n, v) if n == "application_name" && v == "psql")
        );
        assert!(
            matches!(classify("SET TIME ZONE 'UTC'"), Kind::Set(n, v) if n == "timezone" && v == "UTC")
        );
        assert!(
            matches!(classify("SHOW transaction isolation level"), Kind::Show(n) if n == "transaction_isolation")
        );
        assert!(matches!(
            classify("SET datafusion.execution.batch_size = 1"),
            Kind::Query
        ));
        assert!(matches!(classify("/* c */ SELECT 1"), Kind::Query));
        assert!(matches!(classify(" ; "), Kind::Empty));
        assert!(matches!(
            classify("COPY (SELECT 1) TO STDOUT"),
            Kind::CopyOut { query, format: CopyFormat::Text } if query == "SELECT 1"
        ));
        assert!(matches!(
            classify("copy ( SELECT a FROM t ) TO STDOUT WITH (FORMAT csv, HEADER true)"),
            Kind::CopyOut { query, format: CopyFormat::Csv { header: true, .. } } if query == "SELECT a FROM t"
        ));
        assert!(matches!(
            classify("COPY sales.orders (order_id, region) TO STDOUT (FORMAT binary)"),
            Kind::CopyOut { query, format: CopyFormat::Binary } if query == "SELECT order_id, region FROM sales.orders"
        ));
        assert!(matches!(
            classify("COPY sales.orders TO '/tmp/x'"),
            Kind::Query
        ));
        assert!(matches!(
            classify("COPY sales.orders FROM STDIN"),
            Kind::Query
        ));
    }

    #[test]
    fn cursors_and_non_ascii_statements_are_read_at_their_offsets() {
        assert!(matches!(
            classify("DECLARE \"c1\" NO SCROLL CURSOR WITHOUT HOLD FOR SELECT 1"),
            Kind::Declare { name, query } if name == "c1" && query == "SELECT 1"
        ));
        assert!(matches!(
            classify("FETCH FORWARD 100 FROM \"c1\""),
            Kind::Fetch { name, count: Some(100) } if name == "c1"
        ));
        assert!(matches!(
            classify("FETCH FORWARD ALL FROM c1"),
            Kind::Fetch { count: None, .. }
        ));
        assert!(matches!(classify("CLOSE \"c1\""), Kind::Close(Some(n)) if n == "c1"));
        // Letters whose lower case is longer than they are do not move the
        // statement's offsets.
        assert!(matches!(
            classify("COPY (SELECT 'İİİİ' AS x) TO STDOUT"),
            Kind::CopyOut { query, .. } if query == "SELECT 'İİİİ' AS x"
        ));
        assert!(matches!(
            classify("DECLARE c CURSOR FOR SELECT 'İİİİ' AS x"),
            Kind::Declare { query, .. } if query == "SELECT 'İİİİ' AS x"
        ));
    }

    #[test]
    fn declared_parameter_types_become_casts() {
        use pgwire::api::Type;
        let typed = typed_placeholders(
            "SELECT pg_get_constraintdef(oid, $1) FROM t WHERE a = $2",
            &[Some(Type::BOOL), None],
        );
        assert_eq!(
            typed.as_deref(),
            Some("SELECT pg_get_constraintdef(oid, CAST($1 AS BOOLEAN)) FROM t WHERE a = $2")
        );
        // Nothing declared, or a type not mapped: nothing to change.
        assert_eq!(typed_placeholders("SELECT $1", &[None]), None);
        assert_eq!(typed_placeholders("SELECT $1", &[Some(Type::JSONB)]), None);
        assert_eq!(typed_placeholders("SELEC $1", &[Some(Type::BOOL)]), None);
    }
}
