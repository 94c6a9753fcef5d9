//! Integration tests of stack rendering: snapshots of whole scenarios, re-rendering, and the
//! rendered core manifests checked by kubernetes-validate. The admission policies are evaluated
//! in `policies.rs`, the lab's stand-in charts are checked against renders in `standins.rs`, and
//! the lab artifact generator in `lab_artifacts.rs`.

mod admission;
mod helm_subset;
mod lab_artifacts;
mod policies;
mod scenario;
mod standins;

use airlock::stacks::{GpuWorkload, Stack, render};
use scenario::{gpu_host, input, summary};

#[test]
fn default_without_airlock_section() {
    let rendered = render(&input(vec![])).unwrap();
    assert!(
        rendered.stack(Stack::GpuOperator).is_none(),
        "no GPU host, so no GPU Operator"
    );
    insta::assert_snapshot!("default", summary(&rendered));
}

#[test]
fn gpu_host_with_host_driver() {
    let mut host = gpu_host("gpu-1");
    host.facts.host_driver_version = Some("580.65.06".into());
    let rendered = render(&input(vec![host])).unwrap();
    let values = scenario::chart_values(&rendered, "gpu-operator/gpu-operator.yaml");
    assert_eq!(values["driver"]["enabled"], false);
    insta::assert_snapshot!("gpu_host_driver", summary(&rendered));
}

#[test]
fn gpu_host_without_driver() {
    let rendered = render(&input(vec![gpu_host("gpu-1")])).unwrap();
    let values = scenario::chart_values(&rendered, "gpu-operator/gpu-operator.yaml");
    assert_eq!(values["driver"]["enabled"], true);
    assert_eq!(values["driver"]["version"], "595.91.07");
    let images = &rendered.stack(Stack::GpuOperator).unwrap().images;
    assert!(
        images
            .iter()
            .any(|image| image.reference == "nvcr.io/nvidia/driver:595.91.07-ubuntu24.04")
    );
    insta::assert_snapshot!("gpu_no_driver", summary(&rendered));
}

#[test]
fn gpu_host_with_mig() {
    let mut host = gpu_host("gpu-1");
    host.facts.host_driver_version = Some("580.65.06".into());
    host.facts.mig_capable = true;
    let mut input = input(vec![host]);
    input.stacks.gpu_operator.mig.enabled = true;
    let rendered = render(&input).unwrap();
    let values = scenario::chart_values(&rendered, "gpu-operator/gpu-operator.yaml");
    assert_eq!(values["migManager"]["enabled"], true);
    assert_eq!(
        rendered.host("gpu-1").unwrap().labels["nvidia.com/mig.config"],
        "all-disabled"
    );
    insta::assert_snapshot!("gpu_mig", summary(&rendered));
}

#[test]
fn gpu_host_for_vm_passthrough() {
    let mut host = gpu_host("gpu-1");
    host.gpu_workload = GpuWorkload::VmPassthrough;
    let mut input = input(vec![host]);
    input.tenants.push(scenario::vm_tenant("vision", 2));
    let rendered = render(&input).unwrap();
    let cr = scenario::file(&rendered, "kubevirt/kubevirt-cr.yaml");
    assert!(cr.contains("pciVendorSelector: \"10DE:2331\""), "{cr}");
    assert!(
        cr.contains("resourceName: \"nvidia.com/GH100_H100_PCIE\""),
        "{cr}"
    );
    assert_eq!(
        rendered.host("gpu-1").unwrap().labels["nvidia.com/gpu.workload.config"],
        "vm-passthrough"
    );
    insta::assert_snapshot!("vm_passthrough", summary(&rendered));
}

#[test]
fn new_tenant_changes_only_its_file() {
    let mut before_input = input(vec![gpu_host("gpu-1")]);
    before_input.tenants.push(scenario::tenant("research", 4));
    let before = render(&before_input).unwrap();

    let mut after_input = before_input.clone();
    after_input.tenants.push(scenario::tenant("finance", 0));
    after_input.tenants[0].quota.gpu = 8;
    let after = render(&after_input).unwrap();

    let changed = scenario::changed_files(&before, &after);
    assert_eq!(
        changed,
        vec![
            "tenants/tenant-finance.yaml",
            "tenants/tenant-research.yaml"
        ]
    );
}

#[test]
fn missing_operator_manifest_is_an_error() {
    let mut input = input(vec![]);
    input.bundle.kubevirt_operator = None;
    let error = render(&input).unwrap_err();
    assert!(error.to_string().contains("kubevirt-operator"), "{error}");
}

#[test]
fn image_missing_from_bundle_is_named() {
    let mut input = input(vec![]);
    input
        .bundle
        .images
        .retain(|image| !image.reference.contains("grafana/loki"));
    let error = render(&input).unwrap_err().to_string();
    assert!(error.contains("docker.io/grafana/loki:3.7.6"), "{error}");
    assert!(error.contains("observability"), "{error}");
}

#[test]
fn tenant_with_undeclared_classification_is_rejected() {
    let mut input = input(vec![]);
    let mut tenant = scenario::tenant("research", 0);
    tenant.classification = "secret".into();
    input.tenants.push(tenant);
    let error = render(&input).unwrap_err().to_string();
    assert!(
        error.contains("research") && error.contains("secret"),
        "{error}"
    );
}

#[test]
fn tenant_named_after_a_reserved_namespace_is_rejected() {
    // kyverno is reserved even while Kyverno is off, so turning it on later cannot collide.
    for name in ["default", "kube-system", "kyverno"] {
        let mut input = input(vec![]);
        input.tenants.push(scenario::tenant(name, 0));
        let error = render(&input).unwrap_err().to_string();
        assert!(
            error.contains(&format!("tenant {name:?}")) && error.contains("choose another"),
            "{error}"
        );
    }
}

#[test]
fn allowed_registry_with_quotes_is_rejected() {
    let mut input = input(vec![]);
    input.allowed_registries = vec!["registry.example.com/\"x\"".into()];
    let error = render(&input).unwrap_err().to_string();
    assert!(
        error.contains("allowedRegistries") && error.contains("registry.example.com"),
        "{error}"
    );
}

#[test]
fn kvm_missing_is_a_warning() {
    let mut host = gpu_host("gpu-1");
    host.facts.kvm = false;
    let rendered = render(&input(vec![host])).unwrap();
    let warning = rendered
        .warnings
        .iter()
        .find(|w| w.stack == Stack::Kubevirt)
        .unwrap();
    assert_eq!(warning.host.as_deref(), Some("gpu-1"));
    assert!(warning.message.contains("/dev/kvm"));
}

#[test]
fn kubernetes_validate_accepts_core_manifests() {
    let validate = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/kv-venv/bin/kubernetes-validate");
    assert!(
        validate.exists(),
        "{} is missing: run scripts/setup",
        validate.display()
    );

    let mut host = gpu_host("gpu-1");
    host.gpu_workload = GpuWorkload::VmPassthrough;
    let mut input = input(vec![host, gpu_host("gpu-2")]);
    input.tenants.push(scenario::tenant("research", 4));
    input.stacks.policy.kyverno = true;
    let rendered = render(&input).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for file in rendered.stacks.iter().flat_map(|stack| &stack.files) {
        let path = dir.path().join(file.path.replace('/', "_"));
        std::fs::write(&path, &file.bytes).unwrap();
        paths.push(path);
    }
    let output = std::process::Command::new(&validate)
        .args(["--strict", "--kubernetes-version", "1.36.0"])
        .args(&paths)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!stdout.contains("ERROR"), "{stdout}");
    // Custom resources have no Kubernetes schema; every core object must have passed.
    let passed = stdout
        .lines()
        .filter(|line| line.starts_with("INFO") && line.contains("passed"))
        .count();
    assert!(passed >= 20, "only {passed} objects passed:\n{stdout}");
}

#[test]
#[ignore = "prints a render for debugging"]
fn dump_render() {
    let mut input = input(vec![gpu_host("gpu-1")]);
    input.tenants.push(scenario::tenant("research", 4));
    match render(&input) {
        Ok(rendered) => println!("{}", summary(&rendered)),
        Err(e) => println!("{e}"),
    }
}
