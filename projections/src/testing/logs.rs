//! Log sources: in memory, and in a file of length-prefixed records.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError, RwLock};

use bytes::Bytes;
use futures_util::future::BoxFuture;

use crate::ProjectionError;
use crate::source::{LogMessage, LogSource};

/// An in-memory log: positions are 1-based indexes. For tests; a long log
/// costs its full size in memory (see `FileLog` for benchmarks).
#[derive(Debug, Default)]
pub struct MemoryLog {
    messages: RwLock<Vec<Bytes>>,
}

impl MemoryLog {
    pub fn new() -> MemoryLog {
        MemoryLog::default()
    }

    pub fn from_events(events: impl IntoIterator<Item = Bytes>) -> MemoryLog {
        MemoryLog { messages: RwLock::new(events.into_iter().collect()) }
    }

    /// Appends stored bytes; returns their position.
    pub fn append(&self, payload: Bytes) -> u64 {
        let mut messages = self.messages.write().unwrap_or_else(PoisonError::into_inner);
        messages.push(payload);
        messages.len() as u64
    }

    pub fn len(&self) -> u64 {
        self.messages.read().unwrap_or_else(PoisonError::into_inner).len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The message at a position, for assertions.
    pub fn get(&self, position: u64) -> Option<Bytes> {
        let index = usize::try_from(position.checked_sub(1)?).ok()?;
        self.messages.read().unwrap_or_else(PoisonError::into_inner).get(index).cloned()
    }
}

impl LogSource for MemoryLog {
    fn read_from(&self, position: u64, max_messages: u32) -> BoxFuture<'_, Result<Vec<LogMessage>, ProjectionError>> {
        let messages = self.messages.read().unwrap_or_else(PoisonError::into_inner);
        let start = usize::try_from(position.max(1) - 1).unwrap_or(usize::MAX).min(messages.len());
        let end = start.saturating_add(usize::try_from(max_messages).unwrap_or(usize::MAX)).min(messages.len());
        let out = messages[start..end]
            .iter()
            .enumerate()
            .map(|(i, payload)| LogMessage { position: (start + i + 1) as u64, payload: payload.clone() })
            .collect();
        Box::pin(std::future::ready(Ok(out)))
    }

    fn last_position(&self) -> BoxFuture<'_, Result<u64, ProjectionError>> {
        Box::pin(std::future::ready(Ok(self.len())))
    }
}

/// Messages between two entries of a `FileLog`'s sparse index.
const FILE_INDEX_STRIDE: u64 = 4_096;
/// The largest record a `FileLog` accepts (a sealed batch of 10,000 gifts
/// is ~1.2 MB).
const FILE_RECORD_BYTES_MAX: u32 = 16 * 1024 * 1024;

/// A log in a file of length-prefixed records, read sequentially with a small
/// buffer: a long log at constant memory, for benchmarks. Its reads are
/// blocking file reads (fine for a benchmark, not for a server).
#[derive(Debug)]
pub struct FileLog {
    path: PathBuf,
    len: u64,
    /// File offset of positions 1, 1 + stride, 1 + 2 * stride, ...
    index: Vec<u64>,
    cursor: Mutex<FileCursor>,
}

#[derive(Debug)]
struct FileCursor {
    reader: BufReader<File>,
    /// The position the reader is at.
    next_position: u64,
}

fn io_err(e: std::io::Error) -> ProjectionError {
    ProjectionError::Source(e.to_string())
}

impl FileLog {
    /// Writes `events` to a new file at `path`; returns how many.
    pub fn write(path: &Path, events: impl IntoIterator<Item = Bytes>) -> std::io::Result<u64> {
        let mut out = BufWriter::new(File::create(path)?);
        let mut count = 0u64;
        for event in events {
            let len = u32::try_from(event.len())
                .ok()
                .filter(|l| *l <= FILE_RECORD_BYTES_MAX)
                .ok_or_else(|| std::io::Error::other("record too large"))?;
            out.write_all(&len.to_le_bytes())?;
            out.write_all(&event)?;
            count += 1;
        }
        out.flush()?;
        Ok(count)
    }

    /// Opens a file written by `write`, indexing it in one pass.
    pub fn open(path: &Path) -> Result<FileLog, ProjectionError> {
        let mut reader = BufReader::new(File::open(path).map_err(io_err)?);
        let mut index = Vec::new();
        let mut offset = 0u64;
        let mut len = 0u64;
        let mut header = [0u8; 4];
        loop {
            match reader.read_exact(&mut header) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(io_err(e)),
            }
            if len.is_multiple_of(FILE_INDEX_STRIDE) {
                index.push(offset);
            }
            let record = u32::from_le_bytes(header);
            reader.seek_relative(i64::from(record)).map_err(io_err)?;
            offset += 4 + u64::from(record);
            len += 1;
        }
        let reader = BufReader::new(File::open(path).map_err(io_err)?);
        Ok(FileLog {
            path: path.to_path_buf(),
            len,
            index,
            cursor: Mutex::new(FileCursor { reader, next_position: 1 }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn read_blocking(&self, position: u64, max: u32) -> Result<Vec<LogMessage>, ProjectionError> {
        let position = position.max(1);
        if position > self.len {
            return Ok(Vec::new());
        }
        let mut cursor = self.cursor.lock().unwrap_or_else(PoisonError::into_inner);
        if cursor.next_position != position {
            // Seek to the indexed position at or before, then skip forward.
            let slot = (position - 1) / FILE_INDEX_STRIDE;
            let offset = self.index.get(usize::try_from(slot).unwrap_or(usize::MAX)).copied().unwrap_or(0);
            cursor.reader.seek(SeekFrom::Start(offset)).map_err(io_err)?;
            cursor.next_position = slot * FILE_INDEX_STRIDE + 1;
            let mut header = [0u8; 4];
            while cursor.next_position < position {
                cursor.reader.read_exact(&mut header).map_err(io_err)?;
                cursor.reader.seek_relative(i64::from(u32::from_le_bytes(header))).map_err(io_err)?;
                cursor.next_position += 1;
            }
        }
        let count = u64::from(max).min(self.len - position + 1);
        let mut out = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
        let mut header = [0u8; 4];
        for _ in 0..count {
            cursor.reader.read_exact(&mut header).map_err(io_err)?;
            let record = u32::from_le_bytes(header);
            if record > FILE_RECORD_BYTES_MAX {
                return Err(ProjectionError::Source("corrupt log file".into()));
            }
            let mut payload = vec![0u8; usize::try_from(record).unwrap_or(0)];
            cursor.reader.read_exact(&mut payload).map_err(io_err)?;
            out.push(LogMessage { position: cursor.next_position, payload: Bytes::from(payload) });
            cursor.next_position += 1;
        }
        Ok(out)
    }
}

impl LogSource for FileLog {
    fn read_from(&self, position: u64, max_messages: u32) -> BoxFuture<'_, Result<Vec<LogMessage>, ProjectionError>> {
        Box::pin(std::future::ready(self.read_blocking(position, max_messages)))
    }

    fn last_position(&self) -> BoxFuture<'_, Result<u64, ProjectionError>> {
        Box::pin(std::future::ready(Ok(self.len)))
    }
}
