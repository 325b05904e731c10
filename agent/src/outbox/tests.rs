//! The outbox's unit tests: durability, ordering, the disk budget, backfill.

use super::*;

fn ids() -> (AgentId, ZoneId, EnterpriseId, EnterpriseId) {
    (
        AgentId::parse("gw").unwrap(),
        ZoneId::parse("z").unwrap(),
        EnterpriseId::parse("91350100M000100Y43").unwrap(),
        EnterpriseId::with_check_char("91419001MA0000001").unwrap(),
    )
}

fn reading(v: f64) -> Item {
    Item::Reading(Reading {
        indicator: "electricity".into(),
        point: "M1".into(),
        value: v,
        unit: "kWh".into(),
        ts: Some(Utc::now()),
        period: None,
    })
}

#[test]
fn items_survive_reopen_and_leave_only_when_acked() {
    let dir = tempfile::tempdir().unwrap();
    let (a, z, e1, e2) = ids();
    {
        let o = Outbox::open(&dir.path().join("outbox"), 1 << 20).unwrap();
        assert_eq!(o.next_boot().unwrap(), 1);
        o.append(
            vec![
                (e1.clone(), reading(1.0)),
                (e2.clone(), reading(2.0)),
                (e1.clone(), reading(3.0)),
            ],
            Some(("sim", b"42")),
        )
        .unwrap();
        let first = o.next_seq();
        assert_eq!(first, 1, "a new outbox starts at 1, never at the clock");
        let s = o.seal(10, &a, &z, 1, Utc::now()).unwrap();
        assert_eq!(s.len(), 2, "one batch per enterprise");
        assert_eq!((s[0].seq, s[0].items, s[1].seq, s[1].items), (first, 2, first + 1, 1));
        o.ack(0, first).unwrap();
        o.flush().unwrap();
    }
    let o = Outbox::open(&dir.path().join("outbox"), 1 << 20).unwrap();
    assert_eq!(o.next_boot().unwrap(), 2);
    assert_eq!(o.cursor("sim").unwrap().as_deref(), Some(&b"42"[..]));
    let left = o.sealed_from(0, 10).unwrap();
    assert_eq!(left.len(), 1);
    let first = left[0].seq - 1;
    assert!(left[0].topic.ends_with(e2.as_str()));
    assert_eq!(left[0].items, 1);
    let b: Batch = serde_json::from_slice(&left[0].payload).unwrap();
    assert_eq!(b.readings[0].value, 2.0);
    assert_eq!(o.next_seq(), first + 2, "sequence numbers are never reused");
    assert_eq!(o.stats().pending_items, 0);
}

#[test]
fn sealing_respects_the_batch_size_and_order() {
    let dir = tempfile::tempdir().unwrap();
    let (a, z, e1, _) = ids();
    let o = Outbox::open(&dir.path().join("outbox"), 1 << 20).unwrap();
    let first = o.next_seq();
    o.append((0..25).map(|i| (e1.clone(), reading(i as f64))).collect(), None)
        .unwrap();
    let mut values = Vec::new();
    loop {
        let s = o.seal(10, &a, &z, 1, Utc::now()).unwrap();
        if s.is_empty() {
            break;
        }
        for b in s {
            let b: Batch = serde_json::from_slice(&b.payload).unwrap();
            assert!(b.readings.len() <= 10);
            values.extend(b.readings.iter().map(|r| r.value));
        }
    }
    assert_eq!(values, (0..25).map(|i| i as f64).collect::<Vec<_>>());
    assert_eq!(o.next_seq(), first + 3);
}

fn small(budget: u64) -> OutboxOptions {
    OutboxOptions {
        cache_bytes: 1 << 20,
        disk_budget_bytes: budget,
        backfill_after: Duration::seconds(300),
        upstreams: vec![PRIMARY.into()],
    }
}

fn values(o: &Outbox) -> Vec<f64> {
    let mut out = Vec::new();
    for s in o.sealed_from(0, usize::MAX).unwrap() {
        let b: Batch = serde_json::from_slice(&s.payload).unwrap();
        out.extend(b.readings.iter().map(|r| r.value));
    }
    for kv in o.tree.scan_prefix([PENDING]) {
        let (k, v) = kv.unwrap();
        for p in chunk::decode(&k, &v).unwrap() {
            if let Item::Reading(r) = p.item {
                out.push(r.value);
            }
        }
    }
    out
}

#[test]
fn counters_match_a_recount_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (a, z, e1, e2) = ids();
    let expected;
    {
        let o = Outbox::open_with(&dir.path().join("outbox"), small(1 << 30)).unwrap();
        o.append((0..30).map(|i| (e1.clone(), reading(i as f64))).collect(), None)
            .unwrap();
        o.append(vec![(e2.clone(), reading(99.0))], None).unwrap();
        // The first chunk alone exceeds 20 items: sealed whole, as 20 + 10.
        let s = o.seal(20, &a, &z, 1, Utc::now()).unwrap();
        assert_eq!(s.iter().map(|b| b.items).collect::<Vec<_>>(), vec![20, 10]);
        o.ack(0, s[0].seq).unwrap();
        o.ack(0, s[0].seq).unwrap();
        // An item stored by an outbox from before chunks (one JSON per key).
        let legacy = serde_json::to_vec(&PendingItem {
            enterprise: e2.clone(),
            item: reading(7.0),
        })
        .unwrap();
        o.tree.insert(key(PENDING, u64::MAX), legacy).unwrap();
        o.flush().unwrap();
        let c = Counters::recount(&o.tree).unwrap();
        assert_eq!((c.pending_items, c.sealed_batches, c.sealed_items), (2, 1, 10));
        o.tree.remove(counters::KEY).unwrap();
        o.flush().unwrap();
        expected = c;
    }
    // Without stored counters (an older outbox) they are counted once, then kept.
    let o = Outbox::open_with(&dir.path().join("outbox"), small(1 << 30)).unwrap();
    assert_eq!(o.lock().counters, expected);
    assert_eq!(o.stats().pending_items, 2);
    let s = o.seal(10, &a, &z, 1, Utc::now()).unwrap();
    let b: Batch = serde_json::from_slice(&s[0].payload).unwrap();
    assert_eq!(b.readings.iter().map(|r| r.value).collect::<Vec<_>>(), vec![99.0, 7.0]);
    assert_eq!(o.lock().counters, Counters::recount(&o.tree).unwrap());
}

#[test]
fn a_full_budget_drops_the_oldest_and_counts_each_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (a, z, e1, _) = ids();
    // Room for about 40 pending items of ~150 bytes.
    let o = Outbox::open_with(&dir.path().join("outbox"), small(6_000)).unwrap();
    o.append((0..20).map(|i| (e1.clone(), reading(i as f64))).collect(), None)
        .unwrap();
    o.seal(10, &a, &z, 1, Utc::now()).unwrap();
    let mut produced = 20;
    for round in 0..10 {
        o.append(
            (0..15)
                .map(|i| (e1.clone(), reading((100 + round * 15 + i) as f64)))
                .collect(),
            None,
        )
        .unwrap();
        produced += 15;
        let c = o.lock().counters;
        assert!(c.held_bytes <= 6_000, "round {round}: {} bytes held", c.held_bytes);
        assert_eq!(c, Counters::recount(&o.tree).unwrap().with_dropped(c.dropped));
    }
    let kept = values(&o);
    let c = o.lock().counters;
    assert_eq!(kept.len() as u64 + c.dropped, produced, "every reading kept or counted");
    assert!(c.dropped > 0);
    // The newest are kept, in order: what is held is a suffix of what was produced.
    let all: Vec<f64> = (0..20).chain(100..250).map(|i| i as f64).collect();
    assert_eq!(kept, all[all.len() - kept.len()..].to_vec());
    // One append larger than the whole budget keeps its newest items.
    o.append(
        (0..100).map(|i| (e1.clone(), reading(1000.0 + i as f64))).collect(),
        None,
    )
    .unwrap();
    let kept = values(&o);
    assert_eq!(kept.last(), Some(&1099.0));
    assert_eq!(kept.len() as u64 + o.dropped_readings(), produced + 100);
    drop(o);
    let o = Outbox::open_with(&dir.path().join("outbox"), small(6_000)).unwrap();
    assert_eq!(
        o.stats().dropped_readings + values(&o).len() as u64,
        produced + 100,
        "drops persist"
    );
}

#[test]
fn batches_on_the_wire_are_never_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (a, z, e1, _) = ids();
    let o = Outbox::open_with(&dir.path().join("outbox"), small(4_000)).unwrap();
    o.append((0..10).map(|i| (e1.clone(), reading(i as f64))).collect(), None)
        .unwrap();
    let s = o.seal(10, &a, &z, 1, Utc::now()).unwrap();
    o.set_on_wire_below(0, s[0].seq + 1);
    o.append((0..40).map(|i| (e1.clone(), reading(100.0 + i as f64))).collect(), None)
        .unwrap();
    assert_eq!(
        o.sealed_from(0, 10).unwrap().len(),
        1,
        "the published batch stays for its PUBACK"
    );
    assert_eq!(o.ack(0, s[0].seq).unwrap(), Some(10));
    assert_eq!(values(&o).len() as u64 + o.dropped_readings() + 10, 50);
}

#[test]
fn old_readings_are_sealed_as_backfill_once() {
    let dir = tempfile::tempdir().unwrap();
    let (a, z, e1, e2) = ids();
    let o = Outbox::open_with(&dir.path().join("outbox"), small(1 << 30)).unwrap();
    let now = Utc::now();
    let mut old = reading(1.0);
    if let Item::Reading(r) = &mut old {
        r.ts = Some(now - Duration::seconds(301));
    }
    let mut monthly = reading(2.0);
    if let Item::Reading(r) = &mut monthly {
        r.ts = None;
    }
    o.append(vec![(e1.clone(), old), (e2.clone(), reading(3.0)), (e2, monthly)], None)
        .unwrap();
    let s = o.seal(10, &a, &z, 1, now).unwrap();
    let flags: Vec<bool> = s
        .iter()
        .map(|b| serde_json::from_slice::<Batch>(&b.payload).unwrap().backfill)
        .collect();
    assert_eq!(flags, vec![true, false]);
    // A resend is the stored payload, byte for byte.
    let again = o.sealed_from(0, 10).unwrap();
    assert_eq!(again[0].payload, s[0].payload);
}

fn two(budget: u64, names: &[&str]) -> OutboxOptions {
    OutboxOptions {
        upstreams: names.iter().map(|n| n.to_string()).collect(),
        ..small(budget)
    }
}

fn up(o: &Outbox, name: &str) -> UpstreamOutboxStats {
    o.stats().upstreams.into_iter().find(|u| u.name == name).unwrap()
}

fn seqs(v: &[Sealed]) -> Vec<u64> {
    v.iter().map(|s| s.seq).collect()
}

#[test]
fn two_upstreams_ack_in_different_orders_and_a_batch_leaves_when_both_have_it() {
    let dir = tempfile::tempdir().unwrap();
    let (a, z, e1, _) = ids();
    let s;
    {
        let o = Outbox::open_with(&dir.path().join("outbox"), two(1 << 30, &["zone", "city"])).unwrap();
        o.append((0..30).map(|i| (e1.clone(), reading(i as f64))).collect(), None)
            .unwrap();
        s = seqs(&o.seal_up_to(10, 30, &a, &z, 1, Utc::now()).unwrap());
        assert_eq!(s.len(), 3, "one seal, three batches");
        assert_eq!(seqs(&o.sealed_for(0, 0, 10).unwrap()), s);
        // zone: 1 then 0; city: 2 then 0.
        assert_eq!(o.ack(0, s[1]).unwrap(), Some(10));
        assert_eq!(up(&o, "zone").cursor, s[0], "out of order: the cursor waits");
        assert_eq!(o.ack(0, s[0]).unwrap(), Some(10));
        assert_eq!(o.ack(0, s[0]).unwrap(), None, "already acknowledged");
        assert_eq!(o.ack(1, s[2]).unwrap(), Some(10));
        assert_eq!(o.ack(1, s[0]).unwrap(), Some(10));
        assert_eq!(
            seqs(&o.sealed_from(0, 10).unwrap()),
            vec![s[1], s[2]],
            "only s0 had both"
        );
        let (zone, city) = (up(&o, "zone"), up(&o, "city"));
        assert_eq!((zone.cursor, zone.unacked_batches, zone.unacked_items), (s[2], 1, 10));
        assert_eq!((city.cursor, city.unacked_batches, city.unacked_items), (s[1], 1, 10));
        assert_eq!(
            seqs(&o.sealed_for(1, 0, 10).unwrap()),
            vec![s[1]],
            "city's ack of s2 is remembered"
        );
        assert_eq!(o.lock().counters, Counters::recount(&o.tree).unwrap());
        o.flush().unwrap();
    }
    // After a restart the out-of-order ack above city's cursor is forgotten: s2 goes to city again.
    let o = Outbox::open_with(&dir.path().join("outbox"), two(1 << 30, &["zone", "city"])).unwrap();
    let city = up(&o, "city");
    assert_eq!((city.cursor, city.unacked_batches, city.unacked_items), (s[1], 2, 20));
    assert_eq!(seqs(&o.sealed_for(1, 0, 10).unwrap()), vec![s[1], s[2]]);
    assert_eq!(seqs(&o.sealed_for(0, 0, 10).unwrap()), vec![s[2]]);
    assert_eq!(o.ack(0, s[2]).unwrap(), Some(10));
    assert_eq!(o.sealed_from(0, 10).unwrap().len(), 2, "city has neither");
    assert_eq!(o.ack(1, s[1]).unwrap(), Some(10));
    assert_eq!(o.ack(1, s[2]).unwrap(), Some(10));
    assert!(o.sealed_from(0, 10).unwrap().is_empty());
    let st = o.stats();
    assert_eq!((st.sealed_batches, st.sealed_items), (0, 0));
    for u in &st.upstreams {
        assert_eq!(
            (u.cursor, u.unacked_batches, u.unacked_items),
            (o.next_seq(), 0, 0),
            "{}",
            u.name
        );
    }
    assert_eq!(o.lock().counters, Counters::recount(&o.tree).unwrap());
}

#[test]
fn a_removed_upstream_stops_pinning_batches_and_a_new_one_gets_the_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let (a, z, e1, _) = ids();
    let s;
    {
        let o = Outbox::open_with(&dir.path().join("outbox"), two(1 << 30, &["zone", "city"])).unwrap();
        o.append((0..20).map(|i| (e1.clone(), reading(i as f64))).collect(), None)
            .unwrap();
        s = seqs(&o.seal_up_to(10, 20, &a, &z, 1, Utc::now()).unwrap());
        o.ack(0, s[0]).unwrap();
        o.ack(0, s[1]).unwrap();
        assert_eq!(o.sealed_from(0, 10).unwrap().len(), 2, "held for city");
        o.flush().unwrap();
    }
    for _ in 0..2 {
        // Looked at (`status`) with city removed from the configuration:
        // city is listed as unconfigured, keeps its cursor and its batches,
        // and a new upstream is shown but not stored; twice, to see nothing was written.
        let o = Outbox::inspect(&dir.path().join("outbox"), two(1 << 30, &["zone", "town"])).unwrap();
        let stats = o.stats();
        let names: Vec<_> = stats
            .upstreams
            .iter()
            .map(|u| (u.name.as_str(), u.configured))
            .collect();
        assert_eq!(names, vec![("zone", true), ("town", true), ("city", false)]);
        let city = up(&o, "city");
        assert_eq!((city.cursor, city.unacked_batches, city.unacked_items), (s[0], 2, 20));
        assert_eq!(
            up(&o, "town").unacked_batches,
            2,
            "a new upstream would get the backlog"
        );
        assert_eq!(stats.sealed_batches, 2);
        drop(o);
        let o = Outbox::open_with(&dir.path().join("outbox"), two(1 << 30, &["zone", "city"])).unwrap();
        assert_eq!(o.upstream_names(), vec!["zone", "city"], "town was not stored");
        assert_eq!(up(&o, "city").unacked_batches, 2);
        o.flush().unwrap();
    }
    {
        // city removed from the configuration: nothing holds the batches any more.
        let o = Outbox::open_with(&dir.path().join("outbox"), two(1 << 30, &["zone"])).unwrap();
        assert!(o.sealed_from(0, 10).unwrap().is_empty());
        assert_eq!(o.stats().sealed_batches, 0);
        assert_eq!(o.upstream_names(), vec!["zone"]);
        assert_eq!(o.lock().counters, Counters::recount(&o.tree).unwrap());
        o.append((0..10).map(|i| (e1.clone(), reading(i as f64))).collect(), None)
            .unwrap();
        let more = seqs(&o.seal(10, &a, &z, 1, Utc::now()).unwrap());
        o.append((0..10).map(|i| (e1.clone(), reading(i as f64))).collect(), None)
            .unwrap();
        let last = seqs(&o.seal(10, &a, &z, 1, Utc::now()).unwrap());
        o.ack(0, more[0]).unwrap();
        assert_eq!(seqs(&o.sealed_from(0, 10).unwrap()), last);
        o.flush().unwrap();
    }
    // city added again: a new upstream, it starts at the oldest batch held.
    let o = Outbox::open_with(&dir.path().join("outbox"), two(1 << 30, &["zone", "city"])).unwrap();
    let city = up(&o, "city");
    let held = seqs(&o.sealed_from(0, 10).unwrap());
    assert_eq!(
        (
            city.cursor,
            city.unacked_batches,
            city.unacked_items,
            city.dropped_readings
        ),
        (held[0], 1, 10, 0)
    );
    assert_eq!(seqs(&o.sealed_for(1, 0, 10).unwrap()), held);
    // An outbox with no upstream at all is refused rather than emptied.
    drop(o);
    assert!(matches!(
        Outbox::open_with(&dir.path().join("outbox"), two(1 << 30, &[])),
        Err(OutboxError::NoUpstream)
    ));
}

/// Appends `rounds` chunks of 15 readings; returns how many.
fn append_rounds(o: &Outbox, e: &EnterpriseId, rounds: u64) -> u64 {
    for round in 0..rounds {
        o.append(
            (0..15).map(|i| (e.clone(), reading((round * 15 + i) as f64))).collect(),
            None,
        )
        .unwrap();
    }
    rounds * 15
}

#[test]
fn budget_drops_count_for_each_upstream_that_had_not_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (a, z, e1, _) = ids();
    let o = Outbox::open_with(&dir.path().join("outbox"), two(8_000, &["zone", "city"])).unwrap();
    o.append((0..30).map(|i| (e1.clone(), reading(i as f64))).collect(), None)
        .unwrap();
    let s = seqs(&o.seal_up_to(10, 30, &a, &z, 1, Utc::now()).unwrap());
    // zone has everything; city has the middle batch only and the first on its wire.
    let mut zone_acked = 0;
    for seq in &s {
        zone_acked += o.ack(0, *seq).unwrap().unwrap();
    }
    let city_acked = o.ack(1, s[1]).unwrap().unwrap();
    assert!(o.put_on_wire(1, s[0]).unwrap());
    assert!(!o.put_on_wire(1, s[1]).unwrap(), "acknowledged: not sent again");
    assert_eq!(seqs(&o.sealed_from(0, 10).unwrap()), vec![s[0], s[2]]);
    let produced = 30 + append_rounds(&o, &e1, 8);
    let st = o.stats();
    let (zone, city) = (up(&o, "zone"), up(&o, "city"));
    assert!(st.dropped_readings > 0);
    assert!(
        o.sealed_from(0, 10).unwrap().iter().any(|b| b.seq == s[0]),
        "on city's wire: kept"
    );
    assert!(
        o.sealed_from(0, 10).unwrap().iter().all(|b| b.seq != s[2]),
        "held for city only: dropped first"
    );
    // Every reading is acknowledged, held for, or dropped for each upstream — exactly once.
    let held_pending = st.pending_items;
    assert_eq!(
        zone_acked as u64 + zone.unacked_items + held_pending + zone.dropped_readings,
        produced
    );
    assert_eq!(
        city_acked as u64 + city.unacked_items + held_pending + city.dropped_readings,
        produced
    );
    assert_eq!(
        city.dropped_readings,
        zone.dropped_readings + 10,
        "s0 was dropped for city alone"
    );
    assert_eq!(
        o.lock().counters,
        Counters::recount(&o.tree).unwrap().with_dropped(st.dropped_readings)
    );
    drop(o);
    let o = Outbox::open_with(&dir.path().join("outbox"), two(8_000, &["zone", "city"])).unwrap();
    assert_eq!(
        up(&o, "city").dropped_readings,
        city.dropped_readings,
        "per-upstream drops persist"
    );
    assert_eq!(up(&o, "zone").dropped_readings, zone.dropped_readings);
}

#[test]
fn a_batch_dropped_after_it_was_sent_unacknowledged_is_counted_apart() {
    let dir = tempfile::tempdir().unwrap();
    let (a, z, e1, _) = ids();
    let o = Outbox::open_with(&dir.path().join("outbox"), small(8_000)).unwrap();
    o.append((0..30).map(|i| (e1.clone(), reading(i as f64))).collect(), None)
        .unwrap();
    let s = seqs(&o.seal_up_to(10, 30, &a, &z, 1, Utc::now()).unwrap());
    // s0 published and acknowledged; s1 published, then the session broke
    // before its acknowledgement (it may have been stored); s2 never published.
    assert!(o.put_on_wire(0, s[0]).unwrap());
    assert!(o.put_on_wire(0, s[1]).unwrap());
    assert_eq!(o.ack(0, s[0]).unwrap(), Some(10));
    o.set_on_wire_below(0, 0);
    let produced = 30 + append_rounds(&o, &e1, 8);
    assert!(o.sealed_from(0, 10).unwrap().is_empty(), "s1 and s2 dropped");
    let st = o.stats();
    let p = up(&o, PRIMARY);
    assert_eq!(p.dropped_sent_readings, 10, "s1 alone was sent before it was dropped");
    assert_eq!(p.dropped_readings, st.dropped_readings - 10);
    assert!(p.dropped_readings >= 10, "s2 and pending items never sent");
    assert_eq!(
        10 + st.pending_items + p.dropped_readings + p.dropped_sent_readings,
        produced
    );
    assert_eq!(o.dropped_for(0), (p.dropped_readings, p.dropped_sent_readings));
    drop(o);
    let o = Outbox::open_with(&dir.path().join("outbox"), small(8_000)).unwrap();
    let again = up(&o, PRIMARY);
    assert_eq!(
        (again.dropped_readings, again.dropped_sent_readings),
        (p.dropped_readings, p.dropped_sent_readings),
        "both persist"
    );
}

/// The model test's generator (SplitMix64, one copy in proto).
use zonesync_proto::rng::SplitMix64 as Rng;

/// Random appends, seals (one piece or several ahead), acknowledgements in any order by two upstreams,
/// sessions ending, and restarts, against a small budget; after every step
/// each upstream's produced readings are exactly acknowledged (as the outbox
/// knows it) + held for it + dropped for it, and the counters match a recount.
#[test]
fn model_two_upstreams_every_reading_acked_held_or_dropped_exactly_once() {
    for seed in 1..=4u64 {
        let dir = tempfile::tempdir().unwrap();
        let (a, z, e1, _) = ids();
        let opts = || two(12_000, &["zone", "city"]);
        let mut o = Outbox::open_with(&dir.path().join("outbox"), opts()).unwrap();
        let mut rng = Rng::new(seed);
        let mut produced = 0u64;
        // Per upstream: seq → items it acknowledged, as the outbox knows it.
        let mut acked: [std::collections::BTreeMap<u64, u64>; 2] = Default::default();
        for step in 0..300 {
            match rng.below(10) {
                0..=3 => {
                    let n = 1 + rng.below(20);
                    o.append((0..n).map(|i| (e1.clone(), reading(i as f64))).collect(), None)
                        .unwrap();
                    produced += n;
                }
                4 => {
                    let max_items = 1 + rng.below(15) as usize;
                    if rng.below(2) == 0 {
                        o.seal_up_to(max_items, 40, &a, &z, 1, Utc::now()).unwrap();
                    } else {
                        let pieces = 1 + rng.below(3) as usize;
                        o.seal_ahead(max_items, 20, pieces, &a, &z, 1, Utc::now()).unwrap();
                    }
                }
                5..=6 => {
                    let u = rng.below(2) as usize;
                    let cand = o.sealed_for(u, 0, 6).unwrap();
                    if let Some(b) = cand.get(rng.below(cand.len() as u64) as usize) {
                        if o.put_on_wire(u, b.seq).unwrap() {
                            let items = o.ack(u, b.seq).unwrap().unwrap();
                            assert_eq!(items, b.items);
                            acked[u].insert(b.seq, items as u64);
                        }
                    }
                }
                7 => {
                    // Several at once, in any order, one of them maybe twice.
                    let u = rng.below(2) as usize;
                    let cand = o.sealed_for(u, 0, 8).unwrap();
                    let mut pick: Vec<&Sealed> = cand.iter().filter(|_| rng.below(2) == 0).collect();
                    if let Some(&b) = pick.first() {
                        if rng.below(2) == 0 {
                            pick.push(b);
                        }
                    }
                    pick.reverse();
                    let mut seqs = Vec::new();
                    let mut want = Vec::new();
                    for b in &pick {
                        if seqs.contains(&b.seq) {
                            seqs.push(b.seq);
                            want.push(None);
                        } else if o.put_on_wire(u, b.seq).unwrap() {
                            seqs.push(b.seq);
                            want.push(Some(b.items));
                        }
                    }
                    let got = o.ack_many(u, &seqs).unwrap();
                    assert_eq!(got, want, "seed {seed} step {step}");
                    for (s, items) in seqs.iter().zip(got) {
                        if let Some(items) = items {
                            acked[u].insert(*s, items as u64);
                        }
                    }
                }
                8 => {
                    let u = rng.below(2) as usize;
                    let cand = o.sealed_for(u, 0, 4).unwrap();
                    for b in &cand {
                        assert!(o.put_on_wire(u, b.seq).unwrap());
                    }
                    if rng.below(2) == 0 {
                        o.set_on_wire_below(u, 0);
                    }
                }
                _ => {
                    o.flush().unwrap();
                    drop(o);
                    o = Outbox::open_with(&dir.path().join("outbox"), opts()).unwrap();
                    // Out-of-order acknowledgements of batches still held are
                    // memory only (a batch both had is gone, and stays had).
                    let held: Vec<u64> = seqs(&o.sealed_from(0, usize::MAX).unwrap());
                    for (u, name) in ["zone", "city"].iter().enumerate() {
                        let cursor = up(&o, name).cursor;
                        acked[u].retain(|s, _| *s < cursor || held.binary_search(s).is_err());
                    }
                }
            }
            let st = o.stats();
            assert_eq!(
                o.lock().counters,
                Counters::recount(&o.tree).unwrap().with_dropped(st.dropped_readings),
                "seed {seed} step {step}"
            );
            for (u, name) in ["zone", "city"].iter().enumerate() {
                let s = up(&o, name);
                let held: u64 = o
                    .sealed_from(0, usize::MAX)
                    .unwrap()
                    .iter()
                    .filter(|b| b.seq >= s.cursor && !acked[u].contains_key(&b.seq))
                    .map(|b| b.items as u64)
                    .sum();
                assert_eq!(s.unacked_items, held, "seed {seed} step {step} {name}: unacked items");
                let known: u64 = acked[u].values().sum();
                assert_eq!(
                    known + s.unacked_items + st.pending_items + s.dropped_readings + s.dropped_sent_readings,
                    produced,
                    "seed {seed} step {step} {name}"
                );
            }
        }
    }
}

/// Sealing ahead in pieces makes exactly the batches that as many separate
/// seals would (same numbers, topics, items and readings, in order), in
/// one durable write: the counters, the marks and a reopen agree with it.
/// Chunks are small here (one append each), so a piece boundary falls
/// inside an enterprise's run and the piece after it must read on from
/// the last chunk taken, not from the first still stored.
#[test]
fn sealing_ahead_in_pieces_equals_sealing_piece_by_piece() {
    let (a, z, e1, e2) = ids();
    let now = Utc::now();
    let fill = |o: &Outbox| {
        for i in 0..23 {
            let e = if i % 3 == 0 { &e2 } else { &e1 };
            o.append(
                vec![(e.clone(), reading(i as f64)), (e1.clone(), reading(100.0 + i as f64))],
                None,
            )
            .unwrap();
        }
    };
    let contents = |v: &[Sealed]| {
        v.iter()
            .map(|s| {
                let b: Batch = serde_json::from_slice(&s.payload).unwrap();
                let values: Vec<f64> = b.readings.iter().map(|r| r.value).collect();
                (s.seq, s.topic.clone(), s.items, values)
            })
            .collect::<Vec<_>>()
    };
    let one_by_one = tempfile::tempdir().unwrap();
    let o = Outbox::open(&one_by_one.path().join("outbox"), 1 << 20).unwrap();
    fill(&o);
    let mut expected = Vec::new();
    for _ in 0..3 {
        expected.extend(o.seal_up_to(4, 10, &a, &z, 1, now).unwrap());
    }
    let ahead = tempfile::tempdir().unwrap();
    let path = ahead.path().join("outbox");
    let o = Outbox::open(&path, 1 << 20).unwrap();
    fill(&o);
    let n = o.seal_ahead(4, 10, 3, &a, &z, 1, now).unwrap();
    assert_eq!(n, expected.len());
    let got = o.sealed_from(0, 1000).unwrap();
    assert_eq!(contents(&got), contents(&expected));
    let stats = o.stats();
    assert_eq!(stats.pending_items, 46 - 30);
    assert_eq!(stats.sealed_items, 30);
    assert_eq!(o.next_seq(), expected.last().unwrap().seq + 1);
    let hw = HighWater::open(&identity::high_water_path(&path)).unwrap().get();
    assert_eq!(hw, Some(o.next_seq()), "the mark covers every number sealed");
    drop(o);
    let o = Outbox::open(&path, 1 << 20).unwrap();
    assert_eq!(contents(&o.sealed_from(0, 1000).unwrap()), contents(&expected));
    assert_eq!(o.stats().pending_items, 16);
    assert_eq!(o.stats().identity_rotations, 0, "no rollback seen");
    // The rest, and then nothing left to seal.
    assert!(o.seal_ahead(4, 10, 3, &a, &z, 1, now).unwrap() > 0);
    assert_eq!(o.stats().pending_items, 0);
    assert_eq!(o.seal_ahead(4, 10, 3, &a, &z, 1, now).unwrap(), 0);
}

/// Acknowledgements taken together: out of order, one twice; the cursor
/// moves past a batch this same write removes (it is still in the tree
/// while the write is built), and each answer is what `ack` would give.
#[test]
fn acks_taken_together_move_the_cursor_past_what_they_remove() {
    let dir = tempfile::tempdir().unwrap();
    let (a, z, e1, _) = ids();
    let o = Outbox::open(&dir.path().join("outbox"), 1 << 20).unwrap();
    o.append((0..30).map(|i| (e1.clone(), reading(i as f64))).collect(), None)
        .unwrap();
    let s = seqs(&o.seal_up_to(10, 30, &a, &z, 1, Utc::now()).unwrap());
    for &seq in &s {
        assert!(o.put_on_wire(0, seq).unwrap());
    }
    assert_eq!(
        o.ack_many(0, &[s[1], s[0], s[1]]).unwrap(),
        vec![Some(10), Some(10), None]
    );
    let u = o.stats().upstreams.remove(0);
    assert_eq!((u.cursor, u.unacked_batches, u.unacked_items), (s[2], 1, 10));
    assert_eq!(seqs(&o.sealed_from(0, 10).unwrap()), vec![s[2]]);
    assert_eq!(o.ack_many(0, &[s[2]]).unwrap(), vec![Some(10)]);
    assert_eq!(o.stats().sealed_items, 0);
}
