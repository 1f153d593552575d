//! Layer and archive compression, recognized by content (magic bytes), not
//! by media type or file name: registries and archives mislabel it.
//!
//! gzip (flate2), zstd (the reference libzstd) and xz (the reference
//! liblzma) are read; anything else is taken as an uncompressed stream.

use std::io::{self, BufRead, BufReader, Read};

/// How a stream is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Not compressed.
    None,
    /// gzip (one or more members).
    Gzip,
    /// zstd (one or more frames).
    Zstd,
    /// xz (one or more streams).
    Xz,
}

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];

impl Compression {
    /// Recognize the compression from the first bytes of a stream.
    pub fn detect(head: &[u8]) -> Compression {
        if head.starts_with(GZIP_MAGIC) {
            Compression::Gzip
        } else if head.starts_with(ZSTD_MAGIC) {
            Compression::Zstd
        } else if head.starts_with(XZ_MAGIC) {
            Compression::Xz
        } else {
            Compression::None
        }
    }
}

/// Read up to `buf.len()` bytes, fewer only at the end of the stream.
pub(crate) fn read_head(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// `reader`, decompressed according to its first bytes. Also returns what
/// was found. Reading the result to its end reads all compressed members,
/// frames or streams that follow one another.
pub(crate) fn decompressed<'r>(
    mut reader: impl Read + 'r,
) -> io::Result<(Compression, Box<dyn Read + 'r>)> {
    let mut head = [0u8; 6];
    let n = read_head(&mut reader, &mut head)?;
    let compression = Compression::detect(&head[..n]);
    let stream = io::Cursor::new(head[..n].to_vec()).chain(reader);
    let decoded: Box<dyn Read + 'r> = match compression {
        Compression::None => Box::new(stream),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(stream)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(stream)?),
        Compression::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(stream)),
    };
    Ok((compression, decoded))
}

/// Whether the stream behind `reader` is compressed, without consuming it.
pub(crate) fn peek_compression<R: Read>(reader: &mut BufReader<R>) -> io::Result<Compression> {
    let head = reader.fill_buf()?;
    Ok(Compression::detect(head))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn round_trip(compressed: Vec<u8>, expected: Compression) {
        let (found, mut reader) = decompressed(&compressed[..]).unwrap();
        assert_eq!(found, expected);
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"hello hello hello");
    }

    #[test]
    fn detects_by_content() {
        let data = b"hello hello hello";
        round_trip(data.to_vec(), Compression::None);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(data).unwrap();
        round_trip(gz.finish().unwrap(), Compression::Gzip);
        round_trip(zstd::encode_all(&data[..], 1).unwrap(), Compression::Zstd);
        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 1);
        xz.write_all(data).unwrap();
        round_trip(xz.finish().unwrap(), Compression::Xz);
        // Shorter than any magic.
        let (found, _) = decompressed(&b"\x1f"[..]).unwrap();
        assert_eq!(found, Compression::None);
    }
}
