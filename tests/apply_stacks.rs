//! `airlock apply` with every stack on lab hosts: a GPU worker, tenants, the containerd drop-in
//! check, a bundle that lacks an image, and re-applying with changed tenants.

mod common;

use std::fs;

use common::apply::{SignedBundle, TENANTS, apply_command, cluster_file, kubectl, ready_nodes};
use common::{Lab, describe, stderr};

fn node_labels(lab: &Lab, node: &str) -> serde_json::Value {
    let json: serde_json::Value =
        serde_json::from_str(&kubectl(lab, "lab-1", &format!("get node {node} -o json"))).unwrap();
    json["metadata"]["labels"].clone()
}

#[test]
fn every_stack_becomes_ready_with_a_gpu_worker() {
    let Some(lab) = Lab::start("every_stack_becomes_ready_with_a_gpu_worker", 3) else {
        return;
    };
    assert!(lab.run(&["gpu", "lab-3"]).status.success());
    let bundle = SignedBundle::build("bundles/lab.yaml");
    let cluster = cluster_file(&lab, &bundle, TENANTS);
    let output = apply_command(&lab, &cluster, &bundle.bundle)
        .args(["--stack-timeout", "60s"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    let text = stderr(&output);
    for stack in [
        "observability",
        "gpu-operator",
        "kubevirt",
        "policy",
        "tenants",
    ] {
        assert!(
            text.contains(&format!("{stack}: ready in")),
            "{stack} not ready:\n{text}"
        );
    }
    assert_eq!(ready_nodes(&lab, "lab-1"), ["lab-2", "lab-3"]);

    // The GPU worker carries the GPU and residency labels from its join; the other only residency.
    let gpu = node_labels(&lab, "lab-3");
    assert_eq!(gpu["nvidia.com/gpu.present"], "true");
    assert_eq!(gpu["topology.kubernetes.io/zone"], "fra-1");
    let plain = node_labels(&lab, "lab-2");
    assert!(plain.get("nvidia.com/gpu.present").is_none(), "{plain}");
    assert_eq!(plain["airlock.io/jurisdiction"], "DE");

    // Workers hold one image archive per stack with images; the controller holds none.
    let archives = lab.ssh_root("lab-2", "ls /var/lib/k0s/images");
    let archives = common::stdout(&archives);
    for stack in ["observability", "gpu-operator", "kubevirt"] {
        assert!(
            archives.contains(&format!("airlock-{stack}-")),
            "{archives}"
        );
    }
    let controller = lab.ssh_root("lab-1", "ls /var/lib/k0s/images 2>/dev/null || true");
    assert_eq!(common::stdout(&controller).trim(), "");

    // Tenants get their namespaces and quotas; the GPU quota is on the GPU tenant only.
    let quota = kubectl(
        &lab,
        "lab-1",
        "get resourcequota tenant-quota -n research -o json",
    );
    assert!(quota.contains("requests.nvidia.com/gpu"), "{quota}");
    let policies = kubectl(&lab, "lab-1", "get validatingadmissionpolicies -o name");
    assert!(
        policies.contains("airlock-allowed-registries"),
        "{policies}"
    );
}

#[test]
fn wrong_containerd_drop_in_is_named() {
    let Some(lab) = Lab::start("wrong_containerd_drop_in_is_named", 2) else {
        return;
    };
    assert!(lab.run(&["gpu", "lab-2"]).status.success());
    // A drop-in written for containerd 1, which k0s 1.36 and later refuse.
    let written = lab.ssh_root(
        "lab-2",
        "mkdir -p /etc/k0s/containerd.d && printf 'version = 2\\n' > /etc/k0s/containerd.d/nvidia.toml",
    );
    assert!(written.status.success(), "{}", describe(&written));
    let bundle = SignedBundle::build("bundles/lab.yaml");
    let cluster = cluster_file(&lab, &bundle, "");
    let output = apply_command(&lab, &cluster, &bundle.bundle)
        .args(["--stack-timeout", "60s"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let text = stderr(&output);
    let host = &lab.host("lab-2").address;
    assert!(
        text.contains(&format!(
            "{host}: /etc/k0s/containerd.d/nvidia.toml: it declares containerd config version 2"
        )),
        "{text}"
    );
    assert!(text.contains("help: rewrite the drop-in"), "{text}");
}

#[test]
fn bundle_without_a_stack_image_is_refused_before_any_host() {
    let Some(lab) = Lab::start("bundle_without_a_stack_image_is_refused_before_any_host", 2) else {
        return;
    };
    // The lab specification without Loki's image, its relative paths made absolute.
    let spec = fs::read_to_string(common::repo_dir().join("bundles/lab.yaml")).unwrap();
    let repo = format!("{}/", common::repo_dir().display());
    let trimmed: String = spec
        .lines()
        .filter(|line| !line.contains("grafana/loki:"))
        .map(|line| format!("{}\n", line.replace("../", &repo)))
        .collect();
    assert_ne!(spec.len(), trimmed.len());
    let spec_path = lab.dir.join("lab-without-loki.yaml");
    fs::write(&spec_path, trimmed).unwrap();
    let bundle = SignedBundle::build(spec_path.to_str().unwrap());

    let cluster = cluster_file(&lab, &bundle, "");
    let output = apply_command(&lab, &cluster, &bundle.bundle)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let text = stderr(&output);
    assert!(
        text.contains("phase \"Render the stacks\" failed"),
        "{text}"
    );
    assert!(text.contains("the bundle carries no image docker.io/grafana/loki:3.7.6, which the observability stack needs"), "{text}");
    for host in ["lab-1", "lab-2"] {
        let untouched = lab.ssh_root(host, "test ! -e /usr/local/bin/k0s");
        assert!(untouched.status.success(), "{host} was changed:\n{text}");
    }
}

#[test]
fn changed_tenants_change_only_their_files() {
    let Some(lab) = Lab::start("changed_tenants_change_only_their_files", 2) else {
        return;
    };
    let bundle = SignedBundle::build("bundles/lab.yaml");
    let one = "    tenants:\n      - name: research\n        classification: confidential\n        quota: { cpu: \"8\", memory: 32Gi }\n";
    let cluster = cluster_file(&lab, &bundle, one);
    let first = apply_command(&lab, &cluster, &bundle.bundle)
        .output()
        .unwrap();
    assert!(first.status.success(), "{}", describe(&first));

    // A second tenant: only its file travels.
    let two = format!("{one}      - name: clinic\n        classification: restricted\n");
    let cluster = cluster_file(&lab, &bundle, &two);
    let second = apply_command(&lab, &cluster, &bundle.bundle)
        .output()
        .unwrap();
    assert!(second.status.success(), "{}", describe(&second));
    let second_text = stderr(&second);
    let uploads: Vec<&str> = second_text
        .lines()
        .filter(|line| line.contains(": uploading "))
        .collect();
    assert_eq!(uploads.len(), 1, "{uploads:?}");
    assert!(
        uploads[0].ends_with("uploading /var/lib/k0s/manifests/tenants/tenant-clinic.yaml"),
        "{uploads:?}"
    );
    assert!(kubectl(&lab, "lab-1", "get namespace clinic -o name").contains("clinic"));

    // A changed quota: only that tenant's file.
    let changed = two.replace("cpu: \"8\"", "cpu: \"16\"");
    let cluster = cluster_file(&lab, &bundle, &changed);
    let third = apply_command(&lab, &cluster, &bundle.bundle)
        .output()
        .unwrap();
    assert!(third.status.success(), "{}", describe(&third));
    let third_text = stderr(&third);
    let uploads: Vec<&str> = third_text
        .lines()
        .filter(|line| line.contains(": uploading "))
        .collect();
    assert_eq!(uploads.len(), 1, "{uploads:?}");
    assert!(
        uploads[0].ends_with("uploading /var/lib/k0s/manifests/tenants/tenant-research.yaml"),
        "{uploads:?}"
    );

    // A removed tenant: its file goes, so k0s prunes its namespace.
    let cluster = cluster_file(
        &lab,
        &bundle,
        &changed.replace(
            "      - name: clinic\n        classification: restricted\n",
            "",
        ),
    );
    let fourth = apply_command(&lab, &cluster, &bundle.bundle)
        .output()
        .unwrap();
    assert!(fourth.status.success(), "{}", describe(&fourth));
    assert!(
        stderr(&fourth).contains("removed /var/lib/k0s/manifests/tenants/tenant-clinic.yaml"),
        "{}",
        stderr(&fourth)
    );
    let files = lab.ssh_root("lab-1", "ls /var/lib/k0s/manifests/tenants");
    assert_eq!(common::stdout(&files).trim(), "tenant-research.yaml");
}
