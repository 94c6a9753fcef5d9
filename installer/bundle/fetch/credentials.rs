//! Registry credentials from a Docker-style `config.json`, the file `docker login`, `podman
//! login` and `skopeo login` write.
//!
//! Entries under `auths` give a user name and password (as `auth`, base64 of `user:password`, or
//! as `username` and `password`). `credHelpers` names a helper per registry and `credsStore` one
//! for every registry. A helper is the program `docker-credential-<name>`, run with `get` and the
//! registry on standard input, as Docker runs it. Secrets never reach a log: the types here
//! print `<redacted>` in their place.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

/// The largest `config.json` airlock reads.
const MAX_CONFIG_SIZE: u64 = 4 << 20;

/// The key Docker files Docker Hub's credentials under.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum RegistryCredential {
    Anonymous,
    Basic { username: String, password: String },
}

impl fmt::Debug for RegistryCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryCredential::Anonymous => f.write_str("Anonymous"),
            RegistryCredential::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
        }
    }
}

/// A credentials file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read registry credentials {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid registry credentials {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error(
        "registry credentials for {registry} in {path} are an identity token, which airlock cannot use"
    )]
    IdentityToken { registry: String, path: PathBuf },
    #[error("credential helper docker-credential-{helper} failed for {registry}: {reason}")]
    Helper {
        helper: String,
        registry: String,
        reason: String,
    },
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default)]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default)]
    creds_store: Option<String>,
}

#[derive(Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default, rename = "identitytoken")]
    identity_token: Option<String>,
}

/// The output of `docker-credential-<helper> get`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HelperOutput {
    username: String,
    secret: String,
}

/// The registry credentials of one `config.json`, or none.
pub struct Credentials {
    path: Option<PathBuf>,
    config: ConfigFile,
    /// Results of credential helpers, so that each helper runs once per registry and build.
    cache: Mutex<HashMap<String, RegistryCredential>>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("path", &self.path)
            .field("registries", &self.config.auths.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Credentials {
    /// No credentials: every registry is accessed anonymously.
    pub fn none() -> Credentials {
        Credentials {
            path: None,
            config: ConfigFile::default(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Returns where Docker looks for its configuration: `$DOCKER_CONFIG/config.json`, else
    /// `~/.docker/config.json`.
    pub fn default_path() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|dir| !dir.is_empty()) {
            return Some(PathBuf::from(dir).join("config.json"));
        }
        std::env::var_os("HOME")
            .filter(|home| !home.is_empty())
            .map(|home| PathBuf::from(home).join(".docker/config.json"))
    }

    /// Reads a `config.json`.
    pub fn load(path: &Path) -> Result<Credentials, CredentialsError> {
        let read = |source| CredentialsError::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read)?;
        let mut text = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(file, MAX_CONFIG_SIZE + 1),
            &mut text,
        )
        .map_err(read)?;
        let invalid = |reason: String| CredentialsError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        if text.len() as u64 > MAX_CONFIG_SIZE {
            return Err(invalid(format!(
                "it is larger than {MAX_CONFIG_SIZE} bytes"
            )));
        }
        let config: ConfigFile =
            serde_json::from_slice(&text).map_err(|error| invalid(error.to_string()))?;
        Ok(Credentials {
            path: Some(path.to_path_buf()),
            config,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Returns the file the credentials come from.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Returns the credentials for `registry` (`host` or `host:port`; `docker.io` for Docker
    /// Hub), running a credential helper if the file names one.
    pub async fn for_registry(
        &self,
        registry: &str,
    ) -> Result<RegistryCredential, CredentialsError> {
        let registry = normalize_registry(registry);
        if let Some(cached) = self.cache.lock().await.get(&registry) {
            return Ok(cached.clone());
        }
        let credential = self.look_up(&registry).await?;
        self.cache
            .lock()
            .await
            .insert(registry.clone(), credential.clone());
        Ok(credential)
    }

    async fn look_up(&self, registry: &str) -> Result<RegistryCredential, CredentialsError> {
        let path = self.path.clone().unwrap_or_default();
        let helper = self
            .config
            .cred_helpers
            .iter()
            .find(|(key, _)| normalize_registry(key) == registry)
            .map(|(_, helper)| helper)
            .or(self.config.creds_store.as_ref());
        if let Some(helper) = helper {
            return run_helper(helper, registry, &path).await;
        }
        let Some(entry) = self
            .config
            .auths
            .iter()
            .find(|(key, _)| normalize_registry(key) == registry)
            .map(|(_, entry)| entry)
        else {
            return Ok(RegistryCredential::Anonymous);
        };
        let invalid = |reason: String| CredentialsError::Invalid {
            path: path.clone(),
            reason,
        };
        if let Some(auth) = entry.auth.as_deref().filter(|auth| !auth.is_empty()) {
            let decoded = data_encoding::BASE64
                .decode(auth.trim().as_bytes())
                .map_err(|_| invalid(format!("the `auth` of {registry} is not base64")))?;
            let decoded = String::from_utf8(decoded)
                .map_err(|_| invalid(format!("the `auth` of {registry} is not UTF-8")))?;
            let Some((username, password)) = decoded.split_once(':') else {
                return Err(invalid(format!(
                    "the `auth` of {registry} is not base64 of user:password"
                )));
            };
            return Ok(RegistryCredential::Basic {
                username: username.to_string(),
                password: password.to_string(),
            });
        }
        if let (Some(username), Some(password)) = (&entry.username, &entry.password) {
            return Ok(RegistryCredential::Basic {
                username: username.clone(),
                password: password.clone(),
            });
        }
        if entry.identity_token.is_some() {
            return Err(CredentialsError::IdentityToken {
                registry: registry.to_string(),
                path,
            });
        }
        Ok(RegistryCredential::Anonymous)
    }
}

/// Asks `docker-credential-<helper>` for the credentials of `registry`.
async fn run_helper(
    helper: &str,
    registry: &str,
    path: &Path,
) -> Result<RegistryCredential, CredentialsError> {
    let failed = |reason: String| CredentialsError::Helper {
        helper: helper.to_string(),
        registry: registry.to_string(),
        reason,
    };
    let server = match registry {
        "docker.io" => DOCKER_HUB_KEY.to_string(),
        other => other.to_string(),
    };
    let mut child = tokio::process::Command::new(format!("docker-credential-{helper}"))
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| failed(format!("cannot start it: {error}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(server.as_bytes())
            .await
            .map_err(|error| failed(format!("cannot write to it: {error}")))?;
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(|error| failed(error.to_string()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        // Docker's helpers print this for a registry they store nothing for.
        if stdout.contains("credentials not found") {
            return Ok(RegistryCredential::Anonymous);
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(failed(format!(
            "it exited with {}: {}",
            output.status,
            stderr.trim()
        )));
    }
    let answer: HelperOutput = serde_json::from_slice(&output.stdout)
        .map_err(|error| failed(format!("invalid answer: {error}")))?;
    if answer.username == "<token>" {
        return Err(CredentialsError::IdentityToken {
            registry: registry.to_string(),
            path: path.to_path_buf(),
        });
    }
    Ok(RegistryCredential::Basic {
        username: answer.username,
        password: answer.secret,
    })
}

/// Reduces a `config.json` key (`https://host/v1/`, `host:port`...) to `host[:port]`, with every
/// name of Docker Hub turned into `docker.io`.
fn normalize_registry(key: &str) -> String {
    let without_scheme = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = without_scheme
        .split('/')
        .next()
        .unwrap_or(without_scheme)
        .to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_string()
        }
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credentials(json: &str) -> Credentials {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, json).unwrap();
        Credentials::load(&path).unwrap()
    }

    #[tokio::test]
    async fn auth_entry_decodes_user_and_password() {
        // base64 of "robot:s3cr:et"; the password may contain ':'.
        let credentials = credentials(
            r#"{"auths": {"https://127.0.0.1:5000": {"auth": "cm9ib3Q6czNjcjpldA=="}}}"#,
        );
        let found = credentials.for_registry("127.0.0.1:5000").await.unwrap();
        assert_eq!(
            found,
            RegistryCredential::Basic {
                username: "robot".into(),
                password: "s3cr:et".into()
            }
        );
        assert!(!format!("{found:?}").contains("s3cr"));
        assert_eq!(
            credentials.for_registry("127.0.0.1:5001").await.unwrap(),
            RegistryCredential::Anonymous
        );
    }

    #[tokio::test]
    async fn docker_hub_key_matches_docker_io() {
        let credentials = credentials(
            r#"{"auths": {"https://index.docker.io/v1/": {"username": "u", "password": "p"}}}"#,
        );
        assert_eq!(
            credentials.for_registry("docker.io").await.unwrap(),
            RegistryCredential::Basic {
                username: "u".into(),
                password: "p".into()
            }
        );
    }

    #[tokio::test]
    async fn identity_token_is_rejected() {
        let credentials =
            credentials(r#"{"auths": {"quay.io": {"identitytoken": "refresh-token"}}}"#);
        let error = credentials.for_registry("quay.io").await.unwrap_err();
        assert!(
            matches!(error, CredentialsError::IdentityToken { .. }),
            "{error}"
        );
    }

    #[test]
    fn invalid_json_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, "{ not json").unwrap();
        let error = Credentials::load(&path).unwrap_err().to_string();
        assert!(error.contains("config.json"), "{error}");
    }
}
