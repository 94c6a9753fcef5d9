//! A verified bundle: the only way installing code reads artifacts, so it cannot skip
//! verification. Blob readers check every byte again as they hand it out.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::archive::ArchiveStore;
use super::keys::Signer;
use super::manifest::{Artifact, ArtifactKind, Blob, BundleManifest, Platform, blob_path};
use super::oci::{Descriptor, ImageManifest};
use crate::digest::{Digest, Hasher};

/// A blob of a verified bundle that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("bundle {bundle} has no blob {digest}")]
    UnknownBlob { bundle: String, digest: Digest },
    #[error("cannot read blob {digest} of bundle {bundle}")]
    Io {
        bundle: String,
        digest: Digest,
        source: io::Error,
    },
}

/// The source of a verified bundle's blobs.
pub(crate) enum BlobStore {
    Directory(PathBuf),
    Archive(Box<ArchiveStore>),
}

/// A container image of a verified bundle.
#[derive(Clone, Debug)]
pub struct Image {
    pub reference: String,
    pub stack: Option<String>,
    pub platform: Option<Platform>,
    /// The descriptor of the image manifest, as index.json lists it.
    pub descriptor: Descriptor,
    pub manifest: ImageManifest,
}

impl Image {
    /// Returns the digest of the image manifest.
    pub fn digest(&self) -> Digest {
        self.descriptor.digest
    }

    /// Returns the manifest, config and layer blobs.
    pub fn blobs(&self) -> Vec<Blob> {
        let manifest = Blob {
            digest: self.descriptor.digest,
            size: self.descriptor.size,
        };
        std::iter::once(manifest)
            .chain(self.manifest.blobs().map(|d| Blob {
                digest: d.digest,
                size: d.size,
            }))
            .collect()
    }
}

/// A bundle whose signature and every byte have been checked.
pub struct VerifiedBundle {
    manifest: BundleManifest,
    digest: Digest,
    signer: Signer,
    images: Vec<Image>,
    blob_sizes: HashMap<Digest, u64>,
    store: BlobStore,
    path: PathBuf,
}

impl VerifiedBundle {
    pub(crate) fn from_parts(
        manifest: BundleManifest,
        digest: Digest,
        signer: Signer,
        images: Vec<Image>,
        store: BlobStore,
        path: PathBuf,
    ) -> VerifiedBundle {
        let blob_sizes = manifest.blob_sizes();
        VerifiedBundle {
            manifest,
            digest,
            signer,
            images,
            blob_sizes,
            store,
            path,
        }
    }

    /// Returns the parsed bundle.yaml.
    pub fn manifest(&self) -> &BundleManifest {
        &self.manifest
    }

    /// Returns the bundle's digest: the sha256 of bundle.yaml.
    pub fn digest(&self) -> Digest {
        self.digest
    }

    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// Returns the directory or archive the bundle was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn artifacts(&self) -> &[Artifact] {
        &self.manifest.artifacts
    }

    pub fn artifact(&self, name: &str) -> Option<&Artifact> {
        self.manifest
            .artifacts
            .iter()
            .find(|artifact| artifact.name == name)
    }

    pub fn artifacts_of_kind<'a>(
        &'a self,
        kind: &'a ArtifactKind,
    ) -> impl Iterator<Item = &'a Artifact> {
        self.artifacts()
            .iter()
            .filter(move |artifact| &artifact.kind == kind)
    }

    /// Returns the artifacts of a stack, or with `None` those that belong to no stack.
    pub fn artifacts_in_stack<'a>(
        &'a self,
        stack: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Artifact> {
        self.artifacts()
            .iter()
            .filter(move |artifact| artifact.stack.as_deref() == stack)
    }

    /// Returns the artifacts a host of `platform` needs: those for that platform and those for
    /// any platform.
    pub fn artifacts_for_platform<'a>(
        &'a self,
        platform: &'a Platform,
    ) -> impl Iterator<Item = &'a Artifact> {
        self.artifacts()
            .iter()
            .filter(move |artifact| artifact.platform.as_ref().is_none_or(|p| p == platform))
    }

    /// Returns the container images, in index.json order.
    pub fn images(&self) -> &[Image] {
        &self.images
    }

    pub fn images_in_stack<'a>(&'a self, stack: &'a str) -> impl Iterator<Item = &'a Image> {
        self.images
            .iter()
            .filter(move |image| image.stack.as_deref() == Some(stack))
    }

    /// Opens a blob for reading. The reader re-hashes what it returns and fails at the end if the
    /// bytes differ from the verified digest (for example because the file changed since
    /// verification), so a consumer must not commit the data before reading to the end.
    pub fn open_blob(&self, digest: &Digest) -> Result<BlobReader, ReadError> {
        let bundle = || self.path.display().to_string();
        let Some(&size) = self.blob_sizes.get(digest) else {
            return Err(ReadError::UnknownBlob {
                bundle: bundle(),
                digest: *digest,
            });
        };
        let io_error = |source| ReadError::Io {
            bundle: bundle(),
            digest: *digest,
            source,
        };
        let inner: Box<dyn Read + Send> = match &self.store {
            BlobStore::Directory(dir) => {
                Box::new(File::open(dir.join(blob_path(digest))).map_err(io_error)?)
            }
            BlobStore::Archive(store) => store.open_blob(digest).map_err(io_error)?,
        };
        Ok(BlobReader::new(
            inner,
            Blob {
                digest: *digest,
                size,
            },
        ))
    }

    /// Opens a blob for a consumer that checks the digest itself, such as an upload that the
    /// host hashes and compares with the signed digest before it keeps the file. Reading stops at
    /// the verified size. [`Self::check_blob`] checks afterwards whether the file still matches.
    pub fn open_blob_unchecked(&self, digest: &Digest) -> Result<Box<dyn Read + Send>, ReadError> {
        Ok(self.open_blob(digest)?.inner)
    }

    /// Reads a blob to the end and fails if it no longer matches its verified digest.
    pub fn check_blob(&self, digest: &Digest) -> Result<(), ReadError> {
        let mut reader = self.open_blob(digest)?;
        io::copy(&mut reader, &mut io::sink()).map_err(|source| ReadError::Io {
            bundle: self.path.display().to_string(),
            digest: *digest,
            source,
        })?;
        Ok(())
    }

    /// Opens an artifact's blob; see [`Self::open_blob`].
    pub fn open_artifact(&self, artifact: &Artifact) -> Result<BlobReader, ReadError> {
        self.open_blob(&artifact.digest)
    }

    /// Returns the size of a blob, if the bundle has it.
    pub fn blob_size(&self, digest: &Digest) -> Option<u64> {
        self.blob_sizes.get(digest).copied()
    }
}

/// A blob's bytes, checked against the verified size and digest while they are read.
pub struct BlobReader {
    inner: Box<dyn Read + Send>,
    expected: Blob,
    hasher: Hasher,
    checked: bool,
}

impl BlobReader {
    fn new(inner: Box<dyn Read + Send>, expected: Blob) -> BlobReader {
        BlobReader {
            inner: Box::new(inner.take(expected.size)),
            expected,
            hasher: Hasher::new(),
            checked: false,
        }
    }

    pub fn size(&self) -> u64 {
        self.expected.size
    }

    pub fn digest(&self) -> Digest {
        self.expected.digest
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.checked || buf.is_empty() {
            return Ok(0);
        }
        let read = self.inner.read(buf)?;
        if read > 0 {
            self.hasher.update(&buf[..read]);
            return Ok(read);
        }
        self.checked = true;
        let hashed = std::mem::take(&mut self.hasher);
        let length = hashed.len();
        let computed = hashed.finish();
        if length != self.expected.size || computed != self.expected.digest {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "blob {} changed since verification: read {length} bytes with digest {computed}, expected {} bytes",
                    self.expected.digest, self.expected.size
                ),
            ));
        }
        Ok(0)
    }
}
