//! Phase "Install the stacks": k0s deploys the stacks from the files already placed on the
//! controllers; this phase removes files that no longer belong, waits for each stack's readiness
//! checks in order, and runs the host checks a stack asks for once it is ready.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use super::context::{Run, StackOutcome};
use super::k0s_ops::{self, K0sPaths};
use super::{HostFailure, Phase, PhaseError, for_each_host};
use crate::remote::Host;
use crate::shell::quote;
use crate::stacks::{HostCheck, Readiness, ReadinessCheck, Stack, check_containerd_drop_in};

pub struct InstallStacks;

#[async_trait]
impl Phase<Run> for InstallStacks {
    fn title(&self) -> &'static str {
        "Install the stacks"
    }

    fn should_run(&self, run: &Run) -> bool {
        run.stacks.is_some()
    }

    async fn run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        remove_stale_manifests(run).await?;
        label_nodes(run).await?;
        let Some(rendered) = run.stacks.clone() else {
            return Ok(());
        };
        let leader = run.leader().host();
        let leader_spec = run.leader().spec.clone();
        let paths = K0sPaths {
            binary: &leader_spec.k0s_install_path,
            data_dir: &leader_spec.data_dir,
        };

        for stack in &rendered.stacks {
            let item = run.ui.item(stack.stack.name(), None);
            for check in &stack.readiness {
                item.set_state(&format!("waiting for {} {}", check.kind, check.name));
                let timeout = run.settings.stack_timeout.unwrap_or(check.timeout);
                let waited = k0s_ops::wait_until(&describe(check), timeout, || async {
                    evaluate(&leader, paths, check).await
                })
                .await;
                if let Err(error) = waited {
                    item.fail("not ready");
                    run.stack_status.insert(
                        stack.stack,
                        StackOutcome {
                            ready: false,
                            detail: format!("{error:#}"),
                        },
                    );
                    return Err(PhaseError::new(error.context(format!("the {} stack is not ready", stack.stack))).with_help(
                        "the last state names what is missing; a missing image means the bundle lacks it or its archive did not reach the worker",
                    ));
                }
            }
            run_host_checks(run, stack.stack).await?;
            item.finish("ready");
            run.stack_status.insert(
                stack.stack,
                StackOutcome {
                    ready: true,
                    detail: format!("{} checks passed", stack.readiness.len()),
                },
            );
            let label = run.leader().label();
            run.record(
                self.title(),
                &label,
                format!("stack {} ready", stack.stack),
                None,
            );
        }
        Ok(())
    }

    async fn dry_run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        let Some(rendered) = &run.stacks else {
            return Ok(());
        };
        for stack in &rendered.stacks {
            let checks: Vec<String> = stack.readiness.iter().map(describe).collect();
            run.ui.println(&format!(
                "{}: would wait for {}",
                stack.stack,
                checks.join(", ")
            ));
        }
        Ok(())
    }
}

fn describe(check: &ReadinessCheck) -> String {
    match &check.namespace {
        Some(namespace) => format!("{} {namespace}/{}", check.kind, check.name),
        None => format!("{} {}", check.kind, check.name),
    }
}

/// Returns `None` when the check passes, else what was seen.
async fn evaluate(
    leader: &Host,
    paths: K0sPaths<'_>,
    check: &ReadinessCheck,
) -> anyhow::Result<Option<String>> {
    let namespace = check
        .namespace
        .as_ref()
        .map(|ns| format!(" -n {}", quote(ns)))
        .unwrap_or_default();
    let command = paths.kubectl(&format!(
        "get {} {}{namespace} -o json",
        quote(&check.kind),
        quote(&check.name)
    ));
    let output = leader.run_output(&command).await?;
    if !output.success() {
        return Ok(Some(format!("not found yet ({})", output.stderr_tail())));
    }
    let object: Value = serde_json::from_slice(&output.stdout)?;
    Ok(match &check.condition {
        Readiness::Exists => None,
        Readiness::Condition { condition, status } => {
            let found = conditions(&object)
                .find(|c| c["type"] == condition.as_str())
                .cloned();
            match found {
                Some(c) if c["status"] == status.as_str() => None,
                Some(c) => Some(format!(
                    "{condition} is {}: {}",
                    text(&c["status"]),
                    text(&c["message"])
                )),
                None => Some(format!("no {condition} condition yet{}", problem(&object))),
            }
        }
        Readiness::Field { field, equals } => {
            let value = object.pointer(field).map(text).unwrap_or_default();
            if value == *equals {
                None
            } else {
                Some(format!(
                    "{field} is {value:?}, waiting for {equals:?}{}",
                    problem(&object)
                ))
            }
        }
        Readiness::RolledOut => rolled_out(&object),
    })
}

fn conditions(object: &Value) -> impl Iterator<Item = &Value> {
    object["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The message of the first condition that is not True, which is where Kubernetes (and the k0s
/// double) say what blocks a workload, such as an image that was never imported.
fn problem(object: &Value) -> String {
    conditions(object)
        .find(|c| c["status"] != "True" && !text(&c["message"]).is_empty())
        .map(|c| format!("; {}", text(&c["message"])))
        .unwrap_or_default()
}

/// Checks a Deployment, StatefulSet or DaemonSet for a complete rollout of its current
/// generation, as `kubectl rollout status` does.
pub fn rolled_out(object: &Value) -> Option<String> {
    let status = &object["status"];
    let number = |value: &Value| value.as_i64().unwrap_or(0);
    let generation = number(&object["metadata"]["generation"]);
    if number(&status["observedGeneration"]) < generation {
        return Some(format!(
            "generation {generation} not observed yet{}",
            problem(object)
        ));
    }
    let (desired, updated, available) = if object["kind"] == "DaemonSet" {
        (
            number(&status["desiredNumberScheduled"]),
            number(&status["updatedNumberScheduled"]),
            number(&status["numberAvailable"]),
        )
    } else {
        let desired = object["spec"]["replicas"].as_i64().unwrap_or(1);
        let ready = if object["kind"] == "StatefulSet" {
            &status["readyReplicas"]
        } else {
            &status["availableReplicas"]
        };
        (desired, number(&status["updatedReplicas"]), number(ready))
    };
    if updated >= desired && available >= desired {
        None
    } else {
        Some(format!(
            "{available} of {desired} available, {updated} updated{}",
            problem(object)
        ))
    }
}

/// Runs the checks hosts asked for once `stack` is ready.
async fn run_host_checks(run: &Run, stack: Stack) -> Result<(), PhaseError> {
    let Some(rendered) = &run.stacks else {
        return Ok(());
    };
    let mut work = Vec::new();
    for node in &run.nodes {
        let Some(plan) = rendered.host(&node.node_name()) else {
            continue;
        };
        for check in &plan.checks {
            let HostCheck::ContainerdDropIns { after, dirs } = check;
            if *after == stack {
                work.push((node.host(), node.label(), dirs.clone()));
            }
        }
    }
    for_each_host(work, run.settings.concurrency, |(host, label, dirs)| async move {
        check_drop_ins(&host, &dirs).await.map_err(|e| HostFailure::new(label, e))
    })
    .await
    .map_err(|failures| {
        PhaseError::new(failures).with_help(
            "rewrite the drop-in as containerd configuration version 3 (or without a version), or pin a GPU Operator toolkit that writes version 3",
        )
    })?;
    Ok(())
}

/// Reads every `*.toml` in `dirs` on the host and fails, naming the file, on one k0s would refuse.
async fn check_drop_ins(host: &Host, dirs: &[String]) -> anyhow::Result<()> {
    let quoted: Vec<String> = dirs.iter().map(|dir| quote(dir)).collect();
    let list = host
        .run(&format!(
            "for d in {}; do [ -d \"$d\" ] && ls -1 \"$d\"/*.toml 2>/dev/null; done; true",
            quoted.join(" ")
        ))
        .await?;
    for path in list.lines().map(str::trim).filter(|line| !line.is_empty()) {
        let Some(bytes) = host.read_file(path).await? else {
            continue;
        };
        if let Err(problem) = check_containerd_drop_in(&String::from_utf8_lossy(&bytes)) {
            anyhow::bail!("{path}: {problem}");
        }
    }
    Ok(())
}

/// Sets the node labels the stacks ask for on nodes that joined before they asked (a residency or
/// GPU setting changed after the install); nodes that joined in this run got them at join.
async fn label_nodes(run: &Run) -> Result<(), PhaseError> {
    let Some(rendered) = &run.stacks else {
        return Ok(());
    };
    let leader = run.leader();
    let host = leader.host();
    for node in run
        .nodes
        .iter()
        .filter(|node| node.spec.role.runs_workloads())
    {
        let name = node.node_name();
        let Some(plan) = rendered.host(&name) else {
            continue;
        };
        if plan.labels.is_empty() {
            continue;
        }
        let output = host
            .run_output(
                &leader
                    .k0s_paths()
                    .kubectl(&format!("get node {} -o json", quote(&name))),
            )
            .await?;
        let current: Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
        let missing: Vec<String> = plan
            .labels
            .iter()
            .filter(|(key, value)| {
                current["metadata"]["labels"][key.as_str()].as_str() != Some(value.as_str())
            })
            .map(|(key, value)| quote(&format!("{key}={value}")))
            .collect();
        if missing.is_empty() {
            continue;
        }
        let command = leader.k0s_paths().kubectl(&format!(
            "label node {} --overwrite {}",
            quote(&name),
            missing.join(" ")
        ));
        host.run(&command)
            .await
            .map_err(|e| PhaseError::new(HostFailure::new(leader.label(), e).into_error()))?;
        run.ui.println(&format!(
            "{}: labelled node {name} with {}",
            leader.label(),
            missing.join(" ")
        ));
    }
    Ok(())
}

/// Removes manifests that airlock placed for its stacks earlier but that the current rendering
/// no longer has (a tenant removed, a stack turned off), so that k0s prunes their objects.
/// Folders of other stacks are left alone.
async fn remove_stale_manifests(run: &Run) -> Result<(), PhaseError> {
    let wanted: BTreeSet<String> = run
        .stacks
        .iter()
        .flat_map(|rendered| &rendered.stacks)
        .flat_map(|stack| &stack.files)
        .map(|file| file.path.clone())
        .collect();
    let wanted = Arc::new(wanted);
    let work: Vec<(Arc<Host>, String, String)> = run
        .nodes
        .iter()
        .filter(|node| node.spec.role.is_controller())
        .map(|node| {
            (
                node.host(),
                node.label(),
                format!("{}/manifests", node.spec.data_dir.trim_end_matches('/')),
            )
        })
        .collect();
    let ui = &run.ui;
    for_each_host(
        work,
        run.settings.concurrency,
        |(host, label, manifests)| {
            let wanted = wanted.clone();
            async move {
                let folders: Vec<String> = Stack::ALL
                    .iter()
                    .map(|stack| quote(&format!("{manifests}/{}", stack.name())))
                    .collect();
                let script = format!(
                    "for d in {}; do [ -d \"$d\" ] && ls -1 \"$d\"/*.yaml 2>/dev/null; done; true",
                    folders.join(" ")
                );
                let listed = host
                    .run(&script)
                    .await
                    .map_err(|e| HostFailure::new(label.clone(), e))?;
                for path in listed
                    .lines()
                    .map(str::trim)
                    .filter(|line| !line.is_empty())
                {
                    let relative = path.strip_prefix(&format!("{manifests}/")).unwrap_or(path);
                    if !wanted.contains(relative) {
                        host.run(&format!("rm -f {}", quote(path)))
                            .await
                            .map_err(|e| HostFailure::new(label.clone(), e))?;
                        ui.println(&format!(
                            "{label}: removed {path}, which no stack renders any more"
                        ));
                    }
                }
                Ok(())
            }
        },
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deployment_rollout_needs_available_replicas() {
        let object = json!({
            "kind": "Deployment",
            "metadata": {"generation": 2},
            "spec": {"replicas": 2},
            "status": {"observedGeneration": 2, "updatedReplicas": 2, "availableReplicas": 1,
                       "conditions": [{"type": "Available", "status": "False", "message": "image quay.io/x:1 not imported on lab-2"}]}
        });
        let seen = rolled_out(&object).unwrap();
        assert!(seen.contains("1 of 2 available"), "{seen}");
        assert!(
            seen.contains("image quay.io/x:1 not imported on lab-2"),
            "{seen}"
        );
    }

    #[test]
    fn daemonset_rollout_counts_scheduled_pods() {
        let object = json!({
            "kind": "DaemonSet",
            "metadata": {"generation": 1},
            "status": {"observedGeneration": 1, "desiredNumberScheduled": 2, "updatedNumberScheduled": 2, "numberAvailable": 2}
        });
        assert_eq!(rolled_out(&object), None);
    }

    #[test]
    fn unobserved_generation_is_not_rolled_out() {
        let object = json!({"kind": "Deployment", "metadata": {"generation": 3}, "spec": {"replicas": 1},
                            "status": {"observedGeneration": 2, "updatedReplicas": 1, "availableReplicas": 1}});
        assert!(
            rolled_out(&object)
                .unwrap()
                .starts_with("generation 3 not observed yet")
        );
    }
}
