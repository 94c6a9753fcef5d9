//! SHA-256 digests: the one way airlock names and checks the content of an artifact.
//!
//! A [`Digest`] is always written `sha256:<64 lowercase hex digits>`, the form OCI image layouts,
//! `bundle.yaml` and the audit log use. Hashing helpers stream through a bounded buffer so that no
//! caller ever holds a whole artifact in memory.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// The buffer size for streaming reads; 1 MiB keeps SHA-NI hashing at full speed.
pub const STREAM_BUFFER: usize = 1 << 20;

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

/// An invalid digest string.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseDigestError {
    #[error("invalid digest {0:?}: expected \"sha256:\" followed by 64 hex digits")]
    Malformed(String),
    #[error("unsupported digest algorithm in {0:?}: only sha256 is supported")]
    Algorithm(String),
}

impl Digest {
    /// The prefix of every digest string.
    pub const ALGORITHM: &'static str = "sha256";

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Digest(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64 hex digits, without the algorithm prefix: the file name of a blob in an OCI layout.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits without the `sha256:` prefix, as `sha256sum` prints them.
    pub fn from_hex(hex_digits: &str) -> Result<Self, ParseDigestError> {
        let malformed = || ParseDigestError::Malformed(hex_digits.to_string());
        if hex_digits.len() != 64 || hex_digits.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(malformed());
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex_digits, &mut bytes).map_err(|_| malformed())?;
        Ok(Digest(bytes))
    }

    /// Hashes a byte slice held in memory; for files and streams use [`hash_reader`].
    pub fn of_bytes(data: &[u8]) -> Self {
        Digest(Sha256::digest(data).into())
    }

    /// The first 12 hex digits, for messages where the full digest would be noise.
    pub fn short(&self) -> String {
        self.hex()[..12].to_string()
    }
}

impl FromStr for Digest {
    type Err = ParseDigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some((Self::ALGORITHM, hex_digits)) => {
                Digest::from_hex(hex_digits).map_err(|_| ParseDigestError::Malformed(s.to_string()))
            }
            Some(_) => Err(ParseDigestError::Algorithm(s.to_string())),
            None => Err(ParseDigestError::Malformed(s.to_string())),
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", Self::ALGORITHM, self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// An incremental SHA-256 computation that also counts the bytes it has seen.
#[derive(Clone, Default)]
pub struct Hasher {
    state: Sha256,
    len: u64,
}

impl Hasher {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, data: &[u8]) {
        self.state.update(data);
        self.len += data.len() as u64;
    }

    /// The number of bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn finish(self) -> Digest {
        Digest(self.state.finalize().into())
    }
}

/// Hashes everything `reader` yields and returns the digest and the byte count.
pub fn hash_reader(mut reader: impl Read) -> io::Result<(Digest, u64)> {
    let mut hasher = Hasher::new();
    let mut buffer = vec![0u8; STREAM_BUFFER];
    loop {
        match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buffer[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    let len = hasher.len();
    Ok((hasher.finish(), len))
}

/// Hashes a file by streaming it.
pub fn hash_file(path: &std::path::Path) -> io::Result<(Digest, u64)> {
    hash_reader(std::fs::File::open(path)?)
}

/// A writer that hashes every byte on its way to the inner writer.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Hasher::new(),
        }
    }

    /// Returns the inner writer, the digest of everything written and the byte count.
    pub fn finish(self) -> (W, Digest, u64) {
        let len = self.hasher.len();
        (self.inner, self.hasher.finish(), len)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes every byte it hands out.
pub struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Hasher::new(),
        }
    }

    /// The digest of everything read so far, and the byte count.
    pub fn finish(self) -> (Digest, u64) {
        let len = self.hasher.len();
        (self.hasher.finish(), len)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // `printf abc | sha256sum`
    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn digest_round_trips_through_text() {
        let text = format!("sha256:{ABC}");
        let digest: Digest = text.parse().unwrap();
        assert_eq!(digest.to_string(), text);
        assert_eq!(digest, Digest::of_bytes(b"abc"));
    }

    #[test]
    fn digest_rejects_malformed_text() {
        for bad in [
            ABC.to_string(),
            format!("sha256:{}", &ABC[..63]),
            format!("sha256:{}", ABC.to_uppercase()),
            format!("sha256:{}g", &ABC[..63]),
            "sha256:".to_string(),
        ] {
            assert!(
                matches!(bad.parse::<Digest>(), Err(ParseDigestError::Malformed(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            format!("sha512:{ABC}").parse::<Digest>(),
            Err(ParseDigestError::Algorithm(_))
        ));
    }

    #[test]
    fn hash_reader_counts_and_hashes() {
        let (digest, len) = hash_reader(&b"abc"[..]).unwrap();
        assert_eq!(digest.hex(), ABC);
        assert_eq!(len, 3);
    }

    #[test]
    fn hashing_writer_matches_hash_reader() {
        let data: Vec<u8> = (0..3 * STREAM_BUFFER + 17)
            .map(|i| (i % 251) as u8)
            .collect();
        let mut writer = HashingWriter::new(Vec::new());
        writer.write_all(&data).unwrap();
        let (written, digest, len) = writer.finish();
        assert_eq!(written, data);
        assert_eq!((digest, len), hash_reader(&data[..]).unwrap());
    }
}
