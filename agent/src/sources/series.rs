//! One source per series. Downstream a meter's readings are one series,
//! named by enterprise, indicator and point: two sources configured with the
//! same three — a Modbus register and an OPC UA node both given point "F1"
//! for electricity, or two gateways mapping tags to it — would interleave two
//! meters' totals in it, and each step from one total to the other would be
//! read as a reset or a leap in consumption. Each source's own check refuses
//! a repeat inside its tables; this one refuses it across them, at start-up
//! (`run`) and in `check`, naming both sources.

use crate::config::AgentConfig;
use std::collections::BTreeMap;
use zonesync_proto::EnterpriseId;

/// Two configured sources would report the same series.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "enterprise {enterprise}: {indicator} at point {point:?} is reported by both {first} and {second} \
     (their readings would mix in one series; give one of them another point id)"
)]
pub struct SharedSeries {
    pub enterprise: EnterpriseId,
    pub indicator: String,
    pub point: String,
    pub first: String,
    pub second: String,
}

/// A series a configured source reports, and which source (as its status names it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub enterprise: EnterpriseId,
    pub indicator: String,
    pub point: String,
    pub source: String,
}

impl Claim {
    fn new(enterprise: &EnterpriseId, indicator: &str, point: &str, source: String) -> Claim {
        Claim {
            enterprise: enterprise.clone(),
            indicator: indicator.to_owned(),
            point: point.to_owned(),
            source,
        }
    }
}

/// A series' key in a source's cursor: `indicator/point` (the enterprise is
/// the source's, or part of its own key).
pub fn key(indicator: &str, point: &str) -> String {
    format!("{indicator}/{point}")
}

/// Refuses the first series claimed twice, in the order given.
pub fn one_source_each(claims: impl IntoIterator<Item = Claim>) -> Result<(), SharedSeries> {
    let mut owners: BTreeMap<(EnterpriseId, String, String), String> = BTreeMap::new();
    for c in claims {
        let key = (c.enterprise, c.indicator, c.point);
        if let Some(first) = owners.get(&key) {
            let (enterprise, indicator, point) = key;
            return Err(SharedSeries {
                enterprise,
                indicator,
                point,
                first: first.clone(),
                second: c.source,
            });
        }
        owners.insert(key, c.source);
    }
    Ok(())
}

/// Every series the meter and gateway sources of `config` report. The
/// declarations (profile, CSV drops) give enterprise figures by month, not
/// meter series, and are not claims.
pub fn claims(config: &AgentConfig) -> Vec<Claim> {
    let mut out = Vec::new();
    if let Some(sim) = &config.simulator {
        for e in &sim.enterprises {
            for m in 1..=sim.meters_per_enterprise {
                let point = crate::sources::simulator::meter_point(m);
                out.push(Claim::new(&e.id, "electricity", &point, "simulator".into()));
            }
        }
    }
    #[cfg(feature = "modbus")]
    for d in &config.modbus {
        for p in &d.points {
            out.push(Claim::new(
                &d.enterprise,
                &p.indicator,
                &p.point,
                format!("modbus:{}", d.name),
            ));
        }
    }
    #[cfg(feature = "dlt645")]
    for m in &config.dlt645 {
        let source = format!(
            "dlt645:{} meter {}",
            m.serial.as_deref().unwrap_or(&m.gateway),
            m.address
        );
        out.push(Claim::new(&m.enterprise, &m.indicator, &m.point_id(), source));
    }
    #[cfg(feature = "http-pull")]
    for h in &config.http_pull {
        for m in &h.mappings {
            out.push(Claim::new(
                &m.enterprise,
                &m.indicator,
                &m.point,
                format!("http_pull:{}", h.name),
            ));
        }
    }
    #[cfg(feature = "gateways")]
    for g in &config.mqtt_gateway {
        for t in &g.tags {
            out.push(Claim::new(
                &t.enterprise,
                &t.indicator,
                &t.point,
                format!("mqtt_gateway:{}", g.name),
            ));
        }
    }
    #[cfg(feature = "opcua")]
    for s in &config.opcua {
        for n in &s.nodes {
            out.push(Claim::new(
                &s.enterprise,
                &n.indicator,
                &n.point,
                format!("opcua:{}", s.name),
            ));
        }
    }
    out
}

/// Checks that no two configured sources report one series.
pub fn check(config: &AgentConfig) -> Result<(), SharedSeries> {
    one_source_each(claims(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(code: &str) -> EnterpriseId {
        code.parse().unwrap()
    }

    const A: &str = "91419001MA0000001N";
    const B: &str = "91419001MA0000002R";

    fn claim(ent: &str, indicator: &str, point: &str, source: &str) -> Claim {
        Claim::new(&e(ent), indicator, point, source.into())
    }

    #[test]
    fn a_series_claimed_by_two_sources_names_both() {
        let err = one_source_each([
            claim(A, "electricity", "F1", "modbus:line1"),
            claim(A, "electricity", "F2", "modbus:line1"),
            claim(A, "electricity", "F1", "opcua:dcs"),
        ])
        .unwrap_err();
        assert_eq!(
            (err.first.as_str(), err.second.as_str(), err.point.as_str()),
            ("modbus:line1", "opcua:dcs", "F1")
        );
        assert!(err.to_string().contains("both modbus:line1 and opcua:dcs"), "{err}");
    }

    #[test]
    fn another_enterprise_indicator_or_point_is_another_series() {
        assert_eq!(
            one_source_each([
                claim(A, "electricity", "F1", "modbus:line1"),
                claim(B, "electricity", "F1", "opcua:dcs"),
                claim(A, "natural_gas", "F1", "opcua:dcs"),
                claim(A, "electricity", "F1b", "mqtt_gateway:neuron"),
            ]),
            Ok(())
        );
    }

    /// Every kind of source table is claimed from a whole configuration.
    #[test]
    fn every_meter_source_of_a_configuration_claims_its_series() {
        let modbus = if cfg!(feature = "modbus") {
            format!(
                r#"
[[modbus]]
name = "line1"
host = "127.0.0.1"
enterprise = "{A}"
points = [{{ point = "M1", indicator = "electricity", unit = "kWh", register = 0, data_type = "u32" }}]
"#
            )
        } else {
            String::new()
        };
        let toml = format!(
            r#"
agent_id = "gw"
zone = "z"
[simulator]
meters_per_enterprise = 1
enterprises = [{{ id = "{A}" }}]
{modbus}"#
        );
        let config: AgentConfig = toml::from_str(&toml).expect("config parses");
        let claims = claims(&config);
        assert!(
            claims.contains(&claim(A, "electricity", "M1", "simulator")),
            "{claims:?}"
        );
        #[cfg(feature = "modbus")]
        {
            let err = check(&config).unwrap_err();
            assert_eq!((err.first.as_str(), err.second.as_str()), ("simulator", "modbus:line1"));
        }
    }
}
