//! Removable media: a verified bundle written onto a mounted disk together with the airlock
//! binary and the trusted keys, then read back from the disk itself and checked byte for byte.
//!
//! Writing is not trusted until the bytes come back: every file is synced, its pages are dropped
//! from the page cache (`posix_fadvise(POSIX_FADV_DONTNEED)`), and it is hashed again, so a
//! failing USB stick or a full disk is found at the office rather than inside the site.

use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::bundle::archive::{self, PackOptions};
use crate::bundle::{Bundle, PublicKey, TrustPolicy, VerifiedBundle, VerifyError};
use crate::digest::{Digest, hash_file};
use crate::ui::Ui;

/// The checksum file on the media, in `sha256sum -c` format.
pub const CHECKSUMS: &str = "SHA256SUMS";

/// The bundle, media and keys to write.
pub struct MediaOptions<'a> {
    pub bundle: &'a Path,
    pub to: &'a Path,
    pub split_size: Option<u64>,
    pub keys: Vec<(PathBuf, PublicKey)>,
    pub allow_unsigned: bool,
}

/// The files written and checked.
pub struct MediaSummary {
    pub files: Vec<(PathBuf, u64, Digest)>,
    pub archive: PathBuf,
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
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
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
}

/// Writes the media and checks it.
pub fn create(options: &MediaOptions<'_>, ui: &Ui) -> Result<MediaSummary, MediaError> {
    let keys: Vec<PublicKey> = options.keys.iter().map(|(_, key)| key.clone()).collect();
    let policy = TrustPolicy::new(keys, options.allow_unsigned);
    let bundle_error = |source| MediaError::Bundle {
        path: options.bundle.to_path_buf(),
        source,
    };
    ui.header("Verify the bundle");
    let verified = Bundle::open(options.bundle)
        .and_then(|bundle| bundle.verify(&policy, ui))
        .map_err(bundle_error)?;

    let to = options.to;
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

    ui.header("Write the media");
    let manifest = verified.manifest();
    let archive = to.join(format!("{}-{}.tar.zst", manifest.name, manifest.version));
    let pack_options = PackOptions {
        split_size: options.split_size,
        ..PackOptions::default()
    };
    let packed = archive::pack(options.bundle, &archive, &pack_options, ui)?;
    let mut written: Vec<PathBuf> = packed.files.clone();

    let binary = to.join("airlock");
    let write_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| MediaError::Write { path, source }
    };
    let exe = std::env::current_exe().map_err(write_error(&binary))?;
    fs::copy(&exe, &binary).map_err(write_error(&binary))?;
    fs::set_permissions(&binary, fs::Permissions::from_mode(0o755))
        .map_err(write_error(&binary))?;
    written.push(binary);

    let keys_dir = to.join("keys");
    if !options.keys.is_empty() {
        fs::create_dir_all(&keys_dir).map_err(write_error(&keys_dir))?;
    }
    for (path, _) in &options.keys {
        let name = path
            .file_name()
            .map_or_else(|| "trusted.pub".into(), |n| n.to_os_string());
        let target = keys_dir.join(name);
        fs::copy(path, &target).map_err(write_error(&target))?;
        written.push(target);
    }
    let readme = to.join("README.txt");
    fs::write(&readme, readme_text(&verified, &archive, &packed.files))
        .map_err(write_error(&readme))?;
    written.push(readme);

    // Hash what was written from this machine's view, then make the media give it back.
    let mut files = Vec::new();
    for path in &written {
        let (digest, size) = hash_file(path).map_err(write_error(path))?;
        files.push((path.clone(), size, digest));
    }
    let checksums = to.join(CHECKSUMS);
    let mut text = String::new();
    for (path, _, digest) in &files {
        let relative = path.strip_prefix(to).unwrap_or(path);
        text.push_str(&format!("{}  {}\n", digest.hex(), relative.display()));
    }
    fs::write(&checksums, text).map_err(write_error(&checksums))?;

    ui.header("Read every byte back from the media");
    for (path, _, expected) in &files {
        let item = ui.item(
            &path.strip_prefix(to).unwrap_or(path).display().to_string(),
            None,
        );
        item.set_state("syncing");
        evict(path).map_err(write_error(path))?;
        item.set_state("reading back");
        let (computed, _) = hash_file(path).map_err(write_error(path))?;
        if computed != *expected {
            item.fail("mismatch");
            return Err(MediaError::ReadBack {
                path: path.clone(),
                expected: *expected,
                computed,
            });
        }
        item.finish("matches");
    }
    evict(&checksums).map_err(write_error(&checksums))?;
    let first = packed.files.first().cloned().unwrap_or(archive.clone());
    Bundle::open(&first)
        .and_then(|bundle| bundle.verify(&policy, ui))
        .map_err(|source| MediaError::PackedBundle { source })?;
    Ok(MediaSummary {
        files,
        archive: first,
    })
}

/// Writes a file's pages to the device and drops them from the page cache, so that the next read
/// comes from the media.
fn evict(path: &Path) -> std::io::Result<()> {
    let file = File::open(path)?;
    file.sync_all()?;
    // SAFETY: the descriptor is valid for the life of `file`; POSIX_FADV_DONTNEED only advises
    // the kernel and touches no memory of this process.
    let result = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if result != 0 {
        return Err(std::io::Error::from_raw_os_error(result));
    }
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn readme_text(bundle: &VerifiedBundle, archive: &Path, parts: &[PathBuf]) -> String {
    let manifest = bundle.manifest();
    let first = parts
        .first()
        .map_or_else(|| archive.to_path_buf(), Clone::clone);
    let name = |path: &Path| {
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let mut text = String::new();
    text.push_str(&format!(
        "airlock media: bundle {} version {} (k0s {}), {}.\n\n",
        manifest.name,
        manifest.version,
        manifest.k0s.version,
        bundle.digest()
    ));
    text.push_str("Check the media before use (sha256sum from coreutils, or airlock itself):\n");
    text.push_str("  sha256sum -c SHA256SUMS\n");
    text.push_str(&format!(
        "  ./airlock bundle verify {} --key keys/<key>.pub\n\n",
        name(&first)
    ));
    text.push_str("Install (see ./airlock apply --help):\n");
    text.push_str(&format!(
        "  ./airlock apply -c cluster.yaml --bundle {}\n",
        name(&first)
    ));
    text
}
