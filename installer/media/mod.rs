//! Removable media: a verified bundle written onto a mounted disk, or into a raw disk image,
//! together with the airlock binary, the trusted keys, the cluster file, `INSTALL.txt` and a
//! signed `SHA256SUMS`, then read back and checked byte for byte.
//!
//! Writing is not trusted until the bytes come back. Every file is synced, its pages are dropped
//! from the page cache (`posix_fadvise(POSIX_FADV_DONTNEED)`), and it is hashed again, so a
//! failing USB stick or a full disk is found at the office rather than inside the site.
//!
//! Writing survives a stick pulled out halfway: each file is written under a temporary name,
//! synced and renamed, and recorded in a journal once it has been read back. A re-run skips every
//! file the journal lists whose bytes still match, and `SHA256SUMS`, written last, marks finished
//! media.

pub mod checksums;
pub mod image;
mod layout;
pub mod verify;

use std::ffi::CString;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use checksums::{Entry, Journal};

use crate::bundle::archive::{self, PackOptions};
use crate::bundle::{Bundle, PublicKey, SecretKey, TrustPolicy, VerifyError};
use crate::digest::{Digest, hash_file};
use crate::ui::Ui;

pub use layout::{BesideBinary, find_beside_binary};
pub use verify::{MediaReport, MediaVerifyError, VerifyOptions, verify};

/// The checksum file on the media, in `sha256sum -c` format.
pub const CHECKSUMS: &str = "SHA256SUMS";

/// The minisign signature of [`CHECKSUMS`].
pub const CHECKSUMS_SIGNATURE: &str = "SHA256SUMS.minisig";

/// The airlock binary on the media.
pub const BINARY: &str = "airlock";

/// The cluster file on the media: the name `airlock apply` reads by default.
pub const CLUSTER_FILE: &str = "k0sctl.yaml";

/// The instructions on the media.
pub const INSTALL: &str = "INSTALL.txt";

/// The extension of the trusted public keys, which lie in the media root.
// NOTE: keys are not in a subfolder because fatfs 0.3.6 writes a subfolder's `.` and `..`
// entries in a way fsck.vfat reports as damaged.
pub const KEY_EXTENSION: &str = ".pub";

/// Folders that media create neither writes nor checks: those that operating systems create on
/// removable media by themselves, and `airlock-out`, where `apply` and `upgrade` run from the
/// media write the blueprint and audit log by default.
pub const IGNORED_NAMES: &[&str] = &["System Volume Information", "lost+found", "airlock-out"];

/// The largest file FAT32 can hold: 4 GiB less one byte.
pub const FAT32_MAX_FILE: u64 = (4 << 30) - 1;

/// The prefix of temporary files; leftovers of an interrupted run are deleted by the next one.
const TEMPORARY_PREFIX: &str = ".airlock-";

/// The destination of the media.
pub enum Target<'a> {
    /// A mounted file system, or any folder.
    Folder(&'a Path),
    /// A raw disk image of `size` bytes with one FAT32 partition.
    Image { path: &'a Path, size: u64 },
}

/// The bundle, cluster file and keys to write, and where.
pub struct MediaOptions<'a> {
    pub bundle: &'a Path,
    pub target: Target<'a>,
    pub cluster: Option<&'a Path>,
    pub split_size: Option<u64>,
    pub keys: Vec<(PathBuf, PublicKey)>,
    pub allow_unsigned: bool,
    /// Signs `SHA256SUMS` into `SHA256SUMS.minisig`.
    pub sign: Option<&'a SecretKey>,
}

/// The files written and checked.
pub struct MediaSummary {
    pub files: Vec<(String, u64, Digest)>,
    /// Files of an interrupted earlier run that were found complete and not written again.
    pub skipped: Vec<String>,
    /// The bundle's first file, relative to the media root.
    pub bundle: String,
    pub split_size: Option<u64>,
}

/// Media that cannot be written or that did not read back.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("the bundle {path} did not verify")]
    Bundle { path: PathBuf, source: VerifyError },
    #[error("{path} is not a directory; mount the media and pass its mount point")]
    NotADirectory { path: PathBuf },
    #[error("{path} already holds airlock media ({existing}); use empty media or remove it")]
    NotEmpty { path: PathBuf, existing: String },
    #[error("{path} contains {name}, which is not airlock media; use empty media")]
    ForeignFile { path: PathBuf, name: String },
    #[error("the split size {size} exceeds the 4 GiB - 1 byte limit of FAT32 files on {path}")]
    SplitTooLarge { path: PathBuf, size: u64 },
    #[error(
        "the image size {} is outside the supported range of {} to {}",
        crate::ui::format_bytes(*size), crate::ui::format_bytes(*min), crate::ui::format_bytes(*max)
    )]
    ImageSize { size: u64, min: u64, max: u64 },
    #[error(
        "{path} already exists and is not an image that an interrupted run left; remove it or choose another name"
    )]
    ImageExists { path: PathBuf },
    #[error("Ctrl-C was pressed; the files written so far are kept")]
    Interrupted,
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot sign {CHECKSUMS}: {reason}")]
    Sign { reason: String },
    #[error("cannot pack the bundle onto the media: {0}")]
    Pack(#[from] archive::PackError),
    #[error("{path} read back from the media with digest {computed}, but {expected} was written")]
    ReadBack {
        path: PathBuf,
        expected: Digest,
        computed: Digest,
    },
    #[error("the packed bundle on the media did not verify")]
    PackedBundle { source: VerifyError },
    #[error("cannot write the disk image {path} of {size} bytes for {content} bytes of files")]
    ImageWrite {
        path: PathBuf,
        size: u64,
        content: u64,
        source: io::Error,
    },
    #[error("the disk image {path} did not verify")]
    ImageVerify {
        path: PathBuf,
        source: Box<MediaVerifyError>,
    },
}

/// Ends the run between two files after a Ctrl-C; the journal keeps what was written, so the
/// same command continues.
fn stop_if_requested() -> Result<(), MediaError> {
    match crate::phase::stop_requested() {
        true => Err(MediaError::Interrupted),
        false => Ok(()),
    }
}

fn write_error(path: &Path) -> impl FnOnce(io::Error) -> MediaError + use<> {
    let path = path.to_path_buf();
    move |source| MediaError::Write { path, source }
}

/// Writes the media and checks it.
pub fn create(options: &MediaOptions<'_>, ui: &Ui) -> Result<MediaSummary, MediaError> {
    let keys: Vec<PublicKey> = options.keys.iter().map(|(_, key)| key.clone()).collect();
    let policy = TrustPolicy::new(keys.clone(), options.allow_unsigned);
    ui.header("Verify the bundle");
    let bundle_digest = Bundle::open(options.bundle)
        .and_then(|bundle| bundle.verify(&policy, ui))
        .map_err(|source| MediaError::Bundle {
            path: options.bundle.to_path_buf(),
            source,
        })?
        .digest();

    match options.target {
        Target::Folder(dir) => create_in_folder(options, dir, bundle_digest, &policy, ui),
        Target::Image { path, size } => {
            if !(image::MIN_IMAGE_SIZE..=image::MAX_IMAGE_SIZE).contains(&size) {
                return Err(MediaError::ImageSize {
                    size,
                    min: image::MIN_IMAGE_SIZE,
                    max: image::MAX_IMAGE_SIZE,
                });
            }
            // The content is assembled in a folder beside the image first, so that an image is
            // resumed through the same journal as a folder. The folder is deleted once the image
            // verifies.
            let staging = with_suffix(path, ".files");
            // An interrupted run keeps its staging folder; any other existing file is not ours.
            if path.exists() && !staging.is_dir() {
                return Err(MediaError::ImageExists {
                    path: path.to_path_buf(),
                });
            }
            fs::create_dir_all(&staging).map_err(write_error(&staging))?;
            reopen_finished(&staging).map_err(write_error(&staging))?;
            let summary = create_in_folder(options, &staging, bundle_digest, &policy, ui)?;

            ui.header("Write the disk image");
            let total: u64 = summary.files.iter().map(|(_, size, _)| size).sum();
            let item = ui.item(&path.display().to_string(), Some(total));
            item.set_state("writing");
            let temporary = with_suffix(path, ".partial");
            if let Err(error) = image::write(&staging, &temporary, size, &item) {
                item.fail(&error.to_string());
                let _ = fs::remove_file(&temporary);
                return Err(MediaError::ImageWrite {
                    path: path.to_path_buf(),
                    size,
                    content: total,
                    source: error,
                });
            }
            fs::rename(&temporary, path).map_err(write_error(path))?;
            sync_parent(path).map_err(write_error(path))?;
            item.finish("written");

            evict(path).map_err(write_error(path))?;
            let options = VerifyOptions {
                image_bundle: false,
            };
            verify::verify(path, &keys, options, ui).map_err(|source| MediaError::ImageVerify {
                path: path.to_path_buf(),
                source: Box::new(source),
            })?;
            fs::remove_dir_all(&staging).map_err(write_error(&staging))?;
            Ok(summary)
        }
    }
}

fn create_in_folder(
    options: &MediaOptions<'_>,
    to: &Path,
    bundle_digest: Digest,
    policy: &TrustPolicy,
    ui: &Ui,
) -> Result<MediaSummary, MediaError> {
    if !to.is_dir() {
        return Err(MediaError::NotADirectory {
            path: to.to_path_buf(),
        });
    }
    if to.join(CHECKSUMS).exists() {
        return Err(MediaError::NotEmpty {
            path: to.to_path_buf(),
            existing: CHECKSUMS.to_string(),
        });
    }
    let fat32 = matches!(options.target, Target::Image { .. }) || is_fat(to);
    let split_size = match (options.split_size, fat32) {
        (Some(size), true) if size > FAT32_MAX_FILE => {
            return Err(MediaError::SplitTooLarge {
                path: to.to_path_buf(),
                size,
            });
        }
        (None, true) => Some(FAT32_MAX_FILE),
        (size, _) => size,
    };

    let source = Bundle::open(options.bundle)
        .and_then(|bundle| bundle.inspect())
        .map_err(|source| MediaError::Bundle {
            path: options.bundle.to_path_buf(),
            source,
        })?;
    let archive_name = format!(
        "{}-{}.tar.zst",
        source.manifest.name, source.manifest.version
    );
    clean_folder(to, &archive_name)?;

    let mut journal = Journal::load(to).map_err(write_error(&to.join(checksums::JOURNAL)))?;
    if journal.bundle != Some(bundle_digest) {
        journal =
            Journal::start(to, bundle_digest).map_err(write_error(&to.join(checksums::JOURNAL)))?;
    }
    let mut skipped = Vec::new();

    ui.header("Write the media");
    let parts = write_bundle(
        options,
        to,
        &archive_name,
        split_size,
        &mut journal,
        &mut skipped,
        ui,
    )?;
    let bundle_name = parts.first().cloned().unwrap_or(archive_name.clone());
    stop_if_requested()?;

    let exe = std::env::current_exe().map_err(write_error(&to.join(BINARY)))?;
    let mut sources: Vec<(String, Source)> = vec![(BINARY.into(), Source::File(exe))];
    for (path, key) in &options.keys {
        let mut name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        if !name.ends_with(KEY_EXTENSION) {
            name.push_str(KEY_EXTENSION);
        }
        if sources.iter().any(|(taken, _)| *taken == name) || name == KEY_EXTENSION {
            name = format!("key-{}{KEY_EXTENSION}", key.id());
        }
        sources.push((name, Source::File(path.clone())));
    }
    if let Some(cluster) = options.cluster {
        sources.push((CLUSTER_FILE.into(), Source::File(cluster.to_path_buf())));
    }
    let install = install_text(&source.manifest, bundle_digest, &bundle_name, options);
    sources.push((INSTALL.into(), Source::Bytes(install.into_bytes())));
    for (name, source) in &sources {
        write_file(to, name, source, &mut journal, &mut skipped, ui)?;
        stop_if_requested()?;
    }

    ui.header("Verify the bundle read back from the media");
    Bundle::open(&to.join(&bundle_name))
        .and_then(|bundle| bundle.verify(policy, ui))
        .map_err(|source| MediaError::PackedBundle { source })?;

    // The journal lists exactly the files of this run, in the order written.
    let mut entries: Vec<Entry> = Vec::new();
    for name in parts.iter().chain(sources.iter().map(|(name, _)| name)) {
        let digest = journal
            .digest_of(name)
            .expect("every written file is journaled");
        entries.push(Entry {
            digest,
            name: name.clone(),
        });
    }
    let text = checksums::format(&entries);
    if let Some(key) = options.sign {
        let comment = format!(
            "timestamp:{}\tfile:{CHECKSUMS}\tbundle:{}\tversion:{}",
            unix_time(),
            source.manifest.name,
            source.manifest.version
        );
        let signature = key
            .sign(text.as_bytes(), &comment)
            .map_err(|reason| MediaError::Sign { reason })?;
        write_atomically(&to.join(CHECKSUMS_SIGNATURE), 0o644, |file| {
            file.write_all(signature.as_bytes())
        })?;
    }
    // SHA256SUMS is renamed into place last: its presence marks finished media.
    write_atomically(&to.join(CHECKSUMS), 0o644, |file| {
        file.write_all(text.as_bytes())
    })?;
    fs::remove_file(to.join(checksums::JOURNAL))
        .map_err(write_error(&to.join(checksums::JOURNAL)))?;
    sync_dir(to).map_err(write_error(to))?;

    let mut files = Vec::new();
    for entry in &entries {
        let size = fs::metadata(to.join(&entry.name))
            .map_err(write_error(&to.join(&entry.name)))?
            .len();
        files.push((entry.name.clone(), size, entry.digest));
    }
    Ok(MediaSummary {
        files,
        skipped,
        bundle: bundle_name,
        split_size,
    })
}

/// Turns finished media in the staging folder of an image back into a journal. A run that
/// stopped while writing the image leaves such a folder, and the journal lets the next run skip
/// each file that still matches its source.
fn reopen_finished(staging: &Path) -> io::Result<()> {
    let sums_path = staging.join(CHECKSUMS);
    let text = match fs::read_to_string(&sums_path) {
        Ok(text) => text,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    };
    let entries = checksums::parse(&text).unwrap_or_default();
    let bundle_digest = entries
        .iter()
        .find(|entry| entry.name.ends_with(".tar.zst") || entry.name.ends_with(".tar.zst.part001"))
        .and_then(|entry| Bundle::open(&staging.join(&entry.name)).ok())
        .and_then(|bundle| bundle.inspect().ok())
        .map(|inspection| inspection.digest);
    // Without the bundle's digest the journal is started afresh and every file is written again.
    if let Some(digest) = bundle_digest {
        let mut journal = Journal::start(staging, digest)?;
        journal.append(staging, &entries)?;
    }
    fs::remove_file(&sums_path)?;
    match fs::remove_file(staging.join(CHECKSUMS_SIGNATURE)) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// Packs the bundle onto the media, unless the journal lists every part of this bundle and each
/// still matches. Returns the part names in order.
fn write_bundle(
    options: &MediaOptions<'_>,
    to: &Path,
    archive_name: &str,
    split_size: Option<u64>,
    journal: &mut Journal,
    skipped: &mut Vec<String>,
    ui: &Ui,
) -> Result<Vec<String>, MediaError> {
    let expected_names = |names: Vec<String>| -> Vec<String> {
        names
            .into_iter()
            .filter(|name| is_archive_file(name, archive_name))
            .collect()
    };
    let journaled = expected_names(journal.entries.iter().map(|e| e.name.clone()).collect());
    if !journaled.is_empty() && journaled_parts_complete(to, &journaled, journal, split_size) {
        for name in &journaled {
            ui.item(name, None).finish("already on the media, matches");
        }
        skipped.extend(journaled.iter().cloned());
        return Ok(journaled);
    }

    let archive = to.join(archive_name);
    let pack_options = PackOptions {
        split_size,
        ..PackOptions::default()
    };
    let packed = archive::pack(options.bundle, &archive, &pack_options, ui)?;
    if split_size.is_some() {
        // An unsplit archive left over from an earlier run with other settings.
        let _ = fs::remove_file(&archive);
    } else {
        for number in 1.. {
            let part = archive::part_path(&archive, number);
            if fs::remove_file(&part).is_err() {
                break;
            }
        }
    }

    let mut names = Vec::new();
    let mut entries = Vec::new();
    for path in &packed.files {
        let name = relative_name(to, path);
        let (digest, _) = hash_file(path).map_err(write_error(path))?;
        read_back(path, &name, digest, ui)?;
        entries.push(Entry {
            digest,
            name: name.clone(),
        });
        names.push(name);
    }
    journal
        .append(to, &entries)
        .map_err(write_error(&to.join(checksums::JOURNAL)))?;
    Ok(names)
}

/// Checks that the journaled parts are all the parts of the archive, and that each still has its
/// journaled digest and fits the split size.
fn journaled_parts_complete(
    to: &Path,
    names: &[String],
    journal: &Journal,
    split_size: Option<u64>,
) -> bool {
    let split = names.iter().all(|name| name.contains(".part"));
    if split != split_size.is_some() {
        return false;
    }
    let limit = split_size.unwrap_or(u64::MAX);
    names.iter().all(|name| {
        let path = to.join(name);
        let fits = fs::metadata(&path).is_ok_and(|metadata| metadata.len() <= limit);
        fits && matches!(hash_file(&path), Ok((digest, _)) if Some(digest) == journal.digest_of(name))
    }) && Bundle::open(&to.join(&names[0])).is_ok()
}

fn is_archive_file(name: &str, archive_name: &str) -> bool {
    name == archive_name
        || name
            .strip_prefix(archive_name)
            .is_some_and(|rest| rest.starts_with(".part"))
}

/// The content of a file to write: a file on this machine, or bytes made here.
enum Source {
    File(PathBuf),
    Bytes(Vec<u8>),
}

/// Writes one file onto the media under a temporary name, syncs and renames it, reads it back,
/// and journals it. The file is skipped when the journal lists it with the digest of `source`
/// and the file on the media still has that digest.
fn write_file(
    to: &Path,
    name: &str,
    source: &Source,
    journal: &mut Journal,
    skipped: &mut Vec<String>,
    ui: &Ui,
) -> Result<(), MediaError> {
    let target = to.join(name);
    let expected = match source {
        Source::File(path) => hash_file(path).map_err(write_error(path))?.0,
        Source::Bytes(bytes) => Digest::of_bytes(bytes),
    };
    if journal.digest_of(name) == Some(expected)
        && matches!(hash_file(&target), Ok((digest, _)) if digest == expected)
    {
        ui.item(name, None).finish("already on the media, matches");
        skipped.push(name.to_string());
        return Ok(());
    }

    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).map_err(write_error(parent))?;
    }
    let mode = if name == BINARY { 0o755 } else { 0o644 };
    write_atomically(&target, mode, |file| match source {
        Source::File(path) => io::copy(&mut File::open(path)?, file).map(|_| ()),
        Source::Bytes(bytes) => file.write_all(bytes),
    })?;

    read_back(&target, name, expected, ui)?;
    journal
        .append(
            to,
            &[Entry {
                digest: expected,
                name: name.to_string(),
            }],
        )
        .map_err(write_error(&to.join(checksums::JOURNAL)))
}

/// Syncs a written file, drops it from the page cache and hashes it again from the media.
fn read_back(path: &Path, name: &str, expected: Digest, ui: &Ui) -> Result<(), MediaError> {
    let item = ui.item(name, None);
    item.set_state("syncing");
    evict(path).map_err(write_error(path))?;
    item.set_state("reading back");
    let (computed, _) = hash_file(path).map_err(write_error(path))?;
    if computed != expected {
        item.fail("mismatch");
        return Err(MediaError::ReadBack {
            path: path.to_path_buf(),
            expected,
            computed,
        });
    }
    item.finish("written, read back, matches");
    Ok(())
}

/// Writes `target` under a temporary name with `fill`, sets its mode, syncs it and renames it
/// into place, so that `target` is either absent or complete after a crash.
fn write_atomically(
    target: &Path,
    mode: u32,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<(), MediaError> {
    let mut temporary = crate::bundle::temporary_file_beside(target, TEMPORARY_PREFIX)
        .map_err(write_error(target))?;
    fill(temporary.as_file_mut()).map_err(write_error(target))?;
    let file = temporary.as_file();
    file.set_permissions(fs::Permissions::from_mode(mode))
        .and_then(|()| file.sync_all())
        .map_err(write_error(target))?;
    temporary
        .persist(target)
        .map_err(|error| write_error(target)(error.error))?;
    Ok(())
}

/// Deletes temporary files of an interrupted run, and rejects a folder that contains files
/// other than airlock media's, which `media verify` would report as extra. Files a previous run
/// wrote but this one does not (another key, say) are left for `media verify` to report.
fn clean_folder(to: &Path, archive_name: &str) -> Result<(), MediaError> {
    let entries = fs::read_dir(to).map_err(write_error(to))?;
    for entry in entries {
        let entry = entry.map_err(write_error(to))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(TEMPORARY_PREFIX) {
            let _ = fs::remove_file(entry.path());
            continue;
        }
        let known = [
            BINARY,
            CLUSTER_FILE,
            INSTALL,
            CHECKSUMS_SIGNATURE,
            checksums::JOURNAL,
        ]
        .contains(&name.as_str())
            || IGNORED_NAMES.contains(&name.as_str())
            || name.ends_with(KEY_EXTENSION)
            || is_archive_file(&name, archive_name);
        if !known {
            return Err(MediaError::ForeignFile {
                path: to.to_path_buf(),
                name,
            });
        }
    }
    Ok(())
}

/// Checks whether `dir` is on a FAT file system (vfat or msdos), whose files are limited to 4 GiB.
fn is_fat(dir: &Path) -> bool {
    const MSDOS_SUPER_MAGIC: i64 = 0x4d44;
    let Ok(path) = CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid C string and `stat` a valid, writable statfs structure.
    let result = unsafe { libc::statfs(path.as_ptr(), &mut stat) };
    result == 0 && stat.f_type as i64 == MSDOS_SUPER_MAGIC
}

/// Writes a file's pages to the device and drops them from the page cache, so that the next read
/// comes from the media.
fn evict(path: &Path) -> io::Result<()> {
    let file = File::open(path)?;
    file.sync_all()?;
    // SAFETY: the descriptor is valid for the life of `file`; POSIX_FADV_DONTNEED only advises
    // the kernel and touches no memory of this process.
    let result = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if result != 0 {
        return Err(io::Error::from_raw_os_error(result));
    }
    sync_parent(path)
}

/// Syncs the folder that contains `path`, so that a rename in it reaches the device.
fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        Some(dir) => sync_dir(dir),
        None => sync_dir(Path::new(".")),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn relative_name(to: &Path, path: &Path) -> String {
    path.strip_prefix(to)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn unix_time() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Formats `INSTALL.txt`: what is on the media and the commands to run from it.
fn install_text(
    manifest: &crate::bundle::BundleManifest,
    digest: Digest,
    bundle_name: &str,
    options: &MediaOptions<'_>,
) -> String {
    // An unsigned SHA256SUMS cannot pass a check with --key; the bundle's own signature can.
    let key = match (options.keys.is_empty(), options.sign.is_some()) {
        (false, true) => " --key /path/to/your/copy/of/the/key.pub",
        _ => "",
    };
    let cluster = match options.cluster {
        Some(_) => String::new(),
        None => " -c /path/to/k0sctl.yaml".to_string(),
    };
    let mut text = format!(
        "airlock media: bundle {} version {} (k0s {}), bundle.yaml digest {digest}.\n\n",
        manifest.name, manifest.version, manifest.k0s.version
    );
    text.push_str("Run every command from the folder the media is mounted at, for example:\n");
    text.push_str("  cd /media/usb\n");
    text.push_str("If the media is mounted noexec, copy the whole folder to a local disk and\n");
    text.push_str("run the commands from the copy.\n\n");
    text.push_str("1. Check every file on the media:\n");
    text.push_str(&format!("  ./airlock media verify .{key}\n"));
    text.push_str(&format!("  (without airlock: sha256sum -c {CHECKSUMS})\n"));
    if options.sign.is_some() {
        text.push_str(
            "The *.pub keys on the media detect damage, but only a copy of the key that\n",
        );
        text.push_str("came by another way detects media that were replaced.\n\n");
    } else {
        text.push_str(&format!(
            "{CHECKSUMS} is not signed, so this detects damage only. The bundle\n"
        ));
        text.push_str(
            "itself is signed: check it with a copy of the key that came by another way:\n",
        );
        text.push_str(&format!(
            "  ./airlock bundle verify {bundle_name} --key /path/to/the/key.pub\n\n"
        ));
    }
    text.push_str("2. Install. Run from the media, airlock uses the bundle beside it,\n");
    text.push_str(&format!("   {bundle_name},"));
    match options.cluster {
        Some(_) => text.push_str(&format!(" and the cluster file {CLUSTER_FILE}.\n")),
        None => text.push_str(" and the cluster file you pass with -c.\n"),
    }
    text.push_str(&format!("  ./airlock apply{cluster} --dry-run\n"));
    text.push_str(&format!("  ./airlock apply{cluster}\n\n"));
    text.push_str("Or, on a cluster that runs an older bundle:\n");
    text.push_str(&format!("  ./airlock upgrade{cluster} --dry-run\n"));
    text.push_str(&format!("  ./airlock upgrade{cluster}\n"));
    text
}
