//! Identities that appear in topics and payloads: zone, agent and enterprise.
//!
//! Enterprise ids are the 18-character unified social credit code
//! (统一社会信用代码, GB 32100-2015). Its last character is a check character
//! over the first 17; we verify it so that a typo in a gateway's config is
//! caught at the edge instead of creating a phantom enterprise in a
//! government report.

use serde::{Deserialize, Serialize};
use std::fmt;

/// What was wrong with an identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("zone id {0:?} must be 1-32 characters of a-z, 0-9 and '-'")]
    Zone(String),
    #[error("agent id {0:?} must be 1-64 characters of A-Z, a-z, 0-9, '-' and '_'")]
    Agent(String),
    #[error("outbox id {0:?} must be 8-64 characters of a-z, 0-9 and '-'")]
    Outbox(String),
    #[error("enterprise id {0:?} must be 18 characters (unified social credit code), got {1}")]
    CreditCodeLength(String, usize),
    #[error("enterprise id {id:?} has {ch:?} at position {pos}, not allowed in a unified social credit code")]
    CreditCodeChar { id: String, ch: char, pos: usize },
    #[error("enterprise id {id:?} has check character {found:?}, GB 32100 gives {expected:?}")]
    CreditCodeCheck { id: String, found: char, expected: char },
}

/// A development zone, e.g. `jiyuan-hitech`. Lower-case so topics and ACLs are unambiguous.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ZoneId(String);

impl ZoneId {
    /// Parses a zone id.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let ok = !s.is_empty()
            && s.len() <= 32
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError::Zone(truncate(s)))
        }
    }
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A gateway agent, e.g. `jy-gw-01`; also its MQTT client id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AgentId(String);

impl AgentId {
    /// Parses an agent id.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let ok =
            !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError::Agent(truncate(s)))
        }
    }
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The identity of one agent's outbox: drawn at random when the outbox is
/// created (never from a clock), so a reinstalled gateway, a wiped disk or
/// an outbox restored from a copy that moves to a fresh identity numbers its
/// batches in a space no earlier outbox used. A batch is named by
/// (agent, outbox, seq); sequence numbers are only compared within one outbox.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OutboxId(String);

impl OutboxId {
    /// Parses an outbox id.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let ok = (8..=64).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError::Outbox(truncate(s)))
        }
    }

    /// An id from 16 random bytes (lower-case hex, 32 characters).
    pub fn from_random(bytes: [u8; 16]) -> Self {
        Self(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An enterprise's unified social credit code (统一社会信用代码).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EnterpriseId(String);

/// GB 32100 code characters: digits and upper-case letters without I, O, Z, S, V.
const CODE_CHARS: &[u8; 31] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";
/// GB 32100 weights for positions 1..=17.
const WEIGHTS: [u32; 17] = [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28];

fn code_value(c: u8) -> Option<u32> {
    CODE_CHARS.iter().position(|&x| x == c).map(|p| p as u32)
}

impl EnterpriseId {
    /// Parses and checks a credit code. Lower-case letters are accepted and upper-cased.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let up = s.trim().to_ascii_uppercase();
        let n = up.chars().count();
        if n != 18 {
            return Err(IdError::CreditCodeLength(truncate(s), n));
        }
        let bytes = up.as_bytes();
        if let Some(i) = bytes.iter().position(|&b| code_value(b).is_none()) {
            return Err(IdError::CreditCodeChar {
                id: up.clone(),
                ch: bytes[i] as char,
                pos: i + 1,
            });
        }
        let expected = Self::check_char_for(&bytes[..17]).unwrap_or('?');
        if bytes[17] as char != expected {
            return Err(IdError::CreditCodeCheck {
                id: up.clone(),
                found: bytes[17] as char,
                expected,
            });
        }
        Ok(Self(up))
    }

    /// Parses a credit code, but accepts any 18-character id starting with
    /// `test_prefix` without the check character (demo and training data).
    pub fn parse_with_test_prefix(s: &str, test_prefix: Option<&str>) -> Result<Self, IdError> {
        match test_prefix {
            Some(p) if !p.is_empty() && s.starts_with(p) && s.len() == 18 && s.is_ascii() => Ok(Self(s.to_owned())),
            _ => Self::parse(s),
        }
    }

    /// Re-reads an id this system validated earlier (e.g. from its own store),
    /// where it may have been admitted under a demo test prefix.
    pub fn from_stored(s: &str) -> Option<Self> {
        (s.len() == 18 && s.bytes().all(|b| b.is_ascii_alphanumeric())).then(|| Self(s.to_owned()))
    }

    /// Computes the check character for the first 17 characters, if they are valid code characters.
    pub fn check_char_for(first17: &[u8]) -> Option<char> {
        if first17.len() != 17 {
            return None;
        }
        let mut sum = 0u32;
        for (i, &b) in first17.iter().enumerate() {
            sum += code_value(b)? * WEIGHTS[i];
        }
        let c = (31 - sum % 31) % 31;
        Some(CODE_CHARS[c as usize] as char)
    }

    /// Builds a valid code from a 17-character body (used to make demo enterprises).
    pub fn with_check_char(first17: &str) -> Result<Self, IdError> {
        let c = Self::check_char_for(first17.as_bytes())
            .ok_or_else(|| IdError::CreditCodeLength(truncate(first17), first17.len() + 1))?;
        Self::parse(&format!("{first17}{c}"))
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

macro_rules! string_id {
    ($t:ty) => {
        impl TryFrom<String> for $t {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(&s)
            }
        }
        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.0
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl std::str::FromStr for $t {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }
    };
}
string_id!(ZoneId);
string_id!(AgentId);
string_id!(EnterpriseId);
string_id!(OutboxId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_example_credit_code_is_valid() {
        // A widely published example of a valid code.
        assert!(EnterpriseId::parse("91350100M000100Y43").is_ok());
        assert!(EnterpriseId::parse("91350100m000100y43").is_ok());
    }

    #[test]
    fn wrong_check_character_is_named() {
        let e = EnterpriseId::parse("91350100M000100Y44").unwrap_err();
        assert_eq!(
            e,
            IdError::CreditCodeCheck {
                id: "91350100M000100Y44".into(),
                found: '4',
                expected: '3'
            }
        );
    }

    #[test]
    fn forbidden_letters_and_lengths_are_refused() {
        assert!(matches!(
            EnterpriseId::parse("91350100M000100I43"),
            Err(IdError::CreditCodeChar { ch: 'I', pos: 16, .. })
        ));
        assert!(matches!(
            EnterpriseId::parse("9135"),
            Err(IdError::CreditCodeLength(_, 4))
        ));
    }

    #[test]
    fn generated_codes_round_trip() {
        let id = EnterpriseId::with_check_char("91419001MA0000001").unwrap();
        assert_eq!(EnterpriseId::parse(id.as_str()).unwrap(), id);
    }

    #[test]
    fn test_prefix_skips_only_the_check() {
        assert!(EnterpriseId::parse_with_test_prefix("TEST00000000000001", Some("TEST")).is_ok());
        assert!(EnterpriseId::parse_with_test_prefix("TEST00000000000001", None).is_err());
        assert!(EnterpriseId::parse_with_test_prefix("TEST0001", Some("TEST")).is_err());
    }

    #[test]
    fn zone_and_agent_ids_refuse_topic_characters() {
        assert!(ZoneId::parse("jiyuan-hitech").is_ok());
        assert!(ZoneId::parse("a/b").is_err());
        assert!(ZoneId::parse("Zone").is_err());
        assert!(AgentId::parse("gw_01-a").is_ok());
        assert!(AgentId::parse("gw+1").is_err());
        assert!(AgentId::parse("").is_err());
    }

    #[test]
    fn outbox_ids_are_random_hex_and_refuse_topic_characters() {
        let id = OutboxId::from_random([0xab; 16]);
        assert_eq!(id.as_str().len(), 32);
        assert_eq!(OutboxId::parse(id.as_str()).unwrap(), id);
        assert!(OutboxId::parse("short").is_err());
        assert!(OutboxId::parse("abcdefgh/").is_err());
        assert!(OutboxId::parse(&"a".repeat(65)).is_err());
    }
}
