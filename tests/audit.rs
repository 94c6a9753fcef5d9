//! `airlock audit verify` on logs written through the library: every edited, removed or
//! reordered line is named; the head record and its signature. And on lab hosts: a run whose
//! --out lacks the log continues the controllers' chain, and a changed controller copy stops
//! apply.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use airlock::blueprint::SigningKey;
use airlock::blueprint::audit::{AuditLog, Draft, FILE_NAME, HEAD_FILE_NAME, RunIdentity};
use airlock::bundle::SecretKey;
use airlock::digest::Digest;
use common::apply::{
    SignedBundle, airlock, apply_command, apply_command_into, cluster_file, run_ok,
};
use common::{Lab, describe, stderr};

const ENTRIES: usize = 6;

/// Writes a log of six entries and its head record into a new folder.
fn written_log() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let identity = RunIdentity {
        operator: "ops@office".into(),
        airlock: "0.1.0".into(),
        command: "apply".into(),
    };
    let mut log = AuditLog::open(&path, Digest::of_bytes(b"bundle.yaml")).unwrap();
    for index in 0..ENTRIES {
        log.append(
            &identity,
            Draft {
                time: "2026-12-04T20:00:00Z".into(),
                phase: "Upload artifacts".into(),
                host: format!("127.0.1.{}", 11 + index % 3),
                action: format!("place file-{index} at /var/lib/k0s/images/file-{index}"),
                digest: Some(Digest::of_bytes(&[index as u8])),
                result: "ok".into(),
            },
        )
        .unwrap();
    }
    fs::write(dir.path().join(HEAD_FILE_NAME), log.head().to_text()).unwrap();
    (dir, path)
}

fn verify(path: &Path) -> Output {
    airlock()
        .args(["audit", "verify"])
        .arg(path)
        .output()
        .unwrap()
}

fn verify_with_key(path: &Path, key: &Path) -> Output {
    airlock()
        .args(["audit", "verify"])
        .arg(path)
        .arg("--key")
        .arg(key)
        .output()
        .unwrap()
}

fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    fs::write(
        path,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
}

/// Asserts that `audit verify` fails with exit status 1 and names `line` as the broken one.
fn assert_broken_at(output: &Output, line: usize, what: &str) {
    assert_eq!(
        output.status.code(),
        Some(1),
        "{what}: {}",
        describe(output)
    );
    let text = stderr(output);
    assert!(
        text.contains(&format!("line {line} ")),
        "{what}: line {line} is not named:\n{text}"
    );
    for other in (1..=ENTRIES).filter(|&other| other != line) {
        assert!(
            !text.contains(&format!("caused by: line {other} ")),
            "{what}: line {other} is named first:\n{text}"
        );
    }
}

#[test]
fn intact_log_verifies() {
    let (_dir, path) = written_log();
    let output = verify(&path);
    assert!(output.status.success(), "{}", describe(&output));
    let text = common::stdout(&output);
    assert!(text.contains(": 6 entries verified"), "{text}");
    assert!(text.contains("the last line matches"), "{text}");
}

#[test]
fn edited_line_is_named() {
    for line in 1..=ENTRIES {
        let (_dir, path) = written_log();
        let mut all = lines(&path);
        all[line - 1] = all[line - 1].replace("place file", "place other");
        write_lines(&path, &all);
        assert_broken_at(&verify(&path), line, &format!("edit of line {line}"));
    }
}

#[test]
fn deleted_line_is_named() {
    for line in 1..=ENTRIES {
        let (_dir, path) = written_log();
        let mut all = lines(&path);
        all.remove(line - 1);
        write_lines(&path, &all);
        assert_broken_at(&verify(&path), line, &format!("deletion of line {line}"));
    }
}

#[test]
fn reordered_lines_are_named() {
    for line in 1..ENTRIES {
        let (_dir, path) = written_log();
        let mut all = lines(&path);
        all.swap(line - 1, line);
        write_lines(&path, &all);
        assert_broken_at(
            &verify(&path),
            line,
            &format!("swap of lines {line} and {}", line + 1),
        );
    }
}

#[test]
fn missing_log_is_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let output = verify(&dir.path().join(FILE_NAME));
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(
        stderr(&output).contains("does not exist"),
        "{}",
        describe(&output)
    );
}

#[test]
fn signed_head_is_checked_with_the_key() {
    let (dir, path) = written_log();
    let prefix = dir.path().join("operator");
    run_ok(
        airlock()
            .args(["key", "generate", "--unencrypted", "-o"])
            .arg(&prefix),
    );
    let key = SigningKey::new(SecretKey::load(&prefix.with_extension("key"), None).unwrap());
    let head_path = dir.path().join(HEAD_FILE_NAME);
    let head =
        airlock::blueprint::audit::Head::parse(&fs::read_to_string(&head_path).unwrap()).unwrap();
    let signature = key.sign_head(&head, 1_796_400_000).unwrap();
    fs::write(dir.path().join("audit.log.head.minisig"), signature).unwrap();

    let public = prefix.with_extension("pub");
    let signed = verify_with_key(&path, &public);
    assert!(signed.status.success(), "{}", describe(&signed));
    let minisign = std::process::Command::new("minisign")
        .arg("-Vm")
        .arg(&head_path)
        .arg("-p")
        .arg(&public)
        .output()
        .unwrap();
    assert!(minisign.status.success(), "{}", describe(&minisign));

    // A head record rewritten to match an edited last line no longer carries a valid signature.
    let mut all = lines(&path);
    all[ENTRIES - 1] = all[ENTRIES - 1].replace("place file", "place other");
    write_lines(&path, &all);
    let forged = airlock::blueprint::audit::Head {
        lines: ENTRIES as u64,
        digest: Digest::of_bytes(all[ENTRIES - 1].as_bytes()),
    };
    fs::write(&head_path, forged.to_text()).unwrap();
    assert!(
        verify(&path).status.success(),
        "the chain alone cannot see this edit"
    );
    let output = verify_with_key(&path, &public);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        stderr(&output).contains("does not verify"),
        "{}",
        describe(&output)
    );
}

/// Runs `airlock apply` with `out` as its output folder.
fn apply_into(lab: &Lab, cluster: &Path, bundle: &Path, out: &Path) -> Output {
    apply_command_into(cluster, bundle, &lab.known_hosts(), out)
        .args(["--stack-timeout", "60s"])
        .output()
        .unwrap()
}

#[test]
fn apply_continues_the_chain_of_the_controllers() {
    let Some(lab) = Lab::start("apply_continues_the_chain_of_the_controllers", 2) else {
        return;
    };
    let bundle = SignedBundle::build("bundles/lab.yaml");
    let cluster = cluster_file(&lab, &bundle, "");
    let first = apply_command(&lab, &cluster, &bundle.bundle)
        .args(["--stack-timeout", "60s"])
        .output()
        .unwrap();
    assert!(first.status.success(), "{}", describe(&first));
    let first_log = lines(&lab.dir.join("out").join(FILE_NAME));
    assert!(first_log.len() >= 4, "{first_log:?}");

    // Another machine: an empty --out. The log is fetched from the controller and continued.
    let elsewhere = lab.dir.join("elsewhere");
    let second = apply_into(&lab, &cluster, &bundle.bundle, &elsewhere);
    assert!(second.status.success(), "{}", describe(&second));
    assert!(
        stderr(&second).contains("continued from the copy on"),
        "{}",
        describe(&second)
    );
    let second_log = lines(&elsewhere.join(FILE_NAME));
    assert!(
        second_log.len() > first_log.len(),
        "the second run appended nothing"
    );
    assert_eq!(second_log[..first_log.len()], first_log[..]);
    let output = verify(&elsewhere.join(FILE_NAME));
    assert!(output.status.success(), "{}", describe(&output));

    // A changed line in the controller's copy stops the next run before any host is changed.
    let controller_log = "/var/lib/k0s/airlock/audit.log";
    let edit = lab.ssh_root(
        "lab-1",
        &format!("sed -i '2s/place /plant /' {controller_log}"),
    );
    assert!(edit.status.success(), "{}", describe(&edit));
    let third = apply_into(&lab, &cluster, &bundle.bundle, &elsewhere);
    assert_eq!(third.status.code(), Some(1), "{}", describe(&third));
    let text = stderr(&third);
    assert!(
        text.contains("phase \"Open the audit log\" failed"),
        "{text}"
    );
    assert!(text.contains(&lab.host("lab-1").address), "{text}");
    assert!(text.contains("differ from the first"), "{text}");
}

#[test]
fn failed_phase_is_recorded_per_host() {
    let Some(lab) = Lab::start_with(
        "failed_phase_is_recorded_per_host",
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

    let out = lab.dir.join("out");
    let entries: Vec<serde_json::Value> = lines(&out.join(FILE_NAME))
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let failed: Vec<&serde_json::Value> = entries
        .iter()
        .filter(|entry| entry["action"] == "phase failed")
        .collect();
    let hosts: Vec<&str> = failed.iter().map(|e| e["host"].as_str().unwrap()).collect();
    assert_eq!(
        hosts,
        [
            lab.host("lab-1").address.as_str(),
            lab.host("lab-2").address.as_str()
        ]
    );
    for entry in &failed {
        assert_eq!(entry["phase"], "Preflight checks");
        let result = entry["result"].as_str().unwrap();
        assert!(
            result.starts_with("failed: ") && result.contains("the file system at /var/lib needs"),
            "{result}"
        );
        assert!(!result.contains('\n'), "{result}");
    }

    let verified = verify(&out.join(FILE_NAME));
    assert!(verified.status.success(), "{}", describe(&verified));
    let remote = lab.ssh_root("lab-1", "cat /var/lib/k0s/airlock/audit.log");
    assert_eq!(remote.stdout, fs::read(out.join(FILE_NAME)).unwrap());
}

#[test]
fn upgrade_appends_to_the_audit_log() {
    let Some(lab) = Lab::start("upgrade_appends_to_the_audit_log", 2) else {
        return;
    };
    let mut bundles = SignedBundle::build_all(&["bundles/lab.yaml", "bundles/lab-next.yaml"]);
    let next = bundles.pop().unwrap();
    let first = bundles.pop().unwrap();
    let cluster = cluster_file(&lab, &first, "");
    let installed = apply_command(&lab, &cluster, &first.bundle)
        .output()
        .unwrap();
    assert!(installed.status.success(), "{}", describe(&installed));
    let out = lab.dir.join("out");
    let before = lines(&out.join(FILE_NAME));

    let upgraded = airlock()
        .arg("upgrade")
        .arg("-c")
        .arg(&cluster)
        .arg("--bundle")
        .arg(&next.bundle)
        .arg("--known-hosts")
        .arg(lab.known_hosts())
        .arg("--out")
        .arg(&out)
        .args(["--ready-timeout", "60s", "--stack-timeout", "60s"])
        .output()
        .unwrap();
    assert!(upgraded.status.success(), "{}", describe(&upgraded));

    let after = lines(&out.join(FILE_NAME));
    assert_eq!(
        after[..before.len()],
        before[..],
        "upgrade rewrote earlier entries"
    );
    let upgrades: Vec<serde_json::Value> = after[before.len()..]
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .filter(|entry: &serde_json::Value| entry["command"] == "upgrade")
        .collect();
    for node in ["lab-1", "lab-2"] {
        assert!(
            upgrades.iter().any(|entry| entry["action"]
                .as_str()
                .unwrap()
                .starts_with(&format!("upgrade k0s on {node} "))),
            "no upgrade entry for {node}: {upgrades:?}"
        );
    }
    let output = verify(&out.join(FILE_NAME));
    assert!(output.status.success(), "{}", describe(&output));

    let blueprint: serde_json::Value =
        yaml_serde::from_str(&fs::read_to_string(out.join("blueprint.yaml")).unwrap()).unwrap();
    assert_eq!(blueprint["auditLog"]["entries"], after.len());
    for node in blueprint["nodes"].as_array().unwrap() {
        assert_eq!(node["k0sVersion"], "v1.36.3+k0s.0", "{}", node["name"]);
    }
}
