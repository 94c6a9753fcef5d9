//! The images inside an image archive of the bundle, read from the archive's `index.json`, so
//! that the blueprint and the SBOM list them and the compliance matrix can tell bundle images
//! from others.

use std::io::Read;

use crate::bundle::oci::{
    ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME, ImageIndex, MAX_MANIFEST_JSON,
};
use crate::bundle::{Artifact, ReadError, VerifiedBundle};

use super::record::ImageRecord;

/// An image archive whose images cannot be listed.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("cannot read the image archive {name}")]
    Tar {
        name: String,
        source: std::io::Error,
    },
    #[error("the image archive {name} has no index.json")]
    NoIndex { name: String },
    #[error("the index.json of image archive {name} is invalid: {reason}")]
    Index { name: String, reason: String },
}

/// Lists the images of an image archive (a tar of an OCI image layout): each manifest of its
/// `index.json` that names an image through containerd's or the OCI ref-name annotation.
// NOTE: a Docker-format archive (`manifest.json` with `RepoTags`, no `index.json`) is reported as
// having no index, so its images count as foreign in the compliance matrix.
pub fn archive_images(
    bundle: &VerifiedBundle,
    artifact: &Artifact,
) -> Result<Vec<ImageRecord>, ArchiveError> {
    let tar_error = |source| ArchiveError::Tar {
        name: artifact.name.clone(),
        source,
    };
    let reader = bundle.open_artifact(artifact)?;
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(tar_error)? {
        let entry = entry.map_err(tar_error)?;
        let path = entry.path().map_err(tar_error)?.into_owned();
        if path.to_str().map(|p| p.trim_start_matches("./")) != Some("index.json") {
            continue;
        }
        let mut text = Vec::new();
        entry
            .take(MAX_MANIFEST_JSON)
            .read_to_end(&mut text)
            .map_err(tar_error)?;
        let index: ImageIndex =
            serde_json::from_slice(&text).map_err(|error| ArchiveError::Index {
                name: artifact.name.clone(),
                reason: error.to_string(),
            })?;
        let mut images: Vec<ImageRecord> = index
            .manifests
            .iter()
            .filter_map(|descriptor| {
                let reference = descriptor
                    .annotations
                    .get(ANNOTATION_CONTAINERD_NAME)
                    .or_else(|| descriptor.annotations.get(ANNOTATION_REF_NAME))?;
                Some(ImageRecord {
                    reference: reference.clone(),
                    digest: descriptor.digest,
                })
            })
            .collect();
        images.sort();
        images.dedup();
        return Ok(images);
    }
    Err(ArchiveError::NoIndex {
        name: artifact.name.clone(),
    })
}
