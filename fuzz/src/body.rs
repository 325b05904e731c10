//! One fuzz input → the aggregator's decode-and-validate path, with the
//! invariants a refusal or an acceptance must keep.
//!
//! Input layout: if the bytes hold a newline, what comes before it is the
//! topic (lossily decoded) and the rest the payload; otherwise the whole input
//! is the payload on a fixed, valid data topic. That lets the fuzzer reach
//! both the topic parser and the topic/payload identity checks.

use chrono::{DateTime, Utc};
use std::sync::OnceLock;
use zonesync_proto::{Catalog, Limits, Location, Presence, Topic, TopicKind, Validator};

/// The topic used when the input does not carry one.
const DEFAULT_TOPIC: &str = "zonesync/v1/test-zone/gw-x/data/91410000MA1000001Y";

/// A fixed "now", so a crash found once reproduces forever.
fn now() -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_795_000_000, 0).unwrap_or_default()
}

/// The aggregator's validator with the built-in catalog and default limits,
/// built once (parsing the catalog per input would cost most of each run).
fn validator() -> &'static Validator {
    static V: OnceLock<Validator> = OnceLock::new();
    V.get_or_init(|| match Catalog::builtin() {
        Ok(c) => Validator::new(c, Limits::default()),
        Err(e) => panic!("the built-in catalog must load: {e}"),
    })
}

/// Runs one input; panics only when an invariant breaks.
pub fn check(data: &[u8]) {
    let (topic_text, payload) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (String::from_utf8_lossy(&data[..i]).into_owned(), &data[i + 1..]),
        None => (DEFAULT_TOPIC.to_owned(), data),
    };
    let v = validator();
    let max_abs = v.limits.max_abs_value;
    let max_bytes = v.limits.max_payload_bytes;
    let topic = Topic::parse(&topic_text).ok();

    // Presence decoding is the other thing the aggregator does with raw bytes.
    let _ = serde_json::from_slice::<Presence>(payload);

    // The fast path (typed, borrowed) and the detailed one (JSON tree) must
    // agree on every input: the same refusal or the same accepted batch.
    let fast = v.batch(topic.as_ref(), payload, now());
    let detailed = v.batch_detailed(topic.as_ref(), payload, now());
    match (&fast, &detailed) {
        (Ok(a), Ok(b)) => {
            assert_eq!(
                (
                    &a.agent,
                    a.boot,
                    &a.outbox,
                    a.seq,
                    &a.digest,
                    a.sent_at,
                    &a.zone,
                    &a.enterprise,
                    a.backfill
                ),
                (
                    &b.agent,
                    b.boot,
                    &b.outbox,
                    b.seq,
                    &b.digest,
                    b.sent_at,
                    &b.zone,
                    &b.enterprise,
                    b.backfill
                ),
                "the two paths accepted different envelopes"
            );
            assert_eq!(a.readings, b.readings, "the two paths accepted different readings");
            assert_eq!(
                a.declarations, b.declarations,
                "the two paths accepted different declarations"
            );
            assert_eq!(a.refused, b.refused, "the two paths refused different items");
        }
        (Err(a), Err(b)) => assert_eq!(a, b, "the two paths refused with different reasons"),
        _ => panic!(
            "one path accepted what the other refused: fast {:?}, detailed {:?}",
            fast.is_ok(),
            detailed.is_ok()
        ),
    }
    match fast {
        Err(problems) => {
            // A refusal always says why, with a label the metrics know.
            assert!(!problems.is_empty(), "refused without a reason");
            for p in &problems {
                assert_eq!(p.at, Location::Envelope, "whole-batch refusals are envelope problems");
                assert!(!p.label().is_empty());
                assert!(!p.to_string().is_empty());
            }
            if payload.len() > max_bytes {
                assert_eq!(problems[0].label(), "too_large");
            }
        }
        Ok(acc) => {
            assert!(payload.len() <= max_bytes, "oversized payload accepted");
            assert!(std::str::from_utf8(payload).is_ok(), "non-UTF-8 payload accepted");
            // Identity: what is stored is what the topic says.
            if let Some(t) = &topic {
                assert_eq!(acc.zone, t.zone, "zone differs from the topic");
                assert_eq!(acc.agent, t.agent, "agent differs from the topic");
                match &t.kind {
                    TopicKind::Data(e) => assert_eq!(&acc.enterprise, e, "enterprise differs from the topic"),
                    TopicKind::State => panic!("a batch was accepted on a state topic"),
                }
            }
            for r in &acc.readings {
                assert!(r.value.is_finite(), "non-finite value accepted: {r:?}");
                assert!(r.value.abs() <= max_abs, "out-of-range value accepted: {r:?}");
            }
            for p in &acc.refused {
                assert_ne!(p.at, Location::Envelope, "item refusals name their item");
                assert!(!p.label().is_empty());
            }
        }
    }
}
