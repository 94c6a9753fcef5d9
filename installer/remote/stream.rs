//! Bridges from blocking readers and writers (bundle blobs, OCI archives built on the fly) to the
//! async readers that SSH uploads consume.
//!
//! A blocking thread moves chunks through a bounded channel, so at most [`CHUNK`] times
//! [`DEPTH`] bytes are in flight whatever the size of the artifact.

use std::io::{self, Read, Write};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::io::StreamReader;

/// The size of one chunk.
pub const CHUNK: usize = 256 * 1024;
/// The number of chunks buffered between the two sides.
const DEPTH: usize = 8;

/// An async reader over chunks sent from a blocking thread.
pub type ChunkReader = StreamReader<ReceiverStream<io::Result<Bytes>>, Bytes>;

/// Reads `reader` on a blocking thread and returns its bytes as an async reader. A read error,
/// including a digest check failing at the end of a bundle blob, reaches the async side as an
/// error.
pub fn async_reader<R: Read + Send + 'static>(mut reader: R) -> ChunkReader {
    let (sender, receiver) = mpsc::channel(DEPTH);
    tokio::task::spawn_blocking(move || {
        loop {
            let mut buffer = vec![0u8; CHUNK];
            let chunk = match reader.read(&mut buffer) {
                Ok(0) => return,
                Ok(n) => {
                    buffer.truncate(n);
                    Ok(Bytes::from(buffer))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
            let failed = chunk.is_err();
            // The async side hung up: nobody needs the rest.
            if sender.blocking_send(chunk).is_err() || failed {
                return;
            }
        }
    });
    StreamReader::new(ReceiverStream::new(receiver))
}

/// Runs `produce` on a blocking thread with a writer whose bytes come out of the returned async
/// reader. An error from `produce` reaches the reader as an error after the bytes written before
/// it.
pub fn async_pipe<F>(produce: F) -> ChunkReader
where
    F: FnOnce(&mut dyn Write) -> io::Result<()> + Send + 'static,
{
    let (sender, receiver) = mpsc::channel(DEPTH);
    tokio::task::spawn_blocking(move || {
        let mut writer = ChannelWriter {
            sender: sender.clone(),
            buffer: Vec::with_capacity(CHUNK),
        };
        let produced = produce(&mut writer);
        // Bytes written before a failure still go out, ahead of the error.
        let flushed = writer.flush();
        if let Err(error) = produced.and(flushed) {
            let _ = sender.blocking_send(Err(error));
        }
    });
    StreamReader::new(ReceiverStream::new(receiver))
}

struct ChannelWriter {
    sender: mpsc::Sender<io::Result<Bytes>>,
    buffer: Vec<u8>,
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(CHUNK),
        ));
        self.sender
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped reading"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn reader_bytes_arrive_in_order() {
        let data: Vec<u8> = (0..3 * CHUNK + 5).map(|i| (i % 253) as u8).collect();
        let mut reader = async_reader(io::Cursor::new(data.clone()));
        let mut received = Vec::new();
        reader.read_to_end(&mut received).await.unwrap();
        assert_eq!(received, data);
    }

    #[tokio::test]
    async fn reader_error_reaches_the_async_side() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "digest mismatch",
                ))
            }
        }
        let mut received = Vec::new();
        let error = async_reader(Failing)
            .read_to_end(&mut received)
            .await
            .unwrap_err();
        assert_eq!(error.to_string(), "digest mismatch");
    }

    #[tokio::test]
    async fn pipe_carries_writes_then_the_error() {
        let mut reader = async_pipe(|writer| {
            writer.write_all(b"partial")?;
            Err(io::Error::other("archive failed"))
        });
        let mut received = Vec::new();
        let error = reader.read_to_end(&mut received).await.unwrap_err();
        assert_eq!(received, b"partial");
        assert_eq!(error.to_string(), "archive failed");
    }
}
