//! The outbox's identity, its high-water mark and rotation: a number is
//! never issued twice under one identity, whatever the store forgets.

use super::*;
use std::collections::BTreeMap;

fn ids() -> (AgentId, ZoneId, EnterpriseId) {
    (
        AgentId::parse("gw").unwrap(),
        ZoneId::parse("z").unwrap(),
        EnterpriseId::parse("91350100M000100Y43").unwrap(),
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

/// Appends one reading and seals it: one batch.
fn seal_one(o: &Outbox, v: f64) -> Sealed {
    let (a, z, e) = ids();
    o.append(vec![(e, reading(v))], None).unwrap();
    let mut s = o.seal(10, &a, &z, 1, Utc::now()).unwrap();
    assert_eq!(s.len(), 1);
    s.remove(0)
}

fn batch(s: &Sealed) -> Batch {
    serde_json::from_slice(&s.payload).unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn two() -> OutboxOptions {
    OutboxOptions {
        upstreams: vec!["zone".into(), "city".into()],
        ..OutboxOptions::from(&OutboxConfig::default())
    }
}

#[test]
fn a_new_outbox_draws_a_random_identity_keeps_it_and_numbers_from_1() {
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2) = (dir.path().join("one"), dir.path().join("two"));
    let id;
    {
        let o = Outbox::open(&p1, 1 << 20).unwrap();
        id = o.identity().expect("a running outbox has an identity");
        assert_eq!(o.next_seq(), 1, "never from the clock");
        let s = seal_one(&o, 1.0);
        assert_eq!(s.seq, 1);
        assert_eq!(
            batch(&s).outbox.as_ref(),
            Some(&id),
            "every sealed batch names its outbox"
        );
        assert_eq!(o.stats().outbox_id.as_ref(), Some(&id));
        assert_eq!(o.stats().seq_high_water, Some(2), "the mark is at the next number");
    }
    assert!(
        identity::high_water_path(&p1).exists(),
        "the mark lives beside the store"
    );
    let other = Outbox::open(&p2, 1 << 20).unwrap();
    assert_ne!(other.identity(), Some(id.clone()), "drawn at random, per outbox");
    let o = Outbox::open(&p1, 1 << 20).unwrap();
    assert_eq!(o.identity(), Some(id.clone()), "kept across a reopen");
    assert_eq!(seal_one(&o, 2.0).seq, 2);
    assert_eq!(o.stats().store_rollbacks, 0);
    assert_eq!(o.stats().identity_rotations, 0);
}

#[test]
fn an_outbox_from_before_identities_gets_one_and_keeps_its_numbering() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox");
    let held;
    {
        let o = Outbox::open(&path, 1 << 20).unwrap();
        held = seal_one(&o, 1.0);
        // What an older agent left: no identity, no mark, a clock-based number.
        o.tree.remove(identity::META_ID).unwrap();
        o.tree
            .insert(META_NEXT_SEQ, 1_700_000_000_000_000u64.to_be_bytes())
            .unwrap();
        o.flush().unwrap();
    }
    std::fs::remove_file(identity::high_water_path(&path)).unwrap();
    let o = Outbox::open(&path, 1 << 20).unwrap();
    assert!(o.identity().is_some());
    assert_eq!(o.next_seq(), 1_700_000_000_000_000, "kept");
    assert_eq!(o.stats().seq_high_water, Some(1_700_000_000_000_000));
    assert_eq!(o.stats().store_rollbacks, 0, "no mark yet is not a rollback");
    assert_eq!(
        o.sealed_one(held.seq).unwrap().unwrap().payload,
        held.payload,
        "held batches are resent unchanged"
    );
}

/// Seals one batch, snapshots the store directory, seals two more, puts the
/// snapshot back (what a store losing its newest writes, or a restore from
/// backup, does), and reopens.
#[test]
fn a_rolled_back_store_never_reissues_a_seq_and_moves_to_a_fresh_identity() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox");
    let copy = dir.path().join("copy");
    let mut published: BTreeMap<u64, (Option<OutboxId>, Vec<u8>)> = BTreeMap::new();
    let first_id;
    {
        let o = Outbox::open(&path, 1 << 20).unwrap();
        first_id = o.identity();
        let s = seal_one(&o, 1.0);
        published.insert(s.seq, (batch(&s).outbox, s.payload.clone()));
        o.flush().unwrap();
    }
    drop(Outbox::open(&path, 1 << 20).unwrap());
    copy_dir(&path, &copy);
    {
        let o = Outbox::open(&path, 1 << 20).unwrap();
        for v in [2.0, 3.0] {
            let s = seal_one(&o, v);
            published.insert(s.seq, (batch(&s).outbox, s.payload.clone()));
        }
        assert_eq!(o.next_seq(), 4);
    }
    // No clean open in between: only the seals themselves raised the mark.
    std::thread::sleep(std::time::Duration::from_millis(200));
    std::fs::remove_dir_all(&path).unwrap();
    copy_dir(&copy, &path);

    let o = Outbox::open(&path, 1 << 20).unwrap();
    assert_eq!(o.next_seq(), 4, "continues from the mark, not from the store's 2");
    let stats = o.stats();
    assert_eq!(stats.store_rollbacks, 1);
    assert_eq!(stats.identity_rotations, 1);
    let fresh = o.identity();
    assert!(fresh.is_some() && fresh != first_id, "a fresh identity");
    // The batch the copy still held is sent again under the fresh identity.
    let held = o.sealed_from(0, 10).unwrap();
    assert_eq!(held.iter().map(|s| s.seq).collect::<Vec<_>>(), vec![1]);
    assert_eq!(batch(&held[0]).outbox, fresh);
    // Whatever is sealed now never names a mark published with other bytes.
    for v in [4.0, 5.0] {
        let s = seal_one(&o, v);
        let mark = (batch(&s).outbox, s.seq);
        for (seq, (id, payload)) in &published {
            assert!(
                (id.clone(), *seq) != mark || *payload == s.payload,
                "mark {mark:?} reissued for other bytes"
            );
        }
        assert!(s.seq >= 4, "seq {} was handed out before the rollback", s.seq);
    }
    drop(o);
    let o = Outbox::open(&path, 1 << 20).unwrap();
    assert_eq!(o.stats().store_rollbacks, 1, "counted once, not at every open");
    assert_eq!(o.identity(), fresh);
}

#[test]
fn rotation_rewrites_held_batches_and_keeps_seqs_and_cursors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox");
    let o = Outbox::open_with(&path, two()).unwrap();
    let before: Vec<Sealed> = (0..3).map(|i| seal_one(&o, f64::from(i))).collect();
    assert_eq!(o.ack(0, before[0].seq).unwrap(), Some(1));
    let cursors: Vec<u64> = o.stats().upstreams.iter().map(|u| u.cursor).collect();
    let old = o.identity();

    let new = o.rotate_identity().unwrap();
    assert_ne!(Some(new.clone()), old);
    assert_eq!(o.identity(), Some(new.clone()));
    let after = o.sealed_from(0, 10).unwrap();
    assert_eq!(
        after.iter().map(|s| s.seq).collect::<Vec<_>>(),
        before.iter().map(|s| s.seq).collect::<Vec<_>>(),
        "same numbers: fresh under the new identity"
    );
    for (a, b) in after.iter().zip(&before) {
        let (ba, bb) = (batch(a), batch(b));
        assert_eq!(ba.outbox.as_ref(), Some(&new));
        assert_eq!((a.topic.as_str(), a.items), (b.topic.as_str(), b.items));
        assert_eq!(ba.readings, bb.readings);
        assert_eq!((ba.sent_at, ba.boot, ba.backfill), (bb.sent_at, bb.boot, bb.backfill));
    }
    let stats = o.stats();
    assert_eq!(stats.upstreams.iter().map(|u| u.cursor).collect::<Vec<_>>(), cursors);
    assert_eq!(
        o.sealed_for(0, 0, 10).unwrap().len(),
        2,
        "what upstream 0 acknowledged stays acknowledged"
    );
    assert_eq!(stats.identity_rotations, 1);
    assert_eq!(stats.store_rollbacks, 0);
    assert_eq!(
        o.lock().counters,
        Counters::recount(&o.tree).unwrap(),
        "bytes held follow the rewrite"
    );
    assert_eq!(seal_one(&o, 9.0).seq, 4, "numbering goes on");
    drop(o);
    let o = Outbox::open_with(&path, two()).unwrap();
    assert_eq!(o.identity(), Some(new), "durable");
    assert_eq!(o.stats().identity_rotations, 1);
}

#[test]
fn inspecting_writes_no_mark_and_cannot_seal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox");
    drop(Outbox::open(&path, 1 << 20).unwrap());
    std::fs::remove_file(identity::high_water_path(&path)).unwrap();
    let o = Outbox::inspect(&path, OutboxOptions::from(&OutboxConfig::default())).unwrap();
    assert!(!identity::high_water_path(&path).exists());
    let (a, z, e) = ids();
    o.append(vec![(e, reading(1.0))], None).unwrap();
    assert!(matches!(
        o.seal(10, &a, &z, 1, Utc::now()),
        Err(OutboxError::Inspecting)
    ));
    assert!(matches!(o.rotate_identity(), Err(OutboxError::Inspecting)));
}

#[test]
fn a_damaged_store_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox");
    {
        let o = Outbox::open(&path, 1 << 20).unwrap();
        for i in 0..50 {
            seal_one(&o, f64::from(i));
        }
    }
    drop(Outbox::open(&path, 1 << 20).unwrap());
    let file = path.join(super::store::FILE);
    let pristine = dir.path().join("pristine");
    std::fs::copy(&file, &pristine).unwrap();
    let len = std::fs::metadata(&file).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len / 3)
        .unwrap();
    // The store may recover what precedes the cut; it must not panic either
    // way, and what it lost is then caught by the mark.
    match Outbox::open(&path, 1 << 20) {
        Err(e) => assert!(e.to_string().contains(&path.display().to_string()), "{e}"),
        Ok(o) => assert_eq!(o.next_seq(), 51, "never below the mark"),
    }
    // Bytes flipped in the middle of the file.
    std::fs::copy(&pristine, &file).unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b = !*b;
    }
    std::fs::write(&file, bytes).unwrap();
    match Outbox::open(&path, 1 << 20) {
        Err(e) => assert!(e.to_string().contains(&path.display().to_string()), "{e}"),
        Ok(o) => assert_eq!(o.next_seq(), 51, "never below the mark"),
    }
}

/// An outbox an earlier agent kept in sled (same keys and values) is moved
/// into redb at the first start, whole: counters, cursors, identity,
/// numbering and every batch; sled's files are gone after it, and `status`
/// before that start says what to do instead of moving it.
#[test]
fn a_sled_outbox_is_moved_whole_at_the_first_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox");
    let old = dir.path().join("old");
    let (stats, sealed) = {
        let o = Outbox::open(&path, 1 << 20).unwrap();
        for i in 0..5 {
            seal_one(&o, f64::from(i));
        }
        let e = ids().2;
        let more = (0..3).map(|i| (e.clone(), reading(f64::from(i)))).collect();
        o.append(more, Some(("sim", b"c1"))).unwrap();
        o.ack(0, 1).unwrap();
        o.flush().unwrap();
        // What an earlier agent would have left: the same entries in sled.
        let db = sled::Config::new().path(&old).open().unwrap();
        let t = db.open_tree("outbox").unwrap();
        for kv in o.tree.range::<&[u8], _>(..) {
            let (k, v) = kv.unwrap();
            t.insert(k, v).unwrap();
        }
        db.flush().unwrap();
        (o.stats(), o.sealed_from(0, 100).unwrap())
    };
    for mark in [identity::high_water_path(&path), identity::done_path(&path)] {
        let mut to = old.as_os_str().to_owned();
        to.push(
            mark.extension()
                .map(|e| format!(".{}", e.to_string_lossy()))
                .unwrap_or_default(),
        );
        std::fs::copy(&mark, std::path::PathBuf::from(to)).unwrap();
    }
    // sled releases its lock from a background thread.
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(matches!(
        Outbox::inspect(&old, OutboxOptions::from(&crate::config::OutboxConfig::default())),
        Err(OutboxError::NotMigrated(_))
    ));
    let o = Outbox::open(&old, 1 << 20).unwrap();
    let moved = o.stats();
    assert_eq!(moved.pending_items, stats.pending_items);
    assert_eq!(moved.sealed_batches, stats.sealed_batches);
    assert_eq!(moved.held_bytes, stats.held_bytes);
    assert_eq!(moved.next_seq, stats.next_seq);
    assert_eq!(moved.outbox_id, stats.outbox_id);
    assert_eq!(moved.upstreams, stats.upstreams);
    assert_eq!(o.cursor("sim").unwrap().as_deref(), Some(&b"c1"[..]));
    let again = o.sealed_from(0, 100).unwrap();
    assert_eq!(
        again.iter().map(|s| (s.seq, &s.payload)).collect::<Vec<_>>(),
        sealed.iter().map(|s| (s.seq, &s.payload)).collect::<Vec<_>>()
    );
    assert!(
        !old.join("db").exists() && !old.join("conf").exists(),
        "sled's files removed"
    );
    assert_eq!(o.stats().store_rollbacks, 0);
}

/// A kill between the first mark's sync and the store's flush: the mark is
/// past the store, `seq-done` is not. Nothing of that seal was published, so
/// the outbox skips its numbers and keeps its identity; a store below
/// `seq-done` (published numbers lost) still rotates.
#[test]
fn a_seal_cut_short_by_a_kill_skips_its_numbers_and_keeps_the_identity() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox");
    let id;
    {
        let o = Outbox::open(&path, 1 << 20).unwrap();
        seal_one(&o, 1.0);
        id = o.identity().unwrap();
        assert_eq!(o.next_seq(), 2);
    }
    // What the cut-short seal left: the first mark raised to 9, the store and
    // `seq-done` at 2.
    HighWater::open(&identity::high_water_path(&path))
        .unwrap()
        .raise(9)
        .unwrap();
    {
        let o = Outbox::open(&path, 1 << 20).unwrap();
        assert_eq!(o.identity().as_ref(), Some(&id), "no rotation");
        assert_eq!(o.next_seq(), 9, "the numbers of the cut-short seal are skipped");
        assert_eq!(o.stats().store_rollbacks, 0);
        let next = seal_one(&o, 2.0);
        assert_eq!(next.seq, 9);
    }
    // Published numbers lost: `seq-done` past the store.
    HighWater::open(&identity::done_path(&path)).unwrap().raise(20).unwrap();
    HighWater::open(&identity::high_water_path(&path))
        .unwrap()
        .raise(20)
        .unwrap();
    let o = Outbox::open(&path, 1 << 20).unwrap();
    assert_ne!(o.identity().as_ref(), Some(&id), "a rollback rotates");
    assert_eq!(o.next_seq(), 20);
    assert_eq!(o.stats().store_rollbacks, 1);
}
