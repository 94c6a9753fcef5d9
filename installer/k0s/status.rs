//! What `k0s status -o json` reports about a running k0s.

use serde::Deserialize;

use super::version::K0sVersion;

/// The fields of `k0s status -o json` that airlock reads. k0s prints Go field names as keys.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct K0sStatus {
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub pid: u64,
    #[serde(default)]
    pub role: String,
    #[serde(default)]
    pub workloads: bool,
    #[serde(default)]
    pub single_node: bool,
    /// The running process's command line, e.g. `["/usr/local/bin/k0s", "controller", ...]`.
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default, rename = "K0sVars")]
    pub k0s_vars: K0sVars,
}

/// The paths k0s derived for this node.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct K0sVars {
    #[serde(default)]
    pub data_dir: String,
    #[serde(default)]
    pub kubelet_root_dir: String,
}

/// The role a running k0s plays, in k0sctl's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunningRole {
    Controller,
    ControllerWorker,
    Single,
    Worker,
}

impl RunningRole {
    pub fn as_str(self) -> &'static str {
        match self {
            RunningRole::Controller => "controller",
            RunningRole::ControllerWorker => "controller+worker",
            RunningRole::Single => "single",
            RunningRole::Worker => "worker",
        }
    }
}

impl K0sStatus {
    /// Parses the JSON that `k0s status -o json` prints.
    pub fn parse(json: &str) -> Result<K0sStatus, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// Returns whether the status describes a running process; k0s reports an empty version,
    /// role or pid otherwise.
    pub fn is_running(&self) -> bool {
        !self.version.is_empty() && !self.role.is_empty() && self.pid != 0
    }

    /// The running version, when it parses.
    pub fn version(&self) -> Option<K0sVersion> {
        self.version.parse().ok()
    }

    /// The role as k0sctl maps it: `controller` with workloads is `single` when started with
    /// `--single`, else `controller+worker`; the old names `server` and `server+worker` are
    /// accepted.
    pub fn role(&self) -> Option<RunningRole> {
        match self.role.as_str() {
            "worker" => Some(RunningRole::Worker),
            "server+worker" => Some(RunningRole::ControllerWorker),
            "controller" | "server" if self.workloads => {
                let single = self.single_node
                    || self
                        .args
                        .iter()
                        .any(|arg| arg == "--single=true" || arg == "--single");
                Some(if single {
                    RunningRole::Single
                } else {
                    RunningRole::ControllerWorker
                })
            }
            "controller" | "server" => Some(RunningRole::Controller),
            _ => None,
        }
    }

    /// The flags the process runs with, without the binary path and the role word.
    pub fn flags(&self) -> &[String] {
        self.args.get(2..).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTROLLER_WORKER: &str = r#"{
       "Version": "v1.35.3+k0s.0",
       "Pid": 4242,
       "PPid": 1,
       "Role": "controller",
       "SysInit": "linux-systemd",
       "StubFile": "/etc/systemd/system/k0scontroller.service",
       "Workloads": true,
       "SingleNode": false,
       "Args": ["/usr/local/bin/k0s", "controller", "--config=/etc/k0s/k0s.yaml", "--data-dir=/var/lib/k0s", "--enable-worker=true"],
       "ClusterConfig": null,
       "K0sVars": {"DataDir": "/var/lib/k0s", "KubeletRootDir": "/var/lib/kubelet", "RunDir": "/run/k0s"}
    }"#;

    #[test]
    fn controller_with_workloads_is_controller_worker() {
        let status = K0sStatus::parse(CONTROLLER_WORKER).unwrap();
        assert!(status.is_running());
        assert_eq!(status.role(), Some(RunningRole::ControllerWorker));
        assert_eq!(status.version().unwrap().to_string(), "v1.35.3+k0s.0");
        assert_eq!(status.flags()[0], "--config=/etc/k0s/k0s.yaml");
        assert_eq!(status.k0s_vars.kubelet_root_dir, "/var/lib/kubelet");
    }

    #[test]
    fn single_flag_makes_single() {
        let json = CONTROLLER_WORKER.replace("--enable-worker=true", "--single=true");
        assert_eq!(
            K0sStatus::parse(&json).unwrap().role(),
            Some(RunningRole::Single)
        );
    }

    #[test]
    fn plain_roles_map_directly() {
        let worker =
            K0sStatus::parse(r#"{"Version":"v1.35.3+k0s.0","Pid":7,"Role":"worker"}"#).unwrap();
        assert_eq!(worker.role(), Some(RunningRole::Worker));
        let controller =
            K0sStatus::parse(r#"{"Version":"v1.35.3+k0s.0","Pid":7,"Role":"controller"}"#).unwrap();
        assert_eq!(controller.role(), Some(RunningRole::Controller));
        assert_eq!(
            K0sStatus::parse(r#"{"Role":"server+worker"}"#)
                .unwrap()
                .role(),
            Some(RunningRole::ControllerWorker)
        );
    }

    #[test]
    fn empty_status_is_not_running() {
        assert!(!K0sStatus::parse("{}").unwrap().is_running());
    }
}
