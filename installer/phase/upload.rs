//! Phase "Upload artifacts": every file each host needs, verified on the host before it is
//! renamed into place.

use std::sync::Arc;

use async_trait::async_trait;

use super::context::Run;
use super::plan::{FileSource, PlannedFile, bundle_images};
use super::{HostFailure, Phase, PhaseError, for_each_host};
use crate::bundle::VerifiedBundle;
use crate::remote::stream::{async_pipe, async_reader};
use crate::remote::{Host, HostError, Placement, set_owner_and_mode};
use crate::shell::quote;
use crate::ui::{Item, format_bytes, format_count};

pub struct Upload;

#[async_trait]
impl Phase<Run> for Upload {
    fn title(&self) -> &'static str {
        "Upload artifacts"
    }

    async fn run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        let pending: u64 = run
            .nodes
            .iter()
            .flat_map(|node| &node.uploads)
            .filter(|file| !file.present)
            .count() as u64;
        if pending == 0 {
            run.ui.println("every host holds every file already");
        }
        let bundle = run.shared_bundle();
        let bundle = &bundle;
        let ui = &run.ui;
        let work: Vec<(usize, Arc<Host>, String, Vec<PlannedFile>)> = run
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, node)| node.uploads.iter().any(|file| !file.present))
            .map(|(index, node)| (index, node.host(), node.label(), node.uploads.clone()))
            .collect();
        for_each_host(
            work,
            run.settings.concurrency,
            |(_, host, label, files)| async move {
                let total = files
                    .iter()
                    .filter(|file| !file.present)
                    .map(|file| file.size)
                    .sum();
                let item = ui.item(&label, Some(total));
                // The line names the destination on the host, because a `files[]` entry's
                // name is its local source path, and one local file can go to several places.
                for file in files.iter().filter(|file| !file.present) {
                    item.set_state(&format!("uploading {}", file.path));
                    if let Err(error) = upload_one(&host, bundle, file, &item).await {
                        item.fail(&file.path);
                        return Err(HostFailure::new(label, error));
                    }
                }
                item.finish(&format!(
                    "{}, {}",
                    format_count(files.iter().filter(|f| !f.present).count(), "file", "files"),
                    format_bytes(total)
                ));
                Ok(())
            },
        )
        .await?;

        let mut uploaded = Vec::new();
        for node in &mut run.nodes {
            let label = node.label();
            for file in &mut node.uploads {
                if !file.present {
                    uploaded.push((
                        label.clone(),
                        format!("place {} at {}", file.name, file.path),
                        file.digest,
                    ));
                }
                file.present = true;
                // A staged file counts as placed once an upgrade moved it into place.
                if file.final_path.is_none() {
                    node.placed.insert(file.path.clone(), file.digest);
                    node.placed_modes
                        .insert(file.path.clone(), file.placed_mode());
                }
            }
        }
        for (label, action, digest) in uploaded {
            run.record(self.title(), &label, action, Some(digest));
        }
        restore_modes(run, self.title()).await
    }

    async fn dry_run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        if run.upgrading() {
            // The upgrade plan already counted each host's uploads.
            return Ok(());
        }
        for node in &run.nodes {
            for file in &node.uploads {
                let action = if file.present {
                    "holds"
                } else {
                    "would receive"
                };
                if let Some(mismatch) = &file.mode_mismatch {
                    run.ui.println(&format!(
                        "{}: would restore {} of {} (found {})",
                        node.label(),
                        mismatch.expected,
                        file.path,
                        mismatch.found
                    ));
                }
                run.ui.println(&format!(
                    "{}: {action} {} ({}, {}) at {}",
                    node.label(),
                    file.name,
                    format_bytes(file.size),
                    file.digest.short(),
                    file.path
                ));
            }
        }
        Ok(())
    }
}

/// Restores the planned mode and owner of every file whose bytes were in place but whose mode or
/// owner was changed on the host, with one command per host.
async fn restore_modes(run: &mut Run, phase: &'static str) -> Result<(), PhaseError> {
    let work: Vec<(Arc<Host>, String, Vec<PlannedFile>)> = run
        .nodes
        .iter()
        .filter(|node| node.uploads.iter().any(|file| file.mode_mismatch.is_some()))
        .map(|node| {
            let files = node
                .uploads
                .iter()
                .filter(|file| file.mode_mismatch.is_some())
                .cloned()
                .collect();
            (node.host(), node.label(), files)
        })
        .collect();
    let restored = for_each_host(
        work,
        run.settings.concurrency,
        |(host, label, files)| async move {
            let script: String = files
                .iter()
                .map(|file| {
                    let path = quote(&file.path);
                    let set_mode = set_owner_and_mode(&path, file.owner.as_deref(), &file.mode);
                    format!("{set_mode} || exit 1\n")
                })
                .collect();
            match host.run(&script).await {
                Ok(_) => Ok((label, files)),
                Err(error) => Err(HostFailure::new(label, error)),
            }
        },
    )
    .await?;
    for (label, files) in restored {
        for file in files {
            let Some(mismatch) = file.mode_mismatch else {
                continue;
            };
            let change = format!(
                "{} of {} (found {})",
                mismatch.expected, file.path, mismatch.found
            );
            run.ui.println(&format!("{label}: restored {change}"));
            run.record(
                phase,
                &label,
                format!("restore {change}"),
                Some(file.digest),
            );
        }
    }
    for node in &mut run.nodes {
        for file in &mut node.uploads {
            file.mode_mismatch = None;
        }
    }
    Ok(())
}

async fn upload_one(
    host: &Host,
    bundle: &Arc<VerifiedBundle>,
    file: &PlannedFile,
    item: &Item,
) -> anyhow::Result<()> {
    let mut placement = Placement::new(&file.path, &file.mode);
    if let Some(dir) = &file.staging_dir {
        placement = placement.staged_in(dir);
    }
    if let Some(owner) = &file.owner {
        placement = placement.owned_by(owner);
    }
    if let Some(dir_mode) = &file.dir_mode {
        placement = placement.with_dir_mode(dir_mode);
    }
    let reader: Box<dyn std::io::Read + Send> = match &file.source {
        // The host hashes the bytes it receives and compares them with the signed digest, so
        // they are not hashed a second time here. A mismatch is traced below.
        FileSource::Blob(digest) => Box::new(tokio::task::block_in_place(|| {
            bundle.open_blob_unchecked(digest)
        })?),
        // The digest was computed when the upload was planned, so a file changed since then
        // fails the check on the host.
        FileSource::Local(path) => Box::new(
            std::fs::File::open(path)
                .map_err(|error| anyhow::anyhow!("cannot open {}: {error}", path.display()))?,
        ),
        FileSource::Bytes(bytes) => {
            host.write_verified(placement, &bytes[..], file.size, file.digest, Some(item))
                .await?;
            return Ok(());
        }
        FileSource::ImageArchive(references) => {
            let (bundle, references) = (bundle.clone(), references.clone());
            let reader = async_pipe(move |writer| {
                let images = bundle_images(&bundle, &references).map_err(std::io::Error::other)?;
                bundle
                    .write_oci_archive(&images, writer)
                    .map(drop)
                    .map_err(std::io::Error::other)
            });
            host.write_verified(placement, reader, file.size, file.digest, Some(item))
                .await?;
            return Ok(());
        }
    };
    let written = host
        .write_verified(
            placement,
            async_reader(reader),
            file.size,
            file.digest,
            Some(item),
        )
        .await;
    if let (Err(HostError::DigestMismatch { .. }), FileSource::Blob(digest)) =
        (&written, &file.source)
    {
        // Tell a bundle file that changed since it was verified from bytes that changed on
        // their way to the host.
        tokio::task::block_in_place(|| bundle.check_blob(digest))?;
    }
    written?;
    Ok(())
}
