//! A meter source's cursor — what it keeps per series between reads
//! (counter states, the last timestamp sent) — is stored as JSON in the
//! outbox with each append, so a restart resumes from the last durable
//! append, never from a state ahead of or behind what was queued.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A cursor stored as JSON; implementors are plain maps of numbers and enums.
pub trait JsonCursor: Serialize + DeserializeOwned + Default {
    /// Reads a stored cursor. None or unreadable bytes (a cursor from an
    /// older layout) give an empty one: each counter's next reading then
    /// starts afresh and is sent as read, with no delta invented.
    fn from_bytes(bytes: Option<&[u8]>) -> Self {
        bytes.and_then(|b| serde_json::from_slice(b).ok()).unwrap_or_default()
    }

    /// The bytes to store.
    fn to_bytes(&self) -> Vec<u8> {
        // Plain maps of numbers and enums always serialise.
        serde_json::to_vec(self).unwrap_or_default()
    }
}
