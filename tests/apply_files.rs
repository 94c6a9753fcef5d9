//! `airlock apply` with a host's `files[]` and `hooks`, on a one-host lab.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use airlock::digest::Digest;
use common::apply::{SignedBundle, add_to_host, apply_command, cluster_file, run_ok};
use common::{Lab, describe, stderr, stdout};

#[test]
fn files_and_hooks_reach_the_host() {
    let Some(lab) = Lab::start_with("files_and_hooks_reach_the_host", 1, &["--roles", "single"])
    else {
        return;
    };
    let local = tempfile::tempdir().unwrap();
    let tool = local.path().join("tool.sh");
    fs::write(&tool, "#!/bin/sh\necho tool\n").unwrap();
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
    let config_dir = local.path().join("conf.d");
    fs::create_dir(&config_dir).unwrap();
    fs::write(config_dir.join("a.conf"), "a=1\n").unwrap();
    fs::write(config_dir.join("b.conf"), "b=2\n").unwrap();

    let log = "/var/lib/airlock-hooks.log";
    add_to_host(
        &lab,
        &format!(
            "      files:
        - name: tool
          src: {tool}
          dstDir: /etc/airlock-tool/bin
          perm: \"0750\"
          dirPerm: \"0710\"
          user: nobody
          group: daemon
        - src: {config_dir}
          dstDir: /etc/airlock-tool/conf.d
        - src: {glob}
          dstDir: /etc/airlock-tool/glob
        - name: motd
          data: welcome
          dst: /etc/airlock-tool/motd
      hooks:
        connect: {{ after: [\"echo connect.after >> {log}\"] }}
        apply: {{ before: [\"echo apply.before >> {log}\"], after: [\"echo apply.after >> {log}\"] }}
        install:
          before: [\"echo install.before >> {log}\", \"test ! -e /etc/airlock-tool/never\"]
          after: [\"echo install.after >> {log}\"]
",
            tool = tool.display(),
            config_dir = config_dir.display(),
            glob = config_dir.join("*.conf").display(),
        ),
    );
    let bundle = SignedBundle::build("bundles/lab.yaml");
    let cluster = cluster_file(&lab, &bundle, "");
    let output = apply_command(&lab, &cluster, &bundle.bundle)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));

    // Progress names where each file goes on the host, not the local source path.
    let text = stderr(&output);
    let uploads: Vec<&str> = text
        .lines()
        .filter(|line| line.contains(": uploading "))
        .collect();
    for destination in [
        "/etc/airlock-tool/bin/tool.sh",
        "/etc/airlock-tool/conf.d/a.conf",
        "/etc/airlock-tool/motd",
    ] {
        let expected = format!(": uploading {destination}");
        assert!(
            uploads.iter().any(|line| line.ends_with(&expected)),
            "{destination} missing from the upload lines: {uploads:?}"
        );
    }
    let local_dir = local.path().display().to_string();
    assert!(
        !uploads.iter().any(|line| line.contains(&local_dir)),
        "{uploads:?}"
    );

    let stat = lab.ssh_root(
        "lab-1",
        "stat -c '%n %a %U %G' /etc/airlock-tool/bin /etc/airlock-tool/bin/tool.sh \
         /etc/airlock-tool/conf.d/b.conf /etc/airlock-tool/glob/a.conf /etc/airlock-tool/motd",
    );
    assert!(stat.status.success(), "{}", describe(&stat));
    let lines: Vec<String> = stdout(&stat).lines().map(str::to_string).collect();
    assert_eq!(
        lines,
        [
            "/etc/airlock-tool/bin 710 root root",
            "/etc/airlock-tool/bin/tool.sh 750 nobody daemon",
            "/etc/airlock-tool/conf.d/b.conf 644 root root",
            "/etc/airlock-tool/glob/a.conf 644 root root",
            "/etc/airlock-tool/motd 644 root root",
        ]
    );
    let digest = lab.ssh_root("lab-1", "sha256sum /etc/airlock-tool/bin/tool.sh");
    let expected = Digest::of_bytes(&fs::read(&tool).unwrap()).hex();
    assert!(
        stdout(&digest).starts_with(&expected),
        "{}",
        describe(&digest)
    );

    let hooks = lab.ssh_root("lab-1", &format!("cat {log}"));
    assert_eq!(
        stdout(&hooks).lines().collect::<Vec<_>>(),
        [
            "connect.after",
            "apply.before",
            "install.before",
            "install.after",
            "apply.after"
        ],
        "{}",
        describe(&hooks)
    );

    let audit = lab.ssh_root("lab-1", "cat /var/lib/k0s/airlock/audit.log");
    let audit = stdout(&audit);
    for action in [
        "run connect.after hook",
        "run install.before hook",
        "run install.after hook",
        "at /etc/airlock-tool/bin/tool.sh\"",
    ] {
        assert!(
            audit.contains(action),
            "{action} missing from the audit log:\n{audit}"
        );
    }

    // The blueprint lists the uploaded file with its digest, like every artifact.
    let blueprint = lab.ssh_root("lab-1", "cat /var/lib/k0s/airlock/blueprint.yaml");
    let text = stdout(&blueprint);
    assert!(text.contains("/etc/airlock-tool/bin/tool.sh"), "{text}");
    assert!(text.contains(&expected), "{text}");
    // Each uploaded file is traced to its files[] entry, so no file lacks an origin.
    assert!(text.contains("of the cluster file"), "{text}");
    assert!(!text.contains("has no recorded origin"), "{text}");
}

#[test]
fn failing_hook_stops_apply() {
    let Some(lab) = Lab::start_with("failing_hook_stops_apply", 1, &["--roles", "single"]) else {
        return;
    };
    add_to_host(
        &lab,
        "      hooks:\n        connect: { after: [\"true\", \"exit 3\"] }\n",
    );
    let bundle = SignedBundle::build("bundles/lab.yaml");
    let cluster = cluster_file(&lab, &bundle, "");
    let output = apply_command(&lab, &cluster, &bundle.bundle)
        .output()
        .unwrap();
    assert!(!output.status.success(), "{}", describe(&output));
    let text = stderr(&output);
    let address = &lab.host("lab-1").address;
    assert!(
        text.contains(&format!(
            "failed to execute hook \"exit 3\" for action \"connect\" stage \"after\" on host {address}"
        )),
        "{text}"
    );
    assert_no_k0s(&lab, "k0s was installed after the hook failed");
}

/// Checks that the lab's only host has no k0s binary in place.
fn assert_no_k0s(lab: &Lab, message: &str) {
    let k0s = lab.ssh_root("lab-1", "test -e /usr/local/bin/k0s");
    assert!(!k0s.status.success(), "{message}");
}

#[test]
fn bundle_file_changed_after_verification_is_named() {
    let Some(lab) = Lab::start_with(
        "bundle_file_changed_after_verification_is_named",
        1,
        &["--roles", "single"],
    ) else {
        return;
    };
    // The hook pauses the apply after the bundle was verified and before anything is uploaded,
    // until the test has changed the bundle's k0s file.
    add_to_host(
        &lab,
        "      hooks:\n        connect: { after: [\"touch /run/held; while [ ! -e /run/go ]; do sleep 0.1; done\"] }\n",
    );
    let bundle = SignedBundle::build("bundles/lab.yaml");
    let cluster = cluster_file(&lab, &bundle, "");
    let child = apply_command(&lab, &cluster, &bundle.bundle)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !lab.ssh_root("lab-1", "test -e /run/held").status.success() {
        assert!(Instant::now() < deadline, "the hook never ran");
        std::thread::sleep(Duration::from_millis(100));
    }

    let manifest = fs::read_to_string(bundle.bundle.join("bundle.yaml")).unwrap();
    let k0s = manifest
        .split("- name: k0s\n")
        .nth(1)
        .and_then(|entry| entry.split("digest: sha256:").nth(1))
        .map(|rest| rest[..64].to_string())
        .expect("bundle.yaml lists the k0s artifact");
    let blob = bundle.bundle.join("blobs/sha256").join(&k0s);
    let mut bytes = fs::read(&blob).unwrap();
    bytes[10] ^= 0xff;
    fs::write(&blob, bytes).unwrap();
    assert!(lab.ssh_root("lab-1", "touch /run/go").status.success());

    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success(), "{}", describe(&output));
    let text = stderr(&output);
    assert!(text.contains("changed since verification"), "{text}");
    assert!(text.contains(&k0s), "{text}");
    assert_no_k0s(&lab, "the changed k0s file was installed");
}

#[test]
fn free_space_is_checked_where_each_file_goes() {
    let Some(lab) = Lab::start_with(
        "free_space_is_checked_where_each_file_goes",
        1,
        &["--roles", "single", "--disk-size", "80M"],
    ) else {
        return;
    };
    let local = tempfile::tempdir().unwrap();
    let big = local.path().join("big.bin");
    fs::write(&big, vec![5u8; 30 << 20]).unwrap();
    // /var/lib is the lab's small disk; the host's /tmp has room.
    add_to_host(
        &lab,
        &format!(
            "      files:\n        - src: {}\n          dstDir: /var/lib/bigdata\n",
            big.display()
        ),
    );
    let bundle = SignedBundle::build("bundles/lab.yaml");
    let cluster = cluster_file(&lab, &bundle, "");
    let output = apply_command(&lab, &cluster, &bundle.bundle)
        .output()
        .unwrap();
    assert!(!output.status.success(), "{}", describe(&output));
    let text = stderr(&output);
    assert!(text.contains("phase \"Preflight checks\" failed"), "{text}");
    assert!(text.contains("the file system at /var/lib needs"), "{text}");
    assert!(text.contains("for k0s's own data"), "{text}");

    let path = lab.dir.join("cluster.yaml");
    let moved = fs::read_to_string(&path)
        .unwrap()
        .replace("dstDir: /var/lib/bigdata", "dstDir: /tmp/bigdata");
    fs::write(&path, moved).unwrap();
    let cluster = cluster_file(&lab, &bundle, "");
    let output = apply_command(&lab, &cluster, &bundle.bundle)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    let placed = lab.ssh_root("lab-1", "stat -c %s /tmp/bigdata/big.bin");
    assert_eq!(stdout(&placed).trim(), (30 << 20).to_string());
}

#[test]
fn changed_mode_restored_without_upload() {
    let Some(lab) = Lab::start_with(
        "changed_mode_restored_without_upload",
        1,
        &["--roles", "single"],
    ) else {
        return;
    };
    let local = tempfile::tempdir().unwrap();
    let tool = local.path().join("tool.sh");
    fs::write(&tool, "#!/bin/sh\necho tool\n").unwrap();
    let motd = local.path().join("motd");
    fs::write(&motd, "welcome\n").unwrap();
    fs::set_permissions(&motd, fs::Permissions::from_mode(0o644)).unwrap();
    add_to_host(
        &lab,
        &format!(
            "      files:
        - src: {tool}
          dstDir: /etc/airlock-tool
          perm: \"0750\"
          user: nobody
          group: daemon
        - src: {motd}
          dstDir: /etc/airlock-tool
",
            tool = tool.display(),
            motd = motd.display(),
        ),
    );
    let bundle = SignedBundle::build("bundles/lab.yaml");
    let cluster = cluster_file(&lab, &bundle, "");
    run_ok(&mut apply_command(&lab, &cluster, &bundle.bundle));

    // The inode shows whether the next apply wrote the files again: an upload renames a new
    // file over the old one.
    let stat = "stat -c '%n %a %U %G %i' /etc/airlock-tool/tool.sh /etc/airlock-tool/motd";
    let placed = stdout(&lab.ssh_root("lab-1", stat));
    let inodes = |text: &str| -> Vec<String> {
        text.lines()
            .map(|line| line.rsplit(' ').next().unwrap().to_string())
            .collect()
    };
    let changed = lab.ssh_root(
        "lab-1",
        "chmod 0777 /etc/airlock-tool/tool.sh && chown root:root /etc/airlock-tool/tool.sh && \
         chown nobody /etc/airlock-tool/motd && chmod 0600 /etc/airlock-tool/motd",
    );
    assert!(changed.status.success(), "{}", describe(&changed));

    let dry_run = run_ok(apply_command(&lab, &cluster, &bundle.bundle).arg("--dry-run"));
    let address = &lab.host("lab-1").address;
    assert!(
        stderr(&dry_run).contains(&format!(
            "{address}: would restore mode 0750 and owner nobody:daemon of \
             /etc/airlock-tool/tool.sh (found mode 0777 and owner root:root)"
        )),
        "{}",
        describe(&dry_run)
    );
    let unchanged = lab.ssh_root("lab-1", "stat -c %a /etc/airlock-tool/tool.sh");
    assert_eq!(
        stdout(&unchanged).trim(),
        "777",
        "the dry run changed the mode"
    );

    let second = run_ok(&mut apply_command(&lab, &cluster, &bundle.bundle));
    // airlock prints its progress on standard error.
    let text = stderr(&second);
    assert!(
        text.contains(&format!(
            "{address}: restored mode 0750 and owner nobody:daemon of /etc/airlock-tool/tool.sh \
             (found mode 0777 and owner root:root)"
        )),
        "{}",
        describe(&second)
    );
    // The entry names no owner for motd, so only its mode is restored.
    assert!(
        text.contains(&format!(
            "{address}: restored mode 0644 of /etc/airlock-tool/motd (found mode 0600)"
        )),
        "{}",
        describe(&second)
    );
    assert!(
        text.contains("every host holds every file already"),
        "{}",
        describe(&second)
    );

    let restored = stdout(&lab.ssh_root("lab-1", stat));
    let lines: Vec<&str> = restored.lines().collect();
    assert_eq!(lines.len(), 2, "{restored}");
    assert!(
        lines[0].starts_with("/etc/airlock-tool/tool.sh 750 nobody daemon "),
        "{restored}"
    );
    assert!(
        lines[1].starts_with("/etc/airlock-tool/motd 644 nobody "),
        "{restored}"
    );
    assert_eq!(
        inodes(&restored),
        inodes(&placed),
        "the files were uploaded again"
    );

    let audit = stdout(&lab.ssh_root("lab-1", "cat /var/lib/k0s/airlock/audit.log"));
    assert!(
        audit.contains(
            "restore mode 0750 and owner nobody:daemon of /etc/airlock-tool/tool.sh \
             (found mode 0777 and owner root:root)"
        ),
        "{audit}"
    );
    assert!(
        audit.contains("restore mode 0644 of /etc/airlock-tool/motd (found mode 0600)"),
        "{audit}"
    );

    // A third apply finds nothing to restore.
    let third = run_ok(&mut apply_command(&lab, &cluster, &bundle.bundle));
    assert!(!stderr(&third).contains("restored"), "{}", describe(&third));
}
