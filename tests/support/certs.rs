//! A throw-away certificate authority for TLS tests: a CA, a broker
//! certificate for 127.0.0.1 and client certificates, made with the openssl
//! command line (Debian's `openssl`, present on every Debian machine).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Files of the test CA.
pub struct Certs {
    /// CA certificate.
    pub ca: PathBuf,
    /// Broker certificate and key.
    pub server: (PathBuf, PathBuf),
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is needed for the TLS tests (Debian package openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Certs {
    /// Makes a CA and a broker certificate valid for IP 127.0.0.1 in `dir`.
    pub fn new(dir: &Path) -> Self {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=zonesync test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
        );
        std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").expect("write san.ext");
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=broker",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "san.ext",
                "-out",
                "server.pem",
            ],
        );
        Self {
            ca: dir.join("ca.pem"),
            server: (dir.join("server.pem"), dir.join("server.key")),
        }
    }

    /// Makes a client certificate with common name `cn`; returns (cert, key).
    pub fn client(&self, cn: &str) -> (PathBuf, PathBuf) {
        let dir = self.ca.parent().expect("ca dir");
        let (key, csr, pem) = (format!("{cn}.key"), format!("{cn}.csr"), format!("{cn}.pem"));
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={cn}"),
                "-keyout",
                &key,
                "-out",
                &csr,
            ],
        );
        // Without extensions openssl makes an X.509 v1 certificate, which rustls refuses.
        std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").expect("write client.ext");
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "client.ext",
                "-out",
                &pem,
            ],
        );
        (dir.join(pem), dir.join(key))
    }

    /// Mosquitto listener options: TLS with this CA, client certificates required.
    pub fn mosquitto_listener(&self) -> String {
        format!(
            "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\nuse_identity_as_username true",
            self.ca.display(),
            self.server.0.display(),
            self.server.1.display()
        )
    }
}
