//! Attacks and mishaps on the aggregator, reproduced through a real
//! Mosquitto and real aggregator processes (issue 13, "A core you can
//! trust"): forged and reused sequence numbers, a clock far ahead, an outbox
//! reinstalled after a fast clock, a damaged or rolled-back store, a full
//! disk. Each test checks both sides: the real data ends stored and is the
//! figure shown, and the hostile or damaged input is refused or reported
//! with its reason (dead letters, `/metrics`, the agents list, the
//! confirmation on `zonesync/v1/{zone}/{agent}/confirm`, the exit status).
//!
//! The registry is the hand-computed data set's (`support/dataset.rs`):
//! enterprises with no agent binding, so any agent of the zone may report
//! for them; the sent-at test binds E1 to two agents explicitly.

mod damage;
mod fixture;
mod numbering;
