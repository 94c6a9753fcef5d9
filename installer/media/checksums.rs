//! `SHA256SUMS` in the format `sha256sum` writes and `sha256sum -c` reads, and the journal that
//! records each file as it is completed so that an interrupted `media create` can continue.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use crate::digest::Digest;

/// One line of a checksum file: a file's digest and its path relative to the media root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub digest: Digest,
    pub name: String,
}

/// A line of a checksum file that is not `<64 hex digits>  <name>`.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    pub line: usize,
    pub reason: String,
}

/// Formats entries as `sha256sum` does: the hex digest, two spaces and the name.
pub fn format(entries: &[Entry]) -> String {
    entries
        .iter()
        .map(|entry| format!("{}  {}\n", entry.digest.hex(), entry.name))
        .collect()
}

/// Parses a checksum file. Text mode (`  name`) and binary mode (` *name`) lines are accepted,
/// and blank lines are skipped.
pub fn parse(text: &str) -> Result<Vec<Entry>, ParseError> {
    let mut entries = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let error = |reason: &str| ParseError {
            line: index + 1,
            reason: reason.to_string(),
        };
        let (hex, rest) = line
            .split_once(' ')
            .ok_or_else(|| error("expected `<sha256 hex>  <file name>`"))?;
        let name = rest
            .strip_prefix(' ')
            .or_else(|| rest.strip_prefix('*'))
            .ok_or_else(|| error("expected two spaces or ` *` between the digest and the name"))?;
        let digest = Digest::from_hex(hex).map_err(|_| error("invalid sha256 hex digest"))?;
        if name.is_empty() || name.starts_with('/') || name.split('/').any(|part| part == "..") {
            return Err(error(
                "the file name must be a relative path inside the media",
            ));
        }
        entries.push(Entry {
            digest,
            name: name.to_string(),
        });
    }
    Ok(entries)
}

/// The record of files already written, checked and synced by an interrupted `media create`,
/// with the digest of the bundle they came from. It lives in the media root as [`JOURNAL`]
/// until `SHA256SUMS` replaces it.
#[derive(Debug, Default)]
pub struct Journal {
    /// The bundle digest the journal was started for; entries of another bundle are not reused.
    pub bundle: Option<Digest>,
    pub entries: Vec<Entry>,
}

/// The journal's file name: hidden, so that it is not mistaken for part of finished media.
pub const JOURNAL: &str = ".SHA256SUMS.partial";

const BUNDLE_PREFIX: &str = "# bundle ";

impl Journal {
    /// Loads the journal from `dir`, or returns an empty one when there is none. A line cut short
    /// by a crash, which is only ever the last one, ends the journal.
    pub fn load(dir: &Path) -> io::Result<Journal> {
        let text = match fs::read_to_string(dir.join(JOURNAL)) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Journal::default()),
            Err(error) => return Err(error),
        };
        let mut journal = Journal::default();
        for line in text.split_inclusive('\n') {
            let Some(line) = line.strip_suffix('\n') else {
                break;
            };
            if let Some(hex) = line.strip_prefix(BUNDLE_PREFIX) {
                journal.bundle = Digest::from_hex(hex).ok();
                continue;
            }
            match parse(line) {
                Ok(mut entries) => journal.entries.append(&mut entries),
                Err(_) => break,
            }
        }
        Ok(journal)
    }

    /// Returns the recorded digest of `name`, if the journal lists it.
    pub fn digest_of(&self, name: &str) -> Option<Digest> {
        self.entries
            .iter()
            .rev()
            .find(|entry| entry.name == name)
            .map(|entry| entry.digest)
    }

    /// Starts a new journal in `dir` for the bundle `bundle`, replacing an older one.
    pub fn start(dir: &Path, bundle: Digest) -> io::Result<Journal> {
        let path = dir.join(JOURNAL);
        let mut file = File::create(&path)?;
        file.write_all(format!("{BUNDLE_PREFIX}{}\n", bundle.hex()).as_bytes())?;
        file.sync_all()?;
        Ok(Journal {
            bundle: Some(bundle),
            entries: Vec::new(),
        })
    }

    /// Appends entries and syncs the journal, so that a record never names a file that is not on
    /// the device yet.
    pub fn append(&mut self, dir: &Path, entries: &[Entry]) -> io::Result<()> {
        let mut file = OpenOptions::new().append(true).open(dir.join(JOURNAL))?;
        file.write_all(format(entries).as_bytes())?;
        file.sync_all()?;
        self.entries.extend_from_slice(entries);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(byte: u8) -> Digest {
        Digest::from_bytes([byte; 32])
    }

    #[test]
    fn format_and_parse_round_trip() {
        let entries = vec![
            Entry {
                digest: digest(1),
                name: "airlock".into(),
            },
            Entry {
                digest: digest(2),
                name: "keys/site.pub".into(),
            },
        ];
        assert_eq!(parse(&format(&entries)).unwrap(), entries);
    }

    #[test]
    fn parse_accepts_binary_mode() {
        let line = format!("{} *airlock\n", digest(3).hex());
        assert_eq!(parse(&line).unwrap()[0].name, "airlock");
    }

    #[test]
    fn parse_rejects_bad_lines() {
        let hex = digest(4).hex();
        for (text, reason) in [
            ("nonsense".to_string(), "expected"),
            (format!("{hex} airlock"), "two spaces"),
            ("abc  airlock".to_string(), "invalid sha256"),
            (format!("{hex}  ../etc/passwd"), "relative path"),
            (format!("{hex}  /etc/passwd"), "relative path"),
        ] {
            let error = parse(&text).unwrap_err();
            assert_eq!(error.line, 1, "{text}");
            assert!(error.reason.contains(reason), "{text}: {}", error.reason);
        }
    }

    #[test]
    fn journal_ignores_a_line_cut_short() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::start(dir.path(), digest(9)).unwrap();
        journal
            .append(
                dir.path(),
                &[Entry {
                    digest: digest(5),
                    name: "airlock".into(),
                }],
            )
            .unwrap();
        let mut file = OpenOptions::new()
            .append(true)
            .open(dir.path().join(JOURNAL))
            .unwrap();
        file.write_all(&digest(6).hex().as_bytes()[..10]).unwrap();

        let loaded = Journal::load(dir.path()).unwrap();
        assert_eq!(loaded.bundle, Some(digest(9)));
        assert_eq!(loaded.entries.len(), 1);
        assert_eq!(loaded.digest_of("airlock"), Some(digest(5)));
    }
}
