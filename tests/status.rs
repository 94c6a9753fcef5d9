//! `airlock status` on lab hosts: a cluster that matches its blueprint, then a changed file, a
//! stopped k0s, a deleted stack policy and a deleted site policy from the cluster file, each
//! reported under its host with exit status 3; an unreachable host makes it fail with status 1.
//! A placed file whose mode or owner changed is reported too, unless the blueprint predates
//! recorded modes.

mod common;

use std::io::Write;
use std::process::{Output, Stdio};

use airlock::blueprint::Blueprint;
use common::apply::{
    SignedBundle, add_to_host, airlock, apply_command, cluster_file, kubectl, run_ok,
};
use common::{Lab, describe, stdout};

const SITE_POLICY: &str = "---
apiVersion: v1
kind: ConfigMap
metadata:
  name: site-retention-policy
  namespace: default
  annotations:
    airlock.io/description: Research data stays on site for at most 90 days.
data:
  days: \"90\"
";

fn status(lab: &Lab, cluster: &std::path::Path) -> Output {
    airlock()
        .args(["status", "-c"])
        .arg(cluster)
        .arg("--known-hosts")
        .arg(lab.known_hosts())
        .args(["--connect-timeout", "3s"])
        .output()
        .unwrap()
}

#[test]
fn status_reports_drift_per_host() {
    let Some(lab) = Lab::start("status_reports_drift_per_host", 3) else {
        return;
    };
    let bundle = SignedBundle::build("bundles/lab.yaml");
    let cluster = cluster_file(&lab, &bundle, "");
    // A site's own policy as an extra document of the cluster file; its kind is not one the
    // status snapshot lists, so status looks it up by name.
    let mut text = std::fs::read_to_string(&cluster).unwrap();
    text.push_str(SITE_POLICY);
    std::fs::write(&cluster, text).unwrap();
    let output = apply_command(&lab, &cluster, &bundle.bundle)
        .args(["--stack-timeout", "60s"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));

    let recorded = std::fs::read_to_string(lab.dir.join("out/blueprint.yaml")).unwrap();
    assert!(
        recorded.contains("name: site-retention-policy"),
        "the site policy is not recorded:\n{}",
        std::fs::read_to_string(&cluster).unwrap()
    );
    let clean = status(&lab, &cluster);
    assert_eq!(clean.status.code(), Some(0), "{}", describe(&clean));
    assert_eq!(stdout(&clean).matches("matches the blueprint").count(), 3);

    let [controller, changed, stopped] =
        ["lab-1", "lab-2", "lab-3"].map(|name| lab.host(name).address.clone());
    let archive = "/var/lib/k0s/images/k0s-airgap-bundle-v1.35.3+k0s.0-amd64.tar";
    assert!(
        lab.ssh_root("lab-2", &format!("printf x >> {archive}"))
            .status
            .success()
    );
    assert!(lab.ssh_root("lab-3", "k0s stop").status.success());
    kubectl(
        &lab,
        "lab-1",
        "delete validatingadmissionpolicy airlock-pod-security",
    );
    kubectl(&lab, "lab-1", "delete configmap site-retention-policy");

    let drift = status(&lab, &cluster);
    assert_eq!(drift.status.code(), Some(3), "{}", describe(&drift));
    let text = stdout(&drift);
    let lines: Vec<&str> = text.lines().collect();
    let reported = |host: &str, message: &str| {
        lines.iter().any(|line| {
            line.trim_start().starts_with(&format!("{host}: ")) && line.contains(message)
        })
    };
    assert!(reported(&changed, &format!("{archive} changed")), "{text}");
    assert!(reported(&stopped, "k0s is not running"), "{text}");
    assert!(
        reported(
            &controller,
            "policy ValidatingAdmissionPolicy airlock-pod-security is missing"
        ),
        "{text}"
    );
    assert!(
        reported(
            &controller,
            "policy ConfigMap site-retention-policy is missing"
        ),
        "{text}"
    );
    assert!(reported(&controller, "node lab-3 is NotReady"), "{text}");
    assert!(!text.contains("matches the blueprint"), "{text}");

    // A host that cannot be reached is not drift: status still reports the others, then fails.
    let stop = lab.run(&["stop", "lab-3"]);
    assert!(stop.status.success(), "{}", describe(&stop));
    let unreachable = status(&lab, &cluster);
    assert_eq!(
        unreachable.status.code(),
        Some(1),
        "{}",
        describe(&unreachable)
    );
    assert!(
        stdout(&unreachable).contains(&format!("{changed}: {archive} changed")),
        "{}",
        describe(&unreachable)
    );
    assert!(
        common::stderr(&unreachable).contains(&format!("1 host could not be checked: {stopped}")),
        "{}",
        describe(&unreachable)
    );
    assert!(
        stdout(&unreachable).contains(&format!("{stopped} (lab-3): unreachable")),
        "{}",
        describe(&unreachable)
    );
}

#[test]
fn status_without_blueprint_names_the_fix() {
    let Some(lab) = Lab::start("status_without_blueprint_names_the_fix", 1) else {
        return;
    };
    let cluster = lab.dir.join("cluster.yaml");
    let output = status(&lab, &cluster);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let text = common::stderr(&output);
    assert!(
        text.contains("no controller holds a readable blueprint"),
        "{text}"
    );
    assert!(
        text.contains("/var/lib/k0s/airlock/blueprint.yaml does not exist"),
        "{text}"
    );
    assert!(
        text.contains("help: airlock apply writes the blueprint"),
        "{text}"
    );

    // A controller that cannot be reached, beside a worker that can, is named with its
    // connection error: the host as a controller on a closed port, then as a worker.
    let text = std::fs::read_to_string(&cluster).unwrap();
    let (head, host) = text.split_once("    - role: controller\n").unwrap();
    let unreachable = host.replace("port: 22\n", "port: 1\n");
    let closed = lab.dir.join("closed-port.yaml");
    std::fs::write(
        &closed,
        format!("{head}    - role: controller\n{unreachable}    - role: worker\n{host}"),
    )
    .unwrap();
    let output = status(&lab, &closed);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let text = common::stderr(&output);
    assert!(
        text.contains("no controller could be reached to read the blueprint:"),
        "{text}"
    );
    let address = &lab.host("lab-1").address;
    assert!(
        text.contains(&format!("{address}:1: unreachable: ")),
        "{text}"
    );
    assert!(text.contains("refused"), "{text}");
}

#[test]
fn status_reports_changed_file_mode() {
    let Some(lab) = Lab::start_with(
        "status_reports_changed_file_mode",
        1,
        &["--roles", "single"],
    ) else {
        return;
    };
    let local = tempfile::tempdir().unwrap();
    let tool = local.path().join("tool.sh");
    std::fs::write(&tool, "#!/bin/sh\necho tool\n").unwrap();
    add_to_host(
        &lab,
        &format!(
            "      files:\n        - src: {}\n          dstDir: /etc/airlock-tool\n          \
             perm: \"0750\"\n          user: nobody\n",
            tool.display()
        ),
    );
    let bundle = SignedBundle::build("bundles/lab.yaml");
    let cluster = cluster_file(&lab, &bundle, "");
    run_ok(&mut apply_command(&lab, &cluster, &bundle.bundle));
    let clean = status(&lab, &cluster);
    assert_eq!(clean.status.code(), Some(0), "{}", describe(&clean));

    let changed = lab.ssh_root(
        "lab-1",
        "chmod 0666 /etc/airlock-tool/tool.sh && chown root /etc/airlock-tool/tool.sh",
    );
    assert!(changed.status.success(), "{}", describe(&changed));
    let drift = status(&lab, &cluster);
    assert_eq!(drift.status.code(), Some(3), "{}", describe(&drift));
    let address = &lab.host("lab-1").address;
    assert!(
        stdout(&drift).contains(&format!(
            "{address}: /etc/airlock-tool/tool.sh has mode 0666 and owner root, \
             the blueprint records mode 0750 and owner nobody"
        )),
        "{}",
        describe(&drift)
    );

    // A blueprint written before airlock recorded modes loads, and status checks digests only.
    let blueprint_path = "/var/lib/k0s/airlock/blueprint.yaml";
    let recorded = stdout(&lab.ssh_root("lab-1", &format!("cat {blueprint_path}")));
    let mut older = Blueprint::parse(&recorded).unwrap();
    assert!(
        older.nodes[0]
            .file_modes
            .contains_key("/etc/airlock-tool/tool.sh"),
        "{recorded}"
    );
    for node in &mut older.nodes {
        node.file_modes.clear();
    }
    let older = older.to_yaml().unwrap();
    assert!(!older.contains("fileModes"), "{older}");
    let host = lab.host("lab-1");
    let write = format!("cat > {blueprint_path}");
    let write = if host.sudo {
        format!("sudo -n sh -c '{write}'")
    } else {
        write
    };
    let mut ssh = lab
        .ssh_command("lab-1", &host.user, 5)
        .arg(write)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    ssh.stdin
        .take()
        .unwrap()
        .write_all(older.as_bytes())
        .unwrap();
    assert!(ssh.wait().unwrap().success());
    let unchecked = status(&lab, &cluster);
    assert_eq!(unchecked.status.code(), Some(0), "{}", describe(&unchecked));
}
