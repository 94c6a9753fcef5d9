//! Helpers for tests that run `airlock apply` on a lab: a signed lab bundle, a cluster file that
//! trusts its key, and the airlock binary run as a user would run it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Once;

use super::{Lab, repo_dir};

/// The airlock binary cargo built for these tests.
pub fn airlock() -> Command {
    Command::new(env!("CARGO_BIN_EXE_airlock"))
}

/// Writes the lab's generated artifacts (airgap bundles, stack stand-ins) once per test process.
pub fn lab_artifacts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for script in ["scripts/lab-artifacts", "scripts/lab-stack-artifacts"] {
            let output = Command::new(repo_dir().join(script))
                .output()
                .expect("run the artifact generator");
            assert!(
                output.status.success(),
                "{script} failed:\n{}",
                super::describe(&output)
            );
        }
    });
}

/// The `spec.airlock` settings of a cluster with residency and two tenants, one of them in VMs,
/// for [`cluster_file`].
pub const TENANTS: &str =
    "    residency: { jurisdiction: DE, region: eu-central, zone: fra-1, site: lab }
    tenants:
      - name: research
        classification: confidential
        quota: { gpu: 1, cpu: \"8\", memory: 32Gi }
      - name: clinic
        classification: restricted
        isolation: vm
        quota: { cpu: \"4\", memory: 16Gi }
";

/// A bundle built from a specification under `bundles/` and signed with a fresh key.
pub struct SignedBundle {
    /// Holds the bundle and its signing key pair, `site.key` and `site.pub`.
    pub dir: tempfile::TempDir,
    pub bundle: PathBuf,
    pub public_key: PathBuf,
}

impl SignedBundle {
    pub fn build(spec: &str) -> SignedBundle {
        SignedBundle::build_all(&[spec]).pop().unwrap()
    }

    /// Builds several specifications signed with one key, as a site's bundles over time are.
    pub fn build_all(specs: &[&str]) -> Vec<SignedBundle> {
        lab_artifacts();
        let keys = tempfile::Builder::new()
            .prefix("airlock-key-")
            .tempdir()
            .unwrap();
        let key = keys.path().join("site");
        run_ok(
            airlock()
                .args(["key", "generate", "--unencrypted", "-o"])
                .arg(&key),
        );
        specs
            .iter()
            .map(|spec| SignedBundle::build_with_key(spec, &key))
            .collect()
    }

    /// Builds a specification signed with the key pair at `key` (`key.key` and `key.pub`); the
    /// bundle's folder keeps a copy of the pair as `site.key` and `site.pub`.
    pub fn build_with_key(spec: &str, key: &Path) -> SignedBundle {
        lab_artifacts();
        let dir = tempfile::Builder::new()
            .prefix("airlock-bundle-")
            .tempdir()
            .unwrap();
        let public_key = dir.path().join("site.pub");
        fs::copy(key.with_extension("pub"), &public_key).unwrap();
        fs::copy(key.with_extension("key"), dir.path().join("site.key")).unwrap();
        let bundle = dir.path().join("bundle");
        run_ok(
            airlock()
                .args(["bundle", "build"])
                .arg(repo_dir().join(spec))
                .arg("-o")
                .arg(&bundle)
                .arg("--sign")
                .arg(key.with_extension("key")),
        );
        SignedBundle {
            public_key,
            bundle,
            dir,
        }
    }

    /// The signing key pair's path without extension, for signing further bundles with it.
    pub fn key(&self) -> PathBuf {
        self.dir.path().join("site")
    }
}

/// Runs a command and fails the test with its output unless it succeeds.
pub fn run_ok(command: &mut Command) -> Output {
    let output = command.output().expect("run command");
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}",
        super::describe(&output)
    );
    output
}

/// Adds `host_fields` (indented for a host entry) to the lab's only host in its cluster file.
pub fn add_to_host(lab: &Lab, host_fields: &str) {
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

/// Writes a cluster file for `lab` that trusts `bundle`'s key, with `extra` appended under
/// `spec.airlock` (indented by the caller to four spaces).
pub fn cluster_file(lab: &Lab, bundle: &SignedBundle, extra: &str) -> PathBuf {
    let base = fs::read_to_string(lab.dir.join("cluster.yaml")).unwrap();
    let text = format!(
        "{base}  airlock:\n    bundle:\n      trustedKeys:\n        - path: {}\n{extra}",
        bundle.public_key.display()
    );
    let path = lab.dir.join("apply-cluster.yaml");
    fs::write(&path, text).unwrap();
    path
}

/// `airlock apply` against a lab, with the lab's known_hosts and an output folder in the lab.
pub fn apply_command(lab: &Lab, cluster: &Path, bundle: &Path) -> Command {
    apply_command_with(lab, cluster, bundle, &lab.known_hosts())
}

/// `airlock apply` against a lab with the given known_hosts file.
pub fn apply_command_with(lab: &Lab, cluster: &Path, bundle: &Path, known_hosts: &Path) -> Command {
    apply_command_into(cluster, bundle, known_hosts, &lab.dir.join("out"))
}

/// `airlock apply` with the given known_hosts file and output folder.
pub fn apply_command_into(
    cluster: &Path,
    bundle: &Path,
    known_hosts: &Path,
    out: &Path,
) -> Command {
    apply_command_ready_within(cluster, bundle, known_hosts, out, "60s")
}

/// `airlock apply` that waits at most `ready_timeout` for each host to become ready.
pub fn apply_command_ready_within(
    cluster: &Path,
    bundle: &Path,
    known_hosts: &Path,
    out: &Path,
    ready_timeout: &str,
) -> Command {
    let mut command = airlock();
    command
        .arg("apply")
        .arg("-c")
        .arg(cluster)
        .arg("--bundle")
        .arg(bundle)
        .arg("--known-hosts")
        .arg(known_hosts)
        .arg("--out")
        .arg(out)
        .args(["--ready-timeout", ready_timeout, "--connect-timeout", "3s"]);
    command
}

/// Runs `k0s kubectl` on a lab host as root and returns its standard output.
pub fn kubectl(lab: &Lab, host: &str, args: &str) -> String {
    let output = lab.ssh_root(host, &format!("k0s kubectl {args}"));
    assert!(
        output.status.success(),
        "kubectl {args} on {host} failed:\n{}",
        super::describe(&output)
    );
    super::stdout(&output)
}

/// The names of the nodes whose Ready condition is True, sorted.
pub fn ready_nodes(lab: &Lab, controller: &str) -> Vec<String> {
    let json: serde_json::Value =
        serde_json::from_str(&kubectl(lab, controller, "get nodes -o json")).unwrap();
    let mut names: Vec<String> = json["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|node| {
            node["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|condition| condition["type"] == "Ready" && condition["status"] == "True")
        })
        .map(|node| node["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// The double's ordered event log for the lab's cluster.
pub fn events(lab: &Lab) -> Vec<serde_json::Value> {
    let text = fs::read_to_string(lab.dir.join("cluster/events.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}
