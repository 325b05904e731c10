//! A Sparkplug B host application's view of the edge nodes on the plant's
//! broker: pure state, fed one message at a time, so every rule is
//! unit-tested by feeding payloads.
//!
//! The rules (Sparkplug 3.0): an edge node's NBIRTH starts a session, names
//! its metrics and their aliases and data types, and carries `bdSeq`; each
//! later message from it (DBIRTH, NDATA, DDATA, DDEATH) carries `seq`, one
//! more than the last, wrapping 255 → 0. A DATA from a node (or device)
//! without a birth, a `seq` gap, or an alias no birth named means this host
//! has missed something: the message is not used, and the node is asked to
//! publish its births again (NCMD `Node Control/Rebirth`), at most once until
//! it does or `REBIRTH_AGAIN_MS` passes. An NDEATH (the broker's will when
//! the node dies) ends the session only if its `bdSeq` is the session's own:
//! a late will of an earlier session is stale and ignored.

use super::sparkplug_b::{number, DataType, Metric, Payload, BD_SEQ};
use super::TagValue;
use std::collections::BTreeMap;

/// The topic namespace's first element.
pub const NAMESPACE: &str = "spBv1.0";

/// A rebirth request not answered within this long is sent again.
pub const REBIRTH_AGAIN_MS: u64 = 5_000;

/// What a Sparkplug topic names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic {
    /// The group id.
    pub group: String,
    /// NBIRTH, NDATA, DDATA, …
    pub kind: Kind,
    /// The edge node id.
    pub node: String,
    /// The device id (D… messages).
    pub device: Option<String>,
}

/// Sparkplug message types a host reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    NBirth,
    NDeath,
    DBirth,
    DDeath,
    NData,
    DData,
    /// Commands and host state: not data, ignored.
    Other,
}

impl Topic {
    /// Parses `spBv1.0/group/TYPE/node[/device]`; `None` if it is no Sparkplug B topic.
    pub fn parse(topic: &str) -> Option<Self> {
        let mut parts = topic.split('/');
        if parts.next()? != NAMESPACE {
            return None;
        }
        let group = parts.next()?.to_owned();
        let kind = match parts.next()? {
            "NBIRTH" => Kind::NBirth,
            "NDEATH" => Kind::NDeath,
            "DBIRTH" => Kind::DBirth,
            "DDEATH" => Kind::DDeath,
            "NDATA" => Kind::NData,
            "DDATA" => Kind::DData,
            _ => Kind::Other,
        };
        let node = parts.next()?.to_owned();
        let device = parts.next().map(str::to_owned);
        if parts.next().is_some() || group.is_empty() || node.is_empty() {
            return None;
        }
        if matches!(kind, Kind::DBirth | Kind::DDeath | Kind::DData) != device.is_some() {
            return None;
        }
        Some(Self {
            group,
            kind,
            node,
            device,
        })
    }
}

/// Why a message was not used; each is counted under its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Problem {
    /// DATA (or DBIRTH) from a node or device with no birth in this session.
    DataBeforeBirth,
    /// `seq` is not one more than the last (mod 256), or missing.
    SeqGap,
    /// A metric's alias no birth named.
    UnknownAlias,
    /// An NDEATH whose `bdSeq` is not the session's: a late will, ignored.
    StaleDeath,
    /// A BIRTH without `bdSeq` (NBIRTH) or a metric without a name.
    BadBirth,
}

impl Problem {
    /// Its counter's name.
    pub fn name(self) -> &'static str {
        match self {
            Problem::DataBeforeBirth => "data_before_birth",
            Problem::SeqGap => "seq_gaps",
            Problem::UnknownAlias => "unknown_aliases",
            Problem::StaleDeath => "stale_deaths",
            Problem::BadBirth => "bad_births",
        }
    }
}

/// What one message did.
#[derive(Debug, Default, PartialEq)]
pub struct Step {
    /// Values to map to readings.
    pub values: Vec<TagValue>,
    /// Why (part of) the message was not used.
    pub problem: Option<Problem>,
    /// Ask this edge node (group, node) for its births.
    pub rebirth: Option<(String, String)>,
    /// A session started (NBIRTH) or ended (NDEATH).
    pub birth: bool,
    /// A session ended.
    pub death: bool,
}

/// A metric a birth named.
#[derive(Debug, Clone)]
struct Known {
    name: String,
    datatype: Option<DataType>,
}

/// Metrics of a node or of one of its devices.
#[derive(Debug, Default)]
struct Metrics {
    by_alias: BTreeMap<u64, Known>,
    types: BTreeMap<String, Option<DataType>>,
}

impl Metrics {
    fn from_birth(metrics: &[Metric]) -> Option<Self> {
        let mut out = Self::default();
        for m in metrics {
            let name = m.name.clone()?;
            let datatype = m.datatype.and_then(DataType::from_code);
            if let Some(a) = m.alias {
                out.by_alias.insert(
                    a,
                    Known {
                        name: name.clone(),
                        datatype,
                    },
                );
            }
            out.types.insert(name, datatype);
        }
        Some(out)
    }

    /// Each metric's name and number; `Err` on an alias no birth named.
    fn resolve(&self, metrics: &[Metric]) -> Result<Vec<Resolved>, Problem> {
        let mut out = Vec::with_capacity(metrics.len());
        for m in metrics {
            let (name, datatype) = match (&m.name, m.alias) {
                (Some(n), _) => (n.clone(), self.types.get(n).copied().flatten()),
                (None, Some(a)) => {
                    let k = self.by_alias.get(&a).ok_or(Problem::UnknownAlias)?;
                    (k.name.clone(), k.datatype)
                }
                (None, None) => return Err(Problem::UnknownAlias),
            };
            let datatype = m.datatype.and_then(DataType::from_code).or(datatype);
            let value = match (&m.value, m.is_null) {
                (_, Some(true)) | (None, _) => None,
                (Some(v), _) => number(v, datatype),
            };
            out.push((name, value, m.timestamp));
        }
        Ok(out)
    }
}

/// A metric's name, its value as a number, and its own timestamp.
type Resolved = (String, Option<f64>, Option<u64>);

/// One edge node's session.
#[derive(Debug, Default)]
struct Node {
    online: bool,
    bd_seq: Option<u64>,
    last_seq: Option<u64>,
    metrics: Metrics,
    devices: BTreeMap<String, Metrics>,
    /// When a rebirth was last asked for and not yet answered.
    rebirth_asked_ms: Option<u64>,
}

/// Every edge node seen on the broker.
#[derive(Debug, Default)]
pub struct Host {
    nodes: BTreeMap<(String, String), Node>,
}

impl Host {
    /// Takes one message; `now_ms` paces rebirth requests.
    pub fn on_message(&mut self, topic: &Topic, payload: &Payload, now_ms: u64) -> Step {
        let key = (topic.group.clone(), topic.node.clone());
        let node = self.nodes.entry(key.clone()).or_default();
        let mut step = Step::default();
        let ts = payload.timestamp;
        match topic.kind {
            Kind::Other => return step,
            Kind::NBirth => {
                let bd_seq = payload
                    .metrics
                    .iter()
                    .find(|m| m.name.as_deref() == Some(BD_SEQ))
                    .and_then(|m| m.value.as_ref())
                    .and_then(|v| number(v, Some(DataType::UInt64)))
                    .map(|v| v as u64);
                let metrics = Metrics::from_birth(&payload.metrics);
                let (Some(bd_seq), Some(metrics)) = (bd_seq, metrics) else {
                    step.problem = Some(Problem::BadBirth);
                    return ask(node, key, now_ms, step);
                };
                *node = Node {
                    online: true,
                    bd_seq: Some(bd_seq),
                    last_seq: payload.seq,
                    metrics,
                    devices: BTreeMap::new(),
                    rebirth_asked_ms: None,
                };
                step.birth = true;
                step.values = values(topic, &node.metrics, &payload.metrics, ts)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|v| v.tag != BD_SEQ && !v.tag.starts_with("Node Control/"))
                    .collect();
                return step;
            }
            Kind::NDeath => {
                let bd_seq = payload
                    .metrics
                    .iter()
                    .find(|m| m.name.as_deref() == Some(BD_SEQ))
                    .and_then(|m| m.value.as_ref())
                    .and_then(|v| number(v, Some(DataType::UInt64)))
                    .map(|v| v as u64);
                if node.online && bd_seq.is_some() && bd_seq == node.bd_seq {
                    node.online = false;
                    node.last_seq = None;
                    step.death = true;
                } else {
                    step.problem = Some(Problem::StaleDeath);
                }
                return step;
            }
            Kind::DBirth | Kind::DDeath | Kind::NData | Kind::DData => {}
        }
        if !node.online {
            step.problem = Some(Problem::DataBeforeBirth);
            return ask(node, key, now_ms, step);
        }
        let expected = node.last_seq.map(|s| (s + 1) % 256);
        if payload.seq.is_none() || payload.seq != expected {
            // The session can no longer be trusted: wait for the births.
            node.online = false;
            step.problem = Some(Problem::SeqGap);
            return ask(node, key, now_ms, step);
        }
        node.last_seq = payload.seq;
        let device = topic.device.clone().unwrap_or_default();
        match topic.kind {
            Kind::DBirth => match Metrics::from_birth(&payload.metrics) {
                Some(m) => {
                    step.values = values(topic, &m, &payload.metrics, ts).unwrap_or_default();
                    node.devices.insert(device, m);
                }
                None => {
                    step.problem = Some(Problem::BadBirth);
                    return ask(node, key, now_ms, step);
                }
            },
            Kind::DDeath => {
                node.devices.remove(&device);
            }
            Kind::NData => match values(topic, &node.metrics, &payload.metrics, ts) {
                Ok(v) => step.values = v,
                Err(p) => {
                    step.problem = Some(p);
                    return ask(node, key, now_ms, step);
                }
            },
            Kind::DData => {
                let Some(m) = node.devices.get(&device) else {
                    step.problem = Some(Problem::DataBeforeBirth);
                    return ask(node, key, now_ms, step);
                };
                match values(topic, m, &payload.metrics, ts) {
                    Ok(v) => step.values = v,
                    Err(p) => {
                        step.problem = Some(p);
                        return ask(node, key, now_ms, step);
                    }
                }
            }
            Kind::NBirth | Kind::NDeath | Kind::Other => {}
        }
        step
    }
}

/// Adds a rebirth request to `step` unless one is outstanding.
fn ask(node: &mut Node, key: (String, String), now_ms: u64, mut step: Step) -> Step {
    let due = node
        .rebirth_asked_ms
        .is_none_or(|t| now_ms.saturating_sub(t) >= REBIRTH_AGAIN_MS);
    if due {
        node.rebirth_asked_ms = Some(now_ms);
        step.rebirth = Some(key);
    }
    step
}

/// The message's metrics as tag values of this node or device.
fn values(topic: &Topic, known: &Metrics, metrics: &[Metric], ts: Option<u64>) -> Result<Vec<TagValue>, Problem> {
    Ok(known
        .resolve(metrics)?
        .into_iter()
        .map(|(name, value, at)| TagValue {
            node: topic.node.clone(),
            group: topic.group.clone(),
            device: topic.device.clone(),
            tag: name,
            value,
            ts_ms: at.or(ts),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::super::sparkplug_b::Value;
    use super::*;

    fn topic(s: &str) -> Topic {
        Topic::parse(s).unwrap()
    }

    fn metric(name: Option<&str>, alias: Option<u64>, dt: Option<DataType>, v: Value) -> Metric {
        Metric {
            name: name.map(str::to_owned),
            alias,
            datatype: dt.map(|d| d as u32),
            value: Some(v),
            ..Metric::default()
        }
    }

    fn birth(bd_seq: u64, energy: f64) -> Payload {
        Payload {
            timestamp: Some(1_000),
            seq: Some(0),
            metrics: vec![
                metric(
                    Some("Energy"),
                    Some(1),
                    Some(DataType::Double),
                    Value::DoubleValue(energy),
                ),
                metric(Some("Count"), Some(2), Some(DataType::Int16), Value::IntValue(0xFFFE)),
                metric(Some(BD_SEQ), None, Some(DataType::Int64), Value::LongValue(bd_seq)),
            ],
            ..Payload::default()
        }
    }

    fn data(seq: u64, alias: u64, v: Value) -> Payload {
        Payload {
            timestamp: Some(2_000),
            seq: Some(seq),
            metrics: vec![metric(None, Some(alias), None, v)],
            ..Payload::default()
        }
    }

    fn death(bd_seq: u64) -> Payload {
        Payload {
            metrics: vec![metric(
                Some(BD_SEQ),
                None,
                Some(DataType::Int64),
                Value::LongValue(bd_seq),
            )],
            ..Payload::default()
        }
    }

    const NB: &str = "spBv1.0/plant/NBIRTH/edge1";
    const ND: &str = "spBv1.0/plant/NDATA/edge1";
    const NDEATH: &str = "spBv1.0/plant/NDEATH/edge1";

    #[test]
    fn topics_are_parsed_and_others_refused() {
        assert_eq!(
            topic("spBv1.0/g/DDATA/n/d"),
            Topic {
                group: "g".into(),
                kind: Kind::DData,
                node: "n".into(),
                device: Some("d".into())
            }
        );
        assert_eq!(topic("spBv1.0/g/NCMD/n").kind, Kind::Other);
        for bad in [
            "spAv1.0/g/NDATA/n",
            "spBv1.0/g/NDATA",
            "spBv1.0/g/DDATA/n",
            "spBv1.0/g/NDATA/n/d",
            "spBv1.0/g/DDATA/n/d/x",
        ] {
            assert_eq!(Topic::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn aliases_from_the_birth_name_the_data_and_signed_types_are_kept() {
        let mut h = Host::default();
        let s = h.on_message(&topic(NB), &birth(0, 10.0), 0);
        assert!(s.birth);
        let got: Vec<(String, Option<f64>)> = s.values.iter().map(|v| (v.tag.clone(), v.value)).collect();
        assert_eq!(
            got,
            [("Energy".into(), Some(10.0)), ("Count".into(), Some(-2.0))],
            "bdSeq is no value"
        );
        let s = h.on_message(&topic(ND), &data(1, 1, Value::DoubleValue(11.5)), 0);
        assert_eq!(
            (s.values[0].tag.as_str(), s.values[0].value, s.values[0].ts_ms),
            ("Energy", Some(11.5), Some(2_000))
        );
        assert_eq!(s.problem, None);
        // Alias 9 was never born: not used, and a rebirth is asked for.
        let s = h.on_message(&topic(ND), &data(2, 9, Value::DoubleValue(1.0)), 0);
        assert_eq!((s.problem, s.values.len()), (Some(Problem::UnknownAlias), 0));
        assert_eq!(s.rebirth, Some(("plant".into(), "edge1".into())));
    }

    #[test]
    fn seq_wraps_at_255_and_a_gap_asks_for_a_rebirth_once() {
        let mut h = Host::default();
        let mut b = birth(0, 1.0);
        b.seq = Some(254);
        h.on_message(&topic(NB), &b, 0);
        assert_eq!(
            h.on_message(&topic(ND), &data(255, 1, Value::DoubleValue(2.0)), 0)
                .problem,
            None
        );
        assert_eq!(
            h.on_message(&topic(ND), &data(0, 1, Value::DoubleValue(3.0)), 0)
                .problem,
            None,
            "255 → 0"
        );
        let s = h.on_message(&topic(ND), &data(2, 1, Value::DoubleValue(4.0)), 10);
        assert_eq!((s.problem, s.values.len()), (Some(Problem::SeqGap), 0));
        assert!(s.rebirth.is_some());
        // Until the node is born again its data is not used, and the request
        // is not repeated at once…
        let s = h.on_message(&topic(ND), &data(3, 1, Value::DoubleValue(5.0)), 20);
        assert_eq!((s.problem, s.rebirth.clone()), (Some(Problem::DataBeforeBirth), None));
        // …but again once REBIRTH_AGAIN_MS has passed without a birth.
        let s = h.on_message(&topic(ND), &data(4, 1, Value::DoubleValue(5.0)), 10 + REBIRTH_AGAIN_MS);
        assert!(s.rebirth.is_some());
        let s = h.on_message(&topic(NB), &birth(0, 5.0), 20 + REBIRTH_AGAIN_MS);
        assert_eq!((s.birth, s.values[0].value), (true, Some(5.0)));
        assert_eq!(
            h.on_message(&topic(ND), &data(1, 1, Value::DoubleValue(6.0)), 0)
                .values
                .len(),
            1
        );
    }

    #[test]
    fn data_before_birth_and_deaths_by_bdseq() {
        let mut h = Host::default();
        let s = h.on_message(&topic(ND), &data(5, 1, Value::DoubleValue(1.0)), 0);
        assert_eq!(s.problem, Some(Problem::DataBeforeBirth));
        assert_eq!(s.rebirth, Some(("plant".into(), "edge1".into())));
        h.on_message(&topic(NB), &birth(7, 1.0), 0);
        // A late will from session 6: stale, the session goes on.
        let s = h.on_message(&topic(NDEATH), &death(6), 0);
        assert_eq!((s.death, s.problem), (false, Some(Problem::StaleDeath)));
        assert_eq!(
            h.on_message(&topic(ND), &data(1, 1, Value::DoubleValue(2.0)), 0)
                .values
                .len(),
            1
        );
        let s = h.on_message(&topic(NDEATH), &death(7), 0);
        assert!(s.death);
        let s = h.on_message(&topic(ND), &data(2, 1, Value::DoubleValue(3.0)), 0);
        assert_eq!(s.problem, Some(Problem::DataBeforeBirth));
        // The next session: bdSeq 8, seq from 0.
        assert!(h.on_message(&topic(NB), &birth(8, 4.0), 0).birth);
        let mut nb = birth(9, 0.0);
        nb.metrics.retain(|m| m.name.as_deref() != Some(BD_SEQ));
        assert_eq!(
            h.on_message(&topic(NB), &nb, 0).problem,
            Some(Problem::BadBirth),
            "no bdSeq"
        );
    }

    #[test]
    fn devices_need_their_own_birth() {
        let mut h = Host::default();
        h.on_message(&topic(NB), &birth(0, 1.0), 0);
        let dd = "spBv1.0/plant/DDATA/edge1/meter-1";
        let s = h.on_message(&topic(dd), &data(1, 1, Value::DoubleValue(1.0)), 0);
        assert_eq!(s.problem, Some(Problem::DataBeforeBirth));
        h.on_message(&topic(NB), &birth(1, 1.0), 0);
        let mut db = birth(0, 0.0);
        db.seq = Some(1);
        db.metrics = vec![metric(
            Some("Power"),
            Some(3),
            Some(DataType::Float),
            Value::FloatValue(2.5),
        )];
        let s = h.on_message(&topic("spBv1.0/plant/DBIRTH/edge1/meter-1"), &db, 0);
        assert_eq!(s.values[0].device.as_deref(), Some("meter-1"));
        let s = h.on_message(&topic(dd), &data(2, 3, Value::FloatValue(3.5)), 0);
        assert_eq!((s.values[0].tag.as_str(), s.values[0].value), ("Power", Some(3.5)));
    }
}
