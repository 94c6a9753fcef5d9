//! Phase "Connect to hosts": SSH to every host in parallel, host keys checked.

use std::sync::Arc;

use async_trait::async_trait;

use super::context::Run;
use super::{HostFailure, Phase, PhaseError, for_each_host};
use crate::remote::{
    ConnectError, Host, HostKeyPolicy, JumpHosts, KnownHosts, Session, SshTarget, UserSshConfig,
};

pub struct Connect;

#[async_trait]
impl Phase<Run> for Connect {
    fn title(&self) -> &'static str {
        "Connect to hosts"
    }

    async fn run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        let known_hosts = KnownHosts::load(&run.settings.known_hosts)?;
        let policy = HostKeyPolicy::new(known_hosts, run.settings.accept_new_host_keys);
        let ssh_config = UserSshConfig::load_default()?;
        let mut targets: Vec<(usize, SshTarget, String)> = Vec::new();
        for (index, node) in run.nodes.iter().enumerate() {
            let target = ssh_config.target(&node.spec.ssh).map_err(|error| {
                PhaseError::new(anyhow::Error::new(error).context(node.label()))
                    .with_help("fix the Host block of this host in ~/.ssh/config")
            })?;
            targets.push((index, target, node.label()));
        }
        let options = &run.settings.connect;
        let jumps = &JumpHosts::new();
        let ui = &run.ui;
        let connected = for_each_host(
            targets,
            run.settings.concurrency,
            |(index, target, label)| {
                let policy = policy.clone();
                async move {
                    let item = ui.item(&label, None);
                    item.set_state("connecting");
                    match Session::connect_through(&target, &policy, options, jumps).await {
                        Ok(session) => {
                            item.finish("connected");
                            Ok((index, Host::new(session, target.user != "root")))
                        }
                        Err(error) => {
                            item.fail(&format!("not connected: {}", error.summary()));
                            Err(HostFailure::new(label, error))
                        }
                    }
                }
            },
        )
        .await
        .map_err(|failures| {
            let help = connect_help(&failures.failures);
            let error = PhaseError::new(failures);
            match help {
                Some(help) => error.with_help(help),
                None => error,
            }
        })?;
        for (index, host) in connected {
            run.nodes[index].connection = Some(Arc::new(host));
        }
        Ok(())
    }

    async fn dry_run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        self.run(run).await
    }
}

/// Picks the hint for the most serious kind of failure among the hosts.
fn connect_help(failures: &[HostFailure]) -> Option<&'static str> {
    let kinds: Vec<&ConnectError> = failures
        .iter()
        .filter_map(|f| f.error.downcast_ref::<ConnectError>())
        .map(ConnectError::root_cause)
        .collect();
    if kinds.iter().any(|e| {
        matches!(
            e,
            ConnectError::HostKeyChanged { .. } | ConnectError::HostKeyRevoked { .. }
        )
    }) {
        return Some(
            "a changed host key is never accepted: find out why it changed; if the host was reinstalled, remove its old line from known_hosts",
        );
    }
    if kinds
        .iter()
        .any(|e| matches!(e, ConnectError::UnknownHostKey { .. }))
    {
        return Some(
            "compare the fingerprints with the hosts' keys (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), then add them to known_hosts or pass --accept-new-host-keys",
        );
    }
    if kinds.iter().any(|e| {
        matches!(
            e,
            ConnectError::Authentication { .. } | ConnectError::Key { .. }
        )
    }) {
        return Some(
            "check ssh.user and ssh.keyPath in the cluster file, or load the key into an SSH agent",
        );
    }
    if kinds.iter().any(|e| {
        matches!(
            e,
            ConnectError::Unreachable { .. } | ConnectError::HandshakeTimeout { .. }
        )
    }) {
        return Some(
            "check that the hosts are up and that sshd listens on the address and port in the cluster file",
        );
    }
    None
}
