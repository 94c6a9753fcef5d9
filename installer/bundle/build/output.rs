//! The output directory of a build and the blobs in it.
//!
//! A build writes into a directory that is missing, empty, or the output of an earlier build.
//! Blobs of an earlier build are named by their digest, so a build that needs a digest the
//! directory already has re-hashes that file and reuses it instead of copying or downloading it
//! again. Every new blob is written under a temporary name (`.partial-…`) and renamed to its
//! digest only once its content is complete and checked, so no file under a final name is ever
//! half-written. Downloads keep their partial file when they fail, so a build run again continues
//! them.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::BuildError;
use crate::bundle::layout::is_manifest_or_signature;
use crate::bundle::manifest::Blob;
use crate::bundle::sign::temporary_file_beside;
use crate::bundle::{BLOBS_DIR, INDEX_FILE, OCI_LAYOUT_FILE};
use crate::digest::{Digest, HashingWriter, STREAM_BUFFER, hash_file};
use crate::ui::Item;

/// The prefix of every temporary file in the blobs directory.
pub(crate) const PARTIAL_PREFIX: &str = ".partial-";

/// A build's output directory, checked and ready for blobs.
pub(crate) struct OutputDir {
    path: PathBuf,
    pub blobs: BlobDir,
}

impl OutputDir {
    /// Creates the directory, or checks that an existing one holds nothing but the files of a
    /// bundle. The old `bundle.yaml` and its signature are removed first, so that a build stopped
    /// part-way never leaves a directory that looks like a complete bundle.
    pub fn prepare(path: &Path) -> Result<OutputDir, BuildError> {
        let write_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| BuildError::Write { path, source }
        };
        match fs::read_dir(path) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry.map_err(write_error(path))?;
                    check_output_entry(path, &entry)?;
                }
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(BuildError::Write {
                    path: path.into(),
                    source,
                });
            }
        }
        for name in [crate::bundle::MANIFEST_FILE, crate::bundle::SIGNATURE_FILE] {
            let file = path.join(name);
            match fs::remove_file(&file) {
                Ok(()) => {
                    tracing::debug!(file = %file.display(), "removed the file of the previous build")
                }
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(BuildError::Write { path: file, source }),
            }
        }
        let blobs = path.join(BLOBS_DIR);
        fs::create_dir_all(&blobs).map_err(write_error(&blobs))?;
        Ok(OutputDir {
            path: path.into(),
            blobs: BlobDir::new(blobs),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes blobs that the new bundle does not list and leftover temporary files, because
    /// `bundle verify` rejects files that bundle.yaml does not list. Returns how many files were
    /// removed.
    pub fn remove_unlisted(&self, listed: &BTreeMap<Digest, u64>) -> Result<usize, BuildError> {
        let dir = self.blobs.path();
        let write_error = |source| BuildError::Write {
            path: dir.to_path_buf(),
            source,
        };
        let mut removed = 0;
        for entry in fs::read_dir(dir).map_err(write_error)? {
            let entry = entry.map_err(write_error)?;
            let name = entry.file_name();
            let keep = name
                .to_str()
                .and_then(|name| Digest::from_hex(name).ok())
                .is_some_and(|digest| listed.contains_key(&digest));
            if !keep {
                fs::remove_file(entry.path()).map_err(|source| BuildError::Write {
                    path: entry.path(),
                    source,
                })?;
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!(
                files = removed,
                "removed blobs and partial files the new bundle does not list"
            );
        }
        Ok(removed)
    }
}

/// Accepts an entry of an existing output directory only if a build could have written it.
fn check_output_entry(output: &Path, entry: &fs::DirEntry) -> Result<(), BuildError> {
    let name = entry.file_name().to_string_lossy().into_owned();
    let foreign = || BuildError::OutputNotBundle {
        path: output.to_path_buf(),
        entry: name.clone(),
    };
    let file_type = entry.file_type().map_err(|source| BuildError::Write {
        path: entry.path(),
        source,
    })?;
    if file_type.is_file()
        && (is_manifest_or_signature(&name) || name == OCI_LAYOUT_FILE || name == INDEX_FILE)
    {
        return Ok(());
    }
    if !(file_type.is_dir() && name == "blobs") {
        return Err(foreign());
    }
    for inner in fs::read_dir(entry.path()).map_err(|source| BuildError::Write {
        path: entry.path(),
        source,
    })? {
        let inner = inner.map_err(|source| BuildError::Write {
            path: entry.path(),
            source,
        })?;
        if inner.file_name() != "sha256" || !inner.path().is_dir() {
            return Err(BuildError::OutputNotBundle {
                path: output.to_path_buf(),
                entry: format!("blobs/{}", inner.file_name().to_string_lossy()),
            });
        }
        for blob in fs::read_dir(inner.path()).map_err(|source| BuildError::Write {
            path: inner.path(),
            source,
        })? {
            let blob = blob.map_err(|source| BuildError::Write {
                path: inner.path(),
                source,
            })?;
            let blob_name = blob.file_name().to_string_lossy().into_owned();
            let known =
                Digest::from_hex(&blob_name).is_ok() || blob_name.starts_with(PARTIAL_PREFIX);
            if !known || !blob.path().is_file() {
                return Err(BuildError::OutputNotBundle {
                    path: output.to_path_buf(),
                    entry: format!("{BLOBS_DIR}/{blob_name}"),
                });
            }
        }
    }
    Ok(())
}

/// Hashes the blob file at `path` and returns its size if its content has `digest`. A file with
/// other content is removed, so that a download can take its name.
pub(crate) fn check_blob_file(path: &Path, digest: &Digest) -> io::Result<Option<u64>> {
    match hash_file(path) {
        Ok((computed, size)) if computed == *digest => Ok(Some(size)),
        Ok((computed, _)) => {
            tracing::warn!(blob = %path.display(), %computed, "removing a blob whose content does not match its name");
            fs::remove_file(path)?;
            Ok(None)
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

/// Sources a build copied from disk, bytes and blobs it downloaded, and blobs it found in the
/// output directory.
#[derive(Debug, Default)]
pub(crate) struct TransferCounters {
    pub copied_files: AtomicU64,
    pub copied_images: AtomicU64,
    pub copied_bytes: AtomicU64,
    pub downloaded_bytes: AtomicU64,
    pub downloaded_blobs: AtomicU64,
    /// Bytes of partial downloads from an earlier build that downloads continued.
    pub continued_bytes: AtomicU64,
    pub reused_bytes: AtomicU64,
    pub reused_blobs: AtomicU64,
}

impl TransferCounters {
    pub fn add_copied(&self, bytes: u64) {
        self.copied_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn count_copied_file(&self) {
        self.copied_files.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_copied_image(&self) {
        self.copied_images.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add_downloaded(&self, bytes: u64) {
        self.downloaded_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn add_continued(&self, bytes: u64) {
        self.continued_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn add_reused(&self, bytes: u64) {
        self.reused_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn count_downloaded_blob(&self) {
        self.downloaded_blobs.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_reused_blob(&self) {
        self.reused_blobs.fetch_add(1, Ordering::Relaxed);
    }
}

/// The `blobs/sha256` directory of the output.
pub(crate) struct BlobDir {
    dir: PathBuf,
    /// Blobs whose content this build has checked: their size, or `None` when absent.
    checked: Mutex<HashMap<Digest, Option<u64>>>,
    pub counters: TransferCounters,
}

/// A blob that cannot be stored.
pub(crate) enum StoreError {
    Read(io::Error),
    Write(PathBuf, io::Error),
}

impl BlobDir {
    fn new(dir: PathBuf) -> BlobDir {
        BlobDir {
            dir,
            checked: Mutex::new(HashMap::new()),
            counters: TransferCounters::default(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.hex())
    }

    /// Returns the path of the partial download called `key`, which stays the same between runs
    /// so that a later build can continue it.
    pub fn partial_path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{PARTIAL_PREFIX}{key}"))
    }

    /// Returns what an earlier check or store found for `digest`: its size, or `None` when absent.
    pub fn checked(&self, digest: &Digest) -> Option<Option<u64>> {
        self.lock_checked().get(digest).copied()
    }

    /// Records the result of [`check_blob_file`] for `digest`.
    pub fn record_checked(&self, digest: Digest, found: Option<u64>) {
        self.lock_checked().insert(digest, found);
    }

    /// Records that blob `digest` of `size` bytes is now in the directory.
    pub fn mark_present(&self, digest: Digest, size: u64) {
        self.lock_checked().insert(digest, Some(size));
    }

    fn lock_checked(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Option<u64>>> {
        self.checked
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Copies `source` into a temporary file, hashing it on the way, then renames the file to its
    /// digest. With `expected` set, content with another digest is not kept: the returned blob
    /// then names the computed digest, and the caller reports the mismatch. A blob that is
    /// already there is kept and the copy dropped.
    pub fn store(
        &self,
        mut source: impl Read,
        expected: Option<Digest>,
        progress: Option<&Item>,
    ) -> Result<Blob, StoreError> {
        let blobs_dir = &self.dir;
        let write_error = |source| StoreError::Write(blobs_dir.into(), source);
        let temporary =
            temporary_file_beside(&blobs_dir.join("blob"), PARTIAL_PREFIX).map_err(write_error)?;
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
        if expected.is_some_and(|expected| expected != digest) {
            return Ok(Blob { digest, size });
        }
        temporary.as_file().sync_data().map_err(write_error)?;
        let target = self.blob_path(&digest);
        if !target.exists() {
            temporary
                .persist(&target)
                .map_err(|error| StoreError::Write(target.clone(), error.error))?;
        }
        self.mark_present(digest, size);
        Ok(Blob { digest, size })
    }
}
