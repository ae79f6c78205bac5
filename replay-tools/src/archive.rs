//! The export file: the whole log, message by message, gzip-compressed.
//!
//! Layout of the decompressed bytes (integers little-endian):
//!
//! ```text
//! file    := MAGIC header_len:u32 header_json record* trailer
//! MAGIC   := "HBLOG" 0x00 0x01 0x00          (format version 1)
//! record  := 0x01 position:u64 timestamp_ns:i64
//!            subject_len:u16 subject
//!            header_count:u16 (name_len:u16 name value_len:u32 value)*
//!            payload_len:u32 payload
//! trailer := 0x00 count:u64 last_position:u64
//! ```
//!
//! `header_json` says what was exported (stream, positions, time, server).
//! Records are in log order, positions dense from the first. A message's
//! NATS headers are kept verbatim (sorted by name, each value in order), the
//! payload is the stored bytes. The trailer makes a truncated file
//! detectable; gzip's CRC catches damage to the compressed bytes, and the
//! events' own hash chains catch any change of their content (checked by
//! import and audit, not here: this module only frames bytes).

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};

pub const MAGIC: &[u8; 8] = b"HBLOG\x00\x01\x00";
/// A subject, a header name, a header value or a payload longer than this
/// is refused (a corrupt length would otherwise allocate gigabytes).
pub const PAYLOAD_BYTES_MAX: u32 = 64 * 1024 * 1024;
pub const HEADERS_PER_MESSAGE_MAX: u16 = 256;
const HEADER_JSON_BYTES_MAX: u32 = 1024 * 1024;
const TAG_RECORD: u8 = 1;
const TAG_TRAILER: u8 = 0;
/// Buffer between the compressor and the file.
const FILE_BUFFER_BYTES: usize = 1024 * 1024;

/// What the file says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveHeader {
    /// `halobuzz-log`.
    pub format: String,
    pub version: u32,
    pub stream: String,
    /// The first position exported (1 for a whole log).
    pub first_position: u64,
    /// The log's last position when the export started: the file holds
    /// every message up to it.
    pub last_position: u64,
    pub exported_at: chrono::DateTime<chrono::Utc>,
    pub server_version: String,
}

/// One message of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedMessage {
    pub position: u64,
    /// When the source server stored it (nanoseconds since the epoch); an
    /// import cannot restore it (JetStream stamps its own time).
    pub timestamp_ns: i64,
    pub subject: String,
    /// NATS headers, sorted by name.
    pub headers: Vec<(String, String)>,
    pub payload: Bytes,
}

impl ArchivedMessage {
    pub fn msg_id(&self) -> Option<&str> {
        self.headers.iter().find(|(name, _)| name.eq_ignore_ascii_case("Nats-Msg-Id")).map(|(_, v)| v.as_str())
    }
}

/// The trailer: how many records, ending where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    pub count: u64,
    pub last_position: u64,
}

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{0}")]
    Format(String),
}

/// Writes an export file: to `<out>.partial`, renamed to `out` by `finish`,
/// so that an interrupted export never leaves a file that looks whole.
#[derive(Debug)]
pub struct ArchiveWriter {
    out: PathBuf,
    partial: PathBuf,
    encoder: GzEncoder<BufWriter<File>>,
    count: u64,
    last_position: u64,
    scratch: Vec<u8>,
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Io { path: path.display().to_string(), source }
}

/// Creates (or truncates) `path`, readable and writable by its owner only:
/// an export holds every user's email and password hash. A file left by an
/// earlier run is narrowed too (the mode of `open` applies only to a new
/// file).
fn create_private(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

impl ArchiveWriter {
    pub fn create(out: &Path, header: &ArchiveHeader) -> Result<ArchiveWriter, ArchiveError> {
        let mut partial = out.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let file = create_private(&partial).map_err(io_error(&partial))?;
        // Fast compression: the log is JSON and shrinks well even so, and
        // the drill's time goal counts the export.
        let mut encoder = GzEncoder::new(BufWriter::with_capacity(FILE_BUFFER_BYTES, file), Compression::fast());
        let json = serde_json::to_vec(header).map_err(|e| ArchiveError::Format(e.to_string()))?;
        encoder.write_all(MAGIC).map_err(io_error(&partial))?;
        encoder.write_all(&len_u32(json.len())?.to_le_bytes()).map_err(io_error(&partial))?;
        encoder.write_all(&json).map_err(io_error(&partial))?;
        Ok(ArchiveWriter {
            out: out.to_path_buf(),
            partial,
            encoder,
            count: 0,
            last_position: 0,
            scratch: Vec::with_capacity(4096),
        })
    }

    pub fn write(&mut self, message: &ArchivedMessage) -> Result<(), ArchiveError> {
        let b = &mut self.scratch;
        b.clear();
        b.push(TAG_RECORD);
        b.extend_from_slice(&message.position.to_le_bytes());
        b.extend_from_slice(&message.timestamp_ns.to_le_bytes());
        put_str16(b, &message.subject)?;
        let count = u16::try_from(message.headers.len())
            .ok()
            .filter(|c| *c <= HEADERS_PER_MESSAGE_MAX)
            .ok_or_else(|| ArchiveError::Format(format!("position {}: too many headers", message.position)))?;
        b.extend_from_slice(&count.to_le_bytes());
        for (name, value) in &message.headers {
            put_str16(b, name)?;
            b.extend_from_slice(&len_u32(value.len())?.to_le_bytes());
            b.extend_from_slice(value.as_bytes());
        }
        b.extend_from_slice(&len_u32(message.payload.len())?.to_le_bytes());
        self.encoder.write_all(b).map_err(io_error(&self.partial))?;
        self.encoder.write_all(&message.payload).map_err(io_error(&self.partial))?;
        self.count += 1;
        self.last_position = message.position;
        Ok(())
    }

    /// Writes the trailer, flushes to disk and renames the file into place.
    pub fn finish(mut self) -> Result<(u64, PathBuf), ArchiveError> {
        let mut b = vec![TAG_TRAILER];
        b.extend_from_slice(&self.count.to_le_bytes());
        b.extend_from_slice(&self.last_position.to_le_bytes());
        self.encoder.write_all(&b).map_err(io_error(&self.partial))?;
        let writer = self.encoder.finish().map_err(io_error(&self.partial))?;
        let file = writer
            .into_inner()
            .map_err(|e| ArchiveError::Io { path: self.partial.display().to_string(), source: e.into_error() })?;
        file.sync_all().map_err(io_error(&self.partial))?;
        let bytes = file.metadata().map_err(io_error(&self.partial))?.len();
        std::fs::rename(&self.partial, &self.out).map_err(io_error(&self.out))?;
        Ok((bytes, self.out))
    }
}

fn len_u32(len: usize) -> Result<u32, ArchiveError> {
    u32::try_from(len)
        .ok()
        .filter(|l| *l <= PAYLOAD_BYTES_MAX)
        .ok_or_else(|| ArchiveError::Format(format!("a field of {len} bytes is too long")))
}

fn put_str16(b: &mut Vec<u8>, s: &str) -> Result<(), ArchiveError> {
    let len = u16::try_from(s.len()).map_err(|_| ArchiveError::Format(format!("{s:.40}...: too long")))?;
    b.extend_from_slice(&len.to_le_bytes());
    b.extend_from_slice(s.as_bytes());
    Ok(())
}

/// What `ArchiveReader::next_item` found.
#[derive(Debug)]
pub enum Item {
    Message(ArchivedMessage),
    /// The end of the file, as written by a finished export.
    End(Trailer),
}

/// Reads an export file in order.
#[derive(Debug)]
pub struct ArchiveReader {
    path: PathBuf,
    reader: BufReader<MultiGzDecoder<BufReader<File>>>,
    header: ArchiveHeader,
    count: u64,
    last_position: u64,
    ended: bool,
}

impl ArchiveReader {
    pub fn open(path: &Path) -> Result<ArchiveReader, ArchiveError> {
        let file = File::open(path).map_err(io_error(path))?;
        let mut reader = BufReader::with_capacity(
            FILE_BUFFER_BYTES,
            MultiGzDecoder::new(BufReader::with_capacity(FILE_BUFFER_BYTES, file)),
        );
        let mut magic = [0u8; 8];
        reader.read_exact(&mut magic).map_err(|e| read_error(path, e, "its first bytes"))?;
        if &magic != MAGIC {
            return Err(ArchiveError::Format(format!("{}: not a HaloBuzz log export (bad magic)", path.display())));
        }
        let len = read_u32(&mut reader).map_err(|e| read_error(path, e, "the header"))?;
        if len > HEADER_JSON_BYTES_MAX {
            return Err(ArchiveError::Format(format!("{}: header of {len} bytes", path.display())));
        }
        let mut json = vec![0u8; len as usize];
        reader.read_exact(&mut json).map_err(|e| read_error(path, e, "the header"))?;
        let header: ArchiveHeader = serde_json::from_slice(&json)
            .map_err(|e| ArchiveError::Format(format!("{}: unreadable header: {e}", path.display())))?;
        if header.format != "halobuzz-log" || header.version != 1 {
            return Err(ArchiveError::Format(format!(
                "{}: format {} version {} is not halobuzz-log version 1",
                path.display(),
                header.format,
                header.version
            )));
        }
        Ok(ArchiveReader { path: path.to_path_buf(), reader, header, count: 0, last_position: 0, ended: false })
    }

    pub fn header(&self) -> &ArchiveHeader {
        &self.header
    }

    /// The next message, or the trailer (checked against what was read).
    pub fn next_item(&mut self) -> Result<Item, ArchiveError> {
        if self.ended {
            return Err(ArchiveError::Format("read past the end".into()));
        }
        let what = format!("after position {}", self.last_position);
        let tag = read_u8(&mut self.reader).map_err(|e| read_error(&self.path, e, &what))?;
        match tag {
            TAG_TRAILER => {
                let count = read_u64(&mut self.reader).map_err(|e| read_error(&self.path, e, "the trailer"))?;
                let last_position = read_u64(&mut self.reader).map_err(|e| read_error(&self.path, e, "the trailer"))?;
                self.ended = true;
                if count != self.count || last_position != self.last_position {
                    return Err(ArchiveError::Format(format!(
                        "{}: the trailer says {count} messages up to {last_position}, the file holds {} up to {}",
                        self.path.display(),
                        self.count,
                        self.last_position
                    )));
                }
                Ok(Item::End(Trailer { count, last_position }))
            }
            TAG_RECORD => {
                let message = self.read_record().map_err(|e| read_error(&self.path, e, &what))?;
                self.count += 1;
                self.last_position = message.position;
                Ok(Item::Message(message))
            }
            other => Err(ArchiveError::Format(format!(
                "{}: unknown record tag {other} after position {}",
                self.path.display(),
                self.last_position
            ))),
        }
    }

    fn read_record(&mut self) -> io::Result<ArchivedMessage> {
        let r = &mut self.reader;
        let position = read_u64(r)?;
        let timestamp_ns = i64::from_le_bytes(read_array(r)?);
        let subject = read_str16(r)?;
        let count = u16::from_le_bytes(read_array(r)?);
        if count > HEADERS_PER_MESSAGE_MAX {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("{count} headers")));
        }
        let mut headers = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let name = read_str16(r)?;
            let len = read_u32(r)?;
            let value = read_exact_vec(r, len)?;
            let value =
                String::from_utf8(value).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            headers.push((name, value));
        }
        let len = read_u32(r)?;
        let payload = Bytes::from(read_exact_vec(r, len)?);
        Ok(ArchivedMessage { position, timestamp_ns, subject, headers, payload })
    }
}

fn read_error(path: &Path, e: io::Error, what: &str) -> ArchiveError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        ArchiveError::Format(format!(
            "{}: the file ends inside {what}: truncated (an interrupted export?)",
            path.display()
        ))
    } else {
        ArchiveError::Format(format!("{}: cannot read {what}: {e}", path.display()))
    }
}

fn read_array<const N: usize>(r: &mut impl Read) -> io::Result<[u8; N]> {
    let mut b = [0u8; N];
    r.read_exact(&mut b)?;
    Ok(b)
}

fn read_u8(r: &mut impl Read) -> io::Result<u8> {
    Ok(read_array::<1>(r)?[0])
}

fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    Ok(u32::from_le_bytes(read_array(r)?))
}

fn read_u64(r: &mut impl Read) -> io::Result<u64> {
    Ok(u64::from_le_bytes(read_array(r)?))
}

fn read_exact_vec(r: &mut impl Read, len: u32) -> io::Result<Vec<u8>> {
    if len > PAYLOAD_BYTES_MAX {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("a field of {len} bytes")));
    }
    let mut v = vec![0u8; len as usize];
    r.read_exact(&mut v)?;
    Ok(v)
}

fn read_str16(r: &mut impl Read) -> io::Result<String> {
    let len = u16::from_le_bytes(read_array(r)?);
    let v = read_exact_vec(r, u32::from(len))?;
    String::from_utf8(v).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(position: u64) -> ArchivedMessage {
        ArchivedMessage {
            position,
            timestamp_ns: 1_700_000_000_000_000_000 + i64::try_from(position).unwrap_or(0),
            subject: format!("hb.ledger.{position}"),
            headers: vec![("Nats-Msg-Id".into(), format!("m-{position}"))],
            payload: Bytes::from(format!("{{\"n\":{position}}}")),
        }
    }

    fn header() -> ArchiveHeader {
        ArchiveHeader {
            format: "halobuzz-log".into(),
            version: 1,
            stream: "HALOBUZZ".into(),
            first_position: 1,
            last_position: 3,
            exported_at: chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default(),
            server_version: "2.15.1".into(),
        }
    }

    #[test]
    fn a_file_reads_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.hblog.gz");
        let mut writer = ArchiveWriter::create(&path, &header()).unwrap();
        for p in 1..=3 {
            writer.write(&message(p)).unwrap();
        }
        let (bytes, _) = writer.finish().unwrap();
        assert!(bytes > 0);
        let mut reader = ArchiveReader::open(&path).unwrap();
        assert_eq!(reader.header(), &header());
        for p in 1..=3 {
            match reader.next_item().unwrap() {
                Item::Message(m) => {
                    assert_eq!(m, message(p));
                    assert_eq!(m.msg_id(), Some(format!("m-{p}").as_str()));
                }
                Item::End(_) => panic!("ended early"),
            }
        }
        assert!(matches!(reader.next_item().unwrap(), Item::End(Trailer { count: 3, last_position: 3 })));
    }

    #[test]
    fn an_export_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.hblog.gz");
        // A world-readable file left at the partial path by an earlier run.
        std::fs::write(dir.path().join("log.hblog.gz.partial"), b"old").unwrap();
        std::fs::set_permissions(dir.path().join("log.hblog.gz.partial"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let mut writer = ArchiveWriter::create(&path, &header()).unwrap();
        writer.write(&message(1)).unwrap();
        writer.finish().unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{mode:o}");
    }

    #[test]
    fn a_truncated_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.hblog.gz");
        let mut writer = ArchiveWriter::create(&path, &header()).unwrap();
        for p in 1..=3 {
            writer.write(&message(p)).unwrap();
        }
        writer.finish().unwrap();
        // Decompress, cut the trailer off, compress again.
        let mut raw = Vec::new();
        MultiGzDecoder::new(File::open(&path).unwrap()).read_to_end(&mut raw).unwrap();
        raw.truncate(raw.len() - 17);
        let mut encoder = GzEncoder::new(File::create(&path).unwrap(), Compression::fast());
        encoder.write_all(&raw).unwrap();
        encoder.finish().unwrap();
        let mut reader = ArchiveReader::open(&path).unwrap();
        for _ in 1..=3 {
            assert!(matches!(reader.next_item().unwrap(), Item::Message(_)));
        }
        let error = reader.next_item().unwrap_err().to_string();
        assert!(error.contains("truncated"), "{error}");
    }
}
