//! Dead letters: every payload or item refused, with its reasons, kept in
//! the store's database (tree `dead_letters`), newest first, within a cap in
//! stored bytes as well as in count.
//!
//! A refusal costs its sender nothing, so what a dead letter keeps must be
//! bounded by us, not by the payload: the excerpt is at most
//! [`EXCERPT_BYTES`], at most [`MAX_REASONS`] reasons of at most
//! [`REASON_CHARS`] characters are kept (the labels stay complete, so the
//! counts by reason do not change), and once the tree holds more than its
//! byte cap the oldest letters go. Reads come in pages of at most
//! [`MAX_PAGE`] letters and [`PAGE_BYTES`] bytes, with a cursor to the next.

use crate::store::StoreError;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Most dead letters kept, whatever their size; the oldest go first.
const DEAD_LETTER_CAP: u64 = 100_000;
/// Longest excerpt of a payload kept, bytes (cut at a character boundary).
pub const EXCERPT_BYTES: usize = 512;
/// Most reasons kept in one dead letter; the rest are summed up in one more line.
pub const MAX_REASONS: usize = 20;
/// Longest reason kept, characters (a reason quotes the refused input; the
/// middle goes, see `elide`).
pub const REASON_CHARS: usize = 240;
/// Most dead letters one page of the API returns.
pub const MAX_PAGE: usize = 1000;
/// Most bytes of dead letters one page of the API returns (stored form).
pub const PAGE_BYTES: usize = 1 << 20;

/// A payload or items refused, with the reasons.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Store id (grows with time).
    pub id: u64,
    /// When it arrived.
    pub received_at: DateTime<Utc>,
    /// MQTT topic.
    pub topic: String,
    /// Zone, if known.
    pub zone: Option<String>,
    /// Agent, if known.
    pub agent: Option<String>,
    /// Sequence number, if known.
    pub seq: Option<u64>,
    /// The reasons, human-readable (at most [`MAX_REASONS`], each cut to [`REASON_CHARS`]).
    pub reasons: Vec<String>,
    /// Metric labels of every reason, none left out.
    pub labels: Vec<String>,
    /// Whole batch refused (true) or only some items (false).
    pub whole_batch: bool,
    /// Payload size, bytes.
    pub payload_bytes: usize,
    /// Start of the payload, lossy UTF-8, at most [`EXCERPT_BYTES`].
    pub excerpt: String,
}

/// The start of a payload, as lossy UTF-8, at most [`EXCERPT_BYTES`] bytes.
pub fn excerpt(payload: &[u8]) -> String {
    let text = String::from_utf8_lossy(&payload[..payload.len().min(EXCERPT_BYTES)]);
    cut_bytes(&text, EXCERPT_BYTES).to_owned()
}

/// `s` cut to at most `max` bytes at a character boundary.
fn cut_bytes(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `s` if it has at most `max` characters, else its start and its end
/// around a "…": a reason quotes the input in the middle ("reading 0: value
/// 1000…000 is outside ±1e15") and says what was wrong at the end.
fn elide(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        return s.to_owned();
    }
    let tail = max / 3;
    let head = max - tail - 1;
    let start: String = s.chars().take(head).collect();
    let end: String = s.chars().skip(n - tail).collect();
    format!("{start}…{end}")
}

impl DeadLetter {
    /// The letter as stored: reasons and excerpt cut to their bounds.
    fn bounded(mut self) -> Self {
        let total = self.reasons.len();
        self.reasons.truncate(MAX_REASONS);
        for r in &mut self.reasons {
            *r = elide(r, REASON_CHARS);
        }
        if total > MAX_REASONS {
            self.reasons
                .push(format!("… and {} more reasons (see labels)", total - MAX_REASONS));
        }
        self.excerpt = cut_bytes(&self.excerpt, EXCERPT_BYTES).to_owned();
        self.topic = self.topic.chars().take(256).collect();
        self
    }
}

/// One page of dead letters, newest first.
#[derive(Debug, Serialize)]
pub struct Page {
    /// The letters.
    pub dead_letters: Vec<DeadLetter>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    pub next_before: Option<u64>,
}

/// The dead letters held.
pub struct DeadLetters {
    db: sled::Db,
    tree: sled::Tree,
    /// Bytes of the stored letters (values only).
    bytes: AtomicU64,
    /// Letters stored (sled's own `len` walks the whole tree).
    count: AtomicU64,
    max_bytes: u64,
    /// Serialises eviction, so two writers do not both evict for the same excess.
    evicting: Mutex<()>,
}

impl DeadLetters {
    /// Opens the dead-letter tree of `db`, to hold at most `max_bytes`
    /// (older letters are dropped at once if it holds more).
    pub fn open(db: &sled::Db, max_bytes: u64) -> Result<Self, StoreError> {
        let tree = db.open_tree("dead_letters")?;
        let (mut bytes, mut count) = (0u64, 0u64);
        for kv in tree.iter() {
            bytes += kv?.1.len() as u64;
            count += 1;
        }
        let d = Self {
            db: db.clone(),
            tree,
            bytes: AtomicU64::new(bytes),
            count: AtomicU64::new(count),
            max_bytes,
            evicting: Mutex::new(()),
        };
        d.evict()?;
        Ok(d)
    }

    /// Writes a dead letter (assigning its id), bounded as the module says,
    /// and drops the oldest while over the caps. Not flushed.
    pub fn put(&self, d: DeadLetter) -> Result<u64, StoreError> {
        let mut d = d.bounded();
        d.id = self.db.generate_id()?;
        let value = serde_json::to_vec(&d).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let len = value.len() as u64;
        if let Some(old) = self.tree.insert(d.id.to_be_bytes(), value)? {
            // Ids are unique; should one repeat, count the replaced value out.
            self.bytes.fetch_sub(old.len() as u64, Ordering::Relaxed);
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
        self.bytes.fetch_add(len, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.evict()?;
        Ok(d.id)
    }

    /// Drops the oldest letters while over the byte or count cap (the newest always stays).
    fn evict(&self) -> Result<(), StoreError> {
        let _one = self.evicting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while (self.bytes.load(Ordering::Relaxed) > self.max_bytes
            || self.count.load(Ordering::Relaxed) > DEAD_LETTER_CAP)
            && self.count.load(Ordering::Relaxed) > 1
        {
            let Some((_, v)) = self.tree.pop_min()? else {
                break;
            };
            self.bytes.fetch_sub(v.len() as u64, Ordering::Relaxed);
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// A page of letters older than `before` (all when `None`), newest
    /// first, optionally of one zone: at most `limit` (itself at most
    /// [`MAX_PAGE`]) and at most [`PAGE_BYTES`] bytes, at least one.
    pub fn page(&self, limit: usize, before: Option<u64>, zone: Option<&str>) -> Result<Page, StoreError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let range = match before {
            Some(b) => self.tree.range(..b.to_be_bytes()),
            None => self.tree.range::<[u8; 8], _>(..),
        };
        let (mut out, mut bytes) = (Vec::new(), 0usize);
        for kv in range.rev() {
            let (_, v) = kv?;
            let d: DeadLetter = serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            if zone.is_some() && d.zone.as_deref() != zone {
                continue;
            }
            if out.len() >= limit || (!out.is_empty() && bytes + v.len() > PAGE_BYTES) {
                let next_before = out.last().map(|d: &DeadLetter| d.id);
                return Ok(Page {
                    dead_letters: out,
                    next_before,
                });
            }
            bytes += v.len();
            out.push(d);
        }
        Ok(Page {
            dead_letters: out,
            next_before: None,
        })
    }

    /// The newest dead letters first, optionally of one zone: the first page.
    pub fn list(&self, limit: usize, zone: Option<&str>) -> Result<Vec<DeadLetter>, StoreError> {
        Ok(self.page(limit, None, zone)?.dead_letters)
    }

    /// Every dead letter held, oldest first (for the start-up rebuild).
    pub fn each(&self, mut f: impl FnMut(DeadLetter)) -> Result<(), StoreError> {
        for kv in self.tree.iter() {
            let (_, v) = kv?;
            if let Ok(d) = serde_json::from_slice::<DeadLetter>(&v) {
                f(d);
            }
        }
        Ok(())
    }

    /// Dead letters held.
    pub fn count(&self) -> usize {
        usize::try_from(self.count.load(Ordering::Relaxed)).unwrap_or(usize::MAX)
    }

    /// Bytes the held dead letters take (their stored values).
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(zone: &str, reasons: usize, reason_len: usize, payload: &[u8]) -> DeadLetter {
        DeadLetter {
            id: 0,
            received_at: Utc::now(),
            topic: "zonesync/v1/z/a/data/e".into(),
            zone: Some(zone.into()),
            agent: Some("a".into()),
            seq: None,
            reasons: (0..reasons)
                .map(|i| format!("{i}:{}", "x".repeat(reason_len)))
                .collect(),
            labels: vec!["unknown_indicator".into(); reasons],
            whole_batch: true,
            payload_bytes: payload.len(),
            excerpt: excerpt(payload),
        }
    }

    fn open(max_bytes: u64) -> (tempfile::TempDir, DeadLetters) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        (dir, DeadLetters::open(&db, max_bytes).unwrap())
    }

    #[test]
    fn a_letter_is_bounded_whatever_it_refused() {
        let (_dir, d) = open(1 << 30);
        let payload = "电".repeat(100_000);
        d.put(letter("z", 500, 500, payload.as_bytes())).unwrap();
        let page = d.page(10, None, None).unwrap();
        let l = &page.dead_letters[0];
        assert!(l.excerpt.len() <= EXCERPT_BYTES && l.excerpt.starts_with('电'));
        assert_eq!(l.reasons.len(), MAX_REASONS + 1);
        assert!(l.reasons[MAX_REASONS].contains("480 more"), "{:?}", l.reasons.last());
        assert!(l.reasons.iter().all(|r| r.chars().count() <= REASON_CHARS));
        assert_eq!(
            elide("reading 0: value 1000000000000000000000 is outside ±1e15", 30),
            "reading 0: value 10…side ±1e15"
        );
        assert_eq!(l.labels.len(), 500, "labels are kept whole");
        assert!(d.bytes() < 16 * 1024, "{} bytes", d.bytes());
    }

    #[test]
    fn the_byte_cap_drops_the_oldest_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let d = DeadLetters::open(&db, 64 * 1024).unwrap();
        let ids: Vec<u64> = (0..200).map(|_| d.put(letter("z", 10, 200, b"{}")).unwrap()).collect();
        assert!(d.bytes() <= 64 * 1024, "{}", d.bytes());
        let kept = d.count();
        assert!(kept > 10 && kept < 200, "{kept}");
        let page = d.page(MAX_PAGE, None, None).unwrap();
        let got: Vec<u64> = page.dead_letters.iter().map(|l| l.id).collect();
        let want: Vec<u64> = ids.iter().rev().take(kept).copied().collect();
        assert_eq!(got, want, "the newest are kept, newest first");
        drop(d);
        // Reopened with a smaller cap, it shrinks at once.
        let d = DeadLetters::open(&db, 16 * 1024).unwrap();
        assert!(d.bytes() <= 16 * 1024 && d.count() < kept);
        assert_eq!(d.page(1, None, None).unwrap().dead_letters[0].id, ids[199]);
    }

    #[test]
    fn pages_are_bounded_and_walk_every_letter_once() {
        let (_dir, d) = open(1 << 30);
        for i in 0..25 {
            d.put(letter(if i % 2 == 0 { "even" } else { "odd" }, 1, 10, b"{}"))
                .unwrap();
        }
        let (mut seen, mut before) = (Vec::new(), None);
        loop {
            let p = d.page(4, before, Some("even")).unwrap();
            assert!(p.dead_letters.len() <= 4);
            assert!(p.dead_letters.iter().all(|l| l.zone.as_deref() == Some("even")));
            seen.extend(p.dead_letters.iter().map(|l| l.id));
            match p.next_before {
                Some(b) => before = Some(b),
                None => break,
            }
        }
        assert_eq!(seen.len(), 13);
        assert!(
            seen.windows(2).all(|w| w[0] > w[1]),
            "newest first, no repeats: {seen:?}"
        );
        assert_eq!(d.page(usize::MAX, None, None).unwrap().dead_letters.len(), 25);
    }
}
