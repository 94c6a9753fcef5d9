//! Drift: where the live cluster differs from its blueprint, per host.
//!
//! [`compare`] takes what `status` read (each host's k0s state and file digests, the API snapshot,
//! the stacks' readiness) and returns one [`Finding`] per difference. Findings about the cluster as
//! a whole (nodes, stacks, policies) name the controller whose API was queried.

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
            match observation.files.get(path) {
                Some(Some(found)) if found == expected => {}
                Some(Some(found)) => add(format!(
                    "{path} changed: its sha256 is {found}, the blueprint records {expected}"
                )),
                _ => add(format!("{path} is missing")),
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
