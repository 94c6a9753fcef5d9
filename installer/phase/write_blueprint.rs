//! Phase "Write the blueprint": the as-built record, locally and onto every controller.

use async_trait::async_trait;

use crate::blueprint::StackRecord;

use super::context::Run;
use super::plan::airlock_dir;
use super::{HostFailure, Phase, PhaseError, for_each_host};
use crate::blueprint::{
    Blueprint, BundleRecord, ClusterRecord, FILE_NAME, FORMAT_VERSION, K0sRecord, NodeRecord,
    now_rfc3339,
};

pub struct WriteBlueprint;

/// Builds the blueprint from what the run did and learned.
pub fn build(run: &Run) -> Blueprint {
    let bundle = run.bundle();
    let manifest = bundle.manifest();
    let nodes = run
        .nodes
        .iter()
        .map(|node| NodeRecord {
            name: node.node_name(),
            role: node.spec.role.to_string(),
            address: node.spec.ssh.address.to_string(),
            port: node.spec.ssh.port,
            private_address: node.spec.private_address.map(|address| address.to_string()),
            os: node.facts.os_name.clone(),
            kernel: node.facts.kernel.clone(),
            architecture: node.facts.architecture.clone(),
            cpus: node.facts.cpus,
            memory_bytes: node.facts.memory_bytes,
            gpus: node
                .facts
                .gpus
                .iter()
                .map(|gpu| format!("{} {}", gpu.address, gpu.name))
                .collect(),
            k0s_version: node
                .facts
                .k0s_status
                .as_ref()
                .map(|status| status.version.clone())
                .unwrap_or_else(|| manifest.k0s.version.clone()),
            files: node.placed.clone(),
        })
        .collect();
    Blueprint {
        format_version: FORMAT_VERSION,
        written_at: now_rfc3339(),
        cluster: ClusterRecord {
            name: run.cluster.name.clone(),
        },
        bundle: BundleRecord {
            name: manifest.name.clone(),
            version: manifest.version,
            digest: bundle.digest(),
            signing_key_id: bundle.signer().trusted_key().map(|key| key.to_string()),
        },
        k0s: K0sRecord {
            version: manifest.k0s.version.clone(),
        },
        nodes,
        stacks: run
            .stacks
            .iter()
            .flat_map(|rendered| &rendered.stacks)
            .map(|stack| StackRecord {
                name: stack.stack.name().to_string(),
                version: manifest
                    .stacks
                    .iter()
                    .find(|s| s.name == stack.stack.name())
                    .map_or_else(|| "built-in".to_string(), |s| s.version.clone()),
            })
            .collect(),
    }
}

#[async_trait]
impl Phase<Run> for WriteBlueprint {
    fn title(&self) -> &'static str {
        "Write the blueprint"
    }

    async fn run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        write(run).await?;
        run.ui.println(&format!(
            "wrote {}",
            run.settings.out_dir.join(FILE_NAME).display()
        ));
        Ok(())
    }

    async fn dry_run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        run.ui.println(&format!(
            "would write {} and a copy on every controller",
            run.settings.out_dir.join(FILE_NAME).display()
        ));
        Ok(())
    }
}

/// Writes the blueprint locally and onto every controller.
pub async fn write(run: &Run) -> Result<(), PhaseError> {
    let blueprint = build(run);
    let text = blueprint.to_yaml()?;
    blueprint.write_to(&run.settings.out_dir)?;

    let controllers: Vec<_> = run
        .nodes
        .iter()
        .filter(|node| node.spec.role.is_controller())
        .map(|node| {
            (
                node.host(),
                node.label(),
                format!("{}/{FILE_NAME}", airlock_dir(&node.spec.data_dir)),
            )
        })
        .collect();
    let text = &text;
    for_each_host(
        controllers,
        run.settings.concurrency,
        |(host, label, path)| async move {
            host.write_file(&path, text.as_bytes(), "0600")
                .await
                .map_err(|e| HostFailure::new(label, e))
        },
    )
    .await?;
    Ok(())
}
