//! One resumable download into the blobs directory, whatever the protocol.
//!
//! The bytes go to a partial file whose name depends only on what is downloaded, so a download
//! that fails (here, or in an earlier run) continues from the bytes already on disk with a range
//! request. A blocking thread fed by a bounded channel writes and hashes them. The partial file is
//! renamed to its digest only when the download is complete and the digest matches the expected
//! one; a mismatch removes it. Transient failures (connection and TLS errors, timeouts, HTTP 5xx,
//! 408 and 429 responses, a body cut short) are retried with exponential backoff.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::mpsc;

use crate::bundle::build::BlobDir;
use crate::bundle::manifest::Blob;
use crate::digest::{Digest, Hasher, STREAM_BUFFER};
use crate::ui::Item;

/// How many times one download is tried before the build gives up; the partial file is kept.
pub(crate) const MAX_ATTEMPTS: u32 = 5;
/// The wait before the second attempt; it doubles for each further attempt.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// Chunks in flight between the network and the writing thread.
const WRITE_QUEUE: usize = 16;

/// A body being received: where it starts and how long the whole content is, if known.
pub(crate) struct Opened {
    pub stream: BoxStream<'static, io::Result<Bytes>>,
    /// The offset of the first byte of `stream`: the offset asked for, or 0 when the server
    /// ignored the range request.
    pub start: u64,
    /// The size of the whole content, when the server sent it.
    pub total: Option<u64>,
}

/// A failed request for content, sorted by whether a retry can help.
#[derive(Debug)]
pub(crate) enum OpenError<E> {
    /// Worth trying again: the reason is logged and kept for the final error.
    Transient(String),
    /// Trying again cannot help.
    Permanent(E),
}

/// The source of a download's bytes: a URL or a registry blob.
#[async_trait]
pub(crate) trait Origin: Send + Sync {
    type Error: Send;

    /// Requests the content from `offset` on.
    async fn open(&self, offset: u64) -> Result<Opened, OpenError<Self::Error>>;
}

/// What the downloaded content must be, as far as it is known before the download.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Expected {
    pub digest: Option<Digest>,
    pub size: Option<u64>,
}

/// A download that did not produce the expected blob.
#[derive(Debug)]
pub(crate) enum TransferError<E> {
    /// The origin refused the request for good.
    Origin(E),
    /// Every attempt failed with a transient error; the last one is `reason`.
    Exhausted { attempts: u32, reason: String },
    /// The content's digest differs from the expected one; the partial file was removed.
    DigestMismatch { expected: Digest, computed: Digest },
    /// The content is longer or shorter than the expected size; the partial file was removed.
    SizeMismatch { expected: u64, received: u64 },
    /// The partial file or the blob cannot be written.
    Write { path: PathBuf, source: io::Error },
}

/// Downloads `origin` into the blobs directory, continuing the partial file `key` if one is
/// there. Returns the blob once it is stored under its digest.
pub(crate) async fn download<O: Origin>(
    blobs: &BlobDir,
    origin: &O,
    key: &str,
    expected: Expected,
    item: &Item,
) -> Result<Blob, TransferError<O::Error>> {
    let path = blobs.partial_path(key);
    let mut partial = PartialFile::open(path.clone(), expected.size)
        .await
        .map_err(|source| write_error(&path, source))?;
    if partial.len() > 0 {
        tracing::info!(partial = %path.display(), bytes = partial.len(), "continuing a partial download");
        item.set_position(partial.len());
    }

    let mut attempt = 1;
    loop {
        match receive(origin, &mut partial, expected, item, blobs).await {
            Ok(()) => break,
            Err(OpenError::Permanent(error)) => return Err(error),
            Err(OpenError::Transient(reason)) if attempt < MAX_ATTEMPTS => {
                let wait = backoff(attempt);
                tracing::warn!(
                    attempt,
                    received = partial.len(),
                    wait_ms = wait.as_millis() as u64,
                    %reason,
                    "download failed; retrying"
                );
                item.set_state("retrying");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            Err(OpenError::Transient(reason)) => {
                return Err(TransferError::Exhausted {
                    attempts: attempt,
                    reason,
                });
            }
        }
    }
    blobs.counters.add_continued(partial.continued);
    finish(blobs, partial, expected).await
}

/// Receives the rest of the content into `partial`; returns when the stream ends.
async fn receive<O: Origin>(
    origin: &O,
    partial: &mut PartialFile,
    expected: Expected,
    item: &Item,
    blobs: &BlobDir,
) -> Result<(), OpenError<TransferError<O::Error>>> {
    if expected.size.is_some_and(|size| partial.len() == size) {
        return Ok(());
    }
    let opened = match origin.open(partial.len()).await {
        Ok(opened) => opened,
        Err(OpenError::Transient(reason)) => return Err(OpenError::Transient(reason)),
        Err(OpenError::Permanent(error)) => {
            return Err(OpenError::Permanent(TransferError::Origin(error)));
        }
    };
    if opened.start != partial.len() {
        tracing::debug!(
            offset = partial.len(),
            "the server sent the whole content instead of a range; starting over"
        );
        partial
            .truncate()
            .await
            .map_err(|source| OpenError::Permanent(write_error(&partial.path, source)))?;
        item.set_position(0);
    }
    if let (Some(total), Some(size)) = (opened.total, expected.size)
        && total != size
    {
        return Err(OpenError::Permanent(TransferError::SizeMismatch {
            expected: size,
            received: total,
        }));
    }
    if let Some(total) = opened.total {
        item.set_length(total);
    }
    item.set_state("downloading");

    let writer = partial.start_writer();
    let mut stream = opened.stream;
    let mut received = writer.offset;
    let mut failure = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => {
                received += bytes.len() as u64;
                if let Some(size) = expected.size
                    && received > size
                {
                    failure = Some(OpenError::Permanent(TransferError::SizeMismatch {
                        expected: size,
                        received,
                    }));
                    break;
                }
                let length = bytes.len() as u64;
                if !writer.send(bytes).await {
                    break;
                }
                item.inc(length);
                blobs.counters.add_downloaded(length);
            }
            Err(error) => {
                // oci-client checks a complete body's digest itself and reports a mismatch as a
                // stream error. The check after the download reports it with the digests.
                if expected.size != Some(received) {
                    failure = Some(OpenError::Transient(format!(
                        "the connection failed after {received} bytes: {error}"
                    )));
                }
                break;
            }
        }
    }
    *partial = writer
        .close()
        .await
        .map_err(|(path, source)| OpenError::Permanent(write_error(&path, source)))?;
    if let Some(failure) = failure {
        return Err(failure);
    }
    if let Some(total) = opened.total
        && partial.len() < total
    {
        return Err(OpenError::Transient(format!(
            "the server closed the connection after {} of {total} bytes",
            partial.len()
        )));
    }
    Ok(())
}

/// Checks the completed partial file and renames it to its digest.
async fn finish<E>(
    blobs: &BlobDir,
    partial: PartialFile,
    expected: Expected,
) -> Result<Blob, TransferError<E>> {
    let size = partial.len();
    let path = partial.path.clone();
    let computed = partial.hasher.finish();
    let discard = |path: &Path| {
        if let Err(error) = fs::remove_file(path) {
            tracing::warn!(partial = %path.display(), %error, "cannot remove a partial download");
        }
    };
    if let Some(digest) = expected.digest
        && digest != computed
    {
        discard(&path);
        return Err(TransferError::DigestMismatch {
            expected: digest,
            computed,
        });
    }
    if let Some(expected_size) = expected.size
        && expected_size != size
    {
        discard(&path);
        return Err(TransferError::SizeMismatch {
            expected: expected_size,
            received: size,
        });
    }
    let target = blobs.blob_path(&computed);
    let rename = {
        let path = path.clone();
        let target = target.clone();
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            File::open(&path)?.sync_all()?;
            fs::rename(&path, &target)
        })
    };
    rename
        .await
        .map_err(|join| write_error(&target, io::Error::other(join)))?
        .map_err(|source| write_error(&target, source))?;
    blobs.mark_present(computed, size);
    blobs.counters.count_downloaded_blob();
    Ok(Blob {
        digest: computed,
        size,
    })
}

fn write_error<E>(path: &Path, source: io::Error) -> TransferError<E> {
    TransferError::Write {
        path: path.to_path_buf(),
        source,
    }
}

fn backoff(attempt: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1 << (attempt - 1).min(10))
        .min(MAX_BACKOFF)
}

/// A partial download on disk and the hash of its content so far.
struct PartialFile {
    path: PathBuf,
    /// Its length is the file's length.
    hasher: Hasher,
    /// Bytes at the start of the file that an earlier build left, until a download starts over.
    continued: u64,
}

impl PartialFile {
    /// Opens the partial file at `path`, hashing what an earlier attempt or run left there. A file
    /// longer than `max_len` cannot be the start of the content and is emptied.
    async fn open(path: PathBuf, max_len: Option<u64>) -> io::Result<PartialFile> {
        tokio::task::spawn_blocking(move || {
            let mut hasher = Hasher::new();
            match File::open(&path) {
                Ok(mut file) => {
                    let mut buffer = vec![0u8; STREAM_BUFFER];
                    loop {
                        match file.read(&mut buffer) {
                            Ok(0) => break,
                            Ok(read) => hasher.update(&buffer[..read]),
                            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                            Err(error) => return Err(error),
                        }
                    }
                    if max_len.is_some_and(|max| hasher.len() > max) {
                        File::create(&path)?;
                        hasher = Hasher::new();
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::NotFound => {
                    File::create(&path)?;
                }
                Err(error) => return Err(error),
            }
            let continued = hasher.len();
            Ok(PartialFile {
                path,
                hasher,
                continued,
            })
        })
        .await
        .map_err(io::Error::other)?
    }

    fn len(&self) -> u64 {
        self.hasher.len()
    }

    async fn truncate(&mut self) -> io::Result<()> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || File::create(path).map(drop))
            .await
            .map_err(io::Error::other)??;
        self.hasher = Hasher::new();
        self.continued = 0;
        Ok(())
    }

    /// Hands the file to a blocking thread that appends and hashes what [`PartialWriter::send`]
    /// passes it. The file is taken back with [`PartialWriter::close`].
    fn start_writer(&mut self) -> PartialWriter {
        let (sender, mut receiver) = mpsc::channel::<Bytes>(WRITE_QUEUE);
        let path = self.path.clone();
        let mut hasher = std::mem::take(&mut self.hasher);
        let offset = hasher.len();
        let continued = self.continued;
        let handle = tokio::task::spawn_blocking(move || {
            let result = (|| -> io::Result<()> {
                let file = OpenOptions::new().append(true).open(&path)?;
                let mut file = io::BufWriter::with_capacity(STREAM_BUFFER, file);
                while let Some(bytes) = receiver.blocking_recv() {
                    file.write_all(&bytes)?;
                    hasher.update(&bytes);
                }
                file.flush()
            })();
            (
                PartialFile {
                    path,
                    hasher,
                    continued,
                },
                result,
            )
        });
        PartialWriter {
            sender,
            handle,
            offset,
        }
    }
}

/// The writing thread of a partial file.
struct PartialWriter {
    sender: mpsc::Sender<Bytes>,
    handle: tokio::task::JoinHandle<(PartialFile, io::Result<()>)>,
    /// The file's length when the writer started.
    offset: u64,
}

impl PartialWriter {
    /// Queues `bytes`; returns false when the writing thread stopped on an error.
    async fn send(&self, bytes: Bytes) -> bool {
        self.sender.send(bytes).await.is_ok()
    }

    /// Waits until everything queued is written, and returns the file.
    async fn close(self) -> Result<PartialFile, (PathBuf, io::Error)> {
        drop(self.sender);
        let (partial, result) = self
            .handle
            .await
            .map_err(|join| (PathBuf::new(), io::Error::other(join)))?;
        match result {
            Ok(()) => Ok(partial),
            Err(error) => {
                // The hasher may have seen bytes the file did not get; the file is what counts.
                let path = partial.path.clone();
                Err((path, error))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff(1), Duration::from_millis(250));
        assert_eq!(backoff(2), Duration::from_millis(500));
        assert_eq!(backoff(4), Duration::from_secs(2));
        assert_eq!(backoff(30), MAX_BACKOFF);
    }
}
