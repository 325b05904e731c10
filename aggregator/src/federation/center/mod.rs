//! The center role: holds no enterprise readings, only every zone's latest
//! tallies ([`merge::Merge`]), and serves city and province tables from
//! them ([`tables`]) over HTTP ([`api`]), fed from the hub stream
//! ([`consume`]) and/or from its MQTT broker ([`mqtt`]).

pub mod api;
pub mod consume;
pub mod merge;
pub mod mqtt;
pub mod run;
pub mod tables;
