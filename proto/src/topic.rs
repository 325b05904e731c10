//! The MQTT topic layout.
//!
//! ```text
//! zonesync/v1/{zone}/{agent}/state               retained presence (birth / last will)
//! zonesync/v1/{zone}/{agent}/data/{enterprise}   batches, QoS 1
//! zonesync/v1/{zone}/{agent}/confirm             the aggregator's end-to-end confirmations, QoS 1
//! zonesync/v1/{zone}/summary                      the aggregator's goal table, retained
//! zonesync/v1/{zone}/alerts                       the aggregator's alert transitions
//! ```
//! The aggregator subscribes to exactly the agents' two shapes
//! ([`Topic::zone_filters`]), so its own outputs never come back to it.
//! Zone first so an aggregator subscribes to just its zones
//! (`zonesync/v1/{zone}/#`); agent next so one broker ACL line per agent pins
//! it to its own subtree; enterprise last so the ACL can pin the enterprises
//! an agent may speak for, and so the aggregator can check the payload
//! against the topic it arrived on.

use crate::ids::{AgentId, EnterpriseId, IdError, ZoneId};

/// First two levels of every zonesync topic.
pub const ROOT: &str = "zonesync/v1";

/// What a topic carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicKind {
    /// Presence of the agent.
    State,
    /// A batch about one enterprise.
    Data(EnterpriseId),
}

/// A parsed zonesync topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic {
    /// Zone level.
    pub zone: ZoneId,
    /// Agent level.
    pub agent: AgentId,
    /// What follows.
    pub kind: TopicKind,
}

/// Why a topic is not a zonesync topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic {0:?} is not under {ROOT}/{{zone}}/{{agent}}/(state|data/{{enterprise}})")]
    Layout(String),
    #[error("topic {topic:?}: {source}")]
    Id { topic: String, source: IdError },
}

impl Topic {
    /// The presence topic of an agent.
    pub fn state(zone: &ZoneId, agent: &AgentId) -> String {
        format!("{ROOT}/{zone}/{agent}/state")
    }

    /// The data topic of an agent for one enterprise.
    pub fn data(zone: &ZoneId, agent: &AgentId, enterprise: &EnterpriseId) -> String {
        format!("{ROOT}/{zone}/{agent}/data/{enterprise}")
    }

    /// Everything under one zone (monitoring, benchmarks); the aggregator uses [`Topic::zone_filters`].
    pub fn zone_filter(zone: &ZoneId) -> String {
        format!("{ROOT}/{zone}/#")
    }

    /// The subscription filters for one zone's agents: presence and data.
    pub fn zone_filters(zone: &ZoneId) -> [String; 2] {
        [format!("{ROOT}/{zone}/+/state"), format!("{ROOT}/{zone}/+/data/+")]
    }

    /// Where the aggregator tells one agent which of its batches it has
    /// durably handled (stored, already held, or dead-lettered), so an agent
    /// that asks for end-to-end confirmation keeps a batch until then and not
    /// merely until the broker's PUBACK (a broker killed before it saved its
    /// queue would otherwise lose acknowledged batches).
    pub fn confirm(zone: &ZoneId, agent: &AgentId) -> String {
        format!("{ROOT}/{zone}/{agent}/confirm")
    }

    /// Where the aggregator publishes a zone's goal table (retained).
    pub fn summary(zone: &ZoneId) -> String {
        format!("{ROOT}/{zone}/summary")
    }

    /// Where the aggregator publishes a zone's alert transitions.
    pub fn alerts(zone: &ZoneId) -> String {
        format!("{ROOT}/{zone}/alerts")
    }

    /// Parses a topic the aggregator received.
    pub fn parse(topic: &str) -> Result<Topic, TopicError> {
        Self::parse_with_test_prefix(topic, None)
    }

    /// Parses a topic, accepting enterprise ids under a demo test prefix
    /// (see `EnterpriseId::parse_with_test_prefix`).
    pub fn parse_with_test_prefix(topic: &str, test_prefix: Option<&str>) -> Result<Topic, TopicError> {
        let layout = || TopicError::Layout(topic.chars().take(200).collect());
        let id = |source| TopicError::Id {
            topic: topic.chars().take(200).collect(),
            source,
        };
        let rest = topic
            .strip_prefix(ROOT)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(layout)?;
        let parts: Vec<&str> = rest.split('/').collect();
        let (zone, agent, kind) = match parts.as_slice() {
            [z, a, "state"] => (z, a, None),
            [z, a, "data", e] => (z, a, Some(e)),
            _ => return Err(layout()),
        };
        let zone = ZoneId::parse(zone).map_err(id)?;
        let agent = AgentId::parse(agent).map_err(id)?;
        let kind = match kind {
            None => TopicKind::State,
            Some(e) => TopicKind::Data(EnterpriseId::parse_with_test_prefix(e, test_prefix).map_err(id)?),
        };
        Ok(Topic { zone, agent, kind })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_data_and_state_topics() {
        let z = ZoneId::parse("jiyuan-hitech").unwrap();
        let a = AgentId::parse("gw-01").unwrap();
        let e = EnterpriseId::parse("91350100M000100Y43").unwrap();
        let t = Topic::parse(&Topic::data(&z, &a, &e)).unwrap();
        assert_eq!(t.kind, TopicKind::Data(e));
        assert_eq!(Topic::parse(&Topic::state(&z, &a)).unwrap().kind, TopicKind::State);
    }

    #[test]
    fn test_prefix_ids_pass_only_when_allowed() {
        let t = "zonesync/v1/z/a/data/TEST00000000000001";
        assert!(Topic::parse(t).is_err());
        assert!(Topic::parse_with_test_prefix(t, Some("TEST")).is_ok());
    }

    #[test]
    fn the_aggregators_outputs_are_outside_its_subscriptions() {
        let z = ZoneId::parse("jiyuan-hitech").unwrap();
        let matches = |filter: &str, topic: &str| {
            let (f, t): (Vec<&str>, Vec<&str>) = (filter.split('/').collect(), topic.split('/').collect());
            f.len() == t.len() && f.iter().zip(&t).all(|(a, b)| *a == "+" || a == b)
        };
        let a0 = AgentId::parse("gw").unwrap();
        for out in [Topic::summary(&z), Topic::alerts(&z), Topic::confirm(&z, &a0)] {
            assert!(Topic::zone_filters(&z).iter().all(|f| !matches(f, &out)), "{out}");
        }
        let a = AgentId::parse("gw").unwrap();
        assert!(matches(&Topic::zone_filters(&z)[0], &Topic::state(&z, &a)));
    }

    #[test]
    fn refuses_foreign_and_malformed_topics() {
        assert!(matches!(Topic::parse("other/x"), Err(TopicError::Layout(_))));
        assert!(matches!(
            Topic::parse("zonesync/v1/z/a/data"),
            Err(TopicError::Layout(_))
        ));
        assert!(matches!(
            Topic::parse("zonesync/v1/z/a/data/91350100M000100Y44"),
            Err(TopicError::Id { .. })
        ));
    }
}
