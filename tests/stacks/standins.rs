//! The lab's stand-in charts against airlock's renders. Installed with the values airlock
//! renders, they must create every object the stacks' readiness checks poll. Every workload that
//! a node would run must run only images of its stack's image archive, because the k0s test
//! double calls a workload ready only when its images were imported.

use std::collections::{BTreeMap, BTreeSet};

use airlock::stacks::{GpuWorkload, PinnedImage, ReadinessCheck, Rendered, RenderedStack, render};
use serde_json::Value;

use crate::helm_subset::Chart;
use crate::scenario::{gpu_host, input, tenant};

/// Collects every object a stack creates: its manifest files' objects and its charts' objects.
fn stack_objects(stack: &RenderedStack) -> Vec<Value> {
    let mut objects = Vec::new();
    for file in &stack.files {
        for document in yaml_serde::Deserializer::from_str(file.text()) {
            let object: Value = serde::Deserialize::deserialize(document).unwrap();
            if object.is_null() {
                continue;
            }
            if object["kind"] == "Chart" {
                objects.extend(install_chart(stack, &object));
            }
            objects.push(object);
        }
    }
    objects
}

/// Renders the stand-in chart a Chart object names, with the values airlock rendered into it.
fn install_chart(stack: &RenderedStack, chart_object: &Value) -> Vec<Value> {
    let spec = &chart_object["spec"];
    let path = spec["chartName"].as_str().unwrap();
    let chart = stack
        .charts
        .iter()
        .find(|chart| chart.path == path)
        .unwrap_or_else(|| panic!("{}: no chart archive for {path}", stack.stack));
    let values: Value = yaml_serde::from_str(spec["values"].as_str().unwrap()).unwrap();
    let release = spec["releaseName"].as_str().unwrap();
    let namespace = spec["namespace"].as_str().unwrap();
    Chart::load(&chart.name, &chart.version)
        .render(release, namespace, &values)
        .unwrap_or_else(|e| panic!("stand-in chart {} {}: {e}", chart.name, chart.version))
}

/// Returns `kubectl get`'s resource name of an object: `deployment.apps`, `namespace`.
fn resource_of(object: &Value) -> String {
    let kind = object["kind"].as_str().unwrap_or_default().to_lowercase();
    match object["apiVersion"]
        .as_str()
        .unwrap_or_default()
        .rsplit_once('/')
    {
        Some((group, _)) => format!("{kind}.{group}"),
        None => kind,
    }
}

fn finds(objects: &[Value], check: &ReadinessCheck) -> bool {
    objects.iter().any(|object| {
        resource_of(object) == check.kind
            && object["metadata"]["name"] == check.name.as_str()
            && object["metadata"]["namespace"].as_str() == check.namespace.as_deref()
    })
}

/// Returns the node labels of every host that runs workloads, as the hosts join.
fn node_labels(
    rendered: &Rendered,
    input: &airlock::stacks::StackInput,
) -> Vec<(String, BTreeMap<String, String>)> {
    input
        .hosts
        .iter()
        .filter(|host| host.role.runs_workloads())
        .map(|host| {
            let plan = rendered.host(&host.hostname).unwrap();
            (host.hostname.clone(), plan.labels.clone())
        })
        .collect()
}

/// Returns the pod spec and the nodes a workload runs pods on; `None` for objects that run no pods.
/// Like the k0s test double, it schedules by `nodeSelector` alone.
fn scheduled<'a>(
    object: &'a Value,
    nodes: &[(String, BTreeMap<String, String>)],
) -> Option<(&'a Value, Vec<String>)> {
    let spec = &object["spec"];
    let pod_spec = match object["kind"].as_str()? {
        "Deployment" | "StatefulSet" | "DaemonSet" | "Job" => &spec["template"]["spec"],
        "CronJob" => &spec["jobTemplate"]["spec"]["template"]["spec"],
        _ => return None,
    };
    let selector = pod_spec["nodeSelector"].as_object();
    let on: Vec<String> = nodes
        .iter()
        .filter(|(_, labels)| {
            selector.is_none_or(|selector| {
                selector
                    .iter()
                    .all(|(key, value)| labels.get(key).map(String::as_str) == value.as_str())
            })
        })
        .map(|(name, _)| name.clone())
        .collect();
    Some((pod_spec, on))
}

fn pod_images(pod_spec: &Value) -> Vec<String> {
    ["initContainers", "containers"]
        .iter()
        .flat_map(|field| pod_spec[field].as_array().cloned().unwrap_or_default())
        .map(|container| container["image"].as_str().unwrap().to_string())
        .collect()
}

fn is_pinned(image: &str, images: &[PinnedImage]) -> bool {
    images
        .iter()
        .any(|pinned| pinned.reference == image || pinned.pinned() == image)
}

/// Checks one render against the stand-ins; returns what each stack's workloads run.
fn check_stand_ins(
    name: &str,
    input: &airlock::stacks::StackInput,
) -> BTreeMap<String, BTreeSet<String>> {
    let rendered = render(input).unwrap();
    let nodes = node_labels(&rendered, input);
    let mut running = BTreeMap::new();

    for stack in &rendered.stacks {
        let objects = stack_objects(stack);
        for check in &stack.readiness {
            assert!(
                finds(&objects, check),
                "{name}: {}: nothing creates {} {:?}/{}, which a readiness check polls",
                stack.stack,
                check.kind,
                check.namespace,
                check.name
            );
        }

        let images: &mut BTreeSet<String> = running.entry(stack.stack.to_string()).or_default();
        for object in &objects {
            let Some((pod_spec, on)) = scheduled(object, &nodes) else {
                continue;
            };
            if on.is_empty() {
                continue;
            }
            for image in pod_images(pod_spec) {
                assert!(
                    is_pinned(&image, &stack.images),
                    "{name}: {}: {} {} runs {image} on {on:?}, which the stack's image archive lacks",
                    stack.stack,
                    object["kind"],
                    object["metadata"]["name"]
                );
                images.insert(image);
            }
        }
    }
    running
}

#[test]
fn stand_ins_serve_the_default_cluster() {
    let running = check_stand_ins("default", &input(vec![]));
    assert!(running["observability"].contains("docker.io/grafana/loki:3.7.6"));
}

#[test]
fn stand_ins_serve_every_gpu_layout() {
    // A passthrough host, a host that needs the driver container, MIG, Kyverno and a tenant.
    let mut passthrough = gpu_host("gpu-1");
    passthrough.gpu_workload = GpuWorkload::VmPassthrough;
    let mut mig = gpu_host("gpu-3");
    mig.facts.host_driver_version = Some("580.65.06".into());
    mig.facts.mig_capable = true;
    let mut everything = input(vec![passthrough, gpu_host("gpu-2"), mig]);
    everything.stacks.gpu_operator.mig.enabled = true;
    everything.stacks.policy.kyverno = true;
    everything.tenants.push(tenant("research", 4));
    let running = check_stand_ins("every GPU layout", &everything);
    let gpu = &running["gpu-operator"];
    for image in [
        "nvcr.io/nvidia/driver:595.91.07-ubuntu24.04",
        "nvcr.io/nvidia/kubevirt-gpu-device-plugin:v1.6.0",
        "nvcr.io/nvidia/cloud-native/k8s-mig-manager:v0.15.0",
        "nvcr.io/nvidia/k8s/container-toolkit:v1.20.0",
    ] {
        assert!(gpu.contains(image), "{image} does not run: {gpu:?}");
    }
    assert!(running["policy"].contains("reg.kyverno.io/kyverno/kyverno:v1.19.0"));
    assert!(
        running["kubevirt"]
            .iter()
            .any(|image| image.starts_with("quay.io/kubevirt/virt-operator:v1.9.0@sha256:")),
        "{:?}",
        running["kubevirt"]
    );

    // Host drivers everywhere: the driver DaemonSet schedules no pod, so its image is not needed.
    let mut host_driver = gpu_host("gpu-1");
    host_driver.facts.host_driver_version = Some("580.65.06".into());
    let running = check_stand_ins("host driver", &input(vec![host_driver]));
    assert!(
        !running["gpu-operator"]
            .iter()
            .any(|image| image.starts_with("nvcr.io/nvidia/driver:")),
        "{:?}",
        running["gpu-operator"]
    );
}

#[test]
fn newer_operator_manifest_renders_with_warning() {
    let mut input = input(vec![]);
    input.bundle.kubevirt_operator = Some(
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/stacks/kubevirt-operator-v1.9.1.yaml"
        ))
        .unwrap(),
    );
    let rendered = render(&input).unwrap();
    let operator = crate::scenario::file(&rendered, "kubevirt/kubevirt-operator.yaml");
    // airlock pins the operator to the image its list names, whatever the manifest ships.
    assert!(
        operator.contains("image: quay.io/kubevirt/virt-operator:v1.9.0@sha256:"),
        "{operator}"
    );
    assert!(
        operator.contains("value: v1.9.1"),
        "KUBEVIRT_VERSION stays as shipped"
    );
    assert!(
        operator.contains("infra:"),
        "the v1.9.1 CRD schema is placed as shipped"
    );
    let mismatch = rendered.warnings.iter().any(|warning| {
        warning.stack == airlock::stacks::Stack::Kubevirt && warning.message.contains("v1.9.1")
    });
    assert!(
        mismatch,
        "no release mismatch warning: {:?}",
        rendered.warnings
    );
}
