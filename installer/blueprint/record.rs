//! `blueprint.yaml`: the as-built record of a cluster.
//!
//! Every apply writes it into `--out` and onto every controller
//! (`<data-dir>/airlock/blueprint.yaml`). `airlock status` compares the live cluster with the
//! controllers' copy, and `airlock blueprint show` prints it. Keys are camelCase; optional
//! fields are left out when empty.
//!
//! # Field reference (`formatVersion: 1`)
//!
//! | field | meaning |
//! |---|---|
//! | `formatVersion` | the format of this file; a reader rejects versions it does not know |
//! | `writtenAt` | when the file was written, RFC 3339 in UTC |
//! | `writtenBy` | `airlock` version, `operator` (`user@machine`) and `command` (`apply`, `upgrade`) |
//! | `cluster.name` | `metadata.name` of the cluster file |
//! | `cluster.id` | the uid of the `kube-system` namespace, the id k0sctl reads too; absent when the API did not respond |
//! | `bundle.name`, `.version` | the bundle's name and monotonically increasing version |
//! | `bundle.digest` | sha256 of `bundle.yaml`, which covers every byte of the bundle |
//! | `bundle.signature` | `trusted` (checked against a trusted key), `unchecked` (signed, no trusted key given) or `unsigned` |
//! | `bundle.signingKeyId` | the minisign key id of the signature, as minisign prints it |
//! | `bundle.artifacts[]` | each deployed artifact: `name`, `kind`, `digest`, `size`, `platform`, `stack`, `version`, `reference` (images), and for image archives the `images` inside (`reference`, `digest` of the manifest); `built: true` marks a stack's image archive that airlock wrote from bundle images |
//! | `k0s.version` | the k0s version the bundle carries and every node runs |
//! | `k0s.configPath` | where the rendered k0s configuration lives on controllers |
//! | `k0s.configDigests` | node name → sha256 of that controller's rendered configuration |
//! | `nodes[]` | one per host of the cluster file, in file order |
//! | `nodes[].name` | the Kubernetes node name (the hostname override, else the host's hostname) |
//! | `nodes[].role` | `controller`, `worker`, `controller+worker` or `single` |
//! | `nodes[].address`, `.port`, `.privateAddress` | how airlock reaches the host, and its cluster address |
//! | `nodes[].hostname`, `.os`, `.kernel`, `.architecture`, `.cpus`, `.memoryBytes` | gathered facts |
//! | `nodes[].gpus[]` | NVIDIA GPUs: PCI `address`, `deviceId`, `name`; `nvidiaDriver` is the loaded host driver |
//! | `nodes[].k0sVersion` | the k0s version installed on the host |
//! | `nodes[].labels` | node labels airlock set at join (residency, GPU workload) |
//! | `nodes[].files` | path → sha256 of every file airlock placed on the host |
//! | `nodes[].fileModes` | path → `mode` (octal), and `user` and `group` where the cluster file names them, of each file airlock uploaded; absent from blueprints written before airlock recorded them |
//! | `nodes[].hostFiles[]` | files the stacks rendered for the host (`path`, `digest`, `reason`), such as containerd drop-ins |
//! | `stacks[]` | each installed stack: `name`, `version`, `ready` and `readyDetail`, `charts[]` (`name`, `version`, `archive`, `path`, `digest`), `images[]` (`reference`, `digest`), `manifests[]` (path under `<data-dir>/manifests/`, `digest`), and the `readiness[]` checks `status` repeats |
//! | `residency` | the declared `jurisdiction`, `region`, `zone` and `site`, the `nodeLabels` that enforce them, and the `labelledNodes` that carry them |
//! | `tenants[]` | `name` (also the namespace), `classification`, `isolation` (`namespace` or `vm`), `quota` (`gpu`, `cpu`, `memory`) |
//! | `policies[]` | each admission policy in force: `kind`, `name`, `description` (its `airlock.io/description` annotation) and `source` |
//! | `auditLog.entries`, `.head` | the line count of `audit.log` and the sha256 of its last line when this file was written |
//! | `compliance[]` | the compliance matrix: `id`, `pillar`, `control`, `result` (`pass` or `fail`), `evidence`, and `passed` of `checked` where the control counts items |

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::stacks::{ChartUse, ReadinessCheck, Rendered, RenderedStack};

use super::BlueprintError;
use super::compliance::Control;

/// The blueprint format version; a reader rejects versions it does not know.
pub const FORMAT_VERSION: u32 = 1;

/// The file name of the blueprint, locally and on controllers.
pub const FILE_NAME: &str = "blueprint.yaml";

/// The annotation whose text the blueprint and report quote for a policy.
pub const DESCRIPTION_ANNOTATION: &str = "airlock.io/description";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Blueprint {
    pub format_version: u32,
    pub written_at: String,
    pub written_by: WrittenBy,
    pub cluster: ClusterRecord,
    pub bundle: BundleRecord,
    pub k0s: K0sRecord,
    pub nodes: Vec<NodeRecord>,
    #[serde(default)]
    pub stacks: Vec<StackRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub residency: Option<ResidencyRecord>,
    #[serde(default)]
    pub tenants: Vec<TenantRecord>,
    #[serde(default)]
    pub policies: Vec<PolicyRecord>,
    pub audit_log: AuditRecord,
    #[serde(default)]
    pub compliance: Vec<Control>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WrittenBy {
    pub airlock: String,
    pub operator: String,
    pub command: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterRecord {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BundleRecord {
    pub name: String,
    pub version: u64,
    pub digest: Digest,
    /// `trusted`, `unchecked` or `unsigned`.
    pub signature: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key_id: Option<String>,
    #[serde(default)]
    pub artifacts: Vec<ArtifactRecord>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ArtifactRecord {
    pub name: String,
    pub kind: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The image reference, for artifacts of kind `image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The images inside an image archive.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImageRecord>,
    /// Whether airlock wrote the archive from bundle images (a stack's image archive) rather
    /// than taking it from the bundle as it is.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub built: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageRecord {
    /// `registry/repository:tag`.
    pub reference: String,
    /// The digest of the image manifest.
    pub digest: Digest,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct K0sRecord {
    pub version: String,
    pub config_path: String,
    #[serde(default)]
    pub config_digests: BTreeMap<String, Digest>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeRecord {
    pub name: String,
    pub role: String,
    pub address: String,
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_address: Option<String>,
    pub hostname: String,
    pub os: String,
    pub kernel: String,
    pub architecture: String,
    pub cpus: u32,
    pub memory_bytes: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<GpuRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nvidia_driver: Option<String>,
    pub k0s_version: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    pub files: BTreeMap<String, Digest>,
    /// The mode and owner of each uploaded file in `files`, by path. Blueprints written before
    /// airlock recorded them have none, and `status` then checks digests only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub file_modes: BTreeMap<String, FileModeRecord>,
    /// The files the stacks rendered for this host (such as containerd drop-ins), by path, with
    /// the reason for each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_files: Vec<HostFileRecord>,
}

/// The mode of a placed file, and its owner where the cluster file names one.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileModeRecord {
    /// Octal, as `chmod` takes it.
    pub mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostFileRecord {
    pub path: String,
    pub digest: Digest,
    pub reason: String,
}

impl NodeRecord {
    /// Returns the host as messages name it: `address`, or `address:port` for a port other than 22.
    pub fn label(&self) -> String {
        if self.port == 22 {
            self.address.clone()
        } else {
            format!("{}:{}", self.address, self.port)
        }
    }

    pub fn is_controller(&self) -> bool {
        self.role.starts_with("controller") || self.role == "single"
    }

    /// Returns whether the host runs a kubelet and so registers as a Kubernetes node.
    pub fn runs_workloads(&self) -> bool {
        self.role != "controller"
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GpuRecord {
    pub address: String,
    pub device_id: String,
    pub name: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StackRecord {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Whether the readiness checks passed in this run; absent when they were not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_detail: Option<String>,
    #[serde(default)]
    pub charts: Vec<ChartRecord>,
    #[serde(default)]
    pub images: Vec<ImageRecord>,
    #[serde(default)]
    pub manifests: Vec<ManifestRecord>,
    #[serde(default)]
    pub readiness: Vec<ReadinessCheck>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChartRecord {
    pub name: String,
    pub version: String,
    pub archive: String,
    /// The archive's path on every controller.
    pub path: String,
    /// The archive's sha256; absent when neither the bundle nor the hosts name it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ManifestRecord {
    /// The path relative to `<data-dir>/manifests/`.
    pub path: String,
    pub digest: Digest,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResidencyRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jurisdiction: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// The labels every workload node carries for the declaration.
    #[serde(default)]
    pub node_labels: BTreeMap<String, String>,
    /// The nodes airlock labelled at join.
    #[serde(default)]
    pub labelled_nodes: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantRecord {
    pub name: String,
    pub classification: String,
    pub isolation: String,
    pub quota: QuotaRecord,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuotaRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyRecord {
    pub kind: String,
    pub name: String,
    pub description: String,
    /// `stack policy` for the policy stack's, or the cluster file location of the document.
    pub source: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditRecord {
    pub entries: u64,
    pub head: Digest,
}

impl Blueprint {
    /// Serializes the blueprint with a header comment.
    pub fn to_yaml(&self) -> Result<String, BlueprintError> {
        Ok(format!(
            "# The as-built record of cluster {}, written by airlock {}. `airlock status` compares\n\
             # the cluster with the copy on the controllers; edits there show up as drift.\n{}",
            self.cluster.name,
            self.written_by.airlock,
            yaml_serde::to_string(self)?
        ))
    }

    pub fn parse(text: &str) -> Result<Blueprint, BlueprintError> {
        // The version is read first, so that a newer format is reported as such rather than as
        // an unknown field.
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Version {
            format_version: u32,
        }
        let version: Version = yaml_serde::from_str(text)?;
        if version.format_version != FORMAT_VERSION {
            return Err(BlueprintError::FormatVersion(version.format_version));
        }
        Ok(yaml_serde::from_str(text)?)
    }

    /// Returns the installed stacks' versions by stack name; a stack the bundle gives no version
    /// (one airlock renders from its own templates) is `built-in`.
    pub fn stack_versions(&self) -> BTreeMap<String, String> {
        self.stacks
            .iter()
            .map(|stack| {
                let version = stack.version.clone();
                (
                    stack.name.clone(),
                    version.unwrap_or_else(|| "built-in".to_string()),
                )
            })
            .collect()
    }

    /// Returns the nodes that are controllers.
    pub fn controllers(&self) -> impl Iterator<Item = &NodeRecord> {
        self.nodes.iter().filter(|node| node.is_controller())
    }

    /// Lists every image the bundle carries into the cluster: image artifacts, the images inside
    /// image archives, and the stacks' images.
    pub fn bundle_images(&self) -> Vec<&ImageRecord> {
        let mut images: Vec<&ImageRecord> = self
            .bundle
            .artifacts
            .iter()
            .flat_map(|artifact| artifact.images.iter())
            .chain(self.stacks.iter().flat_map(|stack| stack.images.iter()))
            .collect();
        images.sort();
        images.dedup();
        images
    }
}

impl StackRecord {
    /// Records a rendered stack. `version` comes from the bundle's stack list, `outcome` from the
    /// readiness checks of this run, and `chart_digest` names the digest of a chart archive.
    pub fn from_rendered(
        stack: &RenderedStack,
        version: Option<String>,
        outcome: Option<(bool, String)>,
        chart_digest: impl Fn(&ChartUse) -> Option<Digest>,
    ) -> StackRecord {
        let (ready, ready_detail) = match outcome {
            Some((ready, detail)) => (Some(ready), Some(detail).filter(|d| !d.is_empty())),
            None => (None, None),
        };
        StackRecord {
            name: stack.stack.name().to_string(),
            version,
            ready,
            ready_detail,
            charts: stack
                .charts
                .iter()
                .map(|chart| ChartRecord {
                    name: chart.name.clone(),
                    version: chart.version.clone(),
                    archive: chart.archive.clone(),
                    path: chart.path.clone(),
                    digest: chart_digest(chart),
                })
                .collect(),
            images: stack
                .images
                .iter()
                .map(|image| ImageRecord {
                    reference: image.reference.clone(),
                    digest: image.digest,
                })
                .collect(),
            manifests: stack
                .files
                .iter()
                .map(|file| ManifestRecord {
                    path: file.path.clone(),
                    digest: file.digest,
                })
                .collect(),
            readiness: stack.readiness.clone(),
        }
    }
}

/// Collects the policies of rendered stacks: every object whose metadata carries an
/// `airlock.io/description` annotation.
pub fn policies_from_rendered(rendered: &Rendered) -> Vec<PolicyRecord> {
    rendered
        .stacks
        .iter()
        .flat_map(|stack| &stack.files)
        .flat_map(|file| described_objects(file.text()))
        .map(|(kind, name, description)| PolicyRecord {
            kind,
            name,
            description,
            source: "stack policy".to_string(),
        })
        .collect()
}

/// Collects the policies among the extra documents of the cluster file, for a site that adds
/// its own.
pub fn policies_from_manifests(manifests: &[crate::config::Manifest]) -> Vec<PolicyRecord> {
    manifests
        .iter()
        .flat_map(|manifest| {
            described_objects(&manifest.text)
                .into_iter()
                .map(|(kind, name, description)| PolicyRecord {
                    kind,
                    name,
                    description,
                    source: manifest.origin.to_string(),
                })
        })
        .collect()
}

/// (kind, name, description) of every document in `text` with a description annotation.
fn described_objects(text: &str) -> Vec<(String, String, String)> {
    let documents: Vec<serde_json::Value> = yaml_serde::Deserializer::from_str(text)
        .filter_map(|document| serde_json::Value::deserialize(document).ok())
        .collect();
    documents
        .iter()
        .filter_map(|object| {
            let metadata = object.get("metadata")?;
            let description = metadata
                .get("annotations")?
                .get(DESCRIPTION_ANNOTATION)?
                .as_str()?;
            Some((
                object.get("kind")?.as_str()?.to_string(),
                metadata.get("name")?.as_str()?.to_string(),
                description.split_whitespace().collect::<Vec<_>>().join(" "),
            ))
        })
        .collect()
}

/// Records the residency declaration and the labels that enforce it on nodes.
pub fn residency_record(
    residency: Option<&crate::config::Residency>,
    nodes: &[NodeRecord],
) -> Option<ResidencyRecord> {
    let residency = residency?;
    let declared = [
        (
            &residency.jurisdiction,
            crate::stacks::RESIDENCY_LABELS[0].1,
        ),
        (&residency.region, crate::stacks::RESIDENCY_LABELS[1].1),
        (&residency.zone, crate::stacks::RESIDENCY_LABELS[2].1),
        (&residency.site, crate::stacks::RESIDENCY_LABELS[3].1),
    ];
    let node_labels: BTreeMap<String, String> = declared
        .iter()
        .filter_map(|(value, key)| value.as_ref().map(|value| (key.to_string(), value.clone())))
        .collect();
    let labelled_nodes = nodes
        .iter()
        .filter(|node| {
            !node_labels.is_empty()
                && node_labels
                    .iter()
                    .all(|(key, value)| node.labels.get(key) == Some(value))
        })
        .map(|node| node.name.clone())
        .collect();
    Some(ResidencyRecord {
        jurisdiction: residency.jurisdiction.clone(),
        region: residency.region.clone(),
        zone: residency.zone.clone(),
        site: residency.site.clone(),
        node_labels,
        labelled_nodes,
    })
}

/// Records the tenants of the cluster file.
pub fn tenant_records(tenants: &[crate::config::Tenant]) -> Vec<TenantRecord> {
    tenants
        .iter()
        .map(|tenant| TenantRecord {
            name: tenant.name.clone(),
            classification: tenant.classification.clone(),
            isolation: match tenant.isolation {
                crate::config::Isolation::Namespace => "namespace",
                crate::config::Isolation::Vm => "vm",
            }
            .to_string(),
            quota: QuotaRecord {
                gpu: tenant.quota.gpu,
                cpu: tenant.quota.cpu.as_ref().map(|q| q.to_string()),
                memory: tenant.quota.memory.as_ref().map(|q| q.to_string()),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn described_objects_are_found_in_multi_document_text() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: plain\n---\n\
                    apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\n\
                    metadata:\n  name: only-bundle-images\n  annotations:\n    airlock.io/description: >-\n      \
                    Pods run only\n      bundle images.\n";
        assert_eq!(
            described_objects(text),
            [(
                "ValidatingAdmissionPolicy".to_string(),
                "only-bundle-images".to_string(),
                "Pods run only bundle images.".to_string()
            )]
        );
    }

    #[test]
    fn node_label_shows_other_ports() {
        let mut node: NodeRecord = yaml_serde::from_str(
            "name: lab-1\nrole: controller\naddress: 127.0.1.11\nport: 22\nhostname: lab-1\n\
             os: Debian\nkernel: '6.1'\narchitecture: amd64\ncpus: 2\nmemoryBytes: 1\n\
             k0sVersion: v1.35.3+k0s.0\nfiles: {}\n",
        )
        .unwrap();
        assert_eq!(node.label(), "127.0.1.11");
        node.port = 2222;
        assert_eq!(node.label(), "127.0.1.11:2222");
        assert!(node.is_controller());
        assert!(!node.runs_workloads());
    }
}
