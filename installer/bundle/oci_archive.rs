//! OCI archives of chosen images: what `apply` streams to `<data-dir>/images/` on workers, where
//! k0s imports every archive it finds into containerd.
//!
//! An archive is a tar of an OCI image layout that contains only the chosen images. index.json names
//! each image twice: `io.containerd.image.name`, which containerd's importer uses as the image
//! name, and `org.opencontainers.image.ref.name`, which skopeo and other OCI tools address it by.
//! The bytes depend only on the set of images: images are sorted by reference, blobs by digest,
//! and owners, modes and times are fixed. So the digest of the archive a host already has can be
//! compared with [`VerifiedBundle::oci_archive_digest`] without writing anything.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};

use super::layout::tar_header;
use super::manifest::{Blob, blob_path};
use super::oci::{ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME, ImageIndex, OCI_LAYOUT_CONTENT};
use super::verified::{Image, ReadError, VerifiedBundle};
use super::{BLOBS_DIR, INDEX_FILE, OCI_LAYOUT_FILE};
use crate::digest::{Digest, HashingWriter};

/// The size and digest of an OCI archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OciArchiveSummary {
    pub digest: Digest,
    pub size: u64,
}

/// An OCI archive that cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum OciArchiveError {
    #[error("an OCI archive needs at least one image")]
    NoImages,
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("cannot write the OCI archive")]
    Write { source: io::Error },
}

impl VerifiedBundle {
    /// Writes a tar of an OCI image layout holding `images` into `output`, and returns its size
    /// and digest. Every blob is checked against its verified digest as it is copied. A mismatch
    /// is reported after some bytes were written, so the caller must discard them.
    pub fn write_oci_archive(
        &self,
        images: &[&Image],
        output: impl Write,
    ) -> Result<OciArchiveSummary, OciArchiveError> {
        if images.is_empty() {
            return Err(OciArchiveError::NoImages);
        }
        let write_error = |source| OciArchiveError::Write { source };
        let mut sorted: Vec<&Image> = images.to_vec();
        sorted.sort_by(|a, b| a.reference.cmp(&b.reference));
        sorted.dedup_by(|a, b| a.reference == b.reference);

        let mut manifests = Vec::new();
        let mut blobs = BTreeSet::new();
        for image in &sorted {
            let mut descriptor = image.descriptor.clone();
            descriptor.annotations = BTreeMap::from([
                (
                    ANNOTATION_CONTAINERD_NAME.to_string(),
                    image.reference.clone(),
                ),
                (ANNOTATION_REF_NAME.to_string(), image.reference.clone()),
            ]);
            manifests.push(descriptor);
            blobs.extend(image.blobs());
        }
        let index = serde_json::to_vec(&ImageIndex::new(manifests))
            .expect("an image index always serialises");

        let mut tar = tar::Builder::new(HashingWriter::new(output));
        append_bytes(&mut tar, OCI_LAYOUT_FILE, OCI_LAYOUT_CONTENT.as_bytes())
            .map_err(write_error)?;
        append_bytes(&mut tar, INDEX_FILE, &index).map_err(write_error)?;
        for directory in ["blobs/".to_string(), format!("{BLOBS_DIR}/")] {
            let mut header = tar_header(tar::EntryType::Directory, 0o755, 0);
            header.set_path(directory).map_err(write_error)?;
            header.set_cksum();
            tar.append(&header, io::empty()).map_err(write_error)?;
        }
        let unique: BTreeMap<Digest, Blob> =
            blobs.into_iter().map(|blob| (blob.digest, blob)).collect();
        for blob in unique.values() {
            let mut header = tar_header(tar::EntryType::Regular, 0o644, blob.size);
            header
                .set_path(blob_path(&blob.digest))
                .map_err(write_error)?;
            header.set_cksum();
            let reader = self.open_blob(&blob.digest)?;
            tar.append(&header, reader).map_err(write_error)?;
        }

        let (_, digest, size) = tar.into_inner().map_err(write_error)?.finish();
        Ok(OciArchiveSummary { digest, size })
    }

    /// Computes the size and digest [`Self::write_oci_archive`] would produce, without writing.
    pub fn oci_archive_digest(
        &self,
        images: &[&Image],
    ) -> Result<OciArchiveSummary, OciArchiveError> {
        self.write_oci_archive(images, io::sink())
    }
}

fn append_bytes<W: Write>(tar: &mut tar::Builder<W>, path: &str, content: &[u8]) -> io::Result<()> {
    let mut header = tar_header(tar::EntryType::Regular, 0o644, content.len() as u64);
    header.set_path(path)?;
    header.set_cksum();
    tar.append(&header, content)
}
