//! Turning a YAML path in one document into the file, line and column the user wrote.

use super::error::{Location, Problem};
use super::index::{ScannedDocument, Site};
use super::source::Source;

/// Finds positions in one document of one file.
#[derive(Clone, Copy)]
pub struct Locator<'a> {
    pub source: &'a Source,
    /// The document's position index, or `None` when it could not be built. Then every
    /// position is the document's start.
    document: Option<&'a ScannedDocument>,
}

impl<'a> Locator<'a> {
    pub fn new(source: &'a Source, document: Option<&'a ScannedDocument>) -> Locator<'a> {
        Locator { source, document }
    }

    /// Finds the location of the node at `path`, or of its nearest ancestor present in the file.
    pub fn at(&self, path: &str, site: Site) -> Option<Location> {
        let Some(document) = self.document else {
            return Some(self.source.start());
        };
        let mark = document.index.find(path, site).unwrap_or(document.start);
        Some(self.source.location(mark.line, mark.column))
    }

    /// Returns the location where the document starts.
    pub fn document_start(&self) -> Location {
        match self.document {
            Some(document) => self
                .source
                .location(document.start.line, document.start.column),
            None => self.source.start(),
        }
    }
}

/// Collects the problems of one document, each placed by its path.
pub struct Problems<'a> {
    pub locator: Locator<'a>,
    pub list: &'a mut Vec<Problem>,
    /// Paths of mappings that had an unknown field.
    pub with_unknown_fields: Vec<String>,
}

impl<'a> Problems<'a> {
    /// Records a problem with the value at `path`.
    pub fn value(&mut self, path: &str, message: impl Into<String>, fix: impl Into<String>) {
        let location = self.locator.at(path, Site::Value);
        self.list
            .push(Problem::new(message, location).with_fix(fix));
    }

    /// Records a field missing from the mapping at `mapping`, unless that mapping had an unknown
    /// field: that is most likely the same field misspelt, and already reported.
    pub fn missing(&mut self, mapping: &str, message: impl Into<String>, fix: impl Into<String>) {
        if !self.with_unknown_fields.iter().any(|path| path == mapping) {
            self.key(mapping, message, fix);
        }
    }

    /// Records a problem with the field at `path` itself, pointing at its key.
    pub fn key(&mut self, path: &str, message: impl Into<String>, fix: impl Into<String>) {
        let location = self.locator.at(path, Site::Key);
        self.list
            .push(Problem::new(message, location).with_fix(fix));
    }

    /// Reads one of a fixed set of words. An absent or empty value gives the first choice, the
    /// default. An unknown word is recorded as a problem and gives `None`.
    pub fn choice<T: Copy>(
        &mut self,
        written: Option<&str>,
        choices: &[(&str, T)],
        path: &str,
        what: &str,
    ) -> Option<T> {
        let text = match written {
            None | Some("") => return choices.first().map(|(_, value)| *value),
            Some(text) => text,
        };
        if let Some((_, value)) = choices.iter().find(|(name, _)| *name == text) {
            return Some(*value);
        }
        let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
        self.value(
            path,
            format!("invalid {what} {text:?}"),
            format!("expected one of: {}", names.join(", ")),
        );
        None
    }

    pub fn location(&self, path: &str, site: Site) -> Option<Location> {
        self.locator.at(path, site)
    }
}
