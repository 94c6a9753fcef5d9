//! A lock file on each host, so that two airlock runs never change the same host at once.
//!
//! The lock is `/run/lock/airlock.lock` (or `/tmp/airlock.lock` where `/run/lock` is missing),
//! created with the shell's noclobber option so that creation is atomic. It holds the owner: the
//! machine, process and command that took it. The owner refreshes its modification time every
//! [`REFRESH`]; a lock not refreshed for [`STALE_AFTER`] belongs to a run that died and is taken
//! over. A lock left by a process of this same machine that no longer exists is taken over at
//! once.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::host::{Host, HostError};
use crate::shell::quote;

/// How often a held lock is touched.
pub const REFRESH: Duration = Duration::from_secs(10);
/// How old an untouched lock must be before another run may take it.
pub const STALE_AFTER: Duration = Duration::from_secs(30);

const LOCK_SCRIPT_PATH: &str = "f=/run/lock/airlock.lock; [ -d /run/lock ] || f=/tmp/airlock.lock";

/// The identity written into a lock file.
#[derive(Clone, Debug)]
pub struct LockOwner {
    machine: String,
    pid: u32,
    purpose: String,
}

impl LockOwner {
    /// The owner for this process; `purpose` names the command (`apply`, `upgrade`).
    pub fn this_process(purpose: &str) -> LockOwner {
        let machine = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_string())
            .unwrap_or_else(|_| "unknown".to_string());
        LockOwner {
            machine,
            pid: std::process::id(),
            purpose: purpose.to_string(),
        }
    }

    fn line(&self) -> String {
        format!(
            "airlock {} on {} pid {}",
            self.purpose, self.machine, self.pid
        )
    }

    /// Whether a lock line names a process of this machine that has ended.
    fn is_dead_local_owner(&self, line: &str) -> bool {
        let Some((machine, pid)) = parse_owner(line) else {
            return false;
        };
        machine == self.machine
            && pid != self.pid
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
    }
}

fn parse_owner(line: &str) -> Option<(&str, u32)> {
    let (_, rest) = line.split_once(" on ")?;
    let (machine, pid) = rest.rsplit_once(" pid ")?;
    Some((machine, pid.trim().parse().ok()?))
}

/// A lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "{host} is locked by another run ({owner}, refreshed {age_seconds}s ago); wait for it to \
         finish, or delete {path} on the host if that run is gone"
    )]
    Held {
        host: String,
        owner: String,
        age_seconds: u64,
        path: String,
    },
    #[error(transparent)]
    Host(#[from] HostError),
}

/// A lock held on one host; refreshed in the background until released.
pub struct HostLock {
    path: String,
    owner_line: String,
    refresher: JoinHandle<()>,
}

impl HostLock {
    /// Takes the lock on `host`, taking over a stale one.
    pub async fn acquire(host: Arc<Host>, owner: &LockOwner) -> Result<HostLock, LockError> {
        let owner_line = owner.line();
        let stale = STALE_AFTER.as_secs();
        // Prints "acquired PATH", or "held PATH AGE OWNER" when another run holds it.
        let script = format!(
            "{LOCK_SCRIPT_PATH}; \
             if ( set -C; printf '%s\\n' {line} > \"$f\" ) 2>/dev/null; then echo \"acquired $f\"; exit 0; fi; \
             current=$(head -n 1 \"$f\" 2>/dev/null); \
             if [ \"$current\" = {line} ]; then touch \"$f\"; echo \"acquired $f\"; exit 0; fi; \
             age=$(( $(date +%s) - $(stat -c %Y \"$f\" 2>/dev/null || date +%s) )); \
             echo \"held $f $age $current\"",
            line = quote(&owner_line)
        );
        for _ in 0..3 {
            let stdout = host.run(&script).await?;
            let stdout = stdout.trim();
            if let Some(path) = stdout.strip_prefix("acquired ") {
                tracing::debug!(host = %host.label(), path, "lock acquired");
                return Ok(HostLock::start(host, path.to_string(), owner_line));
            }
            let held = stdout.strip_prefix("held ").unwrap_or(stdout);
            let mut fields = held.splitn(3, ' ');
            let (path, age, current) = (
                fields.next().unwrap_or_default().to_string(),
                fields
                    .next()
                    .and_then(|age| age.parse::<u64>().ok())
                    .unwrap_or(0),
                fields.next().unwrap_or_default().to_string(),
            );
            if age >= stale || owner.is_dead_local_owner(&current) {
                tracing::warn!(host = %host.label(), owner = %current, age_seconds = age, "taking over a stale lock");
                host.run(&format!("rm -f {}", quote(&path))).await?;
                continue;
            }
            return Err(LockError::Held {
                host: host.label().to_string(),
                owner: current,
                age_seconds: age,
                path,
            });
        }
        Err(LockError::Held {
            host: host.label().to_string(),
            owner: "another run that keeps taking it".to_string(),
            age_seconds: 0,
            path: "/run/lock/airlock.lock".to_string(),
        })
    }

    fn start(host: Arc<Host>, path: String, owner_line: String) -> HostLock {
        let touch = format!("touch {}", quote(&path));
        let refresher = tokio::spawn(async move {
            loop {
                tokio::time::sleep(REFRESH).await;
                if let Err(error) = host.run(&touch).await {
                    tracing::warn!(host = %host.label(), %error, "cannot refresh the host lock");
                }
            }
        });
        HostLock {
            path,
            owner_line,
            refresher,
        }
    }

    /// Removes the lock file if this run still owns it.
    pub async fn release(self, host: &Host) -> Result<(), HostError> {
        self.release_after(host, "").await
    }

    /// Runs the shell commands `first`, then removes the lock file if this run still owns it, in
    /// one command. The lock goes whether or not `first` succeeds; a failure of `first` is
    /// returned.
    pub async fn release_after(self, host: &Host, first: &str) -> Result<(), HostError> {
        self.refresher.abort();
        let release = format!(
            "if [ \"$(head -n 1 {path} 2>/dev/null)\" = {line} ]; then rm -f {path}; fi",
            path = quote(&self.path),
            line = quote(&self.owner_line)
        );
        let script = if first.trim().is_empty() {
            release
        } else {
            format!("{{\n{first}\n}}; status=$?\n{release}\nexit $status")
        };
        host.run(&script).await?;
        tracing::debug!(host = %host.label(), "lock released");
        Ok(())
    }
}

impl Drop for HostLock {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_line_round_trips() {
        let owner = LockOwner {
            machine: "build-1".to_string(),
            pid: 42,
            purpose: "apply".to_string(),
        };
        assert_eq!(parse_owner(&owner.line()), Some(("build-1", 42)));
        assert_eq!(parse_owner("garbage"), None);
    }

    #[test]
    fn dead_local_owner_is_recognised() {
        let owner = LockOwner {
            machine: "build-1".to_string(),
            pid: 42,
            purpose: "apply".to_string(),
        };
        // 999999999 is above the kernel's largest pid (pid_max is at most 4194304).
        assert!(owner.is_dead_local_owner("airlock apply on build-1 pid 999999999"));
        assert!(!owner.is_dead_local_owner("airlock apply on other-machine pid 999999999"));
        assert!(!owner.is_dead_local_owner(&format!(
            "airlock apply on build-1 pid {}",
            std::process::id()
        )));
    }
}
