//! Turns a host's `ssh` settings into the connection airlock opens: the cluster file's values,
//! completed from the user's `~/.ssh/config` (Host, HostName, User, Port, IdentityFile and
//! ProxyJump) the way OpenSSH completes a command line from it.

use std::io::BufReader;
use std::path::{Path, PathBuf};

use ssh2_config::{ParseRule, SshConfig};

use super::session::SshTarget;
use crate::config::Ssh;

/// The maximum number of jump hosts on one connection, which also ends a ProxyJump loop.
const MAX_JUMPS: usize = 8;

/// The user's OpenSSH client configuration, or an empty one when the file does not exist.
pub struct UserSshConfig {
    path: Option<PathBuf>,
    config: SshConfig,
}

/// A `~/.ssh/config` that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SshConfigError {
    #[error("cannot read the SSH client configuration {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid SSH client configuration {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("invalid ProxyJump {value:?} for host {host} in {path}: {reason}")]
    ProxyJump {
        host: String,
        value: String,
        path: PathBuf,
        reason: String,
    },
}

impl UserSshConfig {
    /// Reads `$HOME/.ssh/config`; a missing file or home directory gives an empty configuration.
    pub fn load_default() -> Result<UserSshConfig, SshConfigError> {
        match std::env::home_dir() {
            Some(home) => UserSshConfig::load(&home.join(".ssh/config")),
            None => Ok(UserSshConfig::empty()),
        }
    }

    /// Reads `path`; a missing file gives an empty configuration.
    pub fn load(path: &Path) -> Result<UserSshConfig, SshConfigError> {
        let file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(UserSshConfig::empty());
            }
            Err(source) => {
                return Err(SshConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let mut config = SshConfig::default();
        if let Some(home) = std::env::home_dir() {
            config = config.home_dir(home);
        }
        // Options that airlock has no use for (Ciphers, ForwardAgent...) must not make a
        // working OpenSSH configuration unusable.
        let rules = ParseRule::ALLOW_UNKNOWN_FIELDS | ParseRule::ALLOW_UNSUPPORTED_FIELDS;
        let config = config
            .parse(&mut BufReader::new(file), rules)
            .map_err(|error| SshConfigError::Invalid {
                path: path.to_path_buf(),
                reason: error.to_string(),
            })?;
        tracing::debug!(path = %path.display(), "read the SSH client configuration");
        Ok(UserSshConfig {
            path: Some(path.to_path_buf()),
            config,
        })
    }

    pub fn empty() -> UserSshConfig {
        UserSshConfig {
            path: None,
            config: SshConfig::default(),
        }
    }

    /// Builds the connection for a host's `ssh` settings. Values written in the cluster file win
    /// over `~/.ssh/config`, which wins over the defaults (user root, port 22). A `bastion` in
    /// the cluster file replaces any ProxyJump.
    pub fn target(&self, ssh: &Ssh) -> Result<SshTarget, SshConfigError> {
        let mut target = self.complete(
            &ssh.address.to_string(),
            (!ssh.default_user).then(|| ssh.user.clone()),
            (!ssh.default_port).then_some(ssh.port),
            ssh.key_path.clone(),
            0,
        )?;
        if let Some(bastion) = &ssh.bastion {
            target.jump = Some(Box::new(self.target(bastion)?));
        }
        Ok(target)
    }

    /// Completes one hop from the Host block matching `alias`; `depth` counts the jumps so far.
    fn complete(
        &self,
        alias: &str,
        user: Option<String>,
        port: Option<u16>,
        key_path: Option<PathBuf>,
        depth: usize,
    ) -> Result<SshTarget, SshConfigError> {
        let params = self.config.query(alias);
        let identity_files = if key_path.is_some() {
            Vec::new()
        } else {
            params.identity_file.clone().unwrap_or_default()
        };
        let mut target = SshTarget {
            address: params
                .host_name
                .clone()
                .unwrap_or_else(|| alias.to_string()),
            port: port.or(params.port).unwrap_or(22),
            user: user
                .or_else(|| params.user.clone())
                .unwrap_or_else(|| "root".to_string()),
            key_path,
            identity_files,
            jump: None,
        };
        // ProxyJump lists the jump hosts in the order they are passed through, so the last one
        // carries the connection to this host.
        let jumps = params.proxy_jump.unwrap_or_default();
        if jumps.len() == 1 && jumps[0].eq_ignore_ascii_case("none") {
            return Ok(target);
        }
        let mut previous: Option<SshTarget> = None;
        for value in &jumps {
            let error = |reason: String| SshConfigError::ProxyJump {
                host: alias.to_string(),
                value: jumps.join(","),
                path: self.path.clone().unwrap_or_default(),
                reason,
            };
            if depth + jumps.len() > MAX_JUMPS {
                return Err(error(format!(
                    "more than {MAX_JUMPS} jump hosts, or a ProxyJump loop"
                )));
            }
            let (user, host, port) = parse_jump(value).map_err(error)?;
            let mut hop = self.complete(host, user, port, None, depth + jumps.len())?;
            if let Some(previous) = previous.take() {
                // The first jump hosts of this list replace the jump host's own ProxyJump, as
                // in OpenSSH.
                hop.jump = Some(Box::new(previous));
            }
            previous = Some(hop);
        }
        target.jump = previous.map(Box::new);
        Ok(target)
    }
}

/// Splits one ProxyJump entry, `[user@]host[:port]` or `ssh://[user@]host[:port]`.
fn parse_jump(value: &str) -> Result<(Option<String>, &str, Option<u16>), String> {
    let text = value.trim();
    let text = text.strip_prefix("ssh://").unwrap_or(text);
    let (user, rest) = match text.rsplit_once('@') {
        Some((user, rest)) => (Some(user.to_string()), rest),
        None => (None, text),
    };
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| format!("missing ] in {value:?}"))?;
        (host, after.strip_prefix(':'))
    } else {
        match rest.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => (host, Some(port)),
            _ => (rest, None),
        }
    };
    if host.is_empty() {
        return Err(format!("no host in {value:?}"));
    }
    let port = port
        .map(|port| {
            port.parse::<u16>()
                .ok()
                .filter(|port| *port != 0)
                .ok_or_else(|| format!("invalid port {port:?} in {value:?}"))
        })
        .transpose()?;
    Ok((user, host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> UserSshConfig {
        let config = SshConfig::default()
            .parse(
                &mut BufReader::new(text.as_bytes()),
                ParseRule::ALLOW_UNKNOWN_FIELDS | ParseRule::ALLOW_UNSUPPORTED_FIELDS,
            )
            .unwrap();
        UserSshConfig {
            path: Some(PathBuf::from("/home/op/.ssh/config")),
            config,
        }
    }

    #[test]
    fn jump_entries_split() {
        assert_eq!(parse_jump("gw").unwrap(), (None, "gw", None));
        assert_eq!(
            parse_jump("ops@gw:2222").unwrap(),
            (Some("ops".into()), "gw", Some(2222))
        );
        assert_eq!(
            parse_jump("ssh://ops@[::1]:22").unwrap(),
            (Some("ops".into()), "::1", Some(22))
        );
        assert!(parse_jump("gw:0").is_err());
        assert!(parse_jump("ops@").is_err());
    }

    #[test]
    fn host_block_completes_target() {
        let config = parse(
            "Host node1\n  HostName 127.0.0.5\n  User ops\n  Port 2200\n  \
             IdentityFile /keys/node1\n  ProxyJump gw\n\
             Host gw\n  HostName 127.0.0.9\n  User jump\n",
        );
        let target = config.complete("node1", None, None, None, 0).unwrap();
        assert_eq!(target.address, "127.0.0.5");
        assert_eq!(target.user, "ops");
        assert_eq!(target.port, 2200);
        assert_eq!(target.identity_files, vec![PathBuf::from("/keys/node1")]);
        let jump = target.jump.expect("ProxyJump gives a jump host");
        assert_eq!(jump.address, "127.0.0.9");
        assert_eq!(jump.user, "jump");
        assert_eq!(jump.port, 22);
    }

    #[test]
    fn written_values_win_over_config() {
        let config = parse("Host node1\n  User ops\n  Port 2200\n  IdentityFile /keys/node1\n");
        let target = config
            .complete(
                "node1",
                Some("admin".into()),
                Some(22),
                Some("/keys/mine".into()),
                0,
            )
            .unwrap();
        assert_eq!(target.user, "admin");
        assert_eq!(target.port, 22);
        assert_eq!(target.key_path, Some(PathBuf::from("/keys/mine")));
        assert!(target.identity_files.is_empty());
    }

    #[test]
    fn proxy_jump_chain_ordered() {
        let config = parse("Host node1\n  ProxyJump first,second:2022\n");
        let target = config.complete("node1", None, None, None, 0).unwrap();
        let last = target.jump.expect("second jump host");
        assert_eq!(last.address, "second");
        assert_eq!(last.port, 2022);
        let first = last.jump.expect("first jump host");
        assert_eq!(first.address, "first");
        assert!(first.jump.is_none());
    }

    #[test]
    fn proxy_jump_loop_rejected() {
        let config = parse("Host a\n  ProxyJump b\nHost b\n  ProxyJump a\n");
        let error = config.complete("a", None, None, None, 0).unwrap_err();
        assert!(error.to_string().contains("loop"), "{error}");
    }

    #[test]
    fn proxy_jump_none_means_direct() {
        let config = parse("Host node1\n  ProxyJump none\n");
        let target = config.complete("node1", None, None, None, 0).unwrap();
        assert!(target.jump.is_none());
    }
}
