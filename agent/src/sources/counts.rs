//! Named counters of one source (reads, bad payloads, rollovers, …), shared
//! between its task and the status file. Sources whose counters are not
//! known in advance (a gateway's, an OPC UA server's) keep them here by name
//! instead of a struct of atomics each.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Counters by name.
#[derive(Debug, Default)]
pub struct NamedCounts {
    counts: Mutex<BTreeMap<&'static str, u64>>,
}

impl NamedCounts {
    /// Adds one to counter `name`.
    pub fn bump(&self, name: &'static str) {
        self.add(name, 1);
    }

    /// Adds `n` to counter `name`.
    pub fn add(&self, name: &'static str, n: u64) {
        if let Ok(mut c) = self.counts.lock() {
            *c.entry(name).or_default() += n;
        }
    }

    /// The counters now.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.counts
            .lock()
            .map(|c| c.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect())
            .unwrap_or_default()
    }

    /// One counter.
    pub fn get(&self, name: &str) -> u64 {
        self.counts
            .lock()
            .map(|c| c.get(name).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_up_by_name() {
        let c = NamedCounts::default();
        c.bump("reads");
        c.add("reads", 2);
        c.bump("bad");
        assert_eq!((c.get("reads"), c.get("bad"), c.get("none")), (3, 1, 0));
        assert_eq!(c.counts().len(), 2);
    }
}
