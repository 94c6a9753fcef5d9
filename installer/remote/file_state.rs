//! A regular file as a host has it: digest, mode and owner, read for many files in one shell
//! command so that a host's files cost one round trip and a few processes together.

use crate::digest::Digest;
use crate::shell::quote;

use super::host::sha256_each_command;

/// A regular file on a host, following symbolic links as `chmod` and `chown` do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileState {
    pub digest: Digest,
    /// The permission bits with setuid, setgid and sticky, as `stat -c %a` prints them in octal.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// The user name, or the uid when the host's user database has no name for it.
    pub user: String,
    /// The group name, or the gid when the host's group database has no name for it.
    pub group: String,
}

/// The difference between a file's mode and owner and the expected ones, as message text that
/// names only the parts that differ, such as `mode 0750` and `mode 0777`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModeMismatch {
    pub expected: String,
    pub found: String,
}

/// Returns a shell script that reads the state of every regular file of `paths` with one `stat`
/// and one hash command, however many files there are. Reading each file with commands of its
/// own was the largest cost of the blueprint phase on the 30-host lab. [`parse_file_states`]
/// reads what it prints: a line `present` or `missing` per path, then, when any file is present,
/// a `--` line, a `stat` line per present file, another `--` line and a digest line per present
/// file. The script fails when it cannot read a present file.
pub(crate) fn file_states_script(paths: &[&str]) -> String {
    let quoted: Vec<String> = paths.iter().map(|path| quote(path)).collect();
    format!(
        "set --\n\
         for path in {}; do\n\
         if [ -f \"$path\" ]; then echo present; set -- \"$@\" \"$path\"; else echo missing; fi\n\
         done\n\
         if [ $# -gt 0 ]; then\n\
         echo -- && stat -L -c '%a %u %g %U %G' -- \"$@\" || exit 1\n\
         echo -- && {} || exit 1\n\
         fi\n",
        quoted.join(" "),
        sha256_each_command()
    )
}

/// Reads the output of [`file_states_script`] for `count` paths from `lines`, in the order of the
/// paths, with `None` for a missing file. The error names the unexpected output.
pub fn parse_file_states<'a>(
    lines: impl Iterator<Item = &'a str>,
    count: usize,
) -> Result<Vec<Option<FileState>>, String> {
    let lines: Vec<&str> = lines.map(str::trim).collect();
    if lines.len() < count {
        return Err(format!("expected {count} files, got {} lines", lines.len()));
    }
    let (presence, rest) = lines.split_at(count);
    let present = presence.iter().filter(|line| **line == "present").count();
    if let Some(line) = presence
        .iter()
        .find(|line| !matches!(**line, "present" | "missing"))
    {
        return Err(format!("unexpected line {line:?}"));
    }
    let expected_rest = if present == 0 { 0 } else { 2 * present + 2 };
    if rest.len() != expected_rest {
        return Err(format!(
            "expected {expected_rest} lines for {present} present files, got {}",
            rest.len()
        ));
    }
    let (attributes, digests) = match rest {
        [] => (&[][..], &[][..]),
        ["--", rest @ ..] if rest.get(present) == Some(&"--") => {
            (&rest[..present], &rest[present + 1..])
        }
        _ => return Err(format!("unexpected lines {rest:?}")),
    };
    let mut states = attributes.iter().zip(digests).map(|(attributes, digest)| {
        let digest = digest.split_whitespace().next().unwrap_or_default();
        let line = format!("{digest} {attributes}");
        FileState::parse(&line).ok_or_else(|| format!("unexpected file line {line:?}"))
    });
    presence
        .iter()
        .map(|line| match *line {
            "present" => states.next().expect("one state per present file").map(Some),
            _ => Ok(None),
        })
        .collect()
}

impl FileState {
    /// Parses a `<sha256> <mode> <uid> <gid> <user> <group>` line, as [`parse_file_states`]
    /// joins it from the script's output; `None` when it has another form.
    pub fn parse(line: &str) -> Option<FileState> {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [digest, mode, uid, gid, user, group] = fields[..] else {
            return None;
        };
        let (uid, gid) = (uid.parse().ok()?, gid.parse().ok()?);
        // GNU and BusyBox `stat` print UNKNOWN for an id without a name.
        let name_or_id = |name: &str, id: u32| {
            if name == "UNKNOWN" {
                id.to_string()
            } else {
                name.to_string()
            }
        };
        Some(FileState {
            digest: Digest::from_hex(digest).ok()?,
            mode: u32::from_str_radix(mode, 8).ok()?,
            uid,
            gid,
            user: name_or_id(user, uid),
            group: name_or_id(group, gid),
        })
    }

    /// Compares the file with `mode` (octal text, as `chmod` takes it) and with `user` and `group`
    /// where they are named, each by name or numeric id. Returns `None` when everything matches,
    /// and also skips a mode that is not octal text.
    pub fn mode_mismatch(
        &self,
        mode: &str,
        user: Option<&str>,
        group: Option<&str>,
    ) -> Option<ModeMismatch> {
        let mut expected = Vec::new();
        let mut found = Vec::new();
        if let Ok(mode) = u32::from_str_radix(mode, 8)
            && mode != self.mode
        {
            expected.push(format!("mode {mode:04o}"));
            found.push(format!("mode {:04o}", self.mode));
        }
        let user = user.filter(|user| *user != self.user && *user != self.uid.to_string());
        let group = group.filter(|group| *group != self.group && *group != self.gid.to_string());
        match (user, group) {
            (Some(user), Some(group)) => {
                expected.push(format!("owner {user}:{group}"));
                found.push(format!("owner {}:{}", self.user, self.group));
            }
            (Some(user), None) => {
                expected.push(format!("owner {user}"));
                found.push(format!("owner {}", self.user));
            }
            (None, Some(group)) => {
                expected.push(format!("group {group}"));
                found.push(format!("group {}", self.group));
            }
            (None, None) => {}
        }
        if expected.is_empty() {
            return None;
        }
        Some(ModeMismatch {
            expected: expected.join(" and "),
            found: found.join(" and "),
        })
    }
}

/// Splits an owner as `chown` takes it (`user`, `user:group` or `:group`) into user and group.
pub fn split_owner(owner: &str) -> (Option<&str>, Option<&str>) {
    let (user, group) = owner.split_once(':').unwrap_or((owner, ""));
    (
        Some(user).filter(|user| !user.is_empty()),
        Some(group).filter(|group| !group.is_empty()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(mode: u32, user: &str, group: &str) -> FileState {
        FileState {
            digest: Digest::of_bytes(b"x"),
            mode,
            uid: 65534,
            gid: 1,
            user: user.to_string(),
            group: group.to_string(),
        }
    }

    #[test]
    fn parse_reads_every_field() {
        let hex = Digest::of_bytes(b"x").hex();
        let parsed = FileState::parse(&format!("{hex} 4755 65534 1 nobody daemon")).unwrap();
        assert_eq!(parsed, state(0o4755, "nobody", "daemon"));

        let unnamed = FileState::parse(&format!("{hex} 644 1234 5678 UNKNOWN UNKNOWN")).unwrap();
        assert_eq!(unnamed.user, "1234");
        assert_eq!(unnamed.group, "5678");

        assert_eq!(FileState::parse(&hex), None);
        assert_eq!(FileState::parse(&format!("{hex} 9 0 0 root root")), None);
    }

    #[test]
    fn mismatch_names_only_what_differs() {
        let file = state(0o777, "nobody", "daemon");
        assert_eq!(file.mode_mismatch("0777", Some("nobody"), None), None);
        assert_eq!(file.mode_mismatch("0777", Some("65534"), Some("1")), None);

        let mode = file.mode_mismatch("0750", Some("nobody"), None).unwrap();
        assert_eq!(mode.expected, "mode 0750");
        assert_eq!(mode.found, "mode 0777");

        let both = file
            .mode_mismatch("0750", Some("root"), Some("root"))
            .unwrap();
        assert_eq!(both.expected, "mode 0750 and owner root:root");
        assert_eq!(both.found, "mode 0777 and owner nobody:daemon");

        let group = file.mode_mismatch("0777", None, Some("adm")).unwrap();
        assert_eq!(group.expected, "group adm");
        assert_eq!(group.found, "group daemon");
    }

    #[test]
    fn owner_splits_like_chown() {
        assert_eq!(split_owner("ops:adm"), (Some("ops"), Some("adm")));
        assert_eq!(split_owner("ops"), (Some("ops"), None));
        assert_eq!(split_owner(":adm"), (None, Some("adm")));
    }

    #[test]
    fn script_reads_local_files_in_order() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let spaced = dir.path().join("with space");
        std::fs::write(&spaced, b"bytes").unwrap();
        std::fs::set_permissions(&spaced, std::fs::Permissions::from_mode(0o640)).unwrap();
        let other = dir.path().join("other");
        std::fs::write(&other, b"other bytes").unwrap();
        let missing = dir.path().join("missing");
        let paths = [&spaced, &missing, &other].map(|path| path.to_str().unwrap());
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(file_states_script(&paths))
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        let stdout = String::from_utf8(output.stdout).unwrap();
        let states = parse_file_states(stdout.lines(), paths.len()).unwrap();
        let first = states[0].as_ref().unwrap();
        assert_eq!(first.digest, Digest::of_bytes(b"bytes"));
        assert_eq!(first.mode, 0o640);
        assert_eq!(states[1], None);
        let third = states[2].as_ref().unwrap();
        assert_eq!(third.digest, Digest::of_bytes(b"other bytes"));
    }

    #[test]
    fn script_without_files_prints_presence_only() {
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(file_states_script(&["/nonexistent/a", "/nonexistent/b"]))
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        let stdout = String::from_utf8(output.stdout).unwrap();
        assert_eq!(stdout, "missing\nmissing\n");
        let states = parse_file_states(stdout.lines(), 2).unwrap();
        assert_eq!(states, [None, None]);
    }

    #[test]
    fn parse_rejects_short_or_unordered_output() {
        let hex = "b".repeat(64);
        let digest = format!("{hex} */a");
        let cases: [(&[&str], &str); 3] = [
            (&["present"], "expected 2 files"),
            (
                &["present", "missing", "--", "640 0 0 root root"],
                "expected 4 lines",
            ),
            (
                &[
                    "present",
                    "missing",
                    "640 0 0 root root",
                    "--",
                    "--",
                    &digest,
                ],
                "unexpected lines",
            ),
        ];
        for (lines, message) in cases {
            let error = parse_file_states(lines.iter().copied(), 2).unwrap_err();
            assert!(error.contains(message), "{lines:?}: {error}");
        }
    }
}
