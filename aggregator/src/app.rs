//! The aggregator's shared pieces, built once. Each task gets a handle with
//! only what it uses ([`App::ingest`], [`App::tables`], [`App::alerts`],
//! [`App::summaries`], [`App::outbound`]); the HTTP API, which reads nearly
//! all of it, is given the whole.

use crate::config::AggregatorConfig;
use crate::goals::{GoalCatalog, GoalError, GoalSettings};
use crate::metrics::Metrics;
use crate::registry::{Registry, RegistryError};
use crate::state::State;
use crate::store::{Store, StoreError};
use std::sync::{Arc, RwLock};
use zonesync_proto::{Catalog, Validator, ZoneId};

/// Why the aggregator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Catalog(Box<zonesync_runtime::config::ConfigError>),
    #[error(transparent)]
    Goals(#[from] GoalError),
    #[error("zone {0} is configured but not in the registry")]
    UnknownZone(ZoneId),
    #[error("creating {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("MQTT TLS settings: {0}")]
    Tls(#[from] zonesync_runtime::tls::TlsError),
    #[error("HTTP listener on {addr}: {source}")]
    Http { addr: String, source: std::io::Error },
    #[error(transparent)]
    Epoch(#[from] crate::federation::epoch::EpochError),
}

/// Everything the tasks share.
pub struct App {
    /// Zones and enterprises.
    pub registry: Arc<Registry>,
    /// Zones served.
    pub zones: Arc<[ZoneId]>,
    /// Indicator catalog.
    pub catalog: Arc<Catalog>,
    /// Payload validation.
    pub validator: Arc<Validator>,
    /// Goal catalog.
    pub goals: Arc<GoalCatalog>,
    /// Goal thresholds.
    pub settings: Arc<GoalSettings>,
    /// Classification settings.
    pub classification: crate::classify::ClassificationSettings,
    /// Data-quality thresholds.
    pub quality: crate::quality::QualitySettings,
    /// Computed goal tables.
    pub goal_cache: Arc<crate::goals::cache::GoalCache>,
    /// Bearer token for state-changing requests.
    pub write_token: Option<String>,
    /// Bearer token for reads, when reads are protected.
    pub read_token: Option<String>,
    /// Storage: the batch log and presences.
    pub store: Arc<Store>,
    /// Refused payloads and items, with their reasons.
    pub dead_letters: Arc<crate::dead_letters::DeadLetters>,
    /// Alert states and history.
    pub alert_store: crate::alerts::store::AlertStore,
    /// The durable queue of deliveries to sinks.
    pub deliveries: Arc<crate::outbound::queue::DeliveryQueue>,
    /// Every fact held and the rules about them; only ingest changes it.
    pub ledger: Arc<std::sync::Mutex<crate::facts::Ledger>>,
    /// Each served zone's goal tallies, kept in step with the state.
    pub tallies: Arc<crate::goals::incremental::Tallies>,
    /// In-memory zone state (the read model the API and goals read).
    pub state: Arc<RwLock<State>>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Dead tasks and store failures.
    pub health: Arc<crate::health::Health>,
}

impl App {
    /// The goal tables' handle: the refresher's, and every reader of a table.
    pub fn tables(&self) -> crate::goals::cache::Tables {
        crate::goals::cache::Tables {
            registry: self.registry.clone(),
            zones: self.zones.clone(),
            catalog: self.catalog.clone(),
            goals: self.goals.clone(),
            settings: self.settings.clone(),
            state: self.state.clone(),
            tallies: self.tallies.clone(),
            cache: self.goal_cache.clone(),
        }
    }

    /// The alert engine's handle.
    pub fn alerts(&self) -> crate::alerts::Alerts {
        crate::alerts::Alerts {
            registry: self.registry.clone(),
            zones: self.zones.clone(),
            catalog: self.catalog.clone(),
            settings: self.settings.clone(),
            state: self.state.clone(),
            alerts: self.alert_store.clone(),
            deliveries: self.deliveries.clone(),
            store: self.store.clone(),
            metrics: self.metrics.clone(),
        }
    }

    /// The summaries task's handle.
    pub fn summaries(&self) -> crate::summaries::Summaries {
        crate::summaries::Summaries {
            tables: self.tables(),
            deliveries: self.deliveries.clone(),
            store: self.store.clone(),
        }
    }

    /// The delivery task's handle.
    pub fn outbound(&self) -> crate::outbound::Outbound {
        crate::outbound::Outbound {
            queue: self.deliveries.clone(),
            store: self.store.clone(),
            metrics: self.metrics.clone(),
        }
    }

    /// The ingest task's handle: the write side (validation, the ledger, the
    /// store, the read model it keeps up to date), none of goals, alerts or HTTP.
    pub fn ingest(&self) -> crate::ingest::Ingest {
        crate::ingest::Ingest {
            zones: self.zones.clone(),
            validator: self.validator.clone(),
            registry: self.registry.clone(),
            catalog: self.catalog.clone(),
            store: self.store.clone(),
            ledger: self.ledger.clone(),
            state: self.state.clone(),
            tallies: self.tallies.clone(),
            dead_letters: self.dead_letters.clone(),
            metrics: self.metrics.clone(),
            health: self.health.clone(),
        }
    }

    /// Opens the store and rebuilds the state from it.
    pub fn open(cfg: &AggregatorConfig) -> Result<Self, StartError> {
        // Refuse to start on unusable TLS settings rather than retry for ever.
        zonesync_runtime::tls::transport(cfg.mqtt.tls.as_ref())?;
        let registry = Registry::load(&cfg.registry)?;
        let zones = if cfg.zones.is_empty() {
            registry.zones().map(|z| z.id.clone()).collect()
        } else {
            if let Some(z) = cfg.zones.iter().find(|z| registry.zone(z).is_none()) {
                return Err(StartError::UnknownZone(z.clone()));
            }
            cfg.zones.clone()
        };
        std::fs::create_dir_all(&cfg.data_dir).map_err(|source| StartError::Io {
            path: cfg.data_dir.display().to_string(),
            source,
        })?;
        let catalog = zonesync_runtime::config::load_catalog(cfg.catalog.as_deref())
            .map_err(|e| StartError::Catalog(Box::new(e)))?;
        let store = Store::open(&cfg.data_dir.join("store"), cfg.store.cache_capacity_bytes)?;
        let mut state = State::default();
        let mut ledger = crate::facts::Ledger::default();
        let goals = crate::goals::file::load(cfg.builtin_goals, &cfg.goal_files, &catalog)?;
        // Empty until a table asks for a span: the replay has nothing to keep up to date.
        let tallies = crate::goals::incremental::Tallies::new(&registry, &zones, &goals.goal, &catalog, &cfg.goals);
        let started = std::time::Instant::now();
        store.rebuild(&mut ledger, &mut state, &catalog, &|p| {
            registry.admit_presence(&p.zone, &p.agent, &p.enterprises).is_ok()
        })?;
        let dead_letters = crate::dead_letters::DeadLetters::open(store.db(), cfg.store.dead_letters_max_bytes)?;
        // Batches refused for their numbering are counted in memory; the dead
        // letters they left say when, so the batch_identity alert clears on
        // time after a restart instead of staying up for ever.
        dead_letters.each(|d| state.note_numbering_refusal(&d))?;
        let readings: u64 = state.zones.values().map(|z| z.readings_stored).sum();
        tracing::info!(
            zones = zones.len(),
            readings,
            batches = store.accepted(),
            took_ms = started.elapsed().as_millis() as u64,
            "aggregator state rebuilt from store"
        );
        Ok(Self {
            goals: Arc::new(goals),
            validator: Arc::new(Validator::new(catalog.clone(), cfg.limits.to_limits())),
            registry: Arc::new(registry),
            zones: zones.into(),
            catalog: Arc::new(catalog),
            settings: Arc::new(cfg.goals.clone()),
            classification: cfg.classification.clone(),
            quality: cfg.quality.clone(),
            goal_cache: Default::default(),
            write_token: cfg.http.write_token.clone().filter(|t| !t.is_empty()),
            read_token: cfg.http.read_token.clone().filter(|t| !t.is_empty()),
            dead_letters: Arc::new(dead_letters),
            alert_store: crate::alerts::store::AlertStore::open(store.db())?,
            deliveries: Arc::new(crate::outbound::queue::DeliveryQueue::open(store.db())?),
            store: Arc::new(store),
            ledger: Arc::new(std::sync::Mutex::new(ledger)),
            tallies: Arc::new(tallies),
            state: Arc::new(RwLock::new(state)),
            metrics: Arc::new(Metrics::default()),
            health: Default::default(),
        })
    }
}
