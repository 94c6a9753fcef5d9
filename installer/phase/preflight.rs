//! Phase "Preflight": fail before changing anything, naming every host and what to fix.

use crate::blueprint::record::HostFileRecord;
use std::collections::BTreeMap;

use async_trait::async_trait;

use super::context::Run;
use super::plan::{self, PlannedFile};
use super::{HostFailure, HostFailures, Phase, PhaseError, for_each_host};
use crate::k0s::{K0sVersion, RunningRole};
use crate::remote::parent_dir;
use crate::ui::{format_bytes, format_count};

/// The largest clock difference between a host and this machine that k0s tolerates; certificates
/// and tokens break beyond it. k0sctl uses the same limit.
const MAX_CLOCK_SKEW_SECONDS: i64 = 30;

pub struct Preflight;

#[async_trait]
impl Phase<Run> for Preflight {
    fn title(&self) -> &'static str {
        "Preflight checks"
    }

    async fn run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        let mut problems: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        let bundle_version: K0sVersion = run
            .bundle()
            .manifest()
            .k0s
            .version
            .parse()
            .map_err(PhaseError::new)?;

        // Hosts marked `reset: true` only leave the cluster, so what they run does not matter.
        for (index, node) in run
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, node)| !node.spec.reset)
        {
            let facts = &node.facts;
            let problem = |text: String| (index, text);
            let mut found = Vec::new();
            if !plan::has_k0s_for(run.bundle(), &facts.architecture) {
                found.push(problem(format!(
                    "the bundle has no k0s binary for linux/{}; build a bundle for that platform",
                    facts.architecture
                )));
            }
            if facts.clock_skew_seconds.abs() > MAX_CLOCK_SKEW_SECONDS {
                found.push(problem(format!(
                    "its clock is {}s off this machine's (at most {MAX_CLOCK_SKEW_SECONDS}s is allowed); synchronise the clocks",
                    facts.clock_skew_seconds
                )));
            }
            if let Some(status) = &facts.k0s_status {
                let running = status
                    .version()
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| status.version.clone());
                if !run.upgrading() && status.version() != Some(bundle_version.clone()) {
                    found.push(problem(format!(
                        "k0s {running} runs here but the bundle carries {bundle_version}; use `airlock upgrade` to change versions"
                    )));
                }
                let expected = node.spec.role.as_str();
                let actual = status.role().map(RunningRole::as_str).unwrap_or("unknown");
                if actual != expected {
                    found.push(problem(format!(
                        "k0s runs here as {actual} but the cluster file says {expected}; airlock does not change roles, reset the host first"
                    )));
                }
            }
            for (index, text) in found {
                problems.entry(index).or_default().push(text);
            }
        }
        check_unique(run, &mut problems);
        fail_on(run, problems)?;

        self.plan_uploads(run).await?;
        let problems = check_free_space(run).await?;
        fail_on(run, problems)?;
        run.ui.println(&format!(
            "{} passed",
            format_count(run.nodes.len(), "host", "hosts")
        ));
        Ok(())
    }

    async fn dry_run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        self.run(run).await
    }
}

impl Preflight {
    /// Decides the files each host needs and asks each host which it already holds.
    async fn plan_uploads(&self, run: &mut Run) -> Result<(), PhaseError> {
        let bundle = run.bundle();
        let archives = match &run.stacks {
            Some(rendered) => {
                tokio::task::block_in_place(|| plan::stack_archives(bundle, rendered))?
            }
            None => Vec::new(),
        };
        let mut work: Vec<(usize, _, String, Vec<PlannedFile>)> = Vec::new();
        let mut cluster_file_uploads = Vec::new();
        for (index, node) in run.nodes.iter().enumerate() {
            if node.spec.reset {
                work.push((index, node.host(), node.label(), Vec::new()));
                continue;
            }
            let mut files = plan::bundle_files(
                bundle,
                &node.facts.architecture,
                node.spec.role,
                &node.spec.data_dir,
                &node.spec.k0s_install_path,
            );
            let user_files = super::user_files::plan(&node.spec.files, &node.spec.data_dir)
                .map_err(|error| {
                    PhaseError::new(anyhow::Error::new(error).context(node.label()))
                })?;
            let records = user_files
                .iter()
                .map(|file| HostFileRecord {
                    path: file.path.clone(),
                    digest: file.digest,
                    reason: format!("files[] entry {} of the cluster file", file.name),
                })
                .collect();
            cluster_file_uploads.push((index, records));
            files.extend(user_files);
            if let Some(rendered) = &run.stacks {
                files.extend(plan::stack_files(
                    bundle,
                    rendered,
                    &archives,
                    node.spec.role,
                    &node.spec.data_dir,
                    &node.node_name(),
                )?);
            }
            work.push((index, node.host(), node.label(), files));
        }
        let upgrading = run.upgrading();
        let target = bundle.manifest().k0s.version.clone();
        let targets: Vec<(bool, String, String)> = run
            .nodes
            .iter()
            .map(|node| {
                let needs_binary =
                    node.facts.k0s_binary_version.as_deref() != Some(target.as_str());
                (
                    needs_binary,
                    node.spec.k0s_install_path.clone(),
                    node.spec.data_dir.clone(),
                )
            })
            .collect();
        let targets = &targets;
        // What the installed blueprint records on each host, to tell drift from a new version.
        let recorded: Vec<BTreeMap<String, crate::digest::Digest>> = run
            .nodes
            .iter()
            .map(|node| {
                run.installed
                    .as_ref()
                    .and_then(|blueprint| {
                        blueprint
                            .nodes
                            .iter()
                            .find(|record| record.label() == node.label())
                    })
                    .map(|record| record.files.clone().into_iter().collect())
                    .unwrap_or_default()
            })
            .collect();
        let recorded = &recorded;
        let planned = for_each_host(
            work,
            run.settings.concurrency,
            |(index, host, label, mut files)| async move {
                let failure = |e| HostFailure::new(label.clone(), e);
                let (needs_binary, install_path, data_dir) = &targets[index];
                let mut drifted = Vec::new();
                let paths: Vec<&str> = files.iter().map(|file| file.path.as_str()).collect();
                let states = host.file_states(&paths).await.map_err(failure)?;
                for (file, state) in files.iter_mut().zip(states) {
                    file.compare_with(state.as_ref());
                    if !upgrading || file.present {
                        continue;
                    }
                    // The bundle brings the bytes the blueprint records here, but the host contains
                    // others. Someone changed the file, and the upgrade puts it back.
                    if recorded[index].get(&file.path) == Some(&file.digest) {
                        drifted.push(file.path.clone());
                    }
                    // An upgrade must not replace what runs now: the new binary and manifests wait
                    // beside the running ones until their node or stack is upgraded.
                    let manifests = format!("{}/manifests/", data_dir.trim_end_matches('/'));
                    let staged = if file.path == *install_path && *needs_binary {
                        Some(format!("{}/k0s", plan::next_dir(data_dir)))
                    } else {
                        file.path.strip_prefix(&manifests).map(|relative| {
                            format!("{}/manifests/{relative}", plan::next_dir(data_dir))
                        })
                    };
                    if let Some(staged) = staged {
                        file.final_path = Some(std::mem::replace(&mut file.path, staged));
                        file.staging_dir = None;
                        let mut found = host.file_states(&[&file.path]).await.map_err(failure)?;
                        file.compare_with(found.pop().flatten().as_ref());
                    }
                }
                Ok((index, files, drifted))
            },
        )
        .await?;
        for (index, files, drifted) in planned {
            for path in drifted {
                run.ui.warn(&format!(
                    "{}: {path} differs from the blueprint (drift); the upgrade replaces it with the recorded file",
                    run.nodes[index].label()
                ));
            }
            run.nodes[index].uploads = files;
        }
        for (index, records) in cluster_file_uploads {
            run.nodes[index].cluster_file_uploads = records;
        }
        Ok(())
    }
}

/// Space kept free on the file system of k0s's data directory, beyond the uploads, for k0s's own
/// state.
const DATA_DIR_RESERVE: u64 = 64 << 20;

/// Checks, on each host with files to receive, that every file system that receives files has
/// room for them plus a tenth, and for k0s's own state where the data directory lives.
async fn check_free_space(run: &Run) -> Result<BTreeMap<usize, Vec<String>>, PhaseError> {
    let work: Vec<_> = run
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, node)| node.uploads.iter().any(|file| !file.present))
        .map(|(index, node)| {
            // Each pending file lands first in its staging folder, else beside its destination.
            let mut dirs: Vec<(String, u64)> = node
                .uploads
                .iter()
                .filter(|file| !file.present)
                .map(|file| {
                    let dir = file
                        .staging_dir
                        .clone()
                        .unwrap_or_else(|| parent_dir(&file.path));
                    (dir, file.size)
                })
                .collect();
            dirs.push((node.spec.data_dir.clone(), 0));
            (
                index,
                node.host(),
                node.label(),
                node.spec.data_dir.clone(),
                dirs,
            )
        })
        .collect();
    let checked = for_each_host(
        work,
        run.settings.concurrency,
        |(index, host, label, data_dir, dirs)| async move {
            let paths: Vec<&str> = dirs.iter().map(|(dir, _)| dir.as_str()).collect();
            let mounts = host
                .free_space_each(&paths)
                .await
                .map_err(|error| HostFailure::new(label, error))?;
            // Bytes to write, bytes free and whether k0s's data lives there, per file system.
            let mut by_mount: BTreeMap<String, (u64, u64, bool)> = BTreeMap::new();
            for ((dir, size), (mount, free)) in dirs.iter().zip(mounts) {
                let entry = by_mount.entry(mount).or_insert((0, free, false));
                entry.0 += size;
                entry.2 |= *dir == data_dir;
            }
            let problems: Vec<String> = by_mount
                .into_iter()
                .filter(|(_, (files, _, _))| *files > 0)
                .filter_map(|(mount, (files, free, holds_data_dir))| {
                    let reserve = if holds_data_dir { DATA_DIR_RESERVE } else { 0 };
                    let required = files + files / 10 + reserve;
                    let reserve_text = if holds_data_dir {
                        format!(", and {} for k0s's own data", format_bytes(reserve))
                    } else {
                        String::new()
                    };
                    (free < required).then(|| {
                        format!(
                            "the file system at {mount} needs {} free: {} of files plus a tenth{reserve_text}, but only {} is free; free space or grow the disk",
                            format_bytes(required),
                            format_bytes(files),
                            format_bytes(free)
                        )
                    })
                })
                .collect();
            Ok((index, problems))
        },
    )
    .await
    .map_err(PhaseError::new)?;
    Ok(checked
        .into_iter()
        .filter(|(_, problems)| !problems.is_empty())
        .collect())
}

/// Node names and private addresses must be unique in a cluster.
fn check_unique(run: &Run, problems: &mut BTreeMap<usize, Vec<String>>) {
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    let mut addresses: BTreeMap<String, usize> = BTreeMap::new();
    for (index, node) in run.nodes.iter().enumerate() {
        let name = node.node_name();
        if let Some(&first) = names.get(&name) {
            problems.entry(index).or_default().push(format!(
                "its node name {name} is also the name of {}; set a unique hostname on one of them",
                run.nodes[first].label()
            ));
        } else {
            names.insert(name, index);
        }
        if let Some(address) = node.spec.private_address {
            let address = address.to_string();
            if let Some(&first) = addresses.get(&address) {
                problems.entry(index).or_default().push(format!(
                    "its private address {address} is also the private address of {}",
                    run.nodes[first].label()
                ));
            } else {
                addresses.insert(address, index);
            }
        }
    }
}

fn fail_on(run: &Run, problems: BTreeMap<usize, Vec<String>>) -> Result<(), PhaseError> {
    if problems.is_empty() {
        return Ok(());
    }
    let failures = problems
        .into_iter()
        .map(|(index, texts)| {
            HostFailure::new(run.nodes[index].label(), anyhow::anyhow!(texts.join("; ")))
        })
        .collect();
    Err(PhaseError::new(HostFailures {
        failures,
        total: run.nodes.len(),
    }))
}
