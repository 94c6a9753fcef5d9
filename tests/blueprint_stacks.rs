//! The blueprint of rendered stacks, without a lab: stack records, policies with their
//! descriptions, the YAML round trip, the SBOM (checked by pyspdxtools), the report, and the
//! policy control against live objects.

// The scenario inputs of the stack tests; this file uses only some of its helpers.
#[path = "stacks/scenario.rs"]
#[allow(dead_code)]
mod scenario;

use std::collections::BTreeMap;
use std::process::Command;

use airlock::blueprint::audit::Head;
use airlock::blueprint::compliance::{self, AuditEvidence, Evidence, Outcome};
use airlock::blueprint::live::{LiveCluster, LiveObject};
use airlock::blueprint::record::{StackRecord, policies_from_rendered};
use airlock::blueprint::{Blueprint, report, sbom};
use airlock::digest::Digest;
use airlock::stacks::{Rendered, render};

const SKELETON: &str = "
formatVersion: 1
writtenAt: 2026-12-04T20:00:00Z
writtenBy: { airlock: 0.1.0, operator: ops@office, command: apply }
cluster: { name: sovereign, id: 6a1f0c3e-0000-4000-8000-000000000001 }
bundle:
  name: site
  version: 7
  digest: sha256:1111111111111111111111111111111111111111111111111111111111111111
  signature: trusted
  signingKeyId: B07D73ACA58C864F
k0s: { version: v1.36.3+k0s.0, configPath: /etc/k0s/k0s.yaml }
nodes:
  - { name: ctrl-1, role: controller, address: 127.0.1.11, port: 22, hostname: ctrl-1, os: Ubuntu 24.04,
      kernel: 6.8.0, architecture: amd64, cpus: 8, memoryBytes: 34359738368, k0sVersion: v1.36.3+k0s.0, files: {} }
  - { name: gpu-1, role: worker, address: 127.0.1.12, port: 22, hostname: gpu-1, os: Ubuntu 24.04,
      kernel: 6.8.0, architecture: amd64, cpus: 64, memoryBytes: 549755813888, k0sVersion: v1.36.3+k0s.0, files: {} }
auditLog: { entries: 12, head: sha256:2222222222222222222222222222222222222222222222222222222222222222 }
";

fn rendered() -> Rendered {
    let mut input = scenario::input(vec![scenario::gpu_host("gpu-1")]);
    input.tenants.push(scenario::tenant("research", 2));
    render(&input).unwrap()
}

fn blueprint_of(rendered: &Rendered) -> Blueprint {
    let mut blueprint = Blueprint::parse(SKELETON).unwrap();
    blueprint.stacks = rendered
        .stacks
        .iter()
        .map(|stack| {
            StackRecord::from_rendered(
                stack,
                Some("1.0.0".into()),
                Some((true, String::new())),
                |chart| Some(Digest::of_bytes(chart.archive.as_bytes())),
            )
        })
        .collect();
    blueprint.policies = policies_from_rendered(rendered);
    blueprint
}

#[test]
fn stack_records_follow_the_render() {
    let rendered = rendered();
    let blueprint = blueprint_of(&rendered);
    assert_eq!(blueprint.stacks.len(), rendered.stacks.len());
    for (record, stack) in blueprint.stacks.iter().zip(&rendered.stacks) {
        assert_eq!(record.name, stack.stack.name());
        let digests: Vec<Digest> = stack.files.iter().map(|file| file.digest).collect();
        let recorded: Vec<Digest> = record.manifests.iter().map(|m| m.digest).collect();
        assert_eq!(recorded, digests, "{}", record.name);
        assert_eq!(record.images.len(), stack.images.len(), "{}", record.name);
        assert_eq!(record.readiness, stack.readiness, "{}", record.name);
    }
    let gpu = blueprint
        .stacks
        .iter()
        .find(|s| s.name == "gpu-operator")
        .unwrap();
    assert_eq!(gpu.charts[0].name, "gpu-operator");
    assert!(gpu.charts[0].digest.is_some());
}

#[test]
fn policies_carry_their_descriptions() {
    let blueprint = blueprint_of(&rendered());
    let names: Vec<&str> = blueprint.policies.iter().map(|p| p.name.as_str()).collect();
    for expected in [
        "airlock-allowed-registries",
        "airlock-namespace-labels",
        "airlock-pod-security",
        "airlock-external-exposure",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    for policy in &blueprint.policies {
        assert!(
            policy.description.len() > 30,
            "{}: {:?}",
            policy.name,
            policy.description
        );
        assert!(!policy.description.contains('\n'), "{}", policy.name);
        assert!(!policy.description.contains("  "), "{}", policy.name);
        assert_eq!(policy.source, "stack policy");
    }
}

#[test]
fn blueprint_yaml_round_trips() {
    let blueprint = blueprint_of(&rendered());
    let text = blueprint.to_yaml().unwrap();
    assert!(text.starts_with("# The as-built record of cluster sovereign"));
    assert_eq!(Blueprint::parse(&text).unwrap(), blueprint);
    let newer = text.replace("formatVersion: 1", "formatVersion: 2");
    let error = Blueprint::parse(&newer).unwrap_err().to_string();
    assert!(error.contains("formatVersion 2"), "{error}");
}

#[test]
fn sbom_of_stacks_passes_pyspdxtools() {
    let blueprint = blueprint_of(&rendered());
    let document = sbom::sbom(&blueprint);
    let packages = document["packages"].as_array().unwrap();
    for image in blueprint.stacks.iter().flat_map(|s| &s.images) {
        assert!(
            packages
                .iter()
                .any(|p| p["checksums"][0]["checksumValue"] == image.digest.hex()),
            "{} missing",
            image.reference
        );
    }
    let tool =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/spdx-venv/bin/pyspdxtools");
    assert!(
        tool.exists(),
        "{} is missing: run scripts/setup",
        tool.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sbom.spdx.json");
    std::fs::write(&path, serde_json::to_string_pretty(&document).unwrap()).unwrap();
    let output = Command::new(tool)
        .arg("--infile")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        output.status.success() && output.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn report_lists_stacks_and_escapes_descriptions() {
    let mut blueprint = blueprint_of(&rendered());
    blueprint.policies[0].description = "Pods <script>alert(1)</script> & more".into();
    let html = report::render(&blueprint).unwrap();
    assert!(
        html.contains("Pods &lt;script&gt;alert(1)&lt;&#x2f;script&gt; &amp; more"),
        "not escaped"
    );
    assert!(!html.contains("<script>"));
    for stack in &blueprint.stacks {
        assert!(
            html.contains(&format!("Stack {}", stack.name)),
            "{}",
            stack.name
        );
    }
}

fn live_with_policies(blueprint: &Blueprint, skip: &str) -> LiveCluster {
    let object = |kind: &str, name: &str, policy: Option<&str>| LiveObject {
        kind: kind.into(),
        namespace: None,
        name: name.into(),
        labels: BTreeMap::new(),
        policy_name: policy.map(str::to_string),
    };
    let mut live = LiveCluster::default();
    for policy in blueprint.policies.iter().filter(|p| p.name != skip) {
        live.objects.push(object(&policy.kind, &policy.name, None));
        live.objects.push(object(
            "ValidatingAdmissionPolicyBinding",
            &format!("{}-binding", policy.name),
            Some(&policy.name),
        ));
    }
    live
}

#[test]
fn policy_control_follows_the_live_objects() {
    let blueprint = blueprint_of(&rendered());
    let audit = AuditEvidence {
        chain: Ok(()),
        head: Head {
            lines: 12,
            digest: blueprint.audit_log.head,
        },
        genesis: None,
        controllers: vec![],
    };
    let hosts = BTreeMap::new();
    let evaluate = |live: &LiveCluster| {
        compliance::evaluate(
            &blueprint,
            &Evidence {
                live: Ok(live),
                hosts: &hosts,
                audit: &audit,
            },
        )
        .into_iter()
        .find(|control| control.id == "T3")
        .unwrap()
    };
    let complete = evaluate(&live_with_policies(&blueprint, ""));
    assert_eq!(complete.result, Outcome::Pass, "{}", complete.evidence);
    assert_eq!(complete.checked, Some(blueprint.policies.len() as u64));

    let missing = evaluate(&live_with_policies(&blueprint, "airlock-pod-security"));
    assert_eq!(missing.result, Outcome::Fail);
    assert!(
        missing
            .evidence
            .contains("ValidatingAdmissionPolicy airlock-pod-security is missing"),
        "{}",
        missing.evidence
    );
}
