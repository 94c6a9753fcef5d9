//! Raw disk images: an MBR partition table with one FAT32 partition, written into a plain file
//! with `mbrman` and `fatfs`, so that no root, loop device or mount is needed.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use fatfs::{FatType, FileSystem, FormatVolumeOptions, FsOptions};
use fscommon::{BufStream, StreamSlice};

use crate::ui::Item;

/// The sector size of the partition table and the file system.
const SECTOR: u64 = 512;

/// The partition offset: 1 MiB, the alignment partitioning tools use, which suits the
/// erase blocks of flash media.
const PARTITION_START: u64 = 1 << 20;

/// The MBR partition type of FAT32 addressed by LBA.
const FAT32_LBA: u8 = 0x0C;

/// The smallest image: FAT32 needs at least 65525 clusters, which with 512-byte clusters is about
/// 32 MiB, plus the space before the partition.
pub const MIN_IMAGE_SIZE: u64 = 40 << 20;

/// The largest image an MBR with 512-byte sectors can describe: 2^32 sectors.
pub const MAX_IMAGE_SIZE: u64 = (u32::MAX as u64) * SECTOR;

/// The volume label, padded with spaces as FAT requires.
const VOLUME_LABEL: [u8; 11] = *b"AIRLOCK    ";

type Partition = BufStream<StreamSlice<File>>;

/// Writes `image` of `size` bytes holding every file under `staging`, at their relative paths.
/// The image file is created fresh; the caller writes it under a temporary name.
pub fn write(staging: &Path, image: &Path, size: u64, progress: &Item) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(image)?;
    // A sparse file: only the sectors written take space on this machine.
    file.set_len(size)?;

    let sectors = u32::try_from(size / SECTOR).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the image is too large for an MBR partition table",
        )
    })?;
    let mut mbr = mbrman::MBR::new_from(&mut file, SECTOR as u32, *b"ALCK")
        .map_err(|error| io::Error::other(format!("cannot create the partition table: {error}")))?;
    let start = (PARTITION_START / SECTOR) as u32;
    mbr[1] = mbrman::MBRPartitionEntry {
        boot: mbrman::BOOT_INACTIVE,
        first_chs: mbrman::CHS::empty(),
        sys: FAT32_LBA,
        last_chs: mbrman::CHS::empty(),
        starting_lba: start,
        sectors: sectors - start,
    };
    mbr.write_into(&mut file)
        .map_err(|error| io::Error::other(format!("cannot write the partition table: {error}")))?;

    let partition_size = u64::from(sectors - start) * SECTOR;
    let slice = StreamSlice::new(
        file.try_clone()?,
        PARTITION_START,
        PARTITION_START + partition_size,
    )?;
    let mut stream = BufStream::new(slice);
    fatfs::format_volume(
        &mut stream,
        FormatVolumeOptions::new()
            .fat_type(FatType::Fat32)
            .volume_label(VOLUME_LABEL),
    )?;
    stream.flush()?;
    drop(stream);

    let slice = StreamSlice::new(
        file.try_clone()?,
        PARTITION_START,
        PARTITION_START + partition_size,
    )?;
    let fs = FileSystem::new(BufStream::new(slice), FsOptions::new())?;
    copy_tree(staging, &fs.root_dir(), progress)?;
    // Counting the free clusters stores the count in the FSInfo sector, which fsck.vfat
    // otherwise reports as uninitialised.
    fs.stats()?;
    fs.unmount()?;
    file.sync_all()
}

/// Copies the files and folders under `dir` into the FAT folder `target`.
fn copy_tree(dir: &Path, target: &fatfs::Dir<'_, Partition>, progress: &Item) -> io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type()?.is_dir() {
            let sub = target.create_dir(&name)?;
            copy_tree(&entry.path(), &sub, progress)?;
            continue;
        }
        let mut source = File::open(entry.path())?;
        let mut file = target.create_file(&name)?;
        file.truncate()?;
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            let read = source.read(&mut buffer)?;
            if read == 0 {
                break;
            }
            file.write_all(&buffer[..read])?;
            progress.inc(read as u64);
        }
        file.flush()?;
    }
    Ok(())
}

/// A FAT32 image opened for reading, found through its partition table.
pub struct ImageReader {
    fs: FileSystem<Partition>,
}

impl ImageReader {
    /// Opens the first used partition of the MBR in `image`.
    pub fn open(image: &Path) -> io::Result<ImageReader> {
        let mut file = File::open(image)?;
        let mbr = mbrman::MBR::read_from(&mut file, SECTOR as u32).map_err(|error| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("no MBR partition table: {error}"),
            )
        })?;
        let (_, partition) = mbr
            .iter()
            .find(|(_, partition)| partition.is_used())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no partition"))?;
        let start = u64::from(partition.starting_lba) * SECTOR;
        let end = start + u64::from(partition.sectors) * SECTOR;
        file.seek(SeekFrom::Start(0))?;
        let slice = StreamSlice::new(file, start, end)?;
        let fs = FileSystem::new(BufStream::new(slice), FsOptions::new())?;
        Ok(ImageReader { fs })
    }

    /// Lists every file as a path relative to the root, with its size.
    pub fn list(&self) -> io::Result<Vec<(String, u64)>> {
        let mut files = Vec::new();
        list_dir(&self.fs.root_dir(), "", &mut files)?;
        Ok(files)
    }

    /// Opens a file by its path relative to the root.
    pub fn open_file(&self, name: &str) -> io::Result<impl Read + '_> {
        self.fs.root_dir().open_file(name)
    }
}

fn list_dir(
    dir: &fatfs::Dir<'_, Partition>,
    prefix: &str,
    files: &mut Vec<(String, u64)>,
) -> io::Result<()> {
    for entry in dir.iter() {
        let entry = entry?;
        let name = entry.file_name();
        if name == "." || name == ".." {
            continue;
        }
        let path = format!("{prefix}{name}");
        if entry.is_dir() {
            list_dir(&entry.to_dir(), &format!("{path}/"), files)?;
        } else {
            files.push((path, entry.len()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ui::Ui;

    #[test]
    fn smallest_image_holds_files_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let staging = dir.path().join("files");
        fs::create_dir_all(staging.join("sub")).unwrap();
        fs::write(staging.join("a-long-file-name.txt"), "first").unwrap();
        fs::write(staging.join("sub/second.bin"), vec![7u8; 70_000]).unwrap();
        let image = dir.path().join("media.img");
        let item = Ui::hidden().item("image", None);

        write(&staging, &image, MIN_IMAGE_SIZE, &item).unwrap();

        let reader = ImageReader::open(&image).unwrap();
        let mut files = reader.list().unwrap();
        files.sort();
        assert_eq!(
            files,
            vec![
                ("a-long-file-name.txt".to_string(), 5),
                ("sub/second.bin".to_string(), 70_000)
            ]
        );
        let mut text = String::new();
        reader
            .open_file("a-long-file-name.txt")
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "first");
    }

    #[test]
    fn image_too_full_fails() {
        let dir = tempfile::tempdir().unwrap();
        let staging = dir.path().join("files");
        fs::create_dir_all(&staging).unwrap();
        fs::write(staging.join("big.bin"), vec![1u8; 48 << 20]).unwrap();
        let item = Ui::hidden().item("image", None);
        let error = write(
            &staging,
            &dir.path().join("media.img"),
            MIN_IMAGE_SIZE,
            &item,
        );
        assert!(error.is_err(), "48 MiB fit into a 40 MiB image");
    }
}
