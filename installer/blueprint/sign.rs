//! minisign signatures of `blueprint.yaml` and `audit.log.head`, made with the same key files as
//! bundle signatures, so that `minisign -V -p KEY.pub -m blueprint.yaml` checks them.

use std::fmt;
use std::sync::Arc;

use crate::bundle::SecretKey;
use crate::bundle::keys::KeyId;

use super::audit::Head;

/// The suffix of a signature file: `blueprint.yaml.minisig`.
pub const SIGNATURE_SUFFIX: &str = ".minisig";

/// The secret key `--sign-blueprint` names, loaded (and decrypted) before the run starts.
#[derive(Clone)]
pub struct SigningKey(Arc<SecretKey>);

impl SigningKey {
    pub fn new(key: SecretKey) -> SigningKey {
        SigningKey(Arc::new(key))
    }

    pub fn id(&self) -> KeyId {
        self.0.id()
    }

    /// Signs the blueprint; the trusted comment names the file, the cluster and the audit head.
    pub fn sign_blueprint(
        &self,
        yaml: &str,
        cluster: &str,
        head: &Head,
        timestamp: u64,
    ) -> Result<String, String> {
        let comment = format!(
            "timestamp:{timestamp}\tfile:{}\tcluster:{cluster}\taudit-head:{}",
            super::FILE_NAME,
            head.digest
        );
        self.0.sign(yaml.as_bytes(), &comment)
    }

    /// Signs the head record; the trusted comment repeats the line count and the digest.
    pub fn sign_head(&self, head: &Head, timestamp: u64) -> Result<String, String> {
        let comment = format!(
            "timestamp:{timestamp}\tfile:{}\tlines:{}\thead:{}",
            super::audit::HEAD_FILE_NAME,
            head.lines,
            head.digest
        );
        self.0.sign(head.to_text().as_bytes(), &comment)
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.0.id())
    }
}
