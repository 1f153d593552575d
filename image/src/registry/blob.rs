//! A blob streamed from the registry, cut off at its declared size.

use std::io::{self, Read};

use ureq::BodyReader;

use super::client::RegistryClient;

pub(crate) struct BlobReader<'a> {
    pub client: &'a RegistryClient,
    pub body: BodyReader<'static>,
    pub digest: String,
    /// Bytes still expected: a registry that sends more is not read
    /// further (the reader's caller sees the declared size at most and
    /// finds the digest wrong if anything was off).
    pub remaining: u64,
}

impl Read for BlobReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let wanted = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        match self.body.read(&mut buf[..wanted]) {
            Ok(read) => {
                self.remaining -= read as u64;
                Ok(read)
            }
            Err(error) => Err(self.client.body_error(&self.digest, error)),
        }
    }
}
