//! The agent's side of issue 13 ("A core you can trust"), through a real
//! Mosquitto, a real aggregator process and real `zonesync-agent` processes:
//! a fast clock at first install, seqs claimed ahead by a forger, an outbox
//! restored from a copy (with and without its high-water mark), damaged
//! outbox files, a full disk. Each test checks both sides: every reading the
//! agent produced ends stored and the month's figure is the real one (the
//! aggregator's API, compared with what the deterministic simulator and the
//! CSV drops produced), and the hostile or damaged input is refused or
//! reported with its reason (dead letters, `/metrics`, the agent's status and
//! presence, its exit status and stderr).
//!
//! The agent reports for E1 (and E2 in the full-disk test) of the data set's
//! registry (`support/dataset.rs`): a simulator from 2026-10-01 00:00 China
//! time in 15-minute ticks (value added at each simulated midnight, 40 a
//! day for E1) and a CSV drop folder for month figures, confirmed end to end.

mod damaged;
mod fixture;
mod forged;
mod reinstall;
mod restored;
