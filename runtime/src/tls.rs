//! TLS for the MQTT links (agent and aggregator alike): rustls with the ring
//! provider, a zone CA file, and optionally a client certificate.
//!
//! Files are read each time a connection is set up, so renewed certificates
//! are picked up on the next reconnect without a restart.

use rumqttc::{TlsConfiguration, Transport};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// TLS settings of an MQTT connection (`[mqtt.tls]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the CA(s) that sign the broker's certificate.
    pub ca_file: PathBuf,
    /// PEM client certificate (chain), for brokers that require one.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
}

/// Why a TLS transport could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{0} holds no PEM certificate")]
    NoCertificate(String),
    #[error("client_cert_file and client_key_file go together")]
    HalfClientAuth,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// The transport for a connection: plain TCP, or TLS per `tls`.
pub fn transport(tls: Option<&TlsConfig>) -> Result<Transport, TlsError> {
    let Some(t) = tls else {
        return Ok(Transport::tcp());
    };
    // rumqttc is built without a default crypto provider (to keep aws-lc out);
    // install ring once. A second install fails harmlessly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = read(&t.ca_file)?;
    if !String::from_utf8_lossy(&ca).contains("-----BEGIN CERTIFICATE-----") {
        return Err(TlsError::NoCertificate(t.ca_file.display().to_string()));
    }
    let client_auth = match (&t.client_cert_file, &t.client_key_file) {
        (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
        (None, None) => None,
        _ => return Err(TlsError::HalfClientAuth),
    };
    Ok(Transport::tls_with_config(TlsConfiguration::Simple {
        ca,
        alpn: None,
        client_auth,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_without_settings_and_clear_errors_with_bad_ones() {
        assert!(matches!(transport(None), Ok(Transport::Tcp)));
        let dir = tempfile::tempdir().unwrap();
        let missing = TlsConfig {
            ca_file: dir.path().join("nope.pem"),
            client_cert_file: None,
            client_key_file: None,
        };
        assert!(matches!(transport(Some(&missing)), Err(TlsError::Read { .. })));
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let bad = TlsConfig {
            ca_file: junk.clone(),
            client_cert_file: Some(junk),
            client_key_file: None,
        };
        assert!(matches!(transport(Some(&bad)), Err(TlsError::NoCertificate(_))));
    }
}
