//! Opening an outbox: the redb store (a damaged file is an error naming
//! it; one an earlier agent kept in sled is moved into it first), its
//! identity and numbering (never below the high-water mark kept beside it),
//! its counters, and each configured upstream's cursor.

use super::*;

impl Outbox {
    /// Opens (or creates) the outbox at `path` with a cache of `cache_bytes`
    /// and the default disk budget and backfill window.
    pub fn open(path: &Path, cache_bytes: u64) -> Result<Self, OutboxError> {
        let mut options = OutboxOptions::from(&OutboxConfig::default());
        options.cache_bytes = cache_bytes;
        Self::open_with(path, options)
    }

    /// Opens (or creates) the outbox at `path`.
    pub fn open_with(path: &Path, options: OutboxOptions) -> Result<Self, OutboxError> {
        Self::open_as(path, options, Open::Run)
    }

    /// Opens the outbox at `path` to look at it (`zonesync-agent status`):
    /// unlike [`Outbox::open_with`] it changes no upstream's record, so an
    /// upstream taken out of the configuration keeps its cursor and its
    /// batches (and is listed with `configured: false`), and a new one is
    /// shown from the oldest batch held without being stored. Looking must
    /// not decide what a start would: an operator who comments out an
    /// upstream and runs `status` to see the effect has lost nothing yet.
    pub fn inspect(path: &Path, options: OutboxOptions) -> Result<Self, OutboxError> {
        Self::open_as(path, options, Open::Inspect)
    }

    fn open_as(path: &Path, options: OutboxOptions, open: Open) -> Result<Self, OutboxError> {
        // An outbox an earlier agent kept in sled is moved at the first start
        // (`migrate`); looking must not move it.
        if open == Open::Inspect && migrate::has_sled(path) && !path.join(store::FILE).exists() {
            return Err(OutboxError::NotMigrated(path.to_path_buf()));
        }
        migrate::from_sled(path, options.cache_bytes)?;
        let tree = Tree::open(path, options.cache_bytes)?;
        let next_chunk = match tree.scan_prefix([PENDING]).next_back() {
            Some(kv) => seq_of(&kv?.0).map_or(0, |id| id.saturating_add(1)),
            None => 0,
        };
        // Looking must not create the mark (nor anything else).
        let hw_path = identity::high_water_path(path);
        let high_water = match open {
            Open::Run => Some(HighWater::open(&hw_path)?),
            Open::Inspect if hw_path.exists() => Some(HighWater::open(&hw_path)?),
            Open::Inspect => None,
        };
        let done_path = identity::done_path(path);
        let done = match open {
            Open::Run => Some(HighWater::open(&done_path)?),
            Open::Inspect if done_path.exists() => Some(HighWater::open(&done_path)?),
            Open::Inspect => None,
        };
        let mark = high_water.as_ref().and_then(HighWater::get);
        let published_below = done.as_ref().and_then(HighWater::get);
        let stored_next = match tree.get(META_NEXT_SEQ)? {
            Some(_) => Some(read_u64(&tree, META_NEXT_SEQ)?),
            None => None,
        };
        // Every number ever published is below the mark, so continuing from
        // it never issues one twice, whatever the store forgot.
        // The store lost something that may have been published: below
        // `seq-done` where there is one, else (an outbox from before it)
        // below the mark. Between the two lie numbers of a seal cut short
        // before its flush, never published: skipped, not a rollback.
        let stored = stored_next.unwrap_or(1);
        let rolled_back = match published_below {
            Some(d) => d > stored,
            None => mark.is_some_and(|m| m > stored),
        };
        let cut_short = !rolled_back && mark.is_some_and(|m| m > stored);
        let next_seq = stored_next.unwrap_or(1).max(mark.unwrap_or(1)).max(1);
        let mut stored_id = identity::load(&tree)?;
        if open == Open::Run && (stored_id.is_none() || stored_next != Some(next_seq)) {
            let mut batch = WriteBatch::default();
            if stored_id.is_none() {
                // A new outbox, or one from before identities: its held
                // batches keep the legacy numbering they may have been
                // published under (resending them unchanged is exact), and
                // from now on it seals under this identity.
                let id = identity::draw()?;
                if stored_next.is_some() {
                    tracing::info!(outbox = id.as_str(), next_seq, "outbox without an identity: drew one");
                }
                batch.insert(identity::META_ID, id.as_str().as_bytes());
                stored_id = Some(id);
            }
            batch.insert(META_NEXT_SEQ, next_seq.to_be_bytes());
            tree.apply_batch(batch)?;
            tree.flush()?;
        }
        let counters = match Counters::load(&tree)? {
            Some(c) => c,
            // An outbox written before the counters were kept: count once.
            None if open == Open::Run => {
                let c = Counters::recount(&tree)?;
                tree.insert(counters::KEY, &c.encode()[..])?;
                tree.flush()?;
                c
            }
            None => Counters::recount(&tree)?,
        };
        let (upstreams, counters) = Self::open_upstreams(&tree, &options.upstreams, counters, next_seq, open)?;
        let state = State {
            counters,
            upstreams,
            identity: stored_id,
            rollbacks: identity::load_count(&tree, identity::META_ROLLBACKS)?,
            rotations: identity::load_count(&tree, identity::META_ROTATIONS)?,
        };
        let outbox = Self {
            tree,
            next_chunk: AtomicU64::new(next_chunk),
            options,
            state: Mutex::new(state),
            next_seq: AtomicU64::new(next_seq),
            high_water,
            done,
            history: None,
        };
        if open == Open::Run {
            if rolled_back {
                tracing::warn!(
                    store = %path.display(),
                    high_water = %hw_path.display(),
                    store_next_seq = stored_next.unwrap_or(0),
                    mark = mark.unwrap_or(0),
                    next_seq,
                    "outbox store rolled back or was restored: its next sequence number is below the high-water mark \
                     kept beside it; numbering continues from the mark under a fresh outbox identity (batches the \
                     store lost may have been published)"
                );
                outbox.rotate(identity::Rotation::Rollback)?;
            }
            if cut_short {
                tracing::info!(
                    store_next_seq = stored,
                    mark = mark.unwrap_or(0),
                    "a seal was cut short before its write reached the store (a crash or kill); its numbers, \
                     never published, are skipped and the outbox keeps its identity"
                );
            }
            // An outbox older than the marks gets them; a new one records its
            // start. The store holds `next_seq` durably by now (written above).
            if let Some(hw) = &outbox.high_water {
                hw.raise(next_seq)?;
            }
            if let Some(done) = &outbox.done {
                done.raise(next_seq)?;
            }
        }
        Ok(outbox)
    }

    /// Also records every appended item in `history`, after the outbox has it.
    pub fn with_history(mut self, history: std::sync::Arc<crate::history::History>) -> Self {
        self.history = Some(history);
        self
    }

    /// Loads the configured upstreams' records, starts a new upstream at the
    /// lowest batch held (it gets the backlog still on disk), forgets
    /// upstreams no longer configured, and deletes the batches every
    /// remaining upstream has passed (a removed upstream may have been the
    /// only one holding them). One atomic, flushed step; with
    /// [`Open::Inspect`], the same view is built in memory, the removed
    /// upstreams are kept after the configured ones, and nothing is written.
    fn open_upstreams(
        tree: &Tree,
        names: &[String],
        mut counters: Counters,
        next_seq: u64,
        open: Open,
    ) -> Result<(Vec<Upstream>, Counters), OutboxError> {
        if names.is_empty() {
            return Err(OutboxError::NoUpstream);
        }
        let mut batch = WriteBatch::default();
        let mut changed = false;
        let mut stored = std::collections::HashMap::new();
        let mut unconfigured = Vec::new();
        for kv in tree.scan_prefix([upstreams::PREFIX]) {
            let (k, v) = kv?;
            let name = String::from_utf8_lossy(&k[1..]).into_owned();
            if names.contains(&name) {
                stored.insert(name, Record::decode(&k, &v)?);
            } else if open == Open::Inspect {
                unconfigured.push(Upstream::new(name, Record::decode(&k, &v)?));
            } else {
                tracing::info!(upstream = %name, "upstream no longer configured: its cursor is dropped");
                batch.remove(k);
                changed = true;
            }
        }
        let lowest_held = match tree.scan_prefix([SEALED]).next() {
            Some(kv) => seq_of(&kv?.0).unwrap_or(next_seq),
            None => next_seq,
        };
        let mut ups = Vec::with_capacity(names.len());
        for name in names {
            let rec = match stored.get(name) {
                Some(r) => *r,
                None => {
                    let r = Record {
                        cursor: lowest_held,
                        dropped: 0,
                        batches: counters.sealed_batches,
                        items: counters.sealed_items,
                        dropped_sent: 0,
                        sent_below: 0,
                    };
                    tracing::info!(upstream = %name, cursor = r.cursor, batches = r.batches, "new upstream: starts at the oldest batch held");
                    batch.insert(upstreams::key(name), &r.encode()[..]);
                    changed = true;
                    r
                }
            };
            ups.push(Upstream::new(name.clone(), rec));
        }
        ups.extend(unconfigured);
        if open == Open::Inspect {
            return Ok((ups, counters));
        }
        let min_cursor = ups.iter().map(|u| u.rec.cursor).min().unwrap_or(0);
        for kv in tree.range(key(SEALED, 0)..key(SEALED, min_cursor)) {
            let (k, v) = kv?;
            counters.sealed_batches = counters.sealed_batches.saturating_sub(1);
            counters.sealed_items = counters.sealed_items.saturating_sub(sealed_items(&v));
            counters.held_bytes = counters.held_bytes.saturating_sub(entry_bytes(&k, &v));
            batch.remove(k);
            changed = true;
        }
        if changed {
            batch.insert(counters::KEY, &counters.encode()[..]);
            tree.apply_batch(batch)?;
            tree.flush()?;
        }
        Ok((ups, counters))
    }
}
