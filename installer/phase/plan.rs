//! The files each host needs, decided once from the bundle and the host's role and facts.

use std::sync::Arc;

use crate::bundle::{ArtifactKind, HostSelector, Platform, VerifiedBundle};
use crate::config::Role;
use crate::digest::Digest;

/// Where the bytes of a planned file come from.
#[derive(Clone, Debug)]
pub enum FileSource {
    /// A blob of the verified bundle.
    Blob(Digest),
    /// Bytes airlock produced, such as a rendered manifest.
    Bytes(Arc<Vec<u8>>),
}

/// A file a host must hold.
#[derive(Clone, Debug)]
pub struct PlannedFile {
    /// The artifact or rendered file it comes from, for messages.
    pub name: String,
    pub source: FileSource,
    pub digest: Digest,
    pub size: u64,
    pub path: String,
    /// The mode in octal, as `chmod` takes it.
    pub mode: String,
    /// Where the bytes wait for their digest check when the destination directory is watched.
    pub staging_dir: Option<String>,
    /// Whether the host already holds exactly these bytes.
    pub present: bool,
}

/// The directory under the data directory where airlock keeps its own state on a host.
pub fn airlock_dir(data_dir: &str) -> String {
    format!("{}/airlock", data_dir.trim_end_matches('/'))
}

/// The staging directory for uploads into folders that k0s watches.
pub fn staging_dir(data_dir: &str) -> String {
    format!("{}/staging", airlock_dir(data_dir))
}

/// Returns whether an artifact with `selector` belongs on a host with `role`.
fn wanted(selector: HostSelector, role: Role) -> bool {
    match selector {
        HostSelector::All => true,
        HostSelector::Controllers => role.is_controller(),
        HostSelector::Workloads => role.runs_workloads(),
    }
}

/// Plans the bundle artifacts for one host: every artifact with an install target for the host's
/// platform and role. The k0s binary goes to the host's `k0sInstallPath`.
pub fn bundle_files(
    bundle: &VerifiedBundle,
    architecture: &str,
    role: Role,
    data_dir: &str,
    k0s_install_path: &str,
) -> Vec<PlannedFile> {
    let platform = Platform {
        os: "linux".into(),
        architecture: architecture.to_string(),
        variant: None,
    };
    let data_dir = data_dir.trim_end_matches('/');
    let watched = [
        format!("{data_dir}/images/"),
        format!("{data_dir}/manifests/"),
    ];
    bundle
        .artifacts_for_platform(&platform)
        .filter_map(|artifact| {
            let install = artifact.install.as_ref()?;
            if !wanted(install.hosts, role) {
                return None;
            }
            let path = if artifact.kind == ArtifactKind::K0sBinary {
                k0s_install_path.to_string()
            } else {
                install.path.resolve(data_dir)
            };
            let staging_dir = watched
                .iter()
                .any(|dir| path.starts_with(dir))
                .then(|| staging_dir(data_dir));
            Some(PlannedFile {
                name: artifact.name.clone(),
                source: FileSource::Blob(artifact.digest),
                digest: artifact.digest,
                size: artifact.size,
                path,
                mode: install.mode.to_string(),
                staging_dir,
                present: false,
            })
        })
        .collect()
}

/// Returns whether the bundle carries a k0s binary for `architecture`.
pub fn has_k0s_for(bundle: &VerifiedBundle, architecture: &str) -> bool {
    let platform = Platform {
        os: "linux".into(),
        architecture: architecture.to_string(),
        variant: None,
    };
    bundle
        .artifacts_for_platform(&platform)
        .any(|artifact| artifact.kind == ArtifactKind::K0sBinary)
}
