//! `bundle build`: copying a specification's artifacts into a new bundle directory.
//!
//! Every blob is written to a temporary name in `blobs/sha256/`, hashed on the way, and renamed
//! to its digest. `bundle.yaml` is written last, atomically, so a directory with a bundle.yaml
//! is complete. A failed build removes what it wrote.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::manifest::{
    Artifact, ArtifactKind, Blob, BundleManifest, FORMAT_VERSION, FileMode, HostSelector,
    InstallTarget, K0sRelease, LayoutFiles, Platform, Stack,
};
use super::oci::{
    self, Descriptor, DescriptorPlatform, ImageIndex, ImageManifest, MAX_MANIFEST_JSON,
};
use super::sign::{temporary_file_beside, write_atomically};
use super::spec::{ArtifactSpec, BundleSpec, ImageSpec, OciLayoutSource, Source, SpecError};
use super::{BLOBS_DIR, INDEX_FILE, MANIFEST_FILE, OCI_LAYOUT_FILE};
use crate::digest::{Digest, HashingWriter, STREAM_BUFFER};
use crate::ui::{Item, Ui};

/// A bundle that cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("invalid bundle: {reason}")]
    InvalidBundle { reason: String },
    #[error("output directory {path} is not empty")]
    OutputNotEmpty { path: PathBuf },
    #[error("cannot write {path}")]
    Write { path: PathBuf, source: io::Error },
    #[error(
        "artifact {artifact}: {kind} sources are not supported yet; use a local file or OCI layout"
    )]
    SourceNotSupported {
        artifact: String,
        kind: &'static str,
    },
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

/// The result of a build.
#[derive(Clone, Debug)]
pub struct BuildSummary {
    pub manifest: BundleManifest,
    /// The sha256 of the bundle.yaml written.
    pub digest: Digest,
    pub directory: PathBuf,
}

/// Builds the bundle that the specification at `spec_path` describes into `output`, which must
/// be missing or empty.
pub fn build(spec_path: &Path, output: &Path, ui: &Ui) -> Result<BuildSummary, BuildError> {
    let spec = BundleSpec::load(spec_path)?;
    let base = spec_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut guard = OutputGuard::prepare(output)?;
    let blobs_dir = output.join(BLOBS_DIR);

    let manifest = {
        let mut builder = Builder {
            spec: &spec,
            base,
            blobs_dir: &blobs_dir,
            ui,
            blobs: BTreeMap::new(),
        };
        builder.run(output)?
    };
    manifest
        .validate()
        .map_err(|reason| BuildError::InvalidBundle { reason })?;
    let yaml = manifest.to_yaml();
    let manifest_path = output.join(MANIFEST_FILE);
    write_atomically(&manifest_path, yaml.as_bytes()).map_err(|source| BuildError::Write {
        path: manifest_path,
        source,
    })?;
    guard.disarm();

    let digest = Digest::of_bytes(yaml.as_bytes());
    tracing::info!(bundle = %manifest.name, version = manifest.version, %digest, directory = %output.display(), "bundle built");
    Ok(BuildSummary {
        manifest,
        digest,
        directory: output.into(),
    })
}

/// Removes a half-built output directory unless the build completes.
struct OutputGuard {
    path: PathBuf,
    armed: bool,
}

impl OutputGuard {
    fn prepare(path: &Path) -> Result<OutputGuard, BuildError> {
        match fs::read_dir(path).map(|mut entries| entries.next().is_some()) {
            Ok(true) => return Err(BuildError::OutputNotEmpty { path: path.into() }),
            Ok(false) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(BuildError::Write {
                    path: path.into(),
                    source,
                });
            }
        }
        let blobs = path.join(BLOBS_DIR);
        fs::create_dir_all(&blobs).map_err(|source| BuildError::Write {
            path: blobs,
            source,
        })?;
        Ok(OutputGuard {
            path: path.into(),
            armed: true,
        })
    }

    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for OutputGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // The directory was missing or empty before the build, so everything in it is ours.
        if let Ok(entries) = fs::read_dir(&self.path) {
            for entry in entries.flatten() {
                let _ = fs::remove_dir_all(entry.path()).or_else(|_| fs::remove_file(entry.path()));
            }
        }
    }
}

struct Builder<'a> {
    spec: &'a BundleSpec,
    base: &'a Path,
    blobs_dir: &'a Path,
    ui: &'a Ui,
    blobs: BTreeMap<Digest, u64>,
}

/// A file artifact whose source has been checked, ready to copy.
struct PlannedFile<'a> {
    spec: &'a ArtifactSpec,
    stack: Option<&'a str>,
    path: PathBuf,
    size: u64,
}

impl Builder<'_> {
    fn run(&mut self, output: &Path) -> Result<BundleManifest, BuildError> {
        // 1. Check every file source before copying anything, so a typo fails in a second.
        let stack_artifacts = self.spec.stacks.iter().flat_map(|stack| {
            stack
                .artifacts
                .iter()
                .map(move |a| (a, Some(stack.name.as_str())))
        });
        let planned: Vec<PlannedFile> = self
            .spec
            .artifacts
            .iter()
            .map(|artifact| (artifact, None))
            .chain(stack_artifacts)
            .map(|(artifact, stack)| self.plan_file(artifact, stack))
            .collect::<Result<_, _>>()?;

        // 2. Copy the files on all cores.
        let copied: Vec<Result<Blob, BuildError>> = planned
            .par_iter()
            .map(|file| {
                let item = self.ui.item(&file.spec.name, Some(file.size));
                item.set_state("copying");
                let result = self.copy_file(file, &item);
                match &result {
                    Ok(_) => item.finish("copied"),
                    Err(_) => item.fail("failed"),
                }
                result
            })
            .collect();
        let mut artifacts = Vec::new();
        for (file, blob) in planned.iter().zip(copied) {
            let blob = blob?;
            self.blobs.insert(blob.digest, blob.size);
            artifacts.push(self.file_artifact(file, blob)?);
        }

        // 3. Copy the images, sharing blobs between them.
        let mut descriptors = Vec::new();
        for stack in &self.spec.stacks {
            for image in &stack.images {
                let (artifact, descriptor) = self.copy_image(image, &stack.name)?;
                artifacts.push(artifact);
                descriptors.push(descriptor);
            }
        }

        // 4. The layout files, then the manifest that lists everything.
        let index = serde_json::to_vec_pretty(&ImageIndex::new(descriptors))
            .expect("an image index always serialises");
        let layout = LayoutFiles {
            oci_layout: write_layout_file(
                output,
                OCI_LAYOUT_FILE,
                oci::OCI_LAYOUT_CONTENT.as_bytes(),
            )?,
            index: write_layout_file(output, INDEX_FILE, &index)?,
        };
        Ok(BundleManifest {
            format_version: FORMAT_VERSION,
            name: self.spec.name.clone(),
            version: self.spec.version,
            k0s: K0sRelease {
                version: self.spec.k0s.version.clone(),
            },
            stacks: self
                .spec
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
        })
    }

    fn plan_file<'s>(
        &self,
        artifact: &'s ArtifactSpec,
        stack: Option<&'s str>,
    ) -> Result<PlannedFile<'s>, BuildError> {
        // TODO: download url and chart sources, check them against `digest`, and record new
        // digests in a lock file beside the specification.
        let Source::File(relative) = &artifact.source else {
            return Err(BuildError::SourceNotSupported {
                artifact: artifact.name.clone(),
                kind: artifact.source.kind(),
            });
        };
        let path = self.base.join(relative);
        let metadata = fs::metadata(&path).map_err(|source| BuildError::SourceUnreadable {
            artifact: artifact.name.clone(),
            path: path.clone(),
            source,
        })?;
        if !metadata.is_file() {
            return Err(BuildError::SourceNotFile {
                artifact: artifact.name.clone(),
                path,
            });
        }
        Ok(PlannedFile {
            spec: artifact,
            stack,
            path,
            size: metadata.len(),
        })
    }

    fn copy_file(&self, file: &PlannedFile, item: &Item) -> Result<Blob, BuildError> {
        let name = &file.spec.name;
        let source = File::open(&file.path).map_err(|source| BuildError::SourceUnreadable {
            artifact: name.clone(),
            path: file.path.clone(),
            source,
        })?;
        let blob = store_blob(self.blobs_dir, source, Some(item)).map_err(|error| match error {
            StoreError::Read(source) => BuildError::SourceUnreadable {
                artifact: name.clone(),
                path: file.path.clone(),
                source,
            },
            StoreError::Write(path, source) => BuildError::Write { path, source },
        })?;
        if let Some(expected) = file.spec.digest
            && expected != blob.digest
        {
            return Err(BuildError::DigestMismatch {
                artifact: name.clone(),
                path: file.path.clone(),
                expected,
                computed: blob.digest,
            });
        }
        Ok(blob)
    }

    fn file_artifact(&self, file: &PlannedFile, blob: Blob) -> Result<Artifact, BuildError> {
        let spec = file.spec;
        let platform = match (&spec.platform, &spec.kind) {
            (Some(platform), _) => Some(platform.clone()),
            (None, ArtifactKind::K0sBinary | ArtifactKind::ImageArchive) => {
                Some(self.spec.default_platform())
            }
            (None, _) => None,
        };
        let install = match &spec.install {
            Some(install) => Some(install.clone()),
            None => Some(default_install(spec, file)?),
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
            stack: file.stack.map(str::to_string),
            reference: None,
            install,
        })
    }

    /// Copies an image from a local OCI layout: its manifest (resolved to the platform if the
    /// layout contains an index), its config and its layers, each checked against its descriptor.
    fn copy_image(
        &mut self,
        image: &ImageSpec,
        stack: &str,
    ) -> Result<(Artifact, Descriptor), BuildError> {
        let Source::OciLayout(OciLayoutSource { path, reference }) = &image.source else {
            return Err(BuildError::SourceNotSupported {
                artifact: image.reference.clone(),
                kind: image.source.kind(),
            });
        };
        let layout = SourceLayout {
            image: &image.reference,
            root: self.base.join(path),
        };
        let platform = image
            .platform
            .clone()
            .unwrap_or_else(|| self.spec.default_platform());
        let item = self.ui.item(&image.reference, None);
        item.set_state("copying");

        let index: ImageIndex = layout.parse(
            &layout.read_small(&layout.root.join(INDEX_FILE), None)?,
            INDEX_FILE,
        )?;
        let matching: Vec<&Descriptor> = index
            .manifests
            .iter()
            .filter(|d| {
                d.annotations
                    .get(oci::ANNOTATION_REF_NAME)
                    .is_some_and(|r| r == reference || r == &image.reference)
            })
            .collect();
        let Some(&found) = matching.first() else {
            return Err(BuildError::ImageNotFound {
                image: image.reference.clone(),
                layout: layout.root.clone(),
                reference: reference.clone(),
                available: index
                    .manifests
                    .iter()
                    .filter_map(|d| d.annotations.get(oci::ANNOTATION_REF_NAME).cloned())
                    .collect(),
            });
        };
        let descriptor = layout.resolve_platform(found, &platform)?;
        let manifest_bytes = layout.read_small(
            &layout.blob_path(&descriptor.digest),
            Some(descriptor.digest),
        )?;
        let manifest: ImageManifest = layout.parse(&manifest_bytes, "image manifest")?;
        if let Some(expected) = image.digest
            && expected != descriptor.digest
        {
            return Err(BuildError::DigestMismatch {
                artifact: image.reference.clone(),
                path: layout.blob_path(&descriptor.digest),
                expected,
                computed: descriptor.digest,
            });
        }

        let manifest_blob = store_blob(self.blobs_dir, &manifest_bytes[..], None)
            .map_err(|e| e.into_build(&layout, &descriptor.digest))?;
        self.blobs.insert(manifest_blob.digest, manifest_blob.size);
        for blob in manifest.blobs() {
            if self.blobs.contains_key(&blob.digest) {
                continue;
            }
            let path = layout.blob_path(&blob.digest);
            let source = File::open(&path).map_err(|source| BuildError::SourceUnreadable {
                artifact: image.reference.clone(),
                path: path.clone(),
                source,
            })?;
            let stored = store_blob(self.blobs_dir, source.take(blob.size + 1), Some(&item))
                .map_err(|e| e.into_build(&layout, &blob.digest))?;
            if stored.digest != blob.digest || stored.size != blob.size {
                let _ = fs::remove_file(self.blobs_dir.join(stored.digest.hex()));
                return Err(BuildError::LayoutBlobMismatch {
                    image: image.reference.clone(),
                    path,
                    expected: blob.digest,
                    computed: stored.digest,
                });
            }
            self.blobs.insert(stored.digest, stored.size);
        }
        item.finish("copied");

        let resolved_platform = descriptor
            .platform
            .as_ref()
            .map(|p| Platform {
                os: p.os.clone(),
                architecture: p.architecture.clone(),
                variant: p.variant.clone(),
            })
            .unwrap_or(platform);
        let artifact = Artifact {
            name: image.reference.clone(),
            kind: ArtifactKind::Image,
            media_type: descriptor.media_type.clone(),
            digest: descriptor.digest,
            size: descriptor.size,
            platform: Some(resolved_platform.clone()),
            stack: Some(stack.to_string()),
            reference: Some(image.reference.clone()),
            install: None,
        };
        let bundle_descriptor = Descriptor {
            media_type: descriptor.media_type.clone(),
            digest: descriptor.digest,
            size: descriptor.size,
            platform: Some(DescriptorPlatform {
                os: resolved_platform.os,
                architecture: resolved_platform.architecture,
                variant: resolved_platform.variant,
                other: BTreeMap::new(),
            }),
            annotations: BTreeMap::from([(
                oci::ANNOTATION_REF_NAME.to_string(),
                image.reference.clone(),
            )]),
            other: BTreeMap::new(),
        };
        Ok((artifact, bundle_descriptor))
    }
}

/// Returns the install target a kind gets when the specification sets none.
fn default_install(spec: &ArtifactSpec, file: &PlannedFile) -> Result<InstallTarget, BuildError> {
    let file_name = file
        .path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(&spec.name);
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
            let stack = file.stack.unwrap_or("airlock");
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

/// A local OCI image layout an image is copied from.
struct SourceLayout<'a> {
    image: &'a str,
    root: PathBuf,
}

impl SourceLayout<'_> {
    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join(BLOBS_DIR).join(digest.hex())
    }

    fn invalid(&self, reason: String) -> BuildError {
        BuildError::InvalidLayout {
            image: self.image.to_string(),
            layout: self.root.clone(),
            reason,
        }
    }

    /// Reads a JSON document of at most [`MAX_MANIFEST_JSON`] bytes, checking its digest if given.
    fn read_small(&self, path: &Path, digest: Option<Digest>) -> Result<Vec<u8>, BuildError> {
        let mut bytes = Vec::new();
        File::open(path)
            .and_then(|file| file.take(MAX_MANIFEST_JSON + 1).read_to_end(&mut bytes))
            .map_err(|source| BuildError::SourceUnreadable {
                artifact: self.image.to_string(),
                path: path.into(),
                source,
            })?;
        if bytes.len() as u64 > MAX_MANIFEST_JSON {
            return Err(self.invalid(format!(
                "{} is larger than {MAX_MANIFEST_JSON} bytes",
                path.display()
            )));
        }
        if let Some(expected) = digest {
            let computed = Digest::of_bytes(&bytes);
            if computed != expected {
                return Err(BuildError::LayoutBlobMismatch {
                    image: self.image.to_string(),
                    path: path.into(),
                    expected,
                    computed,
                });
            }
        }
        Ok(bytes)
    }

    fn parse<T: serde::de::DeserializeOwned>(
        &self,
        bytes: &[u8],
        what: &str,
    ) -> Result<T, BuildError> {
        serde_json::from_slice(bytes)
            .map_err(|error| self.invalid(format!("invalid {what}: {error}")))
    }

    /// Follows an index to the manifest for `platform`; a manifest is returned as it is.
    fn resolve_platform(
        &self,
        descriptor: &Descriptor,
        platform: &Platform,
    ) -> Result<Descriptor, BuildError> {
        if oci::is_manifest(&descriptor.media_type) {
            return Ok(descriptor.clone());
        }
        if !oci::is_index(&descriptor.media_type) {
            return Err(self.invalid(format!(
                "unsupported media type {:?}",
                descriptor.media_type
            )));
        }
        let bytes =
            self.read_small(&self.blob_path(&descriptor.digest), Some(descriptor.digest))?;
        let index: ImageIndex = self.parse(&bytes, "image index")?;
        let platforms = |d: &Descriptor| {
            d.platform
                .as_ref()
                .map(|p| format!("{}/{}", p.os, p.architecture))
        };
        let chosen = index.manifests.iter().find(|d| {
            oci::is_manifest(&d.media_type)
                && d.platform.as_ref().is_some_and(|p| p.matches(platform))
        });
        chosen.cloned().ok_or_else(|| BuildError::PlatformNotFound {
            image: self.image.to_string(),
            layout: self.root.clone(),
            platform: platform.to_string(),
            available: index.manifests.iter().filter_map(platforms).collect(),
        })
    }
}

enum StoreError {
    Read(io::Error),
    Write(PathBuf, io::Error),
}

impl StoreError {
    fn into_build(self, layout: &SourceLayout, digest: &Digest) -> BuildError {
        match self {
            StoreError::Read(source) => BuildError::SourceUnreadable {
                artifact: layout.image.to_string(),
                path: layout.blob_path(digest),
                source,
            },
            StoreError::Write(path, source) => BuildError::Write { path, source },
        }
    }
}

/// Copies `source` into a temporary file in `blobs_dir`, hashing it on the way, then renames
/// the file to its digest. A blob that is already there is kept and the copy dropped.
fn store_blob(
    blobs_dir: &Path,
    mut source: impl Read,
    progress: Option<&Item>,
) -> Result<Blob, StoreError> {
    let write_error = |source| StoreError::Write(blobs_dir.into(), source);
    let temporary =
        temporary_file_beside(&blobs_dir.join("blob"), ".partial-").map_err(write_error)?;
    let mut writer = HashingWriter::new(io::BufWriter::with_capacity(STREAM_BUFFER, temporary));
    let mut buffer = vec![0u8; STREAM_BUFFER];
    loop {
        let read = match source.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(StoreError::Read(error)),
        };
        writer.write_all(&buffer[..read]).map_err(write_error)?;
        if let Some(item) = progress {
            item.inc(read as u64);
        }
    }
    let (buffered, digest, size) = writer.finish();
    let temporary = buffered
        .into_inner()
        .map_err(|error| write_error(error.into_error()))?;
    temporary.as_file().sync_data().map_err(write_error)?;
    let target = blobs_dir.join(digest.hex());
    if !target.exists() {
        temporary
            .persist(&target)
            .map_err(|error| StoreError::Write(target.clone(), error.error))?;
    }
    Ok(Blob { digest, size })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let summary = build(&dir.path().join("spec.yaml"), &output, &Ui::hidden()).unwrap();

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
        let error = build(&dir.path().join("spec.yaml"), &output, &Ui::hidden()).unwrap_err();
        assert!(
            matches!(error, BuildError::DigestMismatch { .. }),
            "{error}"
        );
        assert!(!output.join(MANIFEST_FILE).exists());
        assert_eq!(fs::read_dir(&output).unwrap().count(), 0);
    }
}
