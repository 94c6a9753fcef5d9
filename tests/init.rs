//! `airlock init`: the example cluster file it prints passes `airlock config validate`.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn airlock() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_airlock"));
    command.env_clear();
    command
}

/// Checks that a command exited 0 without printing errors or warnings.
fn assert_clean_success(output: &Output) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(output.stderr.is_empty(), "{stderr}");
}

fn init_output() -> String {
    let output = airlock().arg("init").output().unwrap();
    assert_clean_success(&output);
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn init_prints_a_commented_k0sctl_file() {
    let text = init_output();
    assert!(text.starts_with("# "), "{text}");
    assert!(text.contains("\napiVersion: k0sctl.k0sproject.io/v1beta1\nkind: Cluster\n"));
    assert!(text.contains("\n  airlock:\n"));
    assert!(text.contains("#  - name: research"));
}

#[test]
fn init_output_passes_validate() {
    let text = init_output();
    let directory = tempfile::tempdir().unwrap();
    std::fs::write(directory.path().join("cluster.yaml"), &text).unwrap();
    // The example logs in with ~/.ssh/id_ed25519, which validate warns about when it is missing.
    std::fs::create_dir(directory.path().join(".ssh")).unwrap();
    std::fs::write(directory.path().join(".ssh/id_ed25519"), "").unwrap();

    let output = airlock()
        .args(["config", "validate", "-c", "cluster.yaml"])
        .current_dir(directory.path())
        .env("HOME", directory.path())
        .output()
        .unwrap();
    assert_clean_success(&output);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "cluster.yaml: 3 hosts (1 controller, 2 workers), k0s v1.35.3+k0s.0\n"
    );
}

#[test]
fn init_output_validates_from_stdin() {
    let mut child = airlock()
        .args(["config", "validate", "-c", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(init_output().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn closed_stdout_pipe_ends_quietly() {
    // The reader closes its end before airlock writes, as `airlock ... | head` does once it has
    // read enough.
    let mut child = airlock()
        .arg("init")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    assert_clean_success(&output);
}
