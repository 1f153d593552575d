//! A record kept as a small append-only log, for the IPAM records that
//! change on every allocation (a block's leases, an owner-index bucket).
//!
//! The file is lines `+KEY VALUE` (the pair is there) and `-KEY VALUE`
//! (it is gone), replayed in order. Changes are appended in place, so an
//! allocation creates no inode: on ext4 without a journal every inode
//! allocation skips the inodes freed in the last 12 hours
//! (`recently_deleted()` in `find_inode_bit`), which cost ~0.7 ms per
//! record when each change made a new link. A line counts once its `\n`
//! is written: a process killed in the middle of a write (the kernel
//! copies page by page) leaves complete lines and a torn tail, which is
//! ignored and cut off before the next append. When the lines are more
//! than twice the live pairs (plus [`SLACK`]), the log is rewritten with
//! the live pairs only, under a temp name and renamed into place.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::{malformed, IpamError};

/// Lines a log may carry beyond twice its live pairs before it is
/// rewritten: small logs are never rewritten for a handful of changes.
const SLACK: usize = 64;

/// A log's live pairs (key -> values), what is on disk, and the changes
/// of this transaction that are not.
#[derive(Debug, Default)]
pub(super) struct Log {
    pairs: BTreeMap<String, BTreeSet<String>>,
    live: usize,
    /// Length of the complete lines in the file; `None`: no file.
    pub(super) disk_len: Option<u64>,
    /// Lines in the file (for when to rewrite it).
    disk_lines: usize,
    /// The values on disk of each key this transaction changed, as they
    /// were: what to write is the difference to the live values. So a
    /// change and its inverse cancel out, and the order of the changes
    /// of a pair never matters.
    disk: BTreeMap<String, BTreeSet<String>>,
    /// Whether a change was made since the last write of all of it
    /// (cheaper than [`Log::is_dirty`], which compares).
    changed: bool,
}

impl Log {
    /// Parse a log's bytes read from `path`; `valid` says whether a
    /// pair may be in it. A torn last line (no `\n`) is left out.
    pub(super) fn parse(
        bytes: &[u8],
        path: &Path,
        valid: impl Fn(&str, &str) -> bool,
    ) -> Result<Log, IpamError> {
        let end = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let text = std::str::from_utf8(&bytes[..end])
            .map_err(|_| malformed(path, "a log that is not UTF-8"))?;
        let mut log = Log {
            disk_len: Some(end as u64),
            ..Log::default()
        };
        for (number, line) in text.lines().enumerate() {
            let bad = || {
                malformed(
                    path,
                    &format!(
                        "line {}: \"+KEY VALUE\" or \"-KEY VALUE\" expected, found {line:?}",
                        number + 1
                    ),
                )
            };
            let (sign, rest) = line.split_at_checked(1).ok_or_else(bad)?;
            let (key, value) = rest.split_once(' ').ok_or_else(bad)?;
            if key.is_empty() || value.is_empty() || value.contains(' ') || !valid(key, value) {
                return Err(bad());
            }
            match sign {
                "+" => {
                    log.insert(key, value);
                }
                "-" => {
                    log.take(key, value);
                }
                _ => return Err(bad()),
            }
            log.disk_lines += 1;
        }
        Ok(log)
    }

    /// A log with no file.
    pub(super) fn missing() -> Log {
        Log::default()
    }

    fn insert(&mut self, key: &str, value: &str) -> bool {
        let added = self
            .pairs
            .entry(key.to_owned())
            .or_default()
            .insert(value.to_owned());
        self.live += usize::from(added);
        added
    }

    fn take(&mut self, key: &str, value: &str) -> bool {
        let Some(values) = self.pairs.get_mut(key) else {
            return false;
        };
        let removed = values.remove(value);
        if values.is_empty() {
            self.pairs.remove(key);
        }
        self.live -= usize::from(removed);
        removed
    }

    /// Keep the values of `key` on disk before its first change.
    fn touch(&mut self, key: &str) {
        if !self.disk.contains_key(key) {
            let values = self.pairs.get(key).cloned().unwrap_or_default();
            self.disk.insert(key.to_owned(), values);
        }
    }

    /// Add a pair; whether it was not there.
    pub(super) fn add(&mut self, key: &str, value: &str) -> bool {
        if self
            .pairs
            .get(key)
            .is_some_and(|values| values.contains(value))
        {
            return false;
        }
        self.touch(key);
        self.changed = true;
        self.insert(key, value)
    }

    /// Remove a pair; whether it was there.
    pub(super) fn remove(&mut self, key: &str, value: &str) -> bool {
        if !self
            .pairs
            .get(key)
            .is_some_and(|values| values.contains(value))
        {
            return false;
        }
        self.touch(key);
        self.changed = true;
        self.take(key, value)
    }

    pub(super) fn values(&self, key: &str) -> Option<&BTreeSet<String>> {
        self.pairs.get(key)
    }

    /// The live pairs, in key order.
    pub(super) fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs
            .iter()
            .flat_map(|(key, values)| values.iter().map(move |v| (key.as_str(), v.as_str())))
    }

    /// Whether anything was changed since all was written (the changes
    /// may cancel out).
    pub(super) fn is_changed(&self) -> bool {
        self.changed
    }

    /// Whether a pair on disk was removed and that is not written yet.
    pub(super) fn has_removals(&self) -> bool {
        self.disk.iter().any(|(key, disk)| {
            self.pairs
                .get(key)
                .map_or(!disk.is_empty(), |live| !disk.is_subset(live))
        })
    }

    /// Whether what is live differs from what is written.
    pub(super) fn is_dirty(&self) -> bool {
        self.disk.iter().any(|(key, disk)| {
            self.pairs
                .get(key)
                .map_or(!disk.is_empty(), |live| live != disk)
        })
    }

    /// Whether writing the pending changes should rewrite the log instead
    /// of appending to it.
    pub(super) fn wants_rewrite(&self) -> bool {
        // A line per changed key, as a rule.
        self.disk_len.is_some() && self.disk_lines + self.disk.len() > 2 * self.live + SLACK
    }

    /// The lines of the additions (`Some(true)`), of the removals
    /// (`Some(false)`) or of both (`None`) not written yet, which then
    /// count as written.
    pub(super) fn take_pending(&mut self, which: Option<bool>) -> String {
        let mut text = String::new();
        let mut line = |sign: char, key: &str, value: &str| {
            text.push(sign);
            text.push_str(key);
            text.push(' ');
            text.push_str(value);
            text.push('\n');
        };
        let empty = BTreeSet::new();
        for (key, disk) in &mut self.disk {
            let live = self.pairs.get(key).unwrap_or(&empty);
            if which != Some(false) {
                for value in live.difference(disk) {
                    line('+', key, value);
                }
            }
            if which != Some(true) {
                for value in disk.difference(live) {
                    line('-', key, value);
                }
            }
            // With all of it written, `disk` is cleared below.
            match which {
                Some(true) => disk.extend(live.iter().cloned()),
                Some(false) => disk.retain(|value| live.contains(value)),
                None => {}
            }
        }
        if which.is_none() {
            self.disk.clear();
            self.changed = false;
        }
        text
    }

    /// The whole log as a rewrite writes it: the live pairs.
    pub(super) fn live_text(&self) -> String {
        let mut text = String::new();
        for (key, value) in self.pairs() {
            text.push('+');
            text.push_str(key);
            text.push(' ');
            text.push_str(value);
            text.push('\n');
        }
        text
    }

    /// Note that `text` was appended.
    pub(super) fn appended(&mut self, text: &str) {
        self.disk_len = Some(self.disk_len.unwrap_or(0) + text.len() as u64);
        self.disk_lines += text.lines().count();
    }

    /// Note that the file was rewritten with `text` (its live pairs),
    /// with nothing left pending.
    pub(super) fn rewritten(&mut self, text: &str) {
        self.disk.clear();
        self.changed = false;
        self.disk_len = Some(text.len() as u64);
        self.disk_lines = self.live;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Log, IpamError> {
        Log::parse(text.as_bytes(), Path::new("x/log"), |_, _| true)
    }

    #[test]
    fn lines_replay_in_order_and_a_torn_tail_is_ignored() {
        let log = parse("+a 1\n+a 2\n+b 3\n-a 1\n+c 4").unwrap();
        let pairs: Vec<_> = log.pairs().collect();
        assert_eq!(pairs, [("a", "2"), ("b", "3")]);
        // The torn "+c 4" is not counted in the length to append at.
        assert_eq!(log.disk_len, Some(20));
        assert_eq!(log.disk_lines, 4);
    }

    #[test]
    fn a_bad_line_names_the_file_and_the_line() {
        for text in ["+a 1\nnonsense\n", "*a 1\n", "+a\n", "+ 1\n", "+a 1 2\n"] {
            let error = parse(text).unwrap_err().to_string();
            assert!(error.contains("x/log"), "{error}");
            assert!(error.contains("line"), "{error}");
        }
        let refused = Log::parse(b"+a 1\n", Path::new("x/log"), |key, _| key != "a");
        assert!(refused.is_err());
    }

    #[test]
    fn a_change_and_its_inverse_cancel_out() {
        let mut log = parse("+a 1\n").unwrap();
        assert!(log.remove("a", "1"));
        assert!(log.add("a", "1"));
        assert!(!log.is_dirty());
        assert!(!log.add("a", "1"), "already there");
        assert!(log.add("b", "2"));
        assert!(log.remove("a", "1"));
        assert_eq!(log.take_pending(Some(true)), "+b 2\n");
        assert_eq!(log.take_pending(None), "-a 1\n");
        assert!(!log.is_dirty());
    }

    #[test]
    fn a_log_is_rewritten_once_mostly_dead() {
        let mut log = parse("").unwrap();
        for i in 0..SLACK {
            log.add(&i.to_string(), "o");
        }
        let text = log.take_pending(None);
        log.appended(&text);
        assert!(!log.wants_rewrite());
        for i in 0..SLACK {
            log.remove(&i.to_string(), "o");
        }
        assert!(log.wants_rewrite());
        assert_eq!(log.live_text(), "");
        log.rewritten("");
        assert!(!log.wants_rewrite() && !log.is_dirty());
        assert_eq!(log.pairs().count(), 0);
    }
}
