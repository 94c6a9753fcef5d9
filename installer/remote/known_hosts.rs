//! OpenSSH `known_hosts` files: what key a host is expected to present.
//!
//! The format is OpenSSH's (sshd(8), section SSH_KNOWN_HOSTS FILE FORMAT). Each line has an
//! optional marker (`@revoked`, `@cert-authority`), then a comma-separated list of host patterns,
//! then the key type and the base64 key. Patterns are plain names, `[name]:port`, wildcards `*`
//! and `?`, negations `!`, or HMAC-SHA1 hashed `|1|salt|hash` entries. A host key is trusted when a line for the host lists
//! exactly that key; a line for the host with the same key type but another key means the key
//! changed, which airlock always rejects.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use data_encoding::BASE64;
use hmac::{Hmac, KeyInit, Mac};
use russh::keys::ssh_key::{HashAlg, PublicKey};
use sha1::Sha1;

/// The result of checking a host's key against a known_hosts file.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A line for this host lists this key.
    Trusted,
    /// No line mentions this host with a key of this type.
    Unknown,
    /// A line for this host lists another key of the same type.
    Changed { line: usize, recorded: String },
    /// The key is marked `@revoked`.
    Revoked { line: usize },
}

/// A known_hosts file, read once and matched against many hosts.
#[derive(Debug, Default)]
pub struct KnownHosts {
    path: PathBuf,
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    /// 1-based line number in the file, for messages.
    line: usize,
    marker: Marker,
    patterns: Vec<String>,
    key: PublicKey,
}

#[derive(Debug, PartialEq, Eq)]
enum Marker {
    None,
    Revoked,
    CertAuthority,
}

/// A known_hosts line that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KnownHostsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot record the host key in {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

impl KnownHosts {
    /// Reads `path`; a missing file is an empty list, so that `--accept-new-host-keys` can start
    /// one. Lines that cannot be parsed are skipped with a debug log, as OpenSSH does.
    pub fn load(path: &Path) -> Result<KnownHosts, KnownHostsError> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(KnownHostsError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let entries = text
            .lines()
            .enumerate()
            .filter_map(|(index, line)| {
                let entry = parse_line(index + 1, line);
                if entry.is_none() && !line.trim().is_empty() && !line.trim_start().starts_with('#') {
                    tracing::debug!(path = %path.display(), line = index + 1, "skipping unparsable known_hosts line");
                }
                entry
            })
            .collect();
        Ok(KnownHosts {
            path: path.to_path_buf(),
            entries,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks the key `host:port` presented.
    pub fn check(&self, host: &str, port: u16, key: &PublicKey) -> Verdict {
        let name = host_pattern_name(host, port);
        let mut verdict = Verdict::Unknown;
        for entry in self.entries.iter().filter(|entry| entry.matches(&name)) {
            match entry.marker {
                Marker::Revoked if entry.key.key_data() == key.key_data() => {
                    return Verdict::Revoked { line: entry.line };
                }
                Marker::Revoked | Marker::CertAuthority => continue,
                Marker::None => {}
            }
            if entry.key.key_data() == key.key_data() {
                verdict = Verdict::Trusted;
            } else if entry.key.algorithm() == key.algorithm() && verdict == Verdict::Unknown {
                verdict = Verdict::Changed {
                    line: entry.line,
                    recorded: fingerprint(&entry.key),
                };
            }
        }
        verdict
    }

    /// Appends a line for `host:port` with `key`, creating the file (mode 0600) and its directory
    /// when missing.
    pub fn learn(&mut self, host: &str, port: u16, key: &PublicKey) -> Result<(), KnownHostsError> {
        let write_error = |source| KnownHostsError::Write {
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(write_error)?;
        }
        let name = host_pattern_name(host, port);
        let encoded = key
            .to_openssh()
            .map_err(|e| write_error(io::Error::other(e)))?;
        let mut file = open_append(&self.path).map_err(write_error)?;
        writeln!(file, "{name} {encoded}").map_err(write_error)?;
        let line = self.entries.last().map_or(1, |entry| entry.line + 1);
        self.entries.push(Entry {
            line,
            marker: Marker::None,
            patterns: vec![name],
            key: key.clone(),
        });
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// The name OpenSSH records for a host: `host` on port 22, `[host]:port` elsewhere.
pub fn host_pattern_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// The key's SHA256 fingerprint as OpenSSH prints it (`SHA256:...`).
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

fn parse_line(line_number: usize, line: &str) -> Option<Entry> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let mut fields = line.split_whitespace();
    let mut first = fields.next()?;
    let marker = match first {
        "@revoked" => Marker::Revoked,
        "@cert-authority" => Marker::CertAuthority,
        _ => Marker::None,
    };
    if marker != Marker::None {
        first = fields.next()?;
    }
    let algorithm = fields.next()?;
    let base64 = fields.next()?;
    let key = PublicKey::from_openssh(&format!("{algorithm} {base64}")).ok()?;
    Some(Entry {
        line: line_number,
        marker,
        patterns: first.split(',').map(str::to_string).collect(),
        key,
    })
}

impl Entry {
    /// A host matches when one pattern matches and no negated pattern does.
    fn matches(&self, name: &str) -> bool {
        let mut matched = false;
        for pattern in &self.patterns {
            if let Some(negated) = pattern.strip_prefix('!') {
                if wildcard_match(negated, name) {
                    return false;
                }
            } else if pattern.starts_with("|1|") {
                matched |= hashed_match(pattern, name);
            } else {
                matched |= wildcard_match(pattern, name);
            }
        }
        matched
    }
}

/// Matches an `|1|salt|hash` entry: HMAC-SHA1 of the name keyed with the salt.
fn hashed_match(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('|').skip(2);
    let (Some(salt), Some(hash)) = (parts.next(), parts.next()) else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (
        BASE64.decode(salt.as_bytes()),
        BASE64.decode(hash.as_bytes()),
    ) else {
        return false;
    };
    let Ok(mac) = Hmac::<Sha1>::new_from_slice(&salt) else {
        return false;
    };
    mac.chain_update(name.as_bytes())
        .verify_slice(&hash)
        .is_ok()
}

/// Matches OpenSSH's `*` and `?` wildcards, case-insensitively as OpenSSH does for host names.
fn wildcard_match(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.to_ascii_lowercase().chars().collect();
    let name: Vec<char> = name.to_ascii_lowercase().chars().collect();
    let (mut p, mut n) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == name[n]) {
            p += 1;
            n += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            backtrack = Some((p, n));
            p += 1;
        } else if let Some((star, matched)) = backtrack {
            p = star + 1;
            n = matched + 1;
            backtrack = Some((star, matched + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Trusted => write!(f, "trusted"),
            Verdict::Unknown => write!(f, "unknown"),
            Verdict::Changed { line, recorded } => {
                write!(f, "changed (line {line} records {recorded})")
            }
            Verdict::Revoked { line } => write!(f, "revoked (line {line})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    const KEY_B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBCR6/wvPXuUtIo7Z4ee8sm9bo0jiAlprkHCCuFI5Jda";

    fn key(text: &str) -> PublicKey {
        PublicKey::from_openssh(text).unwrap()
    }

    fn known_hosts(text: &str) -> KnownHosts {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        fs::write(&path, text).unwrap();
        KnownHosts::load(&path).unwrap()
    }

    #[test]
    fn plain_entry_is_trusted() {
        let hosts = known_hosts(&format!("127.0.1.11 {KEY_A}\n"));
        assert_eq!(hosts.check("127.0.1.11", 22, &key(KEY_A)), Verdict::Trusted);
        assert_eq!(hosts.check("127.0.1.12", 22, &key(KEY_A)), Verdict::Unknown);
    }

    #[test]
    fn port_is_part_of_the_name() {
        let hosts = known_hosts(&format!("[127.0.1.11]:2222 {KEY_A}\n"));
        assert_eq!(
            hosts.check("127.0.1.11", 2222, &key(KEY_A)),
            Verdict::Trusted
        );
        assert_eq!(hosts.check("127.0.1.11", 22, &key(KEY_A)), Verdict::Unknown);
    }

    #[test]
    fn other_key_of_same_type_is_a_change() {
        let hosts = known_hosts(&format!("# comment\n\n127.0.1.11 {KEY_A}\n"));
        match hosts.check("127.0.1.11", 22, &key(KEY_B)) {
            Verdict::Changed { line, recorded } => {
                assert_eq!(line, 3);
                assert_eq!(recorded, fingerprint(&key(KEY_A)));
            }
            other => panic!("expected a changed key, got {other:?}"),
        }
    }

    #[test]
    fn a_second_matching_line_wins_over_a_change() {
        let hosts = known_hosts(&format!("lab-1 {KEY_B}\nlab-1 {KEY_A}\n"));
        assert_eq!(hosts.check("lab-1", 22, &key(KEY_A)), Verdict::Trusted);
    }

    #[test]
    fn hashed_entry_matches_its_host_only() {
        // `ssh-keygen -H` output for host "lab-1" with salt "salt-bytes-0123456789".
        let salt = b"salt-bytes-0123456789";
        let mac = Hmac::<Sha1>::new_from_slice(salt)
            .unwrap()
            .chain_update(b"lab-1");
        let hash = mac.finalize().into_bytes();
        let line = format!(
            "|1|{}|{} {KEY_A}\n",
            BASE64.encode(salt),
            BASE64.encode(&hash)
        );
        let hosts = known_hosts(&line);
        assert_eq!(hosts.check("lab-1", 22, &key(KEY_A)), Verdict::Trusted);
        assert_eq!(hosts.check("lab-2", 22, &key(KEY_A)), Verdict::Unknown);
    }

    #[test]
    fn wildcards_and_negation() {
        let hosts = known_hosts(&format!("*.lab,!bad.lab {KEY_A}\n"));
        assert_eq!(hosts.check("node1.lab", 22, &key(KEY_A)), Verdict::Trusted);
        assert_eq!(hosts.check("bad.lab", 22, &key(KEY_A)), Verdict::Unknown);
        assert!(wildcard_match("127.0.1.?", "127.0.1.5"));
        assert!(!wildcard_match("127.0.1.?", "127.0.1.15"));
    }

    #[test]
    fn revoked_key_is_rejected() {
        let hosts = known_hosts(&format!("@revoked * {KEY_A}\nlab-1 {KEY_A}\n"));
        assert_eq!(
            hosts.check("lab-1", 22, &key(KEY_A)),
            Verdict::Revoked { line: 1 }
        );
    }

    #[test]
    fn learned_key_is_written_and_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ssh/known_hosts");
        let mut hosts = KnownHosts::load(&path).unwrap();
        hosts.learn("127.0.1.11", 2222, &key(KEY_A)).unwrap();
        assert_eq!(
            hosts.check("127.0.1.11", 2222, &key(KEY_A)),
            Verdict::Trusted
        );
        let reloaded = KnownHosts::load(&path).unwrap();
        assert_eq!(
            reloaded.check("127.0.1.11", 2222, &key(KEY_A)),
            Verdict::Trusted
        );
        assert!(
            fs::read_to_string(&path)
                .unwrap()
                .starts_with("[127.0.1.11]:2222 ssh-ed25519 ")
        );
    }
}
