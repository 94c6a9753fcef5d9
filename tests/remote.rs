//! The SSH layer against real OpenSSH servers in the lab: host keys, sudo, verified uploads,
//! full disks, dead and hung hosts, and host locks.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock::digest::Digest;
use airlock::remote::{
    ConnectError, ConnectOptions, Host, HostError, HostKeyPolicy, HostLock, KnownHosts, LockError,
    LockOwner, Placement, Session, SshTarget, Upload,
};
use airlock::ui::Ui;
use common::{Lab, LabHost};

fn target(lab: &Lab, host: &LabHost) -> SshTarget {
    SshTarget::direct(&host.address, host.port, &host.user, Some(lab.key_path()))
}

fn policy(known_hosts: &Path, accept_new: bool) -> HostKeyPolicy {
    HostKeyPolicy::new(KnownHosts::load(known_hosts).unwrap(), accept_new)
}

fn quick() -> ConnectOptions {
    ConnectOptions {
        timeout: Duration::from_secs(3),
        attempts: 2,
        backoff: Duration::from_millis(200),
        command_timeout: Duration::from_secs(30),
    }
}

async fn connect(lab: &Lab, name: &str) -> Host {
    let host = lab.host(name);
    let session = Session::connect(
        &target(lab, host),
        &policy(&lab.known_hosts(), false),
        &quick(),
    )
    .await
    .unwrap_or_else(|error| panic!("connect to {name}: {error}"));
    Host::new(session, host.sudo)
}

#[tokio::test]
async fn commands_run_as_root_on_both_login_kinds() {
    let Some(lab) = Lab::start("commands_run_as_root_on_both_login_kinds", 2) else {
        return;
    };
    for name in ["lab-1", "lab-2"] {
        let host = connect(&lab, name).await;
        assert_eq!(host.run("id -un").await.unwrap().trim(), "root", "{name}");
        assert_eq!(host.run("hostname").await.unwrap().trim(), name);
    }
    assert!(connect(&lab, "lab-2").await.uses_sudo());
}

#[tokio::test]
async fn failed_command_names_host_and_stderr() {
    let Some(lab) = Lab::start("failed_command_names_host_and_stderr", 1) else {
        return;
    };
    let host = connect(&lab, "lab-1").await;
    let error = host
        .run("echo broken >&2; exit 3")
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains(&lab.host("lab-1").address), "{error}");
    assert!(error.contains("status 3"), "{error}");
    assert!(error.contains("broken"), "{error}");
}

#[tokio::test]
async fn unknown_host_key_is_rejected() {
    let Some(lab) = Lab::start("unknown_host_key_is_rejected", 1) else {
        return;
    };
    let empty = lab.dir.join("empty_known_hosts");
    let error = Session::connect(
        &target(&lab, lab.host("lab-1")),
        &policy(&empty, false),
        &quick(),
    )
    .await
    .err()
    .expect("an unknown key must be rejected");
    assert!(
        matches!(error, ConnectError::UnknownHostKey { .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("--accept-new-host-keys"),
        "{error}"
    );
}

#[tokio::test]
async fn new_host_key_is_learned_when_accepted() {
    let Some(lab) = Lab::start("new_host_key_is_learned_when_accepted", 1) else {
        return;
    };
    let learned = lab.dir.join("learned_known_hosts");
    let host = lab.host("lab-1");
    Session::connect(&target(&lab, host), &policy(&learned, true), &quick())
        .await
        .unwrap();
    // The learned file now trusts the host without --accept-new-host-keys.
    Session::connect(&target(&lab, host), &policy(&learned, false), &quick())
        .await
        .unwrap();
    let text = std::fs::read_to_string(&learned).unwrap();
    assert!(
        text.starts_with(&format!("{} ssh-ed25519 ", host.address)),
        "{text}"
    );
}

#[tokio::test]
async fn changed_host_key_is_rejected_even_when_accepting_new() {
    let Some(lab) = Lab::start("changed_host_key_is_rejected_even_when_accepting_new", 2) else {
        return;
    };
    // Record lab-2's key under lab-1's address: lab-1 then presents a different key.
    let lab_1 = lab.host("lab-1");
    let lab_2 = lab.host("lab-2");
    let known = std::fs::read_to_string(lab.known_hosts()).unwrap();
    let lab_2_key = known
        .lines()
        .find(|line| line.starts_with(&lab_2.address))
        .unwrap();
    let forged = lab.dir.join("forged_known_hosts");
    std::fs::write(
        &forged,
        lab_2_key.replacen(&lab_2.address, &lab_1.address, 1),
    )
    .unwrap();

    let error = Session::connect(&target(&lab, lab_1), &policy(&forged, true), &quick())
        .await
        .err()
        .expect("a changed key must be rejected");
    let message = error.to_string();
    assert!(
        matches!(error, ConnectError::HostKeyChanged { line: 1, .. }),
        "{message}"
    );
    assert!(message.contains("SHA256:"), "{message}");
}

#[tokio::test]
async fn stopped_host_is_unreachable_by_name() {
    let Some(lab) = Lab::start("stopped_host_is_unreachable_by_name", 1) else {
        return;
    };
    assert!(lab.run(&["stop", "lab-1"]).status.success());
    let error = Session::connect(
        &target(&lab, lab.host("lab-1")),
        &policy(&lab.known_hosts(), false),
        &quick(),
    )
    .await
    .err()
    .expect("a stopped host must refuse");
    assert!(
        matches!(error, ConnectError::Unreachable { attempts: 2, .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains(&lab.host("lab-1").address),
        "{error}"
    );
}

#[tokio::test]
async fn frozen_host_times_out() {
    let Some(lab) = Lab::start("frozen_host_times_out", 1) else {
        return;
    };
    assert!(lab.run(&["freeze", "lab-1"]).status.success());
    let started = Instant::now();
    let options = ConnectOptions {
        attempts: 1,
        ..quick()
    };
    let error = Session::connect(
        &target(&lab, lab.host("lab-1")),
        &policy(&lab.known_hosts(), false),
        &options,
    )
    .await
    .err()
    .expect("a frozen host must time out");
    assert!(
        matches!(error, ConnectError::HandshakeTimeout { .. }),
        "{error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(lab.run(&["thaw", "lab-1"]).status.success());
}

#[tokio::test]
async fn hung_command_times_out() {
    let Some(lab) = Lab::start("hung_command_times_out", 1) else {
        return;
    };
    let host = connect(&lab, "lab-1").await;
    let error = host
        .run_output_within("sleep 30", Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("did not finish within"),
        "{error}"
    );
}

#[tokio::test]
async fn upload_verifies_then_skips() {
    let Some(lab) = Lab::start("upload_verifies_then_skips", 2) else {
        return;
    };
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let digest = Digest::of_bytes(&data);
    let ui = Ui::hidden();
    for name in ["lab-1", "lab-2"] {
        let host = connect(&lab, name).await;
        let path = "/var/lib/k0s/images/test.tar";
        let item = ui.item(name, Some(data.len() as u64));
        let first = host
            .upload(
                &data[..],
                data.len() as u64,
                digest,
                Placement::new(path, "0644"),
                &item,
            )
            .await
            .unwrap();
        assert_eq!(first, Upload::Copied, "{name}");
        assert_eq!(host.sha256(path).await.unwrap(), Some(digest));
        let states = host
            .file_states(&["/var/lib/k0s/images/none", path, "/var/lib/k0s"])
            .await
            .unwrap();
        assert_eq!(states[0], None, "a missing file has no state");
        assert_eq!(states[2], None, "a folder has no state");
        let placed = states[1].as_ref().expect("the uploaded file has a state");
        assert_eq!(placed.digest, digest);
        assert_eq!(placed.mode, 0o644);
        assert_eq!(
            (placed.user.as_str(), placed.group.as_str()),
            ("root", "root")
        );
        assert_eq!(
            host.run(&format!("stat -c %a {path}"))
                .await
                .unwrap()
                .trim(),
            "644"
        );
        let second = host
            .upload(
                &data[..],
                data.len() as u64,
                digest,
                Placement::new(path, "0644"),
                &item,
            )
            .await
            .unwrap();
        assert_eq!(second, Upload::Skipped, "{name}");
        let leftovers = host.run("ls /var/lib/k0s/images").await.unwrap();
        assert_eq!(
            leftovers.trim(),
            "test.tar",
            "no temporary files may remain on {name}"
        );
    }
    // The other host, and the machine, never see the file: each host has its own /var/lib.
    assert!(!Path::new("/var/lib/k0s/images/test.tar").exists());
}

#[tokio::test]
async fn upload_without_openssl_uses_sha256sum() {
    let Some(lab) = Lab::start("upload_without_openssl_uses_sha256sum", 1) else {
        return;
    };
    let host = connect(&lab, "lab-1").await;
    // The host's private /usr/local/bin comes before /usr/bin in PATH, so this `openssl` hides
    // the real one the way a host without OpenSSL's command-line tool would.
    host.run("printf '#!/bin/sh\\nexit 127\\n' > /usr/local/bin/openssl && chmod 0755 /usr/local/bin/openssl")
        .await
        .unwrap();
    upload_and_check(&host, &vec![7u8; 1 << 20], "/var/lib/k0s/no-openssl.bin").await;
}

/// Uploads `data` to `path` and checks that it was copied and hashes the same on the host.
async fn upload_and_check(host: &Host, data: &[u8], path: &str) {
    let digest = Digest::of_bytes(data);
    let item = Ui::hidden().item(host.label(), None);
    let outcome = host
        .upload(
            data,
            data.len() as u64,
            digest,
            Placement::new(path, "0644"),
            &item,
        )
        .await
        .unwrap();
    assert_eq!(outcome, Upload::Copied);
    assert_eq!(host.sha256(path).await.unwrap(), Some(digest));
}

#[tokio::test]
async fn staged_upload_never_appears_half_written() {
    let Some(lab) = Lab::start("staged_upload_never_appears_half_written", 1) else {
        return;
    };
    let host = connect(&lab, "lab-1").await;
    // What a run killed during this upload leaves behind.
    host.run(
        "mkdir -p /var/lib/k0s/airlock/staging && \
         echo partial > /var/lib/k0s/airlock/staging/.a.tar.airlock-4242",
    )
    .await
    .unwrap();
    let data = vec![3u8; 1 << 20];
    let item = Ui::hidden().item("lab-1", None);
    let placement = Placement::new("/var/lib/k0s/images/a.tar", "0644")
        .staged_in("/var/lib/k0s/airlock/staging");
    host.upload(
        &data[..],
        data.len() as u64,
        Digest::of_bytes(&data),
        placement,
        &item,
    )
    .await
    .unwrap();
    assert_eq!(
        host.run("ls -A /var/lib/k0s/images").await.unwrap().trim(),
        "a.tar"
    );
    assert_eq!(
        host.run("ls -A /var/lib/k0s/airlock/staging")
            .await
            .unwrap()
            .trim(),
        ""
    );
}

#[tokio::test]
async fn upload_with_wrong_digest_leaves_nothing() {
    let Some(lab) = Lab::start("upload_with_wrong_digest_leaves_nothing", 1) else {
        return;
    };
    let host = connect(&lab, "lab-1").await;
    let data = b"the bytes that travel".to_vec();
    let claimed = Digest::of_bytes(b"other bytes");
    let item = Ui::hidden().item("lab-1", None);
    let error = host
        .upload(
            &data[..],
            data.len() as u64,
            claimed,
            Placement::new("/var/lib/k0s/x.bin", "0644"),
            &item,
        )
        .await
        .unwrap_err();
    assert!(matches!(error, HostError::DigestMismatch { .. }), "{error}");
    assert_eq!(host.run("ls -A /var/lib/k0s").await.unwrap().trim(), "");
}

/// Large enough that the host hashes the bytes as they arrive where it has python3.
const STREAMED: usize = 40 << 20;

#[tokio::test]
async fn large_upload_is_hashed_as_it_arrives() {
    let Some(lab) = Lab::start("large_upload_is_hashed_as_it_arrives", 2) else {
        return;
    };
    let data: Vec<u8> = (0..STREAMED as u32).map(|i| (i % 241) as u8).collect();
    let digest = Digest::of_bytes(&data);
    let ui = Ui::hidden();
    for name in ["lab-1", "lab-2"] {
        let host = connect(&lab, name).await;
        // With these in the host's private /usr/local/bin, ahead of /usr/bin in PATH, only the
        // streaming receiver can write and hash the file.
        host.run(
            "for tool in cat openssl sha256sum; do \
               printf '#!/bin/sh\\nexit 1\\n' > /usr/local/bin/$tool && chmod 0755 /usr/local/bin/$tool; \
             done",
        )
        .await
        .unwrap();
        let path = "/var/lib/k0s/images/streamed.tar";
        let item = ui.item(name, Some(data.len() as u64));
        let placement = Placement::new(path, "0640");
        host.upload(&data[..], data.len() as u64, digest, placement, &item)
            .await
            .unwrap_or_else(|error| panic!("{name}: {error}"));
        host.run("rm /usr/local/bin/cat /usr/local/bin/openssl /usr/local/bin/sha256sum")
            .await
            .unwrap();
        assert_eq!(host.sha256(path).await.unwrap(), Some(digest), "{name}");
        assert_eq!(
            host.run(&format!("stat -c %a {path}"))
                .await
                .unwrap()
                .trim(),
            "640"
        );
        assert_eq!(
            host.run("ls -A /var/lib/k0s/images").await.unwrap().trim(),
            "streamed.tar",
            "no temporary files may remain on {name}"
        );

        let claimed = Digest::of_bytes(b"other bytes");
        let placement = Placement::new("/var/lib/k0s/images/wrong.tar", "0644");
        let error = host
            .upload(&data[..], data.len() as u64, claimed, placement, &item)
            .await
            .unwrap_err();
        match &error {
            HostError::DigestMismatch { computed, .. } => assert_eq!(*computed, digest),
            other => panic!("{name}: expected a digest mismatch, got: {other}"),
        }
        assert_eq!(
            host.run("ls -A /var/lib/k0s/images").await.unwrap().trim(),
            "streamed.tar",
            "a rejected upload leaves nothing on {name}"
        );
    }
}

#[tokio::test]
async fn large_upload_without_python() {
    let Some(lab) = Lab::start("large_upload_without_python", 1) else {
        return;
    };
    let host = connect(&lab, "lab-1").await;
    // A file without execute permission over python3, in the host's own mount namespace, hides
    // it from `command -v` as on a host without Python.
    host.run("touch /run/no-python && mount --bind /run/no-python \"$(command -v python3)\" && ! command -v python3")
        .await
        .unwrap();
    upload_and_check(&host, &vec![9u8; STREAMED], "/var/lib/k0s/no-python.bin").await;
}

#[tokio::test]
async fn large_upload_with_broken_python() {
    let Some(lab) = Lab::start("large_upload_with_broken_python", 1) else {
        return;
    };
    let host = connect(&lab, "lab-1").await;
    // A failing script mounted over python3 acts like a broken or too old interpreter.
    // `command -v` still finds it, but it runs nothing.
    host.run(
        "printf '#!/bin/sh\\necho python3 is broken >&2\\nexit 1\\n' > /run/broken-python && \
         chmod 0755 /run/broken-python && \
         mount --bind /run/broken-python \"$(command -v python3)\" && \
         command -v python3 && ! python3 -c ''",
    )
    .await
    .unwrap();
    upload_and_check(
        &host,
        &vec![7u8; STREAMED],
        "/var/lib/k0s/broken-python.bin",
    )
    .await;
}

#[tokio::test]
async fn full_disk_is_reported_before_upload() {
    let Some(lab) = Lab::start_with(
        "full_disk_is_reported_before_upload",
        1,
        &["--disk-size", "16M"],
    ) else {
        return;
    };
    let host = connect(&lab, "lab-1").await;
    let data = vec![1u8; 32 << 20];
    let item = Ui::hidden().item("lab-1", None);
    let error = host
        .upload(
            &data[..],
            data.len() as u64,
            Digest::of_bytes(&data),
            Placement::new("/var/lib/k0s/big.bin", "0644"),
            &item,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, HostError::InsufficientSpace { .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("/var/lib/k0s/big.bin"),
        "{error}"
    );
}

#[tokio::test]
async fn disk_filling_up_mid_write_is_reported() {
    let Some(lab) = Lab::start_with(
        "disk_filling_up_mid_write_is_reported",
        1,
        &["--disk-size", "16M"],
    ) else {
        return;
    };
    let host = connect(&lab, "lab-1").await;
    host.run("mkdir -p /var/lib/k0s && head -c 12M /dev/zero > /var/lib/filler")
        .await
        .unwrap();
    // The declared size passes the free-space check; the stream is larger than the space left,
    // as when another writer takes the space while the bytes travel.
    let data = vec![2u8; 8 << 20];
    let item = Ui::hidden().item("lab-1", None);
    let error = host
        .upload(
            &data[..],
            1 << 20,
            Digest::of_bytes(&data),
            Placement::new("/var/lib/k0s/mid.bin", "0644"),
            &item,
        )
        .await
        .unwrap_err();
    match &error {
        HostError::Write { stderr, path, .. } => {
            assert!(stderr.contains("No space left"), "{stderr}");
            assert_eq!(path, "/var/lib/k0s/mid.bin");
        }
        other => panic!("expected a write error, got: {other}"),
    }
    assert_eq!(
        host.run("ls -A /var/lib/k0s").await.unwrap().trim(),
        "",
        "temporary file left behind"
    );
}

#[tokio::test]
async fn streamed_write_reports_full_disk() {
    let Some(lab) = Lab::start_with(
        "streamed_write_reports_full_disk",
        1,
        &["--disk-size", "16M"],
    ) else {
        return;
    };
    let host = connect(&lab, "lab-1").await;
    host.run("mkdir -p /var/lib/k0s").await.unwrap();
    let data = vec![4u8; STREAMED];
    // Without the free-space check of `upload`, the bytes meet a disk too small for them.
    let error = host
        .write_verified(
            Placement::new("/var/lib/k0s/streamed.bin", "0644"),
            &data[..],
            data.len() as u64,
            Digest::of_bytes(&data),
            None,
        )
        .await
        .unwrap_err();
    match &error {
        HostError::Write { stderr, path, .. } => {
            // The streaming receiver names the temporary file; `cat` would not.
            assert!(stderr.contains(".streamed.bin.airlock-"), "{stderr}");
            assert!(stderr.contains("No space left on device"), "{stderr}");
            assert_eq!(path, "/var/lib/k0s/streamed.bin");
        }
        other => panic!("expected a write error, got: {other}"),
    }
    assert_eq!(
        host.run("ls -A /var/lib/k0s").await.unwrap().trim(),
        "",
        "temporary file left behind"
    );
}

#[tokio::test]
async fn secret_file_travels_on_stdin() {
    let Some(lab) = Lab::start("secret_file_travels_on_stdin", 2) else {
        return;
    };
    let host = connect(&lab, "lab-2").await;
    host.write_file("/etc/k0s/k0stoken", b"s3cret-token\n", "0600")
        .await
        .unwrap();
    assert_eq!(
        host.read_file("/etc/k0s/k0stoken").await.unwrap().unwrap(),
        b"s3cret-token\n"
    );
    assert_eq!(
        host.run("stat -c %a /etc/k0s/k0stoken")
            .await
            .unwrap()
            .trim(),
        "600"
    );
    assert_eq!(host.read_file("/etc/k0s/missing").await.unwrap(), None);
}

#[tokio::test]
async fn second_lock_holder_is_rejected() {
    let Some(lab) = Lab::start("second_lock_holder_is_rejected", 1) else {
        return;
    };
    let host = Arc::new(connect(&lab, "lab-1").await);
    let first = HostLock::acquire(host.clone(), &LockOwner::this_process("apply"))
        .await
        .unwrap();
    let holder = host.run("cat /run/lock/airlock.lock").await.unwrap();
    assert!(holder.starts_with("airlock apply on "), "{holder}");

    let error = HostLock::acquire(host.clone(), &LockOwner::this_process("upgrade"))
        .await
        .err()
        .unwrap();
    assert!(matches!(error, LockError::Held { .. }), "{error}");
    assert!(error.to_string().contains("airlock apply on"), "{error}");

    first.release(&host).await.unwrap();
    assert!(!host.exists("/run/lock/airlock.lock").await.unwrap());
    let again = HostLock::acquire(host.clone(), &LockOwner::this_process("upgrade"))
        .await
        .unwrap();
    again.release(&host).await.unwrap();
}

#[tokio::test]
async fn stale_lock_is_taken_over() {
    let Some(lab) = Lab::start("stale_lock_is_taken_over", 1) else {
        return;
    };
    let host = Arc::new(connect(&lab, "lab-1").await);
    host.run("printf 'airlock apply on another-machine pid 7\\n' > /run/lock/airlock.lock && touch -d '-2 minutes' /run/lock/airlock.lock")
        .await
        .unwrap();
    let lock = HostLock::acquire(host.clone(), &LockOwner::this_process("apply"))
        .await
        .unwrap();
    let holder = host.run("cat /run/lock/airlock.lock").await.unwrap();
    assert!(!holder.contains("another-machine"), "{holder}");
    lock.release(&host).await.unwrap();
}
