//! The input of stack rendering: the `spec.airlock` stack settings, the hosts and their facts,
//! the k0s paths and version, and what the bundle carries.
//!
//! The types deserialize from the same camelCase shape as the cluster file's `spec.airlock`
//! section, with the same defaults, so that tests can state a whole scenario in YAML.

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// Everything [`render`](super::render) reads.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StackInput {
    #[serde(default)]
    pub stacks: StackSettings,
    #[serde(default)]
    pub residency: Residency,
    /// Registry host names (optionally with a path prefix) that pods may pull from; empty means
    /// the registries of the images the bundle carries.
    #[serde(default)]
    pub allowed_registries: Vec<String>,
    #[serde(default = "default_classifications")]
    pub data_classifications: Vec<String>,
    #[serde(default)]
    pub tenants: Vec<Tenant>,
    pub hosts: Vec<HostInput>,
    #[serde(default = "default_data_dir")]
    pub data_dir: String,
    #[serde(default = "default_kubelet_root_dir")]
    pub kubelet_root_dir: String,
    /// The k0s version, such as `v1.36.3+k0s.0`; its Kubernetes minor version picks the schemas.
    pub k0s_version: String,
    pub bundle: BundleContents,
}

/// The stack settings of `spec.airlock.stacks`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StackSettings {
    #[serde(default)]
    pub kubevirt: KubevirtSettings,
    #[serde(default)]
    pub gpu_operator: GpuOperatorSettings,
    #[serde(default)]
    pub observability: ObservabilitySettings,
    #[serde(default)]
    pub policy: PolicySettings,
    #[serde(default)]
    pub tenants: TenantsSettings,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubevirtSettings {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Runs VMs in software emulation where `/dev/kvm` is missing; for test sites only.
    #[serde(default)]
    pub use_emulation: bool,
}

impl Default for KubevirtSettings {
    fn default() -> Self {
        KubevirtSettings {
            enabled: true,
            use_emulation: false,
        }
    }
}

/// `auto`, `true` or `false`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Switch {
    #[default]
    Auto,
    #[serde(alias = "on")]
    True,
    #[serde(alias = "off")]
    False,
}

/// The source of the NVIDIA kernel driver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DriverSource {
    /// The host's driver where one is loaded, the operator's driver container elsewhere.
    #[default]
    Auto,
    /// Always the host's driver; the operator's driver container stays off.
    Host,
    /// Always the operator's driver container.
    Container,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MigStrategy {
    #[default]
    Single,
    Mixed,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MigSettings {
    /// Turns the MIG manager on; it is off unless asked because reconfiguring MIG evicts GPU pods.
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub strategy: MigStrategy,
    /// The MIG profile that MIG-capable hosts get through the `nvidia.com/mig.config` label.
    #[serde(default = "default_mig_config")]
    pub config: String,
}

impl Default for MigSettings {
    fn default() -> Self {
        MigSettings {
            enabled: false,
            strategy: MigStrategy::Single,
            config: default_mig_config(),
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GpuOperatorSettings {
    /// `auto` installs the GPU Operator when at least one host has an NVIDIA GPU.
    #[serde(default)]
    pub enabled: Switch,
    #[serde(default)]
    pub driver: DriverSource,
    /// The driver version of the driver container; empty means the one the image list pins.
    #[serde(default)]
    pub driver_version: String,
    #[serde(default)]
    pub mig: MigSettings,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObservabilitySettings {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Prometheus and Loki retention, as a Prometheus duration such as `15d`.
    #[serde(default = "default_retention")]
    pub retention: String,
}

impl Default for ObservabilitySettings {
    fn default() -> Self {
        ObservabilitySettings {
            enabled: true,
            retention: default_retention(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyMode {
    /// Violations are rejected (`validationActions: [Deny]`).
    #[default]
    Enforce,
    /// Violations are admitted, recorded in the audit log and returned as warnings.
    Audit,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicySettings {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub mode: PolicyMode,
    /// Installs Kyverno from the bundle for the rules admission policies cannot express.
    #[serde(default)]
    pub kyverno: bool,
}

impl Default for PolicySettings {
    fn default() -> Self {
        PolicySettings {
            enabled: true,
            mode: PolicyMode::Enforce,
            kyverno: false,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantsSettings {
    #[serde(default = "yes")]
    pub enabled: bool,
}

impl Default for TenantsSettings {
    fn default() -> Self {
        TenantsSettings { enabled: true }
    }
}

/// The location of the cluster and its data; every field is optional.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Residency {
    /// An ISO 3166 country code such as `DE`.
    pub jurisdiction: Option<String>,
    pub region: Option<String>,
    pub zone: Option<String>,
    pub site: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// Containers in a namespace of their own.
    #[default]
    Namespace,
    /// KubeVirt virtual machines in a namespace of their own.
    Vm,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tenant {
    /// A DNS label; it is also the tenant's namespace.
    pub name: String,
    pub classification: String,
    #[serde(default)]
    pub isolation: Isolation,
    #[serde(default)]
    pub quota: Quota,
}

/// A tenant's resource quota; quantities are Kubernetes quantities.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Quota {
    #[serde(default)]
    pub gpu: u32,
    pub cpu: Option<String>,
    pub memory: Option<String>,
    pub storage: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Controller,
    Worker,
    #[serde(rename = "controller+worker")]
    ControllerWorker,
    Single,
}

impl Role {
    /// Returns whether the host runs a kubelet, so pods, images and node labels apply to it.
    pub fn runs_workloads(self) -> bool {
        !matches!(self, Role::Controller)
    }
}

/// The workload a GPU host's GPUs serve: containers, or KubeVirt VMs by PCI passthrough.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GpuWorkload {
    #[default]
    Container,
    VmPassthrough,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostInput {
    /// The node name the host registers with (its hostname, lower-case).
    pub hostname: String,
    pub role: Role,
    /// The workload this host's GPUs serve, from the cluster file.
    #[serde(default)]
    pub gpu_workload: GpuWorkload,
    #[serde(default)]
    pub facts: HostFacts,
}

/// The facts gathered on a host that the stacks depend on.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostFacts {
    /// PCI devices of vendor 10de (NVIDIA) that are GPUs (class 0300 or 0302).
    #[serde(default)]
    pub gpus: Vec<GpuDevice>,
    /// The loaded NVIDIA kernel module's version (`/sys/module/nvidia/version`), if any.
    pub host_driver_version: Option<String>,
    #[serde(default)]
    pub mig_capable: bool,
    #[serde(default)]
    pub mig_enabled: bool,
    #[serde(default)]
    pub kvm: bool,
    /// Whether `/sys/kernel/iommu_groups` has entries.
    #[serde(default)]
    pub iommu_groups: bool,
    /// `/etc/os-release` `ID` and `VERSION_ID`, such as `ubuntu` and `24.04`.
    pub os_id: Option<String>,
    pub os_version_id: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GpuDevice {
    /// The PCI address, such as `0000:3b:00.0`.
    pub address: String,
    /// The PCI device id in hex, such as `2331`.
    pub device_id: String,
    /// The device's name in the PCI ID database, such as `GH100 [H100 PCIe]`.
    pub name: Option<String>,
}

/// The bundle's contents that the stacks use.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BundleContents {
    /// Every container image in the bundle, by the reference it was pulled as.
    #[serde(default)]
    pub images: Vec<BundleImage>,
    #[serde(default)]
    pub charts: Vec<BundleChart>,
    /// The text of the `kubevirt-operator` manifest artifact.
    pub kubevirt_operator: Option<String>,
    /// Further CustomResourceDefinition documents the bundle carries (for example a chart's
    /// `crds/`), used to validate custom resources of those kinds.
    #[serde(default)]
    pub crds: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BundleImage {
    /// The reference with registry, repository and tag, such as `quay.io/kubevirt/virt-api:v1.9.0`.
    pub reference: String,
    /// The manifest digest the bundle pinned.
    pub digest: Digest,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BundleChart {
    pub name: String,
    pub version: String,
    /// The archive's file name, such as `gpu-operator-v26.7.0.tgz`.
    pub archive: String,
}

fn yes() -> bool {
    true
}

fn default_retention() -> String {
    "15d".to_string()
}

fn default_mig_config() -> String {
    "all-disabled".to_string()
}

fn default_classifications() -> Vec<String> {
    ["public", "internal", "confidential", "restricted"]
        .map(String::from)
        .to_vec()
}

fn default_data_dir() -> String {
    "/var/lib/k0s".to_string()
}

fn default_kubelet_root_dir() -> String {
    "/var/lib/kubelet".to_string()
}
