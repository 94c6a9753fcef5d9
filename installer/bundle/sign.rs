//! Signing a bundle directory's bundle.yaml, and the atomic file writes bundles are made of.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::keys::{self, SecretKey};
use super::verify::{VerifyError, parse_manifest, read_head};
use super::{MANIFEST_FILE, SIGNATURE_FILE};

/// A failure to sign a bundle.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error(transparent)]
    Read(#[from] VerifyError),
    #[error("cannot sign {path}: {reason}")]
    Sign { path: PathBuf, reason: String },
    #[error("cannot write {path}")]
    Write { path: PathBuf, source: io::Error },
}

/// Signs the bundle.yaml of a bundle directory and writes `bundle.yaml.minisig` atomically. The
/// trusted comment names the bundle and its version.
pub fn sign(dir: &Path, key: &SecretKey) -> Result<keys::KeyId, SignError> {
    let (manifest_bytes, _) = read_head(dir)?;
    let manifest = parse_manifest(&manifest_bytes, dir)?;
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0);
    let comment = keys::trusted_comment(&manifest.name, manifest.version, timestamp);
    let signature = key
        .sign(&manifest_bytes, &comment)
        .map_err(|reason| SignError::Sign {
            path: dir.join(MANIFEST_FILE),
            reason,
        })?;

    let path = dir.join(SIGNATURE_FILE);
    write_atomically(&path, signature.as_bytes()).map_err(|source| SignError::Write {
        path: path.clone(),
        source,
    })?;
    tracing::info!(bundle = %manifest.name, version = manifest.version, key = %key.id(), "bundle signed");
    Ok(key.id())
}

/// Writes `content` to a temporary file beside `path`, syncs it, and renames it over `path`.
pub(crate) fn write_atomically(path: &Path, content: &[u8]) -> io::Result<()> {
    let mut file = temporary_file_beside(path, ".airlock-")?;
    io::Write::write_all(&mut file, content)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|error| error.error)?;
    Ok(())
}

/// Creates a temporary file in the directory of `path`, readable by all (mode 0644 before the
/// umask) because it becomes a file of a bundle or archive. It is deleted when dropped unless
/// persisted.
pub(crate) fn temporary_file_beside(
    path: &Path,
    prefix: &str,
) -> io::Result<tempfile::NamedTempFile> {
    let dir = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    tempfile::Builder::new()
        .permissions(fs::Permissions::from_mode(0o644))
        .prefix(prefix)
        .tempfile_in(dir)
}
