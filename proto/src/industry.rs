//! GB/T 4754-2017 industry codes (国民经济行业分类) as people write them.
//!
//! The same class arrives as `C3110` (with its division letter, as the
//! statistics bureau prints it) and as `3110` (digits only, as most enterprise
//! systems and many spreadsheets hold it). Everything that compares codes
//! matches by prefix, so two spellings of one code would silently fall under
//! different limits and filters. Codes and prefixes are therefore normalised
//! where they enter (registry, declarations, alert limits, goal filters) to one
//! form, the division letter followed by the digits, and a code that cannot
//! exist is refused with the reason.
//!
//! What can be checked without the full class list: the shape (an optional
//! letter, then 2 to 4 digits: major group, group, class), that the major group
//! (大类, the first two digits) exists, and that a given letter is the division
//! (门类) the major group belongs to. The 97 major groups are numbered without
//! gaps from 01 to 97, so the division table below is the whole of that check.
//! A three- or four-digit code under an existing major group is accepted as
//! written: the class list itself is not shipped (shared/reference has none).

use serde::{Deserialize, Deserializer};

/// Divisions of GB/T 4754-2017 with the major groups (大类) each spans, inclusive.
/// Source: GB/T 4754-2017 《国民经济行业分类》 (2019 amendment), table of 门类 and 大类.
const DIVISIONS: [(char, u8, u8, &str); 20] = [
    ('A', 1, 5, "农、林、牧、渔业"),
    ('B', 6, 12, "采矿业"),
    ('C', 13, 43, "制造业"),
    ('D', 44, 46, "电力、热力、燃气及水生产和供应业"),
    ('E', 47, 50, "建筑业"),
    ('F', 51, 52, "批发和零售业"),
    ('G', 53, 60, "交通运输、仓储和邮政业"),
    ('H', 61, 62, "住宿和餐饮业"),
    ('I', 63, 65, "信息传输、软件和信息技术服务业"),
    ('J', 66, 69, "金融业"),
    ('K', 70, 70, "房地产业"),
    ('L', 71, 72, "租赁和商务服务业"),
    ('M', 73, 75, "科学研究和技术服务业"),
    ('N', 76, 79, "水利、环境和公共设施管理业"),
    ('O', 80, 82, "居民服务、修理和其他服务业"),
    ('P', 83, 83, "教育"),
    ('Q', 84, 85, "卫生和社会工作"),
    ('R', 86, 90, "文化、体育和娱乐业"),
    ('S', 91, 96, "公共管理、社会保障和社会组织"),
    ('T', 97, 97, "国际组织"),
];

/// Why a text is not a GB/T 4754 code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndustryCodeError {
    /// Nothing was given.
    #[error("industry code is empty")]
    Empty,
    /// Not a letter and digits at all.
    #[error("{0:?} is not a GB/T 4754 industry code (an optional division letter A–T, then 2 to 4 digits, e.g. C3110 or 3110)")]
    Shape(String),
    /// The letter is not one of the 20 divisions.
    #[error("{0:?}: GB/T 4754 has no division {1} (divisions are A to T)")]
    UnknownDivision(String, char),
    /// The major group does not exist.
    #[error("{0:?}: GB/T 4754-2017 has no major group {1:02} (major groups are 01 to 97)")]
    UnknownMajorGroup(String, u8),
    /// The letter and the digits name different divisions.
    #[error("{code:?}: major group {group:02} is in division {division} ({name}), not {given}")]
    WrongDivision {
        /// The code as given.
        code: String,
        /// Its major group.
        group: u8,
        /// The division the major group belongs to.
        division: char,
        /// That division's name.
        name: &'static str,
        /// The letter that was given.
        given: char,
    },
}

/// The division a major group belongs to.
fn division_of(group: u8) -> Option<(char, &'static str)> {
    DIVISIONS
        .iter()
        .find(|(_, lo, hi, _)| (*lo..=*hi).contains(&group))
        .map(|(d, _, _, name)| (*d, *name))
}

/// Normalises an enterprise's industry code: `3110`, `c3110`, ` C 3110 ` all
/// become `C3110`. The code must name at least a major group (2 digits).
pub fn normalise_code(raw: &str) -> Result<String, IndustryCodeError> {
    normalise(raw, false)
}

/// Normalises a code prefix used to select enterprises (a limit's industry, a
/// zone's leading industries, a goal's filter): as [`normalise_code`], and a
/// bare division letter (`C`, all manufacturing) is allowed too.
pub fn normalise_prefix(raw: &str) -> Result<String, IndustryCodeError> {
    normalise(raw, true)
}

fn normalise(raw: &str, letter_alone: bool) -> Result<String, IndustryCodeError> {
    let text: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
    if text.is_empty() {
        return Err(IndustryCodeError::Empty);
    }
    let shape = || IndustryCodeError::Shape(raw.trim().to_owned());
    let mut chars = text.chars();
    let first = chars.next().ok_or(IndustryCodeError::Empty)?;
    let (letter, digits) = if first.is_ascii_alphabetic() {
        (Some(first.to_ascii_uppercase()), chars.as_str())
    } else {
        (None, text.as_str())
    };
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(shape());
    }
    if let Some(l) = letter {
        if !DIVISIONS.iter().any(|(d, ..)| *d == l) {
            return Err(IndustryCodeError::UnknownDivision(raw.trim().to_owned(), l));
        }
        if digits.is_empty() && letter_alone {
            return Ok(l.to_string());
        }
    }
    if !(2..=4).contains(&digits.len()) {
        return Err(shape());
    }
    let group: u8 = digits[..2].parse().map_err(|_| shape())?;
    let Some((division, name)) = division_of(group) else {
        return Err(IndustryCodeError::UnknownMajorGroup(raw.trim().to_owned(), group));
    };
    match letter {
        Some(given) if given != division => Err(IndustryCodeError::WrongDivision {
            code: raw.trim().to_owned(),
            group,
            division,
            name,
            given,
        }),
        _ => Ok(format!("{division}{digits}")),
    }
}

/// Whether an enterprise's code falls under a prefix, whichever way either is
/// written (`3110` is under `C31` and `31` and `C`). Either side not being a
/// code means no match; entry points refuse such codes before they get here,
/// so this only meets them in data stored before codes were normalised.
pub fn is_under(code: &str, prefix: &str) -> bool {
    match (normalise_code(code), normalise_prefix(prefix)) {
        (Ok(c), Ok(p)) => c.starts_with(&p),
        _ => false,
    }
}

/// `deserialize_with` for a list of prefixes: each normalised, a bad one
/// refused with its reason (so a config or registry naming `C06` fails to
/// load instead of matching nothing).
pub fn deserialize_prefixes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let raw = Vec::<String>::deserialize(d)?;
    raw.iter()
        .map(|p| normalise_prefix(p).map_err(serde::de::Error::custom))
        .collect()
}

/// `deserialize_with` for an optional enterprise code.
pub fn deserialize_code<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|c| normalise_code(&c).map_err(serde::de::Error::custom))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_normalise_to_the_lettered_one() {
        for raw in ["3110", "C3110", "c3110", " C 3110 "] {
            assert_eq!(normalise_code(raw).as_deref(), Ok("C3110"), "{raw}");
        }
        assert_eq!(normalise_code("0610").as_deref(), Ok("B0610"));
        assert_eq!(normalise_code("97").as_deref(), Ok("T97"));
        assert_eq!(normalise_code("441").as_deref(), Ok("D441"));
        assert_eq!(normalise_prefix("31").as_deref(), Ok("C31"));
        assert_eq!(normalise_prefix("c").as_deref(), Ok("C"));
    }

    #[test]
    fn impossible_codes_are_refused_with_the_reason() {
        assert_eq!(normalise_code(""), Err(IndustryCodeError::Empty));
        assert!(matches!(normalise_code("C"), Err(IndustryCodeError::Shape(_))));
        assert!(matches!(normalise_code("3"), Err(IndustryCodeError::Shape(_))));
        assert!(matches!(normalise_code("311000"), Err(IndustryCodeError::Shape(_))));
        assert!(matches!(normalise_code("C31-10"), Err(IndustryCodeError::Shape(_))));
        assert!(matches!(normalise_code("钢铁"), Err(IndustryCodeError::Shape(_))));
        assert_eq!(
            normalise_code("9810"),
            Err(IndustryCodeError::UnknownMajorGroup("9810".into(), 98))
        );
        assert_eq!(
            normalise_code("0010"),
            Err(IndustryCodeError::UnknownMajorGroup("0010".into(), 0))
        );
        assert!(matches!(
            normalise_code("Z31"),
            Err(IndustryCodeError::UnknownDivision(_, 'Z'))
        ));
        let e = normalise_code("C0610").unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"C0610\": major group 06 is in division B (采矿业), not C"
        );
    }

    #[test]
    fn prefixes_match_either_spelling() {
        assert!(is_under("3110", "C31"));
        assert!(is_under("C3110", "31"));
        assert!(is_under("3110", "C"));
        assert!(!is_under("3210", "C31"));
        assert!(!is_under("3110", "C311x"));
    }

    #[test]
    fn the_division_table_covers_01_to_97_without_gaps_or_overlaps() {
        let mut next = 1;
        for (_, lo, hi, _) in DIVISIONS {
            assert_eq!(lo, next, "gap or overlap before {lo}");
            assert!(hi >= lo);
            next = hi + 1;
        }
        assert_eq!(next, 98);
    }
}
