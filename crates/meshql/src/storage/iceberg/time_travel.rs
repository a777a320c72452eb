//! Time travel: `FOR VERSION AS OF` and `FOR TIMESTAMP AS OF` rewritten to
//! `product@v<id>` / `product@t<ms>` names, and the snapshot such a name reads.

use super::*;

/// A past state of an Iceberg table: `FOR VERSION AS OF` a snapshot id or
/// a branch or tag name, `FOR TIMESTAMP AS OF` (or `FOR SYSTEM_TIME AS OF`)
/// a point in time.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TimeTravel {
    Snapshot(i64),
    Ref(String),
    /// Milliseconds since the epoch, UTC.
    Timestamp(i64),
}

/// Marks a table name that carries a time-travel clause: `orders` as of
/// snapshot 42 is planned as the table `"orders@v42"`.
pub(crate) const TIME_TRAVEL_MARK: char = '@';

impl TimeTravel {
    /// The name under which the table at this version is planned.
    pub(crate) fn table_name(&self, base: &str) -> String {
        let m = TIME_TRAVEL_MARK;
        match self {
            TimeTravel::Snapshot(id) => format!("{base}{m}v{id}"),
            TimeTravel::Ref(name) => format!("{base}{m}r{name}"),
            TimeTravel::Timestamp(ms) => format!("{base}{m}t{ms}"),
        }
    }

    /// Splits a planned table name into the product and its version.
    pub(crate) fn parse_table_name(name: &str) -> Option<(&str, TimeTravel)> {
        let (base, rest) = name.split_once(TIME_TRAVEL_MARK)?;
        let mut chars = rest.chars();
        let kind = chars.next()?;
        let value = chars.as_str();
        let version = match kind {
            'v' => TimeTravel::Snapshot(value.parse().ok()?),
            'r' => TimeTravel::Ref(value.to_string()),
            't' => TimeTravel::Timestamp(value.parse().ok()?),
            _ => return None,
        };
        Some((base, version))
    }

    /// The snapshot this version names in `table`.
    pub(super) fn snapshot_id(&self, table: &Table) -> Result<i64, String> {
        let metadata = table.metadata();
        match self {
            TimeTravel::Snapshot(id) => metadata
                .snapshot_by_id(*id)
                .map(|s| s.snapshot_id())
                .ok_or_else(|| format!("the table has no snapshot {id}")),
            TimeTravel::Ref(name) => metadata
                .snapshot_for_ref(name)
                .map(|s| s.snapshot_id())
                .ok_or_else(|| format!("the table has no branch or tag `{name}`")),
            TimeTravel::Timestamp(ms) => metadata
                .history()
                .iter()
                .filter(|h| h.timestamp_ms() <= *ms)
                .max_by_key(|h| h.timestamp_ms())
                .map(|h| h.snapshot_id)
                .ok_or_else(|| {
                    format!(
                        "the table has no snapshot as of {}: its first commit is later",
                        chrono::DateTime::from_timestamp_millis(*ms)
                            .unwrap_or_default()
                            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                    )
                }),
        }
    }
}

/// Rewrites the time-travel clauses of a statement, `FOR VERSION AS OF`,
/// `FOR TIMESTAMP AS OF` and `FOR SYSTEM_TIME AS OF` after a table name,
/// into the table name the planner resolves (`orders@v42`). The rewritten
/// text keeps every other character at its place, so positions in later
/// errors still point into the statement as written.
pub(crate) fn rewrite_time_travel(sql: &str) -> Result<std::borrow::Cow<'_, str>, String> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

    if !sql.to_ascii_uppercase().contains(" AS OF") {
        return Ok(std::borrow::Cow::Borrowed(sql));
    }
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize_with_location() else {
        // The parser reports the statement's own error.
        return Ok(std::borrow::Cow::Borrowed(sql));
    };
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(sql.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    let offset = |line: u64, column: u64| -> usize {
        let start = line_starts
            .get((line.max(1) - 1) as usize)
            .copied()
            .unwrap_or(sql.len());
        sql[start..]
            .char_indices()
            .nth((column.max(1) - 1) as usize)
            .map_or(sql.len(), |(i, _)| start + i)
    };
    let sig: Vec<usize> = (0..tokens.len())
        .filter(|&i| !matches!(tokens[i].token, Token::Whitespace(_)))
        .collect();
    let word = |k: usize, w: &str| {
        sig.get(k).is_some_and(|&i| {
            matches!(&tokens[i].token, Token::Word(x) if x.quote_style.is_none() && x.value.eq_ignore_ascii_case(w))
        })
    };
    let at = |k: usize| {
        let span = tokens[sig[k]].span;
        format!("line {}, column {}", span.start.line, span.start.column)
    };
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    let mut k = 1;
    while k < sig.len() {
        let kind = ["VERSION", "TIMESTAMP", "SYSTEM_TIME"]
            .into_iter()
            .find(|w| word(k + 1, w));
        let (true, Some(kind), true, true) =
            (word(k, "FOR"), kind, word(k + 2, "AS"), word(k + 3, "OF"))
        else {
            k += 1;
            continue;
        };
        let clause = format!("FOR {kind} AS OF");
        // The clause follows a table name: `t`, `"t"` or `d.t`, after FROM,
        // JOIN or a comma.
        let Token::Word(table) = &tokens[sig[k - 1]].token else {
            return Err(format!("{clause} must follow a table name (at {})", at(k)));
        };
        let before = k.checked_sub(2).map(|b| &tokens[sig[b]].token);
        let follows_table = match before {
            Some(Token::Period) | Some(Token::Comma) => true,
            Some(Token::Word(w)) => {
                w.quote_style.is_none()
                    && (w.value.eq_ignore_ascii_case("FROM")
                        || w.value.eq_ignore_ascii_case("JOIN"))
            }
            _ => false,
        };
        if !follows_table {
            return Err(format!(
                "{clause} must follow the table name directly, before any alias (at {})",
                at(k)
            ));
        }
        let mut arg = k + 4;
        let version = match (kind, sig.get(arg).map(|&i| &tokens[i].token)) {
            ("VERSION", Some(Token::Number(n, _))) => {
                TimeTravel::Snapshot(n.parse().map_err(|_| {
                    format!("{clause} takes a snapshot id, found `{n}` (at {})", at(arg))
                })?)
            }
            ("VERSION", Some(Token::SingleQuotedString(name))) => TimeTravel::Ref(name.clone()),
            ("VERSION", _) => {
                return Err(format!(
                    "{clause} takes a snapshot id or a branch or tag name in quotes (at {})",
                    at(arg.min(sig.len() - 1))
                ));
            }
            (_, _) => {
                if word(arg, "TIMESTAMP") {
                    arg += 1;
                }
                match sig.get(arg).map(|&i| &tokens[i].token) {
                    Some(Token::SingleQuotedString(text)) => {
                        let nanos = arrow::compute::kernels::cast_utils::string_to_timestamp_nanos(text)
                            .map_err(|_| {
                                format!("{clause} takes a timestamp such as TIMESTAMP '2026-03-01 12:00:00' (UTC unless it names a zone), found '{text}' (at {})", at(arg))
                            })?;
                        TimeTravel::Timestamp(nanos.div_euclid(1_000_000))
                    }
                    _ => {
                        return Err(format!(
                            "{clause} takes a timestamp literal such as TIMESTAMP '2026-03-01 12:00:00' (at {})",
                            at(arg.min(sig.len() - 1))
                        ));
                    }
                }
            }
        };
        let first = tokens[sig[k - 1]].span.start;
        let last = tokens[sig[arg]].span.end;
        let (start, end) = (
            offset(first.line, first.column),
            offset(last.line, last.column),
        );
        let name = version.table_name(&table.value).replace('"', "\"\"");
        let mut text = format!("\"{name}\"");
        // Pad to the clause's length, keeping its line breaks.
        let replaced: Vec<char> = sql[start..end].chars().collect();
        for c in replaced.iter().skip(text.chars().count()) {
            text.push(if *c == '\n' { '\n' } else { ' ' });
        }
        edits.push((start, end, text));
        k = arg + 1;
    }
    if edits.is_empty() {
        return Ok(std::borrow::Cow::Borrowed(sql));
    }
    let mut out = String::with_capacity(sql.len());
    let mut pos = 0;
    for (start, end, text) in edits {
        out.push_str(&sql[pos..start]);
        out.push_str(&text);
        pos = end;
    }
    out.push_str(&sql[pos..]);
    Ok(std::borrow::Cow::Owned(out))
}
