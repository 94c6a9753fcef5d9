//! Drift: where the live cluster differs from its blueprint, per host.
//!
//! [`compare`] takes what `status` read (each host's k0s state and its files' digests, modes and
//! owners, the API snapshot, the stacks' readiness) and returns one [`Finding`] per difference.
//! Findings about the cluster as a whole (nodes, stacks, policies) name the controller whose API
//! was queried.

use std::collections::BTreeMap;

use super::live::{HostObservation, LiveCluster};
use super::record::Blueprint;

/// One difference between the blueprint and the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The host as the cluster file names it.
    pub host: String,
    pub message: String,
}

/// The facts `status` read from the cluster.
pub struct Observed<'a> {
    /// Per node name: the host's label and what was read there, or why nothing was.
    pub hosts: &'a BTreeMap<String, (String, Result<HostObservation, String>)>,
    /// The label of the controller whose API was queried for the cluster-wide facts.
    pub api_host: &'a str,
    pub live: Result<&'a LiveCluster, String>,
    pub cluster_id: Option<&'a str>,
    /// Per stack name, the problem of each readiness check that failed.
    pub readiness: &'a BTreeMap<String, Vec<String>>,
    /// Hosts of the cluster file that the blueprint does not list.
    pub unknown_hosts: &'a [String],
}

/// Compares the blueprint with what was observed.
pub fn compare(blueprint: &Blueprint, observed: &Observed<'_>) -> Vec<Finding> {
    let mut findings = Vec::new();
    for node in &blueprint.nodes {
        let Some((label, observation)) = observed.hosts.get(&node.name) else {
            findings.push(Finding {
                host: node.label(),
                message: format!(
                    "node {} of the blueprint is not in the cluster file",
                    node.name
                ),
            });
            continue;
        };
        let mut add = |message: String| {
            findings.push(Finding {
                host: label.clone(),
                message,
            })
        };
        let observation = match observation {
            Ok(observation) => observation,
            Err(reason) => {
                add(format!("cannot be checked: {reason}"));
                continue;
            }
        };
        match (&observation.k0s_version, observation.k0s_running) {
            (None, _) => add("k0s is not installed".to_string()),
            (Some(_), false) => add("k0s is not running".to_string()),
            (Some(version), true) if *version != node.k0s_version => add(format!(
                "k0s {version} runs, the blueprint records {}",
                node.k0s_version
            )),
            _ => {}
        }
        if let Some(role) = &observation.k0s_role {
            let expected = if node.is_controller() {
                "controller"
            } else {
                "worker"
            };
            if !role.starts_with(expected) {
                add(format!(
                    "k0s runs as {role}, the blueprint records {}",
                    node.role
                ));
            }
        }
        for (path, expected) in &node.files {
            let Some(Some(found)) = observation.files.get(path) else {
                add(format!("{path} is missing"));
                continue;
            };
            if found.digest != *expected {
                add(format!(
                    "{path} changed: its sha256 is {}, the blueprint records {expected}",
                    found.digest
                ));
            }
            // A blueprint written before airlock recorded modes has none to compare.
            let Some(placed) = node.file_modes.get(path) else {
                continue;
            };
            if let Some(mismatch) = found.mode_mismatch(
                &placed.mode,
                placed.user.as_deref(),
                placed.group.as_deref(),
            ) {
                add(format!(
                    "{path} has {}, the blueprint records {}",
                    mismatch.found, mismatch.expected
                ));
            }
        }
    }
    for host in observed.unknown_hosts {
        findings.push(Finding {
            host: host.clone(),
            message: "the host is in the cluster file but not in the blueprint; run airlock apply"
                .to_string(),
        });
    }
    findings.extend(cluster_findings(blueprint, observed));
    findings
}

fn cluster_findings(blueprint: &Blueprint, observed: &Observed<'_>) -> Vec<Finding> {
    let api_host = observed.api_host.to_string();
    let mut messages = Vec::new();
    let live = match &observed.live {
        Ok(live) => live,
        Err(reason) => {
            return vec![Finding {
                host: api_host,
                message: format!("the cluster API cannot be read: {reason}"),
            }];
        }
    };
    if let (Some(recorded), Some(found)) = (&blueprint.cluster.id, observed.cluster_id)
        && recorded != found
    {
        messages.push(format!(
            "the cluster id is {found}, the blueprint records {recorded}: this is another cluster"
        ));
    }
    for node in blueprint.nodes.iter().filter(|node| node.runs_workloads()) {
        match live.nodes.iter().find(|live| live.name == node.name) {
            None => messages.push(format!("node {} is not registered", node.name)),
            Some(live) if !live.ready => messages.push(format!("node {} is NotReady", node.name)),
            Some(live)
                if !live.kubelet_version.is_empty()
                    && !node
                        .k0s_version
                        .starts_with(live.kubelet_version.trim_end_matches("+k0s")) =>
            {
                messages.push(format!(
                    "node {} runs kubelet {}, which is not k0s {}",
                    node.name, live.kubelet_version, node.k0s_version
                ))
            }
            Some(_) => {}
        }
    }
    for live in &live.nodes {
        if !blueprint.nodes.iter().any(|node| node.name == live.name) {
            messages.push(format!(
                "node {} is registered but not in the blueprint",
                live.name
            ));
        }
    }
    for (stack, problems) in observed.readiness {
        for problem in problems {
            messages.push(format!("stack {stack} is not ready: {problem}"));
        }
    }
    for policy in &blueprint.policies {
        if !live.has(&policy.kind, None, &policy.name) {
            messages.push(format!("policy {} {} is missing", policy.kind, policy.name));
        }
    }
    messages
        .into_iter()
        .map(|message| Finding {
            host: api_host.clone(),
            message,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;
    use crate::remote::FileState;

    /// Builds a blueprint of one host with one placed file, `/etc/app.conf`. `file_modes` is the
    /// YAML of its `fileModes` entry, or empty for a blueprint written before airlock recorded
    /// modes.
    fn blueprint(file_modes: &str) -> Blueprint {
        let digest = Digest::of_bytes(b"conf");
        let head = Digest::of_bytes(b"");
        Blueprint::parse(&format!(
            "formatVersion: 1\nwrittenAt: '2025-01-01T00:00:00Z'\n\
             writtenBy: {{airlock: '0.1.0', operator: ops@lab, command: apply}}\n\
             cluster: {{name: lab}}\n\
             bundle: {{name: lab, version: 1, digest: '{head}', signature: unsigned}}\n\
             k0s: {{version: v1.35.3+k0s.0, configPath: /etc/k0s/k0s.yaml}}\n\
             nodes:\n- name: lab-1\n  role: worker\n  address: 127.0.1.11\n  port: 22\n  \
             hostname: lab-1\n  os: Debian\n  kernel: '6.1'\n  architecture: amd64\n  cpus: 2\n  \
             memoryBytes: 1\n  k0sVersion: v1.35.3+k0s.0\n  files: {{/etc/app.conf: '{digest}'}}\n\
             {file_modes}\
             auditLog: {{entries: 1, head: '{head}'}}\n"
        ))
        .unwrap()
    }

    /// Compares `blueprint` with a host whose `/etc/app.conf` has the recorded bytes, mode 0777
    /// and owner root:root, and returns the findings about that file.
    fn file_findings(blueprint: &Blueprint) -> Vec<String> {
        let found = FileState {
            digest: Digest::of_bytes(b"conf"),
            mode: 0o777,
            uid: 0,
            gid: 0,
            user: "root".into(),
            group: "root".into(),
        };
        let observation = HostObservation {
            k0s_version: Some("v1.35.3+k0s.0".into()),
            k0s_running: true,
            k0s_role: Some("worker".into()),
            files: [("/etc/app.conf".to_string(), Some(found))].into(),
        };
        let hosts = [(
            "lab-1".to_string(),
            ("127.0.1.11".to_string(), Ok(observation)),
        )]
        .into();
        let observed = Observed {
            hosts: &hosts,
            api_host: "127.0.1.11",
            live: Err("not read in this test".into()),
            cluster_id: None,
            readiness: &BTreeMap::new(),
            unknown_hosts: &[],
        };
        compare(blueprint, &observed)
            .into_iter()
            .filter(|finding| finding.message.contains("/etc/app.conf"))
            .map(|finding| format!("{}: {}", finding.host, finding.message))
            .collect()
    }

    #[test]
    fn changed_mode_and_owner_reported() {
        let recorded = blueprint(
            "  fileModes: {/etc/app.conf: {mode: '0640', user: nobody, group: daemon}}\n",
        );
        assert_eq!(
            file_findings(&recorded),
            [
                "127.0.1.11: /etc/app.conf has mode 0777 and owner root:root, \
                 the blueprint records mode 0640 and owner nobody:daemon"
            ]
        );
    }

    #[test]
    fn blueprint_without_modes_checks_digests_only() {
        let older = blueprint("");
        assert!(older.nodes[0].file_modes.is_empty());
        assert_eq!(file_findings(&older), Vec::<String>::new());
    }
}
