//! The admission policies of the policy stack, evaluated: each rendered
//! ValidatingAdmissionPolicy runs its own CEL expressions (see `admission.rs`) over objects it
//! must reject and objects it must admit. Namespace objects are the ones the tenants stack
//! renders, so the tests also prove that airlock's own tenants pass its policies.

use std::collections::BTreeMap;

use airlock::stacks::{GpuWorkload, PolicyMode, Rendered, Stack, render};
use serde_json::{Value, json};

use crate::admission::{Outcome, Policy, Request};
use crate::scenario::{gpu_host, input, tenant, vm_tenant};

/// Every ValidatingAdmissionPolicy the policy stack renders; each has a test below.
const TESTED_POLICIES: [&str; 6] = [
    "airlock-allowed-registries",
    "airlock-external-exposure",
    "airlock-gpu-pods",
    "airlock-gpu-vms",
    "airlock-namespace-labels",
    "airlock-pod-security",
];

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A cluster with every stack on: a passthrough GPU host, a container GPU host, residency, and
/// tenants with a GPU quota (`research`, VM tenant `vision`) and without one (`finance`).
struct Cluster {
    rendered: Rendered,
    policies: BTreeMap<String, Policy>,
}

impl Cluster {
    fn new() -> Cluster {
        Cluster::with(|_| {})
    }

    fn with(adjust: impl FnOnce(&mut airlock::stacks::StackInput)) -> Cluster {
        let mut passthrough = gpu_host("gpu-1");
        passthrough.gpu_workload = GpuWorkload::VmPassthrough;
        let mut input = input(vec![passthrough, gpu_host("gpu-2")]);
        input.residency.jurisdiction = Some("DE".into());
        input.residency.region = Some("eu-central".into());
        input.residency.site = Some("fra-1".into());
        input.tenants.push(tenant("research", 4));
        input.tenants.push(tenant("finance", 0));
        input.tenants.push(vm_tenant("vision", 2));
        adjust(&mut input);
        let rendered = render(&input).unwrap();
        let policies = documents(&rendered, Stack::Policy)
            .into_iter()
            .filter(|object| object["kind"] == "ValidatingAdmissionPolicy")
            .map(|object| {
                let policy = Policy::parse(&object);
                (policy.name.clone(), policy)
            })
            .collect();
        Cluster { rendered, policies }
    }

    fn policy(&self, name: &str) -> &Policy {
        self.policies
            .get(name)
            .unwrap_or_else(|| panic!("no policy {name} was rendered"))
    }

    /// Returns the tenant Namespace as rendered, or a bare one for other names, with the
    /// `kubernetes.io/metadata.name` label the API server adds to every namespace.
    fn namespace(&self, name: &str) -> Value {
        let mut namespace = documents(&self.rendered, Stack::Tenants)
            .into_iter()
            .find(|object| object["kind"] == "Namespace" && object["metadata"]["name"] == name)
            .unwrap_or_else(
                || json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
            );
        namespace["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
        namespace
    }
}

fn documents(rendered: &Rendered, stack: Stack) -> Vec<Value> {
    let mut objects = Vec::new();
    for file in &rendered.stack(stack).unwrap().files {
        for document in yaml_serde::Deserializer::from_str(file.text()) {
            let value: Value = serde::Deserialize::deserialize(document).unwrap();
            if !value.is_null() {
                objects.push(value);
            }
        }
    }
    objects
}

fn container(image: &str) -> Value {
    json!({"name": "app", "image": image})
}

fn pod(namespace: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "app", "namespace": namespace},
        "spec": spec,
    })
}

/// Builds a pod with one container of an allowed image, plus `extra` fields in its spec.
fn plain_pod(namespace: &str, extra: Value) -> Value {
    let mut spec = json!({"containers": [container("quay.io/example/app:v1")]});
    merge(&mut spec, extra);
    pod(namespace, spec)
}

/// Builds a pod whose one container has `fields` merged in.
fn pod_with_container(namespace: &str, fields: Value) -> Value {
    let mut app = container("quay.io/example/app:v1");
    merge(&mut app, fields);
    pod(namespace, json!({"containers": [app]}))
}

fn merge(target: &mut Value, extra: Value) {
    match (target, extra) {
        (Value::Object(target), Value::Object(extra)) => {
            for (key, value) in extra {
                merge(target.entry(key).or_insert(Value::Null), value);
            }
        }
        (target, extra) => *target = extra,
    }
}

#[track_caller]
fn assert_denied(policy: &Policy, case: &str, request: Request, message: &str) {
    match policy.evaluate(&request) {
        Outcome::Denied(messages) => assert!(
            messages.iter().any(|m| m.contains(message)),
            "{}: {case}: denied, but not with {message:?}: {messages:?}",
            policy.name
        ),
        other => panic!("{}: {case}: expected a denial, got {other:?}", policy.name),
    }
}

#[track_caller]
fn assert_admitted(policy: &Policy, case: &str, request: Request) {
    let outcome = policy.evaluate(&request);
    assert_eq!(outcome, Outcome::Admitted, "{}: {case}", policy.name);
}

#[track_caller]
fn assert_not_matched(policy: &Policy, case: &str, request: Request) {
    let outcome = policy.evaluate(&request);
    assert_eq!(outcome, Outcome::NotMatched, "{}: {case}", policy.name);
}

#[test]
fn every_rendered_policy_is_tested() {
    let cluster = Cluster::new();
    let rendered: Vec<&str> = cluster.policies.keys().map(String::as_str).collect();
    assert_eq!(rendered, TESTED_POLICIES);
    for policy in cluster.policies.values() {
        assert!(
            !policy.description.trim().is_empty(),
            "{} has no airlock.io/description",
            policy.name
        );
    }
}

#[test]
fn bindings_follow_the_policy_mode() {
    for (mode, actions) in [
        (PolicyMode::Enforce, json!(["Deny"])),
        (PolicyMode::Audit, json!(["Audit", "Warn"])),
    ] {
        let cluster = Cluster::with(|input| input.stacks.policy.mode = mode);
        let bindings: BTreeMap<String, Value> = documents(&cluster.rendered, Stack::Policy)
            .into_iter()
            .filter(|object| object["kind"] == "ValidatingAdmissionPolicyBinding")
            .map(|object| {
                (
                    object["metadata"]["name"].as_str().unwrap().to_string(),
                    object,
                )
            })
            .collect();
        let names: Vec<&str> = bindings.keys().map(String::as_str).collect();
        assert_eq!(names, TESTED_POLICIES, "one binding per policy");
        for (name, binding) in &bindings {
            assert_eq!(binding["spec"]["policyName"], json!(name));
            assert_eq!(
                binding["spec"]["validationActions"], actions,
                "{name} in {mode:?}"
            );
        }
    }
}

#[test]
fn allowed_registries() {
    let cluster = Cluster::new();
    let policy = cluster.policy("airlock-allowed-registries");
    let research = cluster.namespace("research");
    let create = |object: Value| Request::create(object, research.clone());
    let in_research =
        |image: &str| create(pod("research", json!({"containers": [container(image)]})));

    for image in [
        "quay.io/kubevirt/virt-launcher:v1.9.0",
        "nvcr.io/nvidia/k8s/dcgm-exporter:4.6.0-4.8.3-distroless",
        "docker.io/library/busybox:1.37.0",
        "registry.k8s.io/kube-state-metrics/kube-state-metrics:v2.20.0",
    ] {
        assert_admitted(policy, image, in_research(image));
    }
    assert_admitted(
        policy,
        "digest only",
        in_research(&format!("quay.io/example/app@{DIGEST}")),
    );
    assert_admitted(
        policy,
        "tag and digest",
        in_research(&format!("quay.io/example/app:v1@{DIGEST}")),
    );

    let registry = "every image must come from an allowed registry";
    for (case, image) in [
        ("registry not allowed", "evil.example.com/app:v1"),
        (
            "allowed name as a prefix of another host",
            "quay.io.evil.example.com/app:v1",
        ),
        (
            "no registry, though Docker Hub is allowed",
            "busybox:1.37.0",
        ),
        ("Docker Hub short name", "library/busybox:1.37.0"),
    ] {
        assert_denied(policy, case, in_research(image), registry);
    }
    let tag = "every image must name a tag other than latest, or a digest";
    for (case, image) in [
        ("latest", "quay.io/example/app:latest"),
        ("no tag", "quay.io/example/app"),
        ("short digest", "quay.io/example/app@sha256:0123"),
    ] {
        assert_denied(policy, case, in_research(image), tag);
    }

    let init = pod(
        "research",
        json!({
            "initContainers": [container("evil.example.com/init:v1")],
            "containers": [container("quay.io/example/app:v1")],
        }),
    );
    assert_denied(policy, "init container", create(init), registry);

    let before = plain_pod("research", json!({}));
    let mut debugged = before.clone();
    debugged["spec"]["ephemeralContainers"] = json!([container("evil.example.com/debug:v1")]);
    assert_denied(
        policy,
        "ephemeral container added by kubectl debug",
        Request::add_ephemeral_container(before.clone(), debugged, research.clone()),
        registry,
    );

    let mut swapped = before.clone();
    swapped["spec"]["containers"][0]["image"] = json!("evil.example.com/app:v1");
    assert_denied(
        policy,
        "image changed on update",
        Request::update(before, swapped, research.clone()),
        registry,
    );

    // k0s's own pods run the k0s release's images, which are not this policy's concern.
    let system = pod("kube-system", json!({"containers": [container("busybox")]}));
    assert_not_matched(
        policy,
        "kube-system",
        Request::create(system, cluster.namespace("kube-system")),
    );
    // The platform stacks' namespaces are not exempt: their images come from the bundle too.
    let monitoring = pod(
        "monitoring",
        json!({"containers": [container("evil.example.com/x:v1")]}),
    );
    assert_denied(
        policy,
        "stack namespace",
        Request::create(monitoring, cluster.namespace("monitoring")),
        registry,
    );
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "app", "namespace": "research"},
        "spec": {},
    });
    assert_not_matched(policy, "a Deployment", create(deployment));
}

#[test]
fn allowed_registries_from_the_cluster_file() {
    let cluster = Cluster::with(|input| {
        input.allowed_registries = vec!["registry.example.com:5000/platform".into()];
    });
    let policy = cluster.policy("airlock-allowed-registries");
    let research = cluster.namespace("research");
    let in_research = |image: &str| {
        Request::create(
            pod("research", json!({"containers": [container(image)]})),
            research.clone(),
        )
    };

    assert_admitted(
        policy,
        "listed registry and path",
        in_research("registry.example.com:5000/platform/app:v1"),
    );
    let registry = "every image must come from an allowed registry";
    for (case, image) in [
        (
            "other path on the listed registry",
            "registry.example.com:5000/other/app:v1",
        ),
        (
            "listed path as a prefix of another",
            "registry.example.com:5000/platformx/app:v1",
        ),
        (
            "bundle registry no longer allowed",
            "quay.io/kubevirt/virt-launcher:v1.9.0",
        ),
    ] {
        assert_denied(policy, case, in_research(image), registry);
    }
}

#[test]
fn pod_security() {
    let cluster = Cluster::new();
    let policy = cluster.policy("airlock-pod-security");
    let research = cluster.namespace("research");
    let create = |object: Value| Request::create(object, research.clone());

    assert_admitted(
        policy,
        "plain pod",
        create(plain_pod("research", json!({}))),
    );
    assert_admitted(
        policy,
        "privileged: false",
        create(pod_with_container(
            "research",
            json!({"securityContext": {"privileged": false}}),
        )),
    );
    assert_admitted(
        policy,
        "emptyDir volume",
        create(plain_pod(
            "research",
            json!({"volumes": [{"name": "scratch", "emptyDir": {}}]}),
        )),
    );
    assert_admitted(
        policy,
        "host namespaces set to false",
        create(plain_pod(
            "research",
            json!({"hostNetwork": false, "hostPID": false, "hostIPC": false}),
        )),
    );

    let privileged = "privileged containers are not allowed here";
    assert_denied(
        policy,
        "privileged container",
        create(pod_with_container(
            "research",
            json!({"securityContext": {"privileged": true}}),
        )),
        privileged,
    );
    let init = pod(
        "research",
        json!({
            "initContainers": [{"name": "init", "image": "quay.io/example/init:v1",
                                "securityContext": {"privileged": true}}],
            "containers": [container("quay.io/example/app:v1")],
        }),
    );
    assert_denied(
        policy,
        "privileged init container",
        create(init),
        privileged,
    );
    let before = plain_pod("research", json!({}));
    let mut debugged = before.clone();
    debugged["spec"]["ephemeralContainers"] = json!([{
        "name": "debug", "image": "quay.io/example/debug:v1",
        "securityContext": {"privileged": true},
    }]);
    assert_denied(
        policy,
        "privileged ephemeral container added by kubectl debug",
        Request::add_ephemeral_container(before, debugged, research.clone()),
        privileged,
    );
    assert_denied(
        policy,
        "hostPath volume",
        create(plain_pod(
            "research",
            json!({"volumes": [{"name": "root", "hostPath": {"path": "/"}}]}),
        )),
        "hostPath volumes are not allowed here",
    );
    for field in ["hostNetwork", "hostPID", "hostIPC"] {
        assert_denied(
            policy,
            field,
            create(plain_pod("research", json!({ field: true }))),
            "host network, PID and IPC namespaces are not allowed here",
        );
    }

    // The stacks that run here deploy privileged node agents in their own namespaces.
    for namespace in ["gpu-operator", "kubevirt", "monitoring", "kube-system"] {
        let agent = plain_pod(
            namespace,
            json!({"hostNetwork": true, "volumes": [{"name": "root", "hostPath": {"path": "/"}}]}),
        );
        assert_not_matched(
            policy,
            namespace,
            Request::create(agent, cluster.namespace(namespace)),
        );
    }
    // Kyverno is off, so its namespace is not exempt.
    let agent = plain_pod("kyverno", json!({"hostNetwork": true}));
    assert_denied(
        policy,
        "namespace of a stack that does not run",
        Request::create(agent, cluster.namespace("kyverno")),
        "host network",
    );
}

#[test]
fn gpu_pods() {
    let cluster = Cluster::new();
    let policy = cluster.policy("airlock-gpu-pods");
    let in_namespace =
        |namespace: &str, object: Value| Request::create(object, cluster.namespace(namespace));
    let gpu_requests = [
        (
            "GPU limit",
            json!({"resources": {"limits": {"nvidia.com/gpu": "1"}}}),
        ),
        (
            "GPU request",
            json!({"resources": {"requests": {"nvidia.com/gpu": "1"}}}),
        ),
        (
            "MIG slice",
            json!({"resources": {"limits": {"nvidia.com/mig-1g.10gb": "1"}}}),
        ),
        (
            "passthrough GPU",
            json!({"resources": {"limits": {"nvidia.com/GH100_H100_PCIE": "1"}}}),
        ),
    ];
    let gpu_env = [
        (
            "NVIDIA_VISIBLE_DEVICES",
            json!({"env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]}),
        ),
        (
            "NVIDIA_DRIVER_CAPABILITIES",
            json!({"env": [{"name": "NVIDIA_DRIVER_CAPABILITIES", "value": "compute"}]}),
        ),
    ];

    // finance has no GPU quota.
    for (case, fields) in gpu_requests.clone() {
        assert_denied(
            policy,
            case,
            in_namespace("finance", pod_with_container("finance", fields)),
            "GPU resources (nvidia.com/*) are only for tenants with a GPU quota",
        );
    }
    for runtime_class in ["nvidia", "nvidia-cdi"] {
        assert_denied(
            policy,
            runtime_class,
            in_namespace(
                "finance",
                plain_pod("finance", json!({"runtimeClassName": runtime_class})),
            ),
            "the nvidia runtime classes are only for tenants with a GPU quota",
        );
    }
    for (case, fields) in gpu_env.clone() {
        assert_denied(
            policy,
            case,
            in_namespace("finance", pod_with_container("finance", fields)),
            "NVIDIA_VISIBLE_DEVICES and NVIDIA_DRIVER_CAPABILITIES are only for tenants",
        );
    }
    let init = pod(
        "finance",
        json!({
            "initContainers": [{"name": "init", "image": "quay.io/example/init:v1",
                                "resources": {"limits": {"nvidia.com/gpu": "1"}}}],
            "containers": [container("quay.io/example/app:v1")],
        }),
    );
    assert_denied(
        policy,
        "GPU in an init container",
        in_namespace("finance", init),
        "GPU resources",
    );

    assert_admitted(
        policy,
        "CPU and memory only",
        in_namespace(
            "finance",
            pod_with_container(
                "finance",
                json!({"resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
                       "env": [{"name": "HOME", "value": "/tmp"}]}),
            ),
        ),
    );
    assert_admitted(
        policy,
        "other runtime class",
        in_namespace(
            "finance",
            plain_pod("finance", json!({"runtimeClassName": "kata"})),
        ),
    );

    // research and vision have a GPU quota.
    for (case, fields) in gpu_requests.into_iter().chain(gpu_env) {
        for tenant in ["research", "vision"] {
            assert_admitted(
                policy,
                &format!("{case} in {tenant}"),
                in_namespace(tenant, pod_with_container(tenant, fields.clone())),
            );
        }
    }
    assert_admitted(
        policy,
        "nvidia runtime class with a GPU quota",
        in_namespace(
            "research",
            plain_pod("research", json!({"runtimeClassName": "nvidia"})),
        ),
    );

    // A namespace without airlock's labels has no GPU quota.
    assert_denied(
        policy,
        "unlabelled namespace",
        in_namespace(
            "scratch",
            pod_with_container(
                "scratch",
                json!({"resources": {"limits": {"nvidia.com/gpu": "1"}}}),
            ),
        ),
        "GPU resources",
    );
    // The GPU Operator's own pods set NVIDIA_VISIBLE_DEVICES.
    assert_not_matched(
        policy,
        "gpu-operator namespace",
        in_namespace(
            "gpu-operator",
            pod_with_container(
                "gpu-operator",
                json!({"env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]}),
            ),
        ),
    );
}

fn virtual_machine(namespace: &str, devices: Value) -> Value {
    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": "vm", "namespace": namespace},
        "spec": {
            "runStrategy": "Always",
            "template": {"spec": {"domain": {"devices": devices}}},
        },
    })
}

fn virtual_machine_instance(namespace: &str, devices: Value) -> Value {
    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": "vm", "namespace": namespace},
        "spec": {"domain": {"devices": devices}},
    })
}

#[test]
fn gpu_vms() {
    let cluster = Cluster::new();
    let policy = cluster.policy("airlock-gpu-vms");
    let in_namespace =
        |namespace: &str, object: Value| Request::create(object, cluster.namespace(namespace));
    let gpus = json!({"gpus": [{"name": "gpu1", "deviceName": "nvidia.com/GH100_H100_PCIE"}]});
    let host_devices =
        json!({"hostDevices": [{"name": "dev1", "deviceName": "nvidia.com/GH100_H100_PCIE"}]});
    let message = "GPUs and host devices are only for tenants with a GPU quota";

    for (case, devices) in [("GPU", gpus.clone()), ("host device", host_devices.clone())] {
        assert_denied(
            policy,
            &format!("VirtualMachine with a {case}"),
            in_namespace("finance", virtual_machine("finance", devices.clone())),
            message,
        );
        assert_denied(
            policy,
            &format!("VirtualMachineInstance with a {case}"),
            in_namespace(
                "finance",
                virtual_machine_instance("finance", devices.clone()),
            ),
            message,
        );
        assert_admitted(
            policy,
            &format!("VirtualMachine with a {case} in a GPU tenant"),
            in_namespace("vision", virtual_machine("vision", devices)),
        );
    }

    let disks = json!({"disks": [{"name": "root", "disk": {"bus": "virtio"}}]});
    assert_admitted(
        policy,
        "VirtualMachine without devices",
        in_namespace("finance", virtual_machine("finance", disks.clone())),
    );
    assert_admitted(
        policy,
        "VirtualMachineInstance without devices",
        in_namespace("finance", virtual_machine_instance("finance", disks)),
    );
    assert_admitted(
        policy,
        "empty device lists",
        in_namespace(
            "finance",
            virtual_machine("finance", json!({"gpus": [], "hostDevices": []})),
        ),
    );

    // A VirtualMachine that takes its GPU from an instance type passes; the VirtualMachineInstance
    // KubeVirt creates from it carries the GPU and is rejected.
    let mut from_instancetype = virtual_machine("finance", json!({}));
    from_instancetype["spec"]["instancetype"] = json!({"name": "gpu-gh100-h100-pcie"});
    assert_admitted(
        policy,
        "VM with an instance type",
        in_namespace("finance", from_instancetype),
    );

    let before = virtual_machine("finance", json!({}));
    let after = virtual_machine("finance", gpus);
    assert_denied(
        policy,
        "GPU added on update",
        Request::update(before, after, cluster.namespace("finance")),
        message,
    );
}

fn namespace_object(name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": labels},
    })
}

#[test]
fn namespace_labels() {
    let cluster = Cluster::new();
    let policy = cluster.policy("airlock-namespace-labels");
    let create = |object: Value| Request::create(object, Value::Null);

    // Every tenant namespace airlock renders passes.
    for tenant in ["research", "finance", "vision"] {
        assert_admitted(policy, tenant, create(cluster.namespace(tenant)));
    }

    let valid = json!({
        "airlock.io/tenant": "lab",
        "airlock.io/classification": "internal",
        "airlock.io/jurisdiction": "DE",
        "topology.kubernetes.io/region": "eu-central",
        "airlock.io/site": "fra-1",
        "kubernetes.io/metadata.name": "lab",
    });
    assert_admitted(
        policy,
        "hand-written tenant namespace",
        create(namespace_object("lab", valid.clone())),
    );

    let tenant_label =
        "a tenant namespace must carry the label airlock.io/tenant with its own name";
    assert_denied(
        policy,
        "no labels",
        create(namespace_object("lab", json!({}))),
        tenant_label,
    );
    let bare = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "lab"}});
    assert_denied(policy, "no labels field", create(bare), tenant_label);
    let mut other_tenant = valid.clone();
    other_tenant["airlock.io/tenant"] = json!("research");
    assert_denied(
        policy,
        "another tenant's name",
        create(namespace_object("lab", other_tenant)),
        tenant_label,
    );

    let classification = "a tenant namespace must carry airlock.io/classification, one of public, internal, confidential, restricted";
    let mut undeclared = valid.clone();
    undeclared["airlock.io/classification"] = json!("secret");
    assert_denied(
        policy,
        "undeclared classification",
        create(namespace_object("lab", undeclared)),
        classification,
    );
    let mut unclassified = valid.clone();
    unclassified
        .as_object_mut()
        .unwrap()
        .remove("airlock.io/classification");
    assert_denied(
        policy,
        "no classification",
        create(namespace_object("lab", unclassified)),
        classification,
    );

    for (key, wrong) in [
        ("airlock.io/jurisdiction", "FR"),
        ("topology.kubernetes.io/region", "us-east"),
        ("airlock.io/site", "ams-1"),
    ] {
        let mut moved = valid.clone();
        moved[key] = json!(wrong);
        assert_denied(
            policy,
            &format!("{key}={wrong}"),
            create(namespace_object("lab", moved)),
            &format!("a tenant namespace must carry {key}="),
        );
        let mut missing = valid.clone();
        missing.as_object_mut().unwrap().remove(key);
        assert_denied(
            policy,
            &format!("no {key}"),
            create(namespace_object("lab", missing)),
            &format!("a tenant namespace must carry {key}="),
        );
    }

    // The policy also checks updates, such as a relabel out of the declared values.
    let research = cluster.namespace("research");
    let mut declassified = research.clone();
    declassified["metadata"]["labels"]["airlock.io/classification"] = json!("secret");
    assert_denied(
        policy,
        "classification changed on update",
        Request::update(research, declassified, Value::Null),
        classification,
    );

    // Deleting a namespace is not the policy's concern, whatever its labels.
    let unlabelled = namespace_object("lab", json!({}));
    assert_not_matched(policy, "delete", Request::delete(unlabelled, Value::Null));

    // Namespaces of Kubernetes, k0s and the stacks that run carry no tenant labels.
    for name in [
        "default",
        "kube-system",
        "kube-node-lease",
        "k0s-system",
        "gpu-operator",
        "kubevirt",
        "monitoring",
    ] {
        let existing = cluster.namespace(name);
        let mut relabelled = existing.clone();
        relabelled["metadata"]["labels"]["team"] = json!("platform");
        assert_not_matched(
            policy,
            name,
            Request::update(existing, relabelled, Value::Null),
        );
    }
}

fn service(namespace: &str, spec: Value) -> Value {
    let mut full = json!({"selector": {"app": "web"}, "ports": [{"port": 80}]});
    merge(&mut full, spec);
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": full,
    })
}

#[test]
fn external_exposure() {
    let cluster = Cluster::new();
    let policy = cluster.policy("airlock-external-exposure");
    let research = cluster.namespace("research");
    let create = |object: Value| Request::create(object, research.clone());

    assert_admitted(policy, "no type", create(service("research", json!({}))));
    assert_admitted(
        policy,
        "ClusterIP",
        create(service("research", json!({"type": "ClusterIP"}))),
    );
    assert_admitted(
        policy,
        "headless",
        create(service("research", json!({"clusterIP": "None"}))),
    );
    assert_admitted(
        policy,
        "empty externalIPs",
        create(service("research", json!({"externalIPs": []}))),
    );

    for service_type in ["LoadBalancer", "NodePort"] {
        assert_denied(
            policy,
            service_type,
            create(service("research", json!({ "type": service_type }))),
            "Services of type LoadBalancer or NodePort are not allowed here",
        );
    }
    assert_denied(
        policy,
        "externalIPs",
        create(service("research", json!({"externalIPs": ["127.0.0.10"]}))),
        "Services may not set externalIPs here",
    );
    let before = service("research", json!({}));
    let after = service("research", json!({"type": "NodePort"}));
    assert_denied(
        policy,
        "type changed on update",
        Request::update(before, after, research.clone()),
        "LoadBalancer or NodePort",
    );

    let monitoring = service("monitoring", json!({"type": "NodePort"}));
    assert_not_matched(
        policy,
        "stack namespace",
        Request::create(monitoring, cluster.namespace("monitoring")),
    );
}
