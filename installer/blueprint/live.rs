//! The live cluster as airlock reads it over SSH. One `k0s kubectl get` on a controller returns the
//! API objects the compliance matrix and `status` look at. One shell script per host returns its
//! k0s state and the sha256, mode and owner of every file the blueprint lists.

use std::collections::BTreeMap;

use serde_json::Value;

use super::record::PolicyRecord;
use crate::phase::K0sPaths;
use crate::remote::{FileState, Host, file_states_script, parse_file_states};
use crate::shell::quote;

/// The resource types one snapshot lists, all namespaces at once.
pub const SNAPSHOT_RESOURCES: &str = "nodes,namespaces,pods,networkpolicies,resourcequotas,\
     validatingadmissionpolicies,validatingadmissionpolicybindings";

/// Returns the `kubectl` arguments of a snapshot.
pub fn snapshot_arguments() -> String {
    format!("get {SNAPSHOT_RESOURCES} -A -o json")
}

/// The `kubectl` arguments that print the cluster id as k0sctl reads it.
pub const CLUSTER_ID_ARGUMENTS: &str =
    "get -n kube-system namespace kube-system -o template={{.metadata.uid}}";

/// Output of `kubectl get` that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("unexpected kubectl output: {0}")]
pub struct SnapshotError(String);

/// A node as the API reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveNode {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub ready: bool,
    pub kubelet_version: String,
}

/// A pod and the images of its containers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LivePod {
    pub namespace: String,
    pub name: String,
    pub node: Option<String>,
    pub images: Vec<String>,
}

/// Any other object: what the checks need from its metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveObject {
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// For a ValidatingAdmissionPolicyBinding, the policy it binds.
    pub policy_name: Option<String>,
}

/// One snapshot of the API objects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveCluster {
    pub nodes: Vec<LiveNode>,
    pub pods: Vec<LivePod>,
    pub objects: Vec<LiveObject>,
}

impl LiveCluster {
    /// Parses the JSON `List` printed by `kubectl get ... -o json`.
    pub fn parse(json: &[u8]) -> Result<LiveCluster, SnapshotError> {
        let list: Value =
            serde_json::from_slice(json).map_err(|error| SnapshotError(error.to_string()))?;
        let items = list["items"]
            .as_array()
            .ok_or_else(|| SnapshotError("no items list".to_string()))?;
        let mut cluster = LiveCluster::default();
        for item in items {
            let metadata = &item["metadata"];
            let name = metadata["name"].as_str().unwrap_or_default().to_string();
            let labels = string_map(&metadata["labels"]);
            match item["kind"].as_str().unwrap_or_default() {
                "Node" => cluster.nodes.push(LiveNode {
                    name,
                    labels,
                    ready: item["status"]["conditions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True"),
                    kubelet_version: item["status"]["nodeInfo"]["kubeletVersion"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                }),
                "Pod" => cluster.pods.push(LivePod {
                    namespace: metadata["namespace"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    name,
                    node: item["spec"]["nodeName"].as_str().map(str::to_string),
                    images: ["initContainers", "containers", "ephemeralContainers"]
                        .iter()
                        .flat_map(|section| item["spec"][section].as_array().into_iter().flatten())
                        .filter_map(|container| container["image"].as_str())
                        .map(str::to_string)
                        .collect(),
                }),
                kind => cluster.objects.push(LiveObject {
                    kind: kind.to_string(),
                    namespace: metadata["namespace"].as_str().map(str::to_string),
                    name,
                    labels,
                    policy_name: item["spec"]["policyName"].as_str().map(str::to_string),
                }),
            }
        }
        Ok(cluster)
    }

    pub fn objects_of<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a LiveObject> {
        self.objects
            .iter()
            .filter(move |object| object.kind == kind)
    }

    pub fn namespace(&self, name: &str) -> Option<&LiveObject> {
        self.objects_of("Namespace")
            .find(|object| object.name == name)
    }

    /// Returns whether an object of `kind` named `name` exists, in `namespace` when given.
    pub fn has(&self, kind: &str, namespace: Option<&str>, name: &str) -> bool {
        self.objects_of(kind).any(|object| {
            object.name == name && (namespace.is_none() || object.namespace.as_deref() == namespace)
        })
    }

    /// Returns whether the snapshot lists objects of `kind` at all, so that absence means absent.
    pub fn lists_kind(kind: &str) -> bool {
        matches!(
            kind,
            "Namespace"
                | "NetworkPolicy"
                | "ResourceQuota"
                | "ValidatingAdmissionPolicy"
                | "ValidatingAdmissionPolicyBinding"
        )
    }

    /// Looks up each policy whose kind the snapshot does not list (such as a Kyverno
    /// `ClusterPolicy`) with its own `kubectl get`, and adds the ones that exist, so that every
    /// recorded policy is checked against the cluster.
    pub async fn add_other_policies(
        &mut self,
        host: &Host,
        paths: K0sPaths<'_>,
        policies: &[PolicyRecord],
    ) {
        for policy in policies
            .iter()
            .filter(|p| !LiveCluster::lists_kind(&p.kind))
        {
            let command = paths.kubectl(&format!(
                "get {} {} -o name --ignore-not-found",
                quote(&policy.kind),
                quote(&policy.name)
            ));
            if matches!(host.run(&command).await, Ok(name) if !name.trim().is_empty()) {
                self.objects.push(LiveObject {
                    kind: policy.kind.clone(),
                    namespace: None,
                    name: policy.name.clone(),
                    labels: BTreeMap::new(),
                    policy_name: None,
                });
            }
        }
    }
}

fn string_map(value: &Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(key, value)| Some((key.clone(), value.as_str()?.to_string())))
        .collect()
}

/// The k0s state and files of one host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostObservation {
    /// The version `k0s status` reports while the service runs, else the output of
    /// `k0s version`, when the binary exists.
    pub k0s_version: Option<String>,
    /// Whether `k0s status` succeeds, which it does only while the service runs.
    pub k0s_running: bool,
    /// The role `k0s status` reports.
    pub k0s_role: Option<String>,
    /// Path → sha256, mode and owner, or `None` for a missing file.
    pub files: BTreeMap<String, Option<FileState>>,
}

/// Builds the script that prints a host's k0s state and the sha256, mode and owner of each of
/// `paths`. It starts k0s once: `k0s status` carries the version of the running k0s, and
/// `k0s version` runs only when the service does not. Files are read as uploads are checked, all
/// with one `stat` and one hash command.
pub fn observation_script(k0s_binary: &str, paths: &[&str]) -> String {
    let k0s = quote(k0s_binary);
    format!(
        "if [ -x {k0s} ]; then status=$({k0s} status -o json 2>/dev/null | tr -d '\\n'); \
         if [ -n \"$status\" ]; then echo \"status=$status\"; \
         else echo \"version=$({k0s} version 2>/dev/null)\"; fi; fi\n{}",
        file_states_script(paths)
    )
}

/// Parses the output of [`observation_script`] for the same `paths`.
pub fn parse_observation(output: &str, paths: &[&str]) -> Result<HostObservation, SnapshotError> {
    let mut observation = HostObservation::default();
    let mut lines = output.lines().peekable();
    while let Some((key, value)) = lines.peek().and_then(|line| line.split_once('=')) {
        match key {
            "version" => {
                observation.k0s_version = Some(value.trim().to_string()).filter(|v| !v.is_empty())
            }
            "status" => {
                let status: Value = serde_json::from_str(value)
                    .map_err(|error| SnapshotError(format!("k0s status: {error}")))?;
                observation.k0s_running = true;
                observation.k0s_role = status["Role"].as_str().map(str::to_string);
                observation.k0s_version = status["Version"]
                    .as_str()
                    .map(str::to_string)
                    .filter(|version| !version.is_empty());
            }
            _ => return Err(SnapshotError(format!("unexpected line {key}={value}"))),
        }
        lines.next();
    }
    let states = parse_file_states(lines, paths.len()).map_err(SnapshotError)?;
    observation.files = paths
        .iter()
        .map(|path| path.to_string())
        .zip(states)
        .collect();
    Ok(observation)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;

    #[test]
    fn snapshot_sorts_items_by_kind() {
        let json = serde_json::json!({"kind": "List", "items": [
            {"kind": "Node", "metadata": {"name": "lab-2", "labels": {"airlock.io/site": "a"}},
             "status": {"conditions": [{"type": "Ready", "status": "True"}],
                        "nodeInfo": {"kubeletVersion": "v1.35.3+k0s"}}},
            {"kind": "Pod", "metadata": {"name": "p", "namespace": "kube-system"},
             "spec": {"nodeName": "lab-2", "initContainers": [{"image": "a:1"}],
                      "containers": [{"image": "b:2"}]}},
            {"kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": "x-binding"},
             "spec": {"policyName": "x"}},
        ]});
        let live = LiveCluster::parse(json.to_string().as_bytes()).unwrap();
        assert!(live.nodes[0].ready);
        assert_eq!(live.nodes[0].labels["airlock.io/site"], "a");
        assert_eq!(live.pods[0].images, ["a:1", "b:2"]);
        assert_eq!(live.objects[0].policy_name.as_deref(), Some("x"));
    }

    #[test]
    fn observation_reads_files_in_order() {
        let hex = "a".repeat(64);
        let output = format!(
            "version=v1.35.3+k0s.0\nstatus={{\"Role\":\"worker\",\"Pid\":1}}\npresent\nmissing\n--\n640 0 0 root root\n--\n{hex} */a\n"
        );
        let observation = parse_observation(&output, &["/a", "/b"]).unwrap();
        assert!(observation.k0s_running);
        assert_eq!(observation.k0s_role.as_deref(), Some("worker"));
        let found = observation.files["/a"].as_ref().unwrap();
        assert_eq!(found.digest, Digest::from_hex(&hex).unwrap());
        assert_eq!(found.mode, 0o640);
        assert_eq!(observation.files["/b"], None);
    }

    /// Runs the observation script in `sh` against a stand-in k0s that prints `status`, or
    /// fails `k0s status` when `status` is empty.
    fn observe_locally(status: &str) -> HostObservation {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let k0s = dir.path().join("k0s");
        let status_branch = if status.is_empty() {
            "exit 1".to_string()
        } else {
            format!("echo '{status}'")
        };
        std::fs::write(
            &k0s,
            format!(
                "#!/bin/sh\ncase \"$1\" in status) {status_branch};; version) echo v1.34.1+k0s.0;; esac\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&k0s, std::fs::Permissions::from_mode(0o755)).unwrap();

        let file = dir.path().join("placed");
        std::fs::write(&file, b"placed bytes").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let missing = dir.path().join("missing");
        let paths = [file.to_str().unwrap(), missing.to_str().unwrap()];

        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(observation_script(k0s.to_str().unwrap(), &paths))
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        let observation =
            parse_observation(&String::from_utf8(output.stdout).unwrap(), &paths).unwrap();
        let placed = observation.files[paths[0]].as_ref().unwrap();
        assert_eq!(placed.digest, Digest::of_bytes(b"placed bytes"));
        assert_eq!(placed.mode, 0o600);
        assert_eq!(observation.files[paths[1]], None);
        observation
    }

    #[test]
    fn observation_reads_version_from_status() {
        let running = observe_locally(r#"{"Version":"v1.35.3+k0s.0","Role":"controller"}"#);
        assert!(running.k0s_running);
        assert_eq!(running.k0s_version.as_deref(), Some("v1.35.3+k0s.0"));
        assert_eq!(running.k0s_role.as_deref(), Some("controller"));

        let stopped = observe_locally("");
        assert!(!stopped.k0s_running);
        assert_eq!(stopped.k0s_version.as_deref(), Some("v1.34.1+k0s.0"));
    }

    #[test]
    fn observation_with_missing_digests_is_an_error() {
        assert!(parse_observation("version=v1\n", &["/a"]).is_err());
    }
}
