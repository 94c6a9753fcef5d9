//! Test lab for integration tests: starts `scripts/lab` hosts in a state folder and a loopback
//! subnet of their own, so that tests running in parallel never share hosts, and tears them down
//! on drop.
//!
//! Lab tests need root (namespaces, mounts, sshd). Without root, [`Lab::start`] prints why the
//! test is skipped and returns `None`.

#![allow(dead_code)] // Each test binary uses a different part of this helper.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;

pub mod apply;
pub mod double;

/// Where concurrently running test processes claim lab subnets, one directory per subnet.
const SUBNET_CLAIMS: &str = "/tmp/airlock-lab-subnet-claims";

/// The subnets tests pick from: 127.200.0 to 127.249.255, away from the lab's default 127.0.1.
const FIRST_CLAIMED_OCTET: u32 = 200;
const CLAIMABLE_SUBNETS: u32 = 50 * 256;

pub fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn lab_script() -> PathBuf {
    repo_dir().join("scripts/lab")
}

pub fn is_root() -> bool {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        == Some("0")
}

/// Prints the skip notice and returns false when the test cannot run because it is not root.
pub fn require_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    eprintln!(
        "skipping {test}: the lab needs root (namespaces, mounts, sshd); CI runs tests as root"
    );
    false
}

/// One host of a running lab, as `scripts/lab` recorded it in `hosts.json`.
#[derive(Clone, Debug)]
pub struct LabHost {
    pub name: String,
    pub address: String,
    pub port: u16,
    pub user: String,
    pub role: String,
    pub sudo: bool,
    pub init_pid: Option<u32>,
    pub sshd_pid: Option<u32>,
}

/// A running lab; dropping it runs `scripts/lab down`.
pub struct Lab {
    pub dir: PathBuf,
    pub subnet: String,
    pub hosts: Vec<LabHost>,
    claim: SubnetClaim,
    _state: tempfile::TempDir,
}

impl Lab {
    /// Starts `count` hosts with the default roles, or returns `None` when not root.
    pub fn start(test: &str, count: usize) -> Option<Lab> {
        Lab::start_with(test, count, &[])
    }

    /// Starts `count` hosts, passing `options` (such as `--disk-size 8M`) to `scripts/lab up`.
    pub fn start_with(test: &str, count: usize, options: &[&str]) -> Option<Lab> {
        if !require_root(test) {
            return None;
        }
        let state = tempfile::Builder::new()
            .prefix("airlock-lab-test-")
            .tempdir()
            .expect("create lab state folder");
        let claim = SubnetClaim::acquire();
        let mut lab = Lab {
            dir: state.path().to_path_buf(),
            subnet: claim.subnet.clone(),
            hosts: Vec::new(),
            claim,
            _state: state,
        };
        let mut args = vec!["up".to_owned(), count.to_string()];
        args.extend(options.iter().map(|option| (*option).to_owned()));
        let output = lab.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(
            output.status.success(),
            "scripts/lab up {count} failed:\n{}",
            describe(&output)
        );
        lab.reload();
        Some(lab)
    }

    /// Runs `scripts/lab` with this lab's state folder and subnet.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run scripts/lab")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(lab_script());
        command
            .args(args)
            .env("AIRLOCK_LAB", &self.dir)
            .env("AIRLOCK_LAB_SUBNET", &self.subnet)
            .env_remove("AIRLOCK_LAB_PORT");
        command
    }

    /// Re-reads `hosts.json` (pids and states change with stop, start and up).
    pub fn reload(&mut self) {
        let text = fs::read_to_string(self.dir.join("hosts.json")).expect("read hosts.json");
        let json: Value = serde_json::from_str(&text).expect("hosts.json is valid JSON");
        self.hosts = json["hosts"]
            .as_array()
            .expect("hosts.json lists hosts")
            .iter()
            .map(|host| LabHost {
                name: host["name"].as_str().unwrap().to_owned(),
                address: host["address"].as_str().unwrap().to_owned(),
                port: host["port"].as_u64().unwrap() as u16,
                user: host["user"].as_str().unwrap().to_owned(),
                role: host["role"].as_str().unwrap().to_owned(),
                sudo: host["sudo"].as_bool().unwrap(),
                init_pid: host["pids"]["init"].as_u64().map(|pid| pid as u32),
                sshd_pid: host["pids"]["sshd"].as_u64().map(|pid| pid as u32),
            })
            .collect();
    }

    pub fn host(&self, name: &str) -> &LabHost {
        self.hosts
            .iter()
            .find(|host| host.name == name)
            .unwrap_or_else(|| panic!("no lab host {name}"))
    }

    pub fn key_path(&self) -> PathBuf {
        self.dir.join("id_ed25519")
    }

    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }

    /// Runs `command` on a host with the real OpenSSH client, the lab's key and known_hosts,
    /// as the host's login user.
    pub fn ssh(&self, host: &str, command: &str) -> Output {
        let host = self.host(host);
        let user = host.user.clone();
        self.ssh_as(&host.name, &user, command, 5)
    }

    /// Runs `command` through `sudo` on hosts whose login user is not root.
    pub fn ssh_root(&self, host: &str, command: &str) -> Output {
        let lab_host = self.host(host);
        if lab_host.sudo {
            let quoted = format!("sudo -n sh -c '{}'", command.replace('\'', r"'\''"));
            self.ssh(host, &quoted)
        } else {
            self.ssh(host, command)
        }
    }

    pub fn ssh_as(
        &self,
        host: &str,
        user: &str,
        command: &str,
        connect_timeout_seconds: u32,
    ) -> Output {
        self.ssh_command(host, user, connect_timeout_seconds)
            .arg(command)
            .output()
            .expect("run ssh")
    }

    /// The real OpenSSH client set up for a host with the lab's key and known_hosts; the caller
    /// adds the remote command.
    pub fn ssh_command(&self, host: &str, user: &str, connect_timeout_seconds: u32) -> Command {
        let host = self.host(host);
        let mut command = Command::new("ssh");
        command
            .args(["-F", "/dev/null", "-i"])
            .arg(self.key_path())
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                self.known_hosts().display()
            ))
            .args([
                "-o",
                "GlobalKnownHostsFile=/dev/null",
                "-o",
                "StrictHostKeyChecking=yes",
            ])
            .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"])
            .arg("-o")
            .arg(format!("ConnectTimeout={connect_timeout_seconds}"))
            .arg("-p")
            .arg(host.port.to_string())
            .arg(format!("{user}@{}", host.address));
        command
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let output = self.run(&["down"]);
        if !output.status.success() {
            eprintln!(
                "scripts/lab down failed for {}:\n{}",
                self.dir.display(),
                describe(&output)
            );
        }
        self.claim.release();
    }
}

/// A subnet reserved for one lab by creating a directory named after it; creating a directory
/// is atomic, so two test processes never get the same subnet.
struct SubnetClaim {
    subnet: String,
    path: PathBuf,
}

impl SubnetClaim {
    fn acquire() -> SubnetClaim {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        fs::create_dir_all(SUBNET_CLAIMS).expect("create the subnet claim folder");
        let start = std::process::id().wrapping_mul(97) % CLAIMABLE_SUBNETS;
        for attempt in 0..CLAIMABLE_SUBNETS {
            let offset = NEXT.fetch_add(1, Ordering::Relaxed);
            let index = (start + offset + attempt) % CLAIMABLE_SUBNETS;
            let subnet = format!("127.{}.{}", FIRST_CLAIMED_OCTET + index / 256, index % 256);
            let path = Path::new(SUBNET_CLAIMS).join(&subnet);
            match fs::create_dir(&path) {
                Ok(()) => {
                    fs::write(path.join("pid"), std::process::id().to_string())
                        .expect("write claim owner");
                    return SubnetClaim { subnet, path };
                }
                Err(error) if error.kind() == ErrorKind::AlreadyExists => {
                    if claim_is_stale(&path) {
                        let _ = fs::remove_dir_all(&path);
                    }
                }
                Err(error) => panic!("cannot claim subnet {subnet}: {error}"),
            }
        }
        panic!("every test subnet is claimed; remove stale claims in {SUBNET_CLAIMS}");
    }

    fn release(&self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// A claim whose owner process is gone (a test run that was killed).
fn claim_is_stale(path: &Path) -> bool {
    match fs::read_to_string(path.join("pid")) {
        Ok(pid) => !Path::new("/proc").join(pid.trim()).exists(),
        // Being written right now, or left empty by a crash; only the latter is stale, so give
        // the writer a moment.
        Err(_) => {
            std::thread::sleep(std::time::Duration::from_millis(50));
            !path.join("pid").exists()
        }
    }
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Exit status, stdout and stderr of a command, for assertion messages.
pub fn describe(output: &Output) -> String {
    format!(
        "status: {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        stdout(output),
        stderr(output)
    )
}
