//! Turns a document into the types of `raw`, reporting every field serde rejects instead of only
//! the first.
//!
//! serde stops at the first error. Each error names the path of the field (through
//! `serde_path_to_error`), so the field is removed from the document and deserialization runs
//! again, until the rest is accepted. Every field of `raw` is optional, so removing one never
//! creates a second error.

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;
use yaml_serde::Value;

use super::error::Problem;
use super::index::{self, Site};
use super::locate::Locator;

/// An upper bound on the problems reported for one document, so that a file of the wrong shape
/// does not print thousands of lines.
const MAX_ATTEMPTS: usize = 50;

/// Deserializes `value`, pushing a problem for every field that does not fit and the path of
/// every mapping with an unknown field onto `with_unknown_fields`. Returns `None` when the
/// document cannot be deserialized even after removing the fields at fault, or when a whole list
/// item had to be removed.
pub fn deserialize_all<T: DeserializeOwned>(
    mut value: Value,
    locator: &Locator<'_>,
    problems: &mut Vec<Problem>,
    with_unknown_fields: &mut Vec<String>,
) -> Option<T> {
    let mut removed = RemovedItems::default();
    for _ in 0..MAX_ATTEMPTS {
        let error = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            // Without the removed list items, later items would be validated under the index of
            // an earlier one and reported at the wrong position.
            Ok(_) if !removed.items.is_empty() => return None,
            Ok(typed) => return Some(typed),
            Err(error) => error,
        };
        let segments: Vec<Segment> = error.path().iter().cloned().collect();
        let path = removed.original_path(&segments);
        let message = error.inner().to_string();
        if parse_unknown_field(&message).is_some() {
            with_unknown_fields.push(index::parent(&path).to_string());
        }
        problems.push(describe(&path, &message, locator));
        if !remove(&mut value, &segments) {
            return None;
        }
        removed.record(&segments);
    }
    problems.push(
        Problem::new(
            format!("more than {MAX_ATTEMPTS} invalid fields"),
            Some(locator.document_start()),
        )
        .with_fix("fix the fields listed here and validate again to see the rest"),
    );
    None
}

/// Builds the problem for one serde error.
fn describe(path: &str, message: &str, locator: &Locator<'_>) -> Problem {
    if let Some((field, expected)) = parse_unknown_field(message) {
        let problem = Problem::new(
            format!("unknown field \"{field}\""),
            locator.at(path, Site::Key),
        );
        return match closest(&field, &expected) {
            Some(suggestion) => problem.with_fix(format!("did you mean \"{suggestion}\"?")),
            None if expected.is_empty() => problem.with_fix("this mapping takes no fields"),
            None => problem.with_fix(format!("expected one of: {}", expected.join(", "))),
        };
    }
    Problem::new(
        format!("invalid {path}: {}", readable(message)),
        locator.at(path, Site::Value),
    )
}

/// Reads serde's "unknown field `x`, expected one of `a`, `b`" message (the text of
/// `serde::de::Error::unknown_field` in serde 1.0) into the field and the accepted names.
fn parse_unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (field, rest) = rest.split_once('`')?;
    let expected = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    Some((field.to_string(), expected))
}

/// Returns the accepted name closest to a misspelt one, if any is close enough to be a likely typo.
pub fn closest<'a>(written: &str, accepted: &'a [impl AsRef<str>]) -> Option<&'a str> {
    let lowered = written.to_lowercase();
    accepted
        .iter()
        .map(|name| {
            (
                name.as_ref(),
                strsim::jaro_winkler(&lowered, &name.as_ref().to_lowercase()),
            )
        })
        .filter(|(_, score)| *score >= 0.85)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(name, _)| name)
}

/// Replaces Rust type names in serde messages with the words a YAML author uses.
fn readable(message: &str) -> String {
    // serde names the expected struct, such as "expected struct RawHost".
    let message = match message.split_once("expected struct ") {
        Some((before, after)) => {
            let rest = after.trim_start_matches(|c: char| c.is_alphanumeric() || c == '_');
            format!("{before}expected a map{rest}")
        }
        None => message.to_string(),
    };
    const WORDS: &[(&str, &str)] = &[
        ("expected u8", "expected an integer from 0 to 255"),
        ("expected u16", "expected an integer from 0 to 65535"),
        ("expected u32", "expected an integer from 0 to 4294967295"),
        ("expected u64", "expected a non-negative integer"),
        ("expected a map", "expected a mapping"),
        ("expected a sequence", "expected a list"),
        ("unit value", "null"),
    ];
    WORDS.iter().fold(message.to_string(), |text, (from, to)| {
        text.replace(from, to)
    })
}

/// Removes the node at `segments` from `value`. Returns false when the path does not lead to a
/// removable node.
fn remove(value: &mut Value, segments: &[Segment]) -> bool {
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let mut node = value;
    for segment in parents {
        let next = match (segment, node) {
            (Segment::Map { key }, Value::Mapping(mapping)) => mapping.get_mut(key.as_str()),
            (Segment::Seq { index }, Value::Sequence(sequence)) => sequence.get_mut(*index),
            _ => None,
        };
        match next {
            Some(next) => node = next,
            None => return false,
        }
    }
    match (last, node) {
        (Segment::Map { key }, Value::Mapping(mapping)) => {
            mapping.shift_remove(key.as_str()).is_some()
        }
        (Segment::Seq { index }, Value::Sequence(sequence)) if *index < sequence.len() => {
            sequence.remove(*index);
            true
        }
        _ => false,
    }
}

/// Sequence items removed so far, so that later errors still name the index the user wrote.
#[derive(Default)]
struct RemovedItems {
    /// (path of the sequence as written, index of the removed item as written).
    items: Vec<(String, usize)>,
}

impl RemovedItems {
    /// Renders serde's path, translating indexes back to those of the file.
    fn original_path(&self, segments: &[Segment]) -> String {
        let mut path = String::new();
        for segment in segments {
            path = match segment {
                Segment::Map { key } => index::child(&path, key),
                Segment::Seq { index } => index::item(&path, self.original_index(&path, *index)),
                Segment::Enum { variant } => index::child(&path, variant),
                Segment::Unknown => index::child(&path, "?"),
            };
        }
        path
    }

    fn original_index(&self, sequence: &str, current: usize) -> usize {
        let mut removed: Vec<usize> = self
            .items
            .iter()
            .filter(|(path, _)| path == sequence)
            .map(|(_, i)| *i)
            .collect();
        removed.sort_unstable();
        let mut original = current;
        for index in removed {
            if index <= original {
                original += 1;
            }
        }
        original
    }

    fn record(&mut self, segments: &[Segment]) {
        if let Some((Segment::Seq { index }, parents)) = segments.split_last() {
            let sequence = self.original_path(parents);
            let original = self.original_index(&sequence, *index);
            self.items.push((sequence, original));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_field_message_is_parsed() {
        let (field, expected) = parse_unknown_field(
            "unknown field `adress`, expected one of `address`, `user`, `port`",
        )
        .unwrap();
        assert_eq!(field, "adress");
        assert_eq!(expected, vec!["address", "user", "port"]);
        let (_, expected) = parse_unknown_field("unknown field `x`, expected `a` or `b`").unwrap();
        assert_eq!(expected, vec!["a", "b"]);
        let (_, expected) = parse_unknown_field("unknown field `x`, there are no fields").unwrap();
        assert!(expected.is_empty());
    }

    #[test]
    fn unknown_field_message_matches_serde() {
        // Pins the message format that parse_unknown_field reads.
        let error = <yaml_serde::Error as serde::de::Error>::unknown_field(
            "adress",
            &["address", "user", "port"],
        );
        assert_eq!(
            error.to_string(),
            "unknown field `adress`, expected one of `address`, `user`, `port`"
        );
    }

    #[test]
    fn readable_hides_rust_type_names() {
        assert_eq!(
            readable("invalid type: integer `5`, expected struct RawHost"),
            "invalid type: integer `5`, expected a mapping"
        );
        assert_eq!(
            readable("invalid type: string \"a\", expected u16"),
            "invalid type: string \"a\", expected an integer from 0 to 65535"
        );
    }

    #[test]
    fn closest_name_catches_typos_only() {
        let names = ["address", "user", "port", "keyPath", "hostKey", "bastion"];
        assert_eq!(closest("adress", &names), Some("address"));
        assert_eq!(closest("keypath", &names), Some("keyPath"));
        assert_eq!(closest("colour", &names), None);
    }

    #[test]
    fn removed_items_keep_original_indexes() {
        let mut removed = RemovedItems::default();
        let seq = |i| {
            vec![
                Segment::Map {
                    key: "flags".into(),
                },
                Segment::Seq { index: i },
            ]
        };
        removed.record(&seq(1));
        // After item 1 was removed, the current item 1 is item 2 of the file.
        assert_eq!(removed.original_path(&seq(1)), "flags[2]");
        removed.record(&seq(1));
        assert_eq!(removed.original_path(&seq(1)), "flags[3]");
        assert_eq!(removed.original_path(&seq(0)), "flags[0]");
    }
}
