//! `airlock apply` on lab hosts with the k0s double: clusters of each shape from scratch to every
//! node Ready, re-runs, interruptions, locks, and every refusal before a host is changed.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::process::Stdio;

use common::apply::{
    SignedBundle, apply_command, apply_command_ready_within, apply_command_with, cluster_file,
    events, kubectl, ready_nodes,
};
use common::{Lab, describe, stderr};

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|name| name.to_string()).collect()
}

#[test]
fn controller_and_two_workers_become_ready() {
    let Some(lab) = Lab::start("controller_and_two_workers_become_ready", 3) else {
        return;
    };
    let bundle = SignedBundle::build("bundles/lab.yaml");
    let cluster = cluster_file(&lab, &bundle, "");
    let output = apply_command(&lab, &cluster, &bundle.bundle)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(ready_nodes(&lab, "lab-1"), names(&["lab-2", "lab-3"]));
    assert!(
        stderr(&output).contains("==> Finished in"),
        "{}",
        describe(&output)
    );

    // Each worker was installed with the kubelet root dir KubeVirt needs.
    let unit = lab.ssh_root("lab-2", "cat /etc/systemd/system/k0sworker.service");
    assert!(
        common::stdout(&unit).contains("--kubelet-root-dir=/var/lib/kubelet"),
        "{}",
        describe(&unit)
    );
    // Used join tokens are overwritten on the hosts.
    let token = lab.ssh_root("lab-3", "cat /etc/k0s/k0stoken");
    assert!(
        common::stdout(&token).starts_with("# overwritten"),
        "{}",
        describe(&token)
    );
}

#[test]
fn three_controllers_and_a_worker_become_ready() {
    let Some(lab) = Lab::start_with(
        "three_controllers_and_a_worker_become_ready",
        4,
        &["--roles", "controller,controller,controller,worker"],
    ) else {
        return;
    };
    let bundle = SignedBundle::build("bundles/lab.yaml");
    let cluster = cluster_file(&lab, &bundle, "");
    let output = apply_command(&lab, &cluster, &bundle.bundle)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(ready_nodes(&lab, "lab-1"), names(&["lab-4"]));
    let members = kubectl(&lab, "lab-1", "get --raw=/readyz");
    assert_eq!(members.trim(), "ok");
    let etcd = lab.ssh_root("lab-1", "k0s etcd member-list");
    let etcd = common::stdout(&etcd);
    for address in ["11", "12", "13"] {
        assert!(
            etcd.contains(&format!("{}.{address}", lab.subnet)),
            "etcd members: {etcd}"
        );
    }
    // Controllers join one at a time, after the first.
    let joins: Vec<String> = events(&lab)
        .iter()
        .filter(|event| event["event"] == "join")
        .map(|event| event["host"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(&joins[..2], ["lab-2", "lab-3"], "join order: {joins:?}");
}

#[test]
fn single_host_becomes_ready() {
    let Some(lab) = Lab::start_with("single_host_becomes_ready", 1, &["--roles", "single"]) else {
        return;
    };
    let bundle = SignedBundle::build("bundles/lab.yaml");
    let cluster = cluster_file(&lab, &bundle, "");
    let output = apply_command(&lab, &cluster, &bundle.bundle)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(ready_nodes(&lab, "lab-1"), names(&["lab-1"]));
}

#[test]
fn controller_worker_host_becomes_a_node() {
    let Some(lab) = Lab::start_with(
        "controller_worker_host_becomes_a_node",
        2,
        &["--roles", "controller+worker,worker"],
    ) else {
        return;
    };
    let bundle = SignedBundle::build("bundles/lab.yaml");
    let cluster = cluster_file(&lab, &bundle, "");
    let output = apply_command(&lab, &cluster, &bundle.bundle)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(ready_nodes(&lab, "lab-1"), names(&["lab-1", "lab-2"]));
}

#[test]
fn second_apply_changes_nothing() {
    let Some(lab) = Lab::start("second_apply_changes_nothing", 3) else {
        return;
    };
    let bundle = SignedBundle::build("bundles/lab.yaml");
    let cluster = cluster_file(&lab, &bundle, "");
    let first = apply_command(&lab, &cluster, &bundle.bundle)
        .output()
        .unwrap();
    assert!(first.status.success(), "{}", describe(&first));
    let before = events(&lab).len();
    let files_before = lab.ssh_root(
        "lab-2",
        "stat -c '%n %Y' /usr/local/bin/k0s /var/lib/k0s/images/*",
    );

    let second = apply_command(&lab, &cluster, &bundle.bundle)
        .output()
        .unwrap();
    assert!(second.status.success(), "{}", describe(&second));
    let text = stderr(&second);
    assert!(
        text.contains("every host holds every file already"),
        "{text}"
    );
    assert!(!text.contains("wrote /etc/k0s/k0s.yaml"), "{text}");
    let changes: Vec<_> = events(&lab)[before..]
        .iter()
        .filter(|event| {
            ["install", "start", "stop", "token-create", "init", "join"]
                .contains(&event["event"].as_str().unwrap_or(""))
        })
        .cloned()
        .collect();
    assert!(
        changes.is_empty(),
        "the second apply changed the cluster: {changes:?}"
    );
    let files_after = lab.ssh_root(
        "lab-2",
        "stat -c '%n %Y' /usr/local/bin/k0s /var/lib/k0s/images/*",
    );
    assert_eq!(common::stdout(&files_before), common::stdout(&files_after));
}

/// Starts an apply, kills it as soon as `marker` appears in its output, then runs it again.
fn kill_and_resume(test: &str, marker: &str) {
    let Some(lab) = Lab::start(test, 3) else {
        return;
    };
    let bundle = SignedBundle::build("bundles/lab.yaml");
    let cluster = cluster_file(&lab, &bundle, "");
    let mut child = apply_command(&lab, &cluster, &bundle.bundle)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let reader = BufReader::new(child.stderr.take().unwrap());
    let mut seen = Vec::new();
    for line in reader.lines() {
        let line = line.unwrap();
        let found = line.contains(marker);
        seen.push(line);
        if found {
            child.kill().unwrap();
            break;
        }
    }
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the apply finished before it could be killed: {seen:?}"
    );

    let resumed = apply_command(&lab, &cluster, &bundle.bundle)
        .output()
        .unwrap();
    assert!(
        resumed.status.success(),
        "after killing at {marker:?}:\n{}",
        describe(&resumed)
    );
    assert_eq!(ready_nodes(&lab, "lab-1"), names(&["lab-2", "lab-3"]));
}

#[test]
fn apply_killed_during_upload_resumes() {
    kill_and_resume(
        "apply_killed_during_upload_resumes",
        "uploading /usr/local/bin/k0s",
    );
}

#[test]
fn apply_killed_while_initializing_resumes() {
    kill_and_resume(
        "apply_killed_while_initializing_resumes",
        "==> Initialize the cluster",
    );
}

#[test]
fn apply_killed_during_joins_resumes() {
    kill_and_resume("apply_killed_during_joins_resumes", "joining");
}

#[test]
fn locked_host_is_refused() {
    let Some(lab) = Lab::start("locked_host_is_refused", 2) else {
        return;
    };
    let bundle = SignedBundle::build("bundles/lab.yaml");
    let cluster = cluster_file(&lab, &bundle, "");
    // Another airlock run, on another machine, holds lab-2.
    let lock = lab.ssh_root(
        "lab-2",
        "printf 'airlock apply on ops-laptop pid 4711\\n' > /run/lock/airlock.lock",
    );
    assert!(lock.status.success(), "{}", describe(&lock));

    let output = apply_command(&lab, &cluster, &bundle.bundle)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let text = stderr(&output);
    assert!(text.contains("phase \"Lock hosts\" failed"), "{text}");
    assert!(
        text.contains("airlock apply on ops-laptop pid 4711"),
        "{text}"
    );
    // Nothing was uploaded, and the lock taken on lab-1 was released.
    let lab_1 = lab.ssh_root("lab-1", "ls /usr/local/bin; ls /run/lock");
    assert_eq!(common::stdout(&lab_1).trim(), "", "{}", describe(&lab_1));
}

#[test]
fn unknown_host_key_is_refused() {
    let Some(lab) = Lab::start("unknown_host_key_is_refused", 2) else {
        return;
    };
    let bundle = SignedBundle::build("bundles/lab.yaml");
    let cluster = cluster_file(&lab, &bundle, "");
    let empty = lab.dir.join("empty_known_hosts");
    fs::write(&empty, "").unwrap();
    let output = apply_command_with(&lab, &cluster, &bundle.bundle, &empty)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let text = stderr(&output);
    assert!(text.contains("2 of 2 hosts failed"), "{text}");
    assert!(text.contains("is not in"), "{text}");
    assert!(text.contains("--accept-new-host-keys"), "{text}");
}

#[test]
fn changed_host_key_is_refused() {
    let Some(lab) = Lab::start("changed_host_key_is_refused", 2) else {
        return;
    };
    let bundle = SignedBundle::build("bundles/lab.yaml");
    let cluster = cluster_file(&lab, &bundle, "");
    // Swap the two hosts' keys: each host now presents a key other than the one recorded.
    let known = fs::read_to_string(lab.known_hosts()).unwrap();
    let lines: Vec<&str> = known.lines().collect();
    let (first, second) = (
        lines[0].split_once(' ').unwrap(),
        lines[1].split_once(' ').unwrap(),
    );
    let swapped = lab.dir.join("swapped_known_hosts");
    fs::write(
        &swapped,
        format!("{} {}\n{} {}\n", first.0, second.1, second.0, first.1),
    )
    .unwrap();

    let output = apply_command_with(&lab, &cluster, &bundle.bundle, &swapped)
        .arg("--accept-new-host-keys")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let text = stderr(&output);
    assert!(text.contains("has CHANGED"), "{text}");
    assert_eq!(
        text.matches("SHA256:").count(),
        4,
        "both fingerprints of both hosts: {text}"
    );
}

#[test]
fn tampered_bundle_is_refused_before_any_host() {
    let Some(lab) = Lab::start("tampered_bundle_is_refused_before_any_host", 2) else {
        return;
    };
    let bundle = SignedBundle::build("bundles/lab.yaml");
    let cluster = cluster_file(&lab, &bundle, "");
    let blobs = bundle.bundle.join("blobs/sha256");
    let blob = fs::read_dir(&blobs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = fs::read(&blob).unwrap();
    bytes[0] ^= 1;
    fs::write(&blob, bytes).unwrap();

    let output = apply_command(&lab, &cluster, &bundle.bundle)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let text = stderr(&output);
    assert!(
        text.contains("phase \"Verify the bundle\" failed"),
        "{text}"
    );
    assert!(!text.contains("Connect to hosts"), "{text}");
    for host in ["lab-1", "lab-2"] {
        let untouched = "test ! -e /usr/local/bin/k0s && test ! -e /run/lock/airlock.lock && test ! -e /var/lib/k0s";
        let state = lab.ssh_root(host, untouched);
        assert!(
            state.status.success(),
            "{host} was touched:\n{}",
            describe(&state)
        );
    }
}

#[test]
fn host_that_is_down_is_named() {
    let Some(lab) = Lab::start("host_that_is_down_is_named", 3) else {
        return;
    };
    let bundle = SignedBundle::build("bundles/lab.yaml");
    let cluster = cluster_file(&lab, &bundle, "");
    assert!(lab.run(&["stop", "lab-3"]).status.success());
    let output = apply_command(&lab, &cluster, &bundle.bundle)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let text = stderr(&output);
    let down = &lab.host("lab-3").address;
    assert!(
        text.contains(&format!(
            "1 of 3 hosts failed:\n  {down}: cannot connect to {down}"
        )),
        "{text}"
    );
    assert!(text.contains("help: check that the hosts are up"), "{text}");
    // The host's own progress line gives the cause as well.
    assert!(
        text.contains(&format!("{down}: failed: not connected: ")),
        "{text}"
    );
}

#[test]
fn host_with_small_disk_is_refused() {
    let Some(lab) = Lab::start_with(
        "host_with_small_disk_is_refused",
        2,
        &["--disk-size", "16M"],
    ) else {
        return;
    };
    let bundle = SignedBundle::build("bundles/lab.yaml");
    let cluster = cluster_file(&lab, &bundle, "");
    let output = apply_command(&lab, &cluster, &bundle.bundle)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let text = stderr(&output);
    assert!(text.contains("phase \"Preflight checks\" failed"), "{text}");
    assert!(text.contains("the file system at /var/lib needs"), "{text}");
    assert!(text.contains("free space or grow the disk"), "{text}");
}

#[test]
fn join_tokens_never_reach_the_output() {
    let Some(lab) = Lab::start("join_tokens_never_reach_the_output", 3) else {
        return;
    };
    let bundle = SignedBundle::build("bundles/lab.yaml");
    let cluster = cluster_file(&lab, &bundle, "");
    let output = apply_command(&lab, &cluster, &bundle.bundle)
        .arg("-vv")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    let printed = format!("{}{}", common::stdout(&output), stderr(&output));

    let tokens: Vec<String> = events(&lab)
        .iter()
        .filter(|event| event["event"] == "token-create")
        .map(|event| event["token"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(tokens.len(), 2, "one token per worker");
    let listed = lab.ssh_root("lab-1", "k0s token list");
    assert_eq!(
        common::stdout(&listed).trim(),
        "No k0s join tokens found",
        "every join token was invalidated: {}",
        describe(&listed)
    );
    for token in &tokens {
        assert!(
            !printed.contains(token.as_str()),
            "a join token was printed"
        );
        let secret = bootstrap_secret(token);
        assert!(
            !printed.contains(&secret),
            "a bootstrap token secret was printed"
        );
    }
    // Every k0s token is base64 of gzip, which starts with these four characters.
    assert!(
        !printed.contains("H4sI"),
        "something token-shaped was printed"
    );
}

/// Decodes a k0s join token and returns its bootstrap token (`id.secret`).
fn bootstrap_secret(token: &str) -> String {
    use std::io::Read;
    let compressed = data_encoding::BASE64
        .decode(token.trim().as_bytes())
        .unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(&compressed[..])
        .read_to_string(&mut text)
        .unwrap();
    let line = text
        .lines()
        .find(|line| line.trim_start().starts_with("token:"))
        .unwrap();
    line.split_once(':').unwrap().1.trim().to_string()
}

#[test]
fn k0sctl_shaped_files_apply_unchanged() {
    let Some(lab) = Lab::start("k0sctl_shaped_files_apply_unchanged", 2) else {
        return;
    };
    let bundle = SignedBundle::build("bundles/lab.yaml");
    let controller = lab.host("lab-1");
    let worker = lab.host("lab-2");
    let key = lab.key_path();
    // Two files, lower-case kind, ${VAR} substitution, a ClusterConfig document merged into
    // spec.k0s.config, and an extra manifest applied once the cluster is up.
    let first = format!(
        "apiVersion: k0sctl.k0sproject.io/v1beta1
kind: cluster
metadata:
  name: ${{CLUSTER_NAME}}
spec:
  hosts:
    - role: controller
      privateAddress: {c}
      ssh: {{address: {c}, port: {port}, user: {cu}, keyPath: {key}}}
      hooks:
        apply:
          before:
            - \"echo hello > apply.hook\"
          after:
            - \"grep -q hello apply.hook\"
    - role: worker
      privateAddress: {w}
      environment:
        SITE_MARKER: lab-site
      ssh: {{address: {w}, port: {port}, user: {wu}, keyPath: {key}}}
  k0s:
    version: \"${{K0S_VERSION}}\"
    config:
      spec:
        telemetry:
          enabled: false
  airlock:
    bundle:
      trustedKeys:
        - path: {pubkey}
",
        c = controller.address,
        w = worker.address,
        port = controller.port,
        cu = controller.user,
        wu = worker.user,
        key = key.display(),
        pubkey = bundle.public_key.display(),
    );
    let second = "apiVersion: k0s.k0sproject.io/v1beta1
kind: clusterconfig
spec:
  network:
    provider: kuberouter
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: site-facts
  namespace: default
data:
  site: lab
";
    let first_path = lab.dir.join("k0sctl-1.yaml");
    let second_path = lab.dir.join("k0sctl-2.yaml");
    fs::write(&first_path, first).unwrap();
    fs::write(&second_path, second).unwrap();

    let output = apply_command(&lab, &first_path, &bundle.bundle)
        .arg("-c")
        .arg(&second_path)
        .env("CLUSTER_NAME", "site-a")
        .env("K0S_VERSION", "v1.35.3+k0s.0")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    let config = lab.ssh_root("lab-1", "cat /etc/k0s/k0s.yaml");
    let config = common::stdout(&config);
    assert!(config.contains("name: site-a"), "{config}");
    assert!(config.contains("provider: kuberouter"), "{config}");
    assert!(
        kubectl(&lab, "lab-1", "get configmap site-facts -n default -o json")
            .contains("\"site\": \"lab\"")
    );
    // The worker's environment reaches its k0s service.
    let unit = common::stdout(&lab.ssh_root("lab-2", "cat /etc/systemd/system/k0sworker.service"));
    assert!(unit.contains("SITE_MARKER=lab-site"), "{unit}");
    // The hooks ran as the SSH user, in its home directory, before and after the install.
    assert!(
        stderr(&output).contains("ran apply.before hook"),
        "{}",
        stderr(&output)
    );
    assert!(
        stderr(&output).contains("ran apply.after hook"),
        "{}",
        stderr(&output)
    );
    let hook = lab.ssh("lab-1", "cat apply.hook");
    assert_eq!(common::stdout(&hook).trim(), "hello");
}

#[test]
fn interrupted_apply_stops_cleanly() {
    let Some(lab) = Lab::start("interrupted_apply_stops_cleanly", 2) else {
        return;
    };
    let bundle = SignedBundle::build("bundles/lab.yaml");
    let cluster = cluster_file(&lab, &bundle, "");
    let mut child = apply_command(&lab, &cluster, &bundle.bundle)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap() > 0 {
        seen.push_str(&line);
        if line.contains("==> Lock hosts") {
            let signal = std::process::Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status()
                .unwrap();
            assert!(signal.success());
            break;
        }
        line.clear();
    }
    std::io::Read::read_to_string(&mut reader, &mut seen).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{seen}");
    assert!(seen.contains("Ctrl-C was pressed"), "{seen}");
    assert!(seen.contains("help: run the same command again"), "{seen}");
    for host in ["lab-1", "lab-2"] {
        let lock = lab.ssh_root(host, "test ! -e /run/lock/airlock.lock");
        assert!(lock.status.success(), "{host} kept the lock:\n{seen}");
    }

    let resumed = apply_command(&lab, &cluster, &bundle.bundle)
        .output()
        .unwrap();
    assert!(resumed.status.success(), "{}", describe(&resumed));
}

/// Writes a copy of `cluster` that lists only its first `count` hosts.
fn first_hosts(cluster: &std::path::Path, count: usize, name: &str) -> std::path::PathBuf {
    let text = fs::read_to_string(cluster).unwrap();
    let mut kept = Vec::new();
    let mut seen = 0;
    let mut in_hosts = false;
    for line in text.lines() {
        if line == "  hosts:" {
            in_hosts = true;
        } else if in_hosts && line.starts_with("    - role:") {
            seen += 1;
        } else if in_hosts && !line.starts_with("      ") {
            in_hosts = false;
        }
        if !in_hosts || seen <= count {
            kept.push(line);
        }
    }
    let path = cluster.with_file_name(name);
    fs::write(&path, kept.join("\n") + "\n").unwrap();
    path
}

#[test]
fn worker_joins_then_is_pruned() {
    let Some(lab) = Lab::start("worker_joins_then_is_pruned", 3) else {
        return;
    };
    let bundle = SignedBundle::build("bundles/lab.yaml");
    let all = cluster_file(&lab, &bundle, "");
    let two = first_hosts(&all, 2, "two-hosts.yaml");
    let output = apply_command(&lab, &two, &bundle.bundle).output().unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(ready_nodes(&lab, "lab-1"), names(&["lab-2"]));

    // A host added to the file joins the running cluster.
    let output = apply_command(&lab, &all, &bundle.bundle).output().unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(ready_nodes(&lab, "lab-1"), names(&["lab-2", "lab-3"]));
    let inits = events(&lab)
        .iter()
        .filter(|event| event["event"] == "init")
        .count();
    assert_eq!(inits, 1, "the cluster was initialised again");

    // Without --prune, a host removed from the file stays and is named.
    let output = apply_command(&lab, &two, &bundle.bundle).output().unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    assert!(stderr(&output).contains("--prune"), "{}", describe(&output));
    assert_eq!(ready_nodes(&lab, "lab-1"), names(&["lab-2", "lab-3"]));

    let output = apply_command(&lab, &two, &bundle.bundle)
        .arg("--prune")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    let nodes = kubectl(&lab, "lab-1", "get nodes -o name");
    assert!(!nodes.contains("lab-3"), "{nodes}");
    let drained = events(&lab)
        .iter()
        .any(|event| event["event"] == "drain" && event.to_string().contains("lab-3"));
    assert!(drained, "lab-3 was not drained");
    let binary = lab.ssh_root(
        "lab-3",
        "test -e /usr/local/bin/k0s || test -e /var/lib/k0s",
    );
    assert!(!binary.status.success(), "lab-3 still holds k0s");
    let log = fs::read_to_string(lab.dir.join("out/audit.log")).unwrap();
    assert!(log.contains("drain and delete node lab-3"), "{log}");

    // A node whose machine is gone is removed through the leader alone.
    let output = apply_command(&lab, &all, &bundle.bundle).output().unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(ready_nodes(&lab, "lab-1"), names(&["lab-2", "lab-3"]));
    let freeze = lab.run(&["freeze", "lab-3"]);
    assert!(freeze.status.success(), "{}", describe(&freeze));
    let output = apply_command(&lab, &two, &bundle.bundle)
        .arg("--prune")
        .output()
        .unwrap();
    let thaw = lab.run(&["thaw", "lab-3"]);
    assert!(thaw.status.success(), "{}", describe(&thaw));
    assert!(output.status.success(), "{}", describe(&output));
    assert!(
        stderr(&output).contains("the host is not reset"),
        "{}",
        describe(&output)
    );
    let nodes = kubectl(&lab, "lab-1", "get nodes -o name");
    assert!(!nodes.contains("lab-3"), "{nodes}");
}

#[test]
fn marked_hosts_leave_and_reset() {
    let Some(lab) = Lab::start_with(
        "marked_hosts_leave_and_reset",
        4,
        &["--roles", "controller,controller,worker,worker"],
    ) else {
        return;
    };
    let bundle = SignedBundle::build("bundles/lab.yaml");
    let cluster = cluster_file(&lab, &bundle, "");
    let output = apply_command(&lab, &cluster, &bundle.bundle)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));

    // Mark the second controller and the last worker; that worker gets a reset.after hook.
    let text = fs::read_to_string(&cluster).unwrap();
    let mut marked = Vec::new();
    let mut seen = 0;
    for line in text.lines() {
        marked.push(line.to_string());
        if line.starts_with("    - role:") {
            seen += 1;
            if seen == 2 || seen == 4 {
                marked.push("      reset: true".to_string());
            }
            if seen == 4 {
                marked.push("      hooks: {reset: {after: [\"touch reset.after\"]}}".to_string());
            }
        }
    }
    let marked_path = lab.dir.join("marked.yaml");
    fs::write(&marked_path, marked.join("\n") + "\n").unwrap();
    let output = apply_command(&lab, &marked_path, &bundle.bundle)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    // Two of the four hosts left the cluster.
    assert!(
        stderr(&output).contains("runs on 2 hosts"),
        "{}",
        describe(&output)
    );

    let nodes = kubectl(&lab, "lab-1", "get nodes -o name");
    assert!(!nodes.contains("lab-4"), "{nodes}");
    assert!(nodes.contains("lab-3"), "{nodes}");
    let etcd = common::stdout(&lab.ssh_root("lab-1", "k0s etcd member-list"));
    assert!(
        !etcd.contains(&format!("{}.12", lab.subnet)),
        "etcd members: {etcd}"
    );
    assert!(
        etcd.contains(&format!("{}.11", lab.subnet)),
        "etcd members: {etcd}"
    );
    for host in ["lab-2", "lab-4"] {
        let left = lab.ssh_root(
            host,
            "test -e /usr/local/bin/k0s || test -e /var/lib/k0s || test -e /etc/k0s",
        );
        assert!(!left.status.success(), "{host} still holds k0s files");
    }
    let order: Vec<String> = events(&lab)
        .iter()
        .filter(|event| {
            ["drain", "delete-node", "etcd-leave", "reset"]
                .contains(&event["event"].as_str().unwrap_or_default())
        })
        .map(|event| {
            format!(
                "{} {}",
                event["event"].as_str().unwrap(),
                event["host"].as_str().unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            "drain lab-1",
            "delete-node lab-1",
            "reset lab-4",
            "etcd-leave lab-2",
            "reset lab-2"
        ],
        "events: {order:?}"
    );
    let home = common::stdout(&lab.ssh("lab-4", "ls"));
    assert!(home.contains("reset.after"), "{home}");
    // The blueprint no longer lists the reset hosts.
    let blueprint = fs::read_to_string(lab.dir.join("out/blueprint.yaml")).unwrap();
    assert!(
        !blueprint.contains(&format!("address: {}.14", lab.subnet)),
        "{blueprint}"
    );
    assert!(
        blueprint.contains(&format!("address: {}.13", lab.subnet)),
        "{blueprint}"
    );
}

#[test]
fn unready_worker_reports_service_log() {
    let Some(lab) = Lab::start("unready_worker_reports_service_log", 2) else {
        return;
    };
    // The worker's install.before hook spoils the join token that airlock just wrote, so its k0s
    // starts and then stops, unable to join.
    let base = fs::read_to_string(lab.dir.join("cluster.yaml")).unwrap();
    let key_line = format!("        keyPath: {}\n", lab.key_path().display());

    // The worker is the last host of the file.
    let (head, tail) = base.rsplit_once(&key_line).unwrap();
    let hook = "      hooks:\n        install:\n          before: [\"echo not-a-token | sudo -n tee /etc/k0s/k0stoken\"]\n";
    fs::write(
        lab.dir.join("cluster.yaml"),
        format!("{head}{key_line}{hook}{tail}"),
    )
    .unwrap();

    let bundle = SignedBundle::build("bundles/lab.yaml");
    let cluster = cluster_file(&lab, &bundle, "");
    let out = lab.dir.join("out");
    let output =
        apply_command_ready_within(&cluster, &bundle.bundle, &lab.known_hosts(), &out, "4s")
            .output()
            .unwrap();
    assert!(!output.status.success(), "{}", describe(&output));

    let text = stderr(&output);
    let worker = &lab.host("lab-2").address;
    assert!(
        text.contains(&format!("{worker}: node lab-2 was not ready within 4s")),
        "{text}"
    );
    assert!(text.contains("the k0s service log ends:"), "{text}");
    assert!(text.contains("failed to decode join token"), "{text}");
    // The token file of the failed join is overwritten too, when the run lets go of the host.
    let token = lab.ssh_root("lab-2", "cat /etc/k0s/k0stoken");
    assert!(
        common::stdout(&token).starts_with("# overwritten"),
        "{}",
        describe(&token)
    );
}
