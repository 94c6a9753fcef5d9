//! `airlock reset` on lab hosts with the k0s double: a whole cluster back to the hosts the lab
//! created, the confirmation guard, and a failing reset hook.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use common::apply::{SignedBundle, airlock, apply_command, cluster_file};
use common::{Lab, describe, stderr};

/// The folders of a lab host's own file tree (the others are the machine's, shared read-only or
/// bound from the lab's folder). `/run/airlock-lab` is the lab's shared state, and `/run/sshd.pid`
/// and `/tmp` change with every login.
const TREE: &str = "find /etc /var/lib /usr/local/bin /run /root /home -xdev \
                    -not -path '/run/airlock-lab*' -not -path /run/sshd.pid \
                    -printf '%p %M %u:%g\\n' | sort";

/// Lists each host's file tree: path, mode and owner of every entry.
fn trees(lab: &Lab) -> Vec<(String, String)> {
    lab.hosts
        .iter()
        .map(|host| {
            let output = lab.ssh_root(&host.name, TREE);
            assert!(output.status.success(), "{}", describe(&output));
            (host.name.clone(), common::stdout(&output))
        })
        .collect()
}

/// `airlock reset` against a lab, with the lab's known_hosts and output folder.
pub fn reset_command(lab: &Lab, cluster: &Path) -> Command {
    let mut command = airlock();
    command
        .arg("reset")
        .arg("-c")
        .arg(cluster)
        .arg("--known-hosts")
        .arg(lab.known_hosts())
        .arg("--out")
        .arg(lab.dir.join("out"))
        .args(["--connect-timeout", "3s"]);
    command
}

fn differences(before: &str, after: &str) -> String {
    let before: Vec<&str> = before.lines().collect();
    let after: Vec<&str> = after.lines().collect();
    let added: Vec<&&str> = after.iter().filter(|line| !before.contains(line)).collect();
    let removed: Vec<&&str> = before.iter().filter(|line| !after.contains(line)).collect();
    format!("left behind: {added:#?}\nmissing: {removed:#?}")
}

#[test]
fn reset_restores_lab_file_trees() {
    let Some(lab) = Lab::start("reset_restores_lab_file_trees", 3) else {
        return;
    };
    let before = trees(&lab);
    let bundle = SignedBundle::build("bundles/lab.yaml");
    let cluster = cluster_file(&lab, &bundle, "");
    let output = apply_command(&lab, &cluster, &bundle.bundle)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    let installed = trees(&lab);
    assert_ne!(before, installed, "the apply changed no host");

    // Without a terminal, reset requires --force and changes nothing.
    let refused = reset_command(&lab, &cluster)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2), "{}", describe(&refused));
    assert!(
        stderr(&refused).contains("--force"),
        "{}",
        describe(&refused)
    );
    assert_eq!(trees(&lab), installed);

    let output = reset_command(&lab, &cluster)
        .arg("--force")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    for ((host, was), (_, now)) in before.iter().zip(trees(&lab)) {
        assert!(
            *was == now,
            "{host} differs from the lab's tree:\n{}",
            differences(was, &now)
        );
    }

    // The reset ran workers first, then the controller, and is in the audit log.
    let events = common::apply::events(&lab);
    let resets: Vec<&str> = events
        .iter()
        .filter(|event| event["event"] == "reset")
        .map(|event| event["host"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(resets.len(), 3, "reset events: {resets:?}");
    assert_eq!(resets[2], "lab-1", "reset order: {resets:?}");
    let log = fs::read_to_string(lab.dir.join("out/audit.log")).unwrap();
    let reset_lines = log
        .lines()
        .filter(|line| line.contains("\"Reset hosts\"") && line.contains("k0s reset"))
        .count();
    assert_eq!(reset_lines, 3, "{log}");
    let verify = airlock()
        .args(["audit", "verify"])
        .arg(lab.dir.join("out/audit.log"))
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", describe(&verify));
}

#[test]
fn failing_reset_hook_stops_reset() {
    let Some(lab) = Lab::start("failing_reset_hook_stops_reset", 1) else {
        return;
    };
    let host = lab.host("lab-1");
    let text = format!(
        "apiVersion: k0sctl.k0sproject.io/v1beta1
kind: Cluster
metadata:
  name: hooked
spec:
  hosts:
    - role: controller
      ssh: {{address: {address}, port: {port}, user: {user}, keyPath: {key}}}
      hooks:
        reset:
          before:
            - \"touch reset.before\"
            - \"exit 7\"
          after:
            - \"touch reset.after\"
",
        address = host.address,
        port = host.port,
        user = host.user,
        key = lab.key_path().display(),
    );
    let cluster = lab.dir.join("hooked.yaml");
    fs::write(&cluster, text).unwrap();
    let output = reset_command(&lab, &cluster)
        .arg("--force")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let message = stderr(&output);
    assert!(message.contains("exit 7"), "{message}");
    assert!(message.contains("reset.before"), "{message}");
    assert!(message.contains(&host.address), "{message}");
    // The first hook ran; the reset and the after hook did not.
    let home = common::stdout(&lab.ssh(&host.name, "ls"));
    assert!(home.contains("reset.before"), "{home}");
    assert!(!home.contains("reset.after"), "{home}");
    let log = fs::read_to_string(lab.dir.join("out/audit.log")).unwrap();
    assert!(log.contains("phase failed"), "{log}");
    assert!(!log.contains("\"Reset hosts\""), "{log}");
}

#[test]
fn reset_dry_run_changes_nothing() {
    let Some(lab) = Lab::start("reset_dry_run_changes_nothing", 2) else {
        return;
    };
    let bundle = SignedBundle::build("bundles/lab.yaml");
    let cluster = cluster_file(&lab, &bundle, "");
    let output = apply_command(&lab, &cluster, &bundle.bundle)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    let installed = trees(&lab);

    let output = reset_command(&lab, &cluster)
        .arg("--dry-run")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    let message = stderr(&output);
    assert!(message.contains("would stop k0s"), "{message}");
    assert!(message.contains("/etc/k0s/k0s.yaml"), "{message}");
    assert!(message.contains("nothing was changed"), "{message}");
    assert_eq!(trees(&lab), installed);
}
