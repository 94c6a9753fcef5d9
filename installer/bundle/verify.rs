//! Opening a bundle, verifying it, and reading the artifacts of a verified bundle.
//!
//! [`Bundle::verify`] checks, in this order: the signature over `bundle.yaml` against the trust
//! policy; that the bundle contains exactly the files `bundle.yaml` lists, with no links or special
//! files; every file's size and sha256; and that `index.json` and the image manifests agree with
//! `bundle.yaml`. Only then does it return a [`VerifiedBundle`], the one type that hands out
//! artifacts, so installing code cannot skip verification.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use rayon::prelude::*;

use super::archive::{PartError, PartSet, read_archive};
use super::keys::{self, SignatureError, Signer, TrustPolicy};
use super::layout::{self, EntryKind, EntryProblem};
use super::manifest::{
    Artifact, ArtifactKind, Blob, BundleManifest, MAX_MANIFEST_SIZE, ManifestError, blob_path,
};
use super::oci::{self, ImageIndex, ImageManifest, MAX_MANIFEST_JSON};
use super::verified::{BlobStore, Image, VerifiedBundle};
use super::{INDEX_FILE, MANIFEST_FILE, SIGNATURE_FILE};
use crate::digest::{Digest, Hasher, STREAM_BUFFER};
use crate::ui::Ui;

/// A bundle that failed verification, or could not be read.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("bundle {path} not found")]
    NotFound { path: PathBuf },
    #[error("cannot read {path}")]
    Io { path: String, source: io::Error },
    #[error("{path} is not a bundle: it has no {MANIFEST_FILE}")]
    NoManifest { path: String },
    #[error("{path} is larger than the {limit} bytes airlock reads")]
    TooLarge { path: String, limit: u64 },
    #[error("invalid {path}")]
    Manifest { path: String, source: ManifestError },
    #[error("signature check of {path} failed")]
    Signature {
        path: String,
        source: SignatureError,
    },
    #[error("{path}: digest mismatch: bundle.yaml lists {expected}, the file has {computed}")]
    DigestMismatch {
        path: String,
        expected: Digest,
        computed: Digest,
    },
    #[error("{path}: size mismatch: bundle.yaml lists {expected} bytes, the file has {actual}")]
    SizeMismatch {
        path: String,
        expected: u64,
        actual: u64,
    },
    #[error("{path} is missing: bundle.yaml lists it with digest {digest}")]
    Missing { path: String, digest: Digest },
    #[error("{path} is not listed in bundle.yaml")]
    Unlisted { path: String },
    #[error("{path}: {problem}")]
    BadEntry { path: String, problem: EntryProblem },
    #[error(
        "{path} is {actual} bytes, larger than the {declared} bytes bundle.yaml declares for it"
    )]
    OversizedEntry {
        path: String,
        declared: u64,
        actual: u64,
    },
    #[error("{path} appears twice in the archive")]
    DuplicateEntry { path: String },
    #[error("{archive}: the first entry is {found:?}; a packed bundle starts with {MANIFEST_FILE}")]
    ManifestNotFirst { archive: PathBuf, found: String },
    #[error("{archive} is truncated or corrupt: {reason}")]
    Corrupt { archive: PathBuf, reason: String },
    #[error(
        "{archive}: bundle.yaml has digest {computed}, but the part header names bundle {expected}"
    )]
    ForeignManifest {
        archive: PathBuf,
        expected: Digest,
        computed: Digest,
    },
    #[error(transparent)]
    Part(#[from] PartError),
    #[error("{path}: {reason}")]
    Layout { path: String, reason: String },
}

/// A bundle opened for reading: a directory, or an archive whose parts have been checked.
#[derive(Debug)]
pub enum Bundle {
    Directory(PathBuf),
    Archive(Box<PartSet>),
}

/// The result of `inspect`: the manifest and the signing key id, both unverified.
#[derive(Clone, Debug)]
pub struct BundleInspection {
    pub manifest: BundleManifest,
    pub digest: Digest,
    /// The key id in the signature file, not checked; `None` when the bundle is unsigned.
    pub signature_key_id: Option<keys::KeyId>,
}

impl Bundle {
    /// Opens a bundle directory, a `.tar.zst`, or the first part of a split archive. For an
    /// archive every part is found and its header and size checked; nothing is decompressed.
    pub fn open(path: &Path) -> Result<Bundle, VerifyError> {
        let metadata = fs::metadata(path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => VerifyError::NotFound { path: path.into() },
            _ => VerifyError::Io {
                path: path.display().to_string(),
                source,
            },
        })?;
        if metadata.is_dir() {
            Ok(Bundle::Directory(path.into()))
        } else {
            Ok(Bundle::Archive(Box::new(PartSet::open(path)?)))
        }
    }

    pub fn path(&self) -> &Path {
        match self {
            Bundle::Directory(path) => path,
            Bundle::Archive(parts) => &parts.path,
        }
    }

    /// Reads bundle.yaml and the signature's key id without verifying anything. For archives only
    /// the first two entries are decompressed.
    pub fn inspect(&self) -> Result<BundleInspection, VerifyError> {
        let (manifest_bytes, signature) = match self {
            Bundle::Directory(dir) => read_head(dir)?,
            Bundle::Archive(parts) => super::archive::read_head(parts)?,
        };
        let manifest = parse_manifest(&manifest_bytes, self.path())?;
        let signature_key_id = match signature {
            Some(signature) => Some(keys::signature_key_id(&signature).map_err(|source| {
                VerifyError::Signature {
                    path: self.path().join(SIGNATURE_FILE).display().to_string(),
                    source,
                }
            })?),
            None => None,
        };
        Ok(BundleInspection {
            manifest,
            digest: Digest::of_bytes(&manifest_bytes),
            signature_key_id,
        })
    }

    /// Verifies the bundle against `policy`: signature first, then every byte.
    pub fn verify(&self, policy: &TrustPolicy, ui: &Ui) -> Result<VerifiedBundle, VerifyError> {
        let verified = match self {
            Bundle::Directory(dir) => verify_directory(dir, policy, ui)?,
            Bundle::Archive(parts) => {
                let outcome = read_archive(parts, policy, None, ui)?;
                VerifiedBundle::from_parts(
                    outcome.manifest,
                    outcome.digest,
                    outcome.signer,
                    outcome.images,
                    BlobStore::Archive(Box::new(outcome.store)),
                    parts.path.clone(),
                )
            }
        };
        tracing::info!(
            bundle = %verified.manifest().name,
            version = verified.manifest().version,
            digest = %verified.digest(),
            signer = %verified.signer(),
            "bundle verified"
        );
        Ok(verified)
    }
}

/// Parses bundle.yaml, naming the bundle in errors.
pub(crate) fn parse_manifest(bytes: &[u8], bundle: &Path) -> Result<BundleManifest, VerifyError> {
    BundleManifest::parse(bytes).map_err(|source| VerifyError::Manifest {
        path: bundle.join(MANIFEST_FILE).display().to_string(),
        source,
    })
}

/// Checks the signature, logging a warning for an accepted bundle that is not signed by a
/// trusted key.
pub(crate) fn check_signature(
    bundle: &Path,
    manifest_bytes: &[u8],
    signature: Option<&[u8]>,
    manifest: &BundleManifest,
    policy: &TrustPolicy,
) -> Result<Signer, VerifyError> {
    let signer = keys::check_signature(
        manifest_bytes,
        signature,
        policy,
        (&manifest.name, manifest.version),
    )
    .map_err(|source| VerifyError::Signature {
        path: bundle.join(SIGNATURE_FILE).display().to_string(),
        source,
    })?;
    match &signer {
        Signer::Trusted { .. } => {}
        Signer::Unsigned => {
            tracing::warn!(bundle = %bundle.display(), "accepting an unsigned bundle")
        }
        Signer::Unchecked { key_id } => tracing::warn!(
            bundle = %bundle.display(),
            key = %key_id,
            "accepting a bundle without checking its signature: no trusted key was given"
        ),
    }
    Ok(signer)
}

/// Reads bundle.yaml and the signature of a bundle directory.
pub(crate) fn read_head(dir: &Path) -> Result<(Vec<u8>, Option<Vec<u8>>), VerifyError> {
    let manifest_path = dir.join(MANIFEST_FILE);
    let manifest = match read_bounded(&manifest_path, MAX_MANIFEST_SIZE) {
        Err(VerifyError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Err(VerifyError::NoManifest {
                path: dir.display().to_string(),
            });
        }
        other => other?,
    };
    let signature = match read_bounded(&dir.join(SIGNATURE_FILE), keys::MAX_KEY_FILE) {
        Ok(signature) => Some(signature),
        Err(VerifyError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => None,
        Err(error) => return Err(error),
    };
    Ok((manifest, signature))
}

/// Reads a small file whole, refusing one larger than `limit` and anything but a regular file.
fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, VerifyError> {
    let display = || path.display().to_string();
    let metadata = fs::symlink_metadata(path).map_err(|source| VerifyError::Io {
        path: display(),
        source,
    })?;
    if !metadata.is_file() {
        let problem = match layout::check_file_type(metadata.file_type(), path, "") {
            Err(problem) => problem,
            Ok(_) => EntryProblem::UnexpectedDirectory,
        };
        return Err(VerifyError::BadEntry {
            path: display(),
            problem,
        });
    }
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|file| file.take(limit + 1).read_to_end(&mut bytes))
        .map_err(|source| VerifyError::Io {
            path: display(),
            source,
        })?;
    if bytes.len() as u64 > limit {
        return Err(VerifyError::TooLarge {
            path: display(),
            limit,
        });
    }
    Ok(bytes)
}

fn verify_directory(
    dir: &Path,
    policy: &TrustPolicy,
    ui: &Ui,
) -> Result<VerifiedBundle, VerifyError> {
    let (manifest_bytes, signature) = read_head(dir)?;
    let manifest = parse_manifest(&manifest_bytes, dir)?;
    let signer = check_signature(
        dir,
        &manifest_bytes,
        signature.as_deref(),
        &manifest,
        policy,
    )?;

    let expected = manifest.expected_files();
    check_directory_entries(dir, &expected)?;

    // index.json and the image manifests are small; checking them first lets progress count
    // each layer under its image.
    let mut documents = HashMap::new();
    for path in document_paths(&manifest) {
        let blob = expected[&path];
        let bytes = read_bounded(&dir.join(&path), MAX_MANIFEST_JSON)?;
        let computed = Digest::of_bytes(&bytes);
        if computed != blob.digest {
            let path = dir.join(&path).display().to_string();
            return Err(VerifyError::DigestMismatch {
                path,
                expected: blob.digest,
                computed,
            });
        }
        documents.insert(path, bytes);
    }
    let images = check_images(dir, &manifest, &documents)?;
    hash_directory_files(dir, &manifest, &images, &expected, ui)?;

    let digest = Digest::of_bytes(&manifest_bytes);
    Ok(VerifiedBundle::from_parts(
        manifest,
        digest,
        signer,
        images,
        BlobStore::Directory(dir.into()),
        dir.into(),
    ))
}

/// Walks the directory: every entry must be a listed file or one of the bundle's directories,
/// and every listed file must exist.
pub(crate) fn check_directory_entries(
    dir: &Path,
    expected: &BTreeMap<String, Blob>,
) -> Result<(), VerifyError> {
    let mut seen = 0usize;
    for entry in walkdir::WalkDir::new(dir)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name()
    {
        let entry = entry.map_err(|error| VerifyError::Io {
            path: error.path().unwrap_or(dir).display().to_string(),
            source: error.into(),
        })?;
        let full_path = entry.path();
        let relative = full_path
            .strip_prefix(dir)
            .expect("walkdir yields paths under its root");
        let display = || full_path.display().to_string();
        let Some(relative) = relative.to_str() else {
            return Err(VerifyError::BadEntry {
                path: display(),
                problem: EntryProblem::NotUtf8,
            });
        };
        let kind =
            layout::check_file_type(entry.file_type(), full_path, relative).map_err(|problem| {
                VerifyError::BadEntry {
                    path: display(),
                    problem,
                }
            })?;
        if kind == EntryKind::Directory || layout::is_manifest_or_signature(relative) {
            continue;
        }
        if !expected.contains_key(relative) {
            return Err(VerifyError::Unlisted { path: display() });
        }
        seen += 1;
    }
    if seen != expected.len() {
        for (path, blob) in expected {
            if fs::symlink_metadata(dir.join(path)).is_err() {
                return Err(VerifyError::Missing {
                    path: dir.join(path).display().to_string(),
                    digest: blob.digest,
                });
            }
        }
    }
    Ok(())
}

/// Hashes every listed file on all cores, largest first so that the last big file does not run
/// alone. Progress shows one item per artifact; blobs of no artifact count under "layout".
fn hash_directory_files(
    dir: &Path,
    manifest: &BundleManifest,
    images: &[Image],
    expected: &BTreeMap<String, Blob>,
    ui: &Ui,
) -> Result<(), VerifyError> {
    let groups = ProgressGroups::new(manifest, images, expected, ui);
    let mut files: Vec<(&String, &Blob)> = expected.iter().collect();
    files.sort_by(|a, b| b.1.size.cmp(&a.1.size).then_with(|| a.0.cmp(b.0)));

    // par_bridge hands out files in this order to whichever thread is free, so the schedule stays
    // largest-first. Splitting the list in halves, as par_iter does, gives one thread all the
    // large files.
    let mut results: Vec<(&String, Result<(), VerifyError>)> = files
        .iter()
        .par_bridge()
        .map(|(relative, blob)| {
            let path = dir.join(relative);
            let result = hash_file_against(&path, blob, |bytes| groups.advance(relative, bytes));
            groups.file_done(relative, result.is_ok());
            (*relative, result)
        })
        .collect();
    groups.finish();
    // Report the first failure in path order, whichever thread found it.
    results.sort_by(|a, b| a.0.cmp(b.0));
    results.into_iter().try_for_each(|(_, result)| result)
}

/// Hashes a file, reading at most one byte more than the size bundle.yaml lists.
fn hash_file_against(
    path: &Path,
    blob: &Blob,
    mut progress: impl FnMut(u64),
) -> Result<(), VerifyError> {
    let display = || path.display().to_string();
    let io_error = |source| VerifyError::Io {
        path: display(),
        source,
    };
    let file = File::open(path).map_err(io_error)?;
    let actual = file.metadata().map_err(io_error)?.len();
    if actual != blob.size {
        return Err(VerifyError::SizeMismatch {
            path: display(),
            expected: blob.size,
            actual,
        });
    }

    thread_local! {
        static BUFFER: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; STREAM_BUFFER]);
    }
    let mut hasher = Hasher::new();
    let mut reader = file.take(blob.size + 1);
    BUFFER.with_borrow_mut(|buffer| {
        loop {
            match reader.read(buffer) {
                Ok(0) => return Ok(()),
                Ok(read) => {
                    hasher.update(&buffer[..read]);
                    progress(read as u64);
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(io_error(error)),
            }
        }
    })?;
    if hasher.len() != blob.size {
        return Err(VerifyError::SizeMismatch {
            path: display(),
            expected: blob.size,
            actual: hasher.len(),
        });
    }
    let computed = hasher.finish();
    if computed != blob.digest {
        return Err(VerifyError::DigestMismatch {
            path: display(),
            expected: blob.digest,
            computed,
        });
    }
    Ok(())
}

/// Returns the paths of the JSON documents verification parses: index.json and each image
/// manifest.
pub(crate) fn document_paths(manifest: &BundleManifest) -> Vec<String> {
    let images = manifest
        .artifacts
        .iter()
        .filter(|artifact| artifact.kind == ArtifactKind::Image);
    std::iter::once(INDEX_FILE.to_string())
        .chain(images.map(|image| blob_path(&image.digest)))
        .collect()
}

/// Checks that index.json lists exactly the image artifacts of bundle.yaml, under their refs,
/// and that every blob an image manifest refers to is listed with the same size.
pub(crate) fn check_images(
    bundle: &Path,
    manifest: &BundleManifest,
    documents: &HashMap<String, Vec<u8>>,
) -> Result<Vec<Image>, VerifyError> {
    let index_path = bundle.join(INDEX_FILE).display().to_string();
    let layout_error = |path: &str, reason: String| VerifyError::Layout {
        path: path.to_string(),
        reason,
    };
    let index: ImageIndex = serde_json::from_slice(&documents[INDEX_FILE])
        .map_err(|error| layout_error(&index_path, error.to_string()))?;
    let blob_sizes = manifest.blob_sizes();

    let image_artifacts: Vec<&Artifact> = manifest
        .artifacts
        .iter()
        .filter(|artifact| artifact.kind == ArtifactKind::Image)
        .collect();
    if index.manifests.len() != image_artifacts.len() {
        return Err(layout_error(
            &index_path,
            format!(
                "it lists {} manifests, bundle.yaml {} images",
                index.manifests.len(),
                image_artifacts.len()
            ),
        ));
    }

    let mut images = Vec::new();
    for (descriptor, artifact) in index.manifests.iter().zip(image_artifacts) {
        let reference = artifact.reference.as_deref().unwrap_or_default();
        let annotated = descriptor
            .annotations
            .get(oci::ANNOTATION_REF_NAME)
            .map(String::as_str);
        if descriptor.digest != artifact.digest
            || descriptor.size != artifact.size
            || annotated != Some(reference)
        {
            return Err(layout_error(
                &index_path,
                format!(
                    "its entry {} ({:?}) does not match image {reference} ({})",
                    descriptor.digest, annotated, artifact.digest
                ),
            ));
        }
        let manifest_path = blob_path(&artifact.digest);
        let image_manifest: ImageManifest = serde_json::from_slice(&documents[&manifest_path])
            .map_err(|error| {
                layout_error(&manifest_path, format!("invalid image manifest: {error}"))
            })?;
        for blob in image_manifest.blobs() {
            if blob_sizes.get(&blob.digest) != Some(&blob.size) {
                return Err(layout_error(
                    &manifest_path,
                    format!(
                        "image {reference} refers to blob {} of {} bytes, which bundle.yaml does not list",
                        blob.digest, blob.size
                    ),
                ));
            }
        }
        images.push(Image {
            reference: reference.to_string(),
            stack: artifact.stack.clone(),
            platform: artifact.platform.clone(),
            descriptor: descriptor.clone(),
            manifest: image_manifest,
        });
    }
    Ok(images)
}

/// One progress item per artifact, advanced by the bytes of the files that belong to it.
struct ProgressGroups {
    groups: Vec<ProgressGroup>,
    group_of: HashMap<String, usize>,
}

struct ProgressGroup {
    item: crate::ui::Item,
    /// Files of the group not hashed yet.
    remaining: AtomicUsize,
    failed: AtomicBool,
}

impl ProgressGroups {
    /// Groups files by artifact: an image's manifest, config and layers count under the image
    /// (a shared layer under the first image), and files of no artifact under "layout files".
    fn new(
        manifest: &BundleManifest,
        images: &[Image],
        files: &BTreeMap<String, Blob>,
        ui: &Ui,
    ) -> Self {
        let mut names: Vec<String> = Vec::new();
        let mut group_of = HashMap::new();
        let mut add = |path: String, name: &str, names: &mut Vec<String>| {
            if files.contains_key(&path) && !group_of.contains_key(&path) {
                let index = names.iter().position(|n| n == name).unwrap_or_else(|| {
                    names.push(name.to_string());
                    names.len() - 1
                });
                group_of.insert(path, index);
            }
        };
        let image_blobs: HashMap<Digest, Vec<Blob>> = images
            .iter()
            .map(|image| (image.digest(), image.blobs()))
            .collect();
        for artifact in &manifest.artifacts {
            add(blob_path(&artifact.digest), &artifact.name, &mut names);
            for blob in image_blobs.get(&artifact.digest).into_iter().flatten() {
                add(blob_path(&blob.digest), &artifact.name, &mut names);
            }
        }
        for path in files.keys() {
            add(path.clone(), "layout files", &mut names);
        }

        let mut totals = vec![(0u64, 0usize); names.len()];
        for (path, index) in &group_of {
            totals[*index].0 += files[path].size;
            totals[*index].1 += 1;
        }
        let groups = names
            .iter()
            .zip(totals)
            .map(|(name, (bytes, count))| {
                let item = ui.item(name, Some(bytes));
                item.set_state("verifying");
                ProgressGroup {
                    item,
                    remaining: AtomicUsize::new(count),
                    failed: AtomicBool::new(false),
                }
            })
            .collect();
        ProgressGroups { groups, group_of }
    }

    fn advance(&self, path: &str, bytes: u64) {
        if let Some(&index) = self.group_of.get(path) {
            self.groups[index].item.inc(bytes);
        }
    }

    fn file_done(&self, path: &str, ok: bool) {
        if let Some(&index) = self.group_of.get(path) {
            let group = &self.groups[index];
            group.remaining.fetch_sub(1, Ordering::Relaxed);
            if !ok {
                group.failed.store(true, Ordering::Relaxed);
            }
        }
    }

    fn finish(self) {
        for group in self.groups {
            if group.failed.load(Ordering::Relaxed) {
                group.item.fail("mismatch");
            } else if group.remaining.load(Ordering::Relaxed) > 0 {
                group.item.fail("not checked");
            } else {
                group.item.finish("verified");
            }
        }
    }
}
