//! The cluster file's `files[]` as planned uploads: local files, directories and glob patterns
//! expanded into one file each, hashed here so that the host's copy is checked like every
//! bundle artifact.

use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use super::plan::{FileSource, PlannedFile, watched_staging_dir};
use crate::config::{FileSource as Source, UploadFile};
use crate::digest::{Digest, hash_file};

/// A `files[]` entry that cannot be planned.
#[derive(Debug, thiserror::Error)]
pub enum UserFileError {
    #[error("files[] pattern {pattern} matches no file")]
    NoMatch { pattern: String },
    #[error(
        "files[] pattern {pattern} matches {count} files but dst {destination} names one file; \
         set dstDir instead"
    )]
    SeveralForOneFile {
        pattern: String,
        count: usize,
        destination: String,
    },
    #[error("invalid files[] pattern {pattern}: {reason}")]
    Pattern { pattern: String, reason: String },
    #[error("cannot read {path} for files[]: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("files[] destination {destination} is not an absolute path; write it from /")]
    RelativeDestination { destination: String },
}

/// Plans every file of a host's `files[]`.
pub fn plan(files: &[UploadFile], data_dir: &str) -> Result<Vec<PlannedFile>, UserFileError> {
    let mut planned = Vec::new();
    for entry in files {
        match &entry.source {
            Source::Data(text) => {
                // The parser requires dst, or dstDir and name, for inline data.
                let file_name = entry.name.as_deref().unwrap_or("data");
                let destination = destination(entry, Path::new(file_name), true)?;
                let bytes = text.as_bytes().to_vec();
                planned.push(PlannedFile {
                    name: entry.name.clone().unwrap_or_else(|| destination.clone()),
                    digest: Digest::of_bytes(&bytes),
                    size: bytes.len() as u64,
                    source: FileSource::Bytes(Arc::new(bytes)),
                    mode: format!("{:04o}", entry.perm.unwrap_or(0o644)),
                    ..placed(entry, destination, data_dir)
                });
            }
            Source::Local(path) => {
                let found = expand(entry, path)?;
                let single = found.len() == 1 && !path.is_dir();
                for (local, relative) in found {
                    let destination = destination(entry, &relative, single)?;
                    planned.push(local_file(entry, local, destination, data_dir)?);
                }
            }
        }
    }
    Ok(planned)
}

/// Expands a local source into `(file, path relative to the destination)` pairs.
fn expand(entry: &UploadFile, path: &Path) -> Result<Vec<(PathBuf, PathBuf)>, UserFileError> {
    let text = path.to_string_lossy();
    if text.contains(['*', '?', '[', '{']) {
        let base = static_prefix(path);
        let matches = glob::glob(&text).map_err(|error| UserFileError::Pattern {
            pattern: text.to_string(),
            reason: error.to_string(),
        })?;
        let mut found = Vec::new();
        for matched in matches {
            let matched = matched.map_err(|error| UserFileError::Read {
                path: error.path().to_path_buf(),
                source: std::io::Error::other(error.to_string()),
            })?;
            if matched.is_file() {
                let relative = matched
                    .strip_prefix(&base)
                    .unwrap_or(&matched)
                    .to_path_buf();
                found.push((matched, relative));
            }
        }
        if found.is_empty() {
            return Err(UserFileError::NoMatch {
                pattern: text.to_string(),
            });
        }
        if found.len() > 1
            && let (Some(destination), None) = (&entry.destination, &entry.destination_dir)
        {
            return Err(UserFileError::SeveralForOneFile {
                pattern: text.to_string(),
                count: found.len(),
                destination: destination.clone(),
            });
        }
        return Ok(found);
    }
    if path.is_dir() {
        let mut found = Vec::new();
        for item in walkdir::WalkDir::new(path)
            .follow_links(true)
            .sort_by_file_name()
        {
            let item = item.map_err(|error| UserFileError::Read {
                path: error.path().unwrap_or(path).to_path_buf(),
                source: std::io::Error::other(error.to_string()),
            })?;
            if item.file_type().is_file() {
                let relative = item.path().strip_prefix(path).unwrap_or(item.path());
                found.push((item.path().to_path_buf(), relative.to_path_buf()));
            }
        }
        return Ok(found);
    }
    let file_name = path.file_name().map(PathBuf::from).unwrap_or_default();
    Ok(vec![(path.to_path_buf(), file_name)])
}

/// Returns the directories of a pattern before its first component with a glob character.
fn static_prefix(pattern: &Path) -> PathBuf {
    let mut prefix = PathBuf::new();
    for component in pattern.components() {
        let text = component.as_os_str().to_string_lossy();
        if text.contains(['*', '?', '[', '{']) {
            break;
        }
        prefix.push(component);
    }
    prefix
}

/// Returns the host path of a file: `dst` when the entry is one file (`single`), else `dst` or
/// `dstDir` joined with the file's path relative to the source.
fn destination(entry: &UploadFile, relative: &Path, single: bool) -> Result<String, UserFileError> {
    let destination = match (&entry.destination, &entry.destination_dir) {
        (Some(file), _) if single => file.clone(),
        (_, Some(dir)) | (Some(dir), None) => {
            let relative: PathBuf = relative
                .components()
                .filter(|component| matches!(component, Component::Normal(_)))
                .collect();
            format!(
                "{}/{}",
                dir.trim_end_matches('/'),
                relative.to_string_lossy()
            )
        }
        // The parser rejects an entry with neither dst nor dstDir.
        (None, None) => relative.to_string_lossy().into_owned(),
    };
    if !destination.starts_with('/') {
        return Err(UserFileError::RelativeDestination { destination });
    }
    Ok(destination)
}

fn local_file(
    entry: &UploadFile,
    local: PathBuf,
    destination: String,
    data_dir: &str,
) -> Result<PlannedFile, UserFileError> {
    let read_error = |source| UserFileError::Read {
        path: local.clone(),
        source,
    };
    let metadata = std::fs::metadata(&local).map_err(read_error)?;
    let (digest, size) = hash_file(&local).map_err(read_error)?;
    let mode = entry.perm.unwrap_or(metadata.permissions().mode() & 0o7777);
    Ok(PlannedFile {
        name: local.display().to_string(),
        digest,
        size,
        source: FileSource::Local(local),
        mode: format!("{mode:04o}"),
        ..placed(entry, destination, data_dir)
    })
}

/// Builds a planned file with the destination fields of `entry`; the caller sets the content
/// fields.
fn placed(entry: &UploadFile, destination: String, data_dir: &str) -> PlannedFile {
    let owner = match (&entry.user, &entry.group) {
        (Some(user), Some(group)) => Some(format!("{user}:{group}")),
        (Some(user), None) => Some(user.clone()),
        (None, Some(group)) => Some(format!(":{group}")),
        (None, None) => None,
    };
    PlannedFile {
        name: String::new(),
        source: FileSource::Bytes(Arc::new(Vec::new())),
        digest: Digest::of_bytes(&[]),
        size: 0,
        staging_dir: watched_staging_dir(&destination, data_dir),
        path: destination,
        mode: String::new(),
        present: false,
        final_path: None,
        owner,
        dir_mode: Some(format!("{:04o}", entry.dir_perm)),
        mode_mismatch: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(source: Source, destination: Option<&str>, dir: Option<&str>) -> UploadFile {
        UploadFile {
            name: None,
            source,
            destination_dir: dir.map(str::to_string),
            destination: destination.map(str::to_string),
            perm: None,
            dir_perm: 0o755,
            user: None,
            group: None,
        }
    }

    #[test]
    fn directory_keeps_relative_paths() {
        let local = tempfile::tempdir().unwrap();
        std::fs::create_dir(local.path().join("sub")).unwrap();
        std::fs::write(local.path().join("a.conf"), "a").unwrap();
        std::fs::write(local.path().join("sub/b.conf"), "b").unwrap();
        let files = [entry(
            Source::Local(local.path().to_path_buf()),
            None,
            Some("/etc/app"),
        )];
        let planned = plan(&files, "/var/lib/k0s").unwrap();
        let paths: Vec<&str> = planned.iter().map(|file| file.path.as_str()).collect();
        assert_eq!(paths, ["/etc/app/a.conf", "/etc/app/sub/b.conf"]);
        assert_eq!(planned[1].digest, Digest::of_bytes(b"b"));
    }

    #[test]
    fn glob_rules_follow_k0sctl() {
        let local = tempfile::tempdir().unwrap();
        for name in ["one.yaml", "two.yaml", "skip.txt"] {
            std::fs::write(local.path().join(name), name).unwrap();
        }
        let pattern = local.path().join("*.yaml");
        let to_dir = [entry(Source::Local(pattern.clone()), None, Some("/srv"))];
        let planned = plan(&to_dir, "/var/lib/k0s").unwrap();
        let paths: Vec<&str> = planned.iter().map(|file| file.path.as_str()).collect();
        assert_eq!(paths, ["/srv/one.yaml", "/srv/two.yaml"]);

        let to_one_file = [entry(Source::Local(pattern), Some("/srv/x.yaml"), None)];
        let error = plan(&to_one_file, "/var/lib/k0s").unwrap_err();
        assert!(matches!(
            error,
            UserFileError::SeveralForOneFile { count: 2, .. }
        ));

        let nothing = [entry(
            Source::Local(local.path().join("*.json")),
            None,
            Some("/srv"),
        )];
        let error = plan(&nothing, "/var/lib/k0s").unwrap_err();
        assert!(matches!(error, UserFileError::NoMatch { .. }));
    }

    #[test]
    fn single_file_mode_and_owner() {
        let local = tempfile::tempdir().unwrap();
        let path = local.path().join("tool");
        std::fs::write(&path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o750)).unwrap();
        let mut file = entry(Source::Local(path.clone()), None, Some("/usr/local/bin"));
        file.group = Some("adm".into());
        let planned = plan(&[file.clone()], "/var/lib/k0s").unwrap();
        assert_eq!(planned[0].path, "/usr/local/bin/tool");
        assert_eq!(planned[0].mode, "0750");
        assert_eq!(planned[0].owner.as_deref(), Some(":adm"));

        file.perm = Some(0o700);
        file.user = Some("ops".into());
        file.destination = Some("/opt/tool".into());
        file.destination_dir = None;
        let planned = plan(&[file], "/var/lib/k0s").unwrap();
        assert_eq!(planned[0].path, "/opt/tool");
        assert_eq!(planned[0].mode, "0700");
        assert_eq!(planned[0].owner.as_deref(), Some("ops:adm"));
    }

    #[test]
    fn manifests_are_staged() {
        let files = [UploadFile {
            name: Some("extra.yaml".into()),
            ..entry(
                Source::Data("kind: List\n".into()),
                None,
                Some("/var/lib/k0s/manifests/extra"),
            )
        }];
        let planned = plan(&files, "/var/lib/k0s").unwrap();
        assert_eq!(planned[0].path, "/var/lib/k0s/manifests/extra/extra.yaml");
        assert_eq!(
            planned[0].staging_dir.as_deref(),
            Some("/var/lib/k0s/airlock/staging")
        );
    }

    #[test]
    fn relative_destination_rejected() {
        let files = [entry(Source::Data("x".into()), Some("etc/x"), None)];
        let error = plan(&files, "/var/lib/k0s").unwrap_err();
        assert!(matches!(error, UserFileError::RelativeDestination { .. }));
    }
}
