//! Phase "Render the stacks": decide, from the cluster file, the gathered facts and the bundle,
//! what each add-on stack places on the hosts, and validate every manifest before anything
//! leaves this machine.

use std::io::Read;

use async_trait::async_trait;

use super::context::Run;
use super::{Phase, PhaseError};
use crate::bundle::{ArtifactKind, VerifiedBundle};
use crate::config;
use crate::stacks::{
    self, BundleChart, BundleContents, BundleImage, GpuDevice, GpuWorkload, HostFacts, HostInput,
    StackInput,
};
use crate::ui::format_count;

/// The name of the bundle artifact that holds KubeVirt's operator manifest.
pub const KUBEVIRT_OPERATOR: &str = "kubevirt-operator";

/// The largest `Chart.yaml` airlock reads from a chart archive.
const CHART_YAML_LIMIT: u64 = 1 << 20;

pub struct RenderStacks;

#[async_trait]
impl Phase<Run> for RenderStacks {
    fn title(&self) -> &'static str {
        "Render the stacks"
    }

    async fn run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        let input = tokio::task::block_in_place(|| stack_input(run))?;
        let rendered = tokio::task::block_in_place(|| stacks::render(&input)).map_err(|error| {
            let help = if error.is_internal() {
                "this is a bug in airlock's stack templates; please report it with the cluster file"
            } else {
                "fix the cluster file's spec.airlock section, or build a bundle that carries what the stack needs"
            };
            PhaseError::new(error).with_help(help)
        })?;
        for warning in &rendered.warnings {
            run.ui.warn(&format!("{warning} ({})", warning.help));
        }
        for stack in &rendered.stacks {
            run.ui.println(&format!(
                "{}: {}, {}, {}, {}",
                stack.stack,
                format_count(stack.files.len(), "manifest", "manifests"),
                format_count(stack.charts.len(), "chart", "charts"),
                format_count(stack.images.len(), "image", "images"),
                format_count(stack.readiness.len(), "readiness check", "readiness checks")
            ));
        }
        if rendered.stacks.is_empty() {
            run.ui.println("no stack is enabled");
        }
        // Node labels and install flags the stacks ask for go into each host's k0s install.
        for node in &mut run.nodes {
            if let Some(plan) = rendered.host(&node.node_name()) {
                for flag in &plan.install_flags {
                    merge_install_flag(&mut node.spec.install_flags, flag);
                }
            }
        }
        run.stacks = Some(rendered);
        Ok(())
    }

    async fn dry_run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        self.run(run).await
    }
}

/// Adds a flag to a host's install flags; `--labels` lists are merged, the host's own labels
/// winning on conflict.
fn merge_install_flag(flags: &mut config::Flags, flag: &str) {
    let Some(labels) = flag.strip_prefix("--labels=") else {
        flags.add_unless_present(flag);
        return;
    };
    let mut merged: Vec<String> = flags
        .value("--labels")
        .map(|v| v.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    for label in labels.split(',') {
        let key = label.split('=').next().unwrap_or(label);
        if !merged
            .iter()
            .any(|existing| existing.split('=').next() == Some(key))
        {
            merged.push(label.to_string());
        }
    }
    flags.add_or_replace(&format!("--labels={}", merged.join(",")));
}

/// Builds the stacks' input from the cluster file, the facts of every host and the bundle.
pub fn stack_input(run: &Run) -> Result<StackInput, PhaseError> {
    let cluster = &run.cluster;
    let bundle = run.bundle();
    let settings = &cluster.airlock;
    let passthrough = &settings.stacks.kubevirt.gpu_passthrough_hosts;
    for name in passthrough {
        let known = run
            .nodes
            .iter()
            .any(|node| node.node_name() == *name || node.spec.ssh.address.to_string() == *name);
        if !known {
            return Err(PhaseError::new(anyhow::anyhow!(
                "spec.airlock.stacks.kubevirt.gpuPassthroughHosts names {name:?}, which is neither the address nor the hostname of a host"
            ))
            .with_help("list hosts by their ssh.address or hostname"));
        }
    }

    let hosts = run
        .nodes
        .iter()
        .map(|node| {
            let name = node.node_name();
            let vm = passthrough
                .iter()
                .any(|entry| *entry == name || *entry == node.spec.ssh.address.to_string());
            HostInput {
                hostname: name,
                role: role(node.spec.role),
                gpu_workload: if vm {
                    GpuWorkload::VmPassthrough
                } else {
                    GpuWorkload::Container
                },
                facts: HostFacts {
                    gpus: node
                        .facts
                        .gpus
                        .iter()
                        .map(|gpu| GpuDevice {
                            address: gpu.address.clone(),
                            device_id: gpu.device_id.clone(),
                            name: Some(gpu.name.clone()).filter(|name| !name.is_empty()),
                        })
                        .collect(),
                    host_driver_version: node.facts.nvidia_driver.clone(),
                    mig_capable: node.facts.mig_capable,
                    mig_enabled: node.facts.mig_enabled,
                    kvm: node.facts.kvm,
                    iommu_groups: node.facts.iommu_groups > 0,
                    os_id: Some(node.facts.os_id.clone()).filter(|v| !v.is_empty()),
                    os_version_id: Some(node.facts.os_version.clone()).filter(|v| !v.is_empty()),
                },
            }
        })
        .collect();

    Ok(StackInput {
        stacks: stack_settings(&settings.stacks),
        residency: stacks::Residency {
            jurisdiction: settings
                .residency
                .as_ref()
                .and_then(|r| r.jurisdiction.clone()),
            region: settings.residency.as_ref().and_then(|r| r.region.clone()),
            zone: settings.residency.as_ref().and_then(|r| r.zone.clone()),
            site: settings.residency.as_ref().and_then(|r| r.site.clone()),
        },
        allowed_registries: settings.allowed_registries.clone(),
        data_classifications: settings.data_classifications.clone(),
        tenants: settings.tenants.iter().map(tenant).collect(),
        hosts,
        data_dir: run.leader().spec.data_dir.clone(),
        kubelet_root_dir: config::DEFAULT_KUBELET_ROOT_DIR.to_string(),
        k0s_version: bundle.manifest().k0s.version.clone(),
        bundle: bundle_contents(bundle)?,
    })
}

fn role(role: config::Role) -> stacks::Role {
    match role {
        config::Role::Controller => stacks::Role::Controller,
        config::Role::Worker => stacks::Role::Worker,
        config::Role::ControllerWorker => stacks::Role::ControllerWorker,
        config::Role::Single => stacks::Role::Single,
    }
}

fn stack_settings(settings: &config::Stacks) -> stacks::StackSettings {
    let gpu = &settings.gpu_operator;
    stacks::StackSettings {
        kubevirt: stacks::KubevirtSettings {
            enabled: settings.kubevirt.enabled,
            use_emulation: settings.kubevirt.use_emulation,
        },
        gpu_operator: stacks::GpuOperatorSettings {
            enabled: match gpu.enabled {
                config::Toggle::Auto => stacks::Switch::Auto,
                config::Toggle::On => stacks::Switch::True,
                config::Toggle::Off => stacks::Switch::False,
            },
            driver: match gpu.driver {
                config::DriverSource::Auto => stacks::DriverSource::Auto,
                config::DriverSource::Host => stacks::DriverSource::Host,
                config::DriverSource::Container => stacks::DriverSource::Container,
            },
            driver_version: gpu.driver_version.clone().unwrap_or_default(),
            mig: stacks::MigSettings {
                enabled: gpu.mig.enabled,
                strategy: match gpu.mig.strategy {
                    config::MigStrategy::Single => stacks::MigStrategy::Single,
                    config::MigStrategy::Mixed => stacks::MigStrategy::Mixed,
                },
                config: gpu.mig.config.clone(),
            },
        },
        observability: stacks::ObservabilitySettings {
            enabled: settings.observability.enabled,
            retention: settings.observability.retention.clone(),
        },
        policy: stacks::PolicySettings {
            enabled: settings.policy.enabled,
            mode: match settings.policy.mode {
                config::PolicyMode::Enforce => stacks::PolicyMode::Enforce,
                config::PolicyMode::Audit => stacks::PolicyMode::Audit,
            },
            kyverno: settings.policy.kyverno,
        },
        tenants: stacks::TenantsSettings { enabled: true },
    }
}

fn tenant(tenant: &config::Tenant) -> stacks::Tenant {
    let quantity = |q: &Option<config::Quantity>| q.as_ref().map(|q| q.as_str().to_string());
    stacks::Tenant {
        name: tenant.name.clone(),
        classification: tenant.classification.clone(),
        isolation: match tenant.isolation {
            config::Isolation::Namespace => stacks::Isolation::Namespace,
            config::Isolation::Vm => stacks::Isolation::Vm,
        },
        quota: stacks::Quota {
            gpu: tenant.quota.gpu.unwrap_or(0),
            cpu: quantity(&tenant.quota.cpu),
            memory: quantity(&tenant.quota.memory),
            storage: quantity(&tenant.quota.storage),
        },
    }
}

/// Lists what the stacks can use from the bundle: images, charts (name and version read from
/// each archive's Chart.yaml) and KubeVirt's operator manifest.
fn bundle_contents(bundle: &VerifiedBundle) -> Result<BundleContents, PhaseError> {
    let images = bundle
        .images()
        .iter()
        .map(|image| BundleImage {
            reference: image.reference.clone(),
            digest: image.digest(),
        })
        .collect();
    let mut charts = Vec::new();
    for artifact in bundle.artifacts_of_kind(&ArtifactKind::Chart) {
        let (name, version) = chart_metadata(bundle, artifact)?;
        charts.push(BundleChart {
            name,
            version,
            archive: chart_archive_name(artifact),
        });
    }
    let kubevirt_operator = match bundle.artifact(KUBEVIRT_OPERATOR) {
        Some(artifact) => {
            let mut text = String::new();
            bundle.open_artifact(artifact)?.read_to_string(&mut text)?;
            Some(text)
        }
        None => None,
    };
    Ok(BundleContents {
        images,
        charts,
        kubevirt_operator,
        crds: Vec::new(),
    })
}

/// The file name a chart archive has on hosts: the last part of its install path, else
/// `<artifact name>.tgz`.
pub fn chart_archive_name(artifact: &crate::bundle::Artifact) -> String {
    artifact
        .install
        .as_ref()
        .and_then(|install| install.path.as_str().rsplit('/').next().map(str::to_string))
        .unwrap_or_else(|| format!("{}.tgz", artifact.name))
}

/// Reads `name` and `version` from the `Chart.yaml` at the top of a chart archive.
fn chart_metadata(
    bundle: &VerifiedBundle,
    artifact: &crate::bundle::Artifact,
) -> Result<(String, String), PhaseError> {
    let invalid = |reason: String| {
        PhaseError::new(anyhow::anyhow!(
            "chart artifact {}: {reason}",
            artifact.name
        ))
    };
    let reader = bundle.open_artifact(artifact)?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(reader));
    for entry in archive.entries().map_err(|e| invalid(e.to_string()))? {
        let entry = entry.map_err(|e| invalid(e.to_string()))?;
        let path = entry
            .path()
            .map_err(|e| invalid(e.to_string()))?
            .into_owned();
        let parts: Vec<_> = path.components().collect();
        if parts.len() != 2 || path.file_name().is_none_or(|name| name != "Chart.yaml") {
            continue;
        }
        let mut text = String::new();
        entry
            .take(CHART_YAML_LIMIT)
            .read_to_string(&mut text)
            .map_err(|e| invalid(e.to_string()))?;
        let chart: yaml_serde::Value =
            yaml_serde::from_str(&text).map_err(|e| invalid(format!("Chart.yaml: {e}")))?;
        let field = |key: &str| {
            chart[key]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| invalid(format!("Chart.yaml has no {key}")))
        };
        return Ok((field("name")?, field("version")?));
    }
    Err(invalid("the archive has no Chart.yaml".to_string()))
}
