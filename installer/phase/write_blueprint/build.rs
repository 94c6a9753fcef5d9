//! The blueprint built from what the run did and learned: nodes and their files, the deployed
//! artifacts, the stacks, residency, tenants and policies.

use std::collections::{BTreeMap, BTreeSet};

use crate::blueprint::audit::Head;
use crate::blueprint::now_rfc3339;
use crate::blueprint::record::{
    ArtifactRecord, AuditRecord, Blueprint, BundleRecord, ClusterRecord, FORMAT_VERSION, GpuRecord,
    HostFileRecord, ImageRecord, K0sRecord, NodeRecord, StackRecord, WrittenBy,
    policies_from_manifests, policies_from_rendered, residency_record, tenant_records,
};
use crate::bundle::{ArtifactKind, Signer};
use crate::config::CONFIG_FILE;
use crate::digest::Digest;
use crate::phase::context::Run;
use crate::phase::plan::FileSource;

/// Builds the blueprint from what the run did and learned; the compliance matrix is added later.
pub fn build(
    run: &Run,
    cluster_id: Option<String>,
    archive_images: &BTreeMap<String, Vec<ImageRecord>>,
    head: Head,
) -> Blueprint {
    let bundle = run.bundle();
    let manifest = bundle.manifest();
    // Hosts marked `reset: true` left the cluster in this run.
    let nodes: Vec<NodeRecord> = run
        .nodes
        .iter()
        .filter(|node| !node.spec.reset)
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
                // A node's running version; during an upgrade, nodes not yet upgraded differ.
                k0s_version: node
                    .facts
                    .k0s_status
                    .as_ref()
                    .map(|status| status.version.clone())
                    .unwrap_or_else(|| manifest.k0s.version.clone()),
                labels,
                files: node.placed.clone(),
                file_modes: node.placed_modes.clone(),
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
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default()
                    .into_iter()
                    .chain(node.cluster_file_uploads.iter().cloned())
                    .collect(),
                name,
            }
        })
        .chain(run.unlisted.iter().cloned())
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
