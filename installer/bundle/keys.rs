//! minisign key pairs and the signature over `bundle.yaml`.
//!
//! Files are in minisign's formats, so `minisign -V -p KEY.pub -m bundle.yaml` checks an airlock
//! signature and airlock accepts signatures made by `minisign -S`. Signatures are always of the
//! pre-hashed kind (BLAKE2b-512, then Ed25519), the only kind minisign 0.11 makes by default.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Cursor, Read, Write};
use std::path::{Path, PathBuf};

use minisign::{KeyPair, PublicKeyBox, SecretKeyBox, SignatureBox};

/// The file name of the signature beside `bundle.yaml`.
pub const SIGNATURE_FILE: &str = "bundle.yaml.minisig";

/// The largest key or signature file airlock reads; real ones are under 400 bytes.
pub const MAX_KEY_FILE: u64 = 64 << 10;

/// A minisign key id: 8 bytes, printed as minisign prints it (16 uppercase hex digits).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId([u8; 8]);

impl KeyId {
    fn from_slice(bytes: &[u8]) -> KeyId {
        let mut id = [0u8; 8];
        id.copy_from_slice(&bytes[..8]);
        KeyId(id)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", u64::from_le_bytes(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for KeyId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A failure to create, read or use a key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path} already exists; airlock never overwrites a key")]
    Exists { path: PathBuf },
    #[error("cannot read key {path}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write key {path}")]
    Write { path: PathBuf, source: io::Error },
    #[error("invalid minisign public key {path}: {reason}")]
    InvalidPublicKey { path: PathBuf, reason: String },
    #[error("invalid minisign secret key {path}: {reason}")]
    InvalidSecretKey { path: PathBuf, reason: String },
    #[error("secret key {path} is encrypted and no password was given")]
    PasswordRequired { path: PathBuf },
    #[error("wrong password for secret key {path}")]
    WrongPassword { path: PathBuf },
    #[error("cannot generate a key pair: {0}")]
    Generate(String),
}

/// A trusted public key.
#[derive(Clone, Debug)]
pub struct PublicKey {
    key: minisign::PublicKey,
    /// The key's origin (a file path), for messages.
    pub source: String,
}

impl PublicKey {
    /// Reads a public key file in minisign's format (comment line, then base64).
    pub fn load(path: &Path) -> Result<PublicKey, KeyError> {
        let text = read_small_text(path).map_err(|source| KeyError::Read {
            path: path.into(),
            source,
        })?;
        PublicKey::parse(&text, &path.display().to_string()).map_err(|reason| {
            KeyError::InvalidPublicKey {
                path: path.into(),
                reason,
            }
        })
    }

    /// Parses a public key given as the file's text or as the bare base64 line (the form cluster
    /// files pin keys in). `source` names the key in messages.
    pub fn parse(text: &str, source: &str) -> Result<PublicKey, String> {
        let trimmed = text.trim();
        let key = if trimmed.lines().count() == 1 {
            minisign::PublicKey::from_base64(trimmed)
        } else {
            PublicKeyBox::from_string(trimmed).and_then(PublicKeyBox::into_public_key)
        }
        .map_err(|error| error.to_string())?;
        Ok(PublicKey {
            key,
            source: source.to_string(),
        })
    }

    pub fn id(&self) -> KeyId {
        KeyId::from_slice(self.key.keynum())
    }
}

/// Returns whether a secret key file needs a password.
pub fn secret_key_is_encrypted(path: &Path) -> Result<bool, KeyError> {
    let text = read_small_text(path).map_err(|source| KeyError::Read {
        path: path.into(),
        source,
    })?;
    let invalid = |reason: &str| KeyError::InvalidSecretKey {
        path: path.into(),
        reason: reason.into(),
    };
    let line = text
        .lines()
        .nth(1)
        .ok_or_else(|| invalid("missing key line"))?;
    // The decoded key starts with the signature algorithm ("Ed") and the KDF algorithm: "Sc" for
    // scrypt, two zero bytes for none. Two base64 characters hold 12 bits, so decode 8 (6 bytes).
    let head = line.get(..8).ok_or_else(|| invalid("key line too short"))?;
    let bytes = decode_base64_prefix(head).ok_or_else(|| invalid("key line is not base64"))?;
    match &bytes[2..4] {
        b"Sc" => Ok(true),
        [0, 0] => Ok(false),
        _ => Err(invalid("unsupported key derivation algorithm")),
    }
}

fn decode_base64_prefix(text: &str) -> Option<[u8; 6]> {
    let mut bits: u64 = 0;
    for c in text.bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        bits = (bits << 6) | u64::from(value);
    }
    let bytes = bits.to_be_bytes();
    Some([bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7]])
}

/// A decrypted secret key, ready to sign.
pub struct SecretKey {
    key: minisign::SecretKey,
    public: minisign::PublicKey,
}

impl SecretKey {
    /// Reads a minisign secret key; `password` must be given when the key is encrypted (see
    /// [`secret_key_is_encrypted`]).
    pub fn load(path: &Path, password: Option<&str>) -> Result<SecretKey, KeyError> {
        let encrypted = secret_key_is_encrypted(path)?;
        let text = read_small_text(path).map_err(|source| KeyError::Read {
            path: path.into(),
            source,
        })?;
        let key_box =
            SecretKeyBox::from_string(&text).map_err(|error| KeyError::InvalidSecretKey {
                path: path.into(),
                reason: error.to_string(),
            })?;
        let key = if encrypted {
            let password =
                password.ok_or_else(|| KeyError::PasswordRequired { path: path.into() })?;
            key_box
                .into_secret_key(Some(password.to_string()))
                .map_err(|error| match error.to_string().contains("Wrong password") {
                    true => KeyError::WrongPassword { path: path.into() },
                    false => KeyError::InvalidSecretKey {
                        path: path.into(),
                        reason: error.to_string(),
                    },
                })?
        } else {
            key_box
                .into_unencrypted_secret_key()
                .map_err(|error| KeyError::InvalidSecretKey {
                    path: path.into(),
                    reason: error.to_string(),
                })?
        };
        let public = minisign::PublicKey::from_secret_key(&key).map_err(|error| {
            KeyError::InvalidSecretKey {
                path: path.into(),
                reason: error.to_string(),
            }
        })?;
        Ok(SecretKey { key, public })
    }

    pub fn id(&self) -> KeyId {
        KeyId::from_slice(self.key.keynum())
    }

    /// Signs `data` with `trusted_comment`, which the signature covers too.
    pub fn sign(&self, data: &[u8], trusted_comment: &str) -> Result<String, String> {
        let untrusted = format!("signature from airlock secret key {}", self.id());
        minisign::sign(
            Some(&self.public),
            &self.key,
            Cursor::new(data),
            Some(trusted_comment),
            Some(&untrusted),
        )
        .map(|signature| signature.into_string())
        .map_err(|error| error.to_string())
    }
}

/// Writes a new key pair to `PREFIX.pub` and `PREFIX.key`, the secret key encrypted with
/// `password` (scrypt, as minisign does) unless it is `None`. Existing files are never
/// overwritten.
pub fn generate_key_pair(prefix: &Path, password: Option<&str>) -> Result<KeyId, KeyError> {
    let public_path = with_suffix(prefix, ".pub");
    let secret_path = with_suffix(prefix, ".key");
    for path in [&public_path, &secret_path] {
        if fs::symlink_metadata(path).is_ok() {
            return Err(KeyError::Exists { path: path.clone() });
        }
    }

    let pair = match password {
        Some(password) => KeyPair::generate_encrypted_keypair(Some(password.to_string())),
        None => KeyPair::generate_unencrypted_keypair(),
    }
    .map_err(|error| KeyError::Generate(error.to_string()))?;
    let id = KeyId::from_slice(pair.pk.keynum());
    let secret_comment = match password {
        Some(_) => format!("airlock encrypted secret key {id}"),
        None => format!("airlock unencrypted secret key {id}"),
    };
    let secret_box = pair
        .sk
        .to_box(Some(&secret_comment))
        .map_err(|error| KeyError::Generate(error.to_string()))?;
    let public_box = pair
        .pk
        .to_box()
        .map_err(|error| KeyError::Generate(error.to_string()))?;

    // The secret key goes first, so that a failure never leaves a public key without its pair.
    write_new_file(&secret_path, secret_box.to_string().as_bytes(), 0o600)?;
    if let Err(error) = write_new_file(&public_path, public_box.to_string().as_bytes(), 0o644) {
        let _ = fs::remove_file(&secret_path);
        return Err(error);
    }
    Ok(id)
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut path = prefix.as_os_str().to_owned();
    path.push(suffix);
    PathBuf::from(path)
}

fn write_new_file(path: &Path, content: &[u8], mode: u32) -> Result<(), KeyError> {
    use std::os::unix::fs::OpenOptionsExt;
    let write_error = |source| KeyError::Write {
        path: path.into(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|source| match source.kind() {
            io::ErrorKind::AlreadyExists => KeyError::Exists { path: path.into() },
            _ => write_error(source),
        })?;
    file.write_all(content)
        .and_then(|()| file.sync_all())
        .map_err(write_error)
}

fn read_small_text(path: &Path) -> io::Result<String> {
    let mut text = String::new();
    fs::File::open(path)?
        .take(MAX_KEY_FILE)
        .read_to_string(&mut text)?;
    Ok(text)
}

/// The signatures a reader of a bundle accepts.
#[derive(Clone, Debug, Default)]
pub struct TrustPolicy {
    /// The keys whose signatures are trusted.
    pub keys: Vec<PublicKey>,
    /// Accept a bundle without a signature; a warning is logged.
    pub allow_unsigned: bool,
}

impl TrustPolicy {
    pub fn new(keys: Vec<PublicKey>, allow_unsigned: bool) -> TrustPolicy {
        TrustPolicy {
            keys,
            allow_unsigned,
        }
    }
}

/// The signer of a verified bundle.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "status")]
pub enum Signer {
    /// Signed by this trusted key; `trusted_comment` is the comment the signature covers.
    Trusted {
        key_id: KeyId,
        trusted_comment: String,
    },
    /// No signature, accepted because the policy allows unsigned bundles.
    Unsigned,
    /// Signed by this key, but the policy named no trusted key and allows unsigned bundles, so
    /// the signature was only checked for form.
    Unchecked { key_id: KeyId },
}

impl Signer {
    /// Returns the key id of a trusted signature.
    pub fn trusted_key(&self) -> Option<KeyId> {
        match self {
            Signer::Trusted { key_id, .. } => Some(*key_id),
            _ => None,
        }
    }
}

impl fmt::Display for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Signer::Trusted { key_id, .. } => write!(f, "signed by trusted key {key_id}"),
            Signer::Unsigned => f.write_str("unsigned"),
            Signer::Unchecked { key_id } => write!(f, "signed by key {key_id}, not checked"),
        }
    }
}

/// A signature that the trust policy rejects.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("the bundle is not signed ({SIGNATURE_FILE} is missing)")]
    Unsigned,
    #[error("malformed signature {SIGNATURE_FILE}: {reason}")]
    Malformed { reason: String },
    #[error("the bundle is signed by key {key_id}, but no trusted key was given")]
    NoTrustedKey { key_id: KeyId },
    #[error("the bundle is signed by key {key_id}, which is not trusted (trusted: {})", list_ids(.trusted))]
    UntrustedKey { key_id: KeyId, trusted: Vec<KeyId> },
    #[error(
        "the signature by key {key_id} does not match bundle.yaml: bundle.yaml was changed after signing"
    )]
    Invalid { key_id: KeyId },
    #[error("the signed comment names {signed:?}, but bundle.yaml is {actual:?}")]
    CommentMismatch { signed: String, actual: String },
}

fn list_ids(ids: &[KeyId]) -> String {
    ids.iter()
        .map(KeyId::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Formats the trusted comment airlock signs: minisign's timestamp and file fields, then the
/// bundle.
pub fn trusted_comment(name: &str, version: u64, timestamp: u64) -> String {
    format!("timestamp:{timestamp}\tfile:bundle.yaml\tbundle:{name}\tversion:{version}")
}

/// Parses a signature file's text without checking it; returns the signer's key id.
pub fn signature_key_id(signature: &[u8]) -> Result<KeyId, SignatureError> {
    parse_signature(signature).map(|signature| KeyId::from_slice(signature.keynum()))
}

fn parse_signature(signature: &[u8]) -> Result<SignatureBox, SignatureError> {
    let malformed = |reason: String| SignatureError::Malformed { reason };
    let text = std::str::from_utf8(signature).map_err(|_| malformed("not UTF-8 text".into()))?;
    if text.lines().count() < 4 {
        return Err(malformed(
            "expected 4 lines: comment, signature, trusted comment, global signature".into(),
        ));
    }
    let signature =
        SignatureBox::from_string(text).map_err(|error| malformed(error.to_string()))?;
    if !signature.is_prehashed() {
        return Err(malformed(
            "legacy (not pre-hashed) signatures are not accepted".into(),
        ));
    }
    Ok(signature)
}

/// Checks the signature of `bundle_yaml` against the policy. `expected` is the bundle name and
/// version from bundle.yaml, which a trusted comment written by airlock must repeat.
pub fn check_signature(
    bundle_yaml: &[u8],
    signature: Option<&[u8]>,
    policy: &TrustPolicy,
    expected: (&str, u64),
) -> Result<Signer, SignatureError> {
    let Some(signature) = signature else {
        return match policy.allow_unsigned {
            true => Ok(Signer::Unsigned),
            false => Err(SignatureError::Unsigned),
        };
    };
    let signature = parse_signature(signature)?;
    let key_id = KeyId::from_slice(signature.keynum());
    if policy.keys.is_empty() {
        return match policy.allow_unsigned {
            true => Ok(Signer::Unchecked { key_id }),
            false => Err(SignatureError::NoTrustedKey { key_id }),
        };
    }
    let Some(key) = policy.keys.iter().find(|key| key.id() == key_id) else {
        let trusted = policy.keys.iter().map(PublicKey::id).collect();
        return Err(SignatureError::UntrustedKey { key_id, trusted });
    };
    minisign::verify(
        &key.key,
        &signature,
        Cursor::new(bundle_yaml),
        true,
        false,
        false,
    )
    .map_err(|_| SignatureError::Invalid { key_id })?;

    let trusted_comment =
        signature
            .trusted_comment()
            .map_err(|error| SignatureError::Malformed {
                reason: error.to_string(),
            })?;
    check_trusted_comment(&trusted_comment, expected)?;
    Ok(Signer::Trusted {
        key_id,
        trusted_comment,
    })
}

/// Checks a signature of any file made by this key, as `minisign -V` does, and returns its
/// trusted comment.
pub fn verify_detached(
    key: &PublicKey,
    data: &[u8],
    signature: &[u8],
) -> Result<String, SignatureError> {
    let signature = parse_signature(signature)?;
    let key_id = KeyId::from_slice(signature.keynum());
    if key_id != key.id() {
        return Err(SignatureError::UntrustedKey {
            key_id,
            trusted: vec![key.id()],
        });
    }
    minisign::verify(&key.key, &signature, Cursor::new(data), true, false, false)
        .map_err(|_| SignatureError::Invalid { key_id })?;
    signature
        .trusted_comment()
        .map_err(|error| SignatureError::Malformed {
            reason: error.to_string(),
        })
}

/// Checks the bundle fields of a trusted comment. A comment written by `minisign -S` has none
/// and passes. One written by airlock must name this bundle, so that a signature moved to another
/// bundle's manifest is noticed.
fn check_trusted_comment(
    comment: &str,
    (name, version): (&str, u64),
) -> Result<(), SignatureError> {
    let field = |key: &str| comment.split('\t').find_map(|part| part.strip_prefix(key));
    let signed = (field("bundle:"), field("version:"));
    if signed == (None, None) {
        return Ok(());
    }
    let actual = format!("{name} version {version}");
    let matches = signed.0 == Some(name) && signed.1 == Some(version.to_string().as_str());
    match matches {
        true => Ok(()),
        false => Err(SignatureError::CommentMismatch {
            signed: format!(
                "{} version {}",
                signed.0.unwrap_or("?"),
                signed.1.unwrap_or("?")
            ),
            actual,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unencrypted_pair(dir: &Path, name: &str) -> (PublicKey, SecretKey) {
        let prefix = dir.join(name);
        generate_key_pair(&prefix, None).unwrap();
        (
            PublicKey::load(&with_suffix(&prefix, ".pub")).unwrap(),
            SecretKey::load(&with_suffix(&prefix, ".key"), None).unwrap(),
        )
    }

    #[test]
    fn signature_round_trip_and_tamper() {
        let dir = tempfile::tempdir().unwrap();
        let (public, secret) = unencrypted_pair(dir.path(), "a");
        let signature = secret
            .sign(b"bundle", &trusted_comment("lab", 2, 1))
            .unwrap();
        let policy = TrustPolicy::new(vec![public.clone()], false);

        let signer =
            check_signature(b"bundle", Some(signature.as_bytes()), &policy, ("lab", 2)).unwrap();
        assert_eq!(signer.trusted_key(), Some(public.id()));

        let error = check_signature(b"bundlE", Some(signature.as_bytes()), &policy, ("lab", 2))
            .unwrap_err();
        assert!(matches!(error, SignatureError::Invalid { .. }), "{error}");

        let error = check_signature(b"bundle", Some(signature.as_bytes()), &policy, ("lab", 3))
            .unwrap_err();
        assert!(
            matches!(error, SignatureError::CommentMismatch { .. }),
            "{error}"
        );
    }

    #[test]
    fn signature_by_other_key_is_untrusted() {
        let dir = tempfile::tempdir().unwrap();
        let (trusted, _) = unencrypted_pair(dir.path(), "trusted");
        let (_, other) = unencrypted_pair(dir.path(), "other");
        let signature = other.sign(b"x", "timestamp:1").unwrap();
        let policy = TrustPolicy::new(vec![trusted], true);
        let error =
            check_signature(b"x", Some(signature.as_bytes()), &policy, ("lab", 1)).unwrap_err();
        assert!(
            matches!(error, SignatureError::UntrustedKey { .. }),
            "{error}"
        );
    }

    #[test]
    fn unsigned_needs_allow_unsigned() {
        let strict = TrustPolicy::default();
        assert!(matches!(
            check_signature(b"x", None, &strict, ("lab", 1)),
            Err(SignatureError::Unsigned)
        ));
        let lenient = TrustPolicy::new(Vec::new(), true);
        assert_eq!(
            check_signature(b"x", None, &lenient, ("lab", 1)).unwrap(),
            Signer::Unsigned
        );
    }

    #[test]
    fn encrypted_key_needs_right_password() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("enc");
        generate_key_pair(&prefix, Some("correct horse")).unwrap();
        let secret_path = with_suffix(&prefix, ".key");
        assert!(secret_key_is_encrypted(&secret_path).unwrap());
        assert!(matches!(
            SecretKey::load(&secret_path, None),
            Err(KeyError::PasswordRequired { .. })
        ));
        assert!(matches!(
            SecretKey::load(&secret_path, Some("wrong")),
            Err(KeyError::WrongPassword { .. })
        ));
        assert!(SecretKey::load(&secret_path, Some("correct horse")).is_ok());
    }

    #[test]
    fn generate_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("k");
        fs::write(with_suffix(&prefix, ".pub"), "keep me").unwrap();
        assert!(matches!(
            generate_key_pair(&prefix, None),
            Err(KeyError::Exists { .. })
        ));
        assert_eq!(
            fs::read_to_string(with_suffix(&prefix, ".pub")).unwrap(),
            "keep me"
        );
        assert!(!with_suffix(&prefix, ".key").exists());
    }

    #[test]
    fn malformed_signature_is_named() {
        let policy = TrustPolicy::new(Vec::new(), true);
        let error = check_signature(
            b"x",
            Some(b"untrusted comment: x\nnot base64!\n"),
            &policy,
            ("lab", 1),
        );
        assert!(matches!(error, Err(SignatureError::Malformed { .. })));
    }
}
