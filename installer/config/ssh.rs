//! The connection settings of each host: k0sctl's `ssh` and `openSSH` blocks, with their
//! defaults.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::Serialize;

use super::address::HostAddress;
use super::index::child;
use super::locate::Problems;
use super::raw::{RawHost, RawOpenSsh, RawSsh, ScalarText};

/// The settings airlock connects to a host with over SSH.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Ssh {
    pub address: HostAddress,
    pub port: u16,
    pub user: String,
    /// Whether `user` is the default (root) because the cluster file sets none, so that
    /// `~/.ssh/config` may set it.
    #[serde(skip)]
    pub default_user: bool,
    /// Whether `port` is the default (22) because the cluster file sets none.
    #[serde(skip)]
    pub default_port: bool,
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

/// Reads the SSH settings from `ssh` or `openSSH`. Other connection kinds are rejected because
/// airlock connects with its own SSH client.
pub(super) fn connection(raw: &RawHost, path: &str, problems: &mut Problems<'_>) -> Option<Ssh> {
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
            problems.missing(
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
        let user = self.user.clone().filter(|u| !u.is_empty());
        Some(Ssh {
            address: address?,
            port: port?,
            default_user: user.is_none(),
            default_port: self.port.is_none(),
            user: user.unwrap_or_else(|| "root".to_string()),
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
            problems.missing(
                path,
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
