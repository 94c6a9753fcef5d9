//! The lock file beside a bundle specification (`SPEC.lock` for `SPEC.yaml`): the digests of
//! downloaded sources that the specification does not pin.
//!
//! The first build that downloads a source records its digest here. Later builds treat that digest
//! as a pin: a download whose content differs fails, so a file, chart or image tag that changed
//! upstream cannot slip into a bundle unnoticed. `bundle build --frozen` accepts only sources
//! pinned by the specification or by this file. Entries are keyed by source (URL, chart, image
//! reference and platform), not by artifact name, so renaming an artifact keeps its entry.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::manifest::Platform;
use super::sign::write_atomically;
use crate::digest::Digest;

/// The `lockVersion` this airlock writes and reads.
pub const LOCK_VERSION: u32 = 1;

/// The largest lock file airlock reads.
const MAX_LOCK_SIZE: u64 = 16 << 20;

const HEADER: &str = "\
# Written by `airlock bundle build`: the digests of the downloaded sources that the
# specification beside this file does not pin. Commit it with the specification. A build whose
# download differs from an entry fails; delete the entry to accept new upstream content.
";

/// The parsed lock file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Lock {
    pub lock_version: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<LockedFile>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub charts: Vec<LockedChart>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<LockedImage>,
}

/// A file downloaded from a URL.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LockedFile {
    pub url: String,
    pub digest: Digest,
    pub size: u64,
}

/// A chart archive from a Helm repository.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LockedChart {
    pub repo: String,
    pub name: String,
    pub version: String,
    /// The digest of the chart archive (`.tgz`).
    pub digest: Digest,
    pub size: u64,
}

/// An image tag resolved to the manifest of one platform.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LockedImage {
    pub reference: String,
    pub platform: Platform,
    /// The digest of the platform's image manifest.
    pub digest: Digest,
}

/// A lock file that cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot read lock file {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid lock file {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("cannot write lock file {path}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Lock {
    /// Reads the lock file at `path`; a missing file is an empty lock.
    pub fn load(path: &Path) -> Result<Lock, LockError> {
        let invalid = |reason: String| LockError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let text = match std::fs::File::open(path) {
            Ok(file) => {
                let mut text = Vec::new();
                std::io::Read::read_to_end(
                    &mut std::io::Read::take(file, MAX_LOCK_SIZE + 1),
                    &mut text,
                )
                .map_err(|source| LockError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                text
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Lock::empty());
            }
            Err(source) => {
                return Err(LockError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        if text.len() as u64 > MAX_LOCK_SIZE {
            return Err(invalid(format!("it is larger than {MAX_LOCK_SIZE} bytes")));
        }
        let lock: Lock = yaml_serde::from_slice(&text).map_err(|e| invalid(e.to_string()))?;
        if lock.lock_version != LOCK_VERSION {
            return Err(invalid(format!(
                "unsupported lockVersion {}: this airlock reads version {LOCK_VERSION}",
                lock.lock_version
            )));
        }
        Ok(lock)
    }

    pub fn empty() -> Lock {
        Lock {
            lock_version: LOCK_VERSION,
            ..Lock::default()
        }
    }

    pub fn file(&self, url: &str) -> Option<&LockedFile> {
        self.files.iter().find(|file| file.url == url)
    }

    pub fn chart(&self, repo: &str, name: &str, version: &str) -> Option<&LockedChart> {
        self.charts
            .iter()
            .find(|chart| chart.repo == repo && chart.name == name && chart.version == version)
    }

    pub fn image(&self, reference: &str, platform: &Platform) -> Option<&LockedImage> {
        self.images
            .iter()
            .find(|image| image.reference == reference && &image.platform == platform)
    }

    /// Sorts the entries so that the file's text depends only on its content.
    pub fn sort(&mut self) {
        self.files.sort();
        self.files.dedup();
        self.charts.sort();
        self.charts.dedup();
        self.images.sort();
        self.images.dedup();
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.charts.is_empty() && self.images.is_empty()
    }

    /// Serialises the lock with its explanatory header.
    pub fn to_yaml(&self) -> String {
        let body = yaml_serde::to_string(self).expect("a lock always serialises");
        format!("{HEADER}{body}")
    }

    /// Writes the lock to `path` atomically, unless the file already has this content. Returns
    /// whether the file changed.
    pub fn write_if_changed(&self, path: &Path) -> Result<bool, LockError> {
        let text = self.to_yaml();
        if std::fs::read(path).is_ok_and(|old| old == text.as_bytes()) {
            return Ok(false);
        }
        write_atomically(path, text.as_bytes()).map_err(|source| LockError::Write {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_round_trips_and_skips_unchanged_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spec.lock");
        assert_eq!(Lock::load(&path).unwrap(), Lock::empty());

        let mut lock = Lock::empty();
        lock.images.push(LockedImage {
            reference: "quay.io/kubevirt/virt-api:v1.9.0".into(),
            platform: Platform::linux_amd64(),
            digest: Digest::of_bytes(b"manifest"),
        });
        lock.files.push(LockedFile {
            url: "https://example.invalid/k0s".into(),
            digest: Digest::of_bytes(b"k0s"),
            size: 3,
        });
        lock.sort();
        assert!(lock.write_if_changed(&path).unwrap());
        assert!(!lock.write_if_changed(&path).unwrap());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("# Written by `airlock bundle build`"),
            "{text}"
        );
        assert!(text.contains("platform: linux/amd64"), "{text}");

        let loaded = Lock::load(&path).unwrap();
        assert_eq!(loaded, lock);
        assert!(
            loaded
                .image("quay.io/kubevirt/virt-api:v1.9.0", &Platform::linux_amd64())
                .is_some()
        );
        assert!(
            loaded
                .image(
                    "quay.io/kubevirt/virt-api:v1.9.0",
                    &"linux/arm64".parse().unwrap()
                )
                .is_none()
        );
    }

    #[test]
    fn lock_rejects_unknown_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spec.lock");
        std::fs::write(&path, "lockVersion: 9\n").unwrap();
        let error = Lock::load(&path).unwrap_err().to_string();
        assert!(error.contains("unsupported lockVersion 9"), "{error}");
    }
}
