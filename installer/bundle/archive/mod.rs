//! Packed bundles: one tar, compressed with zstd, optionally split into parts.
//!
//! Layout of every part file (an unsplit archive is a single part):
//!
//! ```text
//! [zstd skippable frame, magic 0x184D2A5B: PartHeader as JSON, padded to 4 KiB]
//! [zstd frames of the tar stream, each compressed from at most 16 MiB of tar]
//! ```
//!
//! Decoders skip skippable frames, and parts are cut only between frames, so each part is a
//! valid zstd stream and `cat lab.tar.zst.part* | zstd -d | tar -x` restores the bundle without
//! airlock.
//!
//! Each header records the bundle a part belongs to, the part's number and the part count, the
//! size of its payload (the bytes after the header) and of the whole payload of all parts joined,
//! and for split archives the sha256 of both. airlock reads every header before it decompresses
//! anything, so a missing, truncated, renamed or foreign part is named before any entry is read.
//! A changed byte is caught by the zstd frame checksums, the blob digests, or the part's payload
//! digest once the part has been read.
//!
//! Independent frames have a second use: while verifying, airlock records where each frame
//! starts, and a [`crate::bundle::VerifiedBundle`] then reads any blob of a packed bundle by
//! decompressing from the frame that contains its first byte.
//!
//! The tar has `bundle.yaml` first and `bundle.yaml.minisig` second, so a streaming reader
//! checks the signature before it reads any blob.

mod pack;
mod parts;
mod stream;
mod unpack;

pub use pack::{PackError, PackOptions, PackSummary, pack, parse_size};
pub use parts::{ArchiveSummary, PartError, PartHeader, PartSet, part_path};
pub(crate) use stream::{ArchiveStore, read_archive, read_head};
pub use unpack::{UnpackError, unpack};

/// The magic number of the skippable frame that contains a part header. The zstd format reserves
/// 0x184D2A50 to 0x184D2A5F for skippable frames; the seekable format of zstd's contrib code
/// uses 0x184D2A5E, so airlock takes 0x184D2A5B.
pub const PART_MAGIC: u32 = 0x184D_2A5B;

/// The size of the header frame, including its 8-byte frame header. Fixed, so that headers can
/// be rewritten in place once the part count and digests are known.
pub const HEADER_FRAME_SIZE: u64 = 4096;

/// The value of `format` in every part header.
pub const PART_FORMAT: &str = "airlock-bundle-part/v1";

/// The magic number of a zstd data frame.
pub const ZSTD_MAGIC: u32 = 0xFD2F_B528;
