//! Command-line flags for `k0s install`, handled the way k0sctl handles them, so that airlock
//! builds the same command line from the same `installFlags`.
//!
//! A flag is stored unquoted as `--name=value`, `--name value` or `--name`. Its name is the text
//! before the first `=` or space. Quoting happens once, when the flags are joined into a command
//! line.

use std::fmt;

use crate::shell::quote;

/// The `installFlags` of a host, or the flags of a command being built.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Flags(Vec<String>);

impl Flags {
    /// Takes flags as written in `installFlags`. Each entry is unquoted once when it forms a
    /// single shell word (`--kubelet-extra-args="--a --b"` becomes `--kubelet-extra-args=--a --b`).
    pub fn from_entries<I, S>(entries: I) -> Flags
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut flags = Flags::default();
        for entry in entries {
            flags.add(entry.as_ref());
        }
        flags
    }

    /// Splits a string such as a `--kubelet-extra-args` value into flags by shell rules.
    /// Returns `None` when its quotes are unbalanced.
    pub fn split(text: &str) -> Option<Flags> {
        shlex::split(text).map(Flags::from_entries)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// Appends a flag, even if one with the same name exists.
    pub fn add(&mut self, flag: &str) {
        self.0.push(unquote(flag));
    }

    /// Appends a flag unless one with the same name exists.
    pub fn add_unless_present(&mut self, flag: &str) {
        if self.position(flag).is_none() {
            self.add(flag);
        }
    }

    /// Replaces the flag with the same name, or appends it.
    pub fn add_or_replace(&mut self, flag: &str) {
        match self.position(flag) {
            Some(index) => self.0[index] = unquote(flag),
            None => self.add(flag),
        }
    }

    /// Removes the first flag with the same name as `flag`.
    pub fn remove(&mut self, flag: &str) {
        if let Some(index) = self.position(flag) {
            self.0.remove(index);
        }
    }

    /// Returns the whole first flag with this name, such as `--data-dir=/var/lib/k0s`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.position(name).map(|index| self.0[index].as_str())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.position(name).is_some()
    }

    /// Returns the value of the first flag with this name: `/x` for `--data-dir=/x` or
    /// `--data-dir /x`, and `None` when the flag is absent or has no value.
    pub fn value(&self, name: &str) -> Option<String> {
        let flag = unquote(self.get(name)?);
        let separator = flag.find(['=', ' '])?;
        Some(flag[separator + 1..].to_string())
    }

    /// Reads a boolean flag: absent is false, present without a value is true, otherwise the
    /// value must be one of the spellings Go's `strconv.ParseBool` accepts.
    pub fn boolean(&self, name: &str) -> Result<bool, String> {
        if !self.contains(name) {
            return Ok(false);
        }
        match self.value(name).as_deref() {
            None | Some("") => Ok(true),
            Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
            Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
            Some(other) => Err(format!(
                "invalid value {other:?} for {name}: expected true or false"
            )),
        }
    }

    /// Checks whether a flag is present and not explicitly false (`--single`, `--single=true`).
    pub fn is_enabled(&self, name: &str) -> bool {
        self.contains(name) && self.value(name).as_deref() != Some("false")
    }

    /// Joins the flags into one shell-quoted string: every value becomes `--name=value`, quoted
    /// only when it needs to be.
    pub fn join(&self) -> String {
        let mut parts = Vec::with_capacity(self.0.len());
        for flag in &self.0 {
            match flag.find(['=', ' ']) {
                None if flag.is_empty() => {}
                None => parts.push(quote(flag)),
                Some(separator) => {
                    let (name, value) = (&flag[..separator], unquote(&flag[separator + 1..]));
                    // k0sctl drops an empty value and keeps the bare flag name.
                    if value.is_empty() {
                        parts.push(quote(name));
                    } else {
                        parts.push(format!("{name}={}", quote(&value)));
                    }
                }
            }
        }
        parts.join(" ")
    }

    /// Finds the index of the flag with the same name as `flag`.
    fn position(&self, flag: &str) -> Option<usize> {
        let flag = unquote(flag);
        let name = flag
            .find(['=', ' '])
            .map_or(flag.as_str(), |separator| &flag[..separator]);
        self.0.iter().position(|existing| {
            *existing == flag
                || existing
                    .strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(['=', ' ']) || rest.is_empty())
        })
    }
}

impl fmt::Display for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.join())
    }
}

/// Removes one level of shell quoting when `text` is a single shell word, or else returns it
/// unchanged.
fn unquote(text: &str) -> String {
    if !text.contains(['\'', '"', '\\']) {
        return text.to_string();
    }
    match shlex::split(text) {
        Some(words) if words.len() == 1 => words.into_iter().next().unwrap_or_default(),
        _ => text.to_string(),
    }
}

/// Checks whether every `'` and `"` in an install flag is paired. A quote after a backslash does not
/// count, as in k0sctl's check.
pub fn has_balanced_quotes(flag: &str) -> bool {
    let (mut single, mut double) = (0usize, 0usize);
    let mut previous = None;
    for c in flag.chars() {
        if previous != Some('\\') {
            match c {
                '\'' => single += 1,
                '"' => double += 1,
                _ => {}
            }
        }
        previous = Some(c);
    }
    single % 2 == 0 && double % 2 == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_found_by_name() {
        let flags = Flags::from_entries(["--data-dir=/srv/k0s", "--debug", "--labels foo=bar"]);
        assert_eq!(flags.value("--data-dir").as_deref(), Some("/srv/k0s"));
        assert_eq!(flags.value("--labels").as_deref(), Some("foo=bar"));
        assert!(flags.contains("--debug"));
        assert_eq!(flags.value("--debug"), None);
        assert!(!flags.contains("--data"));
    }

    #[test]
    fn quoted_entries_are_unquoted_once() {
        let flags = Flags::from_entries([r#"--kubelet-extra-args="--node-ip=10.0.0.5 --v=2""#]);
        assert_eq!(
            flags.value("--kubelet-extra-args").as_deref(),
            Some("--node-ip=10.0.0.5 --v=2")
        );
        assert_eq!(
            flags.join(),
            "--kubelet-extra-args='--node-ip=10.0.0.5 --v=2'"
        );
    }

    #[test]
    fn add_replace_and_remove() {
        let mut flags = Flags::from_entries(["--data-dir=/a", "--enable-worker"]);
        flags.add_or_replace("--data-dir=/b");
        flags.add_unless_present("--enable-worker=true");
        flags.add_unless_present("--token-file=/etc/k0s/k0stoken");
        flags.remove("--enable-worker");
        assert_eq!(flags.join(), "--data-dir=/b --token-file=/etc/k0s/k0stoken");
    }

    #[test]
    fn booleans_follow_go_parse_bool() {
        let flags = Flags::from_entries(["--a", "--b=false", "--c=1", "--d=maybe"]);
        assert_eq!(flags.boolean("--a"), Ok(true));
        assert_eq!(flags.boolean("--b"), Ok(false));
        assert_eq!(flags.boolean("--c"), Ok(true));
        assert!(flags.boolean("--d").is_err());
        assert_eq!(flags.boolean("--e"), Ok(false));
        assert!(flags.is_enabled("--a"));
        assert!(!flags.is_enabled("--b"));
    }

    #[test]
    fn join_writes_name_equals_value() {
        let flags = Flags::from_entries(["--labels foo=bar", "--empty=", "--path=/with space"]);
        assert_eq!(
            flags.join(),
            "--labels=foo=bar --empty --path='/with space'"
        );
    }

    #[test]
    fn quote_matches_shellescape() {
        assert_eq!(quote("/var/lib/k0s"), "/var/lib/k0s");
        assert_eq!(quote("a@b%c+d=e:f,g.h/i-j_k"), "a@b%c+d=e:f,g.h/i-j_k");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r#"'it'"'"'s'"#);
    }

    #[test]
    fn balanced_quotes() {
        assert!(has_balanced_quotes(r#"--a="b c""#));
        assert!(has_balanced_quotes(r"--a=it\'s"));
        assert!(!has_balanced_quotes("--a='b"));
        assert!(!has_balanced_quotes(r#"--a="b"""#));
    }
}
