//! Tests of `airlock bundle` and `airlock key`: builds, signatures, packs and verification, run
//! through the airlock binary and checked with the real tools (minisign, tar, zstd, skopeo,
//! sha256sum).

mod bundle {
    pub mod broken;
    pub mod fixtures;
    pub mod library;
    pub mod network;
    pub mod production;
    pub mod roundtrip;
    pub mod servers;
}
