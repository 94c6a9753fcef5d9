//! Scenario inputs: a bundle that carries every listed image (with digests derived from the
//! reference, so snapshots are stable) and every chart, and hosts with typical facts.

use airlock::digest::Digest;
use airlock::stacks::{
    BundleChart, BundleContents, BundleImage, GpuDevice, GpuWorkload, HostFacts, HostInput,
    Isolation, Quota, Rendered, Role, StackInput, Tenant,
};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn listed_images() -> Vec<String> {
    let mut references = Vec::new();
    for entry in std::fs::read_dir(format!("{ROOT}/images")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let list: serde_json::Value = yaml_serde::from_str(&text).unwrap();
        for image in list["images"].as_array().unwrap() {
            let reference = image["reference"].as_str().unwrap().to_string();
            if image["osSuffix"] == true {
                references.push(format!("{reference}-ubuntu24.04"));
            } else {
                references.push(reference);
            }
        }
    }
    references.sort();
    references
}

pub fn bundle() -> BundleContents {
    let images = listed_images()
        .into_iter()
        .map(|reference| BundleImage {
            digest: Digest::of_bytes(reference.as_bytes()),
            reference,
        })
        .collect();
    let chart = |name: &str, version: &str, archive: &str| BundleChart {
        name: name.into(),
        version: version.into(),
        archive: archive.into(),
    };
    BundleContents {
        images,
        charts: vec![
            chart("gpu-operator", "v26.7.0", "gpu-operator-v26.7.0.tgz"),
            chart(
                "kube-prometheus-stack",
                "88.5.3",
                "kube-prometheus-stack-88.5.3.tgz",
            ),
            chart("loki", "18.11.0", "loki-18.11.0.tgz"),
            chart(
                "opentelemetry-collector",
                "0.170.0",
                "opentelemetry-collector-0.170.0.tgz",
            ),
            chart(
                "local-path-provisioner",
                "0.0.32",
                "local-path-provisioner-0.0.32.tgz",
            ),
            chart("kyverno", "3.9.0", "kyverno-3.9.0.tgz"),
        ],
        kubevirt_operator: Some(
            std::fs::read_to_string(format!(
                "{ROOT}/tests/fixtures/stacks/kubevirt-operator.yaml"
            ))
            .unwrap(),
        ),
        crds: vec![],
    }
}

fn host(hostname: &str, role: Role) -> HostInput {
    HostInput {
        hostname: hostname.into(),
        role,
        gpu_workload: GpuWorkload::Container,
        facts: HostFacts {
            kvm: true,
            iommu_groups: true,
            ..HostFacts::default()
        },
    }
}

/// Builds a worker with one H100 PCIe, KVM and IOMMU, on Ubuntu 24.04, without a host driver.
pub fn gpu_host(hostname: &str) -> HostInput {
    let mut host = host(hostname, Role::Worker);
    host.facts.gpus = vec![GpuDevice {
        address: "0000:3b:00.0".into(),
        device_id: "2331".into(),
        name: Some("GH100 [H100 PCIe]".into()),
    }];
    host.facts.os_id = Some("ubuntu".into());
    host.facts.os_version_id = Some("24.04".into());
    host
}

/// Builds the input that a cluster file without `spec.airlock` gives: a controller and a CPU worker,
/// plus `extra` hosts.
pub fn input(extra: Vec<HostInput>) -> StackInput {
    let mut hosts = vec![
        host("ctrl-1", Role::Controller),
        host("cpu-1", Role::Worker),
    ];
    hosts.extend(extra);
    let text = "hosts: []\nk0sVersion: v1.36.3+k0s.0\nbundle: {}\n";
    let mut input: StackInput = yaml_serde::from_str(text).unwrap();
    input.hosts = hosts;
    input.bundle = bundle();
    input
}

pub fn tenant(name: &str, gpu: u32) -> Tenant {
    Tenant {
        name: name.into(),
        classification: "confidential".into(),
        isolation: Isolation::Namespace,
        quota: Quota {
            gpu,
            cpu: Some("64".into()),
            memory: Some("256Gi".into()),
            storage: Some("1Ti".into()),
        },
    }
}

/// Builds a VM tenant of classification restricted with `gpu` passthrough GPUs.
pub fn vm_tenant(name: &str, gpu: u32) -> Tenant {
    Tenant {
        name: name.into(),
        classification: "restricted".into(),
        isolation: Isolation::Vm,
        quota: Quota {
            gpu,
            cpu: Some("32".into()),
            memory: Some("128Gi".into()),
            storage: None,
        },
    }
}

pub fn file<'a>(rendered: &'a Rendered, path: &str) -> &'a str {
    rendered
        .stacks
        .iter()
        .flat_map(|stack| &stack.files)
        .find(|file| file.path == path)
        .unwrap_or_else(|| panic!("no file {path}"))
        .text()
}

/// Parses the `values` of the (first) Chart object in a file.
pub fn chart_values(rendered: &Rendered, path: &str) -> serde_json::Value {
    let chart: serde_json::Value = yaml_serde::from_str(file(rendered, path)).unwrap();
    yaml_serde::from_str(chart["spec"]["values"].as_str().unwrap()).unwrap()
}

/// Paths whose digest differs between two renders, or that exist in only one.
pub fn changed_files(before: &Rendered, after: &Rendered) -> Vec<String> {
    let digests = |rendered: &Rendered| -> std::collections::BTreeMap<String, Digest> {
        rendered
            .stacks
            .iter()
            .flat_map(|stack| &stack.files)
            .map(|f| (f.path.clone(), f.digest))
            .collect()
    };
    let (before, after) = (digests(before), digests(after));
    let mut changed: Vec<String> = after
        .iter()
        .filter(|(path, digest)| before.get(*path) != Some(digest))
        .map(|(path, _)| path.clone())
        .chain(
            before
                .keys()
                .filter(|path| !after.contains_key(*path))
                .cloned(),
        )
        .collect();
    changed.sort();
    changed
}

/// Everything a render produced, as text for a snapshot.
pub fn summary(rendered: &Rendered) -> String {
    let mut out = String::new();
    for stack in &rendered.stacks {
        out.push_str(&format!("=== stack {}\n", stack.stack));
        for chart in &stack.charts {
            out.push_str(&format!(
                "chart: {} {} at {}\n",
                chart.name, chart.version, chart.path
            ));
        }
        for image in &stack.images {
            out.push_str(&format!("image: {}\n", image.reference));
        }
        for check in &stack.readiness {
            out.push_str(&format!(
                "ready: {}\n",
                serde_json::to_string(check).unwrap()
            ));
        }
        for file in &stack.files {
            out.push_str(&format!(
                "--- file {} ({})\n{}",
                file.path,
                file.digest.short(),
                file.text()
            ));
        }
    }
    for host in &rendered.hosts {
        out.push_str(&format!("=== host {}\n", host.hostname));
        out.push_str(&format!("flags: {:?}\n", host.install_flags));
        for file in &host.files {
            out.push_str(&format!("file: {file:?}\n"));
        }
        for check in &host.checks {
            out.push_str(&format!(
                "check: {}\n",
                serde_json::to_string(check).unwrap()
            ));
        }
    }
    for warning in &rendered.warnings {
        out.push_str(&format!("warning: {warning} (help: {})\n", warning.help));
    }
    out
}
