//! Connecting to an MQTT broker the same way everywhere: the options every
//! zonesync client starts from, and the reconnect backoff.
//!
//! Each link then sets what is its own on the options it gets back (a
//! persistent session and manual acks for the aggregator's ingest, a last
//! will and in-flight window for an agent), so the connection settings that
//! must agree — TLS, credentials, keep-alive floor, packet limits — are
//! built in one place.

use crate::shutdown::Shutdown;
use crate::tls::{transport, TlsConfig, TlsError};
use rumqttc::MqttOptions;
use std::time::Duration;

/// A keep-alive below this makes a broker drop clients on any hiccup.
const MIN_KEEP_ALIVE: Duration = Duration::from_secs(5);

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct ConnectSettings {
    /// Client id (a persistent session is keyed by it).
    pub client_id: String,
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// User name and password, when the broker wants them.
    pub credentials: Option<(String, String)>,
    /// TLS; plain TCP when absent.
    pub tls: Option<TlsConfig>,
    /// Keep-alive (at least 5 s).
    pub keep_alive: Duration,
    /// Largest packet accepted from the broker, bytes.
    pub max_incoming_bytes: usize,
    /// Largest packet sent, bytes.
    pub max_outgoing_bytes: usize,
}

impl ConnectSettings {
    /// The options to connect with. TLS files are read here, so a renewed
    /// certificate is picked up by the next call (the next reconnect).
    pub fn options(&self) -> Result<MqttOptions, TlsError> {
        let mut o = MqttOptions::new(self.client_id.clone(), self.host.clone(), self.port);
        o.set_transport(transport(self.tls.as_ref())?);
        o.set_keep_alive(self.keep_alive.max(MIN_KEEP_ALIVE));
        o.set_max_packet_size(self.max_incoming_bytes, self.max_outgoing_bytes);
        if let Some((user, password)) = &self.credentials {
            o.set_credentials(user.clone(), password.clone());
        }
        Ok(o)
    }

    /// The same settings for an MQTT 5 client, whose PUBACKs carry a reason
    /// code (a publish the broker's ACL denied is answered "not authorized"
    /// rather than acknowledged like any other, as MQTT 3.1.1 must).
    pub fn options_v5(&self) -> Result<rumqttc::v5::MqttOptions, TlsError> {
        let mut o = rumqttc::v5::MqttOptions::new(self.client_id.clone(), self.host.clone(), self.port);
        o.set_transport(transport(self.tls.as_ref())?);
        o.set_keep_alive(self.keep_alive.max(MIN_KEEP_ALIVE));
        // MQTT 5 announces the largest packet we accept to the broker, which
        // then never sends a bigger one; the broker's own limit, from its
        // CONNACK, bounds what we send.
        o.set_max_packet_size(Some(u32::try_from(self.max_incoming_bytes).unwrap_or(u32::MAX)));
        if let Some((user, password)) = &self.credentials {
            o.set_credentials(user.clone(), password.clone());
        }
        Ok(o)
    }
}

/// Exponential reconnect delay: starts at `min`, doubles after each wait up
/// to `max`, back to `min` once a connection succeeds.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// A backoff from `min` to `max` (`max` below `min` is taken as `min`).
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            next: min,
        }
    }

    /// The delay the next [`wait`](Self::wait) sleeps.
    pub fn delay(&self) -> Duration {
        self.next
    }

    /// Back to the shortest delay (after a successful connection).
    pub fn reset(&mut self) {
        self.next = self.min;
    }

    /// Sleeps the current delay and doubles the next one; returns false,
    /// at once, if shutdown comes first.
    pub async fn wait(&mut self, shutdown: &mut Shutdown) -> bool {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        tokio::select! {
            _ = shutdown.wait() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_carry_the_settings_and_a_keep_alive_floor() {
        let s = ConnectSettings {
            client_id: "c".into(),
            host: "broker".into(),
            port: 8883,
            credentials: Some(("u".into(), "p".into())),
            tls: None,
            keep_alive: Duration::from_secs(1),
            max_incoming_bytes: 1 << 20,
            max_outgoing_bytes: 1 << 10,
        };
        let o = s.options().unwrap();
        assert_eq!(o.broker_address(), ("broker".to_owned(), 8883));
        assert_eq!(o.client_id(), "c");
        assert_eq!(o.keep_alive(), MIN_KEEP_ALIVE);
        let login = o.credentials().expect("credentials set");
        assert_eq!((login.username.as_str(), login.password.as_str()), ("u", "p"));
        assert_eq!(o.max_packet_size(), 1 << 20);
        let v5 = s.options_v5().unwrap();
        assert_eq!(v5.broker_address(), ("broker".to_owned(), 8883));
        assert_eq!(v5.client_id(), "c");
        assert_eq!(v5.keep_alive(), MIN_KEEP_ALIVE);
        assert!(v5.credentials().is_some());
        assert_eq!(v5.max_packet_size(), Some(1 << 20));
    }

    #[tokio::test(start_paused = true)]
    async fn the_delay_doubles_to_its_ceiling_resets_and_yields_to_shutdown() {
        let (trigger, mut signal) = crate::shutdown::channel();
        let mut b = Backoff::new(Duration::from_millis(200), Duration::from_millis(500));
        let mut seen = vec![];
        for _ in 0..4 {
            seen.push(b.delay().as_millis());
            assert!(b.wait(&mut signal).await);
        }
        assert_eq!(seen, [200, 400, 500, 500]);
        b.reset();
        assert_eq!(b.delay(), Duration::from_millis(200));
        trigger.fire();
        assert!(!b.wait(&mut signal).await);
    }
}
