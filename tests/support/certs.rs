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

/// Issues a certificate for `cn` signed by the CA in `dir`, with the X.509
/// extensions in `ext` (without extensions openssl makes a v1 certificate,
/// which rustls refuses); returns (cert, key).
fn issue(dir: &Path, cn: &str, ext: &str) -> (PathBuf, PathBuf) {
    let (key, csr, pem, extfile) = (
        format!("{cn}.key"),
        format!("{cn}.csr"),
        format!("{cn}.pem"),
        format!("{cn}.ext"),
    );
    let subject = format!("/CN={cn}");
    openssl(
        dir,
        &[
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", &subject, "-keyout", &key, "-out", &csr,
        ],
    );
    std::fs::write(dir.join(&extfile), format!("{ext}\n")).expect("write extension file");
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
            &extfile,
            "-out",
            &pem,
        ],
    );
    (dir.join(pem), dir.join(key))
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
        Self {
            ca: dir.join("ca.pem"),
            server: issue(dir, "broker", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        }
    }

    /// Makes a client certificate with common name `cn`; returns (cert, key).
    pub fn client(&self, cn: &str) -> (PathBuf, PathBuf) {
        issue(self.ca.parent().expect("ca dir"), cn, "extendedKeyUsage=clientAuth")
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
