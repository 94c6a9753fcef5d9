//! k0s join tokens: base64 of a gzip-compressed kubeconfig holding a bootstrap token.
//!
//! airlock never logs or prints a token. It only needs the bootstrap token's id (the part before
//! the dot) to invalidate the token with `k0s token invalidate <id>` after the join.

use std::io::Read;

use data_encoding::BASE64;
use flate2::read::GzDecoder;

/// A token that does not have k0s's format.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the join token is not base64")]
    Base64,
    #[error("the join token is not gzip-compressed")]
    Gzip,
    #[error("the join token's kubeconfig has no bootstrap token of the form id.secret")]
    NoBootstrapToken,
}

/// The largest decompressed token airlock reads; real tokens are a few kilobytes.
const TOKEN_LIMIT: u64 = 1 << 20;

/// Returns the id of the bootstrap token inside a k0s join token.
pub fn bootstrap_token_id(token: &str) -> Result<String, TokenError> {
    let compressed = BASE64
        .decode(token.trim().as_bytes())
        .map_err(|_| TokenError::Base64)?;
    let mut kubeconfig = String::new();
    GzDecoder::new(&compressed[..])
        .take(TOKEN_LIMIT)
        .read_to_string(&mut kubeconfig)
        .map_err(|_| TokenError::Gzip)?;
    let config: yaml_serde::Value =
        yaml_serde::from_str(&kubeconfig).map_err(|_| TokenError::NoBootstrapToken)?;
    let bearer = config["users"][0]["user"]["token"]
        .as_str()
        .ok_or(TokenError::NoBootstrapToken)?;
    let (id, secret) = bearer.split_once('.').ok_or(TokenError::NoBootstrapToken)?;
    let well_formed = |part: &str, len: usize| {
        part.len() == len
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    if well_formed(id, 6) && well_formed(secret, 16) {
        Ok(id.to_string())
    } else {
        Err(TokenError::NoBootstrapToken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn token_for(bearer: &str) -> String {
        let kubeconfig = format!(
            "apiVersion: v1\nclusters:\n- cluster:\n    server: https://127.0.1.11:6443\n  name: k0s\n\
             contexts:\n- context:\n    cluster: k0s\n    user: kubelet-bootstrap\n  name: k0s\n\
             current-context: k0s\nkind: Config\nusers:\n- name: kubelet-bootstrap\n  user:\n    token: {bearer}\n"
        );
        let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
        encoder.write_all(kubeconfig.as_bytes()).unwrap();
        BASE64.encode(&encoder.finish().unwrap())
    }

    #[test]
    fn id_is_read_from_a_real_shaped_token() {
        assert_eq!(
            bootstrap_token_id(&token_for("abc123.0123456789abcdef")).unwrap(),
            "abc123"
        );
    }

    #[test]
    fn malformed_tokens_are_rejected() {
        assert_eq!(bootstrap_token_id("not base64!"), Err(TokenError::Base64));
        assert_eq!(
            bootstrap_token_id(&BASE64.encode(b"plain")),
            Err(TokenError::Gzip)
        );
        assert_eq!(
            bootstrap_token_id(&token_for("ABC123.0123456789abcdef")),
            Err(TokenError::NoBootstrapToken)
        );
        assert_eq!(
            bootstrap_token_id(&token_for("abc123")),
            Err(TokenError::NoBootstrapToken)
        );
    }
}
