//! The `k0s install` and `k0s reset` command lines for a host, built as k0sctl v0.32 builds them
//! (`Host.K0sInstallFlags`, `Host.K0sResetCommand`), plus airlock's `--kubelet-root-dir` default.

use super::cluster::Cluster;
use super::flags::Flags;
use super::host::{Host, Role};
use crate::shell::quote;

/// The path of the join token on a joining host.
pub const TOKEN_FILE: &str = "/etc/k0s/k0stoken";
/// The path of the k0s configuration on controllers.
pub const CONFIG_FILE: &str = "/etc/k0s/k0s.yaml";

/// What the install command depends on besides the cluster file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InstallOptions {
    /// The host initializes the cluster, so it has no join token.
    pub leader: bool,
    /// Reinstall over an existing service (`--force=true`), which k0s accepts since v1.27.4.
    pub force: bool,
}

/// The install flags cannot be built from the host's installFlags.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstallCommandError {
    #[error("host {host}: {message}")]
    InvalidFlag { host: String, message: String },
}

impl Cluster {
    /// Builds the flags of `k0s install` for `host`, in k0sctl's order: the user's installFlags, then
    /// `--data-dir`, `--kubelet-root-dir`, the role flags, `--token-file` (joining hosts),
    /// `--config` (controllers), `--kubelet-extra-args` with `--node-ip` and
    /// `--hostname-override`, `--enable-dynamic-config` and `--force`.
    pub fn install_flags(
        &self,
        host: &Host,
        options: InstallOptions,
    ) -> Result<Flags, InstallCommandError> {
        let invalid = |message: String| InstallCommandError::InvalidFlag {
            host: host.to_string(),
            message,
        };
        let mut flags = host.install_flags.clone();

        flags.add_or_replace(&format!("--data-dir={}", host.data_dir));
        if let Some(dir) = &host.kubelet_root_dir {
            flags.add_or_replace(&format!("--kubelet-root-dir={dir}"));
        }
        match host.role {
            Role::ControllerWorker => {
                flags.add_unless_present("--enable-worker=true");
                if host.no_taints {
                    flags.add_unless_present("--no-taints=true");
                }
            }
            Role::Single => flags.add_unless_present("--single=true"),
            Role::Controller | Role::Worker => {}
        }
        if !options.leader {
            flags.add_unless_present(&format!("--token-file={TOKEN_FILE}"));
        }
        if host.role.is_controller() {
            flags.add_unless_present(&format!("--config={CONFIG_FILE}"));
        }

        // k0sctl adds kubelet arguments for roles ending in "worker" only, but airlock includes
        // `single`, whose kubelet would otherwise ignore the hostname and private address.
        if host.role.runs_workloads() {
            let mut extra = match flags.value("--kubelet-extra-args") {
                Some(existing) => Flags::split(&existing).ok_or_else(|| {
                    invalid(format!(
                        "cannot split --kubelet-extra-args {existing:?}: unbalanced quotes"
                    ))
                })?,
                None => Flags::default(),
            };
            let cloud_provider = host
                .install_flags
                .boolean("--enable-cloud-provider")
                .map_err(invalid)?;
            if let (false, Some(address)) = (cloud_provider, host.private_address) {
                extra.add_unless_present(&format!("--node-ip={address}"));
            }
            if let Some(hostname) = &host.hostname {
                extra.add_or_replace(&format!("--hostname-override={hostname}"));
            }
            if !extra.is_empty() {
                flags.add_or_replace(&format!("--kubelet-extra-args={}", extra.join()));
            }
        }

        if self.k0s.dynamic_config && host.role.is_controller() {
            flags.add_unless_present("--enable-dynamic-config");
        }
        if options.force {
            flags.add_unless_present("--force=true");
        }
        Ok(flags)
    }

    /// Builds the whole command, such as `/usr/local/bin/k0s install worker --data-dir=/var/lib/k0s ...`.
    /// Running it with sudo is up to the caller.
    pub fn install_command(
        &self,
        host: &Host,
        options: InstallOptions,
    ) -> Result<String, InstallCommandError> {
        let flags = self.install_flags(host, options)?;
        Ok(format!(
            "{} install {} {}",
            quote(&host.k0s_install_path),
            host.role.k0s_role(),
            flags.join()
        ))
    }
}

impl Host {
    /// Builds the command that removes k0s from the host, as k0sctl builds it:
    /// `/usr/local/bin/k0s reset --data-dir=/var/lib/k0s --kubelet-root-dir=/var/lib/kubelet`.
    pub fn reset_command(&self) -> String {
        let mut flags = Flags::default();
        flags.add(&format!("--data-dir={}", self.data_dir));
        if let Some(dir) = &self.kubelet_root_dir {
            flags.add(&format!("--kubelet-root-dir={dir}"));
        }
        format!("{} reset {}", quote(&self.k0s_install_path), flags.join())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClusterLoader;
    use crate::config::cluster::SourceText;

    fn cluster(hosts: &str) -> Cluster {
        let text = format!(
            "apiVersion: k0sctl.k0sproject.io/v1beta1\nkind: Cluster\nspec:\n  hosts:\n{hosts}"
        );
        let source = SourceText {
            name: "cluster.yaml".into(),
            text,
            dir: ".".into(),
        };
        ClusterLoader::with_env(|_| None)
            .load_texts(vec![source])
            .unwrap()
    }

    fn command(cluster: &Cluster, index: usize, leader: bool) -> String {
        cluster
            .install_command(
                &cluster.hosts[index],
                InstallOptions {
                    leader,
                    force: false,
                },
            )
            .unwrap()
    }

    #[test]
    fn controller_worker_leader_matches_k0sctl() {
        let cluster = cluster(
            "    - role: controller+worker\n      noTaints: true\n      privateAddress: 10.0.0.5\n      ssh: {address: 127.0.1.1}\n",
        );
        assert_eq!(
            command(&cluster, 0, true),
            "/usr/local/bin/k0s install controller --data-dir=/var/lib/k0s --kubelet-root-dir=/var/lib/kubelet \
             --enable-worker=true --no-taints=true --config=/etc/k0s/k0s.yaml --kubelet-extra-args=--node-ip=10.0.0.5"
        );
    }

    #[test]
    fn plain_controller_has_no_kubelet_flags() {
        let cluster = cluster(
            "    - role: controller\n      ssh: {address: 127.0.1.1}\n    - role: controller\n      ssh: {address: 127.0.1.2}\n",
        );
        assert_eq!(
            command(&cluster, 0, true),
            "/usr/local/bin/k0s install controller --data-dir=/var/lib/k0s --config=/etc/k0s/k0s.yaml"
        );
        assert_eq!(
            command(&cluster, 1, false),
            "/usr/local/bin/k0s install controller --data-dir=/var/lib/k0s --token-file=/etc/k0s/k0stoken --config=/etc/k0s/k0s.yaml"
        );
    }

    #[test]
    fn worker_gets_token_and_quoted_kubelet_args() {
        let cluster = cluster(
            "    - role: controller\n      ssh: {address: 127.0.1.1}\n    - role: worker\n      hostname: GPU-Node-1\n      privateAddress: 10.0.0.7\n      dataDir: /srv/k0s\n      installFlags:\n        - --debug\n        - --kubelet-extra-args=\"--max-pods=200\"\n      ssh: {address: 127.0.1.2}\n",
        );
        assert_eq!(
            command(&cluster, 1, false),
            "/usr/local/bin/k0s install worker --debug \
             --kubelet-extra-args='--max-pods=200 --node-ip=10.0.0.7 --hostname-override=gpu-node-1' \
             --data-dir=/srv/k0s --kubelet-root-dir=/var/lib/kubelet --token-file=/etc/k0s/k0stoken"
        );
    }

    #[test]
    fn single_host_with_flags_moved_into_fields() {
        let cluster = cluster(
            "    - role: controller\n      installFlags: [--single, --data-dir=/data/k0s, --kubelet-root-dir=/data/kubelet]\n      k0sInstallPath: /opt/k0s bin/k0s\n      ssh: {address: 127.0.1.1}\n",
        );
        let host = &cluster.hosts[0];
        assert_eq!(host.role, Role::Single);
        assert_eq!(host.data_dir, "/data/k0s");
        assert_eq!(host.kubelet_root_dir.as_deref(), Some("/data/kubelet"));
        assert_eq!(
            command(&cluster, 0, true),
            "'/opt/k0s bin/k0s' install controller --single --data-dir=/data/k0s --kubelet-root-dir=/data/kubelet --config=/etc/k0s/k0s.yaml"
        );
    }

    #[test]
    fn cloud_provider_suppresses_node_ip() {
        let cluster = cluster(
            "    - role: worker\n      privateAddress: 10.0.0.7\n      installFlags: [--enable-cloud-provider=true]\n      ssh: {address: 127.0.1.2}\n    - role: controller\n      ssh: {address: 127.0.1.1}\n",
        );
        assert_eq!(
            command(&cluster, 0, false),
            "/usr/local/bin/k0s install worker --enable-cloud-provider=true --data-dir=/var/lib/k0s \
             --kubelet-root-dir=/var/lib/kubelet --token-file=/etc/k0s/k0stoken"
        );
    }

    #[test]
    fn reset_names_both_directories() {
        let cluster = cluster(
            "    - role: controller\n      ssh: {address: 127.0.1.1}\n    - role: worker\n      dataDir: /srv/k0s\n      ssh: {address: 127.0.1.2}\n",
        );
        assert_eq!(
            cluster.hosts[0].reset_command(),
            "/usr/local/bin/k0s reset --data-dir=/var/lib/k0s"
        );
        assert_eq!(
            cluster.hosts[1].reset_command(),
            "/usr/local/bin/k0s reset --data-dir=/srv/k0s --kubelet-root-dir=/var/lib/kubelet"
        );
    }

    #[test]
    fn dynamic_config_and_force_come_last() {
        let cluster = cluster(
            "    - role: controller\n      installFlags: [--enable-dynamic-config]\n      ssh: {address: 127.0.1.1}\n",
        );
        assert!(cluster.k0s.dynamic_config);
        let command = cluster
            .install_command(
                &cluster.hosts[0],
                InstallOptions {
                    leader: true,
                    force: true,
                },
            )
            .unwrap();
        assert_eq!(
            command,
            "/usr/local/bin/k0s install controller --enable-dynamic-config --data-dir=/var/lib/k0s --config=/etc/k0s/k0s.yaml --force=true"
        );
    }
}
