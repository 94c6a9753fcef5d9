//! The k0s commands that several phases run on hosts, and waiting for what they start.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use crate::config::{CONFIG_FILE, TOKEN_FILE};
use crate::k0s::{K0sStatus, bootstrap_token_id};
use crate::remote::{Host, HostError};
use crate::shell::quote;

/// The first wait between two readiness checks. It doubles after each check up to [`POLL`], so
/// that a service that comes up within a moment is seen within a moment, and one that takes long
/// is not checked more than once a second.
const FIRST_POLL: Duration = Duration::from_millis(100);
/// The maximum wait between two readiness checks.
const POLL: Duration = Duration::from_millis(1000);
/// The maximum age of a list of the nodes that a waiter reuses. Each list starts k0s on the
/// leader, so parallel joins share one list per this interval.
const NODES_FRESH: Duration = Duration::from_millis(250);

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
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<String>>>,
{
    poll(what, timeout, (FIRST_POLL, POLL), check).await
}

/// Polls as [`wait_until`] does, with waits that start at the first of `waits` and double up to
/// the second.
async fn poll<F, Fut>(
    what: &str,
    timeout: Duration,
    waits: (Duration, Duration),
    mut check: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<String>>>,
{
    let started = Instant::now();
    let (mut interval, longest) = waits;
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
        tokio::time::sleep(interval).await;
        interval = (interval * 2).min(longest);
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

/// Returns the command that starts the installed service without waiting for it.
pub fn start_command(paths: K0sPaths<'_>) -> String {
    format!("{} start", paths.k0s())
}

/// Starts the installed service and waits until `k0s status` answers.
pub async fn start(host: &Host, paths: K0sPaths<'_>, timeout: Duration) -> anyhow::Result<()> {
    host.run(&start_command(paths)).await?;
    wait_running(host, paths, timeout).await
}

/// Waits until `k0s status` reports the service running, after a start.
pub async fn wait_running(
    host: &Host,
    paths: K0sPaths<'_>,
    timeout: Duration,
) -> anyhow::Result<()> {
    wait_until(&format!("k0s on {}", host.label()), timeout, || async {
        Ok(match status(host, paths).await? {
            Some(_) => None,
            None => Some(match service_log(host).await {
                Some(log) => format!("k0s is not running; its log ends: {log}"),
                None => "k0s is not running".to_string(),
            }),
        })
    })
    .await
}

/// Reads the last lines of the k0s service's log, where k0s reports why it stopped, joined with
/// " / ", or `None` when there are none. Real hosts keep the log in the journal, and lab hosts
/// keep it where the journal would be.
pub async fn service_log(host: &Host) -> Option<String> {
    // journalctl prints "-- No entries --" for a unit that never logged.
    let script = "log=$(journalctl -u k0scontroller -u k0sworker -n 3 --no-pager 2>/dev/null \
                  | grep -v '^-- No entries --$'); \
                  if [ -n \"$log\" ]; then echo \"$log\"; \
                  else tail -n 3 /run/k0s-double/*.log 2>/dev/null; fi; true";
    match host.run(script).await {
        Ok(text) if !text.trim().is_empty() => Some(text.trim().replace('\n', " / ")),
        _ => None,
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
    NodeReadiness::new(leader, paths).wait(name, timeout).await
}

/// The Ready condition of every node, as the API server on the leader reports it. Callers that
/// wait at the same time, such as parallel worker joins, share one `kubectl get nodes` per
/// [`NODES_FRESH`], because each request starts k0s on the leader.
pub struct NodeReadiness<'a> {
    leader: &'a Host,
    paths: K0sPaths<'a>,
    latest: tokio::sync::Mutex<Option<NodeSnapshot>>,
}

struct NodeSnapshot {
    read_at: Instant,
    /// For each registered node, `None` when it is Ready, else why not.
    nodes: HashMap<String, Option<String>>,
}

impl<'a> NodeReadiness<'a> {
    pub fn new(leader: &'a Host, paths: K0sPaths<'a>) -> NodeReadiness<'a> {
        NodeReadiness {
            leader,
            paths,
            latest: tokio::sync::Mutex::new(None),
        }
    }

    /// Waits until node `name` is Ready. The waiters share the reads, so each checks every
    /// [`NODES_FRESH`] without backing off: the leader still lists the nodes once per interval.
    pub async fn wait(&self, name: &str, timeout: Duration) -> anyhow::Result<()> {
        let waits = (NODES_FRESH, NODES_FRESH);
        poll(&format!("node {name}"), timeout, waits, || self.state(name)).await
    }

    /// Returns `None` when node `name` is Ready, else why not. Reads the nodes again unless
    /// another caller did so within [`NODES_FRESH`].
    pub async fn state(&self, name: &str) -> anyhow::Result<Option<String>> {
        let mut latest = self.latest.lock().await;
        let fresh = latest
            .as_ref()
            .is_some_and(|snapshot| snapshot.read_at.elapsed() < NODES_FRESH);
        if !fresh {
            *latest = Some(NodeSnapshot {
                read_at: Instant::now(),
                nodes: self.read().await?,
            });
        }
        let nodes = &latest.as_ref().expect("a snapshot was just taken").nodes;
        Ok(match nodes.get(name) {
            Some(state) => state.clone(),
            None => Some("not registered yet".to_string()),
        })
    }

    async fn read(&self) -> anyhow::Result<HashMap<String, Option<String>>> {
        let command = self.paths.kubectl("get nodes -o json");
        let output = self.leader.run_output(&command).await?;
        if !output.success() {
            anyhow::bail!(
                "the API server on {} did not list the nodes: {}",
                self.leader.label(),
                output.stderr_tail()
            );
        }
        let list: serde_json::Value = serde_json::from_slice(&output.stdout)?;
        Ok(list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|node| {
                let name = node["metadata"]["name"].as_str()?;
                Some((name.to_string(), not_ready_reason(node)))
            })
            .collect())
    }
}

/// Returns `None` when the node object's Ready condition is True, else why not.
fn not_ready_reason(node: &serde_json::Value) -> Option<String> {
    let ready = node["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|condition| condition["type"] == "Ready");
    match ready {
        Some(condition) if condition["status"] == "True" => None,
        Some(condition) => Some(format!(
            "Ready is {}: {}",
            condition["status"].as_str().unwrap_or("unknown"),
            condition["message"].as_str().unwrap_or("")
        )),
        None => Some("no Ready condition yet".to_string()),
    }
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

/// Invalidates tokens by their ids on the leader, all in one `k0s token invalidate`.
pub async fn invalidate_tokens(
    leader: &Host,
    paths: K0sPaths<'_>,
    ids: &[String],
) -> Result<(), HostError> {
    let ids: Vec<String> = ids.iter().map(|id| quote(id)).collect();
    leader
        .run(&format!(
            "{} token invalidate --data-dir={} {}",
            paths.k0s(),
            quote(paths.data_dir),
            ids.join(" ")
        ))
        .await
        .map(drop)
}

impl JoinToken {
    /// Returns the token file's contents. They reach the host on standard input, never in a
    /// command line; see [`write_token_command`].
    pub fn file_contents(&self) -> Vec<u8> {
        format!("{}\n", self.token).into_bytes()
    }
}

/// Returns a shell command that writes standard input to the token file a joining host's
/// install reads, readable by root only.
pub fn write_token_command() -> String {
    let dir = quote(&crate::remote::parent_dir(TOKEN_FILE));
    format!(
        "{{ [ -d {dir} ] || mkdir -p {dir}; }} && {}",
        replace_token_file("cat")
    )
}

/// Returns a shell command that replaces the token file's content once the join is done, as
/// k0sctl does, so that the used token is not left on disk.
pub fn scrub_token_command() -> String {
    format!(
        "if [ -f {} ]; then {}; fi",
        quote(TOKEN_FILE),
        replace_token_file("echo '# overwritten by airlock after join'")
    )
}

/// Returns a shell command that writes the output of `producer` to a temporary file readable by
/// root only, then renames it over the token file, so the file is never seen half-written.
fn replace_token_file(producer: &str) -> String {
    let file = quote(TOKEN_FILE);
    let temporary = quote(&format!("{TOKEN_FILE}.airlock-{}", std::process::id()));
    format!("(umask 077 && {producer} > {temporary}) && mv -f {temporary} {file}")
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
