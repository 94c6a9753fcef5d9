//! Quoting for POSIX shell command lines sent to hosts.

/// Quotes `text` for a POSIX shell the way Go's `alessio/shellescape.Quote` does, which k0sctl
/// uses: unchanged when it contains only letters, digits and `_@%+=:,./-`, otherwise in single
/// quotes with each `'` written as `'"'"'`.
pub fn quote(text: &str) -> String {
    if text.is_empty() {
        return "''".to_string();
    }
    let safe = |c: char| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c);
    if text.chars().all(safe) {
        return text.to_string();
    }
    format!("'{}'", text.replace('\'', r#"'"'"'"#))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_words_stay_unquoted() {
        assert_eq!(
            quote("/var/lib/k0s/images/k0s.tar"),
            "/var/lib/k0s/images/k0s.tar"
        );
        assert_eq!(quote("--data-dir=/var/lib/k0s"), "--data-dir=/var/lib/k0s");
    }

    #[test]
    fn everything_else_is_single_quoted() {
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r#"'it'"'"'s'"#);
        assert_eq!(quote("$(reboot)"), "'$(reboot)'");
    }
}
