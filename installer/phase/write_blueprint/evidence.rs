//! The facts the compliance matrix is computed from, read during the run: the cluster id and a
//! snapshot of API objects on the first controller, the images inside image archives, every
//! placed file re-hashed on its host, and the state of the controllers' audit logs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use futures::stream::{self, StreamExt};

use crate::blueprint::artifacts::archive_images;
use crate::blueprint::audit::{self, Head};
use crate::blueprint::compliance::AuditEvidence;
use crate::blueprint::controllers::{self, remote_path};
use crate::blueprint::live::{self, HostObservation, LiveCluster};
use crate::blueprint::record::{Blueprint, ImageRecord, PolicyRecord};
use crate::bundle::ArtifactKind;
use crate::digest::Digest;
use crate::phase::context::Run;
use crate::phase::{HostFailure, HostFailures};

/// Reads the `kube-system` namespace uid on the first controller, the id k0sctl reads too.
pub async fn read_cluster_id(run: &Run) -> Option<String> {
    let leader = run.leader();
    let command = leader.k0s_paths().kubectl(live::CLUSTER_ID_ARGUMENTS);
    match leader.host().run(&command).await {
        Ok(id) if !id.trim().is_empty() => Some(id.trim().to_string()),
        Ok(_) => None,
        Err(error) => {
            tracing::warn!(host = %leader.label(), %error, "cannot read the cluster id");
            None
        }
    }
}

/// Takes the snapshot of API objects on the first controller, with the recorded policies of kinds
/// the snapshot does not list.
pub async fn read_live(run: &Run, policies: &[PolicyRecord]) -> Result<LiveCluster, String> {
    let leader = run.leader();
    let command = leader.k0s_paths().kubectl(&live::snapshot_arguments());
    let output = leader
        .host()
        .run_output(&command)
        .await
        .map_err(|error| error.to_string())?;
    if !output.success() {
        return Err(format!(
            "{}: kubectl failed: {}",
            leader.label(),
            output.stderr_tail()
        ));
    }
    let mut live = LiveCluster::parse(&output.stdout).map_err(|error| error.to_string())?;
    live.add_other_policies(&leader.host(), leader.k0s_paths(), policies)
        .await;
    Ok(live)
}

/// Lists the images inside every image archive placed on a host.
pub fn read_archive_images(run: &Run) -> BTreeMap<String, Vec<ImageRecord>> {
    let placed: BTreeSet<Digest> = run
        .nodes
        .iter()
        .flat_map(|node| node.placed.values().copied())
        .collect();
    let bundle = run.bundle();
    tokio::task::block_in_place(|| {
        bundle
            .artifacts_of_kind(&ArtifactKind::ImageArchive)
            .filter(|artifact| placed.contains(&artifact.digest))
            .filter_map(|artifact| match archive_images(bundle, artifact) {
                Ok(images) => Some((artifact.name.clone(), images)),
                Err(error) => {
                    tracing::warn!(artifact = %artifact.name, error = %format!("{error:#}"), "cannot list the images of an image archive");
                    None
                }
            })
            .collect()
    })
}

/// Re-hashes every file the blueprint lists on each host, and reads its k0s state.
pub async fn observe_hosts(
    run: &Run,
    blueprint: &Blueprint,
) -> BTreeMap<String, Result<HostObservation, String>> {
    let charts: Vec<&str> = blueprint
        .stacks
        .iter()
        .flat_map(|stack| stack.charts.iter().map(|chart| chart.path.as_str()))
        .collect();
    let work: Vec<_> = run
        .nodes
        .iter()
        .filter(|node| !node.spec.reset)
        .zip(&blueprint.nodes)
        .map(|(node, record)| {
            let mut paths: Vec<String> = record.files.keys().cloned().collect();
            if record.is_controller() {
                paths.extend(charts.iter().map(|path| path.to_string()));
            }
            paths.sort();
            paths.dedup();
            (
                record.name.clone(),
                node.host(),
                node.spec.k0s_install_path.clone(),
                paths,
            )
        })
        .collect();
    stream::iter(work)
        .map(|(name, host, binary, paths)| async move {
            let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
            let script = live::observation_script(&binary, &paths);
            let observation = match host.run(&script).await {
                Ok(output) => live::parse_observation(&output, &paths).map_err(|e| e.to_string()),
                Err(error) => Err(error.to_string()),
            };
            (name, observation)
        })
        .buffer_unordered(run.settings.concurrency.max(1))
        .collect()
        .await
}

/// Brings every controller's audit log up to the local one, then describes the state of all
/// copies for the compliance matrix.
pub async fn sync_audit_logs(
    run: &Run,
    log_path: &Path,
    head: Head,
) -> (AuditEvidence, HostFailures) {
    let text = audit::read_log(log_path).map_err(|error| format!("{error:#}"));
    let verified = text.as_ref().map_err(Clone::clone).and_then(|text| {
        audit::verify(text.as_deref().unwrap_or_default(), Some(&head))
            .map_err(|error| error.to_string())
    });
    let controllers: Vec<_> = run
        .nodes
        .iter()
        .filter(|node| node.spec.role.is_controller() && !node.spec.reset)
        .map(|node| {
            (
                node.label(),
                node.host(),
                remote_path(&node.spec.data_dir, audit::FILE_NAME),
            )
        })
        .collect();
    let total = controllers.len();
    let text = text.ok().flatten().unwrap_or_default();
    let text = &text;
    let results: Vec<(String, Result<Head, String>)> = stream::iter(controllers)
        .map(|(label, host, path)| async move {
            let synced = controllers::sync_log(&host, &path, text)
                .await
                .map_err(|error| error.to_string());
            (label, synced)
        })
        .buffered(run.settings.concurrency.max(1))
        .collect()
        .await;
    let failures = results
        .iter()
        .filter_map(|(label, result)| {
            result
                .as_ref()
                .err()
                .map(|error| HostFailure::new(label.clone(), anyhow::anyhow!("{error}")))
        })
        .collect();
    let evidence = AuditEvidence {
        chain: verified.as_ref().map(|_| ()).map_err(Clone::clone),
        head,
        genesis: verified.ok().and_then(|verified| verified.genesis),
        controllers: results,
    };
    (evidence, HostFailures { failures, total })
}
