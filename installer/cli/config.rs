//! `airlock init` and `airlock config`: writing and checking cluster files.

use super::report::print_output;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{CliError, CliResult, Status};
use crate::config::{Cluster, ConfigError, EXAMPLE_CLUSTER_FILE, Role};
use crate::ui::Ui;

#[derive(Debug, Args)]
pub struct InitArgs {}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Load and validate cluster files as apply would, without connecting to any host.
    Validate(ValidateArgs),
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// A cluster file in k0sctl's format; repeat to combine several files, `-` reads stdin.
    #[arg(short = 'c', long = "config", value_name = "FILE", required = true)]
    pub configs: Vec<PathBuf>,
}

/// Prints the example cluster file to standard output.
pub fn init(_args: InitArgs) -> CliResult {
    print_output(EXAMPLE_CLUSTER_FILE)?;
    Ok(Status::Success)
}

pub fn run(command: ConfigCommand, ui: &Ui) -> CliResult {
    match command {
        ConfigCommand::Validate(args) => validate(args, ui),
    }
}

/// Loads the files as apply would and prints a one-line summary. A missing SSH key file is a
/// warning, not an error, because review pipelines validate files on machines without the keys.
fn validate(args: ValidateArgs, ui: &Ui) -> CliResult {
    let cluster = Cluster::load(&args.configs).map_err(load_error)?;
    for host in &cluster.hosts {
        let bastion = host.ssh.bastion.as_deref();
        for (ssh, what) in std::iter::once((&host.ssh, "ssh.keyPath"))
            .chain(bastion.map(|bastion| (bastion, "ssh.bastion.keyPath")))
        {
            if let Some(path) = &ssh.key_path
                && !path.exists()
            {
                ui.warn(&format!(
                    "host {}: {what} {} does not exist on this machine; apply cannot log in with it",
                    host.ssh.address,
                    path.display()
                ));
            }
        }
    }
    print_output(&format!("{}\n", summary(&cluster)))?;
    Ok(Status::Success)
}

/// Chooses the exit status of a failed load: the files' content and missing files are the
/// user's input, while other read failures come from outside airlock.
pub fn load_error(error: ConfigError) -> CliError {
    let input_error = match &error {
        ConfigError::Read { source, .. } | ConfigError::ReadKey { source, .. } => {
            matches!(
                source.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::InvalidData
            )
        }
        ConfigError::Invalid(_) | ConfigError::NoFiles | ConfigError::TooLarge { .. } => true,
    };
    if input_error {
        CliError::usage(error)
    } else {
        CliError::failure(error)
    }
}

/// Formats one line such as `cluster.yaml: 3 hosts (1 controller, 2 workers), k0s v1.35.3+k0s.0`.
pub fn summary(cluster: &Cluster) -> String {
    let count = |role: Role| {
        cluster
            .hosts
            .iter()
            .filter(|host| host.role == role)
            .count()
    };
    let roles = [
        (Role::Controller, "controller", "controllers"),
        (
            Role::ControllerWorker,
            "controller+worker",
            "controller+worker",
        ),
        (Role::Single, "single", "single"),
        (Role::Worker, "worker", "workers"),
    ];
    let breakdown: Vec<String> = roles
        .iter()
        .filter_map(|&(role, one, many)| match count(role) {
            0 => None,
            1 => Some(format!("1 {one}")),
            n => Some(format!("{n} {many}")),
        })
        .collect();
    let hosts = match cluster.hosts.len() {
        1 => "1 host".to_string(),
        n => format!("{n} hosts"),
    };
    let k0s = match &cluster.k0s.version {
        Some(version) => format!("k0s {version}"),
        None => "k0s version from the bundle".to_string(),
    };
    let mut line = format!(
        "{}: {hosts} ({}), {k0s}",
        cluster.files.join(", "),
        breakdown.join(", ")
    );
    match cluster.manifests.len() {
        0 => {}
        1 => line.push_str(", 1 additional manifest"),
        n => line.push_str(&format!(", {n} additional manifests")),
    }
    line
}
