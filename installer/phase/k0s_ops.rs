//! The k0s commands that several phases run on hosts, and waiting for what they start.

use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use crate::config::{CONFIG_FILE, TOKEN_FILE};
use crate::k0s::{K0sStatus, bootstrap_token_id};
use crate::remote::{Host, HostError};
use crate::shell::quote;

/// How often readiness is polled.
const POLL: Duration = Duration::from_millis(1000);

/// A join token. It has no `Display`, and its `Debug` hides the token, so that the token cannot
/// reach a log or a message.
pub struct JoinToken {
    token: String,
    /// The bootstrap token id, which is not secret and names the token for invalidation.
    pub id: String,
}

/// What k0s is and where it keeps its data on one host.
#[derive(Clone, Copy)]
pub struct K0sPaths<'a> {
    pub binary: &'a str,
    pub data_dir: &'a str,
}

impl K0sPaths<'_> {
    fn k0s(&self) -> String {
        quote(self.binary)
    }

    /// A `k0s kubectl` command line run with the admin kubeconfig, as k0sctl runs it.
    pub fn kubectl(&self, args: &str) -> String {
        format!(
            "env KUBECONFIG={} {} kubectl {args}",
            quote(&format!("{}/pki/admin.conf", self.data_dir)),
            self.k0s()
        )
    }
}

/// Polls `check` until it returns `Ok(None)` (ready) or `timeout` passes. `check` returns
/// `Ok(Some(state))` while not ready; the last state is reported on timeout.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<String>>>,
{
    let started = Instant::now();
    loop {
        let last = match check().await {
            Ok(None) => return Ok(()),
            Ok(Some(state)) => state,
            Err(error) => format!("{error:#}"),
        };
        if started.elapsed() >= timeout {
            anyhow::bail!(
                "{what} was not ready within {}s; last seen: {last}",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Reads `k0s status -o json`; `None` when k0s does not run.
pub async fn status(host: &Host, paths: K0sPaths<'_>) -> Result<Option<K0sStatus>, HostError> {
    let output = host
        .run_output(&format!("{} status -o json", paths.k0s()))
        .await?;
    if !output.success() {
        return Ok(None);
    }
    Ok(K0sStatus::parse(&output.stdout_text())
        .ok()
        .filter(K0sStatus::is_running))
}

/// Starts the installed service and waits until `k0s status` answers.
pub async fn start(host: &Host, paths: K0sPaths<'_>, timeout: Duration) -> anyhow::Result<()> {
    host.run(&format!("{} start", paths.k0s())).await?;
    wait_until(&format!("k0s on {}", host.label()), timeout, || async {
        Ok(match status(host, paths).await? {
            Some(_) => None,
            None => Some(service_log_tail(host).await),
        })
    })
    .await
}

/// The end of the service's log, where k0s says why it stopped. Lab hosts keep it where systemd
/// would keep the journal; real hosts answer through journalctl.
async fn service_log_tail(host: &Host) -> String {
    let script = "journalctl -u k0scontroller -u k0sworker -n 3 --no-pager 2>/dev/null \
                  || tail -n 3 /run/k0s-double/*.log 2>/dev/null || true";
    match host.run(script).await {
        Ok(text) if !text.trim().is_empty() => format!(
            "k0s is not running; its log ends: {}",
            text.trim().replace('\n', " / ")
        ),
        _ => "k0s is not running".to_string(),
    }
}

/// Waits until the API server on `host` answers `/readyz`.
pub async fn wait_api_ready(
    host: &Host,
    paths: K0sPaths<'_>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let command = paths.kubectl("get --raw='/readyz'");
    wait_until(
        &format!("the API server on {}", host.label()),
        timeout,
        || async {
            let output = host.run_output(&command).await?;
            Ok(if output.success() && output.stdout_text().trim() == "ok" {
                None
            } else {
                Some(format!(
                    "readyz said {:?} {}",
                    output.stdout_text().trim(),
                    output.stderr_tail()
                ))
            })
        },
    )
    .await
}

/// Waits until node `name` is Ready, asking the API server on `leader`.
pub async fn wait_node_ready(
    leader: &Host,
    paths: K0sPaths<'_>,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    wait_until(&format!("node {name}"), timeout, || async {
        node_ready(leader, paths, name).await
    })
    .await
}

/// Returns `None` when the node is Ready, else why not.
pub async fn node_ready(
    leader: &Host,
    paths: K0sPaths<'_>,
    name: &str,
) -> anyhow::Result<Option<String>> {
    let output = leader
        .run_output(&paths.kubectl(&format!("get node {} -o json", quote(name))))
        .await?;
    if !output.success() {
        return Ok(Some(format!(
            "not registered yet ({})",
            output.stderr_tail()
        )));
    }
    let node: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let ready = node["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|condition| condition["type"] == "Ready");
    Ok(match ready {
        Some(condition) if condition["status"] == "True" => None,
        Some(condition) => Some(format!(
            "Ready is {}: {}",
            condition["status"].as_str().unwrap_or("unknown"),
            condition["message"].as_str().unwrap_or("")
        )),
        None => Some("no Ready condition yet".to_string()),
    })
}

/// Creates a join token on the leader, valid for `expiry`.
pub async fn create_token(
    leader: &Host,
    paths: K0sPaths<'_>,
    role: &str,
    expiry: &str,
) -> anyhow::Result<JoinToken> {
    let command = format!(
        "{} token create --role={role} --expiry={expiry} --data-dir={}",
        paths.k0s(),
        quote(paths.data_dir)
    );
    let token = leader.run(&command).await?.trim().to_string();
    let id = bootstrap_token_id(&token)?;
    Ok(JoinToken { token, id })
}

/// Invalidates a token by its id on the leader.
pub async fn invalidate_token(
    leader: &Host,
    paths: K0sPaths<'_>,
    id: &str,
) -> Result<(), HostError> {
    leader
        .run(&format!(
            "{} token invalidate --data-dir={} {}",
            paths.k0s(),
            quote(paths.data_dir),
            quote(id)
        ))
        .await
        .map(drop)
}

/// Writes the token file a joining host's install reads; the token travels on standard input.
pub async fn write_token(host: &Host, token: &JoinToken) -> Result<(), HostError> {
    host.write_file(TOKEN_FILE, format!("{}\n", token.token).as_bytes(), "0600")
        .await
}

/// Replaces the token file's content once the join is done, as k0sctl does, so the used token
/// is not left on disk.
pub async fn scrub_token(host: &Host) -> Result<(), HostError> {
    host.write_file(TOKEN_FILE, b"# overwritten by airlock after join\n", "0600")
        .await
}

/// The k0s configuration file on controllers.
pub fn config_path() -> &'static str {
    CONFIG_FILE
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JoinToken {{ id: {}, token: <redacted> }}", self.id)
    }
}
