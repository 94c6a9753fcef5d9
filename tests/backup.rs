//! `airlock backup` and `airlock apply --restore-from` on lab hosts with the k0s double: the
//! cluster's nodes and objects come back on reset hosts, and a tampered archive is rejected.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::apply::{SignedBundle, airlock, apply_command, cluster_file, kubectl};
use common::{Lab, describe, stderr};

fn backup_command(lab: &Lab, cluster: &Path, out: &Path) -> Command {
    let mut command = airlock();
    command
        .arg("backup")
        .arg("-c")
        .arg(cluster)
        .arg("-o")
        .arg(out)
        .arg("--known-hosts")
        .arg(lab.known_hosts())
        .args(["--connect-timeout", "3s"]);
    command
}

/// Node names and the ConfigMaps of namespace `default`, as the double's API server lists them.
fn cluster_state(lab: &Lab) -> (String, String) {
    let nodes = kubectl(lab, "lab-1", "get nodes -o name");
    let objects = kubectl(lab, "lab-1", "get configmaps -n default -o name");
    (nodes, objects)
}

fn archive_in(dir: &Path) -> PathBuf {
    fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.to_string_lossy().ends_with(".tar.gz"))
        .unwrap_or_else(|| panic!("no archive in {}", dir.display()))
}

#[test]
fn backup_reset_restore_returns_state() {
    let Some(lab) = Lab::start("backup_reset_restore_returns_state", 2) else {
        return;
    };
    let bundle = SignedBundle::build("bundles/lab.yaml");
    let cluster = cluster_file(&lab, &bundle, "");
    let output = apply_command(&lab, &cluster, &bundle.bundle)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    let applied = lab.ssh_root("lab-1", "k0s kubectl apply -f - <<'EOF'\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: before-backup\n  namespace: default\ndata:\n  kept: \"yes\"\nEOF");
    assert!(applied.status.success(), "{}", describe(&applied));
    let state = cluster_state(&lab);
    assert!(state.1.contains("before-backup"), "{state:?}");

    // The backup needs only the controllers: a hung worker does not stop it.
    let saved = lab.dir.join("backup");
    let freeze = lab.run(&["freeze", "lab-2"]);
    assert!(freeze.status.success(), "{}", describe(&freeze));
    let output = backup_command(&lab, &cluster, &saved).output().unwrap();
    let thaw = lab.run(&["thaw", "lab-2"]);
    assert!(thaw.status.success(), "{}", describe(&thaw));
    assert!(output.status.success(), "{}", describe(&output));
    let archive = archive_in(&saved);
    // The .sha256 file is in sha256sum's format, and the blueprint lies beside the archive.
    let check = Command::new("sha256sum")
        .arg("-c")
        .arg(format!(
            "{}.sha256",
            archive.file_name().unwrap().to_string_lossy()
        ))
        .current_dir(&saved)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", describe(&check));
    assert!(saved.join("blueprint.yaml").exists());
    let log = fs::read_to_string(saved.join("audit.log")).unwrap();
    assert!(log.contains("take backup k0s_backup_"), "{log}");

    let reset = airlock()
        .arg("reset")
        .arg("-c")
        .arg(&cluster)
        .arg("--known-hosts")
        .arg(lab.known_hosts())
        .arg("--out")
        .arg(lab.dir.join("out"))
        .arg("--force")
        .output()
        .unwrap();
    assert!(reset.status.success(), "{}", describe(&reset));
    assert!(
        !lab.ssh_root("lab-1", "k0s kubectl get nodes")
            .status
            .success()
    );

    // A changed archive is rejected before any host is touched.
    let tampered = lab.dir.join("tampered.tar.gz");
    let mut bytes = fs::read(&archive).unwrap();
    bytes.push(0);
    fs::write(&tampered, bytes).unwrap();
    fs::copy(
        format!("{}.sha256", archive.display()),
        format!("{}.sha256", tampered.display()),
    )
    .unwrap();
    let refused = apply_command(&lab, &cluster, &bundle.bundle)
        .arg("--restore-from")
        .arg(&tampered)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2), "{}", describe(&refused));
    assert!(
        stderr(&refused).contains("sha256"),
        "{}",
        describe(&refused)
    );
    assert!(
        !lab.ssh_root("lab-1", "test -e /usr/local/bin/k0s")
            .status
            .success()
    );

    let restored = apply_command(&lab, &cluster, &bundle.bundle)
        .arg("--restore-from")
        .arg(&archive)
        .output()
        .unwrap();
    assert!(restored.status.success(), "{}", describe(&restored));
    assert_eq!(cluster_state(&lab), state);
    let events = common::apply::events(&lab);
    assert!(
        events.iter().any(|event| event["event"] == "restore"),
        "no restore event"
    );
}

#[test]
fn backup_without_cluster_fails() {
    let Some(lab) = Lab::start("backup_without_cluster_fails", 1) else {
        return;
    };
    let bundle = SignedBundle::build("bundles/lab.yaml");
    let cluster = cluster_file(&lab, &bundle, "");
    let saved = lab.dir.join("backup");
    let output = backup_command(&lab, &cluster, &saved).output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let message = stderr(&output);
    assert!(
        message.contains("k0s does not run on the leader"),
        "{message}"
    );
    assert!(message.contains("airlock apply"), "{message}");
    let archives = fs::read_dir(&saved)
        .map(|entries| {
            entries
                .filter(|entry| {
                    entry
                        .as_ref()
                        .unwrap()
                        .path()
                        .to_string_lossy()
                        .ends_with(".tar.gz")
                })
                .count()
        })
        .unwrap_or(0);
    assert_eq!(archives, 0);
}
