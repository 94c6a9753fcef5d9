//! `airlock media verify`: every file on a media folder or disk image hashed again against
//! `SHA256SUMS`, the signature of `SHA256SUMS` checked, and the bundle's own digests checked.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::checksums::{self, Entry};
use super::image::ImageReader;
use super::{CHECKSUMS, CHECKSUMS_SIGNATURE, IGNORED_NAMES, KEY_EXTENSION};
use crate::bundle::keys::{self, KeyId, PublicKey, SignatureError, TrustPolicy};
use crate::bundle::{Bundle, VerifyError};
use crate::digest::{Digest, hash_reader};
use crate::ui::Ui;

/// Media that failed verification; each variant names the first bad file.
#[derive(Debug, thiserror::Error)]
pub enum MediaVerifyError {
    #[error("cannot read the media {media}: {source}")]
    Open { media: PathBuf, source: io::Error },
    #[error(
        "{media} has no {CHECKSUMS}: it is not airlock media, or `airlock media create` was interrupted"
    )]
    NoChecksums { media: PathBuf },
    #[error("{media}: invalid {CHECKSUMS}: {source}")]
    Checksums {
        media: PathBuf,
        source: checksums::ParseError,
    },
    #[error("{CHECKSUMS} is not signed ({CHECKSUMS_SIGNATURE} is missing), but --key was given")]
    Unsigned,
    #[error("{CHECKSUMS_SIGNATURE} is malformed: {reason}")]
    MalformedSignature { reason: String },
    #[error("{CHECKSUMS_SIGNATURE} is by key {key_id}, which is not trusted (trusted: {trusted})")]
    UntrustedKey { key_id: KeyId, trusted: String },
    #[error(
        "{CHECKSUMS_SIGNATURE} does not match {CHECKSUMS} for key {key_id}: one of them was changed"
    )]
    BadSignature { key_id: KeyId },
    #[error("invalid public key {name} on the media: {reason}")]
    MediaKey { name: String, reason: String },
    #[error("{name} is listed in {CHECKSUMS} but missing from the media")]
    Missing { name: String },
    #[error("{name} is on the media but not listed in {CHECKSUMS}")]
    Extra { name: String },
    #[error("{name} has digest {computed}, but {CHECKSUMS} lists {expected}")]
    Corrupt {
        name: String,
        expected: Digest,
        computed: Digest,
    },
    #[error("cannot read {name} from the media: {source}")]
    Read { name: String, source: io::Error },
    #[error("{CHECKSUMS} lists no bundle (no *.tar.zst or *.tar.zst.part001)")]
    NoBundle,
    #[error("cannot copy the bundle out of the image into a temporary folder in {dir}: {source}")]
    Scratch { dir: PathBuf, source: io::Error },
    #[error("the bundle {name} did not verify")]
    Bundle { name: String, source: VerifyError },
}

/// The summary of a successful verification.
#[derive(Debug)]
pub struct MediaReport {
    pub files: usize,
    pub bytes: u64,
    /// The key that signed `SHA256SUMS`; `None` when it is unsigned or no key was available.
    pub signer: Option<KeyId>,
    /// The signature was checked with keys found on the media itself, which detects damage but
    /// not a forger who replaced the keys too.
    pub keys_from_media: bool,
    /// The bundle's first file on the media.
    pub bundle: String,
    /// The bundle's own digests were checked too.
    pub bundle_checked: bool,
}

/// A media folder, or a disk image read through its file system.
enum Media {
    Folder(PathBuf),
    Image(Box<ImageReader>),
}

impl Media {
    fn list(&self) -> io::Result<Vec<(String, u64)>> {
        match self {
            Media::Folder(dir) => list_folder(dir),
            Media::Image(image) => image.list(),
        }
    }

    fn open(&self, name: &str) -> io::Result<Box<dyn Read + '_>> {
        match self {
            Media::Folder(dir) => Ok(Box::new(File::open(dir.join(name))?)),
            Media::Image(image) => Ok(Box::new(image.open_file(name)?)),
        }
    }

    fn read_all(&self, name: &str) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.open(name)?.read_to_end(&mut bytes)?;
        Ok(bytes)
    }
}

fn list_folder(dir: &Path) -> io::Result<Vec<(String, u64)>> {
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(dir).min_depth(1).sort_by_file_name() {
        let entry = entry.map_err(io::Error::other)?;
        if entry.file_type().is_dir() {
            continue;
        }
        let relative = entry.path().strip_prefix(dir).unwrap_or(entry.path());
        let name = relative
            .components()
            .map(|part| part.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        files.push((name, entry.metadata().map_err(io::Error::other)?.len()));
    }
    Ok(files)
}

/// The choices of a verification.
#[derive(Clone, Copy, Debug)]
pub struct VerifyOptions {
    /// Also check the bundle in a disk image against its own digests, which copies its parts
    /// out of the image. `media create` skips this because it verified the bundle before
    /// writing the image.
    pub image_bundle: bool,
}

/// Verifies a media folder or a `.img` disk image. `keys` are the trusted keys for the
/// signature of `SHA256SUMS`; without any, the `*.pub` keys in the media root are used.
pub fn verify(
    path: &Path,
    keys: &[PublicKey],
    options: VerifyOptions,
    ui: &Ui,
) -> Result<MediaReport, MediaVerifyError> {
    let open_error = |source| MediaVerifyError::Open {
        media: path.to_path_buf(),
        source,
    };
    let media = if path.is_dir() {
        Media::Folder(path.to_path_buf())
    } else {
        Media::Image(Box::new(ImageReader::open(path).map_err(open_error)?))
    };
    let files = media.list().map_err(open_error)?;

    ui.header("Check SHA256SUMS and its signature");
    let has = |name: &str| files.iter().any(|(file, _)| file == name);
    if !has(CHECKSUMS) {
        return Err(MediaVerifyError::NoChecksums {
            media: path.to_path_buf(),
        });
    }
    let read_error = |name: &str| {
        let name = name.to_string();
        move |source| MediaVerifyError::Read { name, source }
    };
    let sums = media.read_all(CHECKSUMS).map_err(read_error(CHECKSUMS))?;
    let entries = checksums::parse(&String::from_utf8_lossy(&sums)).map_err(|source| {
        MediaVerifyError::Checksums {
            media: path.to_path_buf(),
            source,
        }
    })?;

    let keys_from_media = keys.is_empty();
    let trusted = match keys_from_media {
        true => media_keys(&media, &files)?,
        false => keys.to_vec(),
    };
    let signature = match has(CHECKSUMS_SIGNATURE) {
        true => Some(
            media
                .read_all(CHECKSUMS_SIGNATURE)
                .map_err(read_error(CHECKSUMS_SIGNATURE))?,
        ),
        false => None,
    };
    let signer = check_signature(&sums, signature.as_deref(), &trusted, keys_from_media)?;
    match (&signer, keys_from_media) {
        (Some(key), true) => ui.warn(&format!(
            "{CHECKSUMS} is signed by key {key}, checked with the keys on the media: pass --key to \
             check it against a key you trust"
        )),
        (None, _) => ui.warn(&format!(
            "{CHECKSUMS} is not signed or no key was found: only damage, not tampering, is detected"
        )),
        (Some(_), false) => {}
    }

    // Missing and extra files are found before anything is hashed, because they are cheap to find.
    for entry in &entries {
        if !has(&entry.name) {
            return Err(MediaVerifyError::Missing {
                name: entry.name.clone(),
            });
        }
    }
    for (name, _) in &files {
        let listed = entries.iter().any(|entry| &entry.name == name);
        if !listed && name != CHECKSUMS && name != CHECKSUMS_SIGNATURE && !is_ignored(name) {
            return Err(MediaVerifyError::Extra { name: name.clone() });
        }
    }

    ui.header("Hash every file on the media");
    let mut bytes = 0;
    for Entry { digest, name } in &entries {
        let size = files
            .iter()
            .find(|(file, _)| file == name)
            .map(|(_, size)| *size);
        let item = ui.item(name, size);
        let reader = media.open(name).map_err(read_error(name))?;
        let (computed, length) = hash_reader(ProgressReader {
            inner: reader,
            item: &item,
        })
        .map_err(read_error(name))?;
        if computed != *digest {
            item.fail("digest mismatch");
            return Err(MediaVerifyError::Corrupt {
                name: name.clone(),
                expected: *digest,
                computed,
            });
        }
        item.finish("matches");
        bytes += length;
    }

    let bundle = entries
        .iter()
        .map(|entry| &entry.name)
        .find(|name| name.ends_with(".tar.zst") || name.ends_with(".tar.zst.part001"))
        .ok_or(MediaVerifyError::NoBundle)?
        .clone();
    let bundle_checked = match (&media, options.image_bundle) {
        (Media::Folder(dir), _) => {
            check_bundle(&dir.join(&bundle), &bundle, &trusted, ui)?;
            true
        }
        (Media::Image(_), true) => {
            // The bundle reader opens part files by path, so the parts are copied out of the
            // image into a temporary folder beside it, which needs the bundle's size on that disk.
            let parts: Vec<&str> = entries
                .iter()
                .map(|entry| entry.name.as_str())
                .filter(|name| name.starts_with(bundle.trim_end_matches(".part001")))
                .collect();
            let beside = path.parent().filter(|dir| !dir.as_os_str().is_empty());
            let scratch_dir = beside.unwrap_or(Path::new("."));
            let scratch_error = |source| MediaVerifyError::Scratch {
                dir: scratch_dir.to_path_buf(),
                source,
            };
            let scratch = tempfile::Builder::new()
                .prefix(".airlock-verify-")
                .tempdir_in(scratch_dir)
                .map_err(scratch_error)?;
            for name in parts {
                let mut reader = media.open(name).map_err(read_error(name))?;
                let mut file = File::create(scratch.path().join(name)).map_err(scratch_error)?;
                io::copy(&mut reader, &mut file).map_err(scratch_error)?;
            }
            check_bundle(&scratch.path().join(&bundle), &bundle, &trusted, ui)?;
            true
        }
        (Media::Image(_), false) => false,
    };
    Ok(MediaReport {
        files: entries.len(),
        bytes,
        signer,
        keys_from_media,
        bundle,
        bundle_checked,
    })
}

/// Verifies the bundle's signature and every digest in its manifest.
fn check_bundle(
    first_part: &Path,
    name: &str,
    trusted: &[PublicKey],
    ui: &Ui,
) -> Result<(), MediaVerifyError> {
    ui.header("Verify the bundle's own digests");
    let policy = TrustPolicy::new(trusted.to_vec(), trusted.is_empty());
    Bundle::open(first_part)
        .and_then(|opened| opened.verify(&policy, ui))
        .map_err(|source| MediaVerifyError::Bundle {
            name: name.to_string(),
            source,
        })?;
    Ok(())
}

/// Checks whether a file is one that operating systems create on removable media by themselves.
fn is_ignored(name: &str) -> bool {
    let top = name.split('/').next().unwrap_or(name);
    IGNORED_NAMES.contains(&top)
}

/// Loads the public keys in the media root.
fn media_keys(media: &Media, files: &[(String, u64)]) -> Result<Vec<PublicKey>, MediaVerifyError> {
    let mut keys = Vec::new();
    for (name, _) in files {
        if name.contains('/') || !name.ends_with(KEY_EXTENSION) {
            continue;
        }
        let bytes = media
            .read_all(name)
            .map_err(|source| MediaVerifyError::Read {
                name: name.clone(),
                source,
            })?;
        let key = PublicKey::parse(&String::from_utf8_lossy(&bytes), name).map_err(|reason| {
            MediaVerifyError::MediaKey {
                name: name.clone(),
                reason,
            }
        })?;
        keys.push(key);
    }
    Ok(keys)
}

/// Checks the signature of `SHA256SUMS`. Returns the signing key, or `None` when an unsigned
/// file is accepted, which is only when no key was passed on the command line.
fn check_signature(
    sums: &[u8],
    signature: Option<&[u8]>,
    trusted: &[PublicKey],
    keys_from_media: bool,
) -> Result<Option<KeyId>, MediaVerifyError> {
    let Some(signature) = signature else {
        return match keys_from_media {
            true => Ok(None),
            false => Err(MediaVerifyError::Unsigned),
        };
    };
    let key_id = keys::signature_key_id(signature).map_err(signature_error)?;
    if trusted.is_empty() {
        return Ok(None);
    }
    let Some(key) = trusted.iter().find(|key| key.id() == key_id) else {
        let trusted = trusted
            .iter()
            .map(|key| key.id().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(MediaVerifyError::UntrustedKey { key_id, trusted });
    };
    keys::verify_detached(key, sums, signature).map_err(signature_error)?;
    Ok(Some(key_id))
}

fn signature_error(error: SignatureError) -> MediaVerifyError {
    match error {
        SignatureError::Invalid { key_id } => MediaVerifyError::BadSignature { key_id },
        SignatureError::UntrustedKey { key_id, trusted } => MediaVerifyError::UntrustedKey {
            key_id,
            trusted: trusted
                .iter()
                .map(KeyId::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        },
        other => MediaVerifyError::MalformedSignature {
            reason: other.to_string(),
        },
    }
}

/// A reader that advances a progress item.
struct ProgressReader<'a, R> {
    inner: R,
    item: &'a crate::ui::Item,
}

impl<R: Read> Read for ProgressReader<'_, R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.item.inc(read as u64);
        Ok(read)
    }
}
