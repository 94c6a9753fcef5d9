//! `airlock apply` with a host's `files[]` and `hooks`, on a one-host lab.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use airlock::digest::Digest;
use common::apply::{SignedBundle, apply_command, cluster_file};
use common::{Lab, describe, stderr, stdout};

/// Adds `host_fields` (indented for a host entry) to the lab's only host in its cluster file.
fn add_to_host(lab: &Lab, host_fields: &str) {
    let path = lab.dir.join("cluster.yaml");
    let base = fs::read_to_string(&path).unwrap();
    let key_line = format!("        keyPath: {}\n", lab.key_path().display());
    assert!(
        base.contains(&key_line),
        "unexpected lab cluster file:\n{base}"
    );
    fs::write(
        &path,
        base.replace(&key_line, &format!("{key_line}{host_fields}")),
    )
    .unwrap();
}

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
