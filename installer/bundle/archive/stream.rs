//! Reading a packed bundle as a stream: verify it, unpack it, or read single blobs afterwards.
//!
//! The archive is read once, front to back. bundle.yaml comes first and the signature second,
//! so the signature is checked before any blob is read. Every later entry must be a file that
//! bundle.yaml lists, no larger than it declares, and is hashed as it streams past. Nothing is
//! held in memory but index.json and the image manifests, each bounded in size.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;

use zstd_safe::{DCtx, InBuffer, OutBuffer};

use super::parts::{PartError, PartSet, PayloadReader};
use crate::bundle::keys::{self, Signer, TrustPolicy};
use crate::bundle::layout::{self, EntryKind};
use crate::bundle::manifest::{Blob, BundleManifest, MAX_MANIFEST_SIZE};
use crate::bundle::oci::MAX_MANIFEST_JSON;
use crate::bundle::verified::Image;
use crate::bundle::verify::{self, VerifyError};
use crate::bundle::{MANIFEST_FILE, SIGNATURE_FILE};
use crate::digest::{Digest, Hasher, STREAM_BUFFER};
use crate::ui::Ui;

/// The maximum number of bytes accepted after the end of the tar. They must be zeros, because
/// GNU tar pads archives to a multiple of 10 KiB.
const MAX_TRAILING_ZEROS: u64 = 1 << 20;

/// The start of a zstd frame, in the joined payload and in the decompressed tar stream.
#[derive(Clone, Copy, Debug)]
struct FrameStart {
    compressed: u64,
    decompressed: u64,
}

/// Decompresses a stream of zstd frames and records where each frame starts.
struct FrameDecoder<R> {
    input: R,
    context: DCtx<'static>,
    consumed: u64,
    /// `consumed`, shared with the code that shows progress.
    progress: Arc<AtomicU64>,
    produced: u64,
    at_frame_boundary: bool,
    frames: Vec<FrameStart>,
}

impl<R: BufRead> FrameDecoder<R> {
    fn new(input: R) -> FrameDecoder<R> {
        FrameDecoder {
            input,
            context: DCtx::create(),
            consumed: 0,
            progress: Arc::new(AtomicU64::new(0)),
            produced: 0,
            at_frame_boundary: true,
            frames: Vec::new(),
        }
    }
}

impl<R: BufRead> Read for FrameDecoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let input = self.input.fill_buf()?;
            if input.is_empty() {
                if self.at_frame_boundary {
                    return Ok(0);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the last zstd frame is incomplete",
                ));
            }
            if self.at_frame_boundary {
                self.frames.push(FrameStart {
                    compressed: self.consumed,
                    decompressed: self.produced,
                });
                self.at_frame_boundary = false;
            }
            let mut in_buffer = InBuffer::around(input);
            let mut out_buffer = OutBuffer::around(&mut *buf);
            let hint = self
                .context
                .decompress_stream(&mut out_buffer, &mut in_buffer)
                .map_err(|code| {
                    io::Error::new(io::ErrorKind::InvalidData, zstd_safe::get_error_name(code))
                })?;
            let (used, written) = (in_buffer.pos(), out_buffer.pos());
            self.input.consume(used);
            self.consumed += used as u64;
            self.progress.store(self.consumed, Ordering::Relaxed);
            self.produced += written as u64;
            if hint == 0 {
                self.at_frame_boundary = true;
            }
            if written > 0 {
                return Ok(written);
            }
        }
    }
}

/// Reads the payload on another thread, so that reading files and checking part digests
/// overlap with decompression and hashing.
struct ReadAhead {
    receiver: mpsc::Receiver<io::Result<Vec<u8>>>,
    current: Vec<u8>,
    position: usize,
    done: bool,
}

impl ReadAhead {
    fn spawn(mut payload: PayloadReader) -> ReadAhead {
        let (sender, receiver) = mpsc::sync_channel(4);
        thread::spawn(move || {
            loop {
                let mut chunk = vec![0u8; STREAM_BUFFER];
                let result = read_full(&mut payload, &mut chunk).map(|read| {
                    chunk.truncate(read);
                    chunk
                });
                let stop = !matches!(&result, Ok(chunk) if !chunk.is_empty());
                if sender.send(result).is_err() || stop {
                    break;
                }
            }
        });
        ReadAhead {
            receiver,
            current: Vec::new(),
            position: 0,
            done: false,
        }
    }
}

fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

impl Read for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let count = available.len().min(buf.len());
        buf[..count].copy_from_slice(&available[..count]);
        self.consume(count);
        Ok(count)
    }
}

impl BufRead for ReadAhead {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.position == self.current.len() && !self.done {
            match self.receiver.recv() {
                Ok(Ok(chunk)) if chunk.is_empty() => self.done = true,
                Ok(Ok(chunk)) => {
                    self.current = chunk;
                    self.position = 0;
                }
                Ok(Err(error)) => {
                    self.done = true;
                    return Err(error);
                }
                Err(_) => self.done = true,
            }
        }
        Ok(&self.current[self.position..])
    }

    fn consume(&mut self, amount: usize) {
        self.position = (self.position + amount).min(self.current.len());
    }
}

/// Hashes entries on another thread, so that hashing overlaps with decompression.
struct HashWorker {
    jobs: mpsc::SyncSender<Option<Vec<u8>>>,
    results: mpsc::Receiver<(Digest, u64)>,
    /// Buffers the worker has hashed, for reuse.
    spent: mpsc::Receiver<Vec<u8>>,
}

impl HashWorker {
    fn spawn() -> HashWorker {
        let (jobs, job_receiver) = mpsc::sync_channel::<Option<Vec<u8>>>(4);
        let (result_sender, results) = mpsc::channel();
        let (spent_sender, spent) = mpsc::channel();
        thread::spawn(move || {
            let mut hasher = Hasher::new();
            for job in job_receiver {
                match job {
                    Some(chunk) => {
                        hasher.update(&chunk);
                        let _ = spent_sender.send(chunk);
                    }
                    None => {
                        let done = std::mem::take(&mut hasher);
                        let length = done.len();
                        if result_sender.send((done.finish(), length)).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        HashWorker {
            jobs,
            results,
            spent,
        }
    }

    /// Returns a buffer of [`STREAM_BUFFER`] bytes to read the next chunk into.
    fn buffer(&self) -> Vec<u8> {
        let mut buffer = self.spent.try_recv().unwrap_or_default();
        buffer.resize(STREAM_BUFFER, 0);
        buffer
    }

    fn update(&self, chunk: Vec<u8>) {
        self.jobs
            .send(Some(chunk))
            .expect("the hash worker runs until dropped");
    }

    /// Returns the digest and length of everything sent since the last call.
    fn finish(&self) -> (Digest, u64) {
        self.jobs
            .send(None)
            .expect("the hash worker runs until dropped");
        self.results
            .recv()
            .expect("the hash worker returns a result for every finish")
    }
}

/// Turns an I/O error met while reading the archive into the verification error it stands for.
fn archive_error(parts: &PartSet, error: io::Error) -> VerifyError {
    if error.get_ref().is_some_and(|inner| inner.is::<PartError>()) {
        let inner = error
            .into_inner()
            .expect("checked above")
            .downcast::<PartError>()
            .expect("checked above");
        return VerifyError::Part(*inner);
    }
    let reason = match error.kind() {
        io::ErrorKind::UnexpectedEof => format!("it ends early ({error})"),
        _ => error.to_string(),
    };
    VerifyError::Corrupt {
        archive: parts.path.clone(),
        reason,
    }
}

/// The result of a full read of an archive.
pub(crate) struct StreamOutcome {
    pub manifest: BundleManifest,
    pub digest: Digest,
    pub signer: Signer,
    pub images: Vec<Image>,
    pub store: ArchiveStore,
}

/// Reads bundle.yaml and the signature from the front of an archive.
pub(crate) fn read_head(parts: &PartSet) -> Result<(Vec<u8>, Option<Vec<u8>>), VerifyError> {
    let input = BufReader::with_capacity(256 << 10, parts.seekable_reader());
    let mut archive = tar::Archive::new(FrameDecoder::new(input));
    let mut entries = archive
        .entries()
        .map_err(|error| archive_error(parts, error))?
        .raw(true);
    let manifest = read_manifest_entry(parts, &mut entries)?;
    let signature = match entries.next() {
        Some(Ok(mut entry)) => match entry_path(&entry)? == SIGNATURE_FILE {
            true => Some(read_small_entry(parts, &mut entry, keys::MAX_KEY_FILE)?),
            false => None,
        },
        Some(Err(error)) => return Err(archive_error(parts, error)),
        None => None,
    };
    Ok((manifest, signature))
}

type RawEntries<'a, R> = tar::Entries<'a, R>;

fn entry_path<R: Read>(entry: &tar::Entry<'_, R>) -> Result<String, VerifyError> {
    layout::normalize_entry_path(&entry.path_bytes()).map_err(|problem| VerifyError::BadEntry {
        path: String::from_utf8_lossy(&entry.path_bytes()).into_owned(),
        problem,
    })
}

fn read_manifest_entry<R: Read>(
    parts: &PartSet,
    entries: &mut RawEntries<'_, R>,
) -> Result<Vec<u8>, VerifyError> {
    let mut entry = match entries.next() {
        Some(Ok(entry)) => entry,
        Some(Err(error)) => return Err(archive_error(parts, error)),
        None => {
            return Err(VerifyError::Corrupt {
                archive: parts.path.clone(),
                reason: "the tar is empty".into(),
            });
        }
    };
    let path = entry_path(&entry)?;
    if path != MANIFEST_FILE {
        return Err(VerifyError::ManifestNotFirst {
            archive: parts.path.clone(),
            found: path,
        });
    }
    layout::check_tar_entry(entry.header(), &path).map_err(|problem| VerifyError::BadEntry {
        path: path.clone(),
        problem,
    })?;
    read_small_entry(parts, &mut entry, MAX_MANIFEST_SIZE)
}

fn read_small_entry<R: Read>(
    parts: &PartSet,
    entry: &mut tar::Entry<'_, R>,
    limit: u64,
) -> Result<Vec<u8>, VerifyError> {
    let path = entry_path(entry)?;
    layout::check_tar_entry(entry.header(), &path).map_err(|problem| VerifyError::BadEntry {
        path: path.clone(),
        problem,
    })?;
    let size = entry
        .header()
        .entry_size()
        .map_err(|error| archive_error(parts, error))?;
    if size > limit {
        return Err(VerifyError::TooLarge {
            path: format!("{} in {}", path, parts.path.display()),
            limit,
        });
    }
    let mut bytes = Vec::with_capacity(size as usize);
    entry
        .take(limit)
        .read_to_end(&mut bytes)
        .map_err(|error| archive_error(parts, error))?;
    Ok(bytes)
}

/// Reads a whole archive: checks the signature against `policy`, then every entry. With
/// `unpack_to`, every checked file is also written below that directory.
pub(crate) fn read_archive(
    parts: &PartSet,
    policy: &TrustPolicy,
    unpack_to: Option<&Path>,
    ui: &Ui,
) -> Result<StreamOutcome, VerifyError> {
    let name = parts
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let progress = ui.item(&name, Some(parts.payload_size()));
    progress.set_state(if unpack_to.is_some() {
        "unpacking"
    } else {
        "verifying"
    });
    let decoder = FrameDecoder::new(ReadAhead::spawn(parts.payload_reader()));
    let consumed = Arc::clone(&decoder.progress);

    let result = read_entries(parts, policy, unpack_to, decoder, &progress)
        .map_err(|error| name_damaged_part(error, parts, consumed.load(Ordering::Relaxed)));
    match &result {
        Ok(_) => progress.finish(if unpack_to.is_some() {
            "unpacked"
        } else {
            "verified"
        }),
        Err(_) => progress.abandon(),
    }
    result
}

/// Adds the part file to a decompression error of a split archive: `position` is how far into the
/// joined payload the decoder had read.
fn name_damaged_part(error: VerifyError, parts: &PartSet, position: u64) -> VerifyError {
    match error {
        VerifyError::Corrupt { archive, reason } if parts.parts.len() > 1 => {
            let part = parts
                .parts
                .iter()
                .find(|part| position < part.offset + part.size)
                .or(parts.parts.last());
            let reason = match part {
                Some(part) => format!("{reason} (in part {})", part.path.display()),
                None => reason,
            };
            VerifyError::Corrupt { archive, reason }
        }
        other => other,
    }
}

fn read_entries<R: BufRead>(
    parts: &PartSet,
    policy: &TrustPolicy,
    unpack_to: Option<&Path>,
    decoder: FrameDecoder<R>,
    progress: &crate::ui::Item,
) -> Result<StreamOutcome, VerifyError> {
    let consumed = Arc::clone(&decoder.progress);
    let archive_path = &parts.path;
    let located = |path: &str| format!("{path} in {}", archive_path.display());
    let mut archive = tar::Archive::new(decoder);
    let mut entries = archive
        .entries()
        .map_err(|error| archive_error(parts, error))?
        .raw(true);

    // 1. bundle.yaml, which must be the bundle the part headers name.
    let manifest_bytes = read_manifest_entry(parts, &mut entries)?;
    let digest = Digest::of_bytes(&manifest_bytes);
    if let Some(expected) = parts.bundle_digest()
        && expected != digest
    {
        return Err(VerifyError::ForeignManifest {
            archive: archive_path.clone(),
            expected,
            computed: digest,
        });
    }
    let manifest = verify::parse_manifest(&manifest_bytes, archive_path)?;

    // 2. The signature, checked before any blob is read.
    let mut next = entries.next();
    let mut signature = None;
    if let Some(Ok(entry)) = &mut next
        && entry_path(entry)? == SIGNATURE_FILE
    {
        signature = Some(read_small_entry(parts, entry, keys::MAX_KEY_FILE)?);
        next = entries.next();
    }
    let signer = verify::check_signature(
        archive_path,
        &manifest_bytes,
        signature.as_deref(),
        &manifest,
        policy,
    )?;

    if let Some(root) = unpack_to {
        write_new(&root.join(MANIFEST_FILE), &manifest_bytes)?;
        if let Some(signature) = &signature {
            write_new(&root.join(SIGNATURE_FILE), signature)?;
        }
    }

    // 3. Every other entry: a listed file, hashed as it streams past.
    let expected = manifest.expected_files();
    let documents_wanted: HashSet<String> = verify::document_paths(&manifest).into_iter().collect();
    let mut documents = HashMap::new();
    let mut offsets: HashMap<Digest, u64> = HashMap::new();
    let mut seen = HashSet::new();
    let hash_worker = HashWorker::spawn();
    while let Some(entry) = next {
        let mut entry = entry.map_err(|error| archive_error(parts, error))?;
        let path = entry_path(&entry)?;
        let kind = layout::check_tar_entry(entry.header(), &path).map_err(|problem| {
            VerifyError::BadEntry {
                path: located(&path),
                problem,
            }
        })?;
        if kind == EntryKind::Directory {
            if let Some(root) = unpack_to {
                create_dir(&root.join(&path))?;
            }
            next = entries.next();
            continue;
        }
        if layout::is_manifest_or_signature(&path) || !seen.insert(path.clone()) {
            return Err(VerifyError::DuplicateEntry {
                path: located(&path),
            });
        }
        let Some(blob) = expected.get(&path) else {
            return Err(VerifyError::Unlisted {
                path: located(&path),
            });
        };
        let size = entry
            .header()
            .entry_size()
            .map_err(|error| archive_error(parts, error))?;
        if size > blob.size {
            return Err(VerifyError::OversizedEntry {
                path: located(&path),
                declared: blob.size,
                actual: size,
            });
        }
        if size < blob.size {
            return Err(VerifyError::SizeMismatch {
                path: located(&path),
                expected: blob.size,
                actual: size,
            });
        }
        offsets.insert(blob.digest, entry.raw_file_position());

        let mut output = match unpack_to {
            Some(root) => Some(create_file(&root.join(&path))?),
            None => None,
        };
        let keep = documents_wanted.contains(&path);
        if keep && size > MAX_MANIFEST_JSON {
            return Err(VerifyError::TooLarge {
                path: located(&path),
                limit: MAX_MANIFEST_JSON,
            });
        }
        let mut kept = Vec::new();
        loop {
            let mut chunk = hash_worker.buffer();
            let read = match entry.read(&mut chunk) {
                Ok(0) => break,
                Ok(read) => read,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(archive_error(parts, error)),
            };
            chunk.truncate(read);
            if keep {
                kept.extend_from_slice(&chunk);
            }
            if let Some((file, file_path)) = &mut output {
                file.write_all(&chunk).map_err(|source| VerifyError::Io {
                    path: file_path.clone(),
                    source,
                })?;
            }
            hash_worker.update(chunk);
        }
        let (computed, length) = hash_worker.finish();
        if length != blob.size {
            let reason = format!("{path} ends after {length} of {} bytes", blob.size);
            return Err(VerifyError::Corrupt {
                archive: archive_path.clone(),
                reason,
            });
        }
        if computed != blob.digest {
            return Err(VerifyError::DigestMismatch {
                path: located(&path),
                expected: blob.digest,
                computed,
            });
        }
        if keep {
            documents.insert(path, kept);
        }
        progress.set_position(consumed.load(Ordering::Relaxed));
        next = entries.next();
    }

    // 4. Nothing listed may be missing, and the stream must end cleanly after the tar.
    if let Some((path, blob)) = expected.iter().find(|(path, _)| !seen.contains(*path)) {
        return Err(VerifyError::Missing {
            path: located(path),
            digest: blob.digest,
        });
    }
    let mut decoder = archive.into_inner();
    check_trailer(parts, &mut decoder)?;
    let images = verify::check_images(archive_path, &manifest, &documents)?;

    let store = ArchiveStore {
        parts: parts.clone(),
        frames: decoder.frames,
        offsets,
        sizes: blob_sizes(&expected),
    };
    Ok(StreamOutcome {
        manifest,
        digest,
        signer,
        images,
        store,
    })
}

fn blob_sizes(expected: &BTreeMap<String, Blob>) -> HashMap<Digest, u64> {
    expected
        .values()
        .map(|blob| (blob.digest, blob.size))
        .collect()
}

/// Reads what follows the tar's end-of-archive marker: at most [`MAX_TRAILING_ZEROS`] zero
/// bytes, then the end of the last zstd frame and of the last part.
fn check_trailer<R: BufRead>(
    parts: &PartSet,
    decoder: &mut FrameDecoder<R>,
) -> Result<(), VerifyError> {
    let mut trailer = Vec::new();
    decoder
        .by_ref()
        .take(MAX_TRAILING_ZEROS + 1)
        .read_to_end(&mut trailer)
        .map_err(|error| archive_error(parts, error))?;
    if trailer.len() as u64 > MAX_TRAILING_ZEROS || trailer.iter().any(|&b| b != 0) {
        return Err(VerifyError::Corrupt {
            archive: parts.path.clone(),
            reason: "data follows the end of the tar".into(),
        });
    }
    Ok(())
}

fn write_new(path: &Path, content: &[u8]) -> Result<(), VerifyError> {
    let (mut file, display) = create_file(path)?;
    file.write_all(content).map_err(|source| VerifyError::Io {
        path: display,
        source,
    })
}

fn create_file(path: &Path) -> Result<(File, String), VerifyError> {
    use std::os::unix::fs::OpenOptionsExt;
    let display = path.display().to_string();
    if let Some(parent) = path.parent() {
        create_dir(parent)?;
    }
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
        .map_err(|source| VerifyError::Io {
            path: display.clone(),
            source,
        })?;
    Ok((file, display))
}

fn create_dir(path: &Path) -> Result<(), VerifyError> {
    fs::create_dir_all(path).map_err(|source| VerifyError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Random access to the entries of a verified archive, through the frame index recorded while
/// verifying.
pub(crate) struct ArchiveStore {
    parts: PartSet,
    frames: Vec<FrameStart>,
    /// The offset of each blob's data in the decompressed tar stream.
    offsets: HashMap<Digest, u64>,
    sizes: HashMap<Digest, u64>,
}

impl ArchiveStore {
    /// Opens a blob by decompressing from the frame that contains its first byte. For an archive
    /// made by other tools with a single frame, that is the start of the archive.
    // NOTE: reading every blob of such a single-frame archive costs time quadratic in its size;
    // `airlock bundle pack` output has a frame per 16 MiB, and unpacking avoids it too.
    pub(crate) fn open_blob(&self, digest: &Digest) -> io::Result<Box<dyn Read + Send>> {
        let not_found = || {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("blob {digest} is not in the archive"),
            )
        };
        let offset = *self.offsets.get(digest).ok_or_else(not_found)?;
        let size = *self.sizes.get(digest).ok_or_else(not_found)?;
        let index = self
            .frames
            .partition_point(|frame| frame.decompressed <= offset);
        let frame = self.frames[index.saturating_sub(1)];

        let mut payload = self.parts.seekable_reader();
        payload.seek(SeekFrom::Start(frame.compressed))?;
        let mut decoder =
            zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(256 << 10, payload))?;
        let skip = offset - frame.decompressed;
        let skipped = io::copy(&mut (&mut decoder).take(skip), &mut io::sink())?;
        if skipped != skip {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the archive ended before the blob",
            ));
        }
        Ok(Box::new(decoder.take(size)))
    }
}
