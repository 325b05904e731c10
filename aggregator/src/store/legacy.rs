//! Stores written before the batch log kept each reading under its own key
//! (`r` zone enterprise indicator point time → value) and each declaration
//! under `d`, with de-dup marks (`s`, `b`) and stamps (`o`). At the first
//! open by this version they are moved into the log, once, as one batch per
//! enterprise of a numbering of their own (agent `legacy-store`), in key
//! order — every series in time order — and the old keys are removed in the
//! same atomic write.

use super::{record, Store, StoreError, ACCEPTED};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use zonesync_proto::{Accepted, AgentId, CanonicalReading, DeclaredValue, EnterpriseId, Period, ReadingTime, ZoneId};

/// Moves a pre-log store's facts into the log; nothing to do for a new one.
pub(super) fn migrate(store: &Store) -> Result<(), StoreError> {
    let has =
        |tag: &[u8]| -> Result<bool, StoreError> { Ok(store.facts.scan_prefix(tag).next().transpose()?.is_some()) };
    if !(has(b"r")? || has(b"d")?) {
        return Ok(());
    }
    let corrupt =
        |what: &str, key: &[u8]| StoreError::Corrupt(format!("{what} key {:?}", String::from_utf8_lossy(key)));
    type Facts = (Vec<CanonicalReading>, Vec<(String, DeclaredValue)>);
    let mut by_enterprise: BTreeMap<(ZoneId, EnterpriseId), Facts> = BTreeMap::new();
    let mut old_keys = Vec::new();
    for kv in store.facts.scan_prefix(b"d") {
        let (key, v) = kv?;
        let parts: Vec<&[u8]> = key[1..].splitn(3, |b| *b == 0).collect();
        let [z, e, code] = parts.as_slice() else {
            return Err(corrupt("declaration", &key));
        };
        let zone = id::<ZoneId>(z).ok_or_else(|| corrupt("declaration", &key))?;
        let ent = enterprise(e).ok_or_else(|| corrupt("declaration", &key))?;
        let value: DeclaredValue = serde_json::from_slice(&v).map_err(|_| corrupt("declaration", &key))?;
        by_enterprise
            .entry((zone, ent))
            .or_default()
            .1
            .push((String::from_utf8_lossy(code).into_owned(), value));
        old_keys.push(key);
    }
    for kv in store.facts.scan_prefix(b"r") {
        let (key, v) = kv?;
        let parts: Vec<&[u8]> = key[1..].splitn(5, |b| *b == 0).collect();
        let [z, e, ind, point, tk] = parts.as_slice() else {
            return Err(corrupt("reading", &key));
        };
        let zone = id::<ZoneId>(z).ok_or_else(|| corrupt("reading", &key))?;
        let ent = enterprise(e).ok_or_else(|| corrupt("reading", &key))?;
        let at = time_key(tk).ok_or_else(|| corrupt("reading", &key))?;
        let value = f64::from_be_bytes(v.as_ref().try_into().map_err(|_| corrupt("reading", &key))?);
        by_enterprise.entry((zone, ent)).or_default().0.push(CanonicalReading {
            indicator: String::from_utf8_lossy(ind).as_ref().into(),
            point: String::from_utf8_lossy(point).as_ref().into(),
            value,
            at,
        });
        old_keys.push(key);
    }
    for tag in [b"s", b"b", b"o"] {
        for kv in store.facts.scan_prefix(tag) {
            old_keys.push(kv?.0);
        }
    }
    let agent = AgentId::parse("legacy-store").map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let mut batch = sled::Batch::default();
    let mut arrival = store.accepted.load(Ordering::SeqCst);
    let migrated_at = DateTime::<Utc>::UNIX_EPOCH;
    for (seq, ((zone, ent), (readings, declarations))) in by_enterprise.into_iter().enumerate() {
        let seq = seq as u64 + 1;
        arrival += 1;
        let a = Accepted {
            agent: agent.clone(),
            boot: 0,
            outbox: None,
            seq,
            digest: format!("legacy-{seq}"),
            sent_at: migrated_at,
            zone,
            enterprise: ent,
            backfill: false,
            readings,
            declarations,
            refused: Vec::new(),
        };
        store
            .batches
            .insert(arrival.to_be_bytes(), record::encode(migrated_at, &a))?;
    }
    for key in old_keys {
        batch.remove(key);
    }
    batch.insert(ACCEPTED, &arrival.to_be_bytes());
    store.facts.apply_batch(batch)?;
    store.accepted.store(arrival, Ordering::SeqCst);
    store.flush()?;
    tracing::info!(
        batches = arrival,
        "store moved to the batch log (one batch per enterprise)"
    );
    Ok(())
}

fn id<T: std::str::FromStr>(b: &[u8]) -> Option<T> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

fn enterprise(b: &[u8]) -> Option<EnterpriseId> {
    EnterpriseId::from_stored(std::str::from_utf8(b).ok()?)
}

fn time_key(b: &[u8]) -> Option<ReadingTime> {
    match b.first()? {
        b't' => {
            let micros = u64::from_be_bytes(b.get(1..9)?.try_into().ok()?);
            DateTime::<Utc>::from_timestamp_micros(micros as i64).map(ReadingTime::Ts)
        }
        b'p' => Period::parse(std::str::from_utf8(b.get(1..)?).ok()?)
            .ok()
            .map(ReadingTime::Period),
        _ => None,
    }
}
