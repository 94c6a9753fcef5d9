//! Evaluating a readiness check against the object `kubectl get -o json` returned: apply waits
//! for each check to pass, and `status` repeats them.

use serde_json::Value;

use super::output::{Readiness, ReadinessCheck};
use crate::shell::quote;

impl ReadinessCheck {
    /// Returns the `kubectl` arguments that read the object this check polls.
    pub fn get_arguments(&self) -> String {
        let namespace = self
            .namespace
            .as_ref()
            .map(|ns| format!(" -n {}", quote(ns)))
            .unwrap_or_default();
        format!(
            "get {} {}{namespace} -o json",
            quote(&self.kind),
            quote(&self.name)
        )
    }

    /// Returns `None` when `object` passes the check, else what was seen.
    pub fn problem(&self, object: &Value) -> Option<String> {
        match &self.condition {
            Readiness::Exists => None,
            Readiness::Condition { condition, status } => {
                let found = conditions(object)
                    .find(|c| c["type"] == condition.as_str())
                    .cloned();
                match found {
                    Some(c) if c["status"] == status.as_str() => None,
                    Some(c) => Some(format!(
                        "{condition} is {}: {}",
                        text(&c["status"]),
                        text(&c["message"])
                    )),
                    None => Some(format!("no {condition} condition yet{}", problem(object))),
                }
            }
            Readiness::Field { field, equals } => {
                let value = object.pointer(field).map(text).unwrap_or_default();
                if value == *equals {
                    None
                } else {
                    Some(format!(
                        "{field} is {value:?}, waiting for {equals:?}{}",
                        problem(object)
                    ))
                }
            }
            Readiness::RolledOut => rolled_out(object),
        }
    }
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
