//! `airlock blueprint`: the as-built record stored on the controllers.

use super::report::print_output;
use clap::{Args, Subcommand, ValueEnum};

use super::apply::ClusterArgs;
use super::apply::ConnectionArgs;
use super::status::{connect_hosts, fetch_blueprints, newest_blueprint};
use super::{CliError, CliResult, Status};
use crate::ui::Ui;

#[derive(Debug, Subcommand)]
pub enum BlueprintCommand {
    /// Print the blueprint stored on the cluster's controllers.
    Show(ShowArgs),
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// The output format.
    #[arg(short = 'o', long, value_enum, default_value_t = DocumentFormat::Yaml)]
    pub output: DocumentFormat,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// The format of a document printed on standard output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DocumentFormat {
    Yaml,
    Json,
}

pub async fn run(command: BlueprintCommand, ui: &Ui) -> CliResult {
    match command {
        BlueprintCommand::Show(args) => show(args, ui).await,
    }
}

/// Prints the newest blueprint the controllers hold, warning about controllers whose copy
/// differs.
async fn show(args: ShowArgs, ui: &Ui) -> CliResult {
    let cluster = args.cluster.load()?;
    let controllers = connect_hosts(&cluster, &args.connection, 10, |host| {
        host.role.is_controller()
    })
    .await?;
    for controller in &controllers {
        if let Err(reason) = &controller.host {
            ui.warn(&format!("{}: {reason}", controller.label()));
        }
    }
    let copies = fetch_blueprints(&controllers).await;
    let (source, blueprint) = newest_blueprint(&copies)?;
    for (label, copy) in &copies {
        match copy {
            Ok(copy) if *copy != blueprint => ui.warn(&format!(
                "{label} holds another blueprint (written {}); showing the one from {source}",
                copy.written_at
            )),
            Ok(_) => {}
            Err(reason) => ui.warn(&format!("{label}: {reason}")),
        }
    }
    let text = match args.output {
        DocumentFormat::Yaml => blueprint.to_yaml().map_err(CliError::internal)?,
        DocumentFormat::Json => format!(
            "{}\n",
            serde_json::to_string_pretty(&blueprint).map_err(CliError::internal)?
        ),
    };
    print_output(&text)?;
    Ok(Status::Success)
}
