//! The output of rendering. Per stack, it is the files for the controllers' manifests folder, the
//! chart archives and images the stack needs, and its readiness checks. Per host, it is the node
//! labels, install flags, files and checks. Warnings come last. Everything is data, so apply can
//! plan, upload only what changed, and poll.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// The add-on stacks, in the order apply installs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stack {
    Observability,
    GpuOperator,
    Kubevirt,
    Policy,
    Tenants,
}

impl Stack {
    pub const ALL: [Stack; 5] = [
        Stack::Observability,
        Stack::GpuOperator,
        Stack::Kubevirt,
        Stack::Policy,
        Stack::Tenants,
    ];

    /// Returns the stack's name: its folder under `templates/`, its image list under `images/`, and its
    /// folder under `<data-dir>/manifests/`.
    pub fn name(self) -> &'static str {
        match self {
            Stack::Observability => "observability",
            Stack::GpuOperator => "gpu-operator",
            Stack::Kubevirt => "kubevirt",
            Stack::Policy => "policy",
            Stack::Tenants => "tenants",
        }
    }

    /// Finds the stack called `name`, the inverse of [`Stack::name`].
    pub fn from_name(name: &str) -> Option<Stack> {
        Stack::ALL.into_iter().find(|stack| stack.name() == name)
    }
}

impl fmt::Display for Stack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The result of rendering every stack for one cluster.
#[derive(Clone, Debug, Serialize)]
pub struct Rendered {
    /// The stacks that run, in install order; a disabled stack is absent.
    pub stacks: Vec<RenderedStack>,
    /// One entry per host of the input, in input order.
    pub hosts: Vec<HostPlan>,
    pub warnings: Vec<Warning>,
}

impl Rendered {
    pub fn stack(&self, stack: Stack) -> Option<&RenderedStack> {
        self.stacks.iter().find(|rendered| rendered.stack == stack)
    }

    pub fn host(&self, hostname: &str) -> Option<&HostPlan> {
        self.hosts.iter().find(|plan| plan.hostname == hostname)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct RenderedStack {
    pub stack: Stack,
    /// Files for `<data-dir>/manifests/` on every controller, sorted by path.
    pub files: Vec<ManifestFile>,
    /// Chart archives that this stack's `Chart` objects name; apply places each on every
    /// controller at [`ChartUse::path`].
    pub charts: Vec<ChartUse>,
    /// Images for this stack's OCI archive in `<data-dir>/images/` on workload hosts.
    pub images: Vec<PinnedImage>,
    /// Checks apply polls, in order, after the files are in place.
    pub readiness: Vec<ReadinessCheck>,
}

/// One file of a manifests folder.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct ManifestFile {
    /// The path relative to `<data-dir>/manifests/`, such as `tenants/tenant-research.yaml`.
    pub path: String,
    #[serde(skip)]
    pub bytes: Vec<u8>,
    pub digest: Digest,
}

impl ManifestFile {
    pub fn new(path: String, bytes: Vec<u8>) -> ManifestFile {
        let digest = Digest::of_bytes(&bytes);
        ManifestFile {
            path,
            bytes,
            digest,
        }
    }

    /// Returns the file's content as text, which rendering always produces as UTF-8.
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.bytes).unwrap_or_default()
    }
}

impl fmt::Debug for ManifestFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({} bytes, {})",
            self.path,
            self.bytes.len(),
            self.digest
        )
    }
}

/// A chart archive a stack's `Chart` object names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChartUse {
    pub name: String,
    pub version: String,
    /// The archive's file name in the bundle.
    pub archive: String,
    /// The absolute path on every controller: `<data-dir>/charts/<archive>`.
    pub path: String,
}

/// An image as the bundle pins it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct PinnedImage {
    /// `registry/repository:tag`, the name pods use and the archive must carry.
    pub reference: String,
    pub digest: Digest,
}

impl PinnedImage {
    /// `registry/repository:tag@sha256:…`.
    pub fn pinned(&self) -> String {
        format!("{}@{}", self.reference, self.digest)
    }
}

/// A condition apply polls with `k0s kubectl get <kind> -n <namespace> <name> -o json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
// No `deny_unknown_fields`: serde does not support it together with `flatten`.
#[serde(rename_all = "camelCase")]
pub struct ReadinessCheck {
    /// The resource as `kubectl get` takes it, such as `deployment.apps` or `kubevirt.kubevirt.io`.
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    #[serde(flatten)]
    pub condition: Readiness,
    #[serde(with = "seconds")]
    pub timeout: Duration,
}

/// When a polled object counts as ready.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "ready")]
pub enum Readiness {
    /// `status.conditions[type == condition].status == status`.
    Condition { condition: String, status: String },
    /// The field at the JSON pointer `field` (such as `/status/state`) equals `equals`.
    Field { field: String, equals: String },
    /// A Deployment, StatefulSet or DaemonSet whose current generation is fully rolled out:
    /// `status.observedGeneration >= metadata.generation`, and every desired replica (or
    /// scheduled pod) updated and available.
    RolledOut,
    /// The object exists.
    Exists,
}

mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(duration.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_secs(u64::deserialize(deserializer)?))
    }
}

/// The stacks' requirements of one host.
#[derive(Clone, Debug, Default, Serialize)]
pub struct HostPlan {
    pub hostname: String,
    /// Node labels to set at join (`k0s install worker --labels`); empty for plain controllers.
    pub labels: BTreeMap<String, String>,
    /// Extra `k0s install` flags, such as `--labels=…`.
    pub install_flags: Vec<String>,
    /// Files apply writes on the host before k0s starts.
    pub files: Vec<HostFile>,
    /// Checks apply runs on the host after a stack is installed.
    pub checks: Vec<HostCheck>,
}

/// A file apply writes on a host.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct HostFile {
    /// An absolute path.
    pub path: String,
    #[serde(skip)]
    pub bytes: Vec<u8>,
    pub digest: Digest,
    /// The permission bits, such as `0o644`.
    pub mode: u32,
    /// The reason for the file, for the plan and the blueprint.
    pub reason: String,
}

impl fmt::Debug for HostFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:o}, {})", self.path, self.mode, self.digest)
    }
}

/// A check apply runs on a host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "check")]
pub enum HostCheck {
    /// After `after` is ready, every `*.toml` file in each of `dirs` must pass
    /// [`check_containerd_drop_in`](super::check_containerd_drop_in).
    ContainerdDropIns { after: Stack, dirs: Vec<String> },
}

/// Something apply should show the user before it starts; it does not stop the install.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Warning {
    pub stack: Stack,
    pub host: Option<String>,
    pub message: String,
    /// The action the user can take.
    pub help: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Some(host) => write!(f, "{}: {host}: {}", self.stack, self.message),
            None => write!(f, "{}: {}", self.stack, self.message),
        }
    }
}
