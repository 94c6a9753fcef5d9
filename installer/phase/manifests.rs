//! Phase "Apply additional manifests": the other documents of the cluster files, applied with
//! `k0s kubectl apply` on the first controller once the cluster is up, as k0sctl does.

use async_trait::async_trait;

use super::context::Run;
use super::{HostFailure, Phase, PhaseError};

pub struct ApplyManifests;

#[async_trait]
impl Phase<Run> for ApplyManifests {
    fn title(&self) -> &'static str {
        "Apply additional manifests"
    }

    fn should_run(&self, run: &Run) -> bool {
        !run.cluster.manifests.is_empty()
    }

    async fn run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        let leader = run.leader();
        let (host, label) = (leader.host(), leader.label());
        let command = leader.k0s_paths().kubectl("apply -f -");
        for manifest in &run.cluster.manifests {
            host.run_with_input(&command, manifest.text.as_bytes())
                .await
                .map_err(|error| {
                    PhaseError::new(
                        HostFailure::new(
                            label.clone(),
                            anyhow::Error::new(error)
                                .context(format!("applying {}", manifest.origin)),
                        )
                        .into_error(),
                    )
                })?;
            run.ui.println(&format!("applied {}", manifest.origin));
        }
        let label = run.leader().label();
        let applied: Vec<_> = run
            .cluster
            .manifests
            .iter()
            .map(|manifest| {
                let action = format!(
                    "apply {} {} from {}",
                    manifest.kind,
                    manifest.name.as_deref().unwrap_or("(unnamed)"),
                    manifest.origin
                );
                (
                    action,
                    crate::digest::Digest::of_bytes(manifest.text.as_bytes()),
                )
            })
            .collect();
        for (action, digest) in applied {
            run.record(self.title(), &label, action, Some(digest));
        }
        Ok(())
    }

    async fn dry_run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        for manifest in &run.cluster.manifests {
            run.ui.println(&format!("would apply {}", manifest.origin));
        }
        Ok(())
    }
}
