//! Sources on disk: local files and images in local OCI image layouts.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use super::output::StoreError;
use super::{BuildError, Builder, PlannedFile};
use crate::bundle::manifest::{Artifact, ArtifactKind, Blob, Platform};
use crate::bundle::oci::{
    self, Descriptor, DescriptorPlatform, ImageIndex, ImageManifest, MAX_MANIFEST_JSON,
};
use crate::bundle::spec::{ArtifactSpec, ImageSpec, OciLayoutSource, Source};
use crate::bundle::{BLOBS_DIR, INDEX_FILE};
use crate::digest::Digest;
use crate::ui::Item;

impl Builder<'_> {
    pub(super) fn plan_file<'s>(
        &self,
        artifact: &'s ArtifactSpec,
    ) -> Result<PlannedFile<'s>, BuildError> {
        let Source::File(relative) = &artifact.source else {
            unreachable!("only file sources are planned as local files");
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
            path,
            size: metadata.len(),
        })
    }

    pub(super) fn copy_file(&self, file: &PlannedFile, item: &Item) -> Result<Blob, BuildError> {
        let name = &file.spec.name;
        let source = File::open(&file.path).map_err(|source| BuildError::SourceUnreadable {
            artifact: name.clone(),
            path: file.path.clone(),
            source,
        })?;
        let blob = self
            .output
            .blobs
            .store(source, file.spec.digest, Some(item))
            .map_err(|error| match error {
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
        let counters = &self.output.blobs.counters;
        counters.add_copied(blob.size);
        counters.count_copied_file();
        Ok(blob)
    }

    /// Copies an image from a local OCI layout: its manifest (resolved to the platform if the
    /// layout contains an index), its config and its layers, each checked against its descriptor.
    pub(super) fn copy_image(
        &mut self,
        image: &ImageSpec,
        stack: &str,
    ) -> Result<(Artifact, Descriptor), BuildError> {
        let Source::OciLayout(OciLayoutSource { path, reference }) = &image.source else {
            unreachable!("only OCI layout sources are copied from disk");
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

        let manifest_blob = self
            .output
            .blobs
            .store(&manifest_bytes[..], None, None)
            .map_err(|e| e.into_build(&layout, &descriptor.digest))?;
        let counters = &self.output.blobs.counters;
        counters.add_copied(manifest_blob.size);
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
            let stored = self
                .output
                .blobs
                .store(source.take(blob.size + 1), Some(blob.digest), Some(&item))
                .map_err(|e| e.into_build(&layout, &blob.digest))?;
            if stored.digest != blob.digest || stored.size != blob.size {
                return Err(BuildError::LayoutBlobMismatch {
                    image: image.reference.clone(),
                    path,
                    expected: blob.digest,
                    computed: stored.digest,
                });
            }
            counters.add_copied(stored.size);
            self.blobs.insert(stored.digest, stored.size);
        }
        counters.count_copied_image();
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
