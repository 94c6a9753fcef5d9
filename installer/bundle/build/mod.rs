//! `bundle build`: turning a specification into a bundle directory, from local files and OCI
//! layouts and from the network (URLs, Helm repositories and registries, see [`fetch`]).
//!
//! Every blob is written to a temporary name in `blobs/sha256/`, hashed on the way, and renamed
//! to its digest only when it matches what pins it. `bundle.yaml` is written last, atomically, so
//! a directory with a bundle.yaml is complete. A failed build leaves no bundle.yaml, but keeps the
//! blobs it completed and its partial downloads, so that running it again continues where it
//! stopped. Digests of downloads that the specification does not pin go to its lock file.
//!
//! [`fetch`]: crate::bundle::fetch

mod local;
mod output;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use rayon::prelude::*;

pub(crate) use output::{BlobDir, StoreError, check_blob_file};

use self::output::OutputDir;
use super::fetch::{self, FetchError, Fetcher, ImageRequest, NetworkOptions};
use super::lock::{Lock, LockError};
use super::manifest::{
    Artifact, ArtifactKind, Blob, BundleManifest, FORMAT_VERSION, FileMode, HostSelector,
    InstallTarget, K0sRelease, LayoutFiles, Stack,
};
use super::oci::{self, Descriptor, ImageIndex};
use super::sign::write_atomically;
use super::spec::{ArtifactSpec, BundleSpec, SpecError};
use super::{INDEX_FILE, MANIFEST_FILE, OCI_LAYOUT_FILE};
use crate::digest::Digest;
use crate::ui::Ui;

/// A bundle that cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("invalid bundle: {reason}")]
    InvalidBundle { reason: String },
    #[error("output directory {path} contains {entry}, which is not part of a bundle")]
    OutputNotBundle { path: PathBuf, entry: String },
    #[error("cannot write {path}")]
    Write { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Fetch(Box<FetchError>),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("--frozen builds only pinned sources, but neither the specification nor {lock} pins: {}", .sources.join("; "))]
    Unpinned { sources: Vec<String>, lock: PathBuf },
    #[error("artifact {artifact}: cannot read {path}")]
    SourceUnreadable {
        artifact: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("artifact {artifact}: {path} is not a regular file")]
    SourceNotFile { artifact: String, path: PathBuf },
    #[error(
        "artifact {artifact}: {path} has digest {computed}, but the specification pins {expected}"
    )]
    DigestMismatch {
        artifact: String,
        path: PathBuf,
        expected: Digest,
        computed: Digest,
    },
    #[error("image {image}: OCI layout {layout} has no image with ref {reference:?} (it has: {})", .available.join(", "))]
    ImageNotFound {
        image: String,
        layout: PathBuf,
        reference: String,
        available: Vec<String>,
    },
    #[error("image {image}: no manifest for platform {platform} in {layout} (it has: {})", .available.join(", "))]
    PlatformNotFound {
        image: String,
        layout: PathBuf,
        platform: String,
        available: Vec<String>,
    },
    #[error("image {image}: invalid OCI layout {layout}: {reason}")]
    InvalidLayout {
        image: String,
        layout: PathBuf,
        reason: String,
    },
    #[error("image {image}: blob {path} has digest {computed}, but the layout names it {expected}")]
    LayoutBlobMismatch {
        image: String,
        path: PathBuf,
        expected: Digest,
        computed: Digest,
    },
    #[error(
        "artifact {artifact}: kind {kind} has no default install path; set `install` in the specification"
    )]
    NoInstallPath { artifact: String, kind: String },
}

impl From<FetchError> for BuildError {
    fn from(error: FetchError) -> Self {
        BuildError::Fetch(Box::new(error))
    }
}

/// How to build: the network settings and whether only pinned sources are allowed.
#[derive(Debug, Default)]
pub struct BuildOptions {
    pub network: NetworkOptions,
    /// Fail before downloading anything if a downloaded source is pinned neither by the
    /// specification nor by its lock file, and never write the lock file.
    pub frozen: bool,
}

/// The result of a build.
#[derive(Clone, Debug)]
pub struct BuildSummary {
    pub manifest: BundleManifest,
    /// The sha256 of the bundle.yaml written.
    pub digest: Digest,
    pub directory: PathBuf,
    pub transfer: TransferSummary,
    /// The lock file, when this build wrote it.
    pub lock_written: Option<PathBuf>,
}

/// What a build moved: local files and OCI-layout images it copied, blobs it downloaded, and
/// blobs it found in the output directory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransferSummary {
    pub copied_files: u64,
    pub copied_images: u64,
    /// Bytes of the copied files and of the image blobs copied.
    pub copied_bytes: u64,
    /// Bytes received from the network, not counting `continued_bytes`.
    pub downloaded_bytes: u64,
    pub downloaded_blobs: u64,
    /// Bytes of partial downloads, left in the output directory by an earlier build, that the
    /// downloads continued.
    pub continued_bytes: u64,
    pub reused_bytes: u64,
    pub reused_blobs: u64,
}

/// Builds the bundle that the specification at `spec_path` describes into `output`: a missing or
/// empty directory, or the output of an earlier build, whose blobs are reused.
pub fn build(
    spec_path: &Path,
    output: &Path,
    options: BuildOptions,
    ui: &Ui,
) -> Result<BuildSummary, BuildError> {
    let spec = BundleSpec::load(spec_path)?;
    let base = spec_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let lock_path = BundleSpec::lock_path(spec_path);
    let lock = Lock::load(&lock_path)?;
    if options.frozen {
        let sources = fetch::unpinned_sources(&spec, &lock);
        if !sources.is_empty() {
            return Err(BuildError::Unpinned {
                sources,
                lock: lock_path,
            });
        }
    }
    let output_dir = OutputDir::prepare(output)?;

    let mut builder = Builder {
        spec: &spec,
        base,
        output: &output_dir,
        ui,
        blobs: BTreeMap::new(),
    };
    let (manifest, new_lock) = builder.run(&lock, &lock_path, options.network)?;
    manifest
        .validate()
        .map_err(|reason| BuildError::InvalidBundle { reason })?;
    output_dir.remove_unlisted(&builder.blobs)?;
    let lock_written = match new_lock {
        Some(new_lock) if !options.frozen => new_lock
            .write_if_changed(&lock_path)?
            .then(|| lock_path.clone()),
        _ => None,
    };
    if let Some(path) = &lock_written {
        tracing::info!(lock = %path.display(), "recorded the digests of unpinned downloads");
    }
    let yaml = manifest.to_yaml();
    let manifest_path = output.join(MANIFEST_FILE);
    write_atomically(&manifest_path, yaml.as_bytes()).map_err(|source| BuildError::Write {
        path: manifest_path,
        source,
    })?;

    let counters = &output_dir.blobs.counters;
    let transfer = TransferSummary {
        copied_files: counters.copied_files.load(Ordering::Relaxed),
        copied_images: counters.copied_images.load(Ordering::Relaxed),
        copied_bytes: counters.copied_bytes.load(Ordering::Relaxed),
        downloaded_bytes: counters.downloaded_bytes.load(Ordering::Relaxed),
        downloaded_blobs: counters.downloaded_blobs.load(Ordering::Relaxed),
        continued_bytes: counters.continued_bytes.load(Ordering::Relaxed),
        reused_bytes: counters.reused_bytes.load(Ordering::Relaxed),
        reused_blobs: counters.reused_blobs.load(Ordering::Relaxed),
    };
    let digest = Digest::of_bytes(yaml.as_bytes());
    tracing::info!(bundle = %manifest.name, version = manifest.version, %digest, directory = %output.display(), "bundle built");
    Ok(BuildSummary {
        manifest,
        digest,
        directory: output.into(),
        transfer,
        lock_written,
    })
}

struct Builder<'a> {
    spec: &'a BundleSpec,
    base: &'a Path,
    output: &'a OutputDir,
    ui: &'a Ui,
    /// Every blob of the bundle so far.
    blobs: BTreeMap<Digest, u64>,
}

/// A file artifact whose source has been checked, ready to copy.
struct PlannedFile<'a> {
    spec: &'a ArtifactSpec,
    path: PathBuf,
    size: u64,
}

impl Builder<'_> {
    /// Copies and downloads every artifact, then writes the layout files. Returns the manifest
    /// and, when the build downloaded anything, the new lock.
    fn run(
        &mut self,
        lock: &Lock,
        lock_path: &Path,
        network: NetworkOptions,
    ) -> Result<(BundleManifest, Option<Lock>), BuildError> {
        let spec = self.spec;
        let stack_artifacts = spec.stacks.iter().flat_map(|stack| {
            stack
                .artifacts
                .iter()
                .map(move |a| (a, Some(stack.name.as_str())))
        });
        let all_files: Vec<(&ArtifactSpec, Option<&str>)> = spec
            .artifacts
            .iter()
            .map(|artifact| (artifact, None))
            .chain(stack_artifacts)
            .collect();
        let all_images: Vec<_> = spec
            .stacks
            .iter()
            .flat_map(|stack| {
                stack
                    .images
                    .iter()
                    .map(move |image| (image, stack.name.as_str()))
            })
            .collect();

        // 1. Check every local source before copying anything, so a typo fails in a second.
        let planned: Vec<PlannedFile> = all_files
            .iter()
            .filter(|(artifact, _)| !artifact.source.is_remote())
            .map(|&(artifact, _)| self.plan_file(artifact))
            .collect::<Result<_, _>>()?;

        // 2. Download what comes from the network, in parallel.
        let remote_files: Vec<&ArtifactSpec> = all_files
            .iter()
            .map(|(artifact, _)| *artifact)
            .filter(|artifact| artifact.source.is_remote())
            .collect();
        let remote_images: Vec<ImageRequest> = all_images
            .iter()
            .filter(|(image, _)| image.source.is_remote())
            .map(|(image, _)| ImageRequest {
                spec: image,
                platform: image
                    .platform
                    .clone()
                    .unwrap_or_else(|| spec.default_platform()),
            })
            .collect();
        let any_remote = !remote_files.is_empty() || !remote_images.is_empty();
        let fetched = if any_remote {
            let fetcher =
                Fetcher::new(spec, lock, lock_path, &self.output.blobs, network, self.ui)?;
            Some(block_on(fetcher.fetch(remote_files, remote_images))?)
        } else {
            None
        };
        let (mut fetched_files, mut fetched_images, new_lock) = match fetched {
            Some(fetched) => (
                fetched.files.into_iter(),
                fetched.images.into_iter(),
                Some(fetched.lock),
            ),
            None => (Vec::new().into_iter(), Vec::new().into_iter(), None),
        };

        // 3. Copy the local files on all cores.
        let copied: Vec<Result<Blob, BuildError>> = planned
            .par_iter()
            .map(|file| {
                let item = self.ui.item(&file.spec.name, Some(file.size));
                item.set_state("copying");
                let result = self.copy_file(file, &item);
                match &result {
                    Ok(_) => item.finish("copied"),
                    Err(_) => item.abandon(),
                }
                result
            })
            .collect();
        let mut copied = planned.iter().zip(copied);

        // 4. The artifacts in the specification's order.
        let mut artifacts = Vec::new();
        for (artifact, stack) in &all_files {
            let (file_name, blob) = if artifact.source.is_remote() {
                let file = fetched_files
                    .next()
                    .expect("one fetched file per remote artifact");
                (file.file_name, file.blob)
            } else {
                let (planned, blob) = copied.next().expect("one copy per local artifact");
                let file_name = planned
                    .path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or(&artifact.name)
                    .to_string();
                (file_name, blob?)
            };
            self.blobs.insert(blob.digest, blob.size);
            artifacts.push(self.file_artifact(artifact, *stack, &file_name, blob)?);
        }

        // 5. The images, sharing blobs between them.
        let mut descriptors = Vec::new();
        for (image, stack) in &all_images {
            let (artifact, descriptor) = if image.source.is_remote() {
                let fetched = fetched_images
                    .next()
                    .expect("one fetched image per remote image");
                for blob in &fetched.blobs {
                    self.blobs.insert(blob.digest, blob.size);
                }
                image_entries(image, stack, fetched.descriptor, fetched.platform)
            } else {
                self.copy_image(image, stack)?
            };
            artifacts.push(artifact);
            descriptors.push(descriptor);
        }

        // 6. The layout files, then the manifest that lists everything.
        let index = serde_json::to_vec_pretty(&ImageIndex::new(descriptors))
            .expect("an image index always serialises");
        let output = self.output.path();
        let layout = LayoutFiles {
            oci_layout: write_layout_file(
                output,
                OCI_LAYOUT_FILE,
                oci::OCI_LAYOUT_CONTENT.as_bytes(),
            )?,
            index: write_layout_file(output, INDEX_FILE, &index)?,
        };
        let manifest = BundleManifest {
            format_version: FORMAT_VERSION,
            name: spec.name.clone(),
            version: spec.version,
            k0s: K0sRelease {
                version: spec.k0s.version.clone(),
            },
            stacks: spec
                .stacks
                .iter()
                .map(|s| Stack {
                    name: s.name.clone(),
                    version: s.version.clone(),
                })
                .collect(),
            artifacts,
            layout,
            blobs: self
                .blobs
                .iter()
                .map(|(&digest, &size)| Blob { digest, size })
                .collect(),
        };
        Ok((manifest, new_lock))
    }

    fn file_artifact(
        &self,
        spec: &ArtifactSpec,
        stack: Option<&str>,
        file_name: &str,
        blob: Blob,
    ) -> Result<Artifact, BuildError> {
        let platform = match (&spec.platform, &spec.kind) {
            (Some(platform), _) => Some(platform.clone()),
            (None, ArtifactKind::K0sBinary | ArtifactKind::ImageArchive) => {
                Some(self.spec.default_platform())
            }
            (None, _) => None,
        };
        let install = match &spec.install {
            Some(install) => Some(install.clone()),
            None => Some(default_install(spec, stack, file_name)?),
        };
        Ok(Artifact {
            name: spec.name.clone(),
            kind: spec.kind.clone(),
            media_type: spec
                .media_type
                .clone()
                .unwrap_or_else(|| spec.kind.default_media_type().to_string()),
            digest: blob.digest,
            size: blob.size,
            platform,
            stack: stack.map(str::to_string),
            reference: None,
            install,
        })
    }
}

/// Returns the install target a kind gets when the specification sets none.
fn default_install(
    spec: &ArtifactSpec,
    stack: Option<&str>,
    file_name: &str,
) -> Result<InstallTarget, BuildError> {
    let (path, mode, hosts) = match &spec.kind {
        ArtifactKind::K0sBinary => ("/usr/local/bin/k0s".to_string(), 0o755, HostSelector::All),
        ArtifactKind::ImageArchive => (
            format!("<data-dir>/images/{file_name}"),
            0o644,
            HostSelector::Workloads,
        ),
        ArtifactKind::Chart => (
            format!("<data-dir>/airlock/charts/{file_name}"),
            0o644,
            HostSelector::Controllers,
        ),
        ArtifactKind::Manifest => {
            let stack = stack.unwrap_or("airlock");
            (
                format!("<data-dir>/manifests/{stack}/{file_name}"),
                0o644,
                HostSelector::Controllers,
            )
        }
        ArtifactKind::Image | ArtifactKind::Other(_) => {
            return Err(BuildError::NoInstallPath {
                artifact: spec.name.clone(),
                kind: spec.kind.to_string(),
            });
        }
    };
    let path = path.parse().map_err(|_| BuildError::NoInstallPath {
        artifact: spec.name.clone(),
        kind: spec.kind.to_string(),
    })?;
    Ok(InstallTarget {
        path,
        mode: FileMode(mode),
        hosts,
    })
}

fn write_layout_file(output: &Path, name: &str, content: &[u8]) -> Result<Blob, BuildError> {
    let path = output.join(name);
    write_atomically(&path, content).map_err(|source| BuildError::Write { path, source })?;
    Ok(Blob {
        digest: Digest::of_bytes(content),
        size: content.len() as u64,
    })
}

/// Returns the bundle.yaml entry and the index.json descriptor of an image whose manifest
/// descriptor carries its resolved platform.
fn image_entries(
    image: &super::spec::ImageSpec,
    stack: &str,
    descriptor: Descriptor,
    platform: super::manifest::Platform,
) -> (Artifact, Descriptor) {
    let artifact = Artifact {
        name: image.reference.clone(),
        kind: ArtifactKind::Image,
        media_type: descriptor.media_type.clone(),
        digest: descriptor.digest,
        size: descriptor.size,
        platform: Some(platform),
        stack: Some(stack.to_string()),
        reference: Some(image.reference.clone()),
        install: None,
    };
    let mut descriptor = descriptor;
    descriptor.annotations = BTreeMap::from([(
        oci::ANNOTATION_REF_NAME.to_string(),
        image.reference.clone(),
    )]);
    (artifact, descriptor)
}

/// Runs `future` to completion from synchronous code: on the current tokio runtime when there is
/// one (the CLI calls `build` on a blocking thread of its runtime), else on a new one.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle.block_on(future),
        Err(_) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime starts")
            .block_on(future),
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::bundle::BLOBS_DIR;
    use crate::bundle::manifest::Platform;

    #[test]
    fn build_writes_every_blob_and_lists_it() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("k0s"), b"#!/bin/sh\necho k0s\n").unwrap();
        fs::write(dir.path().join("app.yaml"), b"kind: ConfigMap\n").unwrap();
        fs::write(
            dir.path().join("spec.yaml"),
            "name: t\nversion: 1\nk0s: { version: v1.35.3+k0s.0 }\nartifacts:\n  - { name: k0s, kind: k0s-binary, source: { file: k0s } }\nstacks:\n  - name: app\n    version: 1.0.0\n    artifacts:\n      - { name: app, kind: manifest, source: { file: app.yaml } }\n",
        )
        .unwrap();
        let output = dir.path().join("out");
        let summary = build(
            &dir.path().join("spec.yaml"),
            &output,
            BuildOptions::default(),
            &Ui::hidden(),
        )
        .unwrap();

        let manifest = &summary.manifest;
        assert_eq!(manifest.artifacts.len(), 2);
        assert_eq!(
            manifest.artifacts[1]
                .install
                .as_ref()
                .unwrap()
                .path
                .as_str(),
            "<data-dir>/manifests/app/app.yaml"
        );
        assert_eq!(
            manifest.artifacts[0].platform,
            Some(Platform::linux_amd64())
        );
        for digest in manifest.blobs.iter().map(|blob| blob.digest) {
            assert!(output.join(BLOBS_DIR).join(digest.hex()).is_file());
        }
        let leftovers: Vec<_> = fs::read_dir(output.join(BLOBS_DIR))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with('.')
            })
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    }

    #[test]
    fn failed_build_leaves_no_manifest() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("k0s"), b"k0s").unwrap();
        fs::write(
            dir.path().join("spec.yaml"),
            "name: t\nversion: 1\nk0s: { version: v1 }\nartifacts:\n  - { name: k0s, kind: k0s-binary, digest: 'sha256:0000000000000000000000000000000000000000000000000000000000000000', source: { file: k0s } }\n",
        )
        .unwrap();
        let output = dir.path().join("out");
        let error = build(
            &dir.path().join("spec.yaml"),
            &output,
            BuildOptions::default(),
            &Ui::hidden(),
        )
        .unwrap_err();
        assert!(
            matches!(error, BuildError::DigestMismatch { .. }),
            "{error}"
        );
        assert!(!output.join(MANIFEST_FILE).exists());
        // The content that does not match its pin never gets a blob name.
        assert_eq!(fs::read_dir(output.join(BLOBS_DIR)).unwrap().count(), 0);
    }
}
