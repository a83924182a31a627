//! A YAML tree that remembers the line of every node, so policy errors can name the line.
//!
//! `yaml-rust2` reports positions only through its event stream; this module folds the events
//! into [`Node`]s. Scalars stay strings: a policy field decides what a scalar means, so `when:
//! true` and `when: "true"` are the same CEL source.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// One YAML node with the 1-based line where it starts.
#[derive(Debug, Clone)]
pub enum Node {
    /// A scalar, as written (`~` and `null` included).
    Scalar {
        /// The text.
        value: String,
        /// Whether the scalar was quoted (a quoted `"null"` is a string).
        quoted: bool,
        /// Line of the scalar.
        line: usize,
    },
    /// A sequence.
    Seq {
        /// The items.
        items: Vec<Node>,
        /// Line of the sequence.
        line: usize,
    },
    /// A mapping, in source order.
    Map {
        /// Keys (scalars) and values.
        entries: Vec<(Node, Node)>,
        /// Line of the mapping.
        line: usize,
    },
}

/// A syntax error with its position.
#[derive(Debug, Clone, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct SyntaxError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What the parser said.
    pub message: String,
}

/// Parses one YAML document; an empty file is `None`.
pub fn parse(src: &str) -> Result<Option<Node>, SyntaxError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(src);
    parser.load(&mut builder, false).map_err(|e| SyntaxError {
        line: e.marker().line(),
        column: e.marker().col() + 1,
        message: e.info().to_owned(),
    })?;
    if let Some(message) = builder.error {
        return Err(SyntaxError { line: builder.error_line, column: 1, message });
    }
    Ok(builder.root)
}

// === impl Node ===

impl Node {
    /// The node's line.
    pub fn line(&self) -> usize {
        match self {
            Node::Scalar { line, .. } | Node::Seq { line, .. } | Node::Map { line, .. } => *line,
        }
    }

    /// The scalar text, if this is a non-null scalar.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::Scalar { value, quoted, .. } if *quoted || !is_null(value) => Some(value),
            _ => None,
        }
    }

    /// Whether this is `~`, `null` or empty.
    pub fn is_null(&self) -> bool {
        matches!(self, Node::Scalar { value, quoted: false, .. } if is_null(value))
    }

    /// The node as JSON: plain scalars that read as booleans, numbers or null become those;
    /// quoted scalars stay strings; mapping keys become strings.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Node::Scalar { value, quoted: true, .. } => Value::String(value.clone()),
            Node::Scalar { value, .. } => {
                if is_null(value) {
                    Value::Null
                } else if let Ok(b) = value.parse::<bool>() {
                    Value::Bool(b)
                } else if let Ok(i) = value.parse::<i64>() {
                    Value::from(i)
                } else if let Some(f) = value.parse::<f64>().ok().filter(|f| f.is_finite()) {
                    Value::from(f)
                } else {
                    Value::String(value.clone())
                }
            }
            Node::Seq { items, .. } => Value::Array(items.iter().map(Node::to_json).collect()),
            Node::Map { entries, .. } => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.as_str().unwrap_or_default().to_owned(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// A short name of the node's kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Node::Scalar { .. } if self.is_null() => "null",
            Node::Scalar { .. } => "a scalar",
            Node::Seq { .. } => "a list",
            Node::Map { .. } => "a mapping",
        }
    }
}

fn is_null(s: &str) -> bool {
    matches!(s, "" | "~" | "null" | "Null" | "NULL")
}

/// Folds parser events into a tree; anchors are remembered and aliases copy the anchored node.
#[derive(Default)]
struct Builder {
    stack: Vec<Partial>,
    anchors: Vec<(usize, Node)>,
    root: Option<Node>,
    error: Option<String>,
    error_line: usize,
}

enum Partial {
    Seq { items: Vec<Node>, line: usize, anchor: usize },
    Map { entries: Vec<(Node, Node)>, key: Option<Node>, line: usize, anchor: usize },
}

// === impl Builder ===

impl Builder {
    fn push(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.push((anchor, node.clone()));
        }
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Partial::Seq { items, .. }) => items.push(node),
            Some(Partial::Map { entries, key, .. }) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let line = mark.line();
        match ev {
            Event::Scalar(value, style, anchor, _) => {
                let quoted = !matches!(style, yaml_rust2::scanner::TScalarStyle::Plain);
                self.push(Node::Scalar { value, quoted, line }, anchor);
            }
            Event::SequenceStart(anchor, _) => {
                self.stack.push(Partial::Seq { items: Vec::new(), line, anchor });
            }
            Event::MappingStart(anchor, _) => {
                self.stack.push(Partial::Map { entries: Vec::new(), key: None, line, anchor });
            }
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Partial::Seq { items, line, anchor }) => self.push(Node::Seq { items, line }, anchor),
                Some(Partial::Map { entries, line, anchor, .. }) => {
                    self.push(Node::Map { entries, line }, anchor);
                }
                None => {}
            },
            Event::Alias(id) => {
                match self.anchors.iter().rev().find(|(a, _)| *a == id).map(|(_, n)| n.clone()) {
                    Some(node) => self.push(node, 0),
                    None if self.error.is_none() => {
                        self.error = Some("alias to an unknown anchor".to_owned());
                        self.error_line = line;
                    }
                    None => {}
                }
            }
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]
    use super::*;

    #[test]
    fn lines_are_recorded() {
        let n = parse("a: 1\nb:\n  - x\n  - \"y\"\n").unwrap().unwrap();
        let Node::Map { entries, .. } = n else { panic!() };
        assert_eq!(entries.len(), 2);
        let (k, v) = &entries[1];
        assert_eq!(k.as_str(), Some("b"));
        let Node::Seq { items, .. } = v else { panic!() };
        assert_eq!(items[1].line(), 4);
        assert!(matches!(&items[1], Node::Scalar { quoted: true, .. }));
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.line >= 1, "{e}");
    }
}
