//! Work on many hosts at once, with every failure reported.

use std::fmt;
use std::future::Future;

use futures::stream::{self, StreamExt};

/// One host's failure.
#[derive(Debug)]
pub struct HostFailure {
    pub host: String,
    pub error: anyhow::Error,
}

impl HostFailure {
    pub fn new(host: impl Into<String>, error: impl Into<anyhow::Error>) -> HostFailure {
        HostFailure {
            host: host.into(),
            error: error.into(),
        }
    }

    /// Turns one host's failure into an error that names the host.
    pub fn into_error(self) -> HostFailures {
        HostFailures {
            failures: vec![self],
            total: 1,
        }
    }

    /// Formats the error with its causes, led by the host unless the error names it first.
    fn message(&self) -> String {
        let error = format!("{:#}", self.error);
        let prefix = format!("{}: ", self.host);
        match error.starts_with(&prefix) {
            true => error,
            false => prefix + &error,
        }
    }
}

/// Every host that failed in one step, one line each.
#[derive(Debug)]
pub struct HostFailures {
    pub failures: Vec<HostFailure>,
    pub total: usize,
}

impl fmt::Display for HostFailures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let [only] = self.failures.as_slice()
            && self.total == 1
        {
            return f.write_str(&only.message());
        }
        write!(f, "{} of {} hosts failed:", self.failures.len(), self.total)?;
        for failure in &self.failures {
            write!(f, "\n  {}", failure.message())?;
        }
        Ok(())
    }
}

impl std::error::Error for HostFailures {}

/// Runs `work` on every item with at most `concurrency` running at once, and returns the results
/// in the order of `items`. One host failing does not stop the others; all failures come back
/// together.
pub async fn for_each_host<T, R, F, Fut>(
    items: Vec<T>,
    concurrency: usize,
    work: F,
) -> Result<Vec<R>, HostFailures>
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = Result<R, HostFailure>>,
{
    let (values, failures) = for_each_host_settled(items, concurrency, work).await;
    match failures {
        None => Ok(values),
        Some(failures) => Err(failures),
    }
}

/// Like [`for_each_host`], but returns the results of the hosts that succeeded even when others
/// failed, for work whose successes must be kept or undone (locks taken, files written).
pub async fn for_each_host_settled<T, R, F, Fut>(
    items: Vec<T>,
    concurrency: usize,
    work: F,
) -> (Vec<R>, Option<HostFailures>)
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = Result<R, HostFailure>>,
{
    let total = items.len();
    // Unordered, so that a host that finishes early makes room for the next one while a slower
    // host ahead of it in the list still works. The results are put back in order afterwards.
    let work = &work;
    let mut results: Vec<(usize, Result<R, HostFailure>)> =
        stream::iter(items.into_iter().enumerate())
            .map(|(position, item)| async move { (position, work(item).await) })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
    results.sort_by_key(|(position, _)| *position);
    let mut values = Vec::with_capacity(total);
    let mut failures = Vec::new();
    for (_, result) in results {
        match result {
            Ok(value) => values.push(value),
            Err(failure) => failures.push(failure),
        }
    }
    let failures = (!failures.is_empty()).then_some(HostFailures { failures, total });
    (values, failures)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn results_keep_input_order() {
        let doubled = for_each_host(vec![3u64, 1, 2], 3, |n| async move {
            tokio::time::sleep(Duration::from_millis(n * 10)).await;
            Ok::<_, HostFailure>(n * 2)
        })
        .await
        .unwrap();
        assert_eq!(doubled, [6, 2, 4]);
    }

    #[tokio::test]
    async fn concurrency_is_bounded() {
        let running = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        for_each_host((0..8).collect(), 2, |_| async {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(5)).await;
            running.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, HostFailure>(())
        })
        .await
        .unwrap();
        assert_eq!(peak.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn slow_host_does_not_hold_back_the_next() {
        let slow_done = std::sync::atomic::AtomicBool::new(false);
        let started_while_slow = AtomicUsize::new(0);
        for_each_host(vec![200u64, 10, 10, 10, 10], 2, |millis| {
            let (slow_done, started_while_slow) = (&slow_done, &started_while_slow);
            async move {
                if millis < 200 && !slow_done.load(Ordering::SeqCst) {
                    started_while_slow.fetch_add(1, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(millis)).await;
                if millis == 200 {
                    slow_done.store(true, Ordering::SeqCst);
                }
                Ok::<_, HostFailure>(())
            }
        })
        .await
        .unwrap();
        assert_eq!(started_while_slow.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn every_failure_is_reported() {
        let error = for_each_host(vec!["a", "b", "c"], 3, |host| async move {
            if host == "b" {
                Ok(())
            } else {
                Err(HostFailure::new(host, anyhow::anyhow!("disk full")))
            }
        })
        .await
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "2 of 3 hosts failed:\n  a: disk full\n  c: disk full"
        );
    }

    #[tokio::test]
    async fn single_host_failure_reads_as_one_line() {
        let error = for_each_host(vec!["a"], 1, |host| async move {
            Err::<(), _>(HostFailure::new(host, anyhow::anyhow!("refused")))
        })
        .await
        .unwrap_err();
        assert_eq!(error.to_string(), "a: refused");
    }
}
