//! One cluster file as read: its name for messages, the directory that relative paths in it
//! resolve against, the text as written and the text after `${VAR}` substitution.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::envsubst::{self, Substituted};
use super::error::{ConfigError, Location, Problem};

/// The size limit for a cluster file. Real ones are a few kilobytes.
pub const MAX_FILE_SIZE: u64 = 16 << 20;

/// The name `-` stands for standard input, as in k0sctl.
pub const STDIN_NAME: &str = "<stdin>";

pub struct Source {
    /// The file name used in messages: the path as given, or `<stdin>`.
    pub name: String,
    /// The directory relative paths in this file resolve against.
    pub dir: PathBuf,
    original: String,
    substituted: Substituted,
    original_lines: Vec<usize>,
    substituted_lines: Vec<usize>,
}

impl Source {
    /// Reads a file, or standard input for `-`, with a size limit.
    pub fn read(path: &Path) -> Result<(String, String, PathBuf), ConfigError> {
        let read_error = |source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        let too_large = || ConfigError::TooLarge {
            path: path.to_path_buf(),
            limit: MAX_FILE_SIZE,
        };
        let mut text = String::new();

        if path == Path::new("-") {
            let read = std::io::stdin()
                .lock()
                .take(MAX_FILE_SIZE + 1)
                .read_to_string(&mut text)
                .map_err(read_error)?;
            if read as u64 > MAX_FILE_SIZE {
                return Err(too_large());
            }
            let dir = std::env::current_dir().map_err(read_error)?;
            return Ok((STDIN_NAME.to_string(), text, dir));
        }

        let file = std::fs::File::open(path).map_err(read_error)?;
        let read = file
            .take(MAX_FILE_SIZE + 1)
            .read_to_string(&mut text)
            .map_err(read_error)?;
        if read as u64 > MAX_FILE_SIZE {
            return Err(too_large());
        }
        let dir = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::new(),
        };
        Ok((path.display().to_string(), text, dir))
    }

    /// Substitutes variables in `text`. Unset variables without a default are logged as warnings.
    pub fn new(
        name: String,
        original: String,
        dir: PathBuf,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Source, Problem> {
        let original_lines = line_starts(&original);
        let substituted = match envsubst::substitute(&original, lookup) {
            Ok(substituted) => substituted,
            Err(error) => {
                let (line, column) = line_and_column(&original, &original_lines, error.offset);
                let location = Location {
                    file: name,
                    line,
                    column: column + 1,
                };
                return Err(Problem::new(format!("invalid variable substitution: {}", error.message), Some(location))
                    .with_fix("write \"${NAME}\" or \"${NAME:-default}\" on one line, or \"$$\" for a literal \"$\""));
            }
        };
        for variable in &substituted.unset {
            tracing::warn!(
                variable = variable.as_str(),
                file = name.as_str(),
                "environment variable {variable} used in {name} is not set; substituting an empty string"
            );
        }
        let substituted_lines = line_starts(&substituted.text);
        Ok(Source {
            name,
            dir,
            original,
            substituted,
            original_lines,
            substituted_lines,
        })
    }

    /// Returns the text after substitution, which the YAML parsers read.
    pub fn text(&self) -> &str {
        &self.substituted.text
    }

    /// Maps a line (from 1) and character column (from 0) in the substituted text to the location
    /// the user wrote.
    pub fn location(&self, line: usize, column: usize) -> Location {
        let line_index = line.saturating_sub(1).min(self.substituted_lines.len() - 1);
        let line_start = self.substituted_lines[line_index];
        let text = &self.substituted.text;
        let byte = text[line_start..]
            .char_indices()
            .nth(column)
            .map_or(text.len(), |(offset, _)| line_start + offset);
        let input_byte = self.substituted.input_offset(byte);
        let (line, column) = line_and_column(&self.original, &self.original_lines, input_byte);
        Location {
            file: self.name.clone(),
            line,
            column: column + 1,
        }
    }

    /// Returns the location of the start of the file.
    pub fn start(&self) -> Location {
        Location {
            file: self.name.clone(),
            line: 1,
            column: 1,
        }
    }

    /// Resolves a path written in this file: `~/` against the home directory, a relative path
    /// against the file's directory.
    pub fn resolve_path(&self, written: &str) -> PathBuf {
        if let Some(rest) = written.strip_prefix("~/") {
            // Without HOME the path stays as written, for the SSH client to report.
            return match std::env::var_os("HOME") {
                Some(home) => PathBuf::from(home).join(rest),
                None => PathBuf::from(written),
            };
        }
        let path = Path::new(written);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.dir.join(path)
        }
    }
}

/// Returns the byte offset at which each line starts, beginning with 0.
fn line_starts(text: &str) -> Vec<usize> {
    std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .collect()
}

/// Converts a byte offset into a line (from 1) and character column (from 0).
fn line_and_column(text: &str, lines: &[usize], byte: usize) -> (usize, usize) {
    let byte = byte.min(text.len());
    let line_index = lines.partition_point(|&start| start <= byte) - 1;
    let column = text[lines[line_index]..byte].chars().count();
    (line_index + 1, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(text: &str) -> Source {
        let lookup = |name: &str| (name == "ADDR").then(|| "10.0.0.1".to_string());
        Source::new(
            "c.yaml".into(),
            text.into(),
            PathBuf::from("/etc/airlock"),
            &lookup,
        )
        .unwrap()
    }

    #[test]
    fn location_maps_through_substitution() {
        let s = source("a: 1\nb: ${ADDR} ${ADDR}x\n");
        assert_eq!(s.text(), "a: 1\nb: 10.0.0.1 10.0.0.1x\n");
        // The second value starts at column 12 (from 0) of line 2 in the substituted text.
        let location = s.location(2, 12);
        assert_eq!((location.line, location.column), (2, 12));
        // The `x` after it.
        let location = s.location(2, 20);
        assert_eq!((location.line, location.column), (2, 19));
    }

    #[test]
    fn location_counts_characters_not_bytes() {
        let s = source("a: \"äö\" ${ADDR}\n");
        let location = s.location(1, 8);
        assert_eq!(location.column, 9);
    }

    #[test]
    fn unclosed_substitution_names_its_position() {
        let lookup = |_: &str| None;
        let result = Source::new(
            "c.yaml".into(),
            "a: 1\nb: ${ADDR\n".into(),
            PathBuf::new(),
            &lookup,
        );
        let problem = result.err().unwrap();
        assert_eq!(problem.location.unwrap().to_string(), "c.yaml:2:4");
        assert_eq!(
            problem.message,
            "invalid variable substitution: closing brace expected"
        );
    }

    #[test]
    fn relative_paths_resolve_against_the_file() {
        let s = source("");
        assert_eq!(
            s.resolve_path("keys/site.pub"),
            PathBuf::from("/etc/airlock/keys/site.pub")
        );
        assert_eq!(s.resolve_path("/abs/k0s"), PathBuf::from("/abs/k0s"));
    }
}
