//! The cluster document exactly as written: k0sctl's `Cluster` (v1beta1) plus `spec.airlock`.
//!
//! Every field is optional here and every mapping rejects unknown fields, so that a typo is
//! reported with the closest valid name. Defaults and rules are applied when these values become
//! the typed model (`cluster.rs`, `host.rs`, `airlock.rs`). The field list follows k0sctl
//! v0.32 (`pkg/apis/k0sctl.k0sproject.io/v1beta1`) and rig v2's connection blocks, so that
//! every field k0sctl reads is accepted here.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};
use yaml_serde::Value;

/// A scalar read as text whatever its YAML type: `port: 22` and `port: "22"` both give `22`,
/// and an empty value gives the empty string. go-yaml, which k0sctl uses, reads strings the same
/// way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScalarText(pub String);

impl<'de> Deserialize<'de> for ScalarText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::String(text) => Ok(ScalarText(text)),
            Value::Number(number) => Ok(ScalarText(number.to_string())),
            Value::Bool(value) => Ok(ScalarText(value.to_string())),
            Value::Null => Ok(ScalarText(String::new())),
            _ => Err(serde::de::Error::custom(
                "invalid type: expected a scalar value, found a mapping or list",
            )),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawCluster {
    /// Checked when the documents are sorted.
    #[serde(rename = "apiVersion")]
    pub _api_version: Option<serde::de::IgnoredAny>,
    /// Checked when the documents are sorted.
    #[serde(rename = "kind")]
    pub _kind: Option<serde::de::IgnoredAny>,
    pub metadata: Option<RawMetadata>,
    pub spec: Option<RawSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawMetadata {
    pub name: Option<String>,
    pub user: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawSpec {
    pub hosts: Option<Vec<RawHost>>,
    pub k0s: Option<RawK0s>,
    pub options: Option<RawOptions>,
    pub airlock: Option<RawAirlock>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawHost {
    pub role: Option<String>,
    pub ssh: Option<RawSsh>,
    #[serde(rename = "openSSH")]
    pub open_ssh: Option<RawOpenSsh>,
    #[serde(rename = "winRM")]
    pub win_rm: Option<Value>,
    pub localhost: Option<Value>,
    pub install_flags: Option<Vec<String>>,
    pub environment: Option<BTreeMap<String, ScalarText>>,
    pub files: Option<Vec<RawFile>>,
    pub upload_binary: Option<bool>,
    pub use_existing_k0s: Option<bool>,
    pub k0s_binary_path: Option<String>,
    pub k0s_install_path: Option<String>,
    #[serde(rename = "k0sDownloadURL")]
    pub k0s_download_url: Option<String>,
    pub hostname: Option<String>,
    pub data_dir: Option<String>,
    pub kubelet_root_dir: Option<String>,
    pub private_interface: Option<String>,
    pub private_address: Option<String>,
    pub no_taints: Option<bool>,
    pub reset: Option<bool>,
    pub os: Option<String>,
    pub hooks: Option<BTreeMap<String, BTreeMap<String, Vec<String>>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawSsh {
    pub address: Option<ScalarText>,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub key_path: Option<String>,
    pub host_key: Option<String>,
    pub bastion: Option<Box<RawSsh>>,
}

/// k0sctl's `openSSH` block, which runs the system `ssh` client with the user's ssh_config.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawOpenSsh {
    pub address: Option<ScalarText>,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub key_path: Option<String>,
    pub config_path: Option<String>,
    pub disable_multiplexing: Option<bool>,
    pub options: Option<BTreeMap<String, ScalarText>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawFile {
    pub name: Option<String>,
    pub src: Option<String>,
    pub data: Option<String>,
    pub dst_dir: Option<String>,
    pub dst: Option<String>,
    pub perm: Option<ScalarText>,
    pub dir_perm: Option<ScalarText>,
    pub user: Option<String>,
    pub group: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawK0s {
    pub version: Option<ScalarText>,
    pub version_channel: Option<String>,
    pub dynamic_config: Option<bool>,
    pub config: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawOptions {
    pub wait: Option<RawWait>,
    pub drain: Option<RawDrain>,
    pub concurrency: Option<RawConcurrency>,
    pub evict_taint: Option<RawEvictTaint>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawWait {
    pub enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawDrain {
    pub enabled: Option<bool>,
    pub grace_period: Option<ScalarText>,
    pub timeout: Option<ScalarText>,
    pub force: Option<bool>,
    pub ignore_daemon_sets: Option<bool>,
    pub delete_empty_dir_data: Option<bool>,
    pub pod_selector: Option<String>,
    pub skip_wait_for_delete_timeout: Option<ScalarText>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawConcurrency {
    pub limit: Option<u32>,
    pub worker_disruption_percent: Option<u32>,
    pub uploads: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawEvictTaint {
    pub enabled: Option<bool>,
    pub taint: Option<String>,
    pub effect: Option<String>,
    pub controller_workers: Option<bool>,
}

/// `spec.airlock`: the settings k0sctl does not have.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawAirlock {
    pub bundle: Option<RawBundle>,
    pub stacks: Option<RawStacks>,
    pub residency: Option<RawResidency>,
    pub allowed_registries: Option<Vec<String>>,
    pub data_classifications: Option<Vec<String>>,
    pub tenants: Option<Vec<RawTenant>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawBundle {
    pub trusted_keys: Option<Vec<RawTrustedKey>>,
    pub allow_unsigned: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawTrustedKey {
    pub path: Option<String>,
    pub key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawStacks {
    pub kubevirt: Option<RawKubeVirt>,
    pub gpu_operator: Option<RawGpuOperator>,
    pub observability: Option<RawObservability>,
    pub policy: Option<RawPolicy>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawKubeVirt {
    pub enabled: Option<bool>,
    pub use_emulation: Option<bool>,
    pub gpu_passthrough_hosts: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawGpuOperator {
    pub enabled: Option<ScalarText>,
    pub driver: Option<String>,
    pub driver_version: Option<ScalarText>,
    pub mig: Option<RawMig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawMig {
    pub enabled: Option<bool>,
    pub strategy: Option<String>,
    pub config: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawObservability {
    pub enabled: Option<bool>,
    pub retention: Option<ScalarText>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawPolicy {
    pub enabled: Option<bool>,
    pub mode: Option<String>,
    pub kyverno: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawResidency {
    pub jurisdiction: Option<String>,
    pub region: Option<String>,
    pub zone: Option<String>,
    pub site: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawTenant {
    pub name: Option<String>,
    pub classification: Option<String>,
    pub isolation: Option<String>,
    pub quota: Option<RawQuota>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawQuota {
    pub gpu: Option<u32>,
    pub cpu: Option<ScalarText>,
    pub memory: Option<ScalarText>,
    pub storage: Option<ScalarText>,
}
