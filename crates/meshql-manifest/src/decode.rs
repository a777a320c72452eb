//! Decoding YAML nodes into the model while collecting every problem, rather
//! than stopping at the first one.

use std::path::{Path, PathBuf};

use crate::problem::Problem;
use crate::yaml::{Node, Pos, Value};

pub(crate) struct Ctx<'a> {
    pub file: &'a Path,
    pub problems: Vec<Problem>,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(file: &'a Path) -> Self {
        Self {
            file,
            problems: Vec::new(),
        }
    }

    pub(crate) fn err(&mut self, pos: Pos, message: impl Into<String>) {
        self.problems.push(Problem {
            file: PathBuf::from(self.file),
            pos,
            message: message.into(),
        });
    }

    /// A mapping whose keys must come from `allowed`. Unknown and repeated
    /// keys are reported; the mapping is still returned so the known keys can
    /// be checked too.
    pub(crate) fn fields<'n>(
        &mut self,
        node: &'n Node,
        what: &str,
        allowed: &[&str],
    ) -> Option<Fields<'n>> {
        let Value::Map(entries) = &node.value else {
            self.err(
                node.pos,
                format!("{what} must be a mapping, found {}", node.kind()),
            );
            return None;
        };
        let mut out: Vec<(&'n str, &'n Node)> = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            let Value::Scalar(key, _) = &k.value else {
                self.err(k.pos, format!("keys of {what} must be scalars"));
                continue;
            };
            if !allowed.contains(&key.as_str()) {
                let hint = match closest(key, allowed.iter().copied()) {
                    Some(c) => format!(" (did you mean `{c}`?)"),
                    None => String::new(),
                };
                self.err(k.pos, format!("unknown key `{key}` in {what}{hint}"));
                continue;
            }
            if out.iter().any(|(seen, _)| *seen == key) {
                self.err(k.pos, format!("key `{key}` appears twice in {what}"));
                continue;
            }
            out.push((key.as_str(), v));
        }
        Some(Fields {
            pos: node.pos,
            what: what.to_string(),
            entries: out,
        })
    }

    pub(crate) fn string(&mut self, node: &Node, what: &str) -> Option<String> {
        match &node.value {
            Value::Scalar(s, quoted) if *quoted || !s.is_empty() => Some(s.clone()),
            _ => {
                self.err(
                    node.pos,
                    format!("{what} must be a string, found {}", node.kind()),
                );
                None
            }
        }
    }

    pub(crate) fn boolean(&mut self, node: &Node, what: &str) -> Option<bool> {
        match &node.value {
            Value::Scalar(s, false) if matches!(s.as_str(), "true" | "True" | "TRUE") => Some(true),
            Value::Scalar(s, false) if matches!(s.as_str(), "false" | "False" | "FALSE") => {
                Some(false)
            }
            _ => {
                self.err(
                    node.pos,
                    format!("{what} must be true or false, found {}", describe(node)),
                );
                None
            }
        }
    }

    pub(crate) fn number(&mut self, node: &Node, what: &str) -> Option<f64> {
        match &node.value {
            Value::Scalar(s, false) => match s.parse::<f64>() {
                Ok(v) if v.is_finite() => Some(v),
                _ => {
                    self.err(
                        node.pos,
                        format!("{what} must be a number, found {}", describe(node)),
                    );
                    None
                }
            },
            _ => {
                self.err(
                    node.pos,
                    format!("{what} must be a number, found {}", describe(node)),
                );
                None
            }
        }
    }

    pub(crate) fn integer(&mut self, node: &Node, what: &str) -> Option<i64> {
        match &node.value {
            Value::Scalar(s, false) if s.parse::<i64>().is_ok() => s.parse().ok(),
            _ => {
                self.err(
                    node.pos,
                    format!("{what} must be an integer, found {}", describe(node)),
                );
                None
            }
        }
    }

    pub(crate) fn list<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n [Node]> {
        match &node.value {
            Value::Seq(items) => Some(items),
            _ if node.is_null() => Some(&[]),
            _ => {
                self.err(
                    node.pos,
                    format!("{what} must be a list, found {}", node.kind()),
                );
                None
            }
        }
    }

    pub(crate) fn string_list(&mut self, node: &Node, what: &str) -> Vec<String> {
        let Some(items) = self.list(node, what) else {
            return Vec::new();
        };
        items
            .iter()
            .filter_map(|n| self.string(n, &format!("each entry of {what}")))
            .collect()
    }

    /// A scalar rendered as text, whatever its YAML type (for free-form values).
    pub(crate) fn text(&mut self, node: &Node, what: &str) -> Option<String> {
        match &node.value {
            Value::Scalar(s, _) => Some(s.clone()),
            _ => {
                self.err(
                    node.pos,
                    format!("{what} must be a scalar, found {}", node.kind()),
                );
                None
            }
        }
    }
}

fn describe(node: &Node) -> String {
    match &node.value {
        Value::Scalar(s, _) => format!("`{s}`"),
        _ => node.kind().to_string(),
    }
}

pub(crate) struct Fields<'n> {
    pub pos: Pos,
    what: String,
    entries: Vec<(&'n str, &'n Node)>,
}

impl<'n> Fields<'n> {
    pub(crate) fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .filter(|v| !v.is_null())
    }

    /// A required key: reported at the mapping's position when absent.
    pub(crate) fn req(&self, ctx: &mut Ctx<'_>, key: &str) -> Option<&'n Node> {
        let v = self.get(key);
        if v.is_none() {
            ctx.err(
                self.pos,
                format!("missing required field `{key}` in {}", self.what),
            );
        }
        v
    }

    pub(crate) fn req_string(&self, ctx: &mut Ctx<'_>, key: &str) -> Option<(String, Pos)> {
        let node = self.req(ctx, key)?;
        ctx.string(node, &format!("`{key}`")).map(|s| (s, node.pos))
    }

    pub(crate) fn opt_string(&self, ctx: &mut Ctx<'_>, key: &str) -> Option<String> {
        let node = self.get(key)?;
        ctx.string(node, &format!("`{key}`"))
    }

    pub(crate) fn opt_bool(&self, ctx: &mut Ctx<'_>, key: &str) -> Option<bool> {
        let node = self.get(key)?;
        ctx.boolean(node, &format!("`{key}`"))
    }
}

/// Checks the `apiVersion: meshql/v1` and `kind` of one of meshql's own files.
pub(crate) fn check_header(ctx: &mut Ctx<'_>, f: &Fields<'_>, kind: &str) {
    if let Some((v, pos)) = f.req_string(ctx, "apiVersion")
        && v != "meshql/v1"
    {
        ctx.err(
            pos,
            format!("unsupported apiVersion `{v}`: expected `meshql/v1`"),
        );
    }
    if let Some((v, pos)) = f.req_string(ctx, "kind")
        && v != kind
    {
        let file = ctx
            .file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        ctx.err(pos, format!("kind must be `{kind}` in {file}, found `{v}`"));
    }
}

/// Edit distance counting an insertion, deletion, substitution or swap of
/// two neighbouring characters as one edit (optimal string alignment), for
/// "did you mean" hints.
pub fn edit_distance(a: &str, b: &str) -> usize {
    strsim::osa_distance(a, b)
}

/// The candidates closest to `name`, best first: those within a third of the
/// name's length in edits, or that contain it.
pub fn closest_names<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Vec<&'a str> {
    let lower = name.to_lowercase();
    let limit = (name.chars().count() / 3).max(1);
    let mut scored: Vec<(usize, &'a str)> = candidates
        .into_iter()
        .filter_map(|c| {
            let d = edit_distance(&lower, &c.to_lowercase());
            let contains = c.to_lowercase().contains(&lower) || lower.contains(&c.to_lowercase());
            (d <= limit || (contains && lower.len() >= 3)).then_some((d, c))
        })
        .collect();
    scored.sort();
    scored.dedup();
    scored.into_iter().map(|(_, c)| c).collect()
}

pub(crate) fn closest<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    closest_names(name, candidates).into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_names_prefers_small_edits() {
        let names = ["sales.orders", "sales.order_items", "payments.transactions"];
        assert_eq!(
            closest_names("sales.order", names),
            vec!["sales.orders", "sales.order_items"]
        );
        assert!(closest_names("zzz", names).is_empty());
        assert_eq!(edit_distance("emial", "email"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
