//! The compliance matrix: each control of the five sovereignty pillars, passed or failed from
//! facts airlock checked during the run, never asserted.
//!
//! [`evaluate`] reads the blueprint (what was installed), the live snapshot of the API objects,
//! the files re-hashed on every host and the state of the audit log. A control with nothing to
//! check (no tenants declared, no stack installed) fails with that as its evidence, because the
//! pillar is then not shown to hold.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::audit::Head;
use super::live::{HostObservation, LiveCluster};
use super::record::Blueprint;
use crate::digest::Digest;

/// The five sovereignty pillars, in report order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pillar {
    DataGovernanceAndResidency,
    HardMultiTenancy,
    SecureInfrastructureAndSupplyChain,
    ModelAndArtifactTransparency,
    ContinuousComplianceAndObservability,
}

impl Pillar {
    pub const ALL: [Pillar; 5] = [
        Pillar::DataGovernanceAndResidency,
        Pillar::HardMultiTenancy,
        Pillar::SecureInfrastructureAndSupplyChain,
        Pillar::ModelAndArtifactTransparency,
        Pillar::ContinuousComplianceAndObservability,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Pillar::DataGovernanceAndResidency => "Data governance and residency",
            Pillar::HardMultiTenancy => "Hard multi-tenancy",
            Pillar::SecureInfrastructureAndSupplyChain => "Secure infrastructure and supply chain",
            Pillar::ModelAndArtifactTransparency => "Model and artifact transparency",
            Pillar::ContinuousComplianceAndObservability => {
                "Continuous compliance and observability"
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    Fail,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
        })
    }
}

/// One row of the matrix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Control {
    /// A stable id, such as `S3`.
    pub id: String,
    pub pillar: Pillar,
    /// The statement the control checks.
    pub control: String,
    pub result: Outcome,
    /// The facts airlock checked and found.
    pub evidence: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked: Option<u64>,
}

/// The state of the audit log and its copies when the blueprint was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvidence {
    /// The outcome of verifying the local log's chain.
    pub chain: Result<(), String>,
    pub head: Head,
    /// The bundle digest the first line chains to.
    pub genesis: Option<Digest>,
    /// Per controller (its label), the head of its copy as read back, or why it could not be.
    pub controllers: Vec<(String, Result<Head, String>)>,
}

/// The facts the controls are computed from, besides the blueprint.
pub struct Evidence<'a> {
    /// The snapshot of the API objects, or why it could not be taken.
    pub live: Result<&'a LiveCluster, String>,
    /// Per node name, the host's k0s state and file digests, or why they could not be read.
    pub hosts: &'a BTreeMap<String, Result<HostObservation, String>>,
    pub audit: &'a AuditEvidence,
}

/// Computes every control, in pillar order.
pub fn evaluate(blueprint: &Blueprint, evidence: &Evidence<'_>) -> Vec<Control> {
    let mut controls = vec![
        residency_declared(blueprint),
        residency_labels(blueprint, evidence),
        tenant_classification(blueprint, evidence),
        tenant_object(
            blueprint,
            evidence,
            "T1",
            "NetworkPolicy",
            "default-deny",
            "Every tenant namespace denies traffic by default (NetworkPolicy default-deny)",
        ),
        tenant_object(
            blueprint,
            evidence,
            "T2",
            "ResourceQuota",
            "tenant-quota",
            "Every tenant namespace is bounded by its resource quota (ResourceQuota tenant-quota)",
        ),
        policies_in_force(blueprint, evidence),
        bundle_signed(blueprint),
        files_match(blueprint, evidence),
        images_from_bundle(blueprint, evidence),
        k0s_versions(blueprint, evidence),
        files_traced(blueprint),
        charts_pinned(blueprint, evidence),
        stack_images_in_bundle(blueprint),
        audit_chain(evidence.audit),
        audit_on_controllers(evidence.audit),
        stacks_ready(blueprint),
        observability_ready(blueprint),
        nodes_ready(blueprint, evidence),
    ];
    controls.sort_by_key(|control| control.pillar);
    controls
}

fn control(id: &str, pillar: Pillar, statement: &str) -> Control {
    Control {
        id: id.to_string(),
        pillar,
        control: statement.to_string(),
        result: Outcome::Fail,
        evidence: String::new(),
        passed: None,
        checked: None,
    }
}

impl Control {
    fn fail(mut self, evidence: impl Into<String>) -> Control {
        self.result = Outcome::Fail;
        self.evidence = evidence.into();
        self
    }

    fn pass(mut self, evidence: impl Into<String>) -> Control {
        self.result = Outcome::Pass;
        self.evidence = evidence.into();
        self
    }

    /// Passes when every checked item passed and there was at least one; `problems` (up to
    /// five) go into the evidence.
    fn counted(mut self, passed: u64, checked: u64, what: &str, problems: &[String]) -> Control {
        self.passed = Some(passed);
        self.checked = Some(checked);
        let mut evidence = format!("{passed} of {checked} {what}");
        if !problems.is_empty() {
            let shown: Vec<&str> = problems.iter().take(5).map(String::as_str).collect();
            evidence.push_str(&format!("; {}", shown.join("; ")));
            if problems.len() > 5 {
                evidence.push_str(&format!("; and {} more", problems.len() - 5));
            }
        }
        self.result = match passed == checked && checked > 0 {
            true => Outcome::Pass,
            false => Outcome::Fail,
        };
        self.evidence = evidence;
        self
    }
}

fn residency_declared(blueprint: &Blueprint) -> Control {
    let row = control(
        "D1",
        Pillar::DataGovernanceAndResidency,
        "The cluster declares the jurisdiction its data stays in",
    );
    let Some(residency) = &blueprint.residency else {
        return row.fail("spec.airlock.residency is not set");
    };
    let fields: Vec<String> = [
        ("jurisdiction", &residency.jurisdiction),
        ("region", &residency.region),
        ("zone", &residency.zone),
        ("site", &residency.site),
    ]
    .iter()
    .filter_map(|(name, value)| value.as_ref().map(|value| format!("{name} {value}")))
    .collect();
    match residency.jurisdiction {
        Some(_) => row.pass(format!("declared: {}", fields.join(", "))),
        None => row.fail(format!(
            "no jurisdiction declared (declared: {})",
            if fields.is_empty() {
                "nothing".to_string()
            } else {
                fields.join(", ")
            }
        )),
    }
}

fn residency_labels(blueprint: &Blueprint, evidence: &Evidence<'_>) -> Control {
    let row = control(
        "D2",
        Pillar::DataGovernanceAndResidency,
        "Every workload node carries the residency labels that keep workloads in place",
    );
    let labels = match &blueprint.residency {
        Some(residency) if !residency.node_labels.is_empty() => &residency.node_labels,
        _ => return row.fail("no residency declared, so no node label enforces one"),
    };
    let live = match &evidence.live {
        Ok(live) => live,
        Err(reason) => return row.fail(format!("the node labels could not be read: {reason}")),
    };
    let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut problems = Vec::new();
    let mut passed = 0;
    let workload_nodes: Vec<&str> = blueprint
        .nodes
        .iter()
        .filter(|node| node.runs_workloads())
        .map(|node| node.name.as_str())
        .collect();
    for name in &workload_nodes {
        match live.nodes.iter().find(|node| node.name == *name) {
            None => problems.push(format!("{name} is not registered")),
            Some(node) => {
                let missing: Vec<&str> = labels
                    .iter()
                    .filter(|(key, value)| node.labels.get(*key) != Some(value))
                    .map(|(key, _)| key.as_str())
                    .collect();
                if missing.is_empty() {
                    passed += 1;
                } else {
                    problems.push(format!("{name} lacks {}", missing.join(", ")));
                }
            }
        }
    }
    let what = format!("workload nodes labelled {}", wanted.join(", "));
    row.counted(passed, workload_nodes.len() as u64, &what, &problems)
}

fn tenant_classification(blueprint: &Blueprint, evidence: &Evidence<'_>) -> Control {
    let row = control(
        "D3",
        Pillar::DataGovernanceAndResidency,
        "Every tenant namespace carries its data classification",
    );
    if blueprint.tenants.is_empty() {
        return row.fail("no tenants are declared in spec.airlock.tenants");
    }
    let live = match &evidence.live {
        Ok(live) => live,
        Err(reason) => return row.fail(format!("the namespaces could not be read: {reason}")),
    };
    let mut problems = Vec::new();
    let mut passed = 0;
    for tenant in &blueprint.tenants {
        match live.namespace(&tenant.name) {
            None => problems.push(format!("namespace {} does not exist", tenant.name)),
            Some(namespace) => match namespace.labels.get("airlock.io/classification") {
                Some(found) if *found == tenant.classification => passed += 1,
                found => problems.push(format!(
                    "namespace {} is labelled {}, not {}",
                    tenant.name,
                    found.map_or("with no classification", String::as_str),
                    tenant.classification
                )),
            },
        }
    }
    row.counted(
        passed,
        blueprint.tenants.len() as u64,
        "tenant namespaces labelled with their classification",
        &problems,
    )
}

fn tenant_object(
    blueprint: &Blueprint,
    evidence: &Evidence<'_>,
    id: &str,
    kind: &str,
    name: &str,
    statement: &str,
) -> Control {
    let row = control(id, Pillar::HardMultiTenancy, statement);
    if blueprint.tenants.is_empty() {
        return row.fail("no tenants are declared in spec.airlock.tenants");
    }
    let live = match &evidence.live {
        Ok(live) => live,
        Err(reason) => return row.fail(format!("the {kind} objects could not be read: {reason}")),
    };
    let missing: Vec<String> = blueprint
        .tenants
        .iter()
        .filter(|tenant| !live.has(kind, Some(&tenant.name), name))
        .map(|tenant| format!("{kind} {name} is missing in namespace {}", tenant.name))
        .collect();
    let total = blueprint.tenants.len() as u64;
    let what = format!("tenant namespaces have {kind} {name}");
    row.counted(total - missing.len() as u64, total, &what, &missing)
}

fn policies_in_force(blueprint: &Blueprint, evidence: &Evidence<'_>) -> Control {
    let row = control(
        "T3",
        Pillar::HardMultiTenancy,
        "Every admission policy of the blueprint exists and is bound",
    );
    if blueprint.policies.is_empty() {
        return row.fail("no admission policy is recorded: the policy stack is not installed");
    }
    let live = match &evidence.live {
        Ok(live) => live,
        Err(reason) => return row.fail(format!("the policies could not be read: {reason}")),
    };
    let mut problems = Vec::new();
    for policy in &blueprint.policies {
        if !live.has(&policy.kind, None, &policy.name) {
            problems.push(format!("{} {} is missing", policy.kind, policy.name));
        } else if policy.kind == "ValidatingAdmissionPolicy"
            && !live
                .objects_of("ValidatingAdmissionPolicyBinding")
                .any(|binding| binding.policy_name.as_deref() == Some(policy.name.as_str()))
        {
            problems.push(format!("{} {} is not bound", policy.kind, policy.name));
        }
    }
    let total = blueprint.policies.len() as u64;
    row.counted(
        total - problems.len() as u64,
        total,
        "policies in force",
        &problems,
    )
}

fn bundle_signed(blueprint: &Blueprint) -> Control {
    let row = control(
        "S1",
        Pillar::SecureInfrastructureAndSupplyChain,
        "The bundle is signed by a key the cluster file trusts, and every byte of it verified",
    );
    let bundle = &blueprint.bundle;
    let what = format!(
        "bundle {} version {} ({})",
        bundle.name, bundle.version, bundle.digest
    );
    match (bundle.signature.as_str(), &bundle.signing_key_id) {
        ("trusted", Some(key)) => row.pass(format!("{what} signed by trusted key {key}")),
        ("unchecked", Some(key)) => row.fail(format!(
            "{what} is signed by key {key}, but no trusted key was given to check it"
        )),
        _ => row.fail(format!(
            "{what} is not signed; it was accepted because unsigned bundles were allowed"
        )),
    }
}

fn files_match(blueprint: &Blueprint, evidence: &Evidence<'_>) -> Control {
    let row = control(
        "S2",
        Pillar::SecureInfrastructureAndSupplyChain,
        "Every file airlock placed on a host still has the digest it was placed with",
    );
    let mut problems = Vec::new();
    let (mut passed, mut checked) = (0, 0);
    for node in &blueprint.nodes {
        match evidence.hosts.get(&node.name) {
            Some(Ok(observation)) => {
                for (path, expected) in &node.files {
                    checked += 1;
                    match observation.files.get(path) {
                        Some(Some(found)) if found.digest == *expected => passed += 1,
                        Some(Some(found)) => problems.push(format!(
                            "{}: {path} is {}, expected {}",
                            node.name,
                            found.digest.short(),
                            expected.short()
                        )),
                        _ => problems.push(format!("{}: {path} is missing", node.name)),
                    }
                }
            }
            Some(Err(reason)) => {
                checked += node.files.len() as u64;
                problems.push(format!("{}: {reason}", node.name));
            }
            None => {
                checked += node.files.len() as u64;
                problems.push(format!("{}: not checked", node.name));
            }
        }
    }
    row.counted(
        passed,
        checked,
        "files re-hashed on the hosts match",
        &problems,
    )
}

/// An image reference split the way containerd names images: `nginx` is
/// `docker.io/library/nginx:latest`.
#[derive(Debug, PartialEq, Eq)]
struct ImageName {
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

fn normalize(reference: &str) -> ImageName {
    let (name, digest) = match reference.split_once('@') {
        Some((name, digest)) => (name, Some(digest.to_string())),
        None => (reference, None),
    };
    let (mut repository, mut tag) = (name.to_string(), None);
    if let Some(colon) = name.rfind(':')
        && colon > name.rfind('/').unwrap_or(0)
    {
        repository = name[..colon].to_string();
        tag = Some(name[colon + 1..].to_string());
    }
    let first = repository.split('/').next().unwrap_or_default();
    let has_registry = repository.contains('/')
        && (first.contains('.') || first.contains(':') || first == "localhost");
    if !has_registry {
        repository = match repository.contains('/') {
            true => format!("docker.io/{repository}"),
            false => format!("docker.io/library/{repository}"),
        };
    }
    if tag.is_none() && digest.is_none() {
        tag = Some("latest".to_string());
    }
    ImageName {
        repository,
        tag,
        digest,
    }
}

/// Returns whether `reference` names one of the bundle's images: the same repository, and the
/// same digest when the reference pins one, else the same tag.
fn from_bundle(reference: &str, bundle: &[ImageName]) -> bool {
    let wanted = normalize(reference);
    bundle.iter().any(|image| {
        image.repository == wanted.repository
            && match &wanted.digest {
                Some(digest) => image.digest.as_ref() == Some(digest),
                None => image.tag == wanted.tag,
            }
    })
}

fn images_from_bundle(blueprint: &Blueprint, evidence: &Evidence<'_>) -> Control {
    let row = control(
        "S3",
        Pillar::SecureInfrastructureAndSupplyChain,
        "Every image in the cluster comes from the bundle",
    );
    let live = match &evidence.live {
        Ok(live) => live,
        Err(reason) => return row.fail(format!("the pods could not be listed: {reason}")),
    };
    let bundle: Vec<ImageName> = blueprint
        .bundle_images()
        .into_iter()
        .map(|image| {
            let mut name = normalize(&image.reference);
            name.digest = Some(image.digest.to_string());
            name
        })
        .collect();
    let images: BTreeSet<&str> = live
        .pods
        .iter()
        .flat_map(|pod| pod.images.iter().map(String::as_str))
        .collect();
    if images.is_empty() {
        return row.fail("no pod runs in the cluster, so no image was checked");
    }
    let foreign: Vec<String> = images
        .iter()
        .filter(|image| !from_bundle(image, &bundle))
        .map(|image| format!("{image} is not in the bundle"))
        .collect();
    let total = images.len() as u64;
    row.counted(
        total - foreign.len() as u64,
        total,
        &format!("images of {} pods are bundle images", live.pods.len()),
        &foreign,
    )
}

fn k0s_versions(blueprint: &Blueprint, evidence: &Evidence<'_>) -> Control {
    let row = control(
        "S4",
        Pillar::SecureInfrastructureAndSupplyChain,
        "Every host runs the k0s version of the bundle",
    );
    let mut problems = Vec::new();
    let mut passed = 0;
    for node in &blueprint.nodes {
        match evidence.hosts.get(&node.name) {
            Some(Ok(observation)) => match (&observation.k0s_version, observation.k0s_running) {
                (Some(version), true) if *version == blueprint.k0s.version => passed += 1,
                (Some(version), true) => problems.push(format!("{} runs k0s {version}", node.name)),
                (_, false) => problems.push(format!("{}: k0s is not running", node.name)),
                (None, true) => problems.push(format!("{}: k0s version unknown", node.name)),
            },
            Some(Err(reason)) => problems.push(format!("{}: {reason}", node.name)),
            None => problems.push(format!("{}: not checked", node.name)),
        }
    }
    let what = format!("hosts run k0s {}", blueprint.k0s.version);
    row.counted(passed, blueprint.nodes.len() as u64, &what, &problems)
}

fn files_traced(blueprint: &Blueprint) -> Control {
    let row = control(
        "M1",
        Pillar::ModelAndArtifactTransparency,
        "Every file airlock placed is a bundle artifact or a file airlock rendered and recorded",
    );
    let mut known: BTreeSet<Digest> = blueprint
        .bundle
        .artifacts
        .iter()
        .map(|artifact| artifact.digest)
        .collect();
    known.extend(blueprint.k0s.config_digests.values().copied());
    known.extend(
        blueprint
            .nodes
            .iter()
            .flat_map(|node| node.host_files.iter().map(|file| file.digest)),
    );
    known.extend(
        blueprint
            .stacks
            .iter()
            .flat_map(|stack| stack.manifests.iter().map(|manifest| manifest.digest)),
    );
    let mut problems = Vec::new();
    let mut checked = 0;
    for node in &blueprint.nodes {
        for (path, digest) in &node.files {
            checked += 1;
            if !known.contains(digest) {
                problems.push(format!(
                    "{}: {path} ({}) has no recorded origin",
                    node.name,
                    digest.short()
                ));
            }
        }
    }
    row.counted(
        checked - problems.len() as u64,
        checked,
        "files traced to their origin",
        &problems,
    )
}

fn charts_pinned(blueprint: &Blueprint, evidence: &Evidence<'_>) -> Control {
    let row = control(
        "M2",
        Pillar::ModelAndArtifactTransparency,
        "Every Helm chart is pinned by digest and the controllers hold exactly that archive",
    );
    let charts: Vec<_> = blueprint
        .stacks
        .iter()
        .flat_map(|stack| &stack.charts)
        .collect();
    if charts.is_empty() {
        return row.fail("no stack with a Helm chart is installed");
    }
    let mut problems = Vec::new();
    let (mut passed, mut checked) = (0, 0);
    for chart in charts {
        for node in blueprint.controllers() {
            checked += 1;
            let Some(expected) = chart.digest else {
                problems.push(format!(
                    "{} {} has no recorded digest",
                    chart.name, chart.version
                ));
                continue;
            };
            let found = match evidence.hosts.get(&node.name) {
                Some(Ok(observation)) => observation
                    .files
                    .get(&chart.path)
                    .and_then(|found| found.as_ref().map(|found| found.digest)),
                _ => None,
            };
            match found {
                Some(found) if found == expected => passed += 1,
                Some(found) => problems.push(format!(
                    "{}: {} is {}, expected {}",
                    node.name,
                    chart.path,
                    found.short(),
                    expected.short()
                )),
                None => problems.push(format!("{}: {} was not found", node.name, chart.path)),
            }
        }
    }
    row.counted(
        passed,
        checked,
        "chart archives on controllers match",
        &problems,
    )
}

fn stack_images_in_bundle(blueprint: &Blueprint) -> Control {
    let row = control(
        "M3",
        Pillar::ModelAndArtifactTransparency,
        "Every image a stack uses is pinned by digest in the signed bundle",
    );
    let images: Vec<_> = blueprint
        .stacks
        .iter()
        .flat_map(|stack| &stack.images)
        .collect();
    if images.is_empty() {
        return row.fail("no stack is installed");
    }
    let pinned: BTreeSet<(&str, Digest)> = blueprint
        .bundle
        .artifacts
        .iter()
        .filter_map(|artifact| Some((artifact.reference.as_deref()?, artifact.digest)))
        .chain(
            blueprint
                .bundle
                .artifacts
                .iter()
                .flat_map(|artifact| &artifact.images)
                .map(|image| (image.reference.as_str(), image.digest)),
        )
        .collect();
    let problems: Vec<String> = images
        .iter()
        .filter(|image| !pinned.contains(&(image.reference.as_str(), image.digest)))
        .map(|image| {
            format!(
                "{}@{} is not a bundle artifact",
                image.reference,
                image.digest.short()
            )
        })
        .collect();
    let total = images.len() as u64;
    row.counted(
        total - problems.len() as u64,
        total,
        "stack images pinned",
        &problems,
    )
}

fn audit_chain(audit: &AuditEvidence) -> Control {
    let row = control(
        "C1",
        Pillar::ContinuousComplianceAndObservability,
        "The hash-chained audit log verifies from its first entry to its head",
    );
    match &audit.chain {
        Ok(()) => row.pass(format!(
            "{} entries verified, head {}{}",
            audit.head.lines,
            audit.head.digest,
            audit
                .genesis
                .map(|genesis| format!(", chained from bundle {genesis}"))
                .unwrap_or_default()
        )),
        Err(reason) => row.fail(reason.clone()),
    }
}

fn audit_on_controllers(audit: &AuditEvidence) -> Control {
    let row = control(
        "C2",
        Pillar::ContinuousComplianceAndObservability,
        "Every controller holds the audit log up to the same head",
    );
    let mut problems = Vec::new();
    let mut passed = 0;
    for (host, head) in &audit.controllers {
        match head {
            Ok(head) if *head == audit.head => passed += 1,
            Ok(head) => problems.push(format!(
                "{host} holds {} entries ending in {}",
                head.lines,
                head.digest.short()
            )),
            Err(reason) => problems.push(format!("{host}: {reason}")),
        }
    }
    let what = format!(
        "controllers at entry {} ({})",
        audit.head.lines,
        audit.head.digest.short()
    );
    row.counted(passed, audit.controllers.len() as u64, &what, &problems)
}

fn stacks_ready(blueprint: &Blueprint) -> Control {
    let row = control(
        "C3",
        Pillar::ContinuousComplianceAndObservability,
        "Every installed stack passed its readiness checks",
    );
    if blueprint.stacks.is_empty() {
        return row.fail("no stack is installed");
    }
    let problems: Vec<String> = blueprint
        .stacks
        .iter()
        .filter(|stack| stack.ready != Some(true))
        .map(|stack| match (&stack.ready, &stack.ready_detail) {
            (None, _) => format!("{}: readiness not checked", stack.name),
            (_, Some(detail)) => format!("{}: {detail}", stack.name),
            _ => format!("{}: not ready", stack.name),
        })
        .collect();
    let total = blueprint.stacks.len() as u64;
    row.counted(
        total - problems.len() as u64,
        total,
        "stacks ready",
        &problems,
    )
}

fn observability_ready(blueprint: &Blueprint) -> Control {
    let row = control(
        "C4",
        Pillar::ContinuousComplianceAndObservability,
        "Metrics and logs are collected in the cluster (the observability stack is ready)",
    );
    match blueprint
        .stacks
        .iter()
        .find(|stack| stack.name == "observability")
    {
        None => row.fail("the observability stack is not installed"),
        Some(stack) if stack.ready == Some(true) => row.pass(format!(
            "observability {} ready",
            stack.version.as_deref().unwrap_or("")
        )),
        Some(stack) => row.fail(format!(
            "the observability stack is not ready: {}",
            stack
                .ready_detail
                .as_deref()
                .unwrap_or("readiness not checked")
        )),
    }
}

fn nodes_ready(blueprint: &Blueprint, evidence: &Evidence<'_>) -> Control {
    let row = control(
        "C5",
        Pillar::ContinuousComplianceAndObservability,
        "Every workload node of the blueprint is registered and Ready",
    );
    let live = match &evidence.live {
        Ok(live) => live,
        Err(reason) => return row.fail(format!("the nodes could not be read: {reason}")),
    };
    let mut problems = Vec::new();
    let (mut passed, mut checked) = (0, 0);
    for node in blueprint.nodes.iter().filter(|node| node.runs_workloads()) {
        checked += 1;
        match live.nodes.iter().find(|live| live.name == node.name) {
            Some(live) if live.ready => passed += 1,
            Some(_) => problems.push(format!("{} is NotReady", node.name)),
            None => problems.push(format!("{} is not registered", node.name)),
        }
    }
    let strangers: Vec<String> = live
        .nodes
        .iter()
        .filter(|live| !blueprint.nodes.iter().any(|node| node.name == live.name))
        .map(|live| format!("{} is registered but not in the blueprint", live.name))
        .collect();
    problems.extend(strangers.iter().cloned());
    let mut row = row.counted(passed, checked, "workload nodes Ready", &problems);
    if !strangers.is_empty() {
        row.result = Outcome::Fail;
    }
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_image_names_are_normalised() {
        assert_eq!(
            normalize("nginx"),
            ImageName {
                repository: "docker.io/library/nginx".into(),
                tag: Some("latest".into()),
                digest: None
            }
        );
        assert_eq!(
            normalize("grafana/loki:3.7.6").repository,
            "docker.io/grafana/loki"
        );
        let pinned = normalize("localhost:5000/app@sha256:abc");
        assert_eq!(pinned.repository, "localhost:5000/app");
        assert_eq!(pinned.tag, None);
        assert_eq!(pinned.digest.as_deref(), Some("sha256:abc"));
    }

    #[test]
    fn pod_image_matches_bundle_by_tag_or_digest() {
        let bundle = vec![ImageName {
            repository: "quay.io/k0sproject/coredns".into(),
            tag: Some("1.13.1".into()),
            digest: Some("sha256:aaa".into()),
        }];
        assert!(from_bundle("quay.io/k0sproject/coredns:1.13.1", &bundle));
        assert!(from_bundle(
            "quay.io/k0sproject/coredns@sha256:aaa",
            &bundle
        ));
        assert!(!from_bundle(
            "quay.io/k0sproject/coredns@sha256:bbb",
            &bundle
        ));
        assert!(!from_bundle("quay.io/k0sproject/coredns:1.13.2", &bundle));
        assert!(!from_bundle("docker.io/k0sproject/coredns:1.13.1", &bundle));
    }

    #[test]
    fn counted_control_needs_at_least_one_item() {
        let row = control("X1", Pillar::HardMultiTenancy, "x");
        assert_eq!(
            row.clone().counted(0, 0, "things", &[]).result,
            Outcome::Fail
        );
        assert_eq!(
            row.clone().counted(3, 3, "things", &[]).result,
            Outcome::Pass
        );
        let failed = row.counted(2, 3, "things", &["c is wrong".to_string()]);
        assert_eq!(failed.result, Outcome::Fail);
        assert_eq!(failed.evidence, "2 of 3 things; c is wrong");
    }
}
