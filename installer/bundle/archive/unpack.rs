//! Unpacking an archive into a bundle directory, verifying every entry on the way.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::parts::PartSet;
use super::stream::read_archive;
use crate::bundle::keys::TrustPolicy;
use crate::bundle::verified::{BlobStore, VerifiedBundle};
use crate::bundle::verify::VerifyError;
use crate::ui::Ui;

/// An archive that cannot be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("{path} already exists and is not an empty directory")]
    OutputExists { path: PathBuf },
    #[error("cannot create a temporary directory beside {path}")]
    TemporaryDirectory { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error("cannot move the unpacked bundle to {path}")]
    Rename { path: PathBuf, source: io::Error },
}

/// Unpacks `archive` (a `.tar.zst` or the first part of a split archive) into the new directory
/// `output`, checking the signature against `policy` and every entry against bundle.yaml.
///
/// Entries go to a temporary directory beside `output`, which is renamed to `output` only when
/// everything has been verified. On failure it is removed, and `output` is left as it was.
pub fn unpack(
    archive: &Path,
    output: &Path,
    policy: &TrustPolicy,
    ui: &Ui,
) -> Result<VerifiedBundle, UnpackError> {
    let output_exists = match fs::read_dir(output).map(|mut entries| entries.next().is_none()) {
        Ok(true) => true,
        Ok(false) => {
            return Err(UnpackError::OutputExists {
                path: output.into(),
            });
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => false,
        Err(_) => {
            return Err(UnpackError::OutputExists {
                path: output.into(),
            });
        }
    };
    let parts = PartSet::open(archive).map_err(VerifyError::from)?;

    let parent = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary_error = |source| UnpackError::TemporaryDirectory {
        path: output.into(),
        source,
    };
    let temporary = tempfile::Builder::new()
        .prefix(&format!(".{name}.unpack-"))
        .tempdir_in(parent)
        .map_err(temporary_error)?;
    fs::set_permissions(temporary.path(), fs::Permissions::from_mode(0o755))
        .map_err(temporary_error)?;

    // NOTE: the files are not synced before the rename, so a crash right after it can leave
    // short files in `output`; verify reports them as truncated or changed.
    let outcome = read_archive(&parts, policy, Some(temporary.path()), ui)?;

    let rename_error = |source| UnpackError::Rename {
        path: output.into(),
        source,
    };
    if output_exists {
        fs::remove_dir(output).map_err(rename_error)?;
    }
    fs::rename(temporary.path(), output).map_err(rename_error)?;
    // The directory now lives at `output`; keep TempDir from deleting it.
    let _ = temporary.keep();
    tracing::info!(archive = %archive.display(), directory = %output.display(), "bundle unpacked");

    Ok(VerifiedBundle::from_parts(
        outcome.manifest,
        outcome.digest,
        outcome.signer,
        outcome.images,
        BlobStore::Directory(output.into()),
        output.into(),
    ))
}
