//! `airlock key`: minisign key pairs for signing bundles.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::{CliError, CliResult, Status};
use crate::bundle::keys::{self, KeyError, SecretKey};
use crate::ui::Ui;

/// The environment variable a secret key's password is read from before prompting.
pub const PASSWORD_VARIABLE: &str = "AIRLOCK_KEY_PASSWORD";

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Write a new minisign key pair: PREFIX.pub and PREFIX.key.
    Generate(GenerateArgs),
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// The path prefix of the pair: PREFIX.pub (public) and PREFIX.key (secret).
    #[arg(short, long, value_name = "PREFIX")]
    pub output: PathBuf,
    /// Store the secret key without a password. Without this flag the password is read from
    /// AIRLOCK_KEY_PASSWORD or a prompt.
    #[arg(long)]
    pub unencrypted: bool,
}

pub fn run(command: KeyCommand, ui: &Ui) -> CliResult {
    match command {
        KeyCommand::Generate(args) => generate(args, ui),
    }
}

fn generate(args: GenerateArgs, ui: &Ui) -> CliResult {
    let password = match args.unencrypted {
        true => None,
        false => Some(new_password()?),
    };
    let id = keys::generate_key_pair(&args.output, password.as_deref()).map_err(key_error)?;
    if args.unencrypted {
        ui.warn("the secret key is stored without a password; keep it on protected storage");
    }
    ui.println(&format!(
        "wrote {0}.pub and {0}.key (key id {id})\nnext: airlock bundle build SPEC -o DIR --sign {0}.key",
        args.output.display()
    ));
    Ok(Status::Success)
}

/// Reads the password for a new key: AIRLOCK_KEY_PASSWORD, or a prompt asked twice.
fn new_password() -> Result<String, CliError> {
    if let Some(password) = password_from_environment()? {
        return Ok(password);
    }
    require_terminal()?;
    let first = rpassword::prompt_password("password for the new secret key: ")
        .map_err(CliError::failure)?;
    let second = rpassword::prompt_password("repeat the password: ").map_err(CliError::failure)?;
    if first != second {
        return Err(CliError::usage(anyhow::anyhow!(
            "the passwords do not match"
        )));
    }
    check_not_empty(first)
}

/// Loads a secret key, reading its password from AIRLOCK_KEY_PASSWORD or a prompt when the key
/// is encrypted.
pub fn load_secret_key(path: &Path) -> Result<SecretKey, CliError> {
    let encrypted = keys::secret_key_is_encrypted(path).map_err(key_error)?;
    let password = match encrypted {
        false => None,
        true => match password_from_environment()? {
            Some(password) => Some(password),
            None => {
                require_terminal()?;
                let prompt = format!("password for {}: ", path.display());
                Some(rpassword::prompt_password(prompt).map_err(CliError::failure)?)
            }
        },
    };
    SecretKey::load(path, password.as_deref()).map_err(key_error)
}

fn password_from_environment() -> Result<Option<String>, CliError> {
    match std::env::var(PASSWORD_VARIABLE) {
        Ok(password) => check_not_empty(password).map(Some),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(CliError::usage(anyhow::anyhow!(
            "{PASSWORD_VARIABLE} is not valid UTF-8"
        ))),
    }
}

fn check_not_empty(password: String) -> Result<String, CliError> {
    match password.is_empty() {
        true => Err(
            CliError::usage(anyhow::anyhow!("the key password is empty"))
                .help("use --unencrypted for a key without a password"),
        ),
        false => Ok(password),
    }
}

fn require_terminal() -> Result<(), CliError> {
    match std::io::stdin().is_terminal() {
        true => Ok(()),
        false => Err(CliError::usage(anyhow::anyhow!(
            "a key password is needed and standard input is not a terminal"
        ))
        .help(format!(
            "set {PASSWORD_VARIABLE}, or run the command in a terminal"
        ))),
    }
}

/// Maps a key error to the CLI: problems with the given files are bad input.
pub fn key_error(error: KeyError) -> CliError {
    let help = match &error {
        KeyError::Exists { .. } => {
            Some("choose another prefix, or move the existing key away first")
        }
        KeyError::WrongPassword { .. } => {
            Some("check AIRLOCK_KEY_PASSWORD or the password you typed")
        }
        KeyError::InvalidPublicKey { .. } => Some("pass a minisign public key file (PREFIX.pub)"),
        KeyError::InvalidSecretKey { .. } => Some("pass a minisign secret key file (PREFIX.key)"),
        _ => None,
    };
    let status = match &error {
        KeyError::Generate(_) | KeyError::Write { .. } => Status::Failure,
        _ => Status::Usage,
    };
    let error = CliError::failure(error).status(status);
    error.maybe_help(help)
}
