//! `airlock upgrade` on lab clusters: an end-to-end roll from k0s v1.35 to v1.36 with new stack
//! versions, every guard, a worker lost mid-upgrade, and a re-run that changes nothing.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::apply::{SignedBundle, airlock, apply_command, cluster_file, events, run_ok};
use common::{Lab, describe, stderr};

const OLD: &str = "v1.35.3+k0s.0";
const NEW: &str = "v1.36.3+k0s.0";

/// A lab with a cluster installed from the lab bundle, and the newer bundle signed by the same key.
struct Installed {
    lab: Lab,
    cluster: PathBuf,
    old: SignedBundle,
    new: SignedBundle,
}

fn installed(test: &str, count: usize, options: &[&str]) -> Option<Installed> {
    installed_with(test, count, options, "")
}

/// Installs the old bundle on a lab whose cluster file ends with `extra` under `spec`.
fn installed_with(test: &str, count: usize, options: &[&str], extra: &str) -> Option<Installed> {
    let lab = Lab::start_with(test, count, options)?;
    let mut bundles = SignedBundle::build_all(&["bundles/lab.yaml", "bundles/lab-next.yaml"]);
    let new = bundles.pop().unwrap();
    let old = bundles.pop().unwrap();
    let cluster = cluster_file(&lab, &old, extra);
    let output = apply_command(&lab, &cluster, &old.bundle).output().unwrap();
    assert!(
        output.status.success(),
        "the install failed:\n{}",
        describe(&output)
    );
    Some(Installed {
        lab,
        cluster,
        old,
        new,
    })
}

fn upgrade_command(installed: &Installed, bundle: &Path) -> Command {
    let mut command = airlock();
    command
        .arg("upgrade")
        .arg("-c")
        .arg(&installed.cluster)
        .arg("--bundle")
        .arg(bundle)
        .arg("--known-hosts")
        .arg(installed.lab.known_hosts())
        .arg("--out")
        .arg(installed.lab.dir.join("out"))
        .args([
            "--ready-timeout",
            "60s",
            "--stack-timeout",
            "60s",
            "--connect-timeout",
            "3s",
        ]);
    command
}

/// Upgrades to the new bundle, checks that every host runs it, and returns the output and the
/// double's events of the upgrade.
fn upgrade_to_new(installed: &Installed) -> (std::process::Output, Vec<serde_json::Value>) {
    let lab = &installed.lab;
    let before = events(lab).len();
    let output = run_ok(&mut upgrade_command(installed, &installed.new.bundle));
    assert!(all_run(lab, NEW), "{:?}", running_versions(lab));
    let log = events(lab).split_off(before);
    (output, log)
}

/// The k0s version each host runs, by host name.
fn running_versions(lab: &Lab) -> Vec<(String, String)> {
    lab.hosts
        .iter()
        .map(|host| {
            let output = lab.ssh_root(&host.name, "k0s status -o json");
            let status: serde_json::Value =
                serde_json::from_str(&common::stdout(&output)).unwrap_or_default();
            (
                host.name.clone(),
                status["Version"]
                    .as_str()
                    .unwrap_or("not running")
                    .to_string(),
            )
        })
        .collect()
}

fn all_run(lab: &Lab, version: &str) -> bool {
    running_versions(lab)
        .iter()
        .all(|(_, running)| running == version)
}

#[test]
fn cluster_upgrades_in_order_with_drains() {
    let Some(installed) = installed(
        "cluster_upgrades_in_order_with_drains",
        5,
        &["--roles", "controller,controller,controller,worker,worker"],
    ) else {
        return;
    };
    let lab = &installed.lab;
    let (output, log) = upgrade_to_new(&installed);
    // The blueprint is rewritten after every node, but its summary is printed once, at the end.
    let printed = format!("{}{}", common::stdout(&output), stderr(&output));
    assert_eq!(
        printed.matches("controls pass").count(),
        1,
        "{}",
        describe(&output)
    );

    // The double's event log: each node stops and starts before the next one stops, controllers
    // first, and each worker is drained before it stops.
    let stops: Vec<&str> = log
        .iter()
        .filter(|e| e["event"] == "stop")
        .map(|e| e["host"].as_str().unwrap())
        .collect();
    assert_eq!(stops, ["lab-1", "lab-2", "lab-3", "lab-4", "lab-5"]);
    let mut running_upgrade: Option<&str> = None;
    for event in &log {
        let host = event["host"].as_str().unwrap_or_default();
        match event["event"].as_str().unwrap_or_default() {
            "stop" => {
                assert_eq!(
                    running_upgrade, None,
                    "{host} stopped while another node was down"
                );
                running_upgrade = Some(host);
            }
            "start" => running_upgrade = None,
            _ => {}
        }
    }
    for worker in ["lab-4", "lab-5"] {
        assert!(
            printed.contains(&format!("cordoned and drained node {worker}")),
            "{printed}"
        );
        assert!(
            printed.contains(&format!("uncordoned node {worker}")),
            "{printed}"
        );
        let drained = log
            .iter()
            .position(|e| e["event"] == "drain" && e.to_string().contains(worker));
        let stopped = log
            .iter()
            .position(|e| e["event"] == "stop" && e["host"] == worker);
        assert!(
            drained.is_some() && drained < stopped,
            "{worker} must be drained before it stops: {log:?}"
        );
    }

    // The blueprint names the new bundle and the old archives are gone from the workers.
    let blueprint = fs::read_to_string(lab.dir.join("out/blueprint.yaml")).unwrap();
    assert!(blueprint.contains("version: 2"), "{blueprint}");
    let images = common::stdout(&lab.ssh_root("lab-4", "ls /var/lib/k0s/images"));
    assert!(!images.contains(OLD), "old k0s images remain: {images}");
    assert!(images.contains(NEW), "{images}");
}

#[test]
fn second_upgrade_changes_nothing() {
    let Some(installed) = installed("second_upgrade_changes_nothing", 2, &[]) else {
        return;
    };
    let first = upgrade_command(&installed, &installed.new.bundle)
        .output()
        .unwrap();
    assert!(first.status.success(), "{}", describe(&first));
    let before = events(&installed.lab).len();
    let second = upgrade_command(&installed, &installed.new.bundle)
        .output()
        .unwrap();
    assert!(second.status.success(), "{}", describe(&second));
    assert!(
        stderr(&second).contains("the cluster already runs this bundle"),
        "{}",
        stderr(&second)
    );
    let changes: Vec<_> = events(&installed.lab)[before..]
        .iter()
        .filter(|e| {
            ["stop", "start", "install", "drain", "cordon"]
                .contains(&e["event"].as_str().unwrap_or(""))
        })
        .cloned()
        .collect();
    assert!(changes.is_empty(), "{changes:?}");
}

#[test]
fn workers_go_in_batches_of_the_disruption_share() {
    let extra = "  options:\n    concurrency:\n      workerDisruptionPercent: 100\n";
    let Some(installed) = installed_with(
        "workers_go_in_batches_of_the_disruption_share",
        3,
        &["--roles", "controller,worker,worker"],
        extra,
    ) else {
        return;
    };
    let (output, log) = upgrade_to_new(&installed);
    assert!(
        stderr(&output)
            .contains("workers: 2 at a time, 1 batch (workerDisruptionPercent 100 % of 2 workers"),
        "{}",
        describe(&output)
    );

    // Both workers stop before either starts again: they are one batch.
    let position = |event: &str, host: &str| {
        log.iter()
            .position(|e| e["event"] == event && e["host"] == host)
            .unwrap_or_else(|| panic!("no {event} event for {host}: {log:?}"))
    };
    let last_stop = position("stop", "lab-2").max(position("stop", "lab-3"));
    let first_start = position("start", "lab-2").min(position("start", "lab-3"));
    assert!(last_stop < first_start, "{log:?}");
}

#[test]
fn dry_run_prints_the_plan_and_changes_nothing() {
    let Some(installed) = installed("dry_run_prints_the_plan_and_changes_nothing", 2, &[]) else {
        return;
    };
    // A manifest that both bundles carry unchanged, edited on a host: the plan names the drift.
    let manifest = "/var/lib/k0s/manifests/policy/pod-security.yaml";
    let edit = installed
        .lab
        .ssh_root("lab-1", &format!("echo '# local edit' >> {manifest}"));
    assert!(edit.status.success(), "{}", describe(&edit));
    let before = events(&installed.lab).len();
    let output = upgrade_command(&installed, &installed.new.bundle)
        .arg("--dry-run")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    let text = stderr(&output);
    assert!(
        text.contains(&format!("{manifest} differs from the blueprint (drift)")),
        "{text}"
    );
    assert!(text.contains(&format!("k0s {OLD} -> {NEW}")), "{text}");
    assert!(text.contains("cordon, drain, stop"), "{text}");
    assert!(
        text.contains("stack kubevirt: v1.9.0 -> v1.9.1 (upgrade)"),
        "{text}"
    );
    assert!(all_run(&installed.lab, OLD));
    let changes = events(&installed.lab)[before..]
        .iter()
        .filter(|e| e["event"] == "stop")
        .count();
    assert_eq!(changes, 0);
}

/// Runs an upgrade that must be refused before any host changes, and returns its output.
fn refused(installed: &Installed, command: &mut Command) -> String {
    let before = events(&installed.lab).len();
    let output = command.output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let stops = events(&installed.lab)[before..]
        .iter()
        .filter(|e| e["event"] == "stop")
        .count();
    assert_eq!(stops, 0, "a refused upgrade stopped k0s somewhere");
    assert!(all_run(&installed.lab, OLD));
    stderr(&output)
}

#[test]
fn guards_refuse_unsafe_upgrades() {
    let Some(installed) = installed("guards_refuse_unsafe_upgrades", 2, &[]) else {
        return;
    };
    let lab = &installed.lab;

    // Signed by a key the cluster file does not trust.
    let stranger = SignedBundle::build("bundles/lab-next.yaml");
    let text = refused(
        &installed,
        &mut upgrade_command(&installed, &stranger.bundle),
    );
    assert!(
        text.contains("phase \"Verify the bundle\" failed"),
        "{text}"
    );
    assert!(text.contains("trustedKeys"), "{text}");

    // Unsigned, even when the cluster file allows unsigned bundles for installs.
    let unsigned = lab.dir.join("unsigned");
    run_ok(
        airlock()
            .args(["bundle", "build"])
            .arg(common::repo_dir().join("bundles/lab-next.yaml"))
            .arg("-o")
            .arg(&unsigned),
    );
    let text = refused(&installed, &mut upgrade_command(&installed, &unsigned));
    assert!(
        text.contains("unsigned") || text.contains("no signature"),
        "{text}"
    );

    // Another bundle with the same version is not newer: the lab specification with one stack
    // version changed, its relative paths made absolute.
    let spec = fs::read_to_string(common::repo_dir().join("bundles/lab.yaml")).unwrap();
    let repo = format!("{}/", common::repo_dir().display());
    let other = spec
        .replace("../", &repo)
        .replace("version: 88.5.3", "version: 88.5.3-rebuilt");
    assert_ne!(other, spec.replace("../", &repo));
    let other_spec = lab.dir.join("same-version.yaml");
    fs::write(&other_spec, other).unwrap();
    let same = SignedBundle::build_with_key(other_spec.to_str().unwrap(), &installed.old.key());
    let text = refused(&installed, &mut upgrade_command(&installed, &same.bundle));
    assert!(
        text.contains("bundle version 1 is not newer than the installed version 1"),
        "{text}"
    );

    // A bundle whose k0s skips a minor version.
    let skipping = skipping_bundle(&installed);
    let text = refused(&installed, &mut upgrade_command(&installed, &skipping));
    assert!(text.contains("skips a Kubernetes minor version"), "{text}");
    assert!(
        text.contains("help: upgrade through a bundle with k0s v1.36.x first"),
        "{text}"
    );

    // A cluster that is not healthy: a worker's k0s is down.
    let stopped = lab.ssh_root("lab-2", "k0s stop");
    assert!(stopped.status.success(), "{}", describe(&stopped));
    let before = events(lab).len();
    let output = upgrade_command(&installed, &installed.new.bundle)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let text = stderr(&output);
    assert!(text.contains("the cluster is not healthy"), "{text}");
    assert!(text.contains("node lab-2"), "{text}");
    assert_eq!(
        events(lab)[before..]
            .iter()
            .filter(|e| e["event"] == "stop")
            .count(),
        0
    );
}

/// A bundle of version 3 whose k0s is v1.37.0, which skips v1.36.
fn skipping_bundle(installed: &Installed) -> PathBuf {
    let dir = installed.lab.dir.join("skip");
    fs::create_dir_all(&dir).unwrap();
    run_ok(
        Command::new(common::repo_dir().join("tests/k0s/new-version"))
            .arg("v1.37.0+k0s.0")
            .arg(&dir),
    );
    let spec = dir.join("skip.yaml");
    fs::write(
        &spec,
        "name: lab\nversion: 3\nk0s:\n  version: v1.37.0+k0s.0\nartifacts:\n  - name: k0s\n    kind: k0s-binary\n    source: { file: k0s-v1.37.0+k0s.0 }\n",
    )
    .unwrap();
    let bundle = dir.join("bundle");
    let key = installed.old.key();
    run_ok(
        airlock()
            .args(["bundle", "build"])
            .arg(&spec)
            .arg("-o")
            .arg(&bundle)
            .arg("--sign")
            .arg(key.with_extension("key")),
    );
    bundle
}

#[test]
fn downgrade_is_refused_then_allowed() {
    let Some(lab) = Lab::start("downgrade_is_refused_then_allowed", 2) else {
        return;
    };
    let mut bundles = SignedBundle::build_all(&["bundles/lab.yaml", "bundles/lab-next.yaml"]);
    let new = bundles.pop().unwrap();
    let old = bundles.pop().unwrap();
    let cluster = cluster_file(&lab, &new, "");
    let output = apply_command(&lab, &cluster, &new.bundle).output().unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    let installed = Installed {
        lab,
        cluster,
        old,
        new,
    };

    let text = refused_from(
        &installed,
        NEW,
        &mut upgrade_command(&installed, &installed.old.bundle),
    );
    assert!(
        text.contains("bundle version 1 is not newer than the installed version 2"),
        "{text}"
    );
    assert!(text.contains("--allow-downgrade"), "{text}");

    let allowed = upgrade_command(&installed, &installed.old.bundle)
        .arg("--allow-downgrade")
        .output()
        .unwrap();
    assert!(allowed.status.success(), "{}", describe(&allowed));
    assert!(
        all_run(&installed.lab, OLD),
        "{:?}",
        running_versions(&installed.lab)
    );
    assert!(
        stderr(&allowed).contains("stack kubevirt: v1.9.1 -> v1.9.0 (downgrade)"),
        "{}",
        describe(&allowed)
    );
}

fn refused_from(installed: &Installed, version: &str, command: &mut Command) -> String {
    let output = command.output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(all_run(&installed.lab, version));
    stderr(&output)
}

#[test]
fn host_without_disk_for_the_new_bundle_is_refused() {
    let Some(installed) = installed(
        "host_without_disk_for_the_new_bundle_is_refused",
        2,
        &["--disk-size", "80M"],
    ) else {
        return;
    };
    // Fill lab-2's data disk so that the new artifacts no longer fit.
    let filled = installed
        .lab
        .ssh_root("lab-2", "head -c 30M /dev/zero > /var/lib/filler");
    assert!(filled.status.success(), "{}", describe(&filled));
    let text = refused(
        &installed,
        &mut upgrade_command(&installed, &installed.new.bundle),
    );
    assert!(text.contains("phase \"Preflight checks\" failed"), "{text}");
    assert!(text.contains("free space or grow the disk"), "{text}");
}

#[test]
fn worker_lost_mid_upgrade_is_finished_by_a_rerun() {
    let Some(installed) = installed(
        "worker_lost_mid_upgrade_is_finished_by_a_rerun",
        3,
        &["--roles", "controller,worker,worker"],
    ) else {
        return;
    };
    let lab = &installed.lab;
    let first_worker = lab.host("lab-2").address.clone();
    let mut child = upgrade_command(&installed, &installed.new.bundle)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let reader = BufReader::new(child.stderr.take().unwrap());
    let mut seen = Vec::new();
    for line in reader.lines() {
        let line = line.unwrap();
        let hit = line.starts_with(&format!("{first_worker}: replacing k0s"));
        seen.push(line);
        if hit {
            // The host dies: its sshd and every connection to it end.
            assert!(lab.run(&["stop", "lab-2"]).status.success());
        }
    }
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the upgrade went on without lab-2: {seen:#?}"
    );
    let text = seen.join("\n");
    assert!(text.contains("the upgrade of lab-2 failed"), "{text}");
    assert!(
        text.contains("run the same command again to continue"),
        "{text}"
    );
    // The other worker was not touched.
    assert_eq!(
        running_versions(lab)[2],
        ("lab-3".to_string(), OLD.to_string())
    );

    assert!(lab.run(&["start", "lab-2"]).status.success());
    let resumed = upgrade_command(&installed, &installed.new.bundle)
        .output()
        .unwrap();
    assert!(resumed.status.success(), "{}", describe(&resumed));
    assert!(all_run(lab, NEW), "{:?}", running_versions(lab));
    // The node that was already drained is not drained a second time.
    let drains = events(lab)
        .iter()
        .filter(|e| e["event"] == "drain" && e.to_string().contains("lab-2"))
        .count();
    assert_eq!(drains, 1);
}
