//! A regular file as a host has it: digest, mode and owner, read in one shell command so that a
//! host's files cost one round trip together.

use crate::digest::Digest;

use super::host::sha256_command;

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

/// How a file's mode and owner differ from the expected ones, as message text that names only the
/// parts that differ, such as `mode 0750` and `mode 0777`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModeMismatch {
    pub expected: String,
    pub found: String,
}

/// Returns a shell command that prints `<sha256> <mode> <uid> <gid> <user> <group>` for the
/// regular file at `quoted_path`, and fails when it cannot read the file.
pub(crate) fn file_state_command(quoted_path: &str) -> String {
    format!(
        "digest=$({}) && attributes=$(stat -L -c '%a %u %g %U %G' {quoted_path}) && \
         echo \"${{digest%% *}} $attributes\"",
        sha256_command(quoted_path)
    )
}

impl FileState {
    /// Parses a line printed by [`file_state_command`]; `None` when it has another form.
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
    fn command_reads_a_local_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("with space");
        std::fs::write(&path, b"bytes").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(file_state_command(&crate::shell::quote(
                path.to_str().unwrap(),
            )))
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        let parsed = FileState::parse(&String::from_utf8(output.stdout).unwrap()).unwrap();
        assert_eq!(parsed.digest, Digest::of_bytes(b"bytes"));
        assert_eq!(parsed.mode, 0o640);
    }
}
