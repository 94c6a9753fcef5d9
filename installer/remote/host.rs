//! A connected host: privileged commands, small files, and verified uploads.
//!
//! Every command runs as root: directly when the SSH user is root, else through `sudo -n`, so a
//! sudo that wants a password fails at once instead of hanging. Files are never written in place:
//! bytes go to a temporary name beside the destination, are hashed on the host, and are renamed
//! over the destination only when the host's digest equals the expected one.

use std::time::Duration;

use tokio::io::AsyncRead;

use super::file_state::{FileState, file_states_script, parse_file_states};
use super::session::{ExecError, Output, Session};
use crate::digest::Digest;
use crate::shell::quote;
use crate::ui::Item;

/// A failed operation on a host.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error("{host}: `{command}` failed with {exit}: {stderr}")]
    Command {
        host: String,
        command: String,
        exit: String,
        stderr: String,
    },
    #[error("{host}: {path} needs {needed} bytes but only {available} bytes are free in {dir}")]
    InsufficientSpace {
        host: String,
        path: String,
        dir: String,
        needed: u64,
        available: u64,
    },
    #[error("{host}: cannot write {path}: {stderr}")]
    Write {
        host: String,
        path: String,
        stderr: String,
    },
    #[error(
        "{host}: {path} arrived with digest {computed}, expected {expected}; the copy was deleted"
    )]
    DigestMismatch {
        host: String,
        path: String,
        expected: Digest,
        computed: Digest,
    },
    #[error("{host}: cannot read {path}: {reason}")]
    Read {
        host: String,
        path: String,
        reason: String,
    },
    #[error("{host}: unexpected output from `{command}`: {output:?}")]
    Parse {
        host: String,
        command: String,
        output: String,
    },
}

/// The outcome of an upload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upload {
    /// The destination already held the expected bytes.
    Skipped,
    /// The bytes were copied and verified on the host.
    Copied,
}

/// The destination of an uploaded file on a host.
#[derive(Clone, Copy, Debug)]
pub struct Placement<'a> {
    pub path: &'a str,
    /// The mode in octal, as `chmod` takes it.
    pub mode: &'a str,
    /// Where the bytes wait until their digest is checked. `None` uses the destination's own
    /// directory; a directory that another program watches (k0s imports every file in
    /// `<data-dir>/images`) needs a staging directory on the same file system instead.
    pub staging_dir: Option<&'a str>,
    /// The owner as `chown` takes it (`user`, `user:group` or `:group`); `None` leaves root.
    pub owner: Option<&'a str>,
    /// The mode in octal for the destination's directory when the upload creates it. An
    /// existing directory keeps its mode, and new directories above it get the default mode.
    pub dir_mode: Option<&'a str>,
}

impl<'a> Placement<'a> {
    pub fn new(path: &'a str, mode: &'a str) -> Placement<'a> {
        Placement {
            path,
            mode,
            staging_dir: None,
            owner: None,
            dir_mode: None,
        }
    }

    pub fn owned_by(mut self, owner: &'a str) -> Placement<'a> {
        self.owner = Some(owner);
        self
    }

    pub fn with_dir_mode(mut self, mode: &'a str) -> Placement<'a> {
        self.dir_mode = Some(mode);
        self
    }

    pub fn staged_in(mut self, dir: &'a str) -> Placement<'a> {
        self.staging_dir = Some(dir);
        self
    }
}

/// The largest file [`Host::read_file`] returns; blueprints and configuration files are far
/// smaller.
const READ_LIMIT: u64 = 16 << 20;

/// A connected host whose commands run as root.
pub struct Host {
    session: Session,
    sudo: bool,
}

impl Host {
    /// Wraps a session; `sudo` says whether commands need `sudo -n` (the SSH user is not root).
    pub fn new(session: Session, sudo: bool) -> Host {
        Host { session, sudo }
    }

    /// The host as messages name it.
    pub fn label(&self) -> &str {
        self.session.label()
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Whether commands go through sudo.
    pub fn uses_sudo(&self) -> bool {
        self.sudo
    }

    /// Turns a shell command into the command line sent over SSH.
    fn privileged(&self, script: &str) -> String {
        if self.sudo {
            format!("sudo -n -- sh -c {}", quote(script))
        } else {
            format!("sh -c {}", quote(script))
        }
    }

    /// Runs a shell script as the SSH user, without sudo, as k0sctl runs hooks.
    pub async fn run_as_login_user(&self, script: &str) -> Result<String, HostError> {
        let output = self
            .session
            .exec(&format!("sh -c {}", quote(script)))
            .await?;
        self.check(script, output)
    }

    /// Runs a shell script as root and returns its output whatever its exit status.
    pub async fn run_output(&self, script: &str) -> Result<Output, HostError> {
        Ok(self.session.exec(&self.privileged(script)).await?)
    }

    /// Runs a shell script as root with a time limit of its own.
    pub async fn run_output_within(
        &self,
        script: &str,
        timeout: Duration,
    ) -> Result<Output, HostError> {
        let output = self
            .session
            .exec_with_input(&self.privileged(script), tokio::io::empty(), Some(timeout))
            .await?;
        Ok(output)
    }

    /// Runs a shell script as root and returns its standard output; a non-zero exit is an
    /// error carrying the script and the end of its standard error.
    pub async fn run(&self, script: &str) -> Result<String, HostError> {
        let output = self.run_output(script).await?;
        self.check(script, output)
    }

    /// Runs a shell script as root with `input` on its standard input, under the session's
    /// default time limit. Use this for secrets: they never appear in a command line.
    pub async fn run_with_input(&self, script: &str, input: &[u8]) -> Result<String, HostError> {
        let limit = self.session.command_timeout();
        let output = self
            .session
            .exec_with_input(&self.privileged(script), input, Some(limit))
            .await?;
        self.check(script, output)
    }

    fn check(&self, script: &str, output: Output) -> Result<String, HostError> {
        if output.success() {
            Ok(output.stdout_text())
        } else {
            Err(HostError::Command {
                host: self.label().to_string(),
                command: script.to_string(),
                exit: output.describe_exit(),
                stderr: output.stderr_tail(),
            })
        }
    }

    /// Whether `path` exists (as any kind of file).
    pub async fn exists(&self, path: &str) -> Result<bool, HostError> {
        Ok(self
            .run_output(&format!("test -e {}", quote(path)))
            .await?
            .success())
    }

    /// Reads a small file; `None` when it does not exist.
    pub async fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, HostError> {
        let quoted = quote(path);
        let script = format!(
            "if [ ! -e {quoted} ]; then exit 3; fi; \
             size=$(stat -c %s {quoted}) || exit 1; \
             if [ \"$size\" -gt {READ_LIMIT} ]; then echo \"$size bytes is too large\" >&2; exit 4; fi; \
             cat {quoted}"
        );
        let output = self.run_output(&script).await?;
        match output.status {
            Some(0) => Ok(Some(output.stdout)),
            Some(3) => Ok(None),
            _ => Err(HostError::Read {
                host: self.label().to_string(),
                path: path.to_string(),
                reason: output.stderr_tail(),
            }),
        }
    }

    /// The sha256 of `path` computed on the host; `None` when the file does not exist.
    pub async fn sha256(&self, path: &str) -> Result<Option<Digest>, HostError> {
        let mut states = self.file_states(&[path]).await?;
        Ok(states.pop().flatten().map(|state| state.digest))
    }

    /// Reads the sha256, mode and owner of each of `paths` on the host in one command, with
    /// `None` for a file that does not exist.
    pub async fn file_states(&self, paths: &[&str]) -> Result<Vec<Option<FileState>>, HostError> {
        if paths.is_empty() {
            return Ok(Vec::new());
        }
        let script = file_states_script(paths);
        let output = self.run_output(&script).await?;
        let read_error = |reason: String| HostError::Read {
            host: self.label().to_string(),
            path: paths.join(", "),
            reason,
        };
        if !output.success() {
            return Err(read_error(output.stderr_tail()));
        }
        let stdout = output.stdout_text();
        let states = parse_file_states(stdout.lines(), paths.len()).map_err(read_error)?;
        Ok(states)
    }

    /// Free bytes on the file system that contains `dir` (or its nearest existing parent).
    pub async fn free_space(&self, dir: &str) -> Result<u64, HostError> {
        let mut mounts = self.free_space_each(&[dir]).await?;
        Ok(mounts.pop().map_or(0, |(_, free)| free))
    }

    /// Returns, for each of `dirs`, the mount point of the file system that contains it (or its
    /// nearest existing parent) and the bytes free there, in one command.
    pub async fn free_space_each(&self, dirs: &[&str]) -> Result<Vec<(String, u64)>, HostError> {
        if dirs.is_empty() {
            return Ok(Vec::new());
        }
        let quoted: Vec<String> = dirs.iter().map(|dir| quote(dir)).collect();
        // Each folder climbs to its nearest existing parent with shell built-ins, and one `df`
        // reads them all: it prints a line per argument, in order, after its header.
        let script = format!(
            "set --\n\
             for d in {}; do\n\
             while [ ! -d \"$d\" ]; do case $d in */*) d=${{d%/*}}; d=${{d:-/}} ;; *) d=. ;; esac; done\n\
             set -- \"$@\" \"$d\"\n\
             done\n\
             df -Pk \"$@\" | awk 'NR > 1 {{print $4, $6}}'\n",
            quoted.join(" ")
        );
        let stdout = self.run(&script).await?;
        let parse_error = || HostError::Parse {
            host: self.label().to_string(),
            command: script.clone(),
            output: stdout.clone(),
        };
        let lines: Vec<&str> = stdout.lines().collect();
        if lines.len() != dirs.len() {
            return Err(parse_error());
        }
        lines
            .iter()
            .map(|line| {
                let (kib, mount) = line.split_once(' ').ok_or_else(parse_error)?;
                let kib: u64 = kib.parse().map_err(|_| parse_error())?;
                Ok((mount.to_string(), kib * 1024))
            })
            .collect()
    }

    /// Writes a small file atomically with `mode` (octal, as `chmod` takes it), passing the
    /// contents on standard input so that secrets stay out of command lines.
    pub async fn write_file(
        &self,
        path: &str,
        contents: &[u8],
        mode: &str,
    ) -> Result<(), HostError> {
        let digest = Digest::of_bytes(contents);
        self.write_verified(
            Placement::new(path, mode),
            contents,
            contents.len() as u64,
            digest,
            None,
        )
        .await
    }

    /// Uploads `size` bytes from `source` to `path` unless the host already has them. The bytes
    /// must hash to `expected` both as they leave and on the host, or nothing is renamed into
    /// place. `item` follows the bytes.
    pub async fn upload<R: AsyncRead + Unpin + Send>(
        &self,
        source: R,
        size: u64,
        expected: Digest,
        placement: Placement<'_>,
        item: &Item,
    ) -> Result<Upload, HostError> {
        let path = placement.path;
        item.set_state("checking");
        if self.sha256(path).await? == Some(expected) {
            tracing::debug!(host = %self.label(), path, "already present with the expected digest");
            return Ok(Upload::Skipped);
        }
        let dir = placement
            .staging_dir
            .map_or_else(|| parent_dir(path), str::to_string);
        let available = self.free_space(&dir).await?;
        // Keep a margin so that the upload does not leave the file system completely full.
        let needed = size + size / 50 + (1 << 20);
        if available < needed {
            return Err(HostError::InsufficientSpace {
                host: self.label().to_string(),
                path: path.to_string(),
                dir,
                needed,
                available,
            });
        }
        item.set_state("uploading");
        self.write_verified(placement, source, size, expected, Some(item))
            .await?;
        Ok(Upload::Copied)
    }

    /// Writes the bytes of `source` to a temporary name, checks their digest on the host, and
    /// renames them into place; without the free-space and already-present checks of
    /// [`Host::upload`].
    pub async fn write_verified<R: AsyncRead + Unpin + Send>(
        &self,
        placement: Placement<'_>,
        source: R,
        size: u64,
        expected: Digest,
        item: Option<&Item>,
    ) -> Result<(), HostError> {
        let Placement {
            path,
            mode,
            staging_dir,
            owner,
            dir_mode,
        } = placement;
        let staging = staging_dir.map_or_else(|| parent_dir(path), str::to_string);
        let name = path.rsplit('/').next().unwrap_or(path);
        let temporary = format!("{staging}/.{name}.airlock-{}", std::process::id());
        let (quoted_path, quoted_temporary) = (quote(path), quote(&temporary));
        let parent = quote(&parent_dir(path));
        let quoted_staging = quote(&staging);
        let create_parent = match dir_mode {
            Some(dir_mode) => format!(
                "{{ [ -d {parent} ] || {{ mkdir -p {parent} && chmod {dir_mode} {parent}; }}; }} && "
            ),
            None => String::new(),
        };
        // A run killed mid-upload leaves its temporary file behind. The host lock means no other
        // run writes this name now, so every earlier temporary file of it can go.
        let leftovers = format!("{quoted_staging}/{}*", quote(&format!(".{name}.airlock-")));
        let set_mode = set_owner_and_mode(&quoted_temporary, owner, mode);
        // One command receives, hashes, compares and renames, so a file costs one round trip.
        // It prints the digest it computed before comparing it, for the error below.
        // The tests before `mkdir` and `rm` are shell built-ins: on a host that receives many
        // files at once, each process a command saves counts.
        let script = format!(
            "{create_parent}{{ [ -d {parent} ] && [ -d {quoted_staging} ] || mkdir -p {parent} {quoted_staging}; }} && \
             for leftover in {leftovers}; do [ ! -e \"$leftover\" ] || rm -f \"$leftover\"; done && umask 077 && \
             received=$({}) && digest=${{received%% *}} && echo \"$digest\" && \
             [ \"$digest\" = {} ] && {set_mode} && \
             mv -f {quoted_temporary} {quoted_path}",
            receive_command(&quoted_temporary, size),
            expected.hex()
        );
        let counted = CountingReader::new(source, item);
        let output = self
            .session
            .exec_with_input(&self.privileged(&script), counted, None)
            .await;
        let output = match output {
            Ok(output) => output,
            Err(error) => {
                self.remove_quietly(&temporary).await;
                return Err(error.into());
            }
        };
        if output.success() {
            tracing::debug!(host = %self.label(), path, bytes = size, "written and verified");
            return Ok(());
        }
        self.remove_quietly(&temporary).await;
        let computed = output
            .stdout_text()
            .split_whitespace()
            .next()
            .and_then(|hex_digits| Digest::from_hex(hex_digits).ok());
        Err(match computed {
            Some(computed) if computed != expected => HostError::DigestMismatch {
                host: self.label().to_string(),
                path: path.to_string(),
                expected,
                computed,
            },
            // Nothing was received, or the bytes were right and putting them in place failed.
            _ => HostError::Write {
                host: self.label().to_string(),
                path: path.to_string(),
                stderr: output.stderr_tail(),
            },
        })
    }

    async fn remove_quietly(&self, path: &str) {
        if let Err(error) = self.run(&format!("rm -f {}", quote(path))).await {
            tracing::warn!(host = %self.label(), path, %error, "cannot remove a temporary file");
        }
    }

    /// Closes the connection.
    pub async fn close(self) {
        self.session.close().await;
    }
}

/// Uploads at least this large are hashed as they arrive where the host has a working python3.
/// Below it, starting Python costs more than hashing the file a second time.
const STREAMING_HASH_MIN: u64 = 32 << 20;

/// Returns a shell command that writes its standard input to `quoted_path` and prints the SHA-256
/// of what it wrote first on its output line.
///
/// Large files go through `receive.py`, which hashes each chunk as it writes it. The other form,
/// `cat` then a hash of the file, reads the file a second time after the transfer. That read
/// comes from the page cache, so both forms check the same bytes. On the 2-vCPU lab machine the
/// streaming form took 1 GiB in 1.8 s against 2.3 s (OpenSSH client, AES-256-GCM).
///
/// The large form first starts python3 with the same options and an empty program, so a host
/// where python3 is missing, fails to start or predates `-I` (Python 3.4) gets the other form.
/// That check reads no standard input and adds no round trip.
fn receive_command(quoted_path: &str, size: u64) -> String {
    let fallback = format!("cat > {quoted_path} && {}", sha256_command(quoted_path));
    if size < STREAMING_HASH_MIN {
        return fallback;
    }
    format!(
        "if python3 -I -S -c '' </dev/null >/dev/null 2>&1; then python3 -I -S -c {} {quoted_path}; else {fallback}; fi",
        quote(RECEIVE_SCRIPT)
    )
}

const RECEIVE_SCRIPT: &str = include_str!("receive.py");

/// Returns a shell command that sets the owner (when given), then the mode (octal, as `chmod`
/// takes it) of the file at `quoted_path`. The owner comes first because chown clears the setuid
/// and setgid bits.
pub(crate) fn set_owner_and_mode(quoted_path: &str, owner: Option<&str>, mode: &str) -> String {
    match owner {
        Some(owner) => format!(
            "chown {} {quoted_path} && chmod {mode} {quoted_path}",
            quote(owner)
        ),
        None => format!("chmod {mode} {quoted_path}"),
    }
}

/// Returns a shell command that prints the SHA-256 of the file at `quoted_path` first on its
/// output line. It uses `openssl dgst` where the host has it, because OpenSSL hashes with the
/// CPU's SHA instructions and coreutils' `sha256sum` does not. On a 2-vCPU AMD EPYC with SHA-NI,
/// OpenSSL 3.0 hashed 1 GiB about 3 times as fast as coreutils 9.1, which made the hash check
/// take longer than the upload itself.
fn sha256_command(quoted_path: &str) -> String {
    format!("{{ openssl dgst -sha256 -r {quoted_path} 2>/dev/null || sha256sum {quoted_path}; }}")
}

/// Returns a shell command that hashes the files named by the shell's positional parameters
/// (`"$@"`) and prints one line per file, in order, starting with its digest in hex. It uses
/// OpenSSL where its command-line tool works, as [`sha256_command`] does. OpenSSL's output is
/// held back until it succeeds, so that a failure part-way through prints no line twice.
pub(super) fn sha256_each_command() -> &'static str {
    "if digests=$(openssl dgst -sha256 -r \"$@\" 2>/dev/null); then printf '%s\\n' \"$digests\"; \
     else sha256sum -- \"$@\"; fi"
}

pub(crate) fn parent_dir(path: &str) -> String {
    match path.rsplit_once('/') {
        Some(("", _)) => "/".to_string(),
        Some((dir, _)) => dir.to_string(),
        None => ".".to_string(),
    }
}

/// Counts bytes into a progress item as they are read.
struct CountingReader<'a, R> {
    inner: R,
    item: Option<&'a Item>,
}

impl<'a, R> CountingReader<'a, R> {
    fn new(inner: R, item: Option<&'a Item>) -> Self {
        CountingReader { inner, item }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for CountingReader<'_, R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if let (std::task::Poll::Ready(Ok(())), Some(item)) = (&poll, self.item) {
            item.inc((buf.filled().len() - before) as u64);
        }
        poll
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_dir_of_paths() {
        assert_eq!(parent_dir("/usr/local/bin/k0s"), "/usr/local/bin");
        assert_eq!(parent_dir("/k0s"), "/");
        assert_eq!(parent_dir("k0s"), ".");
    }
}
