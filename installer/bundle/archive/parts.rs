//! Part headers, and finding and checking the parts of an archive before reading it.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{HEADER_FRAME_SIZE, PART_FORMAT, PART_MAGIC, ZSTD_MAGIC};
use crate::digest::{Digest, Hasher};

/// The metadata at the start of every part.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PartHeader {
    pub format: String,
    pub bundle: PartBundle,
    /// This part's number, from 1.
    pub part: u32,
    /// How many parts the archive has.
    pub parts: u32,
    /// The payloads of all parts joined: the archive as one zstd stream.
    pub archive: ArchiveSummary,
    pub payload: PartPayload,
}

/// The size of the joined payloads and, for split archives, their sha256.
///
/// An unsplit archive carries no digests: hashing its payload would add about a sixth to the CPU
/// time of `pack`, and every byte of it is already covered by the zstd frame checksums and by the
/// digests in bundle.yaml. Split archives need the digests to tell their parts apart from the
/// parts of another pack and to name a damaged part.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ArchiveSummary {
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
}

/// The bundle an archive holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PartBundle {
    pub name: String,
    pub version: u64,
    /// The sha256 of bundle.yaml: the bundle's digest.
    pub digest: Digest,
}

/// The bytes of one part after its header.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PartPayload {
    /// The payload's offset within the joined archive.
    pub offset: u64,
    pub size: u64,
    /// The sha256 of the payload; only split archives have one (see [`ArchiveSummary`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
}

impl PartHeader {
    /// Encodes the header as a skippable frame of exactly [`HEADER_FRAME_SIZE`] bytes.
    pub fn encode(&self) -> Vec<u8> {
        let json = serde_json::to_vec(self).expect("a part header always serialises");
        let body = (HEADER_FRAME_SIZE - 8) as usize;
        assert!(
            json.len() <= body,
            "part header of {} bytes exceeds the frame",
            json.len()
        );
        let mut frame = Vec::with_capacity(HEADER_FRAME_SIZE as usize);
        frame.extend_from_slice(&PART_MAGIC.to_le_bytes());
        frame.extend_from_slice(&(body as u32).to_le_bytes());
        frame.extend_from_slice(&json);
        frame.resize(HEADER_FRAME_SIZE as usize, b' ');
        frame
    }
}

/// A part that is missing, truncated, foreign or out of place.
#[derive(Debug, thiserror::Error)]
pub enum PartError {
    #[error("cannot read {path}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "{path} is not a bundle archive: it starts with neither a part header nor a zstd frame"
    )]
    NotAnArchive { path: PathBuf },
    #[error("{path} has an invalid part header: {reason}")]
    InvalidHeader { path: PathBuf, reason: String },
    #[error("{path} is part {part} of {parts}; pass the first part, {first}")]
    NotFirstPart {
        path: PathBuf,
        part: u32,
        parts: u32,
        first: PathBuf,
    },
    #[error("part {part} of {parts} is missing: {path} does not exist")]
    MissingPart {
        path: PathBuf,
        part: u32,
        parts: u32,
    },
    #[error("{path} is truncated: its header declares {expected} bytes, the file has {actual}")]
    Truncated {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    #[error("{path} is longer than its header declares ({expected} bytes, the file has {actual})")]
    TooLong {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    #[error(
        "{path} belongs to another archive: it is from bundle {found}, the first part from {expected}"
    )]
    Foreign {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error(
        "{path} holds part {found}, expected part {expected}: the parts were renamed or mixed up"
    )]
    Reordered {
        path: PathBuf,
        expected: u32,
        found: u32,
    },
    #[error(
        "{path} is not part of this archive: the first part says the archive has {parts} parts"
    )]
    ExtraPart { path: PathBuf, parts: u32 },
    #[error("the first part {path} cannot name its siblings: split parts end in .partNNN")]
    UnnamedParts { path: PathBuf },
    #[error(
        "{path}: payload digest mismatch: the header lists {expected}, the part has {computed}"
    )]
    PayloadDigest {
        path: PathBuf,
        expected: Digest,
        computed: Digest,
    },
}

/// Returns the file name of part `part` (from 1) of the archive `output`.
pub fn part_path(output: &Path, part: u32) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(format!(".part{part:03}"));
    PathBuf::from(name)
}

/// One part file: where its payload lies in the file and in the joined archive.
#[derive(Clone, Debug)]
pub struct PartFile {
    pub path: PathBuf,
    /// The payload's offset in the file (after the header).
    pub start: u64,
    pub size: u64,
    /// The payload's offset within the joined archive.
    pub offset: u64,
    /// The payload digest from the header; `None` for an archive without headers.
    pub digest: Option<Digest>,
}

/// The parts of an archive, checked against each other.
#[derive(Clone, Debug)]
pub struct PartSet {
    /// The path given by the user: the archive or its first part.
    pub path: PathBuf,
    /// The first part's header; `None` for a plain `.tar.zst` made by other tools.
    pub header: Option<PartHeader>,
    pub parts: Vec<PartFile>,
}

impl PartSet {
    /// Opens an archive or the first part of a split archive, and checks every part's header and
    /// size. Nothing is decompressed.
    pub fn open(path: &Path) -> Result<PartSet, PartError> {
        let io_error = |source| PartError::Io {
            path: path.into(),
            source,
        };
        let mut file = File::open(path).map_err(io_error)?;
        let length = file.metadata().map_err(io_error)?.len();
        let Some(header) = read_header(&mut file, path)? else {
            return PartSet::open_plain(path, &mut file, length);
        };
        if header.part != 1 {
            return Err(PartError::NotFirstPart {
                path: path.into(),
                part: header.part,
                parts: header.parts,
                first: sibling_part(path, 1).unwrap_or_else(|| path.to_path_buf()),
            });
        }

        let mut parts = vec![check_part_file(path, &header, length)?];
        for number in 2..=header.parts {
            let part_path = sibling_part(path, number)
                .ok_or_else(|| PartError::UnnamedParts { path: path.into() })?;
            let mut file = match File::open(&part_path) {
                Ok(file) => file,
                Err(error) if error.kind() == io::ErrorKind::NotFound => {
                    return Err(PartError::MissingPart {
                        path: part_path,
                        part: number,
                        parts: header.parts,
                    });
                }
                Err(source) => {
                    return Err(PartError::Io {
                        path: part_path,
                        source,
                    });
                }
            };
            let length = file
                .metadata()
                .map_err(|source| PartError::Io {
                    path: part_path.clone(),
                    source,
                })?
                .len();
            let part_header =
                read_header(&mut file, &part_path)?.ok_or_else(|| PartError::InvalidHeader {
                    path: part_path.clone(),
                    reason: "the file has no part header".into(),
                })?;
            check_sibling_header(&part_path, &header, &part_header, number, &parts)?;
            parts.push(check_part_file(&part_path, &part_header, length)?);
        }
        if header.parts > 1
            && let Some(extra) = sibling_part(path, header.parts + 1).filter(|extra| extra.exists())
        {
            return Err(PartError::ExtraPart {
                path: extra,
                parts: header.parts,
            });
        }
        Ok(PartSet {
            path: path.into(),
            header: Some(header),
            parts,
        })
    }

    fn open_plain(path: &Path, file: &mut File, length: u64) -> Result<PartSet, PartError> {
        let mut magic = [0u8; 4];
        file.seek(SeekFrom::Start(0))
            .and_then(|_| file.read_exact(&mut magic))
            .map_err(|source| match source.kind() {
                io::ErrorKind::UnexpectedEof => PartError::NotAnArchive { path: path.into() },
                _ => PartError::Io {
                    path: path.into(),
                    source,
                },
            })?;
        let magic = u32::from_le_bytes(magic);
        if magic != ZSTD_MAGIC && (magic & 0xFFFF_FFF0) != 0x184D_2A50 {
            return Err(PartError::NotAnArchive { path: path.into() });
        }
        let part = PartFile {
            path: path.into(),
            start: 0,
            size: length,
            offset: 0,
            digest: None,
        };
        Ok(PartSet {
            path: path.into(),
            header: None,
            parts: vec![part],
        })
    }

    /// Returns the size of the joined payload.
    pub fn payload_size(&self) -> u64 {
        self.parts.iter().map(|part| part.size).sum()
    }

    /// Returns the bundle digest from the header, if there is a header.
    pub fn bundle_digest(&self) -> Option<Digest> {
        self.header.as_ref().map(|header| header.bundle.digest)
    }

    /// Returns a reader over the joined payloads that checks each part's payload digest, if it has
    /// one, as its last byte is read.
    pub fn payload_reader(&self) -> PayloadReader {
        PayloadReader::new(self.parts.clone(), true)
    }

    /// Returns a seekable reader over the joined payloads, for reading single entries after
    /// verification.
    pub fn seekable_reader(&self) -> PayloadReader {
        PayloadReader::new(self.parts.clone(), false)
    }
}

/// Reads a part header if the file starts with one; leaves the file positioned anywhere.
fn read_header(file: &mut File, path: &Path) -> Result<Option<PartHeader>, PartError> {
    let invalid = |reason: String| PartError::InvalidHeader {
        path: path.into(),
        reason,
    };
    let mut frame_header = [0u8; 8];
    match file.read_exact(&mut frame_header) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(source) => {
            return Err(PartError::Io {
                path: path.into(),
                source,
            });
        }
    }
    if u32::from_le_bytes(frame_header[..4].try_into().unwrap()) != PART_MAGIC {
        return Ok(None);
    }
    let body_size = u32::from_le_bytes(frame_header[4..].try_into().unwrap()) as u64;
    if body_size != HEADER_FRAME_SIZE - 8 {
        return Err(invalid(format!(
            "header frame of {body_size} bytes, expected {}",
            HEADER_FRAME_SIZE - 8
        )));
    }
    let mut body = vec![0u8; body_size as usize];
    file.read_exact(&mut body)
        .map_err(|_| PartError::Truncated {
            path: path.into(),
            expected: HEADER_FRAME_SIZE,
            actual: file.metadata().map(|m| m.len()).unwrap_or(0),
        })?;
    let json_end = body.iter().rposition(|&b| b != b' ').map_or(0, |i| i + 1);
    let header: PartHeader =
        serde_json::from_slice(&body[..json_end]).map_err(|error| invalid(error.to_string()))?;
    if header.format != PART_FORMAT {
        return Err(invalid(format!(
            "format {:?}, expected {PART_FORMAT:?}",
            header.format
        )));
    }
    if header.part == 0 || header.part > header.parts {
        return Err(invalid(format!("part {} of {}", header.part, header.parts)));
    }
    Ok(Some(header))
}

fn check_part_file(path: &Path, header: &PartHeader, length: u64) -> Result<PartFile, PartError> {
    let expected = HEADER_FRAME_SIZE + header.payload.size;
    if length < expected {
        return Err(PartError::Truncated {
            path: path.into(),
            expected,
            actual: length,
        });
    }
    if length > expected {
        return Err(PartError::TooLong {
            path: path.into(),
            expected,
            actual: length,
        });
    }
    Ok(PartFile {
        path: path.into(),
        start: HEADER_FRAME_SIZE,
        size: header.payload.size,
        offset: header.payload.offset,
        digest: header.payload.digest,
    })
}

fn check_sibling_header(
    path: &Path,
    first: &PartHeader,
    header: &PartHeader,
    number: u32,
    earlier: &[PartFile],
) -> Result<(), PartError> {
    if header.bundle != first.bundle
        || header.archive != first.archive
        || header.parts != first.parts
    {
        let describe = |h: &PartHeader| {
            format!(
                "{} version {} ({}, archive {})",
                h.bundle.name,
                h.bundle.version,
                h.bundle.digest.short(),
                h.archive
                    .digest
                    .map_or("-".to_string(), |digest| digest.short())
            )
        };
        return Err(PartError::Foreign {
            path: path.into(),
            expected: describe(first),
            found: describe(header),
        });
    }
    if header.part != number {
        return Err(PartError::Reordered {
            path: path.into(),
            expected: number,
            found: header.part,
        });
    }
    let previous = earlier
        .last()
        .expect("the first part is always checked first");
    if header.payload.offset != previous.offset + previous.size {
        return Err(PartError::InvalidHeader {
            path: path.into(),
            reason: format!(
                "payload offset {}, expected {}",
                header.payload.offset,
                previous.offset + previous.size
            ),
        });
    }
    Ok(())
}

/// Returns the path of part `number` beside `first`, whose name ends in `.partNNN`.
fn sibling_part(first: &Path, number: u32) -> Option<PathBuf> {
    let name = first.file_name()?.to_str()?;
    let (stem, digits) = name.rsplit_once(".part")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(first.with_file_name(format!("{stem}.part{number:0width$}", width = digits.len())))
}

/// Reads the joined payloads of an archive's parts.
pub struct PayloadReader {
    parts: Vec<PartFile>,
    /// Check each part's payload digest as it is read to its end.
    check_digests: bool,
    current: usize,
    /// Position within the current part's payload.
    position: u64,
    file: Option<File>,
    hasher: Hasher,
}

impl PayloadReader {
    fn new(parts: Vec<PartFile>, check_digests: bool) -> PayloadReader {
        PayloadReader {
            parts,
            check_digests,
            current: 0,
            position: 0,
            file: None,
            hasher: Hasher::new(),
        }
    }

    fn open_current(&mut self) -> io::Result<&mut File> {
        if self.file.is_none() {
            let part = &self.parts[self.current];
            let mut file = File::open(&part.path)?;
            file.seek(SeekFrom::Start(part.start + self.position))?;
            self.file = Some(file);
        }
        Ok(self.file.as_mut().expect("the file was just opened"))
    }

    /// Moves to the next part after checking the finished part's digest.
    fn finish_part(&mut self) -> io::Result<()> {
        let part = &self.parts[self.current];
        if self.check_digests
            && let Some(expected) = part.digest
        {
            let computed = std::mem::take(&mut self.hasher).finish();
            if computed != expected {
                let error = PartError::PayloadDigest {
                    path: part.path.clone(),
                    expected,
                    computed,
                };
                return Err(io::Error::new(io::ErrorKind::InvalidData, error));
            }
        }
        self.current += 1;
        self.position = 0;
        self.file = None;
        Ok(())
    }
}

impl Read for PayloadReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(part) = self.parts.get(self.current) else {
                return Ok(0);
            };
            let remaining = part.size - self.position;
            if remaining == 0 {
                self.finish_part()?;
                continue;
            }
            let limit = buf.len().min(remaining.min(usize::MAX as u64) as usize);
            let read = self.open_current()?.read(&mut buf[..limit])?;
            if read == 0 {
                let path = self.parts[self.current].path.display().to_string();
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{path} ended early"),
                ));
            }
            if self.check_digests {
                self.hasher.update(&buf[..read]);
            }
            self.position += read as u64;
            return Ok(read);
        }
    }
}

impl Seek for PayloadReader {
    /// Seeking turns digest checks off: a part read from the middle cannot be checked.
    fn seek(&mut self, target: SeekFrom) -> io::Result<u64> {
        let SeekFrom::Start(offset) = target else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the payload reader seeks only from the start",
            ));
        };
        self.check_digests = false;
        let index = self
            .parts
            .iter()
            .position(|part| offset < part.offset + part.size)
            .unwrap_or(self.parts.len());
        self.current = index;
        self.position = self.parts.get(index).map_or(0, |part| offset - part.offset);
        self.file = None;
        Ok(offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sibling_parts_keep_digit_width() {
        let first = Path::new("/media/lab.tar.zst.part001");
        assert_eq!(
            sibling_part(first, 12).unwrap(),
            Path::new("/media/lab.tar.zst.part012")
        );
        assert_eq!(sibling_part(Path::new("/media/lab.tar.zst"), 2), None);
        assert_eq!(
            part_path(Path::new("out/lab.tar.zst"), 3),
            Path::new("out/lab.tar.zst.part003")
        );
    }

    #[test]
    fn header_frame_has_fixed_size() {
        let header = PartHeader {
            format: PART_FORMAT.into(),
            bundle: PartBundle {
                name: "lab".into(),
                version: 1,
                digest: Digest::of_bytes(b"m"),
            },
            part: 1,
            parts: 1,
            archive: ArchiveSummary {
                digest: Some(Digest::of_bytes(b"a")),
                size: 10,
            },
            payload: PartPayload {
                offset: 0,
                size: 10,
                digest: Some(Digest::of_bytes(b"a")),
            },
        };
        let frame = header.encode();
        assert_eq!(frame.len() as u64, HEADER_FRAME_SIZE);
        let mut file = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut file, &frame).unwrap();
        file.seek(SeekFrom::Start(0)).unwrap();
        assert_eq!(
            read_header(&mut file, Path::new("x")).unwrap(),
            Some(header)
        );
    }
}
