//! Phase "Write the blueprint": the as-built record, the compliance report, the SBOM and the
//! audit log head, locally and onto every controller.
//!
//! Before writing, the phase checks what the record claims. It reads the cluster id and a
//! snapshot of the API objects on the first controller, re-hashes every placed file on every host,
//! and brings each controller's audit log up to the local one. The compliance matrix is computed
//! from those facts. The audit head the blueprint records is the last entry of this run: writing
//! the blueprint itself is not logged, so that the head stays the one the files name.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use async_trait::async_trait;
use futures::stream::{self, StreamExt};

use super::context::Run;
use super::plan::FileSource;
use super::{HostFailure, HostFailures, Phase, PhaseError, for_each_host};
use crate::blueprint::artifacts::archive_images;
use crate::blueprint::audit::{self, Draft, Head};
use crate::blueprint::compliance::{self, AuditEvidence, Evidence, Outcome};
use crate::blueprint::controllers::{self, remote_path};
use crate::blueprint::live::{self, HostObservation, LiveCluster};
use crate::blueprint::record::{
    ArtifactRecord, AuditRecord, Blueprint, BundleRecord, ClusterRecord, FORMAT_VERSION, GpuRecord,
    HostFileRecord, ImageRecord, K0sRecord, NodeRecord, StackRecord, WrittenBy,
    policies_from_manifests, policies_from_rendered, residency_record, tenant_records,
};
use crate::blueprint::sign::SIGNATURE_SUFFIX;
use crate::blueprint::{now_rfc3339, report, sbom, write_file};
use crate::bundle::{ArtifactKind, Signer};
use crate::config::CONFIG_FILE;
use crate::digest::Digest;

pub struct WriteBlueprint;

/// The files the phase writes, by name, in the order they are written.
struct Outputs {
    files: Vec<(String, Vec<u8>)>,
    passed: usize,
    controls: usize,
    packages: usize,
}

#[async_trait]
impl Phase<Run> for WriteBlueprint {
    fn title(&self) -> &'static str {
        "Write the blueprint"
    }

    async fn run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        if let Some(failure) = run.audit.failure() {
            return Err(PhaseError::new(anyhow::anyhow!(
                "the audit log could not be written, so the run is not fully recorded: {failure}"
            ))
            .with_help(
                "free space or fix permissions in the --out directory, then run apply again",
            ));
        }
        let log_path = run.settings.out_dir.join(audit::FILE_NAME);
        let head = run
            .audit
            .log()
            .map(|log| log.head())
            .ok_or_else(|| PhaseError::new(anyhow::anyhow!("the audit log was not opened")))?;

        let cluster_id = read_cluster_id(run).await;
        let live = read_live(run).await;
        let archive_images = read_archive_images(run);
        let mut blueprint = build(run, cluster_id, &archive_images, head);
        let hosts = observe_hosts(run, &blueprint).await;
        let (audit_evidence, sync_failures) = sync_audit_logs(run, &log_path, head).await;

        let evidence = Evidence {
            live: live.as_ref().map_err(Clone::clone),
            hosts: &hosts,
            audit: &audit_evidence,
        };
        blueprint.compliance = compliance::evaluate(&blueprint, &evidence);
        let outputs = render_outputs(run, &blueprint, head)?;

        for (name, bytes) in &outputs.files {
            write_file(&run.settings.out_dir, name, bytes)?;
        }
        push_to_controllers(run, &outputs).await?;
        if !sync_failures.failures.is_empty() {
            return Err(PhaseError::new(sync_failures).with_help(
                "the blueprint was written; the audit log copies named above need attention",
            ));
        }

        let out = run.settings.out_dir.display();
        run.ui.println(&format!(
            "wrote {out}/{}, {out}/{} ({} of {} controls pass), {out}/{} ({} packages), {} entries in {}",
            crate::blueprint::FILE_NAME,
            report::FILE_NAME,
            outputs.passed,
            outputs.controls,
            sbom::FILE_NAME,
            outputs.packages,
            head.lines,
            log_path.display()
        ));
        if let Some(key) = &run.settings.blueprint_key {
            run.ui.println(&format!(
                "signed {} and {} with key {}",
                crate::blueprint::FILE_NAME,
                audit::HEAD_FILE_NAME,
                key.id()
            ));
        }
        Ok(())
    }

    async fn dry_run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        run.ui.println(&format!(
            "would write {}, {}, {} and {} in {} and on every controller",
            crate::blueprint::FILE_NAME,
            report::FILE_NAME,
            sbom::FILE_NAME,
            audit::HEAD_FILE_NAME,
            run.settings.out_dir.display()
        ));
        Ok(())
    }
}

/// Builds the blueprint from what the run did and learned; the compliance matrix is added later.
pub fn build(
    run: &Run,
    cluster_id: Option<String>,
    archive_images: &BTreeMap<String, Vec<ImageRecord>>,
    head: Head,
) -> Blueprint {
    let bundle = run.bundle();
    let manifest = bundle.manifest();
    let nodes: Vec<NodeRecord> = run
        .nodes
        .iter()
        .map(|node| {
            let name = node.node_name();
            let labels = run
                .stacks
                .as_ref()
                .and_then(|rendered| rendered.host(&name))
                .map(|plan| plan.labels.clone())
                .unwrap_or_default();
            NodeRecord {
                role: node.spec.role.to_string(),
                address: node.spec.ssh.address.to_string(),
                port: node.spec.ssh.port,
                private_address: node.spec.private_address.map(|address| address.to_string()),
                hostname: node.facts.hostname.clone(),
                os: node.facts.os_name.clone(),
                kernel: node.facts.kernel.clone(),
                architecture: node.facts.architecture.clone(),
                cpus: node.facts.cpus,
                memory_bytes: node.facts.memory_bytes,
                gpus: node
                    .facts
                    .gpus
                    .iter()
                    .map(|gpu| GpuRecord {
                        address: gpu.address.clone(),
                        device_id: gpu.device_id.clone(),
                        name: gpu.name.clone(),
                    })
                    .collect(),
                nvidia_driver: node.facts.nvidia_driver.clone(),
                k0s_version: manifest.k0s.version.clone(),
                labels,
                files: node.placed.clone(),
                host_files: run
                    .stacks
                    .as_ref()
                    .and_then(|rendered| rendered.host(&name))
                    .map(|plan| {
                        plan.files
                            .iter()
                            .map(|file| HostFileRecord {
                                path: file.path.clone(),
                                digest: file.digest,
                                reason: file.reason.clone(),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                name,
            }
        })
        .collect();

    let leader_files = &run.leader().placed;
    let chart_artifact = |archive: &str| {
        bundle
            .artifacts_of_kind(&ArtifactKind::Chart)
            .find(|artifact| {
                artifact.install.as_ref().is_some_and(|install| {
                    install.path.to_string().rsplit('/').next() == Some(archive)
                }) || artifact.name == archive
            })
            .map(|artifact| artifact.digest)
    };
    let stacks: Vec<StackRecord> = run
        .stacks
        .iter()
        .flat_map(|rendered| &rendered.stacks)
        .map(|stack| {
            let version = manifest
                .stacks
                .iter()
                .find(|bundled| bundled.name == stack.stack.name())
                .map(|bundled| bundled.version.clone());
            let outcome = run
                .stack_status
                .get(&stack.stack)
                .map(|outcome| (outcome.ready, outcome.detail.clone()));
            StackRecord::from_rendered(stack, version, outcome, |chart| {
                leader_files
                    .get(&chart.path)
                    .copied()
                    .or_else(|| chart_artifact(&chart.archive))
            })
        })
        .collect();

    let artifacts = deployed_artifacts(run, &nodes, &stacks, archive_images);
    let mut policies = run
        .stacks
        .as_ref()
        .map(policies_from_rendered)
        .unwrap_or_default();
    policies.extend(policies_from_manifests(&run.cluster.manifests));
    let identity = run.audit.identity();
    let (signature, signing_key_id) = match bundle.signer() {
        Signer::Trusted { key_id, .. } => ("trusted", Some(key_id.to_string())),
        Signer::Unchecked { key_id } => ("unchecked", Some(key_id.to_string())),
        Signer::Unsigned => ("unsigned", None),
    };

    Blueprint {
        format_version: FORMAT_VERSION,
        written_at: now_rfc3339(),
        written_by: WrittenBy {
            airlock: identity.airlock.clone(),
            operator: identity.operator.clone(),
            command: identity.command.clone(),
        },
        cluster: ClusterRecord {
            name: run.cluster.name.clone(),
            id: cluster_id,
        },
        bundle: BundleRecord {
            name: manifest.name.clone(),
            version: manifest.version,
            digest: bundle.digest(),
            signature: signature.to_string(),
            signing_key_id,
            artifacts,
        },
        k0s: K0sRecord {
            version: manifest.k0s.version.clone(),
            config_path: CONFIG_FILE.to_string(),
            config_digests: nodes
                .iter()
                .filter_map(|node| Some((node.name.clone(), *node.files.get(CONFIG_FILE)?)))
                .collect(),
        },
        residency: residency_record(run.cluster.airlock.residency.as_ref(), &nodes),
        tenants: tenant_records(&run.cluster.airlock.tenants),
        nodes,
        stacks,
        policies,
        audit_log: AuditRecord {
            entries: head.lines,
            head: head.digest,
        },
        compliance: Vec::new(),
    }
}

/// Lists the bundle artifacts this run deployed: files placed on a host, and images a stack uses.
fn deployed_artifacts(
    run: &Run,
    nodes: &[NodeRecord],
    stacks: &[StackRecord],
    archive_images: &BTreeMap<String, Vec<ImageRecord>>,
) -> Vec<ArtifactRecord> {
    let placed: BTreeSet<Digest> = nodes
        .iter()
        .flat_map(|node| node.files.values().copied())
        .collect();
    let used_images: BTreeSet<Digest> = stacks
        .iter()
        .flat_map(|stack| stack.images.iter().map(|image| image.digest))
        .collect();
    let chart_versions: BTreeMap<&str, &str> = stacks
        .iter()
        .flat_map(|stack| &stack.charts)
        .map(|chart| (chart.archive.as_str(), chart.version.as_str()))
        .collect();
    let k0s_version = &run.bundle().manifest().k0s.version;
    run.bundle()
        .artifacts()
        .iter()
        .filter(|artifact| {
            placed.contains(&artifact.digest)
                || (artifact.kind == ArtifactKind::Image && used_images.contains(&artifact.digest))
        })
        .map(|artifact| {
            let archive_name = artifact
                .install
                .as_ref()
                .map(|install| install.path.to_string())
                .and_then(|path| path.rsplit('/').next().map(str::to_string));
            let version = match artifact.kind {
                ArtifactKind::K0sBinary => Some(k0s_version.clone()),
                ArtifactKind::Chart => archive_name
                    .as_deref()
                    .and_then(|name| chart_versions.get(name))
                    .map(|version| version.to_string()),
                _ => None,
            };
            ArtifactRecord {
                name: artifact.name.clone(),
                kind: artifact.kind.to_string(),
                digest: artifact.digest,
                size: artifact.size,
                platform: artifact.platform.as_ref().map(ToString::to_string),
                stack: artifact.stack.clone(),
                version,
                reference: artifact.reference.clone(),
                images: archive_images
                    .get(&artifact.name)
                    .cloned()
                    .unwrap_or_default(),
                built: false,
            }
        })
        .chain(stack_archives(run))
        .collect()
}

/// Lists the image archives airlock wrote from bundle images, one per stack with images.
fn stack_archives(run: &Run) -> Vec<ArtifactRecord> {
    let bundle = run.bundle();
    let mut archives: BTreeMap<Digest, ArtifactRecord> = BTreeMap::new();
    for file in run.nodes.iter().flat_map(|node| &node.uploads) {
        let FileSource::ImageArchive(references) = &file.source else {
            continue;
        };
        let images: Vec<&crate::bundle::Image> = bundle
            .images()
            .iter()
            .filter(|image| references.contains(&image.reference))
            .collect();
        archives
            .entry(file.digest)
            .or_insert_with(|| ArtifactRecord {
                name: file.name.clone(),
                kind: ArtifactKind::ImageArchive.to_string(),
                digest: file.digest,
                size: file.size,
                platform: None,
                stack: images.iter().find_map(|image| image.stack.clone()),
                version: None,
                reference: None,
                images: images
                    .iter()
                    .map(|image| ImageRecord {
                        reference: image.reference.clone(),
                        digest: image.digest(),
                    })
                    .collect(),
                built: true,
            });
    }
    archives.into_values().collect()
}

/// Reads the `kube-system` namespace uid on the first controller, the id k0sctl reads too.
async fn read_cluster_id(run: &Run) -> Option<String> {
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

/// Takes the snapshot of API objects on the first controller.
async fn read_live(run: &Run) -> Result<LiveCluster, String> {
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
    LiveCluster::parse(&output.stdout).map_err(|error| error.to_string())
}

/// Lists the images inside every image archive placed on a host.
fn read_archive_images(run: &Run) -> BTreeMap<String, Vec<ImageRecord>> {
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
async fn observe_hosts(
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
        .buffered(run.settings.concurrency.max(1))
        .collect()
        .await
}

/// Brings every controller's audit log up to the local one, then describes the state of all
/// copies for the compliance matrix.
async fn sync_audit_logs(run: &Run, log_path: &Path, head: Head) -> (AuditEvidence, HostFailures) {
    let text = audit::read_log(log_path).map_err(|error| format!("{error:#}"));
    let verified = text.as_ref().map_err(Clone::clone).and_then(|text| {
        audit::verify(text.as_deref().unwrap_or_default(), Some(&head))
            .map_err(|error| error.to_string())
    });
    let controllers: Vec<_> = run
        .nodes
        .iter()
        .filter(|node| node.spec.role.is_controller())
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

/// Renders every output file, with signatures when a key was given.
fn render_outputs(run: &Run, blueprint: &Blueprint, head: Head) -> Result<Outputs, PhaseError> {
    let yaml = blueprint.to_yaml()?;
    let html = report::render(blueprint).map_err(|error| {
        PhaseError::new(error)
            .with_help("this is a bug in airlock; the blueprint.yaml is still valid")
    })?;
    let document = sbom::sbom(blueprint);
    let packages = document["packages"].as_array().map_or(0, Vec::len);
    let sbom_text = format!(
        "{}\n",
        serde_json::to_string_pretty(&document).expect("an SBOM always serializes")
    );
    let head_text = head.to_text();

    let mut files = vec![
        (
            crate::blueprint::FILE_NAME.to_string(),
            yaml.clone().into_bytes(),
        ),
        (report::FILE_NAME.to_string(), html.into_bytes()),
        (sbom::FILE_NAME.to_string(), sbom_text.into_bytes()),
        (audit::HEAD_FILE_NAME.to_string(), head_text.into_bytes()),
    ];
    if let Some(key) = &run.settings.blueprint_key {
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs())
            .unwrap_or(0);
        let sign_error = |reason: String| {
            PhaseError::new(anyhow::anyhow!("cannot sign the blueprint: {reason}"))
        };
        let blueprint_signature = key
            .sign_blueprint(&yaml, &blueprint.cluster.name, &head, timestamp)
            .map_err(sign_error)?;
        let head_signature = key.sign_head(&head, timestamp).map_err(sign_error)?;
        files.push((
            format!("{}{SIGNATURE_SUFFIX}", crate::blueprint::FILE_NAME),
            blueprint_signature.into_bytes(),
        ));
        files.push((
            format!("{}{SIGNATURE_SUFFIX}", audit::HEAD_FILE_NAME),
            head_signature.into_bytes(),
        ));
    }
    let passed = blueprint
        .compliance
        .iter()
        .filter(|control| control.result == Outcome::Pass)
        .count();
    Ok(Outputs {
        files,
        passed,
        controls: blueprint.compliance.len(),
        packages,
    })
}

/// Writes every output file into each controller's airlock directory.
async fn push_to_controllers(run: &Run, outputs: &Outputs) -> Result<(), PhaseError> {
    let controllers: Vec<_> = run
        .nodes
        .iter()
        .filter(|node| node.spec.role.is_controller())
        .map(|node| (node.host(), node.label(), node.spec.data_dir.clone()))
        .collect();
    let files = &outputs.files;
    for_each_host(
        controllers,
        run.settings.concurrency,
        |(host, label, data_dir)| async move {
            for (name, bytes) in files {
                host.write_file(&remote_path(&data_dir, name), bytes, "0600")
                    .await
                    .map_err(|error| HostFailure::new(label.clone(), error))?;
            }
            Ok(())
        },
    )
    .await?;
    Ok(())
}

/// Records a failed phase in the audit log, one entry per failed host, then writes the log head
/// and brings the controllers' copies up to date where they can be reached. A failure before
/// the log was opened stays unrecorded: no host was changed by then.
pub async fn record_failure(run: &mut Run, error: &PhaseError) {
    let failed: Vec<(String, String)> = match error.error.downcast_ref::<HostFailures>() {
        Some(failures) => failures
            .failures
            .iter()
            .map(|failure| (failure.host.clone(), summary(&failure.error)))
            .collect(),
        None => vec![("local".to_string(), summary(&error.error))],
    };
    for (host, reason) in failed {
        run.audit.record(Draft {
            time: now_rfc3339(),
            phase: error.phase.to_string(),
            host,
            action: "phase failed".to_string(),
            digest: None,
            result: format!("failed: {reason}"),
        });
    }
    let Some(head) = run.audit.log().map(|log| log.head()) else {
        return;
    };
    if let Err(error) = write_file(
        &run.settings.out_dir,
        audit::HEAD_FILE_NAME,
        head.to_text().as_bytes(),
    ) {
        tracing::warn!(error = %format!("{error:#}"), "cannot write the audit log head");
    }
    let log_path = run.settings.out_dir.join(audit::FILE_NAME);
    let Ok(Some(text)) = audit::read_log(&log_path) else {
        return;
    };
    for node in run
        .nodes
        .iter()
        .filter(|node| node.spec.role.is_controller())
    {
        let Some(host) = node.connection.clone() else {
            continue;
        };
        let path = remote_path(&node.spec.data_dir, audit::FILE_NAME);
        let head_path = remote_path(&node.spec.data_dir, audit::HEAD_FILE_NAME);
        let synced = async {
            controllers::sync_log(&host, &path, &text).await?;
            host.write_file(&head_path, head.to_text().as_bytes(), "0600")
                .await?;
            anyhow::Ok(())
        }
        .await;
        if let Err(error) = synced {
            tracing::warn!(host = %node.label(), error = %format!("{error:#}"), "cannot copy the audit log to the controller");
        }
    }
}

/// Joins the error and its causes on one line, each cut at its first line break, to at most 400
/// characters, so that an audit entry names the failure without a page of context.
fn summary(error: &anyhow::Error) -> String {
    let text = error
        .chain()
        .map(|cause| {
            cause
                .to_string()
                .lines()
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join(": ");
    match text.char_indices().nth(400) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}
