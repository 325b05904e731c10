//! `zonesync-demo`: a whole simulated zone system in one process.
//!
//! An embedded broker, Jiyuan's three development zones (高新区, 经开区,
//! 现代服务业开发区, after seed 003) with simulated enterprises, one agent per
//! zone (simulated meters from the first day of last month, then live, plus a
//! profile file of declarations and ten months of reported monthly energy and
//! value added before that, so the dashboard has history to draw), and the aggregator with its API. Free ports
//! are picked when 1883 or 8080 are taken. All enterprises are fictitious
//! (names carry 示例, "example"), with valid credit codes.
//!
//! A crate of its own because it needs both the agent and the aggregator
//! (and an embedded broker, [`broker`]), which the production binaries must
//! not link into each other.

pub mod broker;

use broker::{start_embedded, BrokerError};
use chrono::{DateTime, Datelike, TimeZone, Utc};
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use zonesync_agent::config::{AgentConfig, MqttConfig, MqttProtocol, OutboxConfig};
use zonesync_agent::sources::profile::{EnterpriseProfile, Figure, ProfileConfig, ProfileFile};
use zonesync_agent::sources::simulator::{SimEnterprise, SimulatorConfig};
use zonesync_aggregator::app::StartError;
use zonesync_aggregator::config::{AggregatorConfig, HttpConfig, MqttConfig as AggMqtt};
use zonesync_aggregator::registry::{Enterprise, Registry, RegistryError, Zone};
use zonesync_proto::{AgentId, EnterpriseId, Period, ZoneId, CST};
use zonesync_runtime::shutdown::{self, Shutdown};

/// Why the demo stopped.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Id(#[from] zonesync_proto::IdError),
    #[error("demo files in {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("zone {0:?} is not one of the demo's (jiyuan-hitech, jiyuan-etdz, jiyuan-services)")]
    UnknownZone(String),
}

/// One of the demo's zones run alone, as its own zone aggregator with its
/// agent, publishing its tallies to a city center (scripts/federation-demo.sh
/// starts one per zone, a NATS hub and leaf nodes, and the center).
#[derive(Debug, Clone)]
pub struct ZoneOnly {
    /// The demo zone's id.
    pub zone: String,
    /// Where its tallies go (the zone's leaf node).
    pub federation: zonesync_aggregator::federation::config::FederationConfig,
}

/// Demo settings.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Where stores and generated files go.
    pub data_dir: PathBuf,
    /// Preferred HTTP port (another is picked if it is taken).
    pub http_port: u16,
    /// Preferred MQTT port (another is picked if it is taken).
    pub mqtt_port: u16,
    /// Real milliseconds per simulated 15-minute tick while catching up.
    pub tick_ms: u64,
    /// A read token the API then asks for (none: reads are open, as the demo
    /// runs on loopback); tests use it to try the page on a locked API.
    pub read_token: Option<String>,
}

struct DemoZone {
    id: &'static str,
    name_zh: &'static str,
    name_en: &'static str,
    /// (industry code, name stem, industrial)
    industries: &'static [(&'static str, &'static str, bool)],
    count: u32,
    first: u32,
    /// Leading industries (code prefixes).
    leading: &'static [&'static str],
}

const ZONES: &[DemoZone] = &[
    DemoZone {
        id: "jiyuan-hitech",
        name_zh: "济源高新技术产业开发区",
        name_en: "Jiyuan Hi-tech Industrial Development Zone",
        industries: &[
            ("C3120", "钢铁", true),
            ("C3490", "装备制造", true),
            ("C2614", "化工", true),
            ("C3980", "电子信息", true),
        ],
        count: 12,
        first: 1,
        leading: &["C31", "C34", "C26"],
    },
    DemoZone {
        id: "jiyuan-etdz",
        name_zh: "济源经济技术开发区",
        name_en: "Jiyuan Economic and Technological Development Zone",
        industries: &[
            ("C3216", "有色金属", true),
            ("C3021", "绿色建材", true),
            ("C3841", "新型储能", true),
            ("C3591", "节能环保", true),
        ],
        count: 10,
        first: 101,
        leading: &["C32", "C30"],
    },
    DemoZone {
        id: "jiyuan-services",
        name_zh: "济源现代服务业开发区",
        name_en: "Jiyuan Modern Services Development Zone",
        industries: &[("G5990", "物流", false), ("C1761", "包装材料", true)],
        count: 6,
        first: 201,
        leading: &["G59"],
    },
];

/// The demo's enterprise id for number `n`: Jiyuan's division code 419001 and a valid check character.
pub fn demo_enterprise(n: u32) -> Result<EnterpriseId, zonesync_proto::IdError> {
    EnterpriseId::with_check_char(&format!("91419001MA{n:07}"))
}

/// The demo registry: three zones of simulated enterprises.
pub fn registry() -> Result<Registry, DemoError> {
    let mut zones = Vec::new();
    for z in ZONES {
        let mut enterprise = Vec::new();
        for i in 0..z.count {
            let (code, stem, industrial) = z.industries[i as usize % z.industries.len()];
            enterprise.push(Enterprise {
                industry: Some(code.into()),
                leading_industry: None,
                id: demo_enterprise(z.first + i)?,
                name: format!("示例{stem}有限公司{:02}", i + 1),
                above_scale: i * 10 < z.count * 8,
                industrial,
                agents: vec![],
            });
        }
        zones.push(Zone {
            id: ZoneId::parse(z.id)?,
            name_zh: z.name_zh.into(),
            name_en: z.name_en.into(),
            city: "济源".into(),
            province: "河南".into(),
            goal_sets: vec!["henan-2027".into(), "jiyuan-2027".into(), "energy".into()],
            leading_industries: z.leading.iter().map(|s| (*s).to_owned()).collect(),
            enterprise,
            enterprises_file: None,
        });
    }
    Ok(Registry::from_zones(zones)?)
}

fn profile(z: &DemoZone, history: &[Period]) -> Result<ProfileFile, DemoError> {
    let mut enterprise = Vec::new();
    // The second enterprise of each zone (above-scale) never declares anything: it shows up as "unknown".
    for i in (0..z.count).filter(|i| *i != 1) {
        let (code, _, _) = z.industries[i as usize % z.industries.len()];
        let maturity = [3, 2, 1, 4, 2, 3, 1, 2, 5, 2, 3, 1][i as usize % 12];
        let scenarios = match i % 4 {
            0 => {
                json!([{"code": "能源智能管控", "level": "advanced"}, {"code": "设备运行监控", "level": "intermediate"}])
            }
            1 => json!([{"code": "生产计划优化", "level": "intermediate"}]),
            2 => json!([{"code": "质量精准追溯", "level": "basic"}]),
            _ => json!([]),
        };
        let mut declare = BTreeMap::new();
        declare.insert("above_scale".into(), json!(i * 10 < z.count * 8));
        declare.insert("industry_code".into(), json!(code));
        declare.insert("dt_maturity".into(), json!(maturity));
        declare.insert("scenarios".into(), scenarios);
        declare.insert("smart_retrofit".into(), json!(i % 3 != 2));
        declare.insert("rd_activity".into(), json!(i % 5 != 4));
        declare.insert("rd_institution".into(), json!(i % 2 == 0));
        declare.insert("high_tech".into(), json!(i % 3 == 0));
        declare.insert("specialized_sme".into(), json!(i % 4 == 1));
        declare.insert("strategic_emerging".into(), json!(i % 4 == 3));
        // Land in use this year: 40-130 mu.
        let land = Figure {
            indicator: "land_area".into(),
            period: Period::Year(Utc::now().with_timezone(&CST).year()),
            value: f64::from(40 + 10 * (i % 10)),
            unit: "亩".into(),
            point: String::new(),
        };
        let mut figures = vec![land];
        if z.industries[i as usize % z.industries.len()].2 {
            figures.extend(history_figures(i, history));
        }
        enterprise.push(EnterpriseProfile {
            id: demo_enterprise(z.first + i)?,
            name: None,
            established: None,
            declare,
            figures,
        });
    }
    Ok(ProfileFile { enterprise })
}

/// Simulated value added of enterprise `i` of a zone, 10k yuan a day.
fn sim_value_added(i: u32) -> f64 {
    f64::from(30 + 7 * (i % 5))
}

/// Simulated meter rate of enterprise `i` (kWh per meter weight and tick).
fn sim_kwh_rate(i: u32) -> f64 {
    f64::from(20 + 5 * (i % 7))
}

/// The 22 months before the simulator's first month: reported as monthly
/// figures, so the energy page has a year of history to draw and the year
/// before it whole, which the reduction trajectory is anchored on (PY-06:
/// the year before's intensity lowered 4 %).
fn history_months(now: DateTime<Utc>) -> Vec<Period> {
    let mut months = zonesync_aggregator::dashboard::series::months_ending(last_month(now), 23);
    months.pop();
    months
}

/// Monthly electricity and value added for enterprise `i` over `months`,
/// matching the simulator's daily figures (two meters: rate × 3 × 208 kWh a
/// day) and drifting per enterprise, so some enterprises improve month by
/// month and some fall behind the reduction trajectory.
fn history_figures(i: u32, months: &[Period]) -> Vec<Figure> {
    // Monthly intensity change, by enterprise: most improve, a few do not.
    let drift = [-0.006, -0.003, 0.002, -0.008, -0.004, 0.006, -0.002][i as usize % 7];
    let n = months.len();
    let mut out = Vec::new();
    for (k, p) in months.iter().enumerate() {
        let days = (p.end() - p.start()).num_days() as f64;
        let ago = (n - k) as f64;
        let wobble = 0.015 * ((ago + f64::from(i)) * 1.7).sin();
        let factor = (1.0 - drift * ago + wobble).max(0.5);
        let figure = |indicator: &str, value: f64, unit: &str| Figure {
            indicator: indicator.into(),
            period: *p,
            value: (value * 100.0).round() / 100.0,
            unit: unit.into(),
            point: String::new(),
        };
        out.push(figure(
            "electricity",
            sim_kwh_rate(i) * 3.0 * 208.0 * days * factor,
            "kWh",
        ));
        out.push(figure("value_added", sim_value_added(i) * days, "万元"));
    }
    out
}

fn first_of_last_month(now: DateTime<Utc>) -> DateTime<Utc> {
    let local = now.with_timezone(&CST);
    let (y, m) = if local.month() == 1 {
        (local.year() - 1, 12)
    } else {
        (local.year(), local.month() - 1)
    };
    CST.with_ymd_and_hms(y, m, 1, 0, 0, 0)
        .single()
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(now)
}

/// The month before the current one (China time): the demo's first simulated month.
pub fn last_month(now: DateTime<Utc>) -> Period {
    Period::month_of(first_of_last_month(now))
}

/// A write token for this run only, so alerts can be acknowledged from the
/// dashboard without a fixed secret in the code. `RandomState` is seeded from
/// the OS's random source; no extra crate needed for a demo.
fn demo_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut token = String::from("demo-");
    for i in 0..2u8 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u8(i);
        token.push_str(&format!("{:016x}", h.finish()));
    }
    token
}

/// Alert rules for the demo, so the dashboard has alerts to show and
/// acknowledge within seconds. The limits are illustrative, picked against the
/// simulated enterprises' steady intensities (about 0.035-0.12 tce/10k yuan) so
/// a few are over them all month; they are not policy figures.
fn demo_alerts() -> zonesync_aggregator::alerts::AlertSettings {
    use zonesync_aggregator::alerts::rules::{IntensityLimit, RuleSettings};
    let limit = |industry: &str, limit: f64| IntensityLimit {
        industry: industry.into(),
        limit,
    };
    zonesync_aggregator::alerts::AlertSettings {
        evaluate_every_ms: 1000,
        min_duration_secs: 3.0,
        rules: RuleSettings {
            intensity_limits: vec![limit("C26", 0.085), limit("C32", 0.10), limit("*", 0.11)],
            ..RuleSettings::default()
        },
        ..Default::default()
    }
}

fn write(path: &Path, text: &str) -> Result<(), DemoError> {
    std::fs::write(path, text).map_err(|source| DemoError::Io {
        path: path.display().to_string(),
        source,
    })
}

fn pick_port(preferred: u16) -> u16 {
    if std::net::TcpListener::bind(("127.0.0.1", preferred)).is_ok() {
        preferred
    } else {
        0
    }
}

/// What the demo started, for printing and tests.
pub struct DemoHandle {
    /// HTTP API address.
    pub http_addr: SocketAddr,
    /// Broker address.
    pub broker_addr: SocketAddr,
    /// Tasks to await after shutdown.
    pub running: zonesync_aggregator::Running,
    /// Agent tasks.
    pub agents: Vec<tokio::task::JoinHandle<()>>,
    /// The write token this run accepts (alert acknowledgement from the dashboard).
    pub write_token: String,
}

/// Starts the demo; returns once the broker, aggregator and agents are up.
pub async fn start(opts: &DemoOptions, shutdown: Shutdown) -> Result<DemoHandle, DemoError> {
    start_with(opts, None, shutdown).await
}

/// Starts the demo, or with `only` one zone of it publishing to a center.
pub async fn start_with(
    opts: &DemoOptions,
    only: Option<&ZoneOnly>,
    shutdown: Shutdown,
) -> Result<DemoHandle, DemoError> {
    if let Some(o) = only.filter(|o| !ZONES.iter().any(|z| z.id == o.zone)) {
        return Err(DemoError::UnknownZone(o.zone.clone()));
    }
    let served = |z: &DemoZone| only.is_none_or(|o| o.zone == z.id);
    let dir = &opts.data_dir;
    std::fs::create_dir_all(dir).map_err(|source| DemoError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let broker = start_embedded(pick_port(opts.mqtt_port), 1024 * 1024)?;
    let reg = registry()?;
    let write_token = demo_token();
    let reg_path = dir.join("registry.toml");
    write(&reg_path, &reg.to_toml())?;
    let agg = AggregatorConfig {
        data_dir: dir.join("aggregator"),
        registry: reg_path,
        catalog: None,
        zones: match only {
            Some(o) => vec![ZoneId::parse(&o.zone)?],
            None => vec![],
        },
        mqtt: AggMqtt {
            port: broker.addr.port(),
            ..AggMqtt::default()
        },
        http: HttpConfig {
            listen: format!("127.0.0.1:{}", pick_port(opts.http_port)),
            write_token: Some(write_token.clone()),
            read_token: opts.read_token.clone(),
            ..HttpConfig::default()
        },
        limits: Default::default(),
        goals: Default::default(),
        goal_files: vec![],
        builtin_goals: true,
        goal_refresh_ms: 1000,
        classification: Default::default(),
        alerts: demo_alerts(),
        quality: Default::default(),
        summaries: zonesync_aggregator::summaries::SummarySettings {
            every_secs: 10.0,
            ..Default::default()
        },
        outbound: Default::default(),
        store: Default::default(),
        federation: only.map(|o| o.federation.clone()),
    };
    let running = zonesync_aggregator::start(agg, shutdown.clone()).await?;
    let start = first_of_last_month(Utc::now());
    let mut agents = Vec::new();
    for z in ZONES.iter().filter(|z| served(z)) {
        let profile_path = dir.join(format!("profile-{}.toml", z.id));
        write(
            &profile_path,
            &toml::to_string_pretty(&profile(z, &history_months(Utc::now()))?).unwrap_or_default(),
        )?;
        let sim: Vec<SimEnterprise> = (0..z.count)
            .filter(|i| z.industries[*i as usize % z.industries.len()].2)
            .map(|i| {
                let va = sim_value_added(i);
                let money = [
                    ("gross_output", va * 3.6),
                    ("revenue", va * 3.4),
                    ("tax", va * 0.11),
                    ("rd_spend", va * 3.4 * (0.006 + 0.002 * f64::from(i % 5))),
                    ("investment", va * 0.4),
                ];
                Ok(SimEnterprise {
                    id: demo_enterprise(z.first + i)?,
                    kwh_rate: sim_kwh_rate(i),
                    value_added_per_day: va,
                    money_per_day: money.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
                })
            })
            .collect::<Result<_, DemoError>>()?;
        let cfg = AgentConfig {
            agent_id: AgentId::parse(&format!("{}-gw01", z.id))?,
            zone: ZoneId::parse(z.id)?,
            data_dir: dir.join(format!("agent-{}", z.id)),
            catalog: None,
            mqtt: MqttConfig {
                port: broker.addr.port(),
                // The embedded broker (rumqttd) listens for MQTT 3.1.1 only.
                protocol: MqttProtocol::V311,
                ..MqttConfig::default()
            },
            upstream: Vec::new(),
            energy_platform: vec![],
            outbox: OutboxConfig::default(),
            simulator: Some(SimulatorConfig {
                enterprises: sim,
                interval_ms: opts.tick_ms,
                step_secs: Some(900),
                start: Some(start),
                max_ticks: None,
                meters_per_enterprise: 2,
            }),
            profile: Some(ProfileConfig {
                path: profile_path,
                poll_secs: 5,
            }),
            modbus: vec![],
            csv_drop: vec![],
            dlt645: vec![],
            serial: vec![],
            mqtt_gateway: vec![],
            opcua: vec![],
            http_pull: vec![],
            clock_sanity: Default::default(),
            history: Default::default(),
            metrics: Default::default(),
        };
        let s = shutdown.clone();
        agents.push(tokio::spawn(async move {
            if let Err(e) = zonesync_agent::run(cfg, s).await {
                tracing::error!("demo agent stopped: {e}");
            }
        }));
    }
    Ok(DemoHandle {
        http_addr: running.http_addr,
        broker_addr: broker.addr,
        running,
        agents,
        write_token,
    })
}

/// Runs the demo (or with `only`, one zone of it) until Ctrl-C / SIGTERM, printing where to look.
pub async fn run(opts: DemoOptions, only: Option<ZoneOnly>) -> Result<(), DemoError> {
    let (trigger, signal) = shutdown::channel();
    let h = start_with(&opts, only.as_ref(), signal).await?;
    let base = format!("http://{}", h.http_addr);
    let last = last_month(Utc::now());
    println!("zonesync demo is running (Ctrl-C stops it)");
    println!(
        "  dashboard:              {base}{}",
        zonesync_aggregator::dashboard::PATH
    );
    println!("  write token (ack):      {}", h.write_token);
    println!("  MQTT broker (embedded): mqtt://{}", h.broker_addr);
    println!("  API:                    {base}/api/v1/zones");
    let zone = only.as_ref().map_or("jiyuan-hitech", |o| o.zone.as_str());
    println!("  goals:                  {base}/api/v1/zones/{zone}/goals?period={last}");
    println!("  energy:                 {base}/api/v1/zones/{zone}/energy?period={last}");
    println!("  dead letters:           {base}/api/v1/dead-letters");
    println!("  metrics:                {base}/metrics");
    println!("  data:                   {}", opts.data_dir.display());
    shutdown::os_signal().await;
    println!("stopping ...");
    trigger.fire();
    for a in h.agents {
        let _ = a.await;
    }
    h.running.wait().await;
    Ok(())
}
