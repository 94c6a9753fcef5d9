//! Phase "Verify the bundle": the signature and every byte, before any host is touched.

use async_trait::async_trait;

use super::context::Run;
use super::{Phase, PhaseError};
use crate::bundle::{SignatureError, Signer, VerifyError};
use crate::k0s::K0sVersion;
use crate::ui::format_bytes;

pub struct VerifyBundle;

#[async_trait]
impl Phase<Run> for VerifyBundle {
    fn title(&self) -> &'static str {
        "Verify the bundle"
    }

    fn should_run(&self, run: &Run) -> bool {
        run.bundle_source.is_some()
    }

    async fn run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        let source = run
            .bundle_source
            .as_ref()
            .expect("should_run checked that there is a bundle");
        // Hashing runs on rayon's threads; this task only waits for it.
        let verified = tokio::task::block_in_place(|| source.verify(&run.trust, &run.ui))
            .map_err(verify_failure)?;
        let manifest = verified.manifest();

        let bundled: K0sVersion = manifest.k0s.version.parse().map_err(PhaseError::new)?;
        if let Some(requested) = &run.cluster.k0s.version
            && *requested != bundled
        {
            return Err(PhaseError::new(anyhow::anyhow!(
                "the cluster file asks for k0s {requested} but the bundle carries k0s {bundled}"
            ))
            .with_help("set spec.k0s.version to the bundle's version, remove it, or use a bundle built for that version"));
        }

        let signer = match verified.signer() {
            Signer::Trusted { key_id, .. } => format!("signed by trusted key {key_id}"),
            Signer::Unsigned => {
                "UNSIGNED, accepted because unsigned bundles are allowed".to_string()
            }
            Signer::Unchecked { key_id } => {
                format!("signed by key {key_id}, NOT checked: no trusted key given")
            }
        };
        run.ui.println(&format!(
            "bundle {} version {} ({}), k0s {}, {} artifacts, {} verified, {signer}",
            manifest.name,
            manifest.version,
            verified.digest(),
            manifest.k0s.version,
            manifest.artifacts.len(),
            format_bytes(manifest.total_size()),
        ));
        if !matches!(verified.signer(), Signer::Trusted { .. }) {
            tracing::warn!(bundle = %manifest.name, "installing from a bundle whose signature was not checked against a trusted key");
        }
        run.set_bundle(verified);
        Ok(())
    }

    async fn dry_run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        // Verification changes nothing, and every later dry-run step needs the bundle.
        self.run(run).await
    }
}

fn verify_failure(error: VerifyError) -> PhaseError {
    let help = match &error {
        VerifyError::Signature {
            source: SignatureError::Unsigned,
            ..
        } => {
            "sign the bundle with `airlock bundle sign`, or set spec.airlock.bundle.allowUnsigned (or pass --allow-unsigned) to accept it anyway"
        }
        VerifyError::Signature {
            source: SignatureError::NoTrustedKey { .. } | SignatureError::UntrustedKey { .. },
            ..
        } => {
            "add the public key of the bundle's signer to spec.airlock.bundle.trustedKeys, if you trust it"
        }
        VerifyError::Signature { .. } => {
            "do not use this bundle: its signature does not match; get it again from its builder"
        }
        VerifyError::NotFound { .. } | VerifyError::NoManifest { .. } => {
            "pass a bundle directory, a .tar.zst, or the first part of a split archive with --bundle"
        }
        _ => {
            "the bundle was changed or damaged after it was built; copy it again from the original"
        }
    };
    PhaseError::new(error).with_help(help)
}
