//! `spec.options`: how apply and upgrade wait, drain, taint and parallelise, with k0sctl's
//! defaults (k0sctl v0.32 `cluster/options.go`).

use std::time::Duration;

use serde::Serialize;

use super::index::child;
use super::locate::Problems;
use super::raw::{RawConcurrency, RawDrain, RawEvictTaint, RawOptions, ScalarText};
use super::units::{format_go_duration, parse_go_duration};
use crate::shell::quote;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Options {
    /// Whether apply waits for nodes and stacks to become ready.
    pub wait: bool,
    pub drain: Drain,
    pub evict_taint: EvictTaint,
    pub concurrency: Concurrency,
}

/// The drain settings for a node before a disruptive change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Drain {
    pub enabled: bool,
    #[serde(serialize_with = "go_duration")]
    pub grace_period: Duration,
    #[serde(serialize_with = "go_duration")]
    pub timeout: Duration,
    pub force: bool,
    pub ignore_daemon_sets: bool,
    pub delete_empty_dir_data: bool,
    pub pod_selector: Option<String>,
    #[serde(serialize_with = "go_duration")]
    pub skip_wait_for_delete_timeout: Duration,
}

impl Drain {
    /// Builds the arguments of `kubectl drain` before the node name, in k0sctl's order:
    /// `--force --grace-period=120 --timeout=5m0s --delete-emptydir-data --ignore-daemonsets`.
    pub fn kubectl_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if self.force {
            args.push("--force".to_string());
        }
        if !self.grace_period.is_zero() {
            args.push(format!("--grace-period={}", self.grace_period.as_secs()));
        }
        if !self.timeout.is_zero() {
            args.push(format!("--timeout={}", format_go_duration(self.timeout)));
        }
        if let Some(selector) = &self.pod_selector {
            args.push(format!("--pod-selector={}", quote(selector)));
        }
        if !self.skip_wait_for_delete_timeout.is_zero() {
            args.push(format!(
                "--skip-wait-for-delete-timeout={}",
                format_go_duration(self.skip_wait_for_delete_timeout)
            ));
        }
        if self.delete_empty_dir_data {
            args.push("--delete-emptydir-data".to_string());
        }
        if self.ignore_daemon_sets {
            args.push("--ignore-daemonsets".to_string());
        }
        args
    }
}

/// Writes a duration as k0sctl's files do, such as `5m0s`.
fn go_duration<S: serde::Serializer>(
    duration: &Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format_go_duration(*duration))
}

/// The effect of the taint put on a node before it is disrupted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum TaintEffect {
    NoExecute,
    NoSchedule,
    PreferNoSchedule,
}

impl TaintEffect {
    pub fn as_str(self) -> &'static str {
        match self {
            TaintEffect::NoExecute => "NoExecute",
            TaintEffect::NoSchedule => "NoSchedule",
            TaintEffect::PreferNoSchedule => "PreferNoSchedule",
        }
    }
}

/// A taint put on nodes before service-affecting operations, so that workloads move first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EvictTaint {
    pub enabled: bool,
    /// `key=value`.
    pub taint: String,
    pub effect: TaintEffect,
    /// Whether controller+worker nodes are tainted too.
    pub controller_workers: bool,
}

impl EvictTaint {
    /// Formats the taint in kubectl's form, `key=value:Effect`.
    pub fn kubectl_taint(&self) -> String {
        format!("{}:{}", self.taint, self.effect.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Concurrency {
    /// Hosts acted on at once, where 0 means no limit.
    pub limit: u32,
    /// The share of workers, in percent, that may be disrupted at once during an upgrade.
    pub worker_disruption_percent: u32,
    /// File uploads running at once.
    pub uploads: u32,
}

impl Concurrency {
    /// Returns the number of hosts to work on at once: `flag` (the `--concurrency` option) when
    /// given, else `limit`, where 0 means every host at once.
    pub fn hosts(&self, flag: Option<u16>, host_count: usize) -> usize {
        match (flag, self.limit) {
            (Some(flag), _) => usize::from(flag),
            (None, 0) => host_count.max(1),
            (None, limit) => usize::try_from(limit).unwrap_or(usize::MAX),
        }
    }

    /// Returns the number of workers an upgrade takes down at once: `flag` (the `--concurrency`
    /// option) when given, else `worker_disruption_percent` of `worker_count` rounded down, at
    /// least one and at most `limit`, as k0sctl documents its worker batches.
    pub fn worker_batch(&self, flag: Option<u16>, worker_count: usize) -> usize {
        if let Some(flag) = flag {
            return usize::from(flag);
        }
        let percent = usize::try_from(self.worker_disruption_percent).unwrap_or(100);
        let share = (worker_count * percent / 100).max(1);
        match self.limit {
            0 => share,
            limit => share.min(usize::try_from(limit).unwrap_or(usize::MAX)),
        }
    }
}

pub(super) fn build_options(raw: Option<RawOptions>, problems: &mut Problems<'_>) -> Options {
    let raw = raw.unwrap_or_default();
    Options {
        wait: raw.wait.and_then(|wait| wait.enabled).unwrap_or(true),
        drain: build_drain(raw.drain.unwrap_or_default(), problems),
        evict_taint: build_evict_taint(raw.evict_taint.unwrap_or_default(), problems),
        concurrency: build_concurrency(raw.concurrency.unwrap_or_default(), problems),
    }
}

fn build_drain(raw: RawDrain, problems: &mut Problems<'_>) -> Drain {
    let path = "spec.options.drain";
    let mut duration = |field: &str, written: Option<ScalarText>, default: Duration| match written {
        None => default,
        Some(ScalarText(text)) => parse_go_duration(&text).unwrap_or_else(|message| {
            problems.value(
                &child(path, field),
                message,
                "add a unit, for example 120s or 5m",
            );
            default
        }),
    };
    Drain {
        enabled: raw.enabled.unwrap_or(true),
        grace_period: duration("gracePeriod", raw.grace_period, Duration::from_secs(120)),
        timeout: duration("timeout", raw.timeout, Duration::from_secs(300)),
        skip_wait_for_delete_timeout: duration(
            "skipWaitForDeleteTimeout",
            raw.skip_wait_for_delete_timeout,
            Duration::ZERO,
        ),
        force: raw.force.unwrap_or(true),
        ignore_daemon_sets: raw.ignore_daemon_sets.unwrap_or(true),
        delete_empty_dir_data: raw.delete_empty_dir_data.unwrap_or(true),
        pod_selector: raw.pod_selector.filter(|s| !s.is_empty()),
    }
}

fn build_evict_taint(raw: RawEvictTaint, problems: &mut Problems<'_>) -> EvictTaint {
    let path = "spec.options.evictTaint";
    let enabled = raw.enabled.unwrap_or(false);
    let taint = raw
        .taint
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "k0sctl.k0sproject.io/evict=true".to_string());
    if !taint.contains('=') {
        problems.value(
            &child(path, "taint"),
            format!("invalid taint {taint:?}: must be in the form key=value"),
            "write the taint as key=value",
        );
    }
    let effects = [
        ("NoExecute", TaintEffect::NoExecute),
        ("NoSchedule", TaintEffect::NoSchedule),
        ("PreferNoSchedule", TaintEffect::PreferNoSchedule),
    ];
    let effect = problems
        .choice(
            raw.effect.as_deref(),
            &effects,
            &child(path, "effect"),
            "taint effect",
        )
        .unwrap_or(TaintEffect::NoExecute);
    EvictTaint {
        enabled,
        taint,
        effect,
        controller_workers: raw.controller_workers.unwrap_or(false),
    }
}

fn build_concurrency(raw: RawConcurrency, problems: &mut Problems<'_>) -> Concurrency {
    let percent = raw.worker_disruption_percent.unwrap_or(10);
    if percent > 100 {
        problems.value(
            "spec.options.concurrency.workerDisruptionPercent",
            format!("invalid workerDisruptionPercent {percent}: must be between 0 and 100"),
            "set a percentage from 0 to 100",
        );
    }
    Concurrency {
        limit: raw.limit.unwrap_or(30),
        worker_disruption_percent: percent.min(100),
        uploads: raw.uploads.unwrap_or(5),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_limit_means_every_host_at_once() {
        let unlimited = Concurrency {
            limit: 0,
            worker_disruption_percent: 10,
            uploads: 5,
        };
        assert_eq!(unlimited.hosts(None, 40), 40);
        assert_eq!(unlimited.hosts(None, 0), 1);
        assert_eq!(unlimited.hosts(Some(3), 40), 3);
    }

    #[test]
    fn worker_batch_is_a_share_of_the_workers() {
        let concurrency = |limit, worker_disruption_percent| Concurrency {
            limit,
            worker_disruption_percent,
            uploads: 5,
        };
        // 10 % of 40 workers, of 5 (rounded down to none, so one), and of none.
        assert_eq!(concurrency(30, 10).worker_batch(None, 40), 4);
        assert_eq!(concurrency(30, 10).worker_batch(None, 5), 1);
        assert_eq!(concurrency(30, 10).worker_batch(None, 0), 1);
        // The limit caps the share, 0 lifts the cap, and the flag wins over both.
        assert_eq!(concurrency(3, 50).worker_batch(None, 40), 3);
        assert_eq!(concurrency(0, 100).worker_batch(None, 40), 40);
        assert_eq!(concurrency(3, 50).worker_batch(Some(7), 40), 7);
    }
}
