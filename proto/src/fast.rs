//! The fast path of [`crate::Validator::batch`]: a batch read straight into
//! typed fields that borrow the payload, instead of a generic JSON tree of
//! maps and strings (which was most of the aggregator's ingest time). It
//! accepts only what it can judge completely — a batch with no problem at
//! all — and returns `None` for anything else, which the detailed path then
//! reads again and names every problem of. So it can only be faster, never
//! different: for a valid batch both paths build the same `Accepted`.

use crate::ids::{AgentId, EnterpriseId, OutboxId, ZoneId};
use crate::topic::{Topic, TopicKind};
use crate::validate::{parse_ts, Accepted, CanonicalReading, Validator};
use crate::wire::WIRE_VERSION;
use crate::IndicatorKind;
use chrono::{DateTime, Utc};
use compact_str::CompactString;
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
struct Envelope<'a> {
    v: u64,
    #[serde(borrow)]
    agent: &'a str,
    boot: u64,
    seq: u64,
    #[serde(borrow)]
    sent_at: &'a str,
    #[serde(borrow)]
    zone: &'a str,
    #[serde(borrow)]
    enterprise: &'a str,
    #[serde(default)]
    backfill: Option<bool>,
    #[serde(default, borrow)]
    outbox: Option<&'a str>,
    #[serde(default, borrow)]
    readings: Option<Vec<Item<'a>>>,
    #[serde(default)]
    declarations: Option<Vec<Value>>,
}

#[derive(Deserialize)]
struct Item<'a> {
    #[serde(borrow)]
    indicator: &'a str,
    #[serde(default, borrow)]
    point: Option<&'a str>,
    value: f64,
    #[serde(borrow)]
    unit: &'a str,
    #[serde(default, borrow)]
    ts: Option<&'a str>,
    #[serde(default, borrow)]
    period: Option<&'a str>,
}

/// The batch, if it is valid in every respect; `None` sends it down the detailed path.
pub(crate) fn batch(v: &Validator, topic: Option<&Topic>, payload: &[u8], now: DateTime<Utc>) -> Option<Accepted> {
    // serde_json checks UTF-8 only in the strings it keeps: bytes in a field
    // it skips would pass unchecked (the fuzzer found one), so check it all.
    let text = std::str::from_utf8(payload).ok()?;
    let e: Envelope<'_> = serde_json::from_str(text).ok()?;
    if e.v != u64::from(WIRE_VERSION) {
        return None;
    }
    let agent = AgentId::parse(e.agent).ok()?;
    let zone = ZoneId::parse(e.zone).ok()?;
    let enterprise = EnterpriseId::parse_with_test_prefix(e.enterprise, v.limits.test_prefix.as_deref()).ok()?;
    let outbox = match e.outbox {
        Some(o) => Some(OutboxId::parse(o).ok()?),
        None => None,
    };
    let sent_at = parse_ts(e.sent_at).ok()?;
    if sent_at > now + v.limits.max_future_skew {
        return None;
    }
    let readings = e.readings.unwrap_or_default();
    let declarations = e.declarations.unwrap_or_default();
    if readings.len() + declarations.len() > v.limits.max_items {
        return None;
    }
    if let Some(t) = topic {
        let data_for = match &t.kind {
            TopicKind::Data(id) => id == &enterprise,
            TopicKind::State => false,
        };
        if t.zone != zone || t.agent != agent || !data_for {
            return None;
        }
    }
    let mut accepted = Accepted {
        agent,
        boot: e.boot,
        outbox,
        seq: e.seq,
        digest: crate::wire::digest(payload),
        sent_at,
        zone,
        enterprise,
        backfill: e.backfill.unwrap_or(false),
        readings: Vec::with_capacity(readings.len()),
        declarations: Vec::with_capacity(declarations.len()),
        refused: Vec::new(),
    };
    for r in &readings {
        accepted.readings.push(reading(v, r, now)?);
    }
    for d in &declarations {
        accepted.declarations.push(v.declaration(d).ok()?);
    }
    Some(accepted)
}

fn reading(v: &Validator, r: &Item<'_>, now: DateTime<Utc>) -> Option<CanonicalReading> {
    let ind = v.catalog.get(r.indicator)?;
    if ind.kind == IndicatorKind::Declaration {
        return None;
    }
    let point = match r.point {
        None => CompactString::default(),
        Some(p) if p.len() <= 64 && !p.chars().any(char::is_control) => CompactString::from(p),
        Some(_) => return None,
    };
    let value = v.canonical_value(ind, r.value, r.unit).ok()?;
    let at = v.time_of(ind, r.ts, r.period, now).ok()?;
    Some(CanonicalReading {
        indicator: CompactString::from(ind.code.as_str()),
        point,
        value,
        at,
    })
}

#[cfg(test)]
mod tests {
    use crate::validate::{Limits, Validator};
    use crate::{Catalog, Topic};
    use serde_json::json;

    fn validator() -> Validator {
        Validator::new(Catalog::builtin().unwrap(), Limits::default())
    }

    fn now() -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::parse_from_rfc3339("2026-11-23T08:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc)
    }

    /// The two paths agree on a valid batch, and the fast one declines every
    /// batch with a problem (which the detailed path then names).
    #[test]
    fn the_fast_path_builds_what_the_detailed_one_does_and_declines_the_rest() {
        let v = validator();
        let e = "91350100M000100Y43";
        let good = json!({
            "v": 1, "agent": "gw-1", "boot": 2, "seq": 7, "sent_at": "2026-11-23T07:59:00Z",
            "zone": "jiyuan-hitech", "enterprise": e, "outbox": "0123456789abcdef",
            "readings": [
                {"indicator": "electricity", "point": "M1", "value": 12.5, "unit": "MWh", "ts": "2026-11-23T07:45:00Z"},
                {"indicator": "value_added", "value": 3, "unit": "10k_yuan", "period": "2026-10"}
            ],
            "declarations": [{"indicator": "dt_maturity", "value": 3}]
        });
        let payload = serde_json::to_vec(&good).unwrap();
        let topic = Topic::parse(&format!("zonesync/v1/jiyuan-hitech/gw-1/data/{e}")).unwrap();
        let fast = super::batch(&v, Some(&topic), &payload, now()).expect("fast path takes a valid batch");
        let slow = v.batch_detailed(Some(&topic), &payload, now()).unwrap();
        assert_eq!(
            (
                &fast.agent,
                fast.boot,
                &fast.outbox,
                fast.seq,
                &fast.digest,
                fast.sent_at
            ),
            (
                &slow.agent,
                slow.boot,
                &slow.outbox,
                slow.seq,
                &slow.digest,
                slow.sent_at
            )
        );
        assert_eq!(
            (&fast.zone, &fast.enterprise, fast.backfill),
            (&slow.zone, &slow.enterprise, slow.backfill)
        );
        assert_eq!(fast.readings, slow.readings);
        assert_eq!(fast.declarations, slow.declarations);
        assert!(fast.refused.is_empty() && slow.refused.is_empty());
        let bad = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut b = good.clone();
            f(&mut b);
            let p = serde_json::to_vec(&b).unwrap();
            assert!(super::batch(&v, Some(&topic), &p, now()).is_none(), "{b}");
        };
        bad(&|b| b["readings"][0]["unit"] = json!("furlong"));
        bad(&|b| b["readings"][0]["value"] = json!("12"));
        bad(&|b| b["readings"][0]["value"] = json!(-1.0));
        bad(&|b| b["readings"][1]["ts"] = json!("2026-11-23T07:45:00Z"));
        bad(&|b| b["readings"][0]["ts"] = json!("2099-01-01T00:00:00Z"));
        bad(&|b| b["sent_at"] = json!("2099-01-01T00:00:00Z"));
        bad(&|b| b["agent"] = json!("gw-2"));
        bad(&|b| b["v"] = json!(2));
        bad(&|b| b["seq"] = json!(-1));
        bad(&|b| b["outbox"] = json!("x/y"));
        bad(&|b| b["declarations"][0]["value"] = json!(99));
        bad(&|b| b["readings"][0]["point"] = json!("M\u{1}"));
        // Invalid UTF-8 in a field neither path reads is still refused whole.
        let mut odd = payload.clone();
        let tail = odd.len() - 1;
        odd.truncate(tail);
        odd.extend_from_slice(b",\"x\":\"\xff\xfe\"}");
        assert!(super::batch(&v, Some(&topic), &odd, now()).is_none());
        let refused = v.batch(Some(&topic), &odd, now()).unwrap_err();
        assert_eq!(refused[0].label(), "not_utf8");
        // Escaped text cannot be borrowed: declined, then read by the detailed path.
        let escaped = String::from_utf8(payload.clone())
            .unwrap()
            .replace("\"M1\"", "\"M\\u0031\"");
        assert!(super::batch(&v, Some(&topic), escaped.as_bytes(), now()).is_none());
        assert_eq!(
            v.batch(Some(&topic), escaped.as_bytes(), now()).unwrap().readings[0].point,
            "M1"
        );
    }
}
