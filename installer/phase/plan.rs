//! The files each host needs, decided once from the bundle and the host's role and facts.

use std::path::PathBuf;
use std::sync::Arc;

use crate::blueprint::record::FileModeRecord;
use crate::bundle::{ArtifactKind, HostSelector, Image, Platform, VerifiedBundle};
use crate::config::Role;
use crate::digest::Digest;
use crate::remote::{FileState, ModeMismatch, split_owner};
use crate::stacks::{Rendered, Stack};

/// Where the bytes of a planned file come from.
#[derive(Clone, Debug)]
pub enum FileSource {
    /// A blob of the verified bundle.
    Blob(Digest),
    /// Bytes airlock produced, such as a rendered manifest.
    Bytes(Arc<Vec<u8>>),
    /// An OCI archive of these bundle images (by reference), written while it uploads.
    ImageArchive(Arc<Vec<String>>),
    /// A local file that the cluster file's `files[]` names.
    Local(PathBuf),
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
    /// Where the file moves once its node or stack is upgraded; `None` when `path` is final.
    /// An upgrade stages the new k0s binary and new manifests beside the running ones.
    pub final_path: Option<String>,
    /// The owner as `chown` takes it; `None` leaves root.
    pub owner: Option<String>,
    /// The mode in octal for the file's directory when the upload creates it.
    pub dir_mode: Option<String>,
    /// The difference between the host's copy and `mode` and `owner`, for a file whose bytes are
    /// in place.
    pub mode_mismatch: Option<ModeMismatch>,
}

impl PlannedFile {
    /// Returns the mode and owner the file has once placed, as the blueprint records them.
    pub fn placed_mode(&self) -> FileModeRecord {
        let (user, group) = self.owner.as_deref().map(split_owner).unwrap_or_default();
        FileModeRecord {
            // Bundle modes and `perm` are octal already; this only pads them to four digits.
            mode: u32::from_str_radix(&self.mode, 8)
                .map_or_else(|_| self.mode.clone(), |mode| format!("{mode:04o}")),
            user: user.map(str::to_string),
            group: group.map(str::to_string),
        }
    }

    /// Compares the host's copy with the planned digest, mode and owner, and sets `present` and
    /// `mode_mismatch`.
    pub fn compare_with(&mut self, state: Option<&FileState>) {
        self.present = state.is_some_and(|state| state.digest == self.digest);
        self.mode_mismatch = match state {
            Some(state) if self.present => {
                let planned = self.placed_mode();
                state.mode_mismatch(
                    &planned.mode,
                    planned.user.as_deref(),
                    planned.group.as_deref(),
                )
            }
            _ => None,
        };
    }
}

/// The directory under the data directory where airlock keeps its own state on a host.
pub fn airlock_dir(data_dir: &str) -> String {
    format!("{}/airlock", data_dir.trim_end_matches('/'))
}

/// The staging directory for uploads into folders that k0s watches.
pub fn staging_dir(data_dir: &str) -> String {
    format!("{}/staging", airlock_dir(data_dir))
}

/// Returns the staging directory for a file that goes into a directory k0s watches
/// (`images/` or `manifests/` under the data directory), or `None` for any other path.
pub fn watched_staging_dir(path: &str, data_dir: &str) -> Option<String> {
    let data_dir = data_dir.trim_end_matches('/');
    let watched = [
        format!("{data_dir}/images/"),
        format!("{data_dir}/manifests/"),
    ];
    watched
        .iter()
        .any(|dir| path.starts_with(dir))
        .then(|| staging_dir(data_dir))
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
    bundle
        .artifacts_for_platform(&platform)
        .filter_map(|artifact| {
            let install = artifact.install.as_ref()?;
            // A stack's charts and manifests go where its rendered objects name them.
            let stack_file = matches!(artifact.kind, ArtifactKind::Chart | ArtifactKind::Manifest)
                && artifact.stack.is_some();
            if stack_file || !wanted(install.hosts, role) {
                return None;
            }
            let path = if artifact.kind == ArtifactKind::K0sBinary {
                k0s_install_path.to_string()
            } else {
                install.path.resolve(data_dir)
            };
            let staging_dir = watched_staging_dir(&path, data_dir);
            Some(PlannedFile {
                name: artifact.name.clone(),
                source: FileSource::Blob(artifact.digest),
                digest: artifact.digest,
                size: artifact.size,
                path,
                mode: install.mode.to_string(),
                staging_dir,
                present: false,
                final_path: None,
                owner: None,
                dir_mode: None,
                mode_mismatch: None,
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

/// Plans the files of the rendered stacks for one host: manifests and chart archives on
/// controllers, each stack's image archive and the stacks' host files on workload hosts.
pub fn stack_files(
    bundle: &VerifiedBundle,
    rendered: &Rendered,
    archives: &[StackArchive],
    role: Role,
    data_dir: &str,
    hostname: &str,
) -> Result<Vec<PlannedFile>, PlanError> {
    let data_dir = data_dir.trim_end_matches('/');
    let staging = staging_dir(data_dir);
    let mut files = Vec::new();
    if role.is_controller() {
        for stack in &rendered.stacks {
            for file in &stack.files {
                files.push(PlannedFile {
                    name: file.path.clone(),
                    digest: file.digest,
                    size: file.bytes.len() as u64,
                    source: FileSource::Bytes(Arc::new(file.bytes.clone())),
                    path: format!("{data_dir}/manifests/{}", file.path),
                    mode: "0644".to_string(),
                    staging_dir: Some(staging.clone()),
                    present: false,
                    final_path: None,
                    owner: None,
                    dir_mode: None,
                    mode_mismatch: None,
                });
            }
            for chart in &stack.charts {
                let artifact = bundle
                    .artifacts_of_kind(&ArtifactKind::Chart)
                    .find(|artifact| {
                        super::render_stacks::chart_archive_name(artifact) == chart.archive
                    })
                    .ok_or_else(|| PlanError::MissingChart(chart.archive.clone()))?;
                files.push(PlannedFile {
                    name: chart.archive.clone(),
                    digest: artifact.digest,
                    size: artifact.size,
                    source: FileSource::Blob(artifact.digest),
                    path: chart.path.clone(),
                    mode: "0644".to_string(),
                    staging_dir: None,
                    present: false,
                    final_path: None,
                    owner: None,
                    dir_mode: None,
                    mode_mismatch: None,
                });
            }
        }
    }
    if role.runs_workloads() {
        for archive in archives {
            files.push(PlannedFile {
                name: archive.file_name.clone(),
                digest: archive.digest,
                size: archive.size,
                source: FileSource::ImageArchive(archive.references.clone()),
                path: format!("{data_dir}/images/{}", archive.file_name),
                mode: "0644".to_string(),
                staging_dir: Some(staging.clone()),
                present: false,
                final_path: None,
                owner: None,
                dir_mode: None,
                mode_mismatch: None,
            });
        }
    }
    if let Some(plan) = rendered.host(hostname) {
        for file in &plan.files {
            files.push(PlannedFile {
                name: file.reason.clone(),
                digest: file.digest,
                size: file.bytes.len() as u64,
                source: FileSource::Bytes(Arc::new(file.bytes.clone())),
                path: file.path.clone(),
                mode: format!("{:04o}", file.mode),
                staging_dir: None,
                present: false,
                final_path: None,
                owner: None,
                dir_mode: None,
                mode_mismatch: None,
            });
        }
    }
    Ok(files)
}

/// One stack's image archive: the images it carries and the archive's size and digest.
#[derive(Clone, Debug)]
pub struct StackArchive {
    pub stack: Stack,
    pub file_name: String,
    pub references: Arc<Vec<String>>,
    pub size: u64,
    pub digest: Digest,
}

/// Works out the image archive of every rendered stack that has images. Computing the digest
/// reads every blob of those images once.
pub fn stack_archives(
    bundle: &VerifiedBundle,
    rendered: &Rendered,
) -> Result<Vec<StackArchive>, PlanError> {
    let mut archives = Vec::new();
    for stack in &rendered.stacks {
        if stack.images.is_empty() {
            continue;
        }
        let references: Vec<String> = stack
            .images
            .iter()
            .map(|image| image.reference.clone())
            .collect();
        let images = bundle_images(bundle, &references)?;
        let summary = bundle
            .oci_archive_digest(&images)
            .map_err(|e| PlanError::Archive(stack.stack, e.to_string()))?;
        let version = bundle
            .manifest()
            .stacks
            .iter()
            .find(|s| s.name == stack.stack.name())
            .map_or_else(|| "unversioned".to_string(), |s| s.version.clone());
        archives.push(StackArchive {
            stack: stack.stack,
            file_name: format!("airlock-{}-{version}.tar", stack.stack),
            references: Arc::new(references),
            size: summary.size,
            digest: summary.digest,
        });
    }
    Ok(archives)
}

/// Finds the bundle images with these references.
pub fn bundle_images<'a>(
    bundle: &'a VerifiedBundle,
    references: &[String],
) -> Result<Vec<&'a Image>, PlanError> {
    references
        .iter()
        .map(|reference| {
            bundle
                .images()
                .iter()
                .find(|image| image.reference == *reference)
                .ok_or_else(|| PlanError::MissingImage(reference.clone()))
        })
        .collect()
}

/// A stack file that cannot be planned.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("the bundle has no chart archive {0}, which a stack's Chart object names")]
    MissingChart(String),
    #[error("the bundle has no image {0}, which a stack needs")]
    MissingImage(String),
    #[error("cannot build the image archive of the {0} stack: {1}")]
    Archive(Stack, String),
}

/// Where an upgrade stages files that may only replace the running ones later.
pub fn next_dir(data_dir: &str) -> String {
    format!("{}/next", airlock_dir(data_dir))
}
