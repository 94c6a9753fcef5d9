//! Passphrases of encrypted private keys: from `AIRLOCK_SSH_KEY_PASSPHRASE`, or asked on the
//! terminal once per key file.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The environment variable that holds the passphrase of every encrypted key airlock loads.
pub const PASSPHRASE_ENV: &str = "AIRLOCK_SSH_KEY_PASSPHRASE";

/// Passphrases typed at the prompt, by key file, so that connecting to many hosts in parallel
/// asks once. The lock also keeps two prompts from writing to the terminal at once.
static TYPED: Mutex<Option<HashMap<PathBuf, String>>> = Mutex::new(None);

/// Returns the passphrase for the encrypted key at `path` and where it came from, for messages.
/// The error explains how to provide one.
pub(super) fn for_key(path: &Path) -> Result<(String, String), String> {
    if let Some(passphrase) = std::env::var_os(PASSPHRASE_ENV) {
        let passphrase = passphrase
            .into_string()
            .map_err(|_| format!("{PASSPHRASE_ENV} is not valid UTF-8"))?;
        return Ok((passphrase, PASSPHRASE_ENV.to_string()));
    }
    if !std::io::stdin().is_terminal() {
        return Err(format!(
            "the key is encrypted and no terminal is attached to ask for its passphrase; \
             set {PASSPHRASE_ENV}, or add the key to an SSH agent (ssh-add) and leave keyPath unset"
        ));
    }
    let mut typed = TYPED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let typed = typed.get_or_insert_with(HashMap::new);
    if let Some(passphrase) = typed.get(path) {
        return Ok((passphrase.clone(), "the prompt".to_string()));
    }
    // NOTE: the prompt blocks this runtime thread and may appear between progress lines.
    let passphrase =
        rpassword::prompt_password(format!("Enter passphrase for key {}: ", path.display()))
            .map_err(|error| format!("cannot read the passphrase from the terminal: {error}"))?;
    typed.insert(path.to_path_buf(), passphrase.clone());
    Ok((passphrase, "the prompt".to_string()))
}
