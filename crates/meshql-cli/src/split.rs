//! Splitting a script into statements at `;`, outside quotes and comments.

/// Statements of `text`, trimmed, without their `;`; empty ones dropped.
/// Each comes with the 1-based line it starts on.
pub fn split_statements(text: &str) -> Vec<(usize, String)> {
    scan(text).0
}

/// Whether `text` ends outside a statement: nothing but whitespace and
/// comments after its last `;`.
pub fn is_complete(text: &str) -> bool {
    !scan(text).1
}

fn scan(text: &str) -> (Vec<(usize, String)>, bool) {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut start_line = 1;
    let mut line = 1;
    let mut chars = text.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        if current.trim().is_empty() && !c.is_whitespace() {
            start_line = line;
        }
        if c == '\n' {
            line += 1;
        }
        match quote {
            Some(q) => {
                current.push(c);
                if c == q {
                    if chars.peek() == Some(&q) {
                        current.push(q);
                        chars.next();
                    } else {
                        quote = None;
                    }
                }
            }
            None => match c {
                '\'' | '"' => {
                    quote = Some(c);
                    current.push(c);
                }
                '-' if chars.peek() == Some(&'-') => {
                    // Line comment: keep it out of the statement.
                    for c in chars.by_ref() {
                        if c == '\n' {
                            line += 1;
                            current.push('\n');
                            break;
                        }
                    }
                }
                '/' if chars.peek() == Some(&'*') => {
                    chars.next();
                    let mut prev = ' ';
                    for c in chars.by_ref() {
                        if c == '\n' {
                            line += 1;
                            current.push('\n');
                        }
                        if prev == '*' && c == '/' {
                            break;
                        }
                        prev = c;
                    }
                    current.push(' ');
                }
                ';' => {
                    let s = current.trim();
                    if !s.is_empty() {
                        out.push((start_line, s.to_string()));
                    }
                    current.clear();
                }
                _ => current.push(c),
            },
        }
    }
    let s = current.trim();
    let pending = !s.is_empty() || quote.is_some();
    if !s.is_empty() {
        out.push((start_line, s.to_string()));
    }
    (out, pending)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_outside_quotes_and_comments() {
        let got = split_statements(
            "select ';'; -- a; comment\nselect \"a;b\" /* x; */ from t;\n\n select 3",
        );
        let texts: Vec<&str> = got.iter().map(|(_, s)| s.as_str()).collect();
        assert_eq!(
            texts,
            vec!["select ';'", "select \"a;b\"   from t", "select 3"]
        );
        assert_eq!(
            got.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
            vec![1, 2, 4]
        );
    }

    #[test]
    fn completeness_ignores_trailing_comments() {
        assert!(is_complete("-- only a comment; really\n"));
        assert!(is_complete("select 1; /* done */\n"));
        assert!(!is_complete("select 1; select\n"));
        assert!(!is_complete("select 'open;\n"));
    }
}
