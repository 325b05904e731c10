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
        let o = Outbox::open(dir.path(), 1 << 20).unwrap();
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
        assert!(first > 1_700_000_000_000_000, "a new outbox starts at the clock in µs");
        let s = o.seal(10, &a, &z, 1, Utc::now()).unwrap();
        assert_eq!(s.len(), 2, "one batch per enterprise");
        assert_eq!((s[0].seq, s[0].items, s[1].seq, s[1].items), (first, 2, first + 1, 1));
        o.ack(0, first).unwrap();
        o.flush().unwrap();
    }
    let o = Outbox::open(dir.path(), 1 << 20).unwrap();
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
    let o = Outbox::open(dir.path(), 1 << 20).unwrap();
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
        let o = Outbox::open_with(dir.path(), small(1 << 30)).unwrap();
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
    let o = Outbox::open_with(dir.path(), small(1 << 30)).unwrap();
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
    let o = Outbox::open_with(dir.path(), small(6_000)).unwrap();
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
    let o = Outbox::open_with(dir.path(), small(6_000)).unwrap();
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
    let o = Outbox::open_with(dir.path(), small(4_000)).unwrap();
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
    let o = Outbox::open_with(dir.path(), small(1 << 30)).unwrap();
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
