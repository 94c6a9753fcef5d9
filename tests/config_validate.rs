//! `airlock config validate`: exit statuses, the one-line summary, and one fixture per problem,
//! each checked for the file, line, column and fix in the message.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config")
}

/// Runs airlock in the fixture directory, so that messages name files as `invalid/x.yaml`.
fn airlock(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_airlock"));
    command
        .args(args)
        .current_dir(fixtures())
        .env_clear()
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("airlock starts");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

fn validate(files: &[&str]) -> Output {
    let mut args = vec!["config", "validate"];
    for file in files {
        args.extend(["-c", file]);
    }
    airlock(&args, &[], None)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn valid_files_print_summary() {
    let args = [
        "config",
        "validate",
        "-c",
        "valid/multidoc/cluster.yaml",
        "-c",
        "valid/multidoc/k0s-and-pod.yaml",
    ];
    let output = airlock(
        &args,
        &[("K0S_VERSION", "v1.35.3+k0s.0"), ("OS_OVERRIDE", "ubuntu")],
        None,
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "valid/multidoc/cluster.yaml, valid/multidoc/k0s-and-pod.yaml: 2 hosts (1 controller, 1 worker), \
         k0s v1.35.3+k0s.0, 1 additional manifest\n"
    );
}

#[test]
fn summary_counts_every_role() {
    let output = validate(&["valid/hooks-evicttaint.yaml"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "valid/hooks-evicttaint.yaml: 2 hosts (1 controller+worker, 1 worker), k0s v1.35.3+k0s.0\n"
    );

    let output = validate(&["valid/single-host.yaml"]);
    assert_eq!(
        stdout(&output),
        "valid/single-host.yaml: 1 host (1 single), k0s version from the bundle\n"
    );
}

#[test]
fn stdin_is_read_for_dash() {
    let text = std::fs::read_to_string(fixtures().join("valid/single-host.yaml")).unwrap();
    let output = airlock(&["config", "validate", "-c", "-"], &[], Some(&text));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "<stdin>: 1 host (1 single), k0s version from the bundle\n"
    );
}

#[test]
fn unset_variable_is_warned_about() {
    let text = "apiVersion: k0sctl.k0sproject.io/v1beta1\nkind: cluster\nspec:\n  hosts:\n  \
                - role: single\n    os: \"${OS_OVERRIDE}\"\n    ssh: {address: 127.0.1.1}\n";
    let output = airlock(&["config", "validate", "-c", "-"], &[], Some(text));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("environment variable OS_OVERRIDE used in <stdin> is not set"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn missing_key_file_is_warned_about() {
    let text = "apiVersion: k0sctl.k0sproject.io/v1beta1\nkind: cluster\nspec:\n  hosts:\n  \
                - role: single\n    ssh: {address: 127.0.1.1, keyPath: /nonexistent/id_ed25519}\n";
    let output = airlock(&["config", "validate", "-c", "-"], &[], Some(text));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(
            "host 127.0.1.1: ssh.keyPath /nonexistent/id_ed25519 does not exist on this machine"
        ),
        "{}",
        stderr(&output)
    );
}

#[test]
fn substituted_position_maps_back_to_the_file() {
    let args = [
        "config",
        "validate",
        "-c",
        "invalid/unknown-field-after-substitution.yaml",
    ];
    let output = airlock(&args, &[("CONTROLLER_ADDRESS", "127.0.1.9")], None);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains(
            "unknown field \"prot\" at invalid/unknown-field-after-substitution.yaml:6:47, did you mean \"port\"?"
        ),
        "{}",
        stderr(&output)
    );
}

/// Each fixture is named after its problem; the line is what `config validate` must print.
const PROBLEMS: &[(&str, &str)] = &[
    (
        "unknown-field",
        "unknown field \"adress\" at invalid/unknown-field.yaml:7:9, did you mean \"address\"?",
    ),
    (
        "wrong-role",
        "unknown role \"master\" at invalid/wrong-role.yaml:5:13, expected one of: controller, worker, controller+worker, single",
    ),
    (
        "duplicate-address",
        "host address 127.0.1.1:22 is already used by host 1 (invalid/duplicate-address.yaml:7:18) \
         at invalid/duplicate-address.yaml:10:18, give each host its own address, or its own ssh.port",
    ),
    (
        "no-controller",
        "no hosts with a controller role defined at invalid/no-controller.yaml:4:3, \
         give at least one host the role controller, controller+worker or single",
    ),
    (
        "single-beside-others",
        "2 hosts defined but host 127.0.1.1 has role \"single\" at invalid/single-beside-others.yaml:5:13, \
         use role controller+worker in a cluster of several hosts, or remove the other hosts",
    ),
    (
        "malformed-yaml",
        "invalid YAML (did not find expected ',' or '}', while parsing a flow mapping at line 6 column 12) \
         at invalid/malformed-yaml.yaml:7:11, check the indentation and quoting around this position",
    ),
    (
        "tenant-bad-isolation",
        "invalid isolation \"container\" at invalid/tenant-bad-isolation.yaml:10:20, expected one of: namespace, vm",
    ),
    (
        "tenant-duplicate-name",
        "duplicate tenant name \"research\" (first declared at invalid/tenant-duplicate-name.yaml:9:15) \
         at invalid/tenant-duplicate-name.yaml:10:15, give each tenant its own name",
    ),
    (
        "tenant-bad-name",
        "invalid tenant name \"Research_Lab\": 'R' is not allowed: use lower-case letters, digits and \"-\" \
         at invalid/tenant-bad-name.yaml:9:15, tenant names become namespace names; use a DNS label such as research",
    ),
    (
        "tenant-bad-quota",
        "invalid quantity \"256GB\": expected a number with an optional unit, such as 64, 500m or 256Gi \
         at invalid/tenant-bad-quota.yaml:10:44, write a Kubernetes quantity such as 64, 500m or 256Gi",
    ),
    (
        "tenant-unknown-classification",
        "unknown classification \"confidential\" at invalid/tenant-unknown-classification.yaml:11:25, \
         expected one of the declared levels: public, secret",
    ),
    (
        "trusted-key-invalid",
        "invalid minisign public key: expected 56 base64 characters encoding an Ed25519 key (starting with RW) \
         at invalid/trusted-key-invalid.yaml:10:16, copy the second line of the signer's .pub file",
    ),
    (
        "trusted-key-file-missing",
        "trusted key file invalid/keys/absent.pub not found at invalid/trusted-key-file-missing.yaml:10:17, \
         relative paths resolve against the directory of invalid/trusted-key-file-missing.yaml",
    ),
    (
        "gpu-enabled-invalid",
        "invalid enabled value \"sometimes\" at invalid/gpu-enabled-invalid.yaml:9:30, expected one of: auto, true, false",
    ),
    (
        "private-address-not-ip",
        "invalid privateAddress \"node-2.lab\": not an IP address at invalid/private-address-not-ip.yaml:8:23, \
         write an IP address such as 10.0.0.5, or remove the field",
    ),
    (
        "no-taints-on-worker",
        "noTaints can only be true for the controller+worker role at invalid/no-taints-on-worker.yaml:8:17, \
         remove noTaints, or set role: controller+worker",
    ),
    (
        "install-flag-unbalanced-quotes",
        "unbalanced quotes in install flag \"--labels=\\\"pool=gpu\" at invalid/install-flag-unbalanced-quotes.yaml:9:11, \
         close the quote, or escape a literal quote with a backslash",
    ),
    (
        "all-controllers-reset",
        "all controllers are marked to be reset, which would destroy the cluster at invalid/all-controllers-reset.yaml:6:14, \
         keep at least one controller without reset: true, or remove the cluster with k0s reset",
    ),
    (
        "airgap-kind-clusterconfig",
        "kind \"ClusterConfig\" with apiVersion k0sctl.k0sproject.io/v1beta1 at invalid/airgap-kind-clusterconfig.yaml:2:7, \
         change kind to Cluster; a k0s ClusterConfig document takes apiVersion: k0s.k0sproject.io/v1beta1",
    ),
    (
        "no-documents",
        "no YAML documents found in invalid/no-documents.yaml, \
         write a document with apiVersion: k0sctl.k0sproject.io/v1beta1 and kind: Cluster",
    ),
    (
        "unclosed-substitution",
        "invalid variable substitution: closing brace expected at invalid/unclosed-substitution.yaml:7:18, \
         write \"${NAME}\" or \"${NAME:-default}\" on one line, or \"$$\" for a literal \"$\"",
    ),
    (
        "k0s-too-old-for-kubelet-root-dir",
        "k0s v1.31.2+k0s.0 does not support --kubelet-root-dir, which airlock sets to /var/lib/kubelet on hosts \
         that run workloads so that KubeVirt and CSI drivers find the kubelet \
         at invalid/k0s-too-old-for-kubelet-root-dir.yaml:10:14, use k0s v1.32.1 or newer",
    ),
    (
        "file-src-url",
        "URL source \"https://downloads.example.com/tool.tar.gz\" cannot be downloaded at an air-gapped site \
         at invalid/file-src-url.yaml:8:16, put the file into the bundle instead: add an artifact with \
         source {url: ...} and install {path: ...} to the bundle specification and rebuild the bundle, \
         or download it here and set src to the local copy",
    ),
    (
        "winrm-host",
        "winRM hosts are not supported at invalid/winrm-host.yaml:8:7, airlock installs Linux hosts over SSH; use an ssh block",
    ),
    // The second host's invalid address is not reported: after the first item was dropped its
    // position would be wrong.
    (
        "host-not-a-mapping",
        "invalid spec.hosts[0]: invalid type: string \"127.0.1.1\", expected a mapping at invalid/host-not-a-mapping.yaml:5:7",
    ),
    (
        "address-with-port",
        "invalid host address \"127.0.1.1:22\": the port belongs in the port field, not in the address \
         at invalid/address-with-port.yaml:6:22, write an IP address such as 10.0.0.5 or a DNS name such as node1.example.com",
    ),
];

#[test]
fn each_problem_names_file_line_column_and_fix() {
    for (fixture, expected) in PROBLEMS {
        let file = format!("invalid/{fixture}.yaml");
        let output = validate(&[&file]);
        let stderr = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{fixture}: {stderr}");
        assert!(
            stderr.starts_with("error: the cluster file has 1 problem:\n"),
            "{fixture}: {stderr}"
        );
        assert!(
            stderr.contains(&format!("\n  {expected}\n")),
            "{fixture}: expected\n  {expected}\ngot\n{stderr}"
        );
        assert!(stdout(&output).is_empty(), "{fixture}: {}", stdout(&output));
    }
}

#[test]
fn every_invalid_fixture_is_checked() {
    let mut names: Vec<String> = std::fs::read_dir(fixtures().join("invalid"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|name| name.strip_suffix(".yaml").map(str::to_string))
        .collect();
    names.sort();
    let covered = |name: &String| {
        PROBLEMS.iter().any(|(fixture, _)| fixture == name)
            || [
                "second-cluster",
                "several-problems",
                "unknown-field-after-substitution",
            ]
            .contains(&name.as_str())
    };
    let unchecked: Vec<&String> = names.iter().filter(|name| !covered(name)).collect();
    assert!(
        unchecked.is_empty(),
        "fixtures without a test: {unchecked:?}"
    );
}

#[test]
fn all_problems_are_listed_one_per_line() {
    let output = validate(&["invalid/several-problems.yaml"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = stderr(&output);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines[0], "error: the cluster file has 5 problems:");
    let expected = [
        "  unknown role \"leader\" at invalid/several-problems.yaml:5:13",
        "  unknown field \"adress\" at invalid/several-problems.yaml:6:13",
        "  invalid privateAddress \"somewhere\": not an IP address at invalid/several-problems.yaml:8:23",
        "  invalid port 0 at invalid/several-problems.yaml:9:39",
        "  invalid duration \"300\": expected a number with a unit, such as 120s, 5m or 1h30m at invalid/several-problems.yaml:11:22",
    ];
    assert_eq!(lines.len(), 1 + expected.len(), "{stderr}");
    for (line, prefix) in lines[1..].iter().zip(expected) {
        assert!(
            line.starts_with(prefix),
            "expected a line starting with\n{prefix}\ngot\n{line}"
        );
    }
}

#[test]
fn two_cluster_documents_are_rejected_at_both() {
    let output = validate(&["invalid/second-cluster.yaml", "invalid/wrong-role.yaml"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = stderr(&output);
    for file in ["invalid/second-cluster.yaml", "invalid/wrong-role.yaml"] {
        let line = format!(
            "  expected exactly one cluster config, got 2 at {file}:1:1, keep one Cluster document and move its hosts into it"
        );
        assert!(stderr.contains(&line), "{stderr}");
    }
}

#[test]
fn missing_file_is_bad_input() {
    let output = validate(&["invalid/does-not-exist.yaml"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).starts_with(
            "error: cannot read cluster file invalid/does-not-exist.yaml\n  caused by: "
        ),
        "{}",
        stderr(&output)
    );
}

#[test]
fn config_flag_is_required() {
    let output = airlock(&["config", "validate"], &[], None);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("--config <FILE>"),
        "{}",
        stderr(&output)
    );
}
