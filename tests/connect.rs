//! How airlock reaches hosts, run as a user runs it: a bastion from the cluster file, ProxyJump
//! and the other Host settings from `~/.ssh/config`, and encrypted keys.
//!
//! The CLI tests name the target `lab-2`, a name that only the lab hosts' own /etc/hosts
//! resolves. A connection to it can therefore only succeed when the jump host opens it. Each
//! of them stops at `airlock kubeconfig`'s first remote command: the lab has no k0s, so
//! "k0s: not found" from the host shows that airlock connected and authenticated.

mod common;

use std::fs;
use std::path::Path;
use std::process::Output;

use airlock::remote::{ConnectOptions, HostKeyPolicy, JumpHosts, KnownHosts, Session, SshTarget};
use common::apply::airlock;
use common::{Lab, describe};

/// Reached the host: the remote shell ran the command and reported the missing k0s.
const REACHED: &str = "k0s: not found";

/// Writes a known_hosts file that trusts the jump host by address and lab-2 by its name, the
/// name airlock checks when the jump host resolves it.
fn known_hosts(lab: &Lab, dir: &Path) -> std::path::PathBuf {
    let lab_hosts = fs::read_to_string(lab.known_hosts()).unwrap();
    let key_of = |address: &str| {
        lab_hosts
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{address} ")))
            .unwrap_or_else(|| panic!("no known_hosts line for {address}"))
            .to_string()
    };
    let (jump, target) = (lab.host("lab-1"), lab.host("lab-2"));
    assert_eq!(target.port, 22, "the lab hosts listen on port 22");
    let path = dir.join("known_hosts");
    let text = format!(
        "{} {}\nlab-2 {}\n",
        jump.address,
        key_of(&jump.address),
        key_of(&target.address)
    );
    fs::write(&path, text).unwrap();
    path
}

fn kubeconfig(cluster: &Path, known_hosts: &Path, home: &Path, passphrase: Option<&str>) -> Output {
    let mut command = airlock();
    command
        .args(["kubeconfig", "-c"])
        .arg(cluster)
        .arg("--known-hosts")
        .arg(known_hosts)
        .args(["--connect-timeout", "5s"])
        .env("HOME", home)
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("AIRLOCK_SSH_KEY_PASSPHRASE");
    if let Some(passphrase) = passphrase {
        command.env("AIRLOCK_SSH_KEY_PASSPHRASE", passphrase);
    }
    command.output().expect("run airlock kubeconfig")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn bastion_relays_and_checks_its_key() {
    let Some(lab) = Lab::start("bastion_relays_and_checks_its_key", 2) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let known_hosts = known_hosts(&lab, dir.path());
    let key = lab.key_path();
    let cluster = dir.path().join("cluster.yaml");
    fs::write(
        &cluster,
        format!(
            "apiVersion: k0sctl.k0sproject.io/v1beta1
kind: Cluster
metadata: {{ name: bastion }}
spec:
  hosts:
    - role: controller
      ssh:
        address: lab-2
        user: ops
        keyPath: {key}
        bastion: {{ address: {jump}, user: root, keyPath: {key} }}
",
            key = key.display(),
            jump = lab.host("lab-1").address,
        ),
    )
    .unwrap();

    let output = kubeconfig(&cluster, &known_hosts, dir.path(), None);
    assert!(stderr(&output).contains(REACHED), "{}", describe(&output));

    // The bastion's own host key is checked: without its line the connection stops there.
    let only_target = dir.path().join("known_hosts_without_bastion");
    let text = fs::read_to_string(&known_hosts).unwrap();
    fs::write(&only_target, text.lines().nth(1).unwrap()).unwrap();
    let output = kubeconfig(&cluster, &only_target, dir.path(), None);
    let message = stderr(&output);
    assert!(!output.status.success(), "{}", describe(&output));
    assert!(
        message.contains("through the jump host"),
        "{}",
        describe(&output)
    );
    assert!(
        message.contains(&format!("the host key of {}", lab.host("lab-1").address)),
        "{}",
        describe(&output)
    );
}

#[test]
fn ssh_config_proxy_jump_with_encrypted_key() {
    let Some(lab) = Lab::start("ssh_config_proxy_jump_with_encrypted_key", 2) else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let known_hosts = known_hosts(&lab, home.path());

    // An encrypted key that only lab-2 accepts.
    let encrypted = home.path().join("encrypted_ed25519");
    let keygen = std::process::Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "correct horse",
            "-C",
            "encrypted",
            "-f",
        ])
        .arg(&encrypted)
        .output()
        .unwrap();
    assert!(keygen.status.success(), "{}", describe(&keygen));
    let public = fs::read_to_string(encrypted.with_extension("pub")).unwrap();
    let append = lab.ssh(
        "lab-2",
        &format!("echo '{}' >> ~/.ssh/authorized_keys", public.trim()),
    );
    assert!(append.status.success(), "{}", describe(&append));

    fs::create_dir(home.path().join(".ssh")).unwrap();
    fs::write(
        home.path().join(".ssh/config"),
        format!(
            "Host gateway
    HostName {jump}
    User root
    IdentityFile {lab_key}

Host node-b
    HostName lab-2
    User ops
    Port 22
    IdentityFile {encrypted}
    ProxyJump gateway
",
            jump = lab.host("lab-1").address,
            lab_key = lab.key_path().display(),
            encrypted = encrypted.display(),
        ),
    )
    .unwrap();
    let cluster = home.path().join("cluster.yaml");
    fs::write(
        &cluster,
        "apiVersion: k0sctl.k0sproject.io/v1beta1
kind: Cluster
metadata: { name: proxy-jump }
spec:
  hosts:
    - role: controller
      ssh: { address: node-b }
",
    )
    .unwrap();

    let output = kubeconfig(&cluster, &known_hosts, home.path(), Some("correct horse"));
    assert!(stderr(&output).contains(REACHED), "{}", describe(&output));

    let output = kubeconfig(&cluster, &known_hosts, home.path(), Some("wrong"));
    assert!(
        stderr(&output).contains("does not decrypt it"),
        "{}",
        describe(&output)
    );

    // Without the variable and without a terminal, airlock cannot prompt for the passphrase.
    let output = kubeconfig(&cluster, &known_hosts, home.path(), None);
    assert!(
        stderr(&output).contains("AIRLOCK_SSH_KEY_PASSPHRASE"),
        "{}",
        describe(&output)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_share_one_bastion_login() {
    let Some(lab) = Lab::start("targets_share_one_bastion_login", 3) else {
        return;
    };
    let bastion_log = lab.dir.join("hosts/lab-1/sshd.log");
    let logins = || {
        fs::read_to_string(&bastion_log)
            .unwrap()
            .matches("Accepted publickey")
            .count()
    };
    let before = logins();
    let key = Some(lab.key_path());
    let bastion = &lab.host("lab-1").address;
    let policy = HostKeyPolicy::new(KnownHosts::load(&lab.known_hosts()).unwrap(), false);
    let jumps = JumpHosts::new();
    let mut sessions = Vec::new();
    for name in ["lab-2", "lab-3"] {
        let host = lab.host(name);
        // By address, because the lab's known_hosts lists the hosts by address.
        let mut target = SshTarget::direct(&host.address, host.port, &host.user, key.clone());
        target.jump = Some(Box::new(SshTarget::direct(
            bastion,
            22,
            "root",
            key.clone(),
        )));
        let session =
            Session::connect_through(&target, &policy, &ConnectOptions::default(), &jumps)
                .await
                .unwrap_or_else(|error| panic!("connect to {name}: {error}"));
        let output = session.exec("hostname").await.unwrap();
        assert_eq!(output.stdout_text().trim(), name);
        sessions.push(session);
    }
    assert_eq!(logins() - before, 1, "the bastion saw more than one login");
}
