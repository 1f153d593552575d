//! A record kept as a small append-only log, for the IPAM records of
//! variable length that change on every allocation: the owner-index
//! buckets.
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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{malformed, IpamError};

/// Lines a log may carry beyond twice its live pairs before it is
/// rewritten: small logs are never rewritten for a handful of changes.
const SLACK: usize = 64;

/// The values of one key, sorted: a key has a few (an owner's entries),
/// and a vector of them is cheaper to make, search and drop than a
/// B-tree set (a node of its own for each key).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Values(Vec<String>);

impl Values {
    fn contains(&self, value: &str) -> bool {
        self.0.binary_search_by(|v| v.as_str().cmp(value)).is_ok()
    }

    fn insert(&mut self, value: &str) -> bool {
        match self.0.binary_search_by(|v| v.as_str().cmp(value)) {
            Ok(_) => false,
            Err(at) => {
                self.0.insert(at, value.to_owned());
                true
            }
        }
    }

    fn remove(&mut self, value: &str) -> bool {
        match self.0.binary_search_by(|v| v.as_str().cmp(value)) {
            Ok(at) => {
                self.0.remove(at);
                true
            }
            Err(_) => false,
        }
    }

    pub(super) fn iter(&self) -> std::slice::Iter<'_, String> {
        self.0.iter()
    }

    /// The values not in `other`.
    fn difference<'a>(&'a self, other: &'a Values) -> impl Iterator<Item = &'a String> {
        self.0.iter().filter(move |v| !other.contains(v))
    }
}

impl<'a> IntoIterator for &'a Values {
    type Item = &'a String;
    type IntoIter = std::slice::Iter<'a, String>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Whether a pair may be in a log (checked when its key is read).
pub(super) type Valid = fn(&str, &str) -> bool;

/// A log as far as a transaction read it: its complete lines, the keys
/// asked for (replayed from their lines only, so that a read costs a scan
/// of the lines and not a parse of every pair), and the changes of this
/// transaction that are not written yet.
#[derive(Debug)]
pub(super) struct Log {
    path: PathBuf,
    valid: Valid,
    /// The complete lines of the file.
    text: String,
    /// Length of the complete lines in the file; `None`: no file.
    pub(super) disk_len: Option<u64>,
    /// Lines in the file (for when to rewrite it).
    disk_lines: usize,
    /// Live pairs: the file's `+` lines less its `-` lines (each `-`
    /// removes a pair a `+` added), and this transaction's changes.
    live: usize,
    /// The keys read or changed: their live values and their values on
    /// disk. What to write is the difference, so a change and its
    /// inverse cancel out, and the order of the changes of a pair never
    /// matters.
    keys: BTreeMap<String, (Values, Values)>,
    /// Whether a change was made since the last write of all of it
    /// (cheaper than [`Log::is_dirty`], which compares).
    changed: bool,
}

impl Log {
    /// A log's bytes read from `path` (its lines are checked when read,
    /// see [`Log::key`] and [`Log::pairs`]). A torn last line (no `\n`)
    /// is left out.
    pub(super) fn parse(bytes: Vec<u8>, path: &Path, valid: Valid) -> Result<Log, IpamError> {
        let mut bytes = bytes;
        let end = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        bytes.truncate(end);
        let text =
            String::from_utf8(bytes).map_err(|_| malformed(path, "a log that is not UTF-8"))?;
        let mut log = Log {
            disk_len: Some(end as u64),
            ..Log::missing(path, valid)
        };
        // Counted by std's searches (optimised code even in a debug
        // build), not line by line: the lines are checked where they are
        // read, a key's when it is asked for, all of them by `pairs`.
        log.disk_lines = text.matches('\n').count();
        let removed = text.matches("\n-").count() + usize::from(text.starts_with('-'));
        log.live = log.disk_lines.saturating_sub(2 * removed);
        log.text = text;
        Ok(log)
    }

    /// A log with no file.
    pub(super) fn missing(path: &Path, valid: Valid) -> Log {
        Log {
            path: path.to_owned(),
            valid,
            text: String::new(),
            disk_len: None,
            disk_lines: 0,
            live: 0,
            keys: BTreeMap::new(),
            changed: false,
        }
    }

    fn bad_line(&self, number: usize, line: &str) -> IpamError {
        malformed(
            &self.path,
            &format!(
                "line {}: \"+KEY VALUE\" or \"-KEY VALUE\" expected, found {line:?}",
                number + 1
            ),
        )
    }

    /// The values of `key` (live, on disk), replayed from its lines the
    /// first time.
    fn key(&mut self, key: &str) -> Result<&mut (Values, Values), IpamError> {
        if !self.keys.contains_key(key) {
            let mut values = Values::default();
            // The key's lines found by std's substring search (optimised
            // code even in a debug build): a match counts where it follows
            // a line's sign and is followed by the space.
            let text = self.text.as_str();
            for (at, _) in text.match_indices(key) {
                let bytes = text.as_bytes();
                let starts_line = at == 1 || (at >= 2 && bytes[at - 2] == b'\n');
                if !starts_line || !matches!(bytes[at - 1], b'+' | b'-') {
                    continue;
                }
                let Some(rest) = text[at + key.len()..].strip_prefix(' ') else {
                    continue;
                };
                let value = &rest[..rest.find('\n').unwrap_or(rest.len())];
                if !(self.valid)(key, value) {
                    let number = text[..at].matches('\n').count();
                    let line = &text[at - 1..at + key.len() + 1 + value.len()];
                    return Err(self.bad_line(number, line));
                }
                if bytes[at - 1] == b'+' {
                    values.insert(value);
                } else {
                    values.remove(value);
                }
            }
            self.keys.insert(key.to_owned(), (values.clone(), values));
        }
        self.keys
            .get_mut(key)
            .ok_or_else(|| malformed(&self.path, "a key that could not be read"))
    }

    /// The live values of `key`.
    pub(super) fn values(&mut self, key: &str) -> Result<&Values, IpamError> {
        Ok(&self.key(key)?.0)
    }

    /// Add a pair; whether it was not there.
    pub(super) fn add(&mut self, key: &str, value: &str) -> Result<bool, IpamError> {
        let added = self.key(key)?.0.insert(value);
        if added {
            self.live += 1;
            self.changed = true;
        }
        Ok(added)
    }

    /// Remove a pair; whether it was there.
    pub(super) fn remove(&mut self, key: &str, value: &str) -> Result<bool, IpamError> {
        let removed = self.key(key)?.0.remove(value);
        if removed {
            self.live -= 1;
            self.changed = true;
        }
        Ok(removed)
    }

    /// Every live pair, in key order; every line checked.
    pub(super) fn pairs(&self) -> Result<Vec<(String, String)>, IpamError> {
        let mut all: BTreeMap<&str, Values> = BTreeMap::new();
        for (number, line) in self.text.lines().enumerate() {
            let (sign, key, value) = split_line(line).ok_or_else(|| self.bad_line(number, line))?;
            if key.is_empty() || value.is_empty() || !(self.valid)(key, value) {
                return Err(self.bad_line(number, line));
            }
            let values = all.entry(key).or_default();
            if sign == '+' {
                values.insert(value);
            } else {
                values.remove(value);
            }
        }
        for (key, (live, _)) in &self.keys {
            all.insert(key, live.clone());
        }
        Ok(all
            .into_iter()
            .flat_map(|(key, values)| {
                values
                    .0
                    .into_iter()
                    .map(move |value| (key.to_owned(), value))
            })
            .collect())
    }

    /// Whether anything was changed since all was written (the changes
    /// may cancel out).
    pub(super) fn is_changed(&self) -> bool {
        self.changed
    }

    /// Whether a pair on disk was removed and that is not written yet.
    pub(super) fn has_removals(&self) -> bool {
        self.keys
            .values()
            .any(|(live, disk)| disk.difference(live).next().is_some())
    }

    /// Whether what is live differs from what is written.
    pub(super) fn is_dirty(&self) -> bool {
        self.keys.values().any(|(live, disk)| live != disk)
    }

    /// Whether writing the pending changes should rewrite the log instead
    /// of appending to it.
    pub(super) fn wants_rewrite(&self) -> bool {
        // A line per changed key, as a rule.
        self.disk_len.is_some() && self.disk_lines + self.keys.len() > 2 * self.live + SLACK
    }

    /// The lines of the additions (`Some(true)`), of the removals
    /// (`Some(false)`) or of both (`None`) not written yet, which then
    /// count as written (see [`Log::appended`]).
    pub(super) fn take_pending(&mut self, which: Option<bool>) -> String {
        let mut text = String::new();
        let mut line = |sign: char, key: &str, value: &str| {
            text.push(sign);
            text.push_str(key);
            text.push(' ');
            text.push_str(value);
            text.push('\n');
        };
        for (key, (live, disk)) in &mut self.keys {
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
            // With all of it written, the keys are read again from the
            // lines.
            match which {
                Some(true) => {
                    let added: Vec<String> = live.difference(disk).cloned().collect();
                    for value in added {
                        disk.insert(&value);
                    }
                }
                Some(false) => disk.0.retain(|value| live.contains(value)),
                None => {}
            }
        }
        if which.is_none() {
            self.keys.clear();
            self.changed = false;
        }
        text
    }

    /// The whole log as a rewrite writes it: the live pairs.
    pub(super) fn live_text(&self) -> Result<String, IpamError> {
        let mut text = String::new();
        for (key, value) in self.pairs()? {
            text.push('+');
            text.push_str(&key);
            text.push(' ');
            text.push_str(&value);
            text.push('\n');
        }
        Ok(text)
    }

    /// Note that `text` (from [`Log::take_pending`]) was appended.
    pub(super) fn appended(&mut self, text: &str) {
        self.disk_len = Some(self.disk_len.unwrap_or(0) + text.len() as u64);
        self.disk_lines += text.lines().count();
        self.text.push_str(text);
    }

    /// Note that the file was rewritten with `text` (its live pairs),
    /// with nothing left pending.
    pub(super) fn rewritten(&mut self, text: String) {
        self.keys.clear();
        self.changed = false;
        self.disk_len = Some(text.len() as u64);
        self.disk_lines = self.live;
        self.text = text;
    }
}

/// A line's sign, key and value, if it has the form `+KEY VALUE` or
/// `-KEY VALUE` (no space in either).
fn split_line(line: &str) -> Option<(char, &str, &str)> {
    let sign = match line.as_bytes().first()? {
        b'+' => '+',
        b'-' => '-',
        _ => return None,
    };
    let (key, value) = line[1..].split_once(' ')?;
    (!value.contains(' ')).then_some((sign, key, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(_: &str, _: &str) -> bool {
        true
    }

    fn parse(text: &str) -> Result<Log, IpamError> {
        Log::parse(text.as_bytes().to_vec(), Path::new("x/log"), any)
    }

    #[test]
    fn lines_replay_in_order_and_a_torn_tail_is_ignored() {
        let mut log = parse("+a 1\n+a 2\n+b 3\n-a 1\n+c 4").unwrap();
        let pairs = log.pairs().unwrap();
        assert_eq!(pairs, [("a".into(), "2".into()), ("b".into(), "3".into())]);
        assert_eq!(log.values("a").unwrap().iter().collect::<Vec<_>>(), ["2"]);
        assert!(log.values("c").unwrap().iter().next().is_none());
        // The torn "+c 4" is not counted in the length to append at.
        assert_eq!(log.disk_len, Some(20));
        assert_eq!((log.disk_lines, log.live), (4, 2));
    }

    #[test]
    fn a_bad_line_names_the_file_and_the_line() {
        for text in ["+a 1\nnonsense\n", "*a 1\n", "+a\n", "+ 1\n", "+a 1 2\n"] {
            let error = parse(text).unwrap().pairs().unwrap_err().to_string();
            assert!(error.contains("x/log"), "{error}");
            assert!(error.contains("line"), "{error}");
        }
        // A pair `valid` refuses, when its key is read.
        let refuse_a: Valid = |key, _| key != "a";
        let mut log = Log::parse(b"+b 1\n+a 1\n".to_vec(), Path::new("x/log"), refuse_a).unwrap();
        assert!(log.values("b").is_ok());
        let error = log.values("a").unwrap_err().to_string();
        assert!(
            error.contains("x/log") && error.contains("line 2"),
            "{error}"
        );
        assert!(log.pairs().is_err());
    }

    #[test]
    fn a_change_and_its_inverse_cancel_out() {
        let mut log = parse("+a 1\n").unwrap();
        assert!(log.remove("a", "1").unwrap());
        assert!(log.add("a", "1").unwrap());
        assert!(!log.is_dirty());
        assert!(!log.add("a", "1").unwrap(), "already there");
        assert!(log.add("b", "2").unwrap());
        assert!(log.remove("a", "1").unwrap());
        assert!(log.has_removals());
        assert_eq!(log.take_pending(Some(true)), "+b 2\n");
        assert_eq!(log.take_pending(None), "-a 1\n");
        assert!(!log.is_dirty() && !log.is_changed());
    }

    #[test]
    fn a_log_is_rewritten_once_mostly_dead() {
        let mut log = parse("").unwrap();
        for i in 0..SLACK {
            log.add(&i.to_string(), "o").unwrap();
        }
        let text = log.take_pending(None);
        log.appended(&text);
        assert!(!log.wants_rewrite());
        for i in 0..SLACK {
            log.remove(&i.to_string(), "o").unwrap();
        }
        assert!(log.wants_rewrite());
        assert_eq!(log.live_text().unwrap(), "");
        log.rewritten(String::new());
        assert!(!log.wants_rewrite() && !log.is_dirty());
        assert_eq!(log.pairs().unwrap(), []);
    }
}
