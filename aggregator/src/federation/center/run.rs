//! Starting a center: its registry and goals, the HTTP API and its sources
//! (the hub consumer, the MQTT subscription, or both), each holding the
//! shutdown signal and awaited on exit.

use super::api::{router, CenterApi};
use super::consume::{run as consume, ConsumeStats};
use super::merge::Merge;
use super::mqtt::run as mqtt_source;
use crate::federation::config::CenterConfig;
use crate::federation::signed::{load_keys, KeyError};
use crate::goals::GoalError;
use crate::registry::{Registry, RegistryError};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::task::JoinHandle;
use zonesync_runtime::shutdown::Shutdown;

/// Why a center could not start.
#[derive(Debug, thiserror::Error)]
pub enum CenterError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Catalog(Box<zonesync_runtime::config::ConfigError>),
    #[error(transparent)]
    Goals(#[from] GoalError),
    #[error("HTTP listener on {addr}: {source}")]
    Http { addr: String, source: std::io::Error },
    #[error("mqtt.keys: {0}")]
    Key(#[from] KeyError),
    #[error("the center has neither [nats] nor [mqtt]: nothing to read tallies from")]
    NoSource,
}

/// A started center.
pub struct RunningCenter {
    /// Where the HTTP API listens.
    pub http_addr: SocketAddr,
    /// The merge (tests read it).
    pub merge: Arc<Mutex<Merge>>,
    /// The consumer's counts.
    pub stats: Arc<ConsumeStats>,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

impl RunningCenter {
    /// Waits for every task to end (after shutdown), saying which ended by a panic.
    pub async fn wait(self) -> Vec<String> {
        let mut failed = Vec::new();
        for (name, t) in self.tasks {
            if let Err(e) = t.await {
                failed.push(format!("{name}: {e}"));
            }
        }
        failed
    }
}

/// Loads the registry and goals, binds the API and starts consuming the hub stream.
pub async fn start(cfg: CenterConfig, shutdown: Shutdown) -> Result<RunningCenter, CenterError> {
    if cfg.nats.is_none() && cfg.mqtt.is_none() {
        return Err(CenterError::NoSource);
    }
    let keys = match &cfg.mqtt {
        Some(m) => load_keys(&m.keys)?,
        None => Default::default(),
    };
    let registry = Registry::load(&cfg.registry)?;
    let catalog = zonesync_runtime::config::load_catalog(cfg.catalog.as_deref())
        .map_err(|e| CenterError::Catalog(Box::new(e)))?;
    let goals = crate::goals::file::load(cfg.builtin_goals, &cfg.goal_files, &catalog)?;
    let merge = Arc::new(Mutex::new(Merge::new(
        registry.zones().cloned(),
        goals.goal.into(),
        cfg.goals.clone(),
    )));
    let stats = Arc::new(ConsumeStats::default());
    let listener = tokio::net::TcpListener::bind(&cfg.http.listen)
        .await
        .map_err(|source| CenterError::Http {
            addr: cfg.http.listen.clone(),
            source,
        })?;
    let http_addr = listener.local_addr().map_err(|source| CenterError::Http {
        addr: cfg.http.listen.clone(),
        source,
    })?;
    let api = CenterApi {
        merge: merge.clone(),
        stats: stats.clone(),
        stale_after_s: cfg.stale_after_s,
    };
    let tokens = crate::auth::Tokens::new(cfg.http.read_token.as_deref(), cfg.http.write_token.as_deref());
    let limits = crate::http::Limits::new(&cfg.http);
    let http = tokio::spawn(crate::http::serve(
        listener,
        router(api, tokens),
        limits,
        shutdown.clone(),
    ));
    let mut tasks = vec![("HTTP API", http)];
    if let Some(nats) = cfg.nats.clone() {
        tracing::info!(hub = %nats.connect.url, stream = %nats.stream, "reading the hub stream");
        tasks.push((
            "hub consumer",
            tokio::spawn(consume(nats, merge.clone(), stats.clone(), shutdown.clone())),
        ));
    }
    if let Some(mqtt) = cfg.mqtt.clone() {
        tracing::info!(broker = %format!("{}:{}", mqtt.broker.host, mqtt.broker.port), prefix = %mqtt.topic_prefix, "subscribing to the MQTT tally topics");
        tasks.push((
            "MQTT source",
            tokio::spawn(mqtt_source(mqtt, keys, merge.clone(), stats.clone(), shutdown.clone())),
        ));
    }
    tracing::info!(%http_addr, "center started");
    Ok(RunningCenter {
        http_addr,
        merge,
        stats,
        tasks,
    })
}
