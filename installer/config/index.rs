//! Where each node of a YAML document sits in the file, looked up by its path
//! (`spec.hosts[1].ssh.address`).
//!
//! serde turns a document into typed values without positions, and most problems are found
//! only after that, by validation. This index is built from the event stream of `saphyr-parser`,
//! so that any problem can still name the line and column of the value it is about.

use std::collections::HashMap;
use std::ops::Range;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

/// A position in the substituted text: line from 1, column in characters from 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    pub line: usize,
    pub column: usize,
}

impl Mark {
    fn of(span: Span) -> Mark {
        Mark {
            line: span.start.line(),
            column: span.start.col(),
        }
    }
}

/// The part of a mapping entry a position points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Site {
    /// The key, for problems with the field itself (unknown field).
    Key,
    /// The value, for problems with what the field is set to.
    Value,
}

#[derive(Clone, Copy, Debug)]
struct NodeMarks {
    key: Option<Mark>,
    value: Mark,
}

/// The positions of the nodes of one document.
#[derive(Debug, Default)]
pub struct PositionIndex {
    nodes: HashMap<String, NodeMarks>,
}

impl PositionIndex {
    /// Finds the position of the node at `path`, or of its nearest ancestor that exists in the file
    /// (a missing field is reported at the mapping that lacks it).
    pub fn find(&self, path: &str, site: Site) -> Option<Mark> {
        let mut path = path;
        loop {
            if let Some(node) = self.nodes.get(path) {
                return Some(match site {
                    Site::Key => node.key.unwrap_or(node.value),
                    Site::Value => node.value,
                });
            }
            if path.is_empty() {
                return None;
            }
            path = parent(path);
        }
    }

    /// Checks whether the document contains a node at exactly `path`.
    #[cfg(test)]
    pub fn contains(&self, path: &str) -> bool {
        self.nodes.contains_key(path)
    }
}

/// Builds the path of a mapping entry: `parent.key`, or `key` at the root.
pub fn child(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// Builds the path of a sequence item: `parent[index]`.
pub fn item(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

/// Returns the path one level up: `a.b[2]` → `a.b` → `a` → ``.
pub fn parent(path: &str) -> &str {
    match path.rfind(['.', '[']) {
        Some(i) => &path[..i],
        None => "",
    }
}

/// One document of a YAML stream.
#[derive(Debug)]
pub struct ScannedDocument {
    pub index: PositionIndex,
    /// The position of the document's first node.
    pub start: Mark,
    /// The byte range of the document's content, from the line of its first node to the
    /// document's end, without a `...` marker.
    pub text: Range<usize>,
    /// Whether the document contains nothing (only comments, or an empty `---` section).
    pub empty: bool,
}

/// A YAML syntax error found by the event parser.
#[derive(Debug)]
pub struct ScanFailure {
    pub mark: Mark,
    pub message: String,
}

enum Frame {
    Mapping {
        path: String,
        pending_key: Option<(String, Mark)>,
        expecting_key: bool,
    },
    Sequence {
        path: String,
        next: usize,
    },
    /// A complex (non-scalar) mapping key, whose content has no path.
    SkippedKey {
        depth: usize,
    },
}

/// Splits a YAML stream into documents and indexes the position of every node.
pub fn scan_documents(text: &str) -> Result<Vec<ScannedDocument>, ScanFailure> {
    let offsets = CharOffsets::new(text);
    let mut parser = Parser::new_from_str(text);
    let mut documents = Vec::new();
    let mut current: Option<(ScannedDocument, bool)> = None;
    let mut stack: Vec<Frame> = Vec::new();

    while let Some(next) = parser.next_event() {
        let (event, span) = next.map_err(|error| ScanFailure {
            mark: Mark {
                line: error.marker().line(),
                column: error.marker().col(),
            },
            message: error.info().to_string(),
        })?;
        match event {
            Event::DocumentStart(explicit) => {
                let content_start = if explicit { span.end } else { span.start };
                let document = ScannedDocument {
                    index: PositionIndex::default(),
                    start: Mark {
                        line: content_start.line(),
                        column: content_start.col(),
                    },
                    text: offsets.byte(content_start.index())..text.len(),
                    empty: true,
                };
                current = Some((document, true));
            }
            Event::DocumentEnd => {
                if let Some((mut document, _)) = current.take() {
                    document.text.end = offsets.byte(span.start.index()).max(document.text.start);
                    documents.push(document);
                }
                stack.clear();
            }
            Event::MappingEnd | Event::SequenceEnd => {
                if let Some(Frame::SkippedKey { depth }) = stack.last_mut() {
                    *depth -= 1;
                    if *depth == 0 {
                        stack.pop();
                        finish_skipped_key(&mut stack);
                    }
                } else {
                    stack.pop();
                }
            }
            Event::Scalar(..)
            | Event::Alias(_)
            | Event::MappingStart(..)
            | Event::SequenceStart(..) => {
                let Some((document, first_node)) = current.as_mut() else {
                    continue;
                };
                if *first_node {
                    *first_node = false;
                    document.empty = is_null_scalar(&event);
                    // The content starts on the line of its first node, after any `---` line
                    // and comments.
                    document.start = Mark::of(span);
                    let line_start = span.start.index() - span.start.col();
                    document.text.start = offsets.byte(line_start);
                }
                record_node(&mut document.index, &mut stack, &event, span);
            }
            Event::StreamStart | Event::StreamEnd | Event::Nothing => {}
        }
    }
    Ok(documents)
}

/// Places one node in the index and opens a frame for a collection.
fn record_node(index: &mut PositionIndex, stack: &mut Vec<Frame>, event: &Event<'_>, span: Span) {
    let opens = match event {
        Event::MappingStart(..) => Some(true),
        Event::SequenceStart(..) => Some(false),
        _ => None,
    };
    let mark = Mark::of(span);

    let path = match stack.last_mut() {
        None => {
            index.nodes.insert(
                String::new(),
                NodeMarks {
                    key: None,
                    value: mark,
                },
            );
            String::new()
        }
        Some(Frame::SkippedKey { depth }) => {
            if opens.is_some() {
                *depth += 1;
            }
            return;
        }
        Some(Frame::Sequence { path, next }) => {
            let path = item(path, *next);
            *next += 1;
            index.nodes.insert(
                path.clone(),
                NodeMarks {
                    key: None,
                    value: mark,
                },
            );
            path
        }
        Some(Frame::Mapping {
            path,
            pending_key,
            expecting_key,
        }) => {
            if *expecting_key {
                *expecting_key = false;
                match event {
                    Event::Scalar(key, ..) => *pending_key = Some((key.to_string(), mark)),
                    _ => {
                        *pending_key = None;
                        if opens.is_some() {
                            stack.push(Frame::SkippedKey { depth: 1 });
                        }
                    }
                }
                return;
            }
            *expecting_key = true;
            let Some((key, key_mark)) = pending_key.take() else {
                return;
            };
            let path = child(path, &key);
            index.nodes.insert(
                path.clone(),
                NodeMarks {
                    key: Some(key_mark),
                    value: mark,
                },
            );
            path
        }
    };

    match opens {
        Some(true) => stack.push(Frame::Mapping {
            path,
            pending_key: None,
            expecting_key: true,
        }),
        Some(false) => stack.push(Frame::Sequence { path, next: 0 }),
        None => {}
    }
}

/// After a complex key ends, the mapping that contains it expects the key's value.
fn finish_skipped_key(stack: &mut [Frame]) {
    if let Some(Frame::Mapping { expecting_key, .. }) = stack.last_mut() {
        *expecting_key = false;
    }
}

fn is_null_scalar(event: &Event<'_>) -> bool {
    match event {
        Event::Scalar(value, ScalarStyle::Plain, _, None) => {
            matches!(value.as_ref(), "" | "~" | "null" | "Null" | "NULL")
        }
        _ => false,
    }
}

/// Converts the parser's character indexes into byte offsets.
struct CharOffsets {
    /// Byte offset of each character, or `None` when the text is ASCII and they are equal.
    bytes: Option<Vec<usize>>,
    len: usize,
}

impl CharOffsets {
    fn new(text: &str) -> CharOffsets {
        let bytes = (!text.is_ascii()).then(|| text.char_indices().map(|(i, _)| i).collect());
        CharOffsets {
            bytes,
            len: text.len(),
        }
    }

    fn byte(&self, char_index: usize) -> usize {
        match &self.bytes {
            None => char_index.min(self.len),
            Some(bytes) => bytes.get(char_index).copied().unwrap_or(self.len),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTS: &str = "\
apiVersion: k0sctl.k0sproject.io/v1beta1
kind: Cluster
spec:
  hosts:
    - role: controller
      ssh:
        address: 10.0.0.1
    - role: worker
      ssh: {address: 10.0.0.2, port: 22}
";

    #[test]
    fn index_finds_keys_and_values_by_path() {
        let documents = scan_documents(HOSTS).unwrap();
        assert_eq!(documents.len(), 1);
        let index = &documents[0].index;
        assert_eq!(
            index.find("spec.hosts[0].ssh.address", Site::Key),
            Some(Mark { line: 7, column: 8 })
        );
        assert_eq!(
            index.find("spec.hosts[0].ssh.address", Site::Value),
            Some(Mark {
                line: 7,
                column: 17
            })
        );
        assert_eq!(
            index.find("spec.hosts[1].role", Site::Value),
            Some(Mark {
                line: 8,
                column: 12
            })
        );
        assert_eq!(
            index.find("spec.hosts[1].ssh.port", Site::Value),
            Some(Mark {
                line: 9,
                column: 37
            })
        );
        assert_eq!(
            index.find("spec.hosts[1]", Site::Value),
            Some(Mark { line: 8, column: 6 })
        );
    }

    #[test]
    fn missing_path_falls_back_to_nearest_ancestor() {
        let documents = scan_documents(HOSTS).unwrap();
        let index = &documents[0].index;
        assert_eq!(
            index.find("spec.hosts[0].ssh.user", Site::Key),
            Some(Mark { line: 6, column: 6 })
        );
        assert!(!index.contains("spec.hosts[0].ssh.user"));
    }

    #[test]
    fn documents_are_split_with_their_text() {
        let text = "a: 1\n---\nkind: Pod\nmetadata: {name: x}\n...\n---\n# only a comment\n";
        let documents = scan_documents(text).unwrap();
        assert_eq!(documents.len(), 3);
        assert_eq!(&text[documents[0].text.clone()], "a: 1\n");
        assert_eq!(
            &text[documents[1].text.clone()],
            "kind: Pod\nmetadata: {name: x}\n"
        );
        assert_eq!(documents[1].start, Mark { line: 3, column: 0 });
        assert!(!documents[1].empty);
        assert!(documents[2].empty);
        assert!(documents[1].index.contains("metadata.name"));
    }

    #[test]
    fn complex_keys_do_not_confuse_paths() {
        let text = "? [a, b]\n: 1\nc: 2\n";
        let documents = scan_documents(text).unwrap();
        assert_eq!(
            documents[0].index.find("c", Site::Value),
            Some(Mark { line: 3, column: 3 })
        );
    }

    #[test]
    fn syntax_error_has_a_position() {
        let failure = scan_documents("a: [1, 2\nb: 3\n").unwrap_err();
        assert_eq!(failure.mark.line, 2);
    }
}
