//! The stored form of an accepted batch: compact binary, one record per
//! batch, written once and read back in arrival order by the rebuild.
//!
//! Layout (integers big-endian, strings u16 length + UTF-8, JSON u32 length):
//! version u8 (1), received µs i64, sent_at µs i64, boot u64, seq u64,
//! backfill u8, zone, agent, outbox (empty: legacy numbering), enterprise,
//! digest; u32 reading count, each: indicator, point, value f64 bits, time
//! tag u8 (`t` + µs i64 | `p` + period text); u32 declaration count, each:
//! code, value as JSON.

use chrono::{DateTime, Utc};
use zonesync_proto::{
    Accepted, AgentId, CanonicalReading, DeclaredValue, EnterpriseId, OutboxId, Period, ReadingTime, ZoneId,
};

const VERSION: u8 = 1;

/// A batch as the store keeps it: what was accepted, and when it arrived.
#[derive(Debug, Clone)]
pub struct Record {
    /// When the aggregator received it.
    pub received: DateTime<Utc>,
    /// The batch as validated (`refused` is not kept: those went to dead letters).
    pub batch: Accepted,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    let n = b.len().min(u16::MAX as usize);
    out.extend_from_slice(&(n as u16).to_be_bytes());
    out.extend_from_slice(&b[..n]);
}

/// Encodes a record.
pub fn encode(received: DateTime<Utc>, a: &Accepted) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + a.readings.len() * 40);
    out.push(VERSION);
    out.extend_from_slice(&received.timestamp_micros().to_be_bytes());
    out.extend_from_slice(&a.sent_at.timestamp_micros().to_be_bytes());
    out.extend_from_slice(&a.boot.to_be_bytes());
    out.extend_from_slice(&a.seq.to_be_bytes());
    out.push(u8::from(a.backfill));
    put_str(&mut out, a.zone.as_str());
    put_str(&mut out, a.agent.as_str());
    put_str(&mut out, a.outbox.as_ref().map_or("", |o| o.as_str()));
    put_str(&mut out, a.enterprise.as_str());
    put_str(&mut out, &a.digest);
    out.extend_from_slice(&(a.readings.len() as u32).to_be_bytes());
    for r in &a.readings {
        put_str(&mut out, &r.indicator);
        put_str(&mut out, &r.point);
        out.extend_from_slice(&r.value.to_bits().to_be_bytes());
        match r.at {
            ReadingTime::Ts(t) => {
                out.push(b't');
                out.extend_from_slice(&t.timestamp_micros().to_be_bytes());
            }
            ReadingTime::Period(p) => {
                out.push(b'p');
                put_str(&mut out, &p.to_string());
            }
        }
    }
    out.extend_from_slice(&(a.declarations.len() as u32).to_be_bytes());
    for (code, v) in &a.declarations {
        put_str(&mut out, code);
        let json = serde_json::to_vec(v).unwrap_or_default();
        out.extend_from_slice(&(json.len() as u32).to_be_bytes());
        out.extend_from_slice(&json);
    }
    out
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.b.get(..n)?, self.b.get(n..)?);
        self.b = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn str(&mut self) -> Option<&'a str> {
        let n = u16::from_be_bytes(self.take(2)?.try_into().ok()?) as usize;
        std::str::from_utf8(self.take(n)?).ok()
    }
    fn time(&mut self) -> Option<DateTime<Utc>> {
        DateTime::<Utc>::from_timestamp_micros(self.i64()?)
    }
}

/// Decodes a record; `None` if it is not one this version wrote.
pub fn decode(b: &[u8]) -> Option<Record> {
    let mut r = Reader { b };
    if r.u8()? != VERSION {
        return None;
    }
    let received = r.time()?;
    let sent_at = r.time()?;
    let boot = r.u64()?;
    let seq = r.u64()?;
    let backfill = r.u8()? != 0;
    let zone = ZoneId::parse(r.str()?).ok()?;
    let agent = AgentId::parse(r.str()?).ok()?;
    let outbox = match r.str()? {
        "" => None,
        o => Some(OutboxId::parse(o).ok()?),
    };
    let enterprise = EnterpriseId::from_stored(r.str()?)?;
    let digest = r.str()?.to_owned();
    let n = r.u32()? as usize;
    let mut readings = Vec::with_capacity(n.min(100_000));
    for _ in 0..n {
        let indicator = r.str()?.into();
        let point = r.str()?.into();
        let value = f64::from_bits(r.u64()?);
        let at = match r.u8()? {
            b't' => ReadingTime::Ts(r.time()?),
            b'p' => ReadingTime::Period(Period::parse(r.str()?).ok()?),
            _ => return None,
        };
        readings.push(CanonicalReading {
            indicator,
            point,
            value,
            at,
        });
    }
    let n = r.u32()? as usize;
    let mut declarations = Vec::with_capacity(n.min(10_000));
    for _ in 0..n {
        let code = r.str()?.to_owned();
        let len = r.u32()? as usize;
        let v: DeclaredValue = serde_json::from_slice(r.take(len)?).ok()?;
        declarations.push((code, v));
    }
    Some(Record {
        received,
        batch: Accepted {
            agent,
            boot,
            outbox,
            seq,
            digest,
            sent_at,
            zone,
            enterprise,
            backfill,
            readings,
            declarations,
            refused: Vec::new(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{id, register, utc};

    #[test]
    fn a_record_round_trips_and_a_damaged_one_is_refused() {
        let a = Accepted {
            agent: AgentId::parse("gw-1").unwrap(),
            boot: 3,
            outbox: Some(OutboxId::from_random([9; 16])),
            seq: u64::MAX - 1,
            digest: "abc".into(),
            sent_at: utc("2026-11-23T08:00:00Z"),
            zone: ZoneId::parse("z").unwrap(),
            enterprise: id(1),
            backfill: true,
            readings: vec![
                register(1.5, "2026-11-23T07:45:00Z"),
                CanonicalReading {
                    indicator: "value_added".into(),
                    point: Default::default(),
                    value: -0.0,
                    at: ReadingTime::Period(Period::Month(2026, 10)),
                },
            ],
            declarations: vec![("dt_maturity".into(), DeclaredValue::Integer(3))],
            refused: vec![],
        };
        let received = utc("2026-11-23T08:00:01Z");
        let bytes = encode(received, &a);
        let back = decode(&bytes).expect("decodes");
        assert_eq!(back.received, received);
        let b = back.batch;
        assert_eq!(
            (
                b.agent,
                b.boot,
                b.outbox,
                b.seq,
                b.digest,
                b.sent_at,
                b.zone,
                b.enterprise,
                b.backfill
            ),
            (
                a.agent,
                a.boot,
                a.outbox,
                a.seq,
                a.digest,
                a.sent_at,
                a.zone,
                a.enterprise,
                a.backfill
            )
        );
        assert_eq!(b.readings, a.readings);
        assert_eq!(b.declarations, a.declarations);
        assert!(decode(&bytes[..bytes.len() - 1]).is_none());
        let mut v2 = bytes.clone();
        v2[0] = 2;
        assert!(decode(&v2).is_none());
    }
}
