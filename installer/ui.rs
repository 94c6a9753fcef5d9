//! What a running command shows the user: phase headers, one progress line per item, and logs.
//!
//! Everything here writes to standard error, so standard output stays free for data that other
//! tools read (`inspect --output json`, `kubeconfig`). On a terminal each item (a host, an
//! artifact) gets an `indicatif` bar whose message follows its lifecycle; elsewhere, or with `-v`,
//! the same items print one plain line per state change, so CI logs stay readable.

use std::io::{self, IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Live bars on a terminal.
    Terminal,
    /// One line per state change; for pipes, CI and verbose runs.
    Plain,
    /// Nothing but errors and warnings.
    Quiet,
}

impl Mode {
    /// Picks bars on a terminal and plain lines elsewhere; verbose logging also turns bars off
    /// because log lines and redrawn bars make each other unreadable.
    pub fn detect(quiet: bool, verbose: bool) -> Mode {
        if quiet {
            Mode::Quiet
        } else if verbose || !io::stderr().is_terminal() {
            Mode::Plain
        } else {
            Mode::Terminal
        }
    }
}

/// The handle every command and phase uses to report progress.
#[derive(Clone)]
pub struct Ui {
    mode: Mode,
    multi: MultiProgress,
    started: Instant,
}

impl Ui {
    pub fn new(mode: Mode) -> Ui {
        let multi = MultiProgress::new();
        if mode != Mode::Terminal {
            multi.set_draw_target(ProgressDrawTarget::hidden());
        }
        Ui {
            mode,
            multi,
            started: Instant::now(),
        }
    }

    /// A handle that shows nothing, for library callers and tests.
    pub fn hidden() -> Ui {
        Ui::new(Mode::Quiet)
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Prints a phase header such as `==> Connect to hosts`.
    pub fn header(&self, title: &str) {
        self.println(&format!("==> {title}"));
    }

    /// Prints one line above any live bars, unless the mode is quiet.
    pub fn println(&self, line: &str) {
        if self.mode != Mode::Quiet {
            self.write_stderr(line);
        }
    }

    /// Prints a warning line, also in quiet mode.
    pub fn warn(&self, line: &str) {
        self.write_stderr(&format!("warning: {line}"));
    }

    /// Time since this handle was made, for closing summaries.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Starts a progress item named `name` (a host or an artifact). `total` is its size in bytes
    /// when the item moves bytes, so the bar can show the rate and time left.
    pub fn item(&self, name: &str, total: Option<u64>) -> Item {
        let bar = (self.mode == Mode::Terminal).then(|| {
            let bar = match total {
                Some(total) => {
                    let bar = ProgressBar::new(total);
                    bar.set_style(bytes_style());
                    bar
                }
                None => {
                    let bar = ProgressBar::new_spinner();
                    bar.set_style(spinner_style());
                    bar.enable_steady_tick(Duration::from_millis(120));
                    bar
                }
            };
            bar.set_prefix(name.to_string());
            self.multi.add(bar)
        });
        Item {
            ui: self.clone(),
            name: name.to_string(),
            bar,
            state: Arc::new(Mutex::new(String::new())),
            started: Instant::now(),
        }
    }

    fn write_stderr(&self, line: &str) {
        self.multi.suspend(|| {
            let mut stderr = io::stderr().lock();
            let _ = writeln!(stderr, "{line}");
        });
    }

    /// A `tracing` writer that prints log lines above the live bars instead of through them.
    pub fn log_writer(&self) -> LogWriter {
        LogWriter {
            multi: self.multi.clone(),
        }
    }
}

fn bytes_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix:>14.bold} {msg:<12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
    .expect("the progress template is valid")
    .progress_chars("=> ")
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix:>14.bold} {spinner} {msg} {elapsed}")
        .expect("the progress template is valid")
}

/// One item's progress: a bar on a terminal, plain lines elsewhere.
pub struct Item {
    ui: Ui,
    name: String,
    bar: Option<ProgressBar>,
    state: Arc<Mutex<String>>,
    started: Instant,
}

impl Item {
    /// Moves the item to a new state (`queued`, `uploading`, `verifying`, `ready`...). Plain mode
    /// prints a line only when the state really changes.
    pub fn set_state(&self, state: &str) {
        let mut current = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if *current == state {
            return;
        }
        *current = state.to_string();
        match &self.bar {
            Some(bar) => bar.set_message(state.to_string()),
            None => self.ui.println(&format!("{}: {state}", self.name)),
        }
    }

    /// Sets the total of a byte-counting item, for items whose size is learned late.
    pub fn set_length(&self, total: u64) {
        if let Some(bar) = &self.bar {
            bar.set_length(total);
        }
    }

    /// Counts `bytes` more bytes done.
    pub fn inc(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }

    /// Sets the bytes done so far, for items that resume part-way.
    pub fn set_position(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(bytes);
        }
    }

    /// Ends the item in its final state and prints it with the time it took.
    pub fn finish(self, state: &str) {
        let line = format!("{state} in {}", format_duration(self.started.elapsed()));
        match &self.bar {
            Some(bar) => bar.finish_with_message(line),
            None => self.ui.println(&format!("{}: {line}", self.name)),
        }
    }

    /// Ends the item as failed without a reason, because the command's error reports it.
    pub fn abandon(self) {
        match &self.bar {
            Some(bar) => bar.abandon_with_message("failed"),
            None => self.ui.println(&format!("{}: failed", self.name)),
        }
    }

    /// Ends the item as failed with a short reason; the full error is reported by the caller.
    pub fn fail(self, reason: &str) {
        match &self.bar {
            Some(bar) => bar.abandon_with_message(format!("failed: {reason}")),
            None => self.ui.println(&format!("{}: failed: {reason}", self.name)),
        }
    }
}

/// A `tracing_subscriber` writer that keeps log lines and progress bars apart.
#[derive(Clone)]
pub struct LogWriter {
    multi: MultiProgress,
}

/// One log record's bytes; written in one piece when dropped so that lines never interleave.
pub struct LogLine {
    multi: MultiProgress,
    buffer: Vec<u8>,
}

impl Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        let buffer = std::mem::take(&mut self.buffer);
        self.multi.suspend(|| {
            let _ = io::stderr().lock().write_all(&buffer);
        });
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogLine;

    fn make_writer(&'a self) -> Self::Writer {
        LogLine {
            multi: self.multi.clone(),
            buffer: Vec::with_capacity(256),
        }
    }
}

/// Formats a duration the way summaries print it: `850ms`, `12.4s`, `3m05s`.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis < 1_000 {
        format!("{millis}ms")
    } else if millis < 60_000 {
        format!("{:.1}s", duration.as_secs_f64())
    } else {
        let seconds = duration.as_secs();
        format!("{}m{:02}s", seconds / 60, seconds % 60)
    }
}

/// Formats a count with its noun in the singular or plural: `1 host`, `3 hosts`.
pub fn format_count(count: usize, singular: &str, plural: &str) -> String {
    format!("{count} {}", if count == 1 { singular } else { plural })
}

/// Formats a byte count with binary units: `512 B`, `1.5 KiB`, `2.0 GiB`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_format_by_magnitude() {
        assert_eq!(format_duration(Duration::from_millis(850)), "850ms");
        assert_eq!(format_duration(Duration::from_millis(12_400)), "12.4s");
        assert_eq!(format_duration(Duration::from_secs(185)), "3m05s");
    }

    #[test]
    fn bytes_format_with_binary_units() {
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(2 << 30), "2.0 GiB");
    }
}
