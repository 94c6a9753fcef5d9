//! The entries a bundle may contain, for directories and archives alike.
//!
//! A bundle has a fixed shape: `bundle.yaml`, its signature, `oci-layout`, `index.json`, the
//! directories `blobs/` and `blobs/sha256/`, and the blobs. Anything else is an error: other
//! files, links of any kind, devices, FIFOs, and paths that are absolute or contain `..`.

use std::path::Path;

use super::{BLOBS_DIR, MANIFEST_FILE, SIGNATURE_FILE};

/// A problem with an entry of a bundle directory or archive.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EntryProblem {
    #[error("absolute paths are not allowed")]
    AbsolutePath,
    #[error("'..' in a path is not allowed")]
    ParentComponent,
    #[error("the path is not valid UTF-8")]
    NotUtf8,
    #[error("symbolic link to {target:?}: bundles contain no links")]
    Symlink { target: String },
    #[error("hard link to {target:?}: bundles contain no links")]
    Hardlink { target: String },
    #[error("device file: bundles contain only regular files and directories")]
    Device,
    #[error("FIFO: bundles contain only regular files and directories")]
    Fifo,
    #[error("{kind}: bundles contain only regular files and directories")]
    Unsupported { kind: String },
    #[error("unexpected directory: a bundle has only blobs/ and blobs/sha256/")]
    UnexpectedDirectory,
}

/// The kind of an entry that passed the checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Directory,
}

/// Turns an archive entry's raw path into a plain relative path. `./` prefixes and a trailing `/`
/// are dropped, and absolute paths, `..` and invalid UTF-8 are rejected.
pub fn normalize_entry_path(raw: &[u8]) -> Result<String, EntryProblem> {
    let text = std::str::from_utf8(raw).map_err(|_| EntryProblem::NotUtf8)?;
    if text.starts_with('/') {
        return Err(EntryProblem::AbsolutePath);
    }
    let mut parts = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => continue,
            ".." => return Err(EntryProblem::ParentComponent),
            part => parts.push(part),
        }
    }
    Ok(parts.join("/"))
}

/// Returns whether `path` is one of the directories a bundle has.
pub fn is_bundle_directory(path: &str) -> bool {
    path == "blobs" || path == BLOBS_DIR
}

/// Returns whether `path` is bundle.yaml or its signature, the two files bundle.yaml does not
/// list.
pub fn is_manifest_or_signature(path: &str) -> bool {
    path == MANIFEST_FILE || path == SIGNATURE_FILE
}

/// Checks a tar entry's type and returns whether it is a file or a directory.
pub fn check_tar_entry(header: &tar::Header, path: &str) -> Result<EntryKind, EntryProblem> {
    let entry_type = header.entry_type();
    let link_target = || {
        header
            .link_name_bytes()
            .map(|target| String::from_utf8_lossy(&target).into_owned())
            .unwrap_or_default()
    };
    if entry_type.is_file() {
        Ok(EntryKind::File)
    } else if entry_type.is_dir() {
        match is_bundle_directory(path) {
            true => Ok(EntryKind::Directory),
            false => Err(EntryProblem::UnexpectedDirectory),
        }
    } else if entry_type.is_symlink() {
        Err(EntryProblem::Symlink {
            target: link_target(),
        })
    } else if entry_type.is_hard_link() {
        Err(EntryProblem::Hardlink {
            target: link_target(),
        })
    } else if entry_type.is_character_special() || entry_type.is_block_special() {
        Err(EntryProblem::Device)
    } else if entry_type.is_fifo() {
        Err(EntryProblem::Fifo)
    } else {
        Err(EntryProblem::Unsupported {
            kind: format!("tar entry type {:?}", entry_type.as_byte() as char),
        })
    }
}

/// Checks the type of a directory entry found while walking a bundle directory.
pub fn check_file_type(
    file_type: std::fs::FileType,
    full_path: &Path,
    path: &str,
) -> Result<EntryKind, EntryProblem> {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_file() {
        Ok(EntryKind::File)
    } else if file_type.is_dir() {
        match is_bundle_directory(path) {
            true => Ok(EntryKind::Directory),
            false => Err(EntryProblem::UnexpectedDirectory),
        }
    } else if file_type.is_symlink() {
        let target = std::fs::read_link(full_path)
            .map(|t| t.display().to_string())
            .unwrap_or_default();
        Err(EntryProblem::Symlink { target })
    } else if file_type.is_block_device() || file_type.is_char_device() {
        Err(EntryProblem::Device)
    } else if file_type.is_fifo() {
        Err(EntryProblem::Fifo)
    } else {
        Err(EntryProblem::Unsupported {
            kind: "socket".into(),
        })
    }
}

/// Builds a tar header with fixed owner, group and time, so that archives depend only on their
/// content.
pub(crate) fn tar_header(entry_type: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(entry_type);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths_normalize() {
        assert_eq!(
            normalize_entry_path(b"./blobs/sha256/").unwrap(),
            "blobs/sha256"
        );
        assert_eq!(normalize_entry_path(b"bundle.yaml").unwrap(), "bundle.yaml");
        assert_eq!(
            normalize_entry_path(b"/etc/passwd"),
            Err(EntryProblem::AbsolutePath)
        );
        assert_eq!(
            normalize_entry_path(b"blobs/../../x"),
            Err(EntryProblem::ParentComponent)
        );
        assert_eq!(normalize_entry_path(b"\xff"), Err(EntryProblem::NotUtf8));
    }
}
