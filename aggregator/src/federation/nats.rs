//! The NATS edge both ends share: connecting, and the zone and hub streams'
//! shape. Nothing here knows about goals.
//!
//! Streams keep the last few messages per zone subject
//! ([`super::config::FederationConfig::keep_per_zone`]): each message is a
//! whole snapshot, so the newest of each zone is all a center needs to
//! rebuild, and a zone stream stays small however long its link is down.

use super::config::{CenterNats, FederationConfig, NatsConnect};
use super::wire::subject;
use async_nats::jetstream::{self, stream};
use std::time::Duration;
use zonesync_proto::ZoneId;

/// Why talking to NATS failed.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("connecting to NATS at {url}: {source}")]
    Connect {
        url: String,
        source: async_nats::ConnectError,
    },
    #[error("creating or updating stream {stream}: {source}")]
    Stream {
        stream: String,
        source: jetstream::context::CreateStreamError,
    },
}

/// How long an unacknowledged duplicate is recognised by its `Nats-Msg-Id`.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// A client that reconnects by itself for as long as the process runs; the
/// first connection is waited for, so a start before the server fails.
pub async fn connect(c: &NatsConnect, name: &str) -> Result<async_nats::Client, NatsError> {
    let mut opts = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None);
    if let (Some(u), Some(p)) = (&c.user, &c.password) {
        opts = opts.user_and_password(u.clone(), p.clone());
    }
    opts.connect(c.url.as_str()).await.map_err(|source| NatsError::Connect {
        url: c.url.clone(),
        source,
    })
}

/// JetStream in `domain` (None: the server's own).
pub fn context(client: async_nats::Client, domain: Option<&str>) -> jetstream::Context {
    match domain {
        Some(d) => jetstream::with_domain(client, d),
        None => jetstream::new(client),
    }
}

/// The zone stream's configuration: the served zones' subjects, file-backed.
pub fn zone_stream(cfg: &FederationConfig, zones: &[ZoneId]) -> stream::Config {
    stream::Config {
        name: cfg.stream.clone(),
        subjects: zones.iter().map(subject).collect(),
        max_messages_per_subject: cfg.keep_per_zone,
        num_replicas: cfg.replicas,
        duplicate_window: DUPLICATE_WINDOW,
        storage: stream::StorageType::File,
        ..Default::default()
    }
}

/// The hub stream's configuration: no subjects of its own, every zone
/// stream sourced, each for its own zone's subject only.
pub fn hub_stream(cfg: &CenterNats) -> stream::Config {
    stream::Config {
        name: cfg.stream.clone(),
        max_messages_per_subject: cfg.keep_per_zone,
        num_replicas: cfg.replicas,
        duplicate_window: DUPLICATE_WINDOW,
        storage: stream::StorageType::File,
        sources: Some(
            cfg.source
                .iter()
                .map(|s| stream::Source {
                    name: s.stream.clone(),
                    filter_subject: Some(subject(&s.zone)),
                    external: Some(stream::External {
                        api_prefix: format!("$JS.{}.API", s.domain),
                        delivery_prefix: None,
                    }),
                    ..Default::default()
                })
                .collect(),
        ),
        ..Default::default()
    }
}

/// Creates the stream, or brings an existing one to `config`.
pub async fn ensure_stream(js: &jetstream::Context, config: stream::Config) -> Result<(), NatsError> {
    let name = config.name.clone();
    js.create_or_update_stream(config)
        .await
        .map(|_| ())
        .map_err(|source| NatsError::Stream { stream: name, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hub_sources_each_zone_stream_for_its_own_subject_only() {
        let cfg: CenterNats = toml::from_str(
            "url = \"nats://hub\"\n[[source]]\nzone = \"jy-a\"\ndomain = \"zone-jy-a\"\n[[source]]\nzone = \"py-a\"\ndomain = \"edge-7\"\nstream = \"T\"\n",
        )
        .unwrap();
        let c = hub_stream(&cfg);
        assert!(
            c.subjects.is_empty(),
            "the hub stream takes nothing published to it directly"
        );
        let sources = c.sources.unwrap();
        let seen: Vec<(&str, &str, &str)> = sources
            .iter()
            .map(|s| {
                (
                    s.name.as_str(),
                    s.filter_subject.as_deref().unwrap_or(""),
                    s.external.as_ref().map_or("", |e| e.api_prefix.as_str()),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("ZONESYNC_ZONE_TALLIES", "zonesync.tallies.jy-a", "$JS.zone-jy-a.API"),
                ("T", "zonesync.tallies.py-a", "$JS.edge-7.API"),
            ]
        );
    }
}
