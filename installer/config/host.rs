//! `spec.hosts[]`: the machines of the cluster, with k0sctl's defaults and rules.
//! Their connection settings are in `ssh.rs` and their uploads in `files.rs`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::Serialize;

use super::address::{HostAddress, dns_name_error};
use super::deserialize::closest;
use super::files::{UploadFile, upload_file};
use super::flags::{Flags, has_balanced_quotes};
use super::index::{Site, child, item};
use super::locate::Problems;
use super::raw::{RawHost, ScalarText};
use super::ssh::{Ssh, connection};

/// k0s's default data directory on Linux.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/k0s";
/// The path where k0sctl installs the k0s binary on Linux.
pub const DEFAULT_K0S_INSTALL_PATH: &str = "/usr/local/bin/k0s";
/// The kubelet root directory airlock gives every host that runs workloads. KubeVirt and most
/// CSI drivers hard-code this path, while k0s would otherwise use `<data-dir>/kubelet`.
pub const DEFAULT_KUBELET_ROOT_DIR: &str = "/var/lib/kubelet";

/// The part of the cluster a host runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Role {
    #[serde(rename = "controller")]
    Controller,
    #[serde(rename = "worker")]
    Worker,
    #[serde(rename = "controller+worker")]
    ControllerWorker,
    /// The only host of a one-node cluster: controller and worker in one k0s process.
    #[serde(rename = "single")]
    Single,
}

impl Role {
    /// The role names a cluster file may use.
    pub const NAMES: [&'static str; 4] = ["controller", "worker", "controller+worker", "single"];

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "controller" => Some(Role::Controller),
            "worker" => Some(Role::Worker),
            "controller+worker" => Some(Role::ControllerWorker),
            "single" => Some(Role::Single),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Controller => "controller",
            Role::Worker => "worker",
            Role::ControllerWorker => "controller+worker",
            Role::Single => "single",
        }
    }

    /// Checks whether the host runs the Kubernetes control plane.
    pub fn is_controller(self) -> bool {
        !matches!(self, Role::Worker)
    }

    /// Checks whether the host runs a kubelet and so takes workloads.
    pub fn runs_workloads(self) -> bool {
        !matches!(self, Role::Controller)
    }

    /// Returns the argument of `k0s install`: `controller` for every controller role.
    pub fn k0s_role(self) -> &'static str {
        if self.is_controller() {
            "controller"
        } else {
            "worker"
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Shell commands by action (`apply`, `install`, ...) and stage (`before`, `after`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Hooks(pub BTreeMap<String, BTreeMap<String, Vec<String>>>);

impl Hooks {
    /// The actions hooks can attach to, as k0sctl runs them.
    pub const ACTIONS: [&'static str; 6] =
        ["connect", "apply", "install", "upgrade", "reset", "backup"];
    pub const STAGES: [&'static str; 2] = ["before", "after"];

    /// Returns the commands for one action and stage, in the order written.
    pub fn commands(&self, action: &str, stage: &str) -> &[String] {
        self.0
            .get(action)
            .and_then(|stages| stages.get(stage))
            .map_or(&[], Vec::as_slice)
    }
}

/// One host of the cluster, with defaults applied.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Host {
    /// Position in `spec.hosts`, from 0.
    pub index: usize,
    /// The effective role, after `--single` and `--enable-worker` in `installFlags`.
    pub role: Role,
    pub ssh: Ssh,
    /// The user's `installFlags`, without `--data-dir` and `--kubelet-root-dir`, which move into
    /// the fields below.
    #[serde(serialize_with = "serialize_flags")]
    pub install_flags: Flags,
    pub private_address: Option<IpAddr>,
    pub private_interface: Option<String>,
    /// The node name override, lower-cased.
    pub hostname: Option<String>,
    pub data_dir: String,
    /// `DEFAULT_KUBELET_ROOT_DIR` for hosts that run workloads unless the file sets one;
    /// `None` for plain controllers that set none.
    pub kubelet_root_dir: Option<String>,
    pub environment: BTreeMap<String, String>,
    pub no_taints: bool,
    /// Whether apply removes this host from the cluster.
    pub reset: bool,
    pub upload_binary: bool,
    pub use_existing_k0s: bool,
    pub k0s_binary_path: Option<PathBuf>,
    pub k0s_install_path: String,
    pub k0s_download_url: Option<String>,
    /// The OS ID that overrides detection.
    pub os: Option<String>,
    pub files: Vec<UploadFile>,
    pub hooks: Hooks,
}

fn serialize_flags<S: serde::Serializer>(flags: &Flags, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(flags.iter())
}

impl Host {
    /// Returns the address airlock connects to.
    pub fn address(&self) -> &HostAddress {
        &self.ssh.address
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.ssh.address)?;
        if self.ssh.port != 22 {
            write!(f, ":{}", self.ssh.port)?;
        }
        Ok(())
    }
}

/// Builds every host and checks the rules that concern the host list as a whole.
pub(super) fn build_hosts(raw: Option<Vec<RawHost>>, problems: &mut Problems<'_>) -> Vec<Host> {
    let path = "spec.hosts";
    let raw = raw.unwrap_or_default();
    if raw.is_empty() {
        problems.key(
            path,
            "at least one host required",
            "add a host under spec.hosts",
        );
        return Vec::new();
    }
    let total = raw.len();
    let hosts: Vec<Host> = raw
        .into_iter()
        .enumerate()
        .filter_map(|(index, host)| build_host(index, host, problems))
        .collect();

    if total > 1 {
        for host in hosts.iter().filter(|host| host.role == Role::Single) {
            problems.value(
                &child(&item(path, host.index), "role"),
                format!("{total} hosts defined but host {host} has role \"single\""),
                "use role controller+worker in a cluster of several hosts, or remove the other hosts",
            );
        }
    }
    check_unique_addresses(&hosts, problems);

    let controllers: Vec<&Host> = hosts
        .iter()
        .filter(|host| host.role.is_controller())
        .collect();
    // Hosts dropped for other problems may have been controllers, so only a complete list proves
    // there are none.
    if controllers.is_empty() && hosts.len() == total {
        problems.key(
            path,
            "no hosts with a controller role defined",
            "give at least one host the role controller, controller+worker or single",
        );
    }
    if !controllers.is_empty() && controllers.iter().all(|host| host.reset) {
        problems.value(
            &child(&item(path, controllers[0].index), "reset"),
            "all controllers are marked to be reset, which would destroy the cluster",
            "keep at least one controller without reset: true, or remove the cluster with k0s reset",
        );
    }
    hosts
}

fn check_unique_addresses(hosts: &[Host], problems: &mut Problems<'_>) {
    let mut seen: Vec<(&HostAddress, u16, usize)> = Vec::new();
    for host in hosts {
        let address_path = |index| child(&item("spec.hosts", index), "ssh.address");
        if let Some(&(_, _, first)) = seen
            .iter()
            .find(|(a, p, _)| **a == host.ssh.address && *p == host.ssh.port)
        {
            let first_at = problems
                .location(&address_path(first), Site::Value)
                .map(|location| format!(" ({location})"))
                .unwrap_or_default();
            problems.value(
                &address_path(host.index),
                format!(
                    "host address {}:{} is already used by host {}{first_at}",
                    host.ssh.address,
                    host.ssh.port,
                    first + 1
                ),
                "give each host its own address, or its own ssh.port",
            );
        } else {
            seen.push((&host.ssh.address, host.ssh.port, host.index));
        }
    }
}

/// Builds one host, or returns `None` after recording why it cannot be built.
fn build_host(index: usize, raw: RawHost, problems: &mut Problems<'_>) -> Option<Host> {
    let path = item("spec.hosts", index);
    let at = |field: &str| child(&path, field);

    let mut install_flags =
        install_flags(raw.install_flags.as_deref(), &at("installFlags"), problems);
    let role = effective_role(&raw.role, &install_flags, &path, problems);
    let ssh = connection(&raw, &path, problems);

    // k0sctl moves these two flags into their fields, so that the fields win over defaults and
    // the install command carries each once.
    let data_dir = take_flag_value(&mut install_flags, "--data-dir").or(raw.data_dir.clone());
    let kubelet_root_dir =
        take_flag_value(&mut install_flags, "--kubelet-root-dir").or(raw.kubelet_root_dir.clone());

    let no_taints = raw.no_taints.unwrap_or(false) || install_flags.is_enabled("--no-taints");
    if no_taints && role.is_some_and(|role| role != Role::ControllerWorker) {
        let field = if raw.no_taints == Some(true) {
            at("noTaints")
        } else {
            at("installFlags")
        };
        problems.value(
            &field,
            "noTaints can only be true for the controller+worker role",
            "remove noTaints, or set role: controller+worker",
        );
    }

    let private_address = private_address(
        raw.private_address.as_deref(),
        &at("privateAddress"),
        problems,
    );
    let hostname = hostname(raw.hostname.as_deref(), &at("hostname"), problems);
    check_kubelet_extra_args(
        &install_flags,
        hostname.as_deref(),
        &at("installFlags"),
        problems,
    );
    check_binary_source(&raw, &path, problems);

    let environment = environment(
        raw.environment.unwrap_or_default(),
        &at("environment"),
        problems,
    );
    let files = (raw.files.unwrap_or_default().into_iter().enumerate())
        .filter_map(|(file_index, file)| {
            upload_file(file, &item(&at("files"), file_index), problems)
        })
        .collect();
    let hooks = hooks(raw.hooks.unwrap_or_default(), &at("hooks"), problems);

    let role = role?;
    let ssh = ssh?;
    let not_empty = |text: &String| !text.is_empty();
    let kubelet_root_dir = kubelet_root_dir.filter(not_empty).or_else(|| {
        role.runs_workloads()
            .then(|| DEFAULT_KUBELET_ROOT_DIR.to_string())
    });
    let source = problems.locator.source;
    Some(Host {
        index,
        role,
        ssh,
        install_flags,
        private_address,
        private_interface: raw.private_interface.filter(not_empty),
        hostname,
        data_dir: data_dir
            .filter(not_empty)
            .unwrap_or_else(|| DEFAULT_DATA_DIR.to_string()),
        kubelet_root_dir,
        environment,
        no_taints,
        reset: raw.reset.unwrap_or(false),
        upload_binary: raw.upload_binary.unwrap_or(false),
        use_existing_k0s: raw.use_existing_k0s.unwrap_or(false),
        k0s_binary_path: raw
            .k0s_binary_path
            .filter(not_empty)
            .map(|p| source.resolve_path(&p)),
        k0s_install_path: (raw.k0s_install_path.filter(not_empty))
            .unwrap_or_else(|| DEFAULT_K0S_INSTALL_PATH.to_string()),
        k0s_download_url: raw.k0s_download_url.filter(not_empty),
        os: raw.os.filter(not_empty),
        files,
        hooks,
    })
}

/// Reads `installFlags`, checking that each entry's quotes are balanced.
fn install_flags(written: Option<&[String]>, path: &str, problems: &mut Problems<'_>) -> Flags {
    let mut flags = Flags::default();
    for (index, flag) in written.unwrap_or_default().iter().enumerate() {
        if !has_balanced_quotes(flag) {
            problems.value(
                &item(path, index),
                format!("unbalanced quotes in install flag {flag:?}"),
                "close the quote, or escape a literal quote with a backslash",
            );
        }
        flags.add(flag);
    }
    flags
}

/// Removes a flag from `flags` and returns its value, when it has a non-empty one.
fn take_flag_value(flags: &mut Flags, name: &str) -> Option<String> {
    let value = flags.value(name).filter(|value| !value.is_empty())?;
    tracing::debug!(
        flag = name,
        value = value.as_str(),
        "field taken from installFlags"
    );
    flags.remove(name);
    Some(value)
}

fn private_address(
    written: Option<&str>,
    path: &str,
    problems: &mut Problems<'_>,
) -> Option<IpAddr> {
    let address = written.filter(|a| !a.is_empty())?;
    let parsed = address.parse::<IpAddr>().ok();
    if parsed.is_none() {
        problems.value(
            path,
            format!("invalid privateAddress {address:?}: not an IP address"),
            "write an IP address such as 10.0.0.5, or remove the field",
        );
    }
    parsed
}

/// Reads the node name override, lower-cased as k0sctl does.
fn hostname(written: Option<&str>, path: &str, problems: &mut Problems<'_>) -> Option<String> {
    let name = written.filter(|h| !h.is_empty())?.to_ascii_lowercase();
    if let Some(reason) = dns_name_error(&name) {
        problems.value(
            path,
            format!("invalid hostname {name:?}: {reason}"),
            "use a DNS name such as worker-1, which becomes the node name",
        );
    }
    Some(name)
}

/// `useExistingK0s` excludes every other way of getting the k0s binary onto the host.
fn check_binary_source(raw: &RawHost, path: &str, problems: &mut Problems<'_>) {
    if raw.use_existing_k0s != Some(true) {
        return;
    }
    let conflicts = [
        ("uploadBinary", raw.upload_binary == Some(true)),
        ("k0sBinaryPath", raw.k0s_binary_path.is_some()),
        ("k0sDownloadURL", raw.k0s_download_url.is_some()),
    ];
    for (field, set) in conflicts {
        if set {
            problems.value(
                &child(path, field),
                format!("{field} cannot be set when useExistingK0s is true"),
                format!("remove {field}, or useExistingK0s"),
            );
        }
    }
}

/// Decides the role after k0sctl's normalisation: `--single` in installFlags makes the host `single`,
/// `--enable-worker` makes it `controller+worker`.
fn effective_role(
    written: &Option<String>,
    flags: &Flags,
    host: &str,
    problems: &mut Problems<'_>,
) -> Option<Role> {
    if flags.is_enabled("--single") {
        return Some(Role::Single);
    }
    if flags.is_enabled("--enable-worker") {
        return Some(Role::ControllerWorker);
    }
    let path = &child(host, "role");
    let valid = Role::NAMES.join(", ");
    match written.as_deref() {
        None | Some("") => {
            problems.missing(host, "missing role", format!("set role to one of: {valid}"));
            None
        }
        Some(text) => Role::parse(text).or_else(|| {
            let fix = match closest(text, &Role::NAMES) {
                Some(suggestion) => {
                    format!("did you mean \"{suggestion}\"? The roles are: {valid}")
                }
                None => format!("expected one of: {valid}"),
            };
            problems.value(path, format!("unknown role {text:?}"), fix);
            None
        }),
    }
}

/// Checks `--kubelet-extra-args` and `--enable-cloud-provider`, which the install command reads.
fn check_kubelet_extra_args(
    flags: &Flags,
    hostname: Option<&str>,
    path: &str,
    problems: &mut Problems<'_>,
) {
    if let Err(message) = flags.boolean("--enable-cloud-provider") {
        problems.value(
            path,
            message,
            "write --enable-cloud-provider=true or --enable-cloud-provider=false",
        );
    }
    let Some(extra) = flags.value("--kubelet-extra-args") else {
        return;
    };
    let Some(extra) = Flags::split(&extra) else {
        problems.value(
            path,
            format!("cannot split --kubelet-extra-args {extra:?}: unbalanced quotes"),
            "close the quote in the value",
        );
        return;
    };
    if let (Some(hostname), Some(override_name)) = (hostname, extra.value("--hostname-override"))
        && override_name != hostname
    {
        problems.value(
            path,
            format!("hostname {hostname:?} conflicts with --hostname-override={override_name} in --kubelet-extra-args"),
            "set the node name in one place only, preferably the hostname field",
        );
    }
}

fn environment(
    raw: BTreeMap<String, ScalarText>,
    path: &str,
    problems: &mut Problems<'_>,
) -> BTreeMap<String, String> {
    let mut environment = BTreeMap::new();
    for (key, value) in raw {
        let field = child(path, &key);
        if key.is_empty() || key.contains(['=', '\n', '\r']) {
            problems.key(
                &field,
                format!("invalid environment variable name {key:?}"),
                "use a name without \"=\" or line breaks",
            );
            continue;
        }
        if value.0.contains(['\n', '\r']) {
            problems.value(
                &field,
                format!("environment variable {key} has a line break in its value"),
                "write the value on one line; /etc/environment holds one variable per line",
            );
            continue;
        }
        environment.insert(key, value.0);
    }
    environment
}

fn hooks(
    raw: BTreeMap<String, BTreeMap<String, Vec<String>>>,
    path: &str,
    problems: &mut Problems<'_>,
) -> Hooks {
    let mut checked = BTreeMap::new();
    for (action, stages) in raw {
        let action_path = child(path, &action);
        if !Hooks::ACTIONS.contains(&action.as_str()) {
            let fix = match closest(&action, &Hooks::ACTIONS) {
                Some(suggestion) => format!("did you mean \"{suggestion}\"?"),
                None => format!("expected one of: {}", Hooks::ACTIONS.join(", ")),
            };
            problems.key(&action_path, format!("unknown hook action {action:?}"), fix);
            continue;
        }
        for stage in stages
            .keys()
            .filter(|stage| !Hooks::STAGES.contains(&stage.as_str()))
        {
            problems.key(
                &child(&action_path, stage),
                format!("unknown hook stage {stage:?}"),
                "expected before or after",
            );
        }
        let stages = stages
            .into_iter()
            .filter(|(stage, _)| Hooks::STAGES.contains(&stage.as_str()))
            .collect();
        checked.insert(action, stages);
    }
    Hooks(checked)
}
