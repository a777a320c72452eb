//! A YAML document as a tree of nodes that remember their line and column,
//! so every validation problem can point at the place it was found.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A position in a YAML file, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

#[derive(Debug, Clone)]
pub(crate) enum Value {
    /// A scalar and whether it was quoted (quoted scalars are always strings).
    Scalar(String, bool),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub value: Value,
    pub pos: Pos,
}

impl Node {
    pub(crate) fn kind(&self) -> &'static str {
        match &self.value {
            Value::Scalar(s, quoted) if !quoted && is_null(s) => "null",
            Value::Scalar(..) => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    pub(crate) fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar(s, false) if is_null(s))
    }
}

fn is_null(s: &str) -> bool {
    matches!(s, "" | "~" | "null" | "Null" | "NULL")
}

/// A YAML syntax error.
#[derive(Debug, Clone)]
pub(crate) struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

enum Frame {
    Seq(Vec<Node>, Pos, usize),
    Map(Vec<(Node, Node)>, Option<Node>, Pos, usize),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    root: Option<Node>,
    anchors: HashMap<usize, Node>,
    error: Option<SyntaxError>,
}

fn pos(mark: Marker) -> Pos {
    Pos {
        line: mark.line(),
        col: mark.col() + 1,
    }
}

impl Builder {
    fn push(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Frame::Seq(items, ..)) => items.push(node),
            Some(Frame::Map(entries, key, ..)) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let p = pos(mark);
        match ev {
            Event::Scalar(s, style, anchor, _) => {
                let quoted = !matches!(style, TScalarStyle::Plain);
                self.push(
                    Node {
                        value: Value::Scalar(s, quoted),
                        pos: p,
                    },
                    anchor,
                );
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq(Vec::new(), p, anchor)),
            Event::MappingStart(anchor, _) => {
                self.stack.push(Frame::Map(Vec::new(), None, p, anchor))
            }
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Seq(items, p, anchor)) => self.push(
                    Node {
                        value: Value::Seq(items),
                        pos: p,
                    },
                    anchor,
                ),
                Some(Frame::Map(entries, _, p, anchor)) => {
                    // The parser marks a block mapping at its first `:`; a
                    // reader looks for it at its first key.
                    let pos = entries.first().map_or(p, |(k, _)| k.pos);
                    self.push(
                        Node {
                            value: Value::Map(entries),
                            pos,
                        },
                        anchor,
                    )
                }
                None => {}
            },
            Event::Alias(id) => match self.anchors.get(&id).cloned() {
                Some(mut node) => {
                    node.pos = p;
                    self.push(node, 0)
                }
                None => {
                    if self.error.is_none() {
                        self.error = Some(SyntaxError {
                            pos: p,
                            message: "alias refers to an unknown anchor".into(),
                        });
                    }
                }
            },
            _ => {}
        }
    }
}

/// Parses one YAML document. An empty document is an empty mapping.
pub(crate) fn parse(text: &str) -> Result<Node, SyntaxError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    if let Err(e) = parser.load(&mut builder, false) {
        let m = e.marker();
        return Err(SyntaxError {
            pos: Pos {
                line: m.line(),
                col: m.col() + 1,
            },
            message: format!("invalid YAML: {}", e.info()),
        });
    }
    if let Some(e) = builder.error {
        return Err(e);
    }
    Ok(builder.root.unwrap_or(Node {
        value: Value::Map(Vec::new()),
        pos: Pos { line: 1, col: 1 },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_lines_and_columns() {
        let node = parse("a: 1\nb:\n  - x\n  - y\n").expect("parses");
        let Value::Map(entries) = &node.value else {
            panic!("expected a mapping")
        };
        assert_eq!(entries[1].0.pos, Pos { line: 2, col: 1 });
        let Value::Seq(items) = &entries[1].1.value else {
            panic!("expected a list")
        };
        assert_eq!(items[1].pos, Pos { line: 4, col: 5 });
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let err = parse("a: [1, 2\nb: 3\n").expect_err("unterminated flow sequence");
        assert!(err.pos.line >= 1, "{err:?}");
        assert!(err.message.starts_with("invalid YAML"), "{err:?}");
    }
}
