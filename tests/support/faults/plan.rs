//! What a fault-injection run is asked to do: the seed and rounds (from the
//! environment), the seeded generator every choice comes from, and the kinds
//! of fault.

/// What a run is asked to do.
#[derive(Debug, Clone)]
pub struct FaultPlan {
    /// Seed of every random choice.
    pub seed: u64,
    /// Faults to inject.
    pub rounds: u32,
    /// Kinds to draw from (`ZONESYNC_FAULT_KINDS`, comma-separated names as
    /// [`FaultKind::key`] gives them); all available kinds when empty.
    pub only: Vec<FaultKind>,
}

impl FaultPlan {
    /// From `ZONESYNC_FAULT_SEED` and `ZONESYNC_FAULT_ROUNDS`, else a fresh
    /// seed (from the clock) and `default_rounds`.
    pub fn from_env(default_rounds: u32) -> Self {
        let seed = std::env::var("ZONESYNC_FAULT_SEED")
            .ok()
            .map(|s| {
                s.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("ZONESYNC_FAULT_SEED={s:?} is not an unsigned integer"))
            })
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        let rounds = std::env::var("ZONESYNC_FAULT_ROUNDS")
            .ok()
            .map(|s| {
                s.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("ZONESYNC_FAULT_ROUNDS={s:?} is not an unsigned integer"))
            })
            .unwrap_or(default_rounds);
        let only = std::env::var("ZONESYNC_FAULT_KINDS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                FaultKind::ALL
                    .into_iter()
                    .find(|k| k.key() == s)
                    .unwrap_or_else(|| panic!("ZONESYNC_FAULT_KINDS: unknown kind {s:?}"))
            })
            .collect();
        Self { seed, rounds, only }
    }
}

/// The schedule's generator (one copy, in proto).
pub use zonesync_proto::rng::SplitMix64 as Rng;

/// The kinds of fault the harness injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// SIGKILL of one agent; restarted after a random delay.
    KillAgent,
    /// SIGKILL of the aggregator; restarted after a random delay.
    KillAggregator,
    /// SIGKILL of the broker (no persistence file written); restarted after a random delay.
    KillBroker,
    /// The broker stopped cleanly (SIGTERM) and unreachable for a while.
    StopBroker,
    /// One agent's link black-holed (what it sends vanishes), then cut and
    /// refused, then healed: the broker is unreachable while it produces.
    Partition,
    /// One agent's link deafened (batches reach the broker, PUBACKs never come
    /// back), then cut: the agent resends batches already stored (QoS 1 duplicates).
    LostAcks,
    /// The outbox disk budget of agent-c (which runs with a small one when
    /// this kind is drawn) exhausted: its link is cut and refused while its
    /// simulator keeps producing, until its status file shows the budget full
    /// and readings dropped; then healed. The outbox drops the oldest and
    /// reports the count upstream (`dropped_readings` in presence), and the
    /// final count attributes every drop to a missing reading key.
    OutboxFull,
}

impl FaultKind {
    /// Every kind, in report order.
    pub const ALL: [FaultKind; 7] = [
        FaultKind::KillAgent,
        FaultKind::KillAggregator,
        FaultKind::KillBroker,
        FaultKind::StopBroker,
        FaultKind::Partition,
        FaultKind::LostAcks,
        FaultKind::OutboxFull,
    ];

    /// Whether a run draws it when `ZONESYNC_FAULT_KINDS` does not choose:
    /// every kind this build can inject and survive. A broker SIGKILL is
    /// survived since the harness's agents keep each batch until the
    /// aggregator confirms it (end-to-end confirmation, docs/reliability.md).
    pub fn drawn_by_default(self) -> Result<(), &'static str> {
        self.available()
    }

    /// Whether this build can inject it; `Err` says what it waits for.
    pub fn available(self) -> Result<(), &'static str> {
        Ok(())
    }

    /// Its name in `ZONESYNC_FAULT_KINDS`.
    pub fn key(self) -> &'static str {
        match self {
            FaultKind::KillAgent => "kill-agent",
            FaultKind::KillAggregator => "kill-aggregator",
            FaultKind::KillBroker => "kill-broker",
            FaultKind::StopBroker => "stop-broker",
            FaultKind::Partition => "partition",
            FaultKind::LostAcks => "lost-acks",
            FaultKind::OutboxFull => "outbox-full",
        }
    }

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillAgent => "agent SIGKILL",
            FaultKind::KillAggregator => "aggregator SIGKILL",
            FaultKind::KillBroker => "broker SIGKILL",
            FaultKind::StopBroker => "broker stopped",
            FaultKind::Partition => "link partitioned",
            FaultKind::LostAcks => "PUBACKs lost, link cut",
            FaultKind::OutboxFull => "outbox disk budget exhausted",
        }
    }
}
