//! Phase "Configure k0s": write `/etc/k0s/k0s.yaml` on every controller, validated by k0s
//! before it replaces the old one.

use async_trait::async_trait;

use super::context::Run;
use super::k0s_ops::{self, K0sPaths};
use super::{HostFailure, Phase, PhaseError, for_each_host};
use crate::k0s::config::{ConfigInput, render};
use crate::shell::quote;

pub struct ConfigureK0s;

/// One controller's rendered configuration and whether its current file differs.
struct Rendered {
    index: usize,
    text: String,
    changed: bool,
}

impl ConfigureK0s {
    /// Renders every controller's configuration and compares it with the file on the host.
    async fn render_all(run: &Run) -> Result<Vec<Rendered>, PhaseError> {
        let mut sans: Vec<String> = Vec::new();
        for node in run
            .nodes
            .iter()
            .filter(|node| node.spec.role.is_controller())
        {
            let addresses = [
                Some(node.spec.ssh.address.to_string()),
                node.spec.private_address.map(|a| a.to_string()),
            ];
            for address in addresses.into_iter().flatten() {
                if !sans.contains(&address) {
                    sans.push(address);
                }
            }
        }
        let mut rendered = Vec::new();
        for (index, node) in run
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, node)| node.spec.role.is_controller() && !node.spec.reset)
        {
            let peer = node
                .spec
                .private_address
                .map(|a| a.to_string())
                .or_else(|| node.spec.ssh.address.ip().map(|ip| ip.to_string()));
            let config = render(&ConfigInput {
                cluster_name: &run.cluster.name,
                user_config: run.cluster.k0s.config.as_ref(),
                sans: sans.clone(),
                peer_address: peer,
            })
            .map_err(|e| PhaseError::new(e).with_help("fix spec.k0s.config in the cluster file"))?;
            for setting in &config.overridden {
                run.ui.warn(&format!(
                    "spec.k0s.config sets {setting}: an air-gapped cluster needs airlock's value"
                ));
            }
            let current = node.host().read_file(k0s_ops::config_path()).await?;
            let changed = current.as_deref() != Some(config.text.as_bytes());
            rendered.push(Rendered {
                index,
                text: config.text,
                changed,
            });
        }
        Ok(rendered)
    }
}

#[async_trait]
impl Phase<Run> for ConfigureK0s {
    fn title(&self) -> &'static str {
        "Configure k0s"
    }

    async fn run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        let rendered = Self::render_all(run).await?;
        let work: Vec<_> = rendered
            .into_iter()
            .map(|config| {
                let node = &run.nodes[config.index];
                // During an upgrade the new binary validates the new configuration, and the
                // controller's own upgrade restarts it, so no restart happens here.
                let staged = node
                    .uploads
                    .iter()
                    .find(|file| {
                        file.final_path.as_deref() == Some(node.spec.k0s_install_path.as_str())
                    })
                    .map(|file| file.path.clone());
                (
                    config,
                    node.host(),
                    node.label(),
                    staged.unwrap_or_else(|| node.spec.k0s_install_path.clone()),
                    node.spec.data_dir.clone(),
                    node.k0s_running() && !run.upgrading(),
                )
            })
            .collect();
        let ready_timeout = run.settings.ready_timeout;
        let results = for_each_host(
            work,
            run.settings.concurrency,
            |(config, host, label, binary, data_dir, running)| async move {
                let failure = |error: anyhow::Error| HostFailure::new(label.clone(), error);
                let digest = crate::digest::Digest::of_bytes(config.text.as_bytes());
                if !config.changed {
                    return Ok((config.index, digest, false));
                }
                let candidate = format!("{}.airlock-new", k0s_ops::config_path());
                host.write_file(&candidate, config.text.as_bytes(), "0600")
                    .await
                    .map_err(|e| failure(e.into()))?;
                let validate = format!(
                    "{} config validate --config={}",
                    quote(&binary),
                    quote(&candidate)
                );
                let output = host
                    .run_output(&validate)
                    .await
                    .map_err(|e| failure(e.into()))?;
                if !output.success() {
                    let _ = host.run(&format!("rm -f {}", quote(&candidate))).await;
                    return Err(failure(anyhow::anyhow!(
                        "k0s rejected the configuration: {}",
                        output.stderr_tail()
                    )));
                }
                host.run(&format!(
                    "mv -f {} {}",
                    quote(&candidate),
                    quote(k0s_ops::config_path())
                ))
                .await
                .map_err(|e| failure(e.into()))?;
                if running {
                    // k0s reads its configuration at start; a running controller must restart.
                    let paths = K0sPaths {
                        binary: &binary,
                        data_dir: &data_dir,
                    };
                    host.run(&format!("{} stop", quote(&binary)))
                        .await
                        .map_err(|e| failure(e.into()))?;
                    k0s_ops::start(&host, paths, ready_timeout)
                        .await
                        .map_err(failure)?;
                    k0s_ops::wait_api_ready(&host, paths, ready_timeout)
                        .await
                        .map_err(failure)?;
                }
                Ok((config.index, digest, true))
            },
        )
        .await
        .map_err(|failures| {
            PhaseError::new(failures).with_help("fix spec.k0s.config in the cluster file")
        })?;

        for (index, digest, changed) in results {
            let label = run.nodes[index].label();
            run.nodes[index]
                .placed
                .insert(k0s_ops::config_path().to_string(), digest);
            if changed {
                run.ui
                    .println(&format!("{label}: wrote {}", k0s_ops::config_path()));
                run.record(
                    self.title(),
                    &label,
                    format!("write {}", k0s_ops::config_path()),
                    Some(digest),
                );
            }
        }
        Ok(())
    }

    async fn dry_run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        for config in Self::render_all(run).await? {
            let node = &run.nodes[config.index];
            let action = if config.changed {
                "would write"
            } else {
                "keeps"
            };
            run.ui.println(&format!(
                "{}: {action} {}",
                node.label(),
                k0s_ops::config_path()
            ));
        }
        Ok(())
    }
}
