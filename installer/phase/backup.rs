//! Phases "Take a backup" (`airlock backup`) and "Restore the cluster state"
//! (`apply --restore-from`).
//!
//! A backup is the archive `k0s backup` writes on the leader, downloaded in chunks and hashed
//! while it arrives, saved with a `.sha256` file in sha256sum's format and the blueprint that
//! was stored on the leader. A restore checks the archive against that `.sha256` file (when it
//! lies beside the archive), uploads it to the leader, and runs `k0s restore` before the leader
//! starts for the first time.

use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::context::Run;
use super::plan::airlock_dir;
use super::{HostFailure, Phase, PhaseError};
use crate::blueprint::record::FILE_NAME as BLUEPRINT_FILE_NAME;
use crate::digest::Digest;
use crate::remote::{Host, Placement};
use crate::shell::quote;

/// The bytes fetched per command while downloading an archive; a whole archive could exceed
/// what one command's output may hold.
const CHUNK_MIB: u64 = 8;

/// Phase "Take a backup": `k0s backup` on the leader, the archive downloaded into the output
/// directory.
pub struct TakeBackup;

/// A backup archive written locally.
#[derive(Debug)]
pub struct SavedBackup {
    pub path: PathBuf,
    pub digest: Digest,
    pub size: u64,
}

#[async_trait]
impl Phase<Run> for TakeBackup {
    fn title(&self) -> &'static str {
        "Take a backup"
    }

    async fn run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        let leader = run.leader();
        let (host, label) = (leader.host(), leader.label());
        if !leader.k0s_running() {
            return Err(PhaseError::new(anyhow::anyhow!(
                "k0s does not run on the leader {label}, so there is no cluster state to back up"
            ))
            .with_help("start the cluster with `airlock apply` first"));
        }
        let paths = leader.k0s_paths();
        let dir = run.settings.out_dir.clone();
        let failure = |error: anyhow::Error| {
            PhaseError::new(HostFailure::new(label.clone(), error).into_error())
        };

        let remote_dir = host.run("mktemp -d").await?.trim().to_string();
        let taken = async {
            host.run(&format!(
                "{} backup --save-path={} --data-dir={}",
                quote(paths.binary),
                quote(&remote_dir),
                quote(paths.data_dir)
            ))
            .await?;
            let name = host
                .run(&format!("ls -1 {} | head -n 1", quote(&remote_dir)))
                .await?
                .trim()
                .to_string();
            if name.is_empty() || name.contains('/') {
                anyhow::bail!("k0s backup wrote no archive into {remote_dir}");
            }
            let remote = format!("{remote_dir}/{name}");
            let saved = download(&host, &remote, &dir.join(&name)).await?;
            anyhow::Ok(saved)
        }
        .await;
        if let Err(error) = host.run(&format!("rm -rf -- {}", quote(&remote_dir))).await {
            tracing::warn!(host = %label, %error, dir = %remote_dir, "cannot remove the backup's temporary directory");
        }
        let saved = taken.map_err(failure)?;

        let name = file_name(&saved.path);
        write_text(
            &dir,
            &format!("{name}.sha256"),
            &format!("{}  {name}\n", saved.digest.hex()),
        )?;
        let blueprint_path = format!("{}/{BLUEPRINT_FILE_NAME}", airlock_dir(paths.data_dir));
        match host.read_file(&blueprint_path).await? {
            Some(bytes) => write_bytes(&dir, BLUEPRINT_FILE_NAME, &bytes)?,
            None => run.ui.warn(&format!(
                "{label} holds no blueprint at {blueprint_path}; the backup has none beside it"
            )),
        }
        run.ui.println(&format!(
            "{label}: saved {} ({}, sha256 {})",
            saved.path.display(),
            crate::ui::format_bytes(saved.size),
            saved.digest
        ));
        run.record(
            self.title(),
            &label,
            format!("take backup {name}"),
            Some(saved.digest),
        );
        Ok(())
    }

    async fn dry_run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        run.ui.println(&format!(
            "{}: would run `k0s backup` and save the archive into {}",
            run.leader().label(),
            run.settings.out_dir.display()
        ));
        Ok(())
    }
}

/// Copies `remote` from `host` to `local` in chunks, hashing as the bytes arrive, then checks
/// the digest against the one the host computes.
async fn download(host: &Host, remote: &str, local: &Path) -> anyhow::Result<SavedBackup> {
    let expected = host
        .sha256(remote)
        .await?
        .ok_or_else(|| anyhow::anyhow!("{remote} vanished before it was downloaded"))?;
    let partial = local.with_extension("partial");
    if let Some(dir) = local.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }

    let mut file = std::fs::File::create(&partial)?;
    let mut hasher = crate::digest::Hasher::new();
    let mut size = 0u64;
    for chunk in 0.. {
        let output = host
            .run_output(&format!(
                "dd if={} bs=1M skip={} count={CHUNK_MIB} 2>/dev/null",
                quote(remote),
                chunk * CHUNK_MIB
            ))
            .await?;
        if !output.success() {
            anyhow::bail!("reading {remote} failed: {}", output.stderr_tail());
        }
        if output.stdout.is_empty() {
            break;
        }
        hasher.update(&output.stdout);
        file.write_all(&output.stdout)?;
        size += output.stdout.len() as u64;
        if (output.stdout.len() as u64) < CHUNK_MIB << 20 {
            break;
        }
    }
    file.sync_all()?;

    let computed = hasher.finish();
    if computed != expected {
        let _ = std::fs::remove_file(&partial);
        anyhow::bail!(
            "the downloaded {remote} has sha256 {computed}, but the host computed {expected}"
        );
    }
    std::fs::rename(&partial, local)?;
    Ok(SavedBackup {
        path: local.to_path_buf(),
        digest: computed,
        size,
    })
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn write_text(dir: &Path, name: &str, text: &str) -> Result<(), PhaseError> {
    write_bytes(dir, name, text.as_bytes())
}

fn write_bytes(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), PhaseError> {
    crate::blueprint::write_file(dir, name, bytes).map_err(PhaseError::new)
}

/// The archive `--restore-from` names, read and checked before any host is changed.
pub struct RestoreSource {
    pub path: PathBuf,
    pub size: u64,
    pub digest: Digest,
}

/// Reads the archive and, where `<archive>.sha256` exists, checks the archive against it.
pub fn read_restore_source(path: &Path) -> anyhow::Result<RestoreSource> {
    let (digest, size) = crate::digest::hash_file(path)
        .map_err(|error| anyhow::anyhow!("cannot read the backup {}: {error}", path.display()))?;
    let mut checksum = path.as_os_str().to_owned();
    checksum.push(".sha256");
    let checksum = PathBuf::from(checksum);
    if let Ok(text) = std::fs::read_to_string(&checksum) {
        let expected = text
            .split_whitespace()
            .next()
            .and_then(|hex| Digest::from_hex(hex).ok())
            .ok_or_else(|| {
                anyhow::anyhow!("{} contains no valid sha256 digest", checksum.display())
            })?;
        if expected != digest {
            anyhow::bail!(
                "the backup {} has sha256 {digest}, but {} expects {expected}",
                path.display(),
                checksum.display()
            );
        }
    } else {
        tracing::warn!(backup = %path.display(), "no .sha256 file beside the backup; its digest is recorded but not checked");
    }
    Ok(RestoreSource {
        path: path.to_path_buf(),
        size,
        digest,
    })
}

/// Phase "Restore the cluster state": with `--restore-from`, the leader restores the backup
/// before it starts for the first time.
pub struct RestoreCluster;

#[async_trait]
impl Phase<Run> for RestoreCluster {
    fn title(&self) -> &'static str {
        "Restore the cluster state"
    }

    fn should_run(&self, run: &Run) -> bool {
        run.settings.restore_from.is_some()
    }

    async fn run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        let path = run
            .settings
            .restore_from
            .clone()
            .expect("checked by should_run");
        // k0s restores only into a stopped, empty data directory, as on fresh hosts.
        if run.leader().k0s_running() {
            run.ui.warn(&format!(
                "k0s already runs on {}, so {} is not restored; reset the cluster first to restore it",
                run.leader().label(),
                path.display()
            ));
            return Ok(());
        }
        let source = read_restore_source(&path).map_err(|error| {
            PhaseError::new(error).with_help(
                "pass the archive that `airlock backup` wrote, with its .sha256 file beside it",
            )
        })?;

        let leader = run.leader();
        let (host, label, paths) = (leader.host(), leader.label(), leader.k0s_paths());
        let restored = async {
            let remote_dir = host.run("mktemp -d").await?.trim().to_string();
            let archive = format!("{remote_dir}/k0s_backup.tar.gz");
            let result = async {
                // The host checks the digest before the archive is moved into place, so an archive
                // changed after the check above is not restored.
                let file = tokio::fs::File::open(&source.path).await?;
                host.write_verified(
                    Placement::new(&archive, "0600"),
                    file,
                    source.size,
                    source.digest,
                    None,
                )
                .await?;
                host.run(&format!(
                    "cd {dir} && {k0s} restore --data-dir={data} --config-out={dir}/restored-k0s.yaml {archive}",
                    dir = quote(&remote_dir),
                    k0s = quote(paths.binary),
                    data = quote(paths.data_dir),
                    archive = quote(&archive)
                ))
                .await?;
                anyhow::Ok(())
            }
            .await;
            if let Err(error) = host.run(&format!("rm -rf -- {}", quote(&remote_dir))).await {
                tracing::warn!(host = %host.label(), %error, "cannot remove the restore's temporary directory");
            }
            result
        }
        .await;

        restored.map_err(|error| {
            PhaseError::new(HostFailure::new(label.clone(), error).into_error())
        })?;
        run.ui.println(&format!(
            "{label}: restored the cluster state from {}",
            source.path.display()
        ));
        run.record(
            self.title(),
            &label,
            format!("restore the cluster state from {}", file_name(&source.path)),
            Some(source.digest),
        );
        Ok(())
    }

    async fn dry_run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        let path = run
            .settings
            .restore_from
            .clone()
            .expect("checked by should_run");
        let source = read_restore_source(&path).map_err(PhaseError::new)?;
        run.ui.println(&format!(
            "{}: would restore the cluster state from {} (sha256 {})",
            run.leader().label(),
            source.path.display(),
            source.digest
        ));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive_with_checksum(checksum: Option<&str>) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("k0s_backup.tar.gz");
        std::fs::write(&archive, b"backup bytes").unwrap();
        if let Some(text) = checksum {
            std::fs::write(dir.path().join("k0s_backup.tar.gz.sha256"), text).unwrap();
        }
        (dir, archive)
    }

    #[test]
    fn restore_source_matches_checksum() {
        let digest = Digest::of_bytes(b"backup bytes");
        let (_dir, archive) =
            archive_with_checksum(Some(&format!("{}  k0s_backup.tar.gz\n", digest.hex())));
        let source = read_restore_source(&archive).unwrap();
        assert_eq!(source.digest, digest);
    }

    #[test]
    fn restore_source_without_checksum_is_read() {
        let (_dir, archive) = archive_with_checksum(None);
        assert!(read_restore_source(&archive).is_ok());
    }

    #[test]
    fn restore_source_rejects_other_digest() {
        let other = Digest::of_bytes(b"other bytes");
        let (_dir, archive) =
            archive_with_checksum(Some(&format!("{}  k0s_backup.tar.gz\n", other.hex())));
        let error = read_restore_source(&archive)
            .err()
            .expect("an error")
            .to_string();
        assert!(error.contains(&other.to_string()), "{error}");
        assert!(error.contains("k0s_backup.tar.gz.sha256"), "{error}");
    }

    #[test]
    fn restore_source_rejects_invalid_checksum_file() {
        let (_dir, archive) = archive_with_checksum(Some("not a digest\n"));
        let error = read_restore_source(&archive)
            .err()
            .expect("an error")
            .to_string();
        assert!(error.contains("no valid sha256 digest"), "{error}");
    }

    #[test]
    fn restore_source_names_missing_archive() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent.tar.gz");
        let error = read_restore_source(&missing)
            .err()
            .expect("an error")
            .to_string();
        assert!(error.contains("absent.tar.gz"), "{error}");
    }
}
