//! A pending chunk: the items of one `append`, under one key.
//!
//! Why chunks and not one key per item: with sled (the store until issue 17)
//! a million one-item keys cost the agent some 50 MB resident just to open
//! the outbox; with redb they would still be a million B-tree entries to
//! delete one commit at a time. One key per append
//! of up to [`MAX_ITEMS`]
//! items (a source's tick, a CSV file) keeps the page count — and the memory —
//! small for the same backlog.
//!
//! Chunks are capped at [`MAX_ITEMS`]: a seal reads whole chunks, so one
//! huge chunk (a 10,000-reading append) would be read and held whole however
//! few items the seal takes.
//!
//! Layout: item count (u32 BE), then per item its length (u32 BE) and its JSON.
//! An outbox written before chunks holds one item's JSON per key; its first
//! byte is `{`, which a chunk's never is (it would need 2 billion items).

use super::{OutboxError, PendingItem};
use serde::Deserialize;
use serde_json::value::RawValue;

/// Most items in one chunk (about 10 KB of readings).
pub(super) const MAX_ITEMS: usize = 64;

/// Bytes (keys included) the chunks of these encoded items take.
pub(super) fn stored_bytes(items: &[Vec<u8>]) -> u64 {
    items
        .chunks(MAX_ITEMS)
        .map(|c| 9 + size_of(c.iter().map(Vec::len)))
        .sum()
}

/// Bytes a chunk of items with these encoded lengths takes (without its key).
pub(super) fn size_of(lengths: impl Iterator<Item = usize>) -> u64 {
    4 + lengths.map(|l| 4 + l as u64).sum::<u64>()
}

/// Encodes items already serialised to JSON.
pub(super) fn encode(items: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(size_of(items.iter().map(Vec::len)) as usize);
    out.extend_from_slice(&(items.len() as u32).to_be_bytes());
    for i in items {
        out.extend_from_slice(&(i.len() as u32).to_be_bytes());
        out.extend_from_slice(i);
    }
    out
}

/// Items a stored chunk holds, from its header.
pub(super) fn count(v: &[u8]) -> u64 {
    if v.first() == Some(&b'{') {
        return 1;
    }
    v.get(..4)
        .map(|h| u64::from(u32::from_be_bytes([h[0], h[1], h[2], h[3]])))
        .unwrap_or(0)
}

/// The items of a stored chunk, in order.
pub(super) fn decode(k: &[u8], v: &[u8]) -> Result<Vec<PendingItem>, OutboxError> {
    bodies(k, v)?
        .into_iter()
        .enumerate()
        .map(|(i, body)| serde_json::from_slice(body).map_err(|e| corrupt(k, format!("item {i}: {e}"))))
        .collect()
}

fn corrupt(k: &[u8], problem: String) -> OutboxError {
    OutboxError::Corrupt {
        key: format!("p{:?}", super::seq_of(k)),
        problem,
    }
}

/// Each item's JSON in a stored chunk, in order (a value written before
/// chunks is one item's JSON whole).
fn bodies<'a>(k: &[u8], v: &'a [u8]) -> Result<Vec<&'a [u8]>, OutboxError> {
    if v.first() == Some(&b'{') {
        return Ok(vec![v]);
    }
    let n = count(v) as usize;
    let mut out = Vec::with_capacity(n.min(MAX_ITEMS * 4));
    let mut at = 4;
    for i in 0..n {
        let len = v
            .get(at..at + 4)
            .map(|h| u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize)
            .ok_or_else(|| corrupt(k, format!("item {i} of {n}: truncated length")))?;
        let body = v
            .get(at + 4..at + 4 + len)
            .ok_or_else(|| corrupt(k, format!("item {i} of {n}: truncated")))?;
        out.push(body);
        at += 4 + len;
    }
    Ok(out)
}

/// A pending item as stored, its parts left as the JSON they are: sealing
/// splices them into the batch payload ([`zonesync_proto::RawBatch`]).
#[derive(Deserialize)]
pub(super) struct RawPending<'a> {
    /// The enterprise id's JSON (a string).
    #[serde(borrow)]
    pub enterprise: &'a RawValue,
    /// The item.
    #[serde(borrow)]
    pub item: RawItem<'a>,
}

/// [`super::Item`] as stored: externally tagged, the content left as JSON.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum RawItem<'a> {
    /// A reading's JSON.
    Reading(#[serde(borrow)] &'a RawValue),
    /// A declaration's JSON.
    Declaration(#[serde(borrow)] &'a RawValue),
}

/// The items of a stored chunk, in order, borrowing it: each is checked to
/// be JSON of the right shape, nothing is decoded further.
pub(super) fn decode_raw<'a>(k: &[u8], v: &'a [u8]) -> Result<Vec<RawPending<'a>>, OutboxError> {
    bodies(k, v)?
        .into_iter()
        .enumerate()
        .map(|(i, body)| {
            std::str::from_utf8(body)
                .map_err(|e| e.to_string())
                .and_then(|text| serde_json::from_str(text).map_err(|e| e.to_string()))
                .map_err(|e| corrupt(k, format!("item {i}: {e}")))
        })
        .collect()
}
