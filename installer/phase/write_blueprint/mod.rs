//! Phase "Write the blueprint": the as-built record, the compliance report, the SBOM and the
//! audit log head, locally and onto every controller.
//!
//! Before writing, the phase checks what the record claims. It reads the cluster id and a
//! snapshot of the API objects on the first controller, re-hashes every placed file on every host,
//! and brings each controller's audit log up to the local one. The compliance matrix is computed
//! from those facts. The audit head the blueprint records is the last entry of this run: writing
//! the blueprint itself is not logged, so that the head stays the one the files name.

mod build;
mod evidence;

use async_trait::async_trait;

use super::context::Run;
use super::{HostFailure, Phase, PhaseError, for_each_host};
use crate::blueprint::audit;
use crate::blueprint::audit::Head;
use crate::blueprint::compliance::{self, Evidence, Outcome};
use crate::blueprint::controllers::remote_path;
use crate::blueprint::record::Blueprint;
use crate::blueprint::sign::SIGNATURE_SUFFIX;
use crate::blueprint::{report, sbom, write_file};

use build::build;

pub struct WriteBlueprint;

/// Whether [`write`] prints what it wrote and the failing controls.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Summary {
    Print,
    /// For the writes after each upgraded node; the last write of the run prints.
    Skip,
}

/// The files the phase writes, by name, in the order they are written.
struct Outputs {
    files: Vec<(String, Vec<u8>)>,
    passed: usize,
    controls: usize,
    packages: usize,
}

#[async_trait]
impl Phase<Run> for WriteBlueprint {
    fn title(&self) -> &'static str {
        "Write the blueprint"
    }

    async fn run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        write(run, Summary::Print).await
    }

    async fn dry_run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        run.ui.println(&format!(
            "would write {}, {}, {} and {} in {} and on every controller",
            crate::blueprint::FILE_NAME,
            report::FILE_NAME,
            sbom::FILE_NAME,
            audit::HEAD_FILE_NAME,
            run.settings.out_dir.display()
        ));
        Ok(())
    }
}

/// Writes the blueprint, the report, the SBOM and the audit log head, locally and onto every
/// controller, after checking the facts they record. Upgrade calls it after each node.
pub async fn write(run: &Run, summary: Summary) -> Result<(), PhaseError> {
    if let Some(failure) = run.audit.failure() {
        return Err(PhaseError::new(anyhow::anyhow!(
            "the audit log could not be written, so the run is not fully recorded: {failure}"
        ))
        .with_help("free space or fix permissions in the --out directory, then run apply again"));
    }
    let log_path = run.settings.out_dir.join(audit::FILE_NAME);
    let head = run
        .audit
        .log()
        .map(|log| log.head())
        .ok_or_else(|| PhaseError::new(anyhow::anyhow!("the audit log was not opened")))?;

    let cluster_id = evidence::read_cluster_id(run).await;
    let archive_images = evidence::read_archive_images(run);
    let mut blueprint = build(run, cluster_id, &archive_images, head);
    // Independent reads on different hosts, so they overlap.
    let (live, hosts, (audit_evidence, sync_failures)) = tokio::join!(
        evidence::read_live(run, &blueprint.policies),
        evidence::observe_hosts(run, &blueprint),
        evidence::sync_audit_logs(run, &log_path, head),
    );

    let evidence = Evidence {
        live: live.as_ref().map_err(Clone::clone),
        hosts: &hosts,
        audit: &audit_evidence,
    };
    blueprint.compliance = compliance::evaluate(&blueprint, &evidence);
    let outputs = render_outputs(run, &blueprint, head)?;

    for (name, bytes) in &outputs.files {
        write_file(&run.settings.out_dir, name, bytes)?;
    }
    push_to_controllers(run, &outputs).await?;
    if !sync_failures.failures.is_empty() {
        return Err(PhaseError::new(sync_failures).with_help(
            "the blueprint was written; the audit log copies named above need attention",
        ));
    }

    if summary == Summary::Skip {
        tracing::debug!(
            passed = outputs.passed,
            controls = outputs.controls,
            "blueprint updated"
        );
        return Ok(());
    }
    let out = run.settings.out_dir.display();
    run.ui.println(&format!(
        "wrote {out}/{}, {out}/{} ({} of {} controls pass), {out}/{} ({} packages), {} entries in {}",
        crate::blueprint::FILE_NAME,
        report::FILE_NAME,
        outputs.passed,
        outputs.controls,
        sbom::FILE_NAME,
        outputs.packages,
        head.lines,
        log_path.display()
    ));
    for control in blueprint
        .compliance
        .iter()
        .filter(|control| control.result == compliance::Outcome::Fail)
    {
        run.ui.println(&format!(
            "  {} fails: {} ({})",
            control.id, control.control, control.evidence
        ));
    }
    if let Some(key) = &run.settings.blueprint_key {
        run.ui.println(&format!(
            "signed {} and {} with key {}",
            crate::blueprint::FILE_NAME,
            audit::HEAD_FILE_NAME,
            key.id()
        ));
    }
    Ok(())
}

/// Renders every output file, with signatures when a key was given.
fn render_outputs(run: &Run, blueprint: &Blueprint, head: Head) -> Result<Outputs, PhaseError> {
    let yaml = blueprint.to_yaml()?;
    let html = report::render(blueprint).map_err(|error| {
        PhaseError::new(error)
            .with_help("this is a bug in airlock; the blueprint.yaml is still valid")
    })?;
    let document = sbom::sbom(blueprint);
    let packages = document["packages"].as_array().map_or(0, Vec::len);
    let sbom_text = format!(
        "{}\n",
        serde_json::to_string_pretty(&document).expect("an SBOM always serializes")
    );
    let head_text = head.to_text();

    let mut files = vec![
        (
            crate::blueprint::FILE_NAME.to_string(),
            yaml.clone().into_bytes(),
        ),
        (report::FILE_NAME.to_string(), html.into_bytes()),
        (sbom::FILE_NAME.to_string(), sbom_text.into_bytes()),
        (audit::HEAD_FILE_NAME.to_string(), head_text.into_bytes()),
    ];
    if let Some(key) = &run.settings.blueprint_key {
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs())
            .unwrap_or(0);
        let sign_error = |reason: String| {
            PhaseError::new(anyhow::anyhow!("cannot sign the blueprint: {reason}"))
        };
        let blueprint_signature = key
            .sign_blueprint(&yaml, &blueprint.cluster.name, &head, timestamp)
            .map_err(sign_error)?;
        let head_signature = key.sign_head(&head, timestamp).map_err(sign_error)?;
        files.push((
            format!("{}{SIGNATURE_SUFFIX}", crate::blueprint::FILE_NAME),
            blueprint_signature.into_bytes(),
        ));
        files.push((
            format!("{}{SIGNATURE_SUFFIX}", audit::HEAD_FILE_NAME),
            head_signature.into_bytes(),
        ));
    }
    let passed = blueprint
        .compliance
        .iter()
        .filter(|control| control.result == Outcome::Pass)
        .count();
    Ok(Outputs {
        files,
        passed,
        controls: blueprint.compliance.len(),
        packages,
    })
}

/// Writes every output file into each controller's airlock directory.
async fn push_to_controllers(run: &Run, outputs: &Outputs) -> Result<(), PhaseError> {
    let controllers: Vec<_> = run
        .nodes
        .iter()
        .filter(|node| node.spec.role.is_controller() && !node.spec.reset)
        .map(|node| (node.host(), node.label(), node.spec.data_dir.clone()))
        .collect();
    let files = &outputs.files;
    for_each_host(
        controllers,
        run.settings.concurrency,
        |(host, label, data_dir)| async move {
            for (name, bytes) in files {
                host.write_file(&remote_path(&data_dir, name), bytes, "0600")
                    .await
                    .map_err(|error| HostFailure::new(label.clone(), error))?;
            }
            Ok(())
        },
    )
    .await?;
    Ok(())
}
