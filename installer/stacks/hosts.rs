//! The stacks' requirements of each host: node labels set at join, host files, post-install checks,
//! and the preflight warnings that the facts call for.

use std::collections::BTreeMap;

use super::context::{Context, needs_driver_container};
use super::input::{DriverSource, GpuWorkload, StackInput};
use super::output::{HostCheck, HostFile, HostPlan, Stack, Warning};
use crate::digest::Digest;

/// The folders whose containerd drop-ins are checked after the GPU Operator is installed: the
/// one k0s imports, and the NVIDIA toolkit's default drop-in folder (toolkit v1.18 and later).
pub const DROP_IN_DIRS: [&str; 2] = ["/etc/k0s/containerd.d", "/etc/containerd/conf.d"];

const NOUVEAU_BLACKLIST: &str = "\
# Written by airlock: the NVIDIA driver container and vfio-pci cannot take a GPU that nouveau holds.
blacklist nouveau
options nouveau modeset=0
";

pub fn host_plans(input: &StackInput, context: &Context) -> Vec<HostPlan> {
    input
        .hosts
        .iter()
        .map(|host| {
            let mut plan = HostPlan {
                hostname: host.hostname.clone(),
                ..HostPlan::default()
            };
            if !host.role.runs_workloads() {
                return plan;
            }
            plan.labels.extend(context.residency_labels.clone());

            let gpu = &context.gpu_operator;
            let has_gpus = !host.facts.gpus.is_empty();
            if has_gpus {
                plan.labels
                    .insert("nvidia.com/gpu.present".into(), "true".into());
            }
            if has_gpus && gpu.enabled {
                if host.gpu_workload == GpuWorkload::VmPassthrough {
                    plan.labels.insert(
                        "nvidia.com/gpu.workload.config".into(),
                        "vm-passthrough".into(),
                    );
                }
                let driver = input.stacks.gpu_operator.driver;
                let own_driver = host.gpu_workload == GpuWorkload::Container
                    && !needs_driver_container(host, driver);
                if gpu.driver_container && own_driver {
                    plan.labels
                        .insert("nvidia.com/gpu.deploy.driver".into(), "false".into());
                }
                if gpu.mig.enabled && host.facts.mig_capable {
                    plan.labels
                        .insert("nvidia.com/mig.config".into(), gpu.mig.config.clone());
                }
                if needs_driver_container(host, driver)
                    || host.gpu_workload == GpuWorkload::VmPassthrough
                {
                    let bytes = NOUVEAU_BLACKLIST.as_bytes().to_vec();
                    plan.files.push(HostFile {
                        path: "/etc/modprobe.d/airlock-blacklist-nouveau.conf".into(),
                        digest: Digest::of_bytes(&bytes),
                        bytes,
                        mode: 0o644,
                        reason:
                            "nouveau must not hold the GPUs that the NVIDIA driver container or \
                             vfio-pci takes"
                                .into(),
                    });
                }
                if host.gpu_workload == GpuWorkload::Container {
                    plan.checks.push(HostCheck::ContainerdDropIns {
                        after: Stack::GpuOperator,
                        dirs: DROP_IN_DIRS.map(String::from).to_vec(),
                    });
                }
            }
            if !plan.labels.is_empty() {
                plan.install_flags
                    .push(format!("--labels={}", join_labels(&plan.labels)));
            }
            plan
        })
        .collect()
}

fn join_labels(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn warnings(input: &StackInput, context: &Context) -> Vec<Warning> {
    let mut warnings = Vec::new();
    let mut warn = |stack, host: Option<&str>, message: String, help: &str| {
        warnings.push(Warning {
            stack,
            host: host.map(String::from),
            message,
            help: help.to_string(),
        })
    };
    let gpu = &context.gpu_operator;

    for host in input.hosts.iter().filter(|host| host.role.runs_workloads()) {
        let name = Some(host.hostname.as_str());
        let facts = &host.facts;
        if context.kubevirt.enabled && !context.kubevirt.use_emulation && !facts.kvm {
            warn(
                Stack::Kubevirt,
                name,
                "/dev/kvm is missing, so KubeVirt cannot run virtual machines on this host".into(),
                "enable virtualisation (VT-x or AMD-V) in the firmware and load kvm_intel or \
                 kvm_amd; on a test site set stacks.kubevirt.useEmulation: true",
            );
        }
        let passthrough = host.gpu_workload == GpuWorkload::VmPassthrough;
        if passthrough && facts.gpus.is_empty() {
            warn(
                Stack::GpuOperator,
                name,
                "the host is marked for GPU passthrough but has no NVIDIA GPU".into(),
                "remove the vm-passthrough marking from this host",
            );
        }
        if passthrough && !facts.gpus.is_empty() {
            if !facts.iommu_groups {
                warn(
                    Stack::Kubevirt,
                    name,
                    "no IOMMU groups, so GPUs cannot be passed through to VMs on this host".into(),
                    "enable VT-d or AMD-Vi in the firmware and add intel_iommu=on (Intel) to the \
                     kernel command line",
                );
            }
            if !context.kubevirt.enabled {
                warn(
                    Stack::Kubevirt,
                    name,
                    "the host is marked for GPU passthrough but the kubevirt stack is off".into(),
                    "enable stacks.kubevirt, or mark the host's GPUs for containers",
                );
            }
        }
        if gpu.enabled
            && !facts.gpus.is_empty()
            && host.gpu_workload == GpuWorkload::Container
            && input.stacks.gpu_operator.driver == DriverSource::Host
            && facts.host_driver_version.is_none()
        {
            warn(
                Stack::GpuOperator,
                name,
                "no NVIDIA driver is loaded and the driver container is off (driver: host)".into(),
                "install the NVIDIA driver on the host, or set stacks.gpuOperator.driver: auto",
            );
        }
    }

    if gpu.mig.enabled && !input.hosts.iter().any(|host| host.facts.mig_capable) {
        warn(
            Stack::GpuOperator,
            None,
            "MIG is enabled but no host has a MIG-capable GPU".into(),
            "turn stacks.gpuOperator.mig.enabled off, or add hosts with A100, A30, H100 or newer GPUs",
        );
    }
    let mut host_drivers: Vec<&str> = input
        .hosts
        .iter()
        .filter_map(|host| host.facts.host_driver_version.as_deref())
        .collect();
    host_drivers.sort();
    host_drivers.dedup();
    if gpu.enabled && host_drivers.len() > 1 {
        warn(
            Stack::GpuOperator,
            None,
            format!(
                "GPU hosts run different NVIDIA driver versions: {}",
                host_drivers.join(", ")
            ),
            "install one driver version on every GPU host",
        );
    }
    for tenant in context.tenants.iter().filter(|tenant| tenant.gpu > 0) {
        if !gpu.enabled {
            warn(
                Stack::Tenants,
                None,
                format!(
                    "tenant {} has a GPU quota but the GPU Operator is not installed",
                    tenant.name
                ),
                "add GPU hosts or set stacks.gpuOperator.enabled: true",
            );
        }
    }
    warnings
}
