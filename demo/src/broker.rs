//! An embedded MQTT broker (rumqttd) for the demo and tests.
//!
//! rumqttd keeps everything in memory and has no shutdown: it lives on its own
//! thread until the process ends. Production uses Mosquitto (`deploy/mosquitto/`).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// Why the embedded broker did not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("finding a free port: {0}")]
    Port(std::io::Error),
    #[error("embedded broker configuration: {0}")]
    Config(#[from] toml::de::Error),
    #[error("embedded broker did not accept connections on {0} within 10 s")]
    NotListening(SocketAddr),
}

/// A running embedded broker.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedBroker {
    /// Where it listens.
    pub addr: SocketAddr,
}

/// A free loopback TCP port (there is a small race until it is bound again).
pub fn free_port() -> Result<u16, std::io::Error> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts rumqttd on 127.0.0.1:`port` (0 picks a free port), accepting
/// payloads up to `max_payload` bytes, and waits until it listens.
pub fn start_embedded(port: u16, max_payload: usize) -> Result<EmbeddedBroker, BrokerError> {
    let port = if port == 0 {
        free_port().map_err(BrokerError::Port)?
    } else {
        port
    };
    let addr: SocketAddr = SocketAddr::from(([127, 0, 0, 1], port));
    let text = format!(
        r#"
id = 0
[router]
id = 0
max_connections = 10010
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "v4-1"
listen = "{addr}"
next_connection_delay_ms = 0
[v4.1.connections]
connection_timeout_ms = 60000
max_payload_size = {max_payload}
max_inflight_count = 100
dynamic_filters = true
"#
    );
    let config: rumqttd::Config = toml::from_str(&text)?;
    std::thread::Builder::new()
        .name("rumqttd".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!("embedded broker stopped: {e}");
            }
        })
        .map_err(BrokerError::Port)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(EmbeddedBroker { addr });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(BrokerError::NotListening(addr))
}
