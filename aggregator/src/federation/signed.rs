//! Tallies signed with the zone's own key, for the MQTT path.
//!
//! Over NATS, a zone's leaf credentials decide which subject it may write,
//! and the hub sources each zone stream for that zone's subject only. An
//! MQTT bridge (Mosquitto `connection`, an EMQX data bridge) carries no such
//! identity to the center: whoever can publish on the center's broker, or
//! on any bridged zone broker, could write any zone's topic. So each message
//! carries an HMAC-SHA256 of its exact bytes under a secret only that zone
//! and the center hold; the center checks it before the merge sees anything.
//! The tallies travel as the very string that was signed, so nothing about
//! JSON re-encoding can make a good signature fail.

use super::wire::ZoneTallies;
use ring::hmac;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use zonesync_proto::ZoneId;

/// The MQTT topic of `zone`'s tallies under `prefix`: `<prefix>/<zone>/tallies`.
pub fn topic(prefix: &str, zone: &ZoneId) -> String {
    format!("{}/{zone}/tallies", prefix.trim_end_matches('/'))
}

/// The zone a tally topic under `prefix` names: None when the topic is not
/// one (or its zone part is no zone id).
pub fn topic_zone(prefix: &str, topic: &str) -> Option<String> {
    let rest = topic.strip_prefix(prefix.trim_end_matches('/'))?.strip_prefix('/')?;
    let zone = rest.strip_suffix("/tallies")?;
    (!zone.contains('/')).then(|| zone.to_owned())
}

/// A signed message: the zone that signed, the signature (hex) and the
/// tallies, as the JSON text that was signed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signed {
    /// The zone whose key signed.
    pub zone: String,
    /// HMAC-SHA256 of `tallies`' bytes, lower-case hex.
    pub hmac_sha256: String,
    /// A [`ZoneTallies`] as JSON.
    pub tallies: String,
}

/// A zone's signing secret.
#[derive(Clone)]
pub struct ZoneKey(hmac::Key);

/// Why a key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("reading key file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("key file {path} holds {len} bytes; a key is at least {MIN_KEY_BYTES} (e.g. `head -c 32 /dev/urandom | base64`)")]
    Short { path: String, len: usize },
}

/// Shortest secret taken: a guessable key would make the signature decoration.
pub const MIN_KEY_BYTES: usize = 16;

impl ZoneKey {
    /// A key from the secret's bytes.
    pub fn new(secret: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// The key in `path`: its text, surrounding white space removed.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let secret = text.trim();
        if secret.len() < MIN_KEY_BYTES {
            return Err(KeyError::Short {
                path: path.display().to_string(),
                len: secret.len(),
            });
        }
        Ok(Self::new(secret.as_bytes()))
    }
}

/// Loads every zone's key named in `files`.
pub fn load_keys(files: &BTreeMap<ZoneId, std::path::PathBuf>) -> Result<BTreeMap<ZoneId, ZoneKey>, KeyError> {
    files.iter().map(|(z, p)| Ok((z.clone(), ZoneKey::load(p)?))).collect()
}

/// The payload for `msg` signed with `key`.
pub fn seal(msg: &ZoneTallies, key: &ZoneKey) -> Result<Vec<u8>, serde_json::Error> {
    let tallies = serde_json::to_string(msg)?;
    let tag = hmac::sign(&key.0, tallies.as_bytes());
    serde_json::to_vec(&Signed {
        zone: msg.zone.to_string(),
        hmac_sha256: hex(tag.as_ref()),
        tallies,
    })
}

/// Why a received MQTT tally message was refused before the merge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsealed {
    #[error("not a signed tally message: bare tallies carry no zone's signature")]
    Unsigned,
    #[error("not a tally message: {0}")]
    Unreadable(String),
    #[error("zone {0:?} is not in the center's registry")]
    UnknownZone(String),
    #[error("the center holds no key for zone {0}")]
    NoKey(ZoneId),
    #[error("signature of zone {0} does not match its key")]
    BadSignature(ZoneId),
    #[error("signed by zone {signer}'s key, but the tallies are zone {zone}'s")]
    OtherZone { signer: ZoneId, zone: ZoneId },
}

impl Unsealed {
    /// Metric label (the merge's refusals use the same counter).
    pub fn label(&self) -> &'static str {
        match self {
            Unsealed::Unsigned => "unsigned",
            Unsealed::Unreadable(_) => "unreadable",
            Unsealed::UnknownZone(_) => "unknown_zone",
            Unsealed::NoKey(_) => "no_key",
            Unsealed::BadSignature(_) => "bad_signature",
            Unsealed::OtherZone { .. } => "bad_signature",
        }
    }

    /// The registered zone it names, if any (counted against that zone).
    pub fn zone(&self) -> Option<&ZoneId> {
        match self {
            Unsealed::NoKey(z) | Unsealed::BadSignature(z) => Some(z),
            Unsealed::OtherZone { signer, .. } => Some(signer),
            _ => None,
        }
    }
}

/// Checks `payload`'s signature with the key of the zone it names, and
/// reads the tallies it vouches for. `registered` says whether a zone is in
/// the center's registry (a zone with no key there is refused either way).
pub fn open(
    payload: &[u8],
    keys: &BTreeMap<ZoneId, ZoneKey>,
    registered: impl Fn(&ZoneId) -> bool,
) -> Result<ZoneTallies, Unsealed> {
    let short = |e: serde_json::Error| Unsealed::Unreadable(e.to_string().chars().take(120).collect());
    let signed: Signed = match serde_json::from_slice(payload) {
        Ok(s) => s,
        Err(e) => {
            return Err(match serde_json::from_slice::<ZoneTallies>(payload) {
                Ok(_) => Unsealed::Unsigned,
                Err(_) => short(e),
            })
        }
    };
    let stranger = || Unsealed::UnknownZone(signed.zone.chars().take(40).collect());
    let signer = ZoneId::parse(&signed.zone).map_err(|_| stranger())?;
    if !registered(&signer) {
        return Err(stranger());
    }
    let key = keys.get(&signer).ok_or_else(|| Unsealed::NoKey(signer.clone()))?;
    let tag = unhex(&signed.hmac_sha256).ok_or_else(|| Unsealed::BadSignature(signer.clone()))?;
    hmac::verify(&key.0, signed.tallies.as_bytes(), &tag).map_err(|_| Unsealed::BadSignature(signer.clone()))?;
    let msg: ZoneTallies = serde_json::from_str(&signed.tallies).map_err(short)?;
    if msg.zone != signer {
        return Err(Unsealed::OtherZone { signer, zone: msg.zone });
    }
    Ok(msg)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 128 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::goals::GoalSettings;

    fn msg(zone: &str) -> ZoneTallies {
        ZoneTallies {
            schema: super::super::wire::SCHEMA,
            zone: ZoneId::parse(zone).unwrap(),
            epoch: 1,
            version: 3,
            data_at: chrono::DateTime::UNIX_EPOCH,
            published_at: chrono::DateTime::UNIX_EPOCH,
            settings: GoalSettings::default(),
            cells: vec![],
        }
    }

    fn keys() -> BTreeMap<ZoneId, ZoneKey> {
        [("jy-a", "secret-of-jy-a-0123"), ("jy-b", "secret-of-jy-b-4567")]
            .into_iter()
            .map(|(z, k)| (ZoneId::parse(z).unwrap(), ZoneKey::new(k.as_bytes())))
            .collect()
    }

    fn all(_: &ZoneId) -> bool {
        true
    }

    #[test]
    fn a_sealed_message_opens_with_its_zone_key_only() {
        let k = keys();
        let a = ZoneId::parse("jy-a").unwrap();
        let b = ZoneId::parse("jy-b").unwrap();
        let sealed = seal(&msg("jy-a"), &k[&a]).unwrap();
        assert_eq!(open(&sealed, &k, all).unwrap().version, 3);

        // jy-b's key signing jy-a's tallies, claiming to be jy-a: the signature fails.
        let forged = seal(&msg("jy-a"), &k[&b]).unwrap();
        assert_eq!(open(&forged, &k, all).unwrap_err(), Unsealed::BadSignature(a.clone()));
        // jy-b's key, honest about signing, but the tallies are jy-a's.
        let mut env: Signed = serde_json::from_slice(&forged).unwrap();
        env.zone = "jy-b".into();
        let other = serde_json::to_vec(&env).unwrap();
        assert!(matches!(open(&other, &k, all), Err(Unsealed::OtherZone { .. })));
        // The figures changed after signing.
        let mut env: Signed = serde_json::from_slice(&sealed).unwrap();
        env.tallies = env.tallies.replace("\"version\":3", "\"version\":4");
        assert_eq!(
            open(&serde_json::to_vec(&env).unwrap(), &k, all).unwrap_err(),
            Unsealed::BadSignature(a.clone())
        );
        // Bare tallies, a stranger, a zone without a key, garbage.
        let bare = serde_json::to_vec(&msg("jy-a")).unwrap();
        assert_eq!(open(&bare, &k, all).unwrap_err(), Unsealed::Unsigned);
        assert_eq!(
            open(&sealed, &k, |z| z != &a).unwrap_err(),
            Unsealed::UnknownZone("jy-a".into())
        );
        let c = ZoneKey::new(b"secret-of-py-a-0000");
        let no_key = seal(&msg("py-a"), &c).unwrap();
        assert!(matches!(open(&no_key, &k, all), Err(Unsealed::NoKey(_))));
        assert!(matches!(open(b"{", &k, all), Err(Unsealed::Unreadable(_))));
        assert_eq!(Unsealed::Unsigned.label(), "unsigned");
    }

    #[test]
    fn topics_name_their_zone() {
        let z = ZoneId::parse("jy-a").unwrap();
        let t = topic("zonesync/federation/", &z);
        assert_eq!(t, "zonesync/federation/jy-a/tallies");
        assert_eq!(topic_zone("zonesync/federation", &t).as_deref(), Some("jy-a"));
        assert_eq!(
            topic_zone("zonesync/federation", "zonesync/federation/a/b/tallies"),
            None
        );
        assert_eq!(topic_zone("zonesync/federation", "other/jy-a/tallies"), None);
    }

    #[test]
    fn short_or_missing_key_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(&p, "short\n").unwrap();
        assert!(matches!(ZoneKey::load(&p), Err(KeyError::Short { len: 5, .. })));
        std::fs::write(&p, "  a-long-enough-secret-value\n").unwrap();
        assert!(ZoneKey::load(&p).is_ok());
        assert!(matches!(
            ZoneKey::load(&dir.path().join("none")),
            Err(KeyError::Read { .. })
        ));
    }
}
