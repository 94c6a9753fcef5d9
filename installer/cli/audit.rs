//! `airlock audit`: the hash-chained audit log.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{CliError, CliResult};
use crate::ui::Ui;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check that no line of an audit log was edited, removed or reordered.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The audit log (JSON lines).
    pub file: PathBuf,
}

pub fn run(command: AuditCommand, _ui: &Ui) -> CliResult {
    match command {
        AuditCommand::Verify(_) => Err(CliError::not_implemented("audit verify")),
    }
}
