//! Tests of `scripts/lab`: real OpenSSH hosts on loopback addresses, each in its own namespaces.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Lab, describe, lab_script, require_root, stderr, stdout};

#[test]
fn files_written_on_one_host_stay_private() {
    let Some(lab) = Lab::start("files_written_on_one_host_stay_private", 3) else {
        return;
    };
    let marker = format!("airlock-lab-probe-{}", std::process::id());
    let private_dirs = [
        "/tmp",
        "/etc",
        "/var/lib",
        "/usr/local/bin",
        "/run",
        "/root",
    ];
    let paths: Vec<String> = private_dirs
        .iter()
        .map(|dir| format!("{dir}/{marker}"))
        .collect();

    let write = lab.ssh_root("lab-1", &format!("touch {}", paths.join(" ")));
    assert!(
        write.status.success(),
        "writing on lab-1 failed:\n{}",
        describe(&write)
    );
    let on_writer = lab.ssh_root("lab-1", &format!("ls {}", paths.join(" ")));
    assert!(
        on_writer.status.success(),
        "lab-1 does not see its own files:\n{}",
        describe(&on_writer)
    );

    for other in ["lab-2", "lab-3"] {
        for path in &paths {
            let probe = lab.ssh_root(other, &format!("test ! -e {path}"));
            assert!(
                probe.status.success(),
                "{path} written on lab-1 is visible on {other}:\n{}",
                describe(&probe)
            );
        }
    }
    for path in &paths {
        assert!(
            !Path::new(path).exists(),
            "{path} written on lab-1 is visible on the machine itself"
        );
    }
}

#[test]
fn each_host_reports_its_own_hostname() {
    let Some(lab) = Lab::start("each_host_reports_its_own_hostname", 3) else {
        return;
    };
    for host in &lab.hosts {
        let output = lab.ssh(&host.name, "hostname; cat /etc/hostname");
        assert!(output.status.success(), "{}", describe(&output));
        assert_eq!(stdout(&output), format!("{0}\n{0}\n", host.name));
    }
}

#[test]
fn even_hosts_log_in_as_ops_with_sudo() {
    let Some(lab) = Lab::start("even_hosts_log_in_as_ops_with_sudo", 2) else {
        return;
    };
    let lab_2 = lab.host("lab-2");
    assert_eq!(lab_2.user, "ops");
    assert!(lab_2.sudo);

    let output = lab.ssh("lab-2", "id -un; sudo -n id -u");
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(stdout(&output), "ops\n0\n");

    let root_login = lab.ssh_as("lab-2", "root", "true", 5);
    assert!(
        !root_login.status.success(),
        "root may log in on the sudo host"
    );
    assert!(
        stderr(&root_login).contains("Permission denied"),
        "{}",
        describe(&root_login)
    );

    let ops_on_root_host = lab.ssh_as("lab-1", "ops", "true", 5);
    assert!(
        !ops_on_root_host.status.success(),
        "ops may log in on the root host lab-1"
    );
}

#[test]
fn stopped_host_rejects_connections_until_started() {
    let Some(lab) = Lab::start("stopped_host_rejects_connections_until_started", 2) else {
        return;
    };
    let stop = lab.run(&["stop", "lab-2"]);
    assert!(stop.status.success(), "{}", describe(&stop));

    let refused = lab.ssh("lab-2", "true");
    assert_eq!(refused.status.code(), Some(255));
    assert!(
        stderr(&refused).contains("Connection refused"),
        "{}",
        describe(&refused)
    );
    let other = lab.ssh("lab-1", "true");
    assert!(
        other.status.success(),
        "stopping lab-2 affected lab-1:\n{}",
        describe(&other)
    );

    let start = lab.run(&["start", "lab-2"]);
    assert!(start.status.success(), "{}", describe(&start));
    let back = lab.ssh("lab-2", "hostname");
    assert!(back.status.success(), "{}", describe(&back));
    assert_eq!(stdout(&back), "lab-2\n");
}

#[test]
fn frozen_host_times_out_until_thawed() {
    let Some(lab) = Lab::start("frozen_host_times_out_until_thawed", 2) else {
        return;
    };
    let freeze = lab.run(&["freeze", "lab-1"]);
    assert!(freeze.status.success(), "{}", describe(&freeze));
    let status = lab.run(&["status"]);
    assert!(stdout(&status).contains("frozen"), "{}", describe(&status));

    let started = Instant::now();
    let hung = lab.ssh_as("lab-1", "root", "true", 2);
    assert_eq!(hung.status.code(), Some(255));
    assert!(stderr(&hung).contains("timed out"), "{}", describe(&hung));
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "ssh gave up before its timeout"
    );

    let thaw = lab.run(&["thaw", "lab-1"]);
    assert!(thaw.status.success(), "{}", describe(&thaw));
    let back = lab.ssh("lab-1", "hostname");
    assert!(back.status.success(), "{}", describe(&back));
}

#[test]
fn up_again_keeps_running_hosts() {
    let Some(mut lab) = Lab::start("up_again_keeps_running_hosts", 2) else {
        return;
    };
    let before: Vec<_> = lab.hosts.iter().map(|host| host.init_pid).collect();
    assert!(
        before.iter().all(Option::is_some),
        "hosts.json lacks init pids"
    );

    lab.run(&["stop", "lab-2"]);
    let again = lab.run(&["up", "2"]);
    assert!(again.status.success(), "{}", describe(&again));
    lab.reload();
    let after: Vec<_> = lab.hosts.iter().map(|host| host.init_pid).collect();
    assert_eq!(before, after, "a second up restarted hosts");
    let back = lab.ssh("lab-2", "true");
    assert!(
        back.status.success(),
        "up did not bring lab-2's sshd back:\n{}",
        describe(&back)
    );
}

#[test]
fn up_writes_cluster_file_and_known_hosts() {
    let Some(lab) = Lab::start_with(
        "up_writes_cluster_file_and_known_hosts",
        3,
        &["--roles", "controller,controller+worker,worker"],
    ) else {
        return;
    };
    let cluster = fs::read_to_string(lab.dir.join("cluster.yaml")).unwrap();
    let cluster: serde_json::Value = yaml_serde::from_str(&cluster).expect("cluster.yaml is YAML");
    assert_eq!(cluster["apiVersion"], "k0sctl.k0sproject.io/v1beta1");
    assert_eq!(cluster["kind"], "Cluster");
    let hosts = cluster["spec"]["hosts"].as_array().unwrap();
    let roles: Vec<_> = hosts
        .iter()
        .map(|host| host["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["controller", "controller+worker", "worker"]);
    assert_eq!(hosts[1]["ssh"]["user"], "ops");
    assert_eq!(hosts[0]["ssh"]["port"], 22);
    assert_eq!(hosts[0]["ssh"]["keyPath"], lab.key_path().to_str().unwrap());
    assert_eq!(hosts[2]["ssh"]["address"], format!("{}.13", lab.subnet));

    let known_hosts = fs::read_to_string(lab.known_hosts()).unwrap();
    for host in &lab.hosts {
        let line = known_hosts
            .lines()
            .find(|line| line.starts_with(&format!("{} ", host.address)));
        let line = line.unwrap_or_else(|| panic!("known_hosts has no line for {}", host.address));
        assert!(line.contains("ssh-ed25519"), "{line}");
    }
    let keys: std::collections::HashSet<_> = known_hosts
        .lines()
        .map(|line| line.split(' ').nth(2))
        .collect();
    assert_eq!(keys.len(), 3, "hosts share a host key");
}

#[test]
fn disk_size_limits_var_lib() {
    let Some(lab) = Lab::start_with("disk_size_limits_var_lib", 1, &["--disk-size", "8M"]) else {
        return;
    };
    let size = lab.ssh("lab-1", "df --output=size -k /var/lib | tail -n 1");
    assert_eq!(stdout(&size).trim(), "8192", "{}", describe(&size));
    let fill = lab.ssh("lab-1", "head -c 10000000 /dev/zero > /var/lib/fill");
    assert!(!fill.status.success(), "10 MB fit into an 8 MB /var/lib");
    assert!(
        stderr(&fill).contains("No space left on device"),
        "{}",
        describe(&fill)
    );
}

#[test]
fn down_ends_every_host_process() {
    let Some(lab) = Lab::start("down_ends_every_host_process", 2) else {
        return;
    };
    // A background process of the host, like the k0s double's service, must end with the host.
    let spawn = lab.ssh(
        "lab-1",
        "setsid sleep 600 </dev/null >/dev/null 2>&1 & echo started",
    );
    assert!(spawn.status.success(), "{}", describe(&spawn));
    let inits: Vec<u32> = lab.hosts.iter().filter_map(|host| host.init_pid).collect();
    assert_eq!(inits.len(), 2);
    let members = namespace_members(inits[0]);
    assert!(
        members.len() >= 3,
        "expected init, sshd and sleep in lab-1, found {members:?}"
    );

    let down = lab.run(&["down"]);
    assert!(down.status.success(), "{}", describe(&down));
    for pid in inits.iter().chain(&members) {
        assert!(
            !process_runs(*pid),
            "process {pid} of the lab survived down"
        );
    }
    assert!(
        !lab.dir.exists(),
        "down left the state folder {}",
        lab.dir.display()
    );
}

#[test]
fn down_cleans_up_after_killed_up() {
    let Some(lab) = Lab::start("down_cleans_up_after_killed_up", 1) else {
        return;
    };
    // A second `up` that is killed while it starts two more hosts leaves them behind.
    let mut up = lab
        .command(&["up", "3"])
        .spawn()
        .expect("spawn scripts/lab up");
    let ready = lab.dir.join("hosts/lab-3/ready");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = up.kill();
    let _ = up.wait();
    let leftovers: Vec<u32> = ["lab-1", "lab-2", "lab-3"]
        .iter()
        .filter_map(|name| recorded_init(&lab.dir, name))
        .collect();
    assert!(
        !leftovers.is_empty(),
        "no host was recorded before the kill"
    );

    let down = lab.run(&["down"]);
    assert!(down.status.success(), "{}", describe(&down));
    for pid in leftovers {
        assert!(
            !process_runs(pid),
            "host init {pid} survived down after a killed up"
        );
    }
}

#[test]
fn subnet_outside_loopback_is_rejected() {
    let output = Command::new(lab_script())
        .args(["up", "1"])
        .env("AIRLOCK_LAB", "/tmp/airlock-lab-never-created")
        .env("AIRLOCK_LAB_SUBNET", "10.0.0")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("outside 127.0.0.0/8"),
        "{}",
        describe(&output)
    );
    assert!(!Path::new("/tmp/airlock-lab-never-created").exists());
}

#[test]
fn non_root_user_is_rejected() {
    if !require_root("non_root_user_is_rejected") {
        return;
    }
    let output = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(lab_script())
        .args(["up", "1"])
        .env("AIRLOCK_LAB", "/tmp/airlock-lab-never-created")
        .env("AIRLOCK_LAB_SUBNET", "127.0.250")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("must run as root"),
        "{}",
        describe(&output)
    );
}

#[test]
fn missing_tool_is_named() {
    if !require_root("missing_tool_is_named") {
        return;
    }
    // A PATH with every program of the machine except ssh-keygen.
    let bin = tempfile::tempdir().unwrap();
    for dir in ["/usr/bin", "/usr/sbin"] {
        for entry in fs::read_dir(dir).unwrap().flatten() {
            if entry.file_name() != "ssh-keygen" {
                let _ = symlink(entry.path(), bin.path().join(entry.file_name()));
            }
        }
    }
    let output = Command::new(lab_script())
        .args(["up", "1"])
        .env("PATH", bin.path())
        .env("AIRLOCK_LAB", "/tmp/airlock-lab-never-created")
        .env("AIRLOCK_LAB_SUBNET", "127.0.250")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("missing tools: ssh-keygen"),
        "{}",
        describe(&output)
    );
    assert!(
        stderr(&output).contains("scripts/setup"),
        "{}",
        describe(&output)
    );
}

#[test]
fn port_taken_on_every_address_asks_for_lab_port() {
    if !require_root("port_taken_on_every_address_asks_for_lab_port") {
        return;
    }
    // The wildcard listener lives in a private network namespace, so nothing is exposed on
    // the machine's interfaces.
    let state = tempfile::tempdir().unwrap();
    let script = format!(
        "ip link set lo up; \
         /usr/bin/python3 -c 'import socket,time; s=socket.socket(); s.bind((\"0.0.0.0\", 22)); s.listen(); time.sleep(30)' \
           </dev/null >/dev/null 2>&1 & \
         for i in $(seq 100); do ss -Hltn 'sport = :22' | grep -q . && break; sleep 0.05; done; \
         AIRLOCK_LAB={} AIRLOCK_LAB_SUBNET=127.0.1 {} up 1; status=$?; kill $!; exit $status",
        state.path().join("lab").display(),
        lab_script().display()
    );
    let output = Command::new("unshare")
        .args(["--net", "bash", "-c", &script])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        stderr(&output).contains("port 22 is already taken on every address"),
        "{}",
        describe(&output)
    );
    assert!(
        stderr(&output).contains("AIRLOCK_LAB_PORT"),
        "{}",
        describe(&output)
    );
}

#[test]
fn address_in_use_names_subnet() {
    let Some(lab) = Lab::start("address_in_use_names_subnet", 1) else {
        return;
    };
    let other = tempfile::tempdir().unwrap();
    let output = Command::new(lab_script())
        .args(["up", "1"])
        .env("AIRLOCK_LAB", other.path().join("lab"))
        .env("AIRLOCK_LAB_SUBNET", &lab.subnet)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains(&format!("{}.11:22 is already in use", lab.subnet)),
        "{}",
        describe(&output)
    );
    assert!(
        stderr(&output).contains("AIRLOCK_LAB_SUBNET"),
        "{}",
        describe(&output)
    );
    assert!(
        !other.path().join("lab").exists(),
        "a failed up left a state folder"
    );
}

fn process_runs(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(") ").next().unwrap_or("").starts_with('Z'),
        Err(_) => false,
    }
}

/// Root-namespace PIDs of every process in the mount namespace of `pid`.
fn namespace_members(pid: u32) -> Vec<u32> {
    let namespace = fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap();
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|candidate| {
            fs::read_link(format!("/proc/{candidate}/ns/mnt"))
                .ok()
                .as_ref()
                == Some(&namespace)
        })
        .collect()
}

fn recorded_init(lab_dir: &Path, host: &str) -> Option<u32> {
    let record = fs::read_to_string(lab_dir.join("hosts").join(host).join("host.env")).ok()?;
    record
        .lines()
        .find_map(|line| line.strip_prefix("init_pid="))?
        .parse()
        .ok()
}
