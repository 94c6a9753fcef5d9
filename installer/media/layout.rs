//! The files `airlock apply` and `airlock upgrade` look for beside the running binary, so that on
//! media made by `airlock media create` they need no `--bundle` or `-c`.

use std::fs;
use std::path::{Path, PathBuf};

use super::CLUSTER_FILE;

/// The bundle and cluster file found in the folder of the running binary.
#[derive(Debug, Default)]
pub struct BesideBinary {
    /// The folder searched.
    pub dir: PathBuf,
    /// Every bundle archive found: a `*.tar.zst`, or the first part `*.tar.zst.part001`.
    pub bundles: Vec<PathBuf>,
    pub cluster: Option<PathBuf>,
}

/// Looks for bundles and `k0sctl.yaml` in the folder of the running binary. Returns `None` when
/// that folder cannot be found or read.
pub fn find_beside_binary() -> Option<BesideBinary> {
    let exe = std::env::current_exe().ok()?;
    find_in(exe.parent()?)
}

/// Looks for bundles and `k0sctl.yaml` in `dir`.
pub fn find_in(dir: &Path) -> Option<BesideBinary> {
    let mut bundles: Vec<PathBuf> = fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            name.is_some_and(|name| {
                name.ends_with(".tar.zst") || name.ends_with(".tar.zst.part001")
            })
        })
        .filter(|path| path.is_file())
        .collect();
    bundles.sort();
    let cluster = Some(dir.join(CLUSTER_FILE)).filter(|path| path.is_file());
    Some(BesideBinary {
        dir: dir.to_path_buf(),
        bundles,
        cluster,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_first_parts_and_cluster_file() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "lab-1.tar.zst.part001",
            "lab-1.tar.zst.part002",
            "lab-2.tar.zst",
            "notes.txt",
            "k0sctl.yaml",
        ] {
            fs::write(dir.path().join(name), "").unwrap();
        }
        let found = find_in(dir.path()).unwrap();
        assert_eq!(
            found.bundles,
            vec![
                dir.path().join("lab-1.tar.zst.part001"),
                dir.path().join("lab-2.tar.zst")
            ]
        );
        assert_eq!(found.cluster, Some(dir.path().join("k0sctl.yaml")));
    }

    #[test]
    fn finds_nothing_in_an_empty_folder() {
        let dir = tempfile::tempdir().unwrap();
        let found = find_in(dir.path()).unwrap();
        assert!(found.bundles.is_empty());
        assert_eq!(found.cluster, None);
    }
}
