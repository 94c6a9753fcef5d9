//! A host's `files[]`: what to upload besides k0s, with k0sctl's rules.

use std::path::PathBuf;

use serde::Serialize;

use super::index::child;
use super::locate::Problems;
use super::raw::RawFile;

/// The source of an uploaded file's content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum FileSource {
    /// A local file, directory or glob pattern, resolved against the cluster file's directory.
    Local(PathBuf),
    /// Inline content.
    Data(String),
}

/// One entry of a host's `files[]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadFile {
    pub name: Option<String>,
    pub source: FileSource,
    pub destination_dir: Option<String>,
    pub destination: Option<String>,
    /// File mode, or `None` to keep the local file's mode.
    pub perm: Option<u32>,
    /// Mode of directories created for the upload.
    pub dir_perm: u32,
    pub user: Option<String>,
    pub group: Option<String>,
}

pub(super) fn upload_file(
    raw: RawFile,
    path: &str,
    problems: &mut Problems<'_>,
) -> Option<UploadFile> {
    let source_name = problems.locator.source.name.clone();
    let data = raw.data.filter(|d| !d.trim().is_empty());
    let src = raw.src.filter(|s| !s.is_empty());
    let destination = raw.dst.filter(|d| !d.is_empty());
    let destination_dir = raw.dst_dir.filter(|d| !d.is_empty());
    let mut valid = true;

    let source = match (src, data) {
        (Some(_), Some(_)) => {
            problems.key(
                &child(path, "data"),
                "both src and data are set",
                "keep one of the two",
            );
            None
        }
        (None, None) => {
            problems.missing(
                path,
                "src or data required",
                "set src to a local path or URL, or data to the content",
            );
            None
        }
        (None, Some(data)) => Some(FileSource::Data(data)),
        // k0sctl lets the host download a URL source, but the hosts of an air-gapped site have
        // no network access, and the bytes would bypass the bundle's signature and digests.
        (Some(src), None) if src.contains("://") => {
            problems.value(
                &child(path, "src"),
                format!("URL source {src:?} cannot be downloaded at an air-gapped site"),
                "put the file into the bundle instead: add an artifact with source {url: ...} and \
                 install {path: ...} to the bundle specification and rebuild the bundle, or \
                 download it here and set src to the local copy",
            );
            None
        }
        (Some(src), None) => {
            let resolved = problems.locator.source.resolve_path(&src);
            let is_glob = src.contains(['*', '?', '[', ']', '{', '}', '%']);
            // NOTE: glob patterns are not expanded or checked here, so a pattern that matches
            // nothing is found only when the files are uploaded.
            if !is_glob && !resolved.exists() {
                problems.value(
                    &child(path, "src"),
                    format!("file {} not found", resolved.display()),
                    format!("relative paths resolve against the directory of {source_name}"),
                );
                valid = false;
            }
            Some(FileSource::Local(resolved))
        }
    };
    if destination.is_none() && destination_dir.is_none() {
        problems.missing(
            path,
            "dst or dstDir required",
            "set dst to the file's path on the host, or dstDir to its directory",
        );
        valid = false;
    }
    if matches!(source, Some(FileSource::Data(_)))
        && destination.is_none()
        && raw.name.as_deref().is_none_or(str::is_empty)
    {
        problems.missing(
            path,
            "name or dst required for data",
            "set dst, or name to use as the file name under dstDir",
        );
        valid = false;
    }
    let perm = file_mode(raw.perm.map(|p| p.0), &child(path, "perm"), problems);
    let dir_perm = file_mode(raw.dir_perm.map(|p| p.0), &child(path, "dirPerm"), problems);

    Some(UploadFile {
        name: raw.name.filter(|n| !n.is_empty()),
        source: source.filter(|_| valid)?,
        destination_dir,
        destination,
        perm: perm?,
        dir_perm: dir_perm?.unwrap_or(0o755),
        user: raw.user.filter(|u| !u.is_empty()),
        group: raw.group.filter(|g| !g.is_empty()),
    })
}

/// Reads a file mode written as octal digits (`0600`, `"0755"`, `644`). Returns `Some(None)` when
/// the field is absent and `None` after recording a problem.
fn file_mode(
    written: Option<String>,
    path: &str,
    problems: &mut Problems<'_>,
) -> Option<Option<u32>> {
    let Some(text) = written.filter(|t| !t.is_empty()) else {
        return Some(None);
    };
    match parse_file_mode(&text) {
        Ok(mode) => Some(Some(mode)),
        Err(reason) => {
            let message = format!("invalid permission {text:?}: {reason}");
            problems.value(path, message, "write the mode as octal digits such as 0644");
            None
        }
    }
}

/// Parses octal digits, with an optional `0` or `0o` prefix, into a file mode.
fn parse_file_mode(text: &str) -> Result<u32, &'static str> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err("not an octal number");
    }
    let significant = digits.trim_start_matches('0');
    if significant.is_empty() {
        return Err("the mode is zero");
    }
    if significant.len() > 4 {
        return Err("too many digits");
    }
    let mode = u32::from_str_radix(significant, 8).map_err(|_| "not an octal number")?;

    // The owner digit is the third from the right. Below 4 the owner could not read the file,
    // which almost always means the mode was written in decimal.
    if (mode >> 6) & 0o7 < 4 {
        return Err("the owner would have unconventional access");
    }
    Ok(mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_modes_are_octal() {
        assert_eq!(parse_file_mode("0644"), Ok(0o644));
        assert_eq!(parse_file_mode("644"), Ok(0o644));
        assert_eq!(parse_file_mode("0o750"), Ok(0o750));
        assert_eq!(parse_file_mode("4755"), Ok(0o4755));
        assert_eq!(parse_file_mode("0999"), Err("not an octal number"));
        assert_eq!(parse_file_mode("000"), Err("the mode is zero"));
        assert_eq!(
            parse_file_mode("0044"),
            Err("the owner would have unconventional access")
        );
        assert_eq!(parse_file_mode("17777"), Err("too many digits"));
    }
}
