//! `spec.hosts[]`: the machines of the cluster, with k0sctl's defaults and rules.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::Serialize;

use super::address::{HostAddress, dns_name_error};
use super::deserialize::closest;
use super::flags::{Flags, has_balanced_quotes};
use super::index::{Site, child, item};
use super::locate::Problems;
use super::raw::{RawFile, RawHost, RawOpenSsh, RawSsh, ScalarText};

/// k0s's default data directory on Linux.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/k0s";
/// Where k0sctl installs the k0s binary on Linux.
pub const DEFAULT_K0S_INSTALL_PATH: &str = "/usr/local/bin/k0s";
/// The kubelet root directory airlock gives every host that runs workloads. KubeVirt and most
/// CSI drivers hard-code this path, while k0s would otherwise use `<data-dir>/kubelet`.
pub const DEFAULT_KUBELET_ROOT_DIR: &str = "/var/lib/kubelet";

/// What a host runs.
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

    /// Whether the host runs the Kubernetes control plane.
    pub fn is_controller(self) -> bool {
        !matches!(self, Role::Worker)
    }

    /// Whether the host runs a kubelet and so takes workloads.
    pub fn runs_workloads(self) -> bool {
        !matches!(self, Role::Controller)
    }

    /// The argument of `k0s install`: `controller` for every controller role.
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

/// How airlock reaches a host over SSH.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Ssh {
    pub address: HostAddress,
    pub port: u16,
    pub user: String,
    /// The private key, resolved against the cluster file's directory and `~`. `None` leaves the
    /// choice to the SSH client (agent, then default key files).
    pub key_path: Option<PathBuf>,
    /// The expected host key, when the cluster file pins one.
    pub host_key: Option<String>,
    /// A jump host to connect through.
    pub bastion: Option<Box<Ssh>>,
}

impl fmt::Display for Ssh {
    /// Formats as `user@address:port`, with IPv6 addresses in brackets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.address.ip() {
            Some(IpAddr::V6(ip)) => write!(f, "{}@[{ip}]:{}", self.user, self.port),
            _ => write!(f, "{}@{}:{}", self.user, self.address, self.port),
        }
    }
}

/// Where the content of an uploaded file comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum FileSource {
    /// A local file, directory or glob pattern, resolved against the cluster file's directory.
    Local(PathBuf),
    /// A URL the host downloads itself.
    Url(String),
    /// Inline content.
    Data(String),
}

/// One entry of a host's `files[]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadFile {
    pub name: Option<String>,
    pub source: FileSource,
    pub destination_dir: Option<String>,
    pub destination: Option<String>,
    /// File mode; `None` keeps the local file's mode.
    pub perm: Option<u32>,
    /// Mode of directories created for the upload.
    pub dir_perm: u32,
    pub user: Option<String>,
    pub group: Option<String>,
}

/// Shell commands by action (`apply`, `install`, ...) and stage (`before`, `after`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Hooks(pub BTreeMap<String, BTreeMap<String, Vec<String>>>);

impl Hooks {
    /// The actions hooks can attach to, as k0sctl runs them.
    pub const ACTIONS: [&'static str; 6] =
        ["connect", "apply", "install", "upgrade", "reset", "backup"];
    pub const STAGES: [&'static str; 2] = ["before", "after"];

    /// The commands for one action and stage, in the order written.
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
    /// The address airlock connects to.
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
    // Hosts dropped for other problems may have been controllers; only a complete list proves
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

    let mut install_flags = Flags::default();
    for (flag_index, flag) in raw.install_flags.iter().flatten().enumerate() {
        if !has_balanced_quotes(flag) {
            problems.value(
                &item(&at("installFlags"), flag_index),
                format!("unbalanced quotes in install flag {flag:?}"),
                "close the quote, or escape a literal quote with a backslash",
            );
        }
        install_flags.add(flag);
    }

    let role = effective_role(&raw.role, &install_flags, &at("role"), problems);
    let ssh = connection(&raw, &path, problems);

    let mut data_dir = raw.data_dir.clone().filter(|dir| !dir.is_empty());
    if let Some(dir) = install_flags
        .value("--data-dir")
        .filter(|dir| !dir.is_empty())
    {
        tracing::debug!(
            host = index + 1,
            data_dir = dir.as_str(),
            "dataDir taken from --data-dir in installFlags"
        );
        install_flags.remove("--data-dir");
        data_dir = Some(dir);
    }
    let mut kubelet_root_dir = raw.kubelet_root_dir.clone().filter(|dir| !dir.is_empty());
    if let Some(dir) = install_flags
        .value("--kubelet-root-dir")
        .filter(|dir| !dir.is_empty())
    {
        install_flags.remove("--kubelet-root-dir");
        kubelet_root_dir = Some(dir);
    }

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

    let private_address = raw
        .private_address
        .as_deref()
        .filter(|a| !a.is_empty())
        .and_then(|address| {
            let parsed = address.parse::<IpAddr>().ok();
            if parsed.is_none() {
                problems.value(
                    &at("privateAddress"),
                    format!("invalid privateAddress {address:?}: not an IP address"),
                    "write an IP address such as 10.0.0.5, or remove the field",
                );
            }
            parsed
        });

    let hostname = raw
        .hostname
        .as_deref()
        .filter(|h| !h.is_empty())
        .map(str::to_ascii_lowercase);
    if let Some(name) = &hostname
        && let Some(reason) = dns_name_error(name)
    {
        problems.value(
            &at("hostname"),
            format!("invalid hostname {name:?}: {reason}"),
            "use a DNS name such as worker-1, which becomes the node name",
        );
    }
    check_kubelet_extra_args(
        &install_flags,
        hostname.as_deref(),
        &at("installFlags"),
        problems,
    );

    let environment = environment(
        raw.environment.unwrap_or_default(),
        &at("environment"),
        problems,
    );
    let files = raw
        .files
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .filter_map(|(file_index, file)| {
            upload_file(file, &item(&at("files"), file_index), problems)
        })
        .collect();
    let hooks = hooks(raw.hooks.unwrap_or_default(), &at("hooks"), problems);

    let use_existing_k0s = raw.use_existing_k0s.unwrap_or(false);
    let upload_binary = raw.upload_binary.unwrap_or(false);
    if use_existing_k0s {
        let conflicts = [
            ("uploadBinary", upload_binary),
            ("k0sBinaryPath", raw.k0s_binary_path.is_some()),
            ("k0sDownloadURL", raw.k0s_download_url.is_some()),
        ];
        for (field, set) in conflicts {
            if set {
                problems.value(
                    &at(field),
                    format!("{field} cannot be set when useExistingK0s is true"),
                    format!("remove {field}, or useExistingK0s"),
                );
            }
        }
    }

    let role = role?;
    let ssh = ssh?;
    let kubelet_root_dir = kubelet_root_dir.or_else(|| {
        role.runs_workloads()
            .then(|| DEFAULT_KUBELET_ROOT_DIR.to_string())
    });
    Some(Host {
        index,
        role,
        ssh,
        install_flags,
        private_address,
        private_interface: raw.private_interface.filter(|i| !i.is_empty()),
        hostname,
        data_dir: data_dir.unwrap_or_else(|| DEFAULT_DATA_DIR.to_string()),
        kubelet_root_dir,
        environment,
        no_taints,
        reset: raw.reset.unwrap_or(false),
        upload_binary,
        use_existing_k0s,
        k0s_binary_path: raw
            .k0s_binary_path
            .filter(|p| !p.is_empty())
            .map(|p| problems.locator.source.resolve_path(&p)),
        k0s_install_path: raw
            .k0s_install_path
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| DEFAULT_K0S_INSTALL_PATH.to_string()),
        k0s_download_url: raw.k0s_download_url.filter(|u| !u.is_empty()),
        os: raw.os.filter(|os| !os.is_empty()),
        files,
        hooks,
    })
}

/// The role after k0sctl's normalisation: `--single` in installFlags makes the host `single`,
/// `--enable-worker` makes it `controller+worker`.
fn effective_role(
    written: &Option<String>,
    flags: &Flags,
    path: &str,
    problems: &mut Problems<'_>,
) -> Option<Role> {
    if flags.is_enabled("--single") {
        return Some(Role::Single);
    }
    if flags.is_enabled("--enable-worker") {
        return Some(Role::ControllerWorker);
    }
    let valid = Role::NAMES.join(", ");
    match written.as_deref() {
        None | Some("") => {
            problems.key(path, "missing role", format!("set role to one of: {valid}"));
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

/// The SSH settings from `ssh` or `openSSH`; other connection kinds are rejected because
/// airlock connects with its own SSH client.
fn connection(raw: &RawHost, path: &str, problems: &mut Problems<'_>) -> Option<Ssh> {
    if raw.win_rm.is_some() {
        problems.key(
            &child(path, "winRM"),
            "winRM hosts are not supported",
            "airlock installs Linux hosts over SSH; use an ssh block",
        );
        return None;
    }
    if let Some(localhost) = &raw.localhost
        && localhost
            .get("enabled")
            .and_then(yaml_serde::Value::as_bool)
            != Some(false)
    {
        problems.key(
            &child(path, "localhost"),
            "localhost connections are not supported",
            "reach this machine through an ssh block, for example address 127.0.0.1",
        );
        return None;
    }
    match (&raw.ssh, &raw.open_ssh) {
        (Some(_), Some(_)) => {
            problems.key(
                &child(path, "openSSH"),
                "both ssh and openSSH are set",
                "keep one of the two blocks",
            );
            None
        }
        (Some(ssh), None) => ssh_settings(ssh, &child(path, "ssh"), problems),
        (None, Some(open_ssh)) => open_ssh_settings(open_ssh, &child(path, "openSSH"), problems),
        (None, None) => {
            problems.key(
                path,
                "missing ssh block",
                "add ssh: {address: ..., user: root, port: 22}",
            );
            None
        }
    }
}

fn ssh_settings(raw: &RawSsh, path: &str, problems: &mut Problems<'_>) -> Option<Ssh> {
    let bastion = match &raw.bastion {
        Some(bastion) => Some(Box::new(ssh_settings(
            bastion,
            &child(path, "bastion"),
            problems,
        )?)),
        None => None,
    };
    let endpoint = Endpoint {
        address: &raw.address,
        port: raw.port,
        user: &raw.user,
        key_path: &raw.key_path,
    };
    let mut ssh = endpoint.build(path, problems)?;
    ssh.host_key = raw.host_key.clone().filter(|k| !k.is_empty());
    ssh.bastion = bastion;
    Some(ssh)
}

fn open_ssh_settings(raw: &RawOpenSsh, path: &str, problems: &mut Problems<'_>) -> Option<Ssh> {
    for (field, set) in [
        ("configPath", raw.config_path.is_some()),
        ("options", raw.options.is_some()),
        ("disableMultiplexing", raw.disable_multiplexing.is_some()),
    ] {
        if set {
            tracing::warn!(field = %child(path, field), "airlock uses its own SSH client and ignores {field} of openSSH");
        }
    }
    let endpoint = Endpoint {
        address: &raw.address,
        port: raw.port,
        user: &raw.user,
        key_path: &raw.key_path,
    };
    endpoint.build(path, problems)
}

/// The fields `ssh` and `openSSH` share.
struct Endpoint<'r> {
    address: &'r Option<ScalarText>,
    port: Option<u16>,
    user: &'r Option<String>,
    key_path: &'r Option<String>,
}

impl Endpoint<'_> {
    /// Checks the address and port and applies the defaults: user root, port 22.
    fn build(&self, path: &str, problems: &mut Problems<'_>) -> Option<Ssh> {
        let address = address(self.address.as_ref().map(|a| a.0.as_str()), path, problems);
        let port = port(self.port, path, problems);
        let source = problems.locator.source;
        Some(Ssh {
            address: address?,
            port: port?,
            user: self
                .user
                .clone()
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| "root".to_string()),
            key_path: self
                .key_path
                .as_deref()
                .filter(|p| !p.is_empty())
                .map(|p| source.resolve_path(p)),
            host_key: None,
            bastion: None,
        })
    }
}

fn address(written: Option<&str>, path: &str, problems: &mut Problems<'_>) -> Option<HostAddress> {
    let field = child(path, "address");
    match written.filter(|a| !a.is_empty()) {
        None => {
            problems.key(
                &field,
                format!("missing {field}"),
                "set the host's IP address or DNS name",
            );
            None
        }
        Some(text) => HostAddress::parse(text)
            .map_err(|error| {
                problems.value(
                    &field,
                    error.to_string(),
                    "write an IP address such as 10.0.0.5 or a DNS name such as node1.example.com",
                )
            })
            .ok(),
    }
}

fn port(written: Option<u16>, path: &str, problems: &mut Problems<'_>) -> Option<u16> {
    match written {
        Some(0) => {
            problems.value(
                &child(path, "port"),
                "invalid port 0",
                "use the host's SSH port, usually 22",
            );
            None
        }
        Some(port) => Some(port),
        None => Some(22),
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

fn upload_file(raw: RawFile, path: &str, problems: &mut Problems<'_>) -> Option<UploadFile> {
    let source_name = problems.locator.source.name.clone();
    let data = raw.data.filter(|d| !d.trim().is_empty());
    let src = raw.src.filter(|s| !s.is_empty());
    let destination = raw.dst.filter(|d| !d.is_empty());
    let destination_dir = raw.dst_dir.filter(|d| !d.is_empty());
    let mut valid = true;

    let source = match (src, data) {
        (Some(_), Some(_)) => {
            problems.key(
                &child(path, "data"),
                "both src and data are set",
                "keep one of the two",
            );
            None
        }
        (None, None) => {
            problems.key(
                path,
                "src or data required",
                "set src to a local path or URL, or data to the content",
            );
            None
        }
        (None, Some(data)) => Some(FileSource::Data(data)),
        (Some(src), None) if src.contains("://") => Some(FileSource::Url(src)),
        (Some(src), None) => {
            let resolved = problems.locator.source.resolve_path(&src);
            let is_glob = src.contains(['*', '?', '[', ']', '{', '}', '%']);
            // NOTE: glob patterns are kept unexpanded; the upload step matches them.
            if !is_glob && !resolved.exists() {
                problems.value(
                    &child(path, "src"),
                    format!("file {} not found", resolved.display()),
                    format!("relative paths resolve against the directory of {source_name}"),
                );
                valid = false;
            }
            Some(FileSource::Local(resolved))
        }
    };
    if destination.is_none() && destination_dir.is_none() {
        problems.key(
            path,
            "dst or dstDir required",
            "set dst to the file's path on the host, or dstDir to its directory",
        );
        valid = false;
    }
    if matches!(source, Some(FileSource::Data(_)))
        && destination.is_none()
        && raw.name.as_deref().is_none_or(str::is_empty)
    {
        problems.key(
            path,
            "name or dst required for data",
            "set dst, or name to use as the file name under dstDir",
        );
        valid = false;
    }
    let perm = file_mode(raw.perm.map(|p| p.0), &child(path, "perm"), problems);
    let dir_perm = file_mode(raw.dir_perm.map(|p| p.0), &child(path, "dirPerm"), problems);

    Some(UploadFile {
        name: raw.name.filter(|n| !n.is_empty()),
        source: source.filter(|_| valid)?,
        destination_dir,
        destination,
        perm: perm?,
        dir_perm: dir_perm?.unwrap_or(0o755),
        user: raw.user.filter(|u| !u.is_empty()),
        group: raw.group.filter(|g| !g.is_empty()),
    })
}

/// Reads a file mode written as octal digits (`0600`, `"0755"`, `644`). Returns `Some(None)` when
/// the field is absent and `None` after recording a problem.
fn file_mode(
    written: Option<String>,
    path: &str,
    problems: &mut Problems<'_>,
) -> Option<Option<u32>> {
    let Some(text) = written.filter(|t| !t.is_empty()) else {
        return Some(None);
    };
    let digits = text.strip_prefix("0o").unwrap_or(&text);
    let significant = digits.trim_start_matches('0');
    let fix = "write the mode as octal digits such as 0644";
    if digits.is_empty() || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        problems.value(
            path,
            format!("invalid permission {text:?}: not an octal number"),
            fix,
        );
        return None;
    }
    if significant.is_empty() {
        problems.value(
            path,
            format!("invalid permission {text:?}: the mode is zero"),
            fix,
        );
        return None;
    }
    if significant.len() > 4 {
        problems.value(
            path,
            format!("invalid permission {text:?}: too many digits"),
            fix,
        );
        return None;
    }
    let mode = u32::from_str_radix(significant, 8).ok()?;
    // The owner digit is the third from the right; below 4 the owner could not read the file,
    // which almost always means the mode was written in decimal.
    if (mode >> 6) & 0o7 < 4 {
        problems.value(
            path,
            format!("invalid permission {text:?}: the owner would have unconventional access"),
            fix,
        );
        return None;
    }
    Some(Some(mode))
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
