//! `airlock kubeconfig`: the admin kubeconfig of the cluster.

use super::report::print_output;
use clap::Args;

use super::apply::ClusterArgs;
use super::apply::ConnectionArgs;
use super::{CliError, CliResult, Status};
use crate::k0s::kubeconfig::rewrite;
use crate::remote::{Host, HostKeyPolicy, KnownHosts, Session, UserSshConfig};
use crate::shell::quote;
use crate::ui::Ui;

#[derive(Debug, Args)]
pub struct KubeconfigArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// The API address to put in the kubeconfig (default: spec.k0s.config.spec.api.externalAddress,
    /// else the first controller's SSH address).
    #[arg(long)]
    pub address: Option<String>,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

pub async fn run(args: KubeconfigArgs, _ui: &Ui) -> CliResult {
    let cluster = args.cluster.load()?;
    let controller = cluster
        .controllers()
        .next()
        .ok_or_else(|| CliError::usage(anyhow::anyhow!("the cluster file has no controller")))?;
    let host = connect(&args.connection, &controller.ssh).await?;
    let command = format!(
        "{} kubeconfig admin --data-dir={}",
        quote(&controller.k0s_install_path),
        quote(&controller.data_dir)
    );
    let admin = host.run(&command).await.map_err(|e| {
        CliError::failure(e)
            .help("check that k0s runs on the first controller: airlock apply installs it")
    })?;

    let api = cluster
        .k0s
        .config
        .as_ref()
        .map(|config| &config["spec"]["api"]);
    let address = args
        .address
        .or_else(|| {
            api.and_then(|api| api["externalAddress"].as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| controller.ssh.address.to_string());
    let port = api
        .and_then(|api| api["port"].as_u64())
        .and_then(|port| u16::try_from(port).ok())
        .unwrap_or(6443);
    let text =
        rewrite(&admin, &cluster.name, &cluster.user, &address, port).map_err(CliError::failure)?;
    print_output(&text)?;
    Ok(Status::Success)
}

/// Connects to one host of the cluster file with the command line's connection settings.
pub async fn connect(
    connection: &ConnectionArgs,
    ssh: &crate::config::Ssh,
) -> Result<Host, CliError> {
    let known_hosts =
        KnownHosts::load(&connection.known_hosts_path()?).map_err(CliError::failure)?;
    let policy = HostKeyPolicy::new(known_hosts, connection.accept_new_host_keys);
    let target = UserSshConfig::load_default()
        .and_then(|config| config.target(ssh))
        .map_err(CliError::usage)?;
    let session = Session::connect(&target, &policy, &connection.connect_options())
        .await
        .map_err(CliError::failure)?;
    Ok(Host::new(session, target.user != "root"))
}
