//! How a failed command is reported: the error with its causes, a `help:` line where the user
//! can act, and an exit status chosen by what went wrong.

use std::fmt;
use std::process::ExitCode;

/// The exit statuses of `airlock`, by meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// The command did what was asked.
    Success = 0,
    /// The command failed on something outside airlock: a host, a bundle, a file.
    Failure = 1,
    /// The input is wrong (arguments, cluster file) or the command is not implemented yet.
    Usage = 2,
    /// `status` found that the cluster differs from its blueprint.
    Drift = 3,
    /// A bug in airlock itself.
    Internal = 70,
    /// Ctrl-C stopped the command, as shells report SIGINT.
    Interrupted = 130,
}

impl From<Status> for ExitCode {
    fn from(status: Status) -> ExitCode {
        ExitCode::from(status as u8)
    }
}

/// A failed command: the error chain, an optional hint, and the exit status.
pub struct CliError {
    error: anyhow::Error,
    help: Option<String>,
    status: Status,
}

impl CliError {
    /// A failure outside airlock (a host, a bundle, a file); exits with [`Status::Failure`].
    pub fn failure(error: impl Into<anyhow::Error>) -> CliError {
        CliError {
            error: error.into(),
            help: None,
            status: Status::Failure,
        }
    }

    /// An error in the user's input; exits with [`Status::Usage`].
    pub fn usage(error: impl Into<anyhow::Error>) -> CliError {
        CliError {
            error: error.into(),
            help: None,
            status: Status::Usage,
        }
    }

    /// The answer of a subcommand that does not exist yet.
    pub fn not_implemented(command: &str) -> CliError {
        CliError::usage(anyhow::anyhow!(
            "`airlock {command}` is not implemented yet"
        ))
    }

    /// A bug in airlock; exits with [`Status::Internal`].
    pub fn internal(error: impl Into<anyhow::Error>) -> CliError {
        CliError {
            error: error.into(),
            help: None,
            status: Status::Internal,
        }
    }

    /// Adds the `help:` line printed under the error.
    pub fn help(mut self, help: impl Into<String>) -> CliError {
        self.help = Some(help.into());
        self
    }

    /// Adds the `help:` line when there is one.
    pub fn maybe_help(self, help: Option<impl Into<String>>) -> CliError {
        match help {
            Some(help) => self.help(help),
            None => self,
        }
    }

    /// Adds one line of context above the underlying error.
    pub fn context(mut self, context: impl fmt::Display + Send + Sync + 'static) -> CliError {
        self.error = self.error.context(context);
        self
    }

    /// Changes the exit status.
    pub fn status(mut self, status: Status) -> CliError {
        self.status = status;
        self
    }

    pub fn exit_status(&self) -> Status {
        self.status
    }

    /// Prints the error, its causes and the hint to standard error.
    pub fn print(&self) {
        eprintln!("{self}");
    }
}

impl<E> From<E> for CliError
where
    E: std::error::Error + Send + Sync + 'static,
{
    fn from(error: E) -> CliError {
        CliError {
            error: error.into(),
            help: None,
            status: Status::Failure,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: {}", self.error)?;
        for cause in self.error.chain().skip(1) {
            write!(f, "\n  caused by: {cause}")?;
        }
        if let Some(help) = &self.help {
            write!(f, "\nhelp: {help}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What a subcommand returns: `Ok` carries the status of a command that finished but has news
/// to report through its exit code (`status` reporting drift).
pub type CliResult = Result<Status, CliError>;

/// Writes a command's output to standard output. When the reader has closed the pipe early (as
/// `airlock bundle inspect | head` does), the program ends quietly with status 0, as ripgrep
/// does, instead of panicking in `println!`.
pub fn print_output(text: &str) -> Result<(), CliError> {
    use std::io::Write;

    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {
            std::process::exit(Status::Success as i32)
        }
        Err(error) => Err(CliError::failure(error).context("cannot write to standard output")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lists_causes_and_help() {
        let inner = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let error = CliError::from(inner)
            .context("cannot read bundle.yaml")
            .help("rebuild the bundle");
        assert_eq!(
            error.to_string(),
            "error: cannot read bundle.yaml\n  caused by: no such file\nhelp: rebuild the bundle"
        );
        assert_eq!(error.exit_status(), Status::Failure);
    }

    #[test]
    fn not_implemented_is_a_usage_error() {
        let error = CliError::not_implemented("upgrade");
        assert_eq!(error.exit_status(), Status::Usage);
        assert_eq!(
            error.to_string(),
            "error: `airlock upgrade` is not implemented yet"
        );
    }
}
