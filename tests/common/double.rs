//! Runs the k0s test double directly on this machine: each simulated host is a folder that
//! is used as its `/` (`K0S_DOUBLE_ROOT`), and the hosts of one test share a cluster folder.
//! Needs no root. Services started by a test are stopped on drop.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{describe, repo_dir, stdout};

pub const V135: &str = "v1.35.3+k0s.0";
pub const V136: &str = "v1.36.3+k0s.0";

pub fn double_home() -> PathBuf {
    repo_dir().join("tests/k0s")
}

pub fn wrapper(version: &str) -> PathBuf {
    double_home().join("bin").join(format!("k0s-{version}"))
}

pub struct DirectHost {
    pub name: String,
    pub address: String,
    pub root: PathBuf,
    cluster: PathBuf,
}

impl DirectHost {
    /// Installs a k0s binary of `version` at the host's /usr/local/bin/k0s.
    pub fn install_binary(&self, version: &str) {
        let target = self.root.join("usr/local/bin/k0s");
        fs::create_dir_all(target.parent().unwrap()).unwrap();
        fs::copy(wrapper(version), &target).unwrap();
    }

    pub fn path(&self, logical: &str) -> PathBuf {
        self.root.join(logical.trim_start_matches('/'))
    }

    pub fn write(&self, logical: &str, contents: impl AsRef<[u8]>) {
        let path = self.path(logical);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, contents).unwrap();
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(self.root.join("usr/local/bin/k0s"));
        command
            .args(args)
            .env("K0S_DOUBLE_HOME", double_home())
            .env("K0S_DOUBLE_ROOT", &self.root)
            .env("K0S_DOUBLE_CLUSTER", &self.cluster)
            .env("K0S_DOUBLE_HOSTNAME", &self.name)
            .env("K0S_DOUBLE_ADDRESS", &self.address)
            .env("K0S_DOUBLE_HEARTBEAT_TIMEOUT", "2")
            .env_remove("KUBECONFIG");
        command
    }

    pub fn k0s(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run the k0s double")
    }

    pub fn k0s_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs k0s and panics with its output unless it succeeds.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.k0s(args);
        assert!(
            output.status.success(),
            "{} k0s {}:\n{}",
            self.name,
            args.join(" "),
            describe(&output)
        );
        stdout(&output)
    }

    pub fn service_log(&self) -> String {
        ["k0scontroller", "k0sworker"]
            .iter()
            .filter_map(|unit| {
                fs::read_to_string(self.path(&format!("/run/k0s-double/{unit}.log"))).ok()
            })
            .collect()
    }
}

pub struct DirectCluster {
    pub dir: tempfile::TempDir,
    pub hosts: Vec<DirectHost>,
}

impl DirectCluster {
    /// Creates `count` hosts named lab-1... with addresses 127.0.99.(10+i), each with a k0s
    /// binary of `version`. The addresses only name the hosts; nothing connects to them.
    pub fn new(count: usize, version: &str) -> DirectCluster {
        let dir = tempfile::Builder::new()
            .prefix("k0s-double-")
            .tempdir()
            .unwrap();
        let cluster = dir.path().join("cluster");
        fs::create_dir_all(&cluster).unwrap();
        let hosts = (1..=count)
            .map(|index| {
                let host = DirectHost {
                    name: format!("lab-{index}"),
                    address: format!("127.0.99.{}", 10 + index),
                    root: dir.path().join(format!("lab-{index}")),
                    cluster: cluster.clone(),
                };
                host.install_binary(version);
                host
            })
            .collect();
        DirectCluster { dir, hosts }
    }

    pub fn host(&self, index: usize) -> &DirectHost {
        &self.hosts[index - 1]
    }

    pub fn cluster_dir(&self) -> PathBuf {
        self.dir.path().join("cluster")
    }

    pub fn events(&self) -> Vec<serde_json::Value> {
        fs::read_to_string(self.cluster_dir().join("events.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }
}

impl Drop for DirectCluster {
    fn drop(&mut self) {
        for host in &self.hosts {
            let _ = host.k0s(&["stop"]);
        }
    }
}

/// Writes the k0s airgap bundle of `version` (or any images) as an OCI archive at `path`.
pub fn write_image_archive(path: &Path, references: &[&str]) {
    let output = Command::new(repo_dir().join("scripts/lab-artifacts"))
        .arg("--images")
        .arg(path)
        .args(references)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
}

pub fn write_airgap_bundles(folder: &Path) {
    let output = Command::new(repo_dir().join("scripts/lab-artifacts"))
        .arg(folder)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
}

pub fn airgap_bundle(folder: &Path, version: &str) -> PathBuf {
    folder.join(format!("k0s-airgap-bundle-{version}-amd64.tar"))
}

/// Polls `check` every 200 ms until it returns true; panics with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// Writes a chart archive (`<name>-<version>.tgz`) with the given templates and values.
pub fn write_chart(
    folder: &Path,
    name: &str,
    version: &str,
    values: &str,
    templates: &[(&str, &str)],
) -> PathBuf {
    let source = folder.join(format!("chart-source-{name}"));
    let chart = source.join(name);
    fs::create_dir_all(chart.join("templates")).unwrap();
    fs::write(
        chart.join("Chart.yaml"),
        format!("apiVersion: v2\nname: {name}\nversion: {version}\nappVersion: \"1.0\"\n"),
    )
    .unwrap();
    fs::write(chart.join("values.yaml"), values).unwrap();
    for (file, text) in templates {
        fs::write(chart.join("templates").join(file), text).unwrap();
    }
    let archive = folder.join(format!("{name}-{version}.tgz"));
    let output = Command::new("tar")
        .arg("czf")
        .arg(&archive)
        .arg("-C")
        .arg(&source)
        .arg(name)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    archive
}
