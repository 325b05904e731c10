//! The link's handling of confirmations against a real outbox, without a
//! broker: what is released, what is kept, and when the identity moves.

use super::*;
use crate::config::{MqttConfig, OutboxConfig};
use crate::outbox::{Item, Sealed};
use zonesync_proto::{Batch, Confirm, Reading, Refusal, REFUSED_REUSED_SEQ};

fn link(dir: &std::path::Path) -> Link {
    let outbox = Arc::new(Outbox::open(&dir.join("outbox"), 1 << 20).unwrap());
    Link {
        agent: AgentId::parse("gw").unwrap(),
        zone: ZoneId::parse("z").unwrap(),
        boot: 1,
        enterprises: Vec::new(),
        mqtt: MqttConfig {
            end_to_end_confirm: true,
            ..MqttConfig::default()
        },
        upstream: 0,
        batching: OutboxConfig::default(),
        outbox,
        stats: Arc::new(LinkStats::default()),
    }
}

fn seal(l: &Link, n: usize) -> Vec<Sealed> {
    let e = EnterpriseId::parse("91350100M000100Y43").unwrap();
    let mut out = Vec::new();
    for i in 0..n {
        let r = Reading {
            indicator: "electricity".into(),
            point: "M1".into(),
            value: i as f64,
            unit: "kWh".into(),
            ts: Some(Utc::now()),
            period: None,
        };
        l.outbox.append(vec![(e.clone(), Item::Reading(r))], None).unwrap();
        out.extend(l.outbox.seal(10, &l.agent, &l.zone, 1, Utc::now()).unwrap());
    }
    out
}

fn confirm(l: &Link, c: &Confirm) -> (Wire, Marks) {
    let mut wire = Wire::default();
    let mut marks = Marks::new(Duration::from_secs(30), Duration::from_secs(60));
    let mut clock = ClockEstimator::new(CLOCK_WINDOW);
    l.on_confirm(&c.to_payload(), &mut wire, &mut marks, &mut clock)
        .unwrap();
    (wire, marks)
}

fn held(l: &Link) -> Vec<u64> {
    l.outbox.sealed_from(0, 100).unwrap().iter().map(|s| s.seq).collect()
}

#[test]
fn a_confirmation_with_our_digest_releases_and_a_mismatched_one_keeps_and_rotates() {
    let dir = tempfile::tempdir().unwrap();
    let l = link(dir.path());
    let s = seal(&l, 2);
    let id = l.outbox.identity();
    let c = Confirm::handled(
        l.agent.clone(),
        id.clone(),
        vec![
            (s[0].seq, zonesync_proto::digest(&s[0].payload)),
            (s[1].seq, zonesync_proto::digest(b"someone else's batch")),
        ],
        vec![],
        Some(s[1].seq),
        Utc::now(),
    );
    confirm(&l, &c);
    assert_eq!(
        held(&l),
        vec![s[1].seq],
        "only the batch whose digest is ours is released"
    );
    assert_eq!(l.stats.confirm_digest_mismatches.load(Ordering::Relaxed), 1);
    assert_eq!(l.stats.identity_rotations.load(Ordering::Relaxed), 1);
    let fresh = l.outbox.identity();
    assert!(fresh.is_some() && fresh != id, "moved to a fresh identity");
    let kept: Batch = serde_json::from_slice(&l.outbox.sealed_one(s[1].seq).unwrap().unwrap().payload).unwrap();
    assert_eq!(kept.outbox, fresh, "the kept batch goes out again under it");
    let p: Presence = serde_json::from_slice(&l.presence(PresenceStatus::Online)).unwrap();
    assert_eq!((p.outbox, p.next_seq), (fresh, l.outbox.next_seq()));

    // A late confirmation about the earlier identity changes nothing.
    let late = Confirm::handled(
        l.agent.clone(),
        id,
        vec![(s[1].seq, zonesync_proto::digest(&s[1].payload))],
        vec![],
        None,
        Utc::now(),
    );
    confirm(&l, &late);
    assert_eq!(held(&l), vec![s[1].seq]);
    assert_eq!(l.stats.confirms_other_outbox.load(Ordering::Relaxed), 1);
}

#[test]
fn a_reused_seq_refusal_rotates_and_a_clock_refusal_keeps_the_batch_and_reannounces() {
    let dir = tempfile::tempdir().unwrap();
    let l = link(dir.path());
    let s = seal(&l, 2);
    let id = l.outbox.identity();
    let ahead = Confirm::handled(
        l.agent.clone(),
        id.clone(),
        vec![],
        vec![Refusal {
            seq: s[0].seq,
            digest: zonesync_proto::digest(&s[0].payload),
            reason: "sent_at_future".into(),
        }],
        None,
        Utc::now(),
    );
    let (wire, _) = confirm(&l, &ahead);
    assert!(wire.reannounce, "a fresh presence before the batch goes again");
    assert_eq!(held(&l), vec![s[0].seq, s[1].seq]);
    assert_eq!(l.stats.refusals.load(Ordering::Relaxed), 1);
    assert_eq!(l.outbox.identity(), id, "no rotation for a clock refusal");

    let reused = Confirm::handled(
        l.agent.clone(),
        id.clone(),
        vec![],
        vec![Refusal {
            seq: s[1].seq,
            digest: zonesync_proto::digest(&s[1].payload),
            reason: REFUSED_REUSED_SEQ.into(),
        }],
        None,
        Utc::now(),
    );
    confirm(&l, &reused);
    assert_eq!(held(&l), vec![s[0].seq, s[1].seq], "nothing released");
    assert_eq!(l.stats.identity_rotations.load(Ordering::Relaxed), 1);
    assert_ne!(l.outbox.identity(), id);
}

#[test]
fn a_confirmation_without_digests_releases_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let l = link(dir.path());
    let s = seal(&l, 2);
    let c = Confirm::from_seqs(l.agent.clone(), vec![s[0].seq, s[1].seq], Utc::now());
    confirm(&l, &c);
    assert!(held(&l).is_empty());
    assert_eq!(l.stats.identity_rotations.load(Ordering::Relaxed), 0);
}

#[test]
fn a_refused_puback_keeps_the_batch_counts_it_and_marks_it_for_a_resend() {
    use super::client::denial;
    use rumqttc::v5::mqttbytes::v5::PubAckReason;
    let dir = tempfile::tempdir().unwrap();
    let mut l = link(dir.path());
    // PUBACK as acknowledgement: only a refusal may keep a batch here.
    l.mqtt.end_to_end_confirm = false;
    let b = seal(&l, 2);
    let (mut wire, mut marks) = (
        Wire::default(),
        Marks::new(Duration::from_secs(30), Duration::from_secs(60)),
    );
    let mut clock = ClockEstimator::new(CLOCK_WINDOW);
    wire.by_pkid.insert(1, Some(b[0].seq));
    wire.by_pkid.insert(2, Some(b[1].seq));
    wire.by_pkid.insert(3, None);
    let mut ack = |pkid, reason| {
        let ev = LinkEvent::Acked {
            pkid,
            denied: denial(reason),
        };
        l.on_event(ev, &mut wire, &mut marks, &mut clock).unwrap();
    };
    ack(1, PubAckReason::NotAuthorized);
    ack(2, PubAckReason::NoMatchingSubscribers);
    ack(3, PubAckReason::QuotaExceeded);
    // The refused batch is held and due again; the accepted one is gone.
    assert_eq!(held(&l), vec![b[0].seq]);
    assert!(marks.contains(b[0].seq) && !marks.contains(b[1].seq));
    assert_eq!(l.stats.broker_denied_batches.load(Ordering::Relaxed), 1);
    assert_eq!(l.stats.broker_denied_presences.load(Ordering::Relaxed), 1);
    assert_eq!(l.stats.batches_acked.load(Ordering::Relaxed), 1);
    let last = l.stats.last_broker_denial().unwrap_or_default();
    assert!(last.contains("/state") && last.contains("0x97"), "{last}");
    // Its presence tells the aggregator.
    let p: Presence = serde_json::from_slice(&l.presence(PresenceStatus::Online)).unwrap();
    assert_eq!(p.broker_denied_batches, 1);
    // Published again and accepted this time: acknowledged, mark gone.
    wire.by_pkid.insert(4, Some(b[0].seq));
    l.on_event(
        LinkEvent::Acked { pkid: 4, denied: None },
        &mut wire,
        &mut marks,
        &mut clock,
    )
    .unwrap();
    assert_eq!(held(&l), Vec::<u64>::new());
    assert!(marks.is_empty());
}

#[test]
fn the_wire_bounds_the_items_on_it_and_always_lets_one_batch_go() {
    let mut w = Wire::default();
    // Nothing on the wire: 2,000 items make room for four batches of 500 ...
    assert_eq!(w.room(16, 2000, 500), 4);
    // ... the batch count still bounds it ...
    assert_eq!(w.room(3, 2000, 500), 3);
    // ... and a bound below one batch still lets one go (a drain never stalls).
    assert_eq!(w.room(16, 100, 500), 1);
    w.sent(1, 500);
    w.sent(2, 400);
    assert_eq!(w.items, 900);
    // 1,100 items left: three more batches, passing the bound by less than one.
    assert_eq!(w.room(16, 2000, 500), 3);
    w.sent(3, 500);
    w.sent(4, 500);
    w.sent(5, 500);
    assert_eq!(w.room(16, 2000, 500), 0);
    // A resend of a batch still on the wire is not counted twice.
    w.sent(5, 500);
    assert_eq!(w.items, 2400);
    w.released(1);
    assert_eq!(w.room(16, 2000, 500), 1);
    // A PUBACK for a batch not tracked (a presence) changes nothing.
    w.released(99);
    assert_eq!(w.items, 1900);
    for s in 2..=5 {
        w.released(s);
    }
    assert_eq!((w.items, w.items_of.len()), (0, 0));
}
