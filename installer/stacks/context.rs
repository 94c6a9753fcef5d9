//! The render context: the input turned into the decisions the templates follow (which stacks
//! run, driver container or host driver, passthrough devices, policy lists), so that templates
//! only lay out YAML.

use std::collections::BTreeMap;

use serde::Serialize;

use super::RenderError;
use super::images::ImageValues;
use super::input::{
    BundleChart, DriverSource, GpuWorkload, HostInput, Isolation, MigStrategy, PolicyMode,
    StackInput, Switch,
};
use super::output::Stack;

/// Namespaces of k0s itself; their pods run images from the k0s release.
pub const K0S_NAMESPACES: [&str; 5] = [
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "k0s-system",
    "k0s-autopilot",
];

/// Namespaces of the platform stacks, where operators legitimately run privileged pods. Tenants
/// may not take these names even while a stack is off, so that turning it on cannot collide.
pub const STACK_NAMESPACES: [&str; 5] = [
    "kubevirt",
    "gpu-operator",
    "monitoring",
    "local-path-storage",
    "kyverno",
];

/// The namespace Kubernetes creates for objects that name none; it belongs to no tenant.
const DEFAULT_NAMESPACE: &str = "default";

#[derive(Clone, Debug, Serialize)]
pub struct Context {
    pub cluster: ClusterValues,
    pub kubevirt: KubevirtValues,
    pub gpu_operator: GpuOperatorValues,
    pub observability: ObservabilityValues,
    pub policy: PolicyValues,
    pub tenants_enabled: bool,
    pub tenants: Vec<TenantValues>,
    pub classifications: Vec<String>,
    /// Residency labels every node and tenant namespace carries, by label key.
    pub residency_labels: BTreeMap<String, String>,
    pub gpu_runtime_classes: Vec<String>,
    /// Filled in once the image lists are resolved.
    pub images: BTreeMap<String, ImageValues>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ClusterValues {
    pub k0s_version: String,
    pub data_dir: String,
    pub kubelet_root_dir: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct KubevirtValues {
    pub enabled: bool,
    pub use_emulation: bool,
    pub passthrough_devices: Vec<PassthroughDevice>,
    /// Filled in from the virt-operator image.
    pub image_registry: String,
    pub image_tag: String,
}

/// A GPU model passed through to VMs.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct PassthroughDevice {
    /// `10DE:<device id>` in upper case, as KubeVirt's `pciVendorSelector` takes it.
    pub selector: String,
    /// `nvidia.com/<name>` as NVIDIA's sandbox device plugin advertises it.
    pub resource_name: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct GpuOperatorValues {
    pub enabled: bool,
    /// Some GPU host serves containers (toolkit, device plugin, DCGM exporter needed).
    pub container_hosts: bool,
    /// Some GPU host is marked for VM passthrough.
    pub sandbox_workloads: bool,
    pub driver_container: bool,
    pub driver_version: String,
    /// `<os id><version id>` of every host that needs the driver container, sorted.
    pub driver_os: Vec<String>,
    pub mig: MigValues,
}

#[derive(Clone, Debug, Serialize)]
pub struct MigValues {
    pub enabled: bool,
    pub strategy: MigStrategy,
    pub config: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct ObservabilityValues {
    pub enabled: bool,
    pub retention: String,
    pub namespace: String,
    /// The kube-prometheus-stack release name; its ServiceMonitor selector label.
    pub release: String,
    /// The `fullnameOverride` of kube-prometheus-stack, which prefixes its object names.
    pub fullname: String,
    pub prometheus_service_account: String,
    pub loki_url: String,
    pub loki_otlp_endpoint: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct PolicyValues {
    pub enabled: bool,
    pub validation_actions: Vec<&'static str>,
    pub kyverno: bool,
    pub allowed_registries: Vec<String>,
    pub k0s_namespaces: Vec<String>,
    /// The k0s namespaces plus those of the stacks that run, which the policies exempt.
    pub system_namespaces: Vec<String>,
    /// The namespaces that carry no tenant labels: `default` and the system namespaces.
    pub non_tenant_namespaces: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TenantValues {
    pub name: String,
    pub classification: String,
    pub isolation: Isolation,
    pub gpu: u32,
    pub quota: QuotaValues,
    /// Extended resources the quota limits to `gpu`: `nvidia.com/gpu`, plus the passthrough
    /// resources for VM tenants.
    pub gpu_resources: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct QuotaValues {
    pub cpu: Option<String>,
    pub memory: Option<String>,
    pub storage: Option<String>,
}

/// Returns the GPU hosts: workload hosts with at least one NVIDIA GPU.
pub fn gpu_hosts(input: &StackInput) -> impl Iterator<Item = &HostInput> {
    input
        .hosts
        .iter()
        .filter(|host| host.role.runs_workloads() && !host.facts.gpus.is_empty())
}

/// Returns whether the driver container serves a host, given the cluster-wide decision.
pub fn needs_driver_container(host: &HostInput, driver: DriverSource) -> bool {
    host.gpu_workload == GpuWorkload::Container
        && match driver {
            DriverSource::Host => false,
            DriverSource::Container => true,
            DriverSource::Auto => host.facts.host_driver_version.is_none(),
        }
}

impl Context {
    pub fn new(input: &StackInput, bundle_registries: Vec<String>) -> Result<Context, RenderError> {
        let settings = &input.stacks;
        let gpu = &settings.gpu_operator;

        let gpu_operator_enabled = match gpu.enabled {
            Switch::True => true,
            Switch::False => false,
            Switch::Auto => gpu_hosts(input).next().is_some(),
        };
        let container_hosts =
            gpu_hosts(input).any(|host| host.gpu_workload == GpuWorkload::Container);
        let sandbox_workloads =
            gpu_hosts(input).any(|host| host.gpu_workload == GpuWorkload::VmPassthrough);

        let mut driver_os = Vec::new();
        for host in gpu_hosts(input).filter(|host| needs_driver_container(host, gpu.driver)) {
            match (&host.facts.os_id, &host.facts.os_version_id) {
                (Some(id), Some(version)) => driver_os.push(format!("{id}{version}")),
                _ => {
                    return Err(RenderError::MissingFact {
                        host: host.hostname.clone(),
                        fact: "os-release ID and VERSION_ID",
                        reason: "the NVIDIA driver container's image tag names the host's \
                                 operating system",
                    });
                }
            }
        }
        driver_os.sort();
        driver_os.dedup();
        let driver_container = gpu_operator_enabled && !driver_os.is_empty();

        let mut passthrough_devices: Vec<PassthroughDevice> = gpu_hosts(input)
            .filter(|host| host.gpu_workload == GpuWorkload::VmPassthrough)
            .flat_map(|host| &host.facts.gpus)
            .map(|gpu| PassthroughDevice {
                selector: format!("10DE:{}", gpu.device_id.to_uppercase()),
                resource_name: format!(
                    "nvidia.com/{}",
                    sandbox_resource_name(gpu.name.as_deref(), &gpu.device_id)
                ),
            })
            .collect();
        passthrough_devices.sort();
        passthrough_devices.dedup();
        if !(gpu_operator_enabled && settings.kubevirt.enabled) {
            passthrough_devices.clear();
        }

        let observability = ObservabilityValues {
            enabled: settings.observability.enabled,
            retention: settings.observability.retention.clone(),
            namespace: "monitoring".to_string(),
            release: "kube-prometheus-stack".to_string(),
            fullname: "kube-prometheus".to_string(),
            prometheus_service_account: "kube-prometheus-prometheus".to_string(),
            loki_url: "http://loki.monitoring.svc.cluster.local:3100".to_string(),
            loki_otlp_endpoint: "http://loki.monitoring.svc.cluster.local:3100/otlp".to_string(),
        };

        let allowed_registries = if input.allowed_registries.is_empty() {
            bundle_registries
        } else {
            input.allowed_registries.clone()
        };
        for registry in &allowed_registries {
            // The value goes into CEL string literals and YAML plain scalars of the policy, so
            // only the characters of an image reference's registry and path may pass.
            if !is_registry_prefix(registry) {
                return Err(RenderError::InvalidSetting {
                    setting: "allowedRegistries".to_string(),
                    value: registry.clone(),
                    help: "write a registry host with an optional path, such as \
                           registry.example.com:5000/platform, without a scheme or a trailing /"
                        .to_string(),
                });
            }
        }
        // Only the namespaces of stacks that run are exempt. An exemption for a stack that is off
        // would let anyone who creates that namespace run privileged pods in it.
        let kyverno = settings.policy.enabled && settings.policy.kyverno;
        let stack_namespaces: [(bool, &[&str]); 4] = [
            (settings.kubevirt.enabled, &["kubevirt"]),
            (gpu_operator_enabled, &["gpu-operator"]),
            (
                settings.observability.enabled,
                &["monitoring", "local-path-storage"],
            ),
            (kyverno, &["kyverno"]),
        ];
        let system_namespaces: Vec<String> = K0S_NAMESPACES
            .iter()
            .chain(
                stack_namespaces
                    .iter()
                    .filter(|(enabled, _)| *enabled)
                    .flat_map(|(_, namespaces)| namespaces.iter()),
            )
            .map(|ns| ns.to_string())
            .collect();
        let non_tenant_namespaces: Vec<String> = std::iter::once(DEFAULT_NAMESPACE.to_string())
            .chain(system_namespaces.iter().cloned())
            .collect();
        let policy = PolicyValues {
            enabled: settings.policy.enabled,
            validation_actions: match settings.policy.mode {
                PolicyMode::Enforce => vec!["Deny"],
                PolicyMode::Audit => vec!["Audit", "Warn"],
            },
            kyverno,
            allowed_registries,
            k0s_namespaces: K0S_NAMESPACES.map(String::from).to_vec(),
            system_namespaces,
            non_tenant_namespaces,
        };

        let residency_labels = residency_labels(input)?;
        let tenants = tenant_values(input, &passthrough_devices)?;

        Ok(Context {
            cluster: ClusterValues {
                k0s_version: input.k0s_version.clone(),
                data_dir: input.data_dir.clone(),
                kubelet_root_dir: input.kubelet_root_dir.clone(),
            },
            kubevirt: KubevirtValues {
                enabled: settings.kubevirt.enabled,
                use_emulation: settings.kubevirt.use_emulation,
                passthrough_devices,
                image_registry: String::new(),
                image_tag: String::new(),
            },
            gpu_operator: GpuOperatorValues {
                enabled: gpu_operator_enabled,
                container_hosts: gpu_operator_enabled && container_hosts,
                sandbox_workloads: gpu_operator_enabled && sandbox_workloads,
                driver_container,
                driver_version: gpu.driver_version.clone(),
                driver_os,
                mig: MigValues {
                    enabled: gpu_operator_enabled && gpu.mig.enabled,
                    strategy: gpu.mig.strategy,
                    config: gpu.mig.config.clone(),
                },
            },
            observability,
            policy,
            tenants_enabled: settings.tenants.enabled,
            tenants,
            classifications: input.data_classifications.clone(),
            residency_labels,
            gpu_runtime_classes: vec!["nvidia".to_string(), "nvidia-cdi".to_string()],
            images: BTreeMap::new(),
        })
    }

    /// Returns whether a stack runs at all.
    pub fn enabled(&self, stack: Stack) -> bool {
        match stack {
            Stack::Observability => self.observability.enabled,
            Stack::GpuOperator => self.gpu_operator.enabled,
            Stack::Kubevirt => self.kubevirt.enabled,
            Stack::Policy => self.policy.enabled,
            Stack::Tenants => self.tenants_enabled && !self.tenants.is_empty(),
        }
    }

    /// Returns the chart archive paths that templates may name, by chart name.
    pub fn chart_paths(&self, charts: &[BundleChart]) -> BTreeMap<String, (String, String)> {
        charts
            .iter()
            .map(|chart| {
                let path = format!("{}/charts/{}", self.cluster.data_dir, chart.archive);
                (chart.name.clone(), (path, chart.version.clone()))
            })
            .collect()
    }
}

/// Returns the resource name NVIDIA's KubeVirt GPU device plugin (kubevirt-gpu-device-plugin)
/// gives a passed-through GPU. The plugin takes the PCI ID database name in upper case, turns `/`,
/// `.` and runs of white space into `_`, then drops every character other than letters, digits,
/// `_` and `.`. Without a name the plugin uses the device id.
pub fn sandbox_resource_name(pci_name: Option<&str>, device_id: &str) -> String {
    let Some(name) = pci_name.map(str::trim).filter(|name| !name.is_empty()) else {
        return device_id.to_lowercase();
    };
    let upper = name.to_uppercase().replace(['/', '.'], "_");
    let mut underscored = String::new();
    let mut in_space = false;
    for ch in upper.chars() {
        if ch.is_whitespace() {
            if !in_space {
                underscored.push('_');
            }
            in_space = true;
        } else {
            underscored.push(ch);
            in_space = false;
        }
    }
    underscored
        .chars()
        .filter(|ch| ch.is_ascii_alphanumeric() || *ch == '_' || *ch == '.')
        .collect()
}

/// The node label each `residency` field sets, in the order jurisdiction, region, zone, site.
pub const RESIDENCY_LABELS: [(&str, &str); 4] = [
    ("jurisdiction", "airlock.io/jurisdiction"),
    ("region", "topology.kubernetes.io/region"),
    ("zone", "topology.kubernetes.io/zone"),
    ("site", "airlock.io/site"),
];

fn residency_labels(input: &StackInput) -> Result<BTreeMap<String, String>, RenderError> {
    let residency = &input.residency;
    let values = [
        &residency.jurisdiction,
        &residency.region,
        &residency.zone,
        &residency.site,
    ];
    let mut labels = BTreeMap::new();
    for ((field, key), value) in RESIDENCY_LABELS.into_iter().zip(values) {
        let Some(value) = value else { continue };
        if !is_label_value(value) {
            return Err(RenderError::InvalidSetting {
                setting: format!("residency.{field}"),
                value: value.clone(),
                help: "a label value has at most 63 letters, digits, '-', '_' or '.', and starts \
                       and ends with a letter or digit"
                    .to_string(),
            });
        }
        labels.insert(key.to_string(), value.clone());
    }
    Ok(labels)
}

fn tenant_values(
    input: &StackInput,
    passthrough: &[PassthroughDevice],
) -> Result<Vec<TenantValues>, RenderError> {
    let reserved: Vec<&str> = std::iter::once(DEFAULT_NAMESPACE)
        .chain(K0S_NAMESPACES)
        .chain(STACK_NAMESPACES)
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    let mut tenants = Vec::new();
    for tenant in &input.tenants {
        let invalid = |reason: String| RenderError::InvalidTenant {
            tenant: tenant.name.clone(),
            reason,
        };
        if !is_dns_label(&tenant.name) {
            return Err(invalid(
                "the name must be a DNS label: at most 63 lower-case letters, digits or '-', \
                 starting and ending with a letter or digit"
                    .to_string(),
            ));
        }
        if reserved.contains(&tenant.name.as_str()) {
            return Err(invalid(format!(
                "the name is a namespace of Kubernetes, k0s or a stack; choose another than {}",
                reserved.join(", ")
            )));
        }
        if !seen.insert(tenant.name.clone()) {
            return Err(invalid("the name is declared twice".to_string()));
        }
        if !input.data_classifications.contains(&tenant.classification) {
            return Err(invalid(format!(
                "classification {:?} is not one of the declared levels: {}",
                tenant.classification,
                input.data_classifications.join(", ")
            )));
        }
        if tenant.isolation == Isolation::Vm && !input.stacks.kubevirt.enabled {
            return Err(invalid(
                "isolation vm needs the kubevirt stack; enable stacks.kubevirt".to_string(),
            ));
        }
        let quota = &tenant.quota;
        for (field, value) in [
            ("cpu", &quota.cpu),
            ("memory", &quota.memory),
            ("storage", &quota.storage),
        ] {
            if let Some(value) = value
                && !is_quantity(value)
            {
                return Err(invalid(format!(
                    "quota.{field} {value:?} is not a Kubernetes quantity such as 64, 500m or 256Gi"
                )));
            }
        }
        let mut gpu_resources = vec!["nvidia.com/gpu".to_string()];
        if tenant.isolation == Isolation::Vm {
            gpu_resources.extend(
                passthrough
                    .iter()
                    .map(|device| device.resource_name.clone()),
            );
        }
        tenants.push(TenantValues {
            name: tenant.name.clone(),
            classification: tenant.classification.clone(),
            isolation: tenant.isolation,
            gpu: quota.gpu,
            quota: QuotaValues {
                cpu: quota.cpu.clone(),
                memory: quota.memory.clone(),
                storage: quota.storage.clone(),
            },
            gpu_resources,
        });
    }
    Ok(tenants)
}

fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// Checks `host[:port][/path]` as image references spell a registry and repository prefix.
fn is_registry_prefix(value: &str) -> bool {
    let (host, path) = match value.split_once('/') {
        Some((host, path)) => (host, Some(path)),
        None => (value, None),
    };
    let (name, port) = match host.split_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    let valid_name = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    let valid_port =
        port.is_none_or(|port| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()));
    let valid_path = path.is_none_or(|path| {
        path.split('/').all(|segment| {
            !segment.is_empty()
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        })
    });
    valid_name && valid_port && valid_path
}

fn is_label_value(value: &str) -> bool {
    let bytes = value.as_bytes();
    bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(b))
        && bytes.first().is_none_or(u8::is_ascii_alphanumeric)
        && bytes.last().is_none_or(u8::is_ascii_alphanumeric)
}

/// Checks the Kubernetes quantity syntax: a decimal number with an optional binary (`Ki` … `Ei`),
/// decimal (`n` … `E`) or exponent suffix.
fn is_quantity(value: &str) -> bool {
    let number_end = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(value.len());
    let (number, suffix) = value.split_at(number_end);
    let number = number.strip_prefix(['+', '-']).unwrap_or(number);
    let valid_number = !number.is_empty()
        && number.chars().filter(|c| *c == '.').count() <= 1
        && number.chars().any(|c| c.is_ascii_digit())
        && number.chars().all(|c| c.is_ascii_digit() || c == '.');
    let valid_suffix = matches!(
        suffix,
        "" | "Ki"
            | "Mi"
            | "Gi"
            | "Ti"
            | "Pi"
            | "Ei"
            | "n"
            | "u"
            | "m"
            | "k"
            | "M"
            | "G"
            | "T"
            | "P"
            | "E"
    ) || suffix.strip_prefix(['e', 'E']).is_some_and(|exp| {
        let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
        !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
    });
    valid_number && valid_suffix
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_name_follows_the_sandbox_plugin() {
        assert_eq!(
            sandbox_resource_name(Some("GH100 [H100 PCIe]"), "2331"),
            "GH100_H100_PCIE"
        );
        assert_eq!(
            sandbox_resource_name(Some("GA100 [A100 SXM4 80GB]"), "20b2"),
            "GA100_A100_SXM4_80GB"
        );
        assert_eq!(
            sandbox_resource_name(Some("TU104GL [Tesla T4]"), "1eb8"),
            "TU104GL_TESLA_T4"
        );
        assert_eq!(
            sandbox_resource_name(Some("AD102GL [L40S]"), "26b9"),
            "AD102GL_L40S"
        );
        assert_eq!(
            sandbox_resource_name(Some("GV100GL [Tesla V100 SXM2 16GB]"), "1db1"),
            "GV100GL_TESLA_V100_SXM2_16GB"
        );
        assert_eq!(
            sandbox_resource_name(Some("GP104 [GeForce GTX 1070 Ti / 1080]"), "1b82"),
            "GP104_GEFORCE_GTX_1070_TI___1080"
        );
        assert_eq!(sandbox_resource_name(None, "2331"), "2331");
    }

    #[test]
    fn quantity_syntax() {
        for good in ["64", "500m", "256Gi", "1.5", "1e3", "0.5Ti", "+2"] {
            assert!(is_quantity(good), "{good}");
        }
        for bad in ["", "Gi", "64 Gi", "1.2.3", "12GB", "abc", "1e"] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn registry_prefix_syntax() {
        for good in [
            "quay.io",
            "registry.example.com:5000",
            "registry.example.com:5000/platform",
            "localhost/a/b_c",
        ] {
            assert!(is_registry_prefix(good), "{good}");
        }
        for bad in [
            "",
            "https://quay.io",
            "quay.io/",
            "quay.io//x",
            "quay.io:",
            "quay.io:50a0",
            "quay.io/Upper",
            "quay.io/\"x\"",
            "quay.io #x",
        ] {
            assert!(!is_registry_prefix(bad), "{bad}");
        }
    }

    #[test]
    fn label_syntax() {
        assert!(is_dns_label("research-1"));
        assert!(!is_dns_label("Research"));
        assert!(!is_dns_label("-x"));
        assert!(is_label_value("eu-central"));
        assert!(is_label_value(""));
        assert!(!is_label_value("fra 1"));
        assert!(!is_label_value("-fra"));
    }
}
