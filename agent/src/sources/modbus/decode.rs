//! Pure decoding of Modbus registers into numbers: no sockets, no clock.
//!
//! Meters disagree on how a 32- or 64-bit quantity is laid out over 16-bit
//! registers, so both the order of the words and the order of the bytes
//! within each word are configured per point. Kept apart from the I/O so every
//! layout can be tested exhaustively by feeding words.

use serde::{Deserialize, Serialize};

/// How a point's registers are interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    /// One register, unsigned.
    U16,
    /// Two registers, unsigned.
    U32,
    /// Two registers, two's complement.
    I32,
    /// Two registers, IEEE 754 single precision.
    F32,
    /// Four registers, unsigned.
    U64,
}

impl DataType {
    /// Registers the type spans.
    pub fn words(self) -> u16 {
        match self {
            DataType::U16 => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::U64 => 4,
        }
    }

    /// Bits of an unsigned type, whose register wraps at 2^bits; `None` for
    /// signed and float types, where a fall cannot be told from a replacement.
    pub fn wrap_bits(self) -> Option<u32> {
        match self {
            DataType::U16 => Some(16),
            DataType::U32 => Some(32),
            DataType::U64 => Some(64),
            DataType::I32 | DataType::F32 => None,
        }
    }
}

/// Order of the words, or of the bytes within a word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Most significant first (the Modbus convention).
    #[default]
    Big,
    /// Least significant first.
    Little,
}

/// A decoded register value, before scaling.
///
/// Kept in its own type rather than as `f64` so a `u64` register above 2^53
/// is compared exactly when telling a rollover from a replacement.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Raw {
    /// From `u16`, `u32` or `u64`.
    Unsigned(u64),
    /// From `i32`.
    Signed(i64),
    /// From `f32`; always finite.
    Float(f32),
}

impl Raw {
    /// The value as a float, for scaling and sending.
    pub fn as_f64(self) -> f64 {
        match self {
            Raw::Unsigned(u) => u as f64,
            Raw::Signed(i) => i as f64,
            Raw::Float(f) => f64::from(f),
        }
    }

    /// Whether the value is below zero.
    pub fn is_negative(self) -> bool {
        match self {
            Raw::Unsigned(_) => false,
            Raw::Signed(i) => i < 0,
            Raw::Float(f) => f < 0.0,
        }
    }
}

/// Why registers could not be decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("{data_type:?} needs {expected} registers, got {got}")]
    Length {
        data_type: DataType,
        expected: u16,
        got: usize,
    },
    #[error("f32 register value is not finite ({0})")]
    NotFinite(f32),
}

/// Decodes the registers of one point, as read, into a value.
///
/// `word_order` says whether the first register holds the most significant
/// word; `byte_order` whether each register's first byte on the wire is its
/// most significant one. NaN and infinities are refused: they are never a
/// meter reading, and sending one would poison every sum downstream.
pub fn decode(words: &[u16], data_type: DataType, word_order: Order, byte_order: Order) -> Result<Raw, DecodeError> {
    let expected = data_type.words();
    if words.len() != usize::from(expected) {
        return Err(DecodeError::Length {
            data_type,
            expected,
            got: words.len(),
        });
    }
    let fix_bytes = |w: u16| match byte_order {
        Order::Big => w,
        Order::Little => w.swap_bytes(),
    };
    let fold = |acc: u64, w: &u16| (acc << 16) | u64::from(fix_bytes(*w));
    let bits = match word_order {
        Order::Big => words.iter().fold(0, fold),
        Order::Little => words.iter().rev().fold(0, fold),
    };
    // `bits` holds exactly `16 × words` significant bits, so the narrowing
    // casts below only drop zeros.
    Ok(match data_type {
        DataType::U16 | DataType::U32 | DataType::U64 => Raw::Unsigned(bits),
        DataType::I32 => Raw::Signed(i64::from(bits as u32 as i32)),
        DataType::F32 => {
            let f = f32::from_bits(bits as u32);
            if !f.is_finite() {
                return Err(DecodeError::NotFinite(f));
            }
            Raw::Float(f)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use DataType::*;
    use Order::*;

    /// Splits a big-endian byte string into registers as a device with the
    /// given layout would hold them.
    fn layout(be_bytes: &[u8], word_order: Order, byte_order: Order) -> Vec<u16> {
        let mut words: Vec<u16> = be_bytes
            .chunks(2)
            .map(|c| match byte_order {
                Big => u16::from_be_bytes([c[0], c[1]]),
                Little => u16::from_le_bytes([c[0], c[1]]),
            })
            .collect();
        if word_order == Little {
            words.reverse();
        }
        words
    }

    const ORDERS: [(Order, Order); 4] = [(Big, Big), (Big, Little), (Little, Big), (Little, Little)];

    #[test]
    fn u16_in_both_byte_orders() {
        assert_eq!(decode(&[0x1234], U16, Big, Big), Ok(Raw::Unsigned(0x1234)));
        assert_eq!(decode(&[0x1234], U16, Big, Little), Ok(Raw::Unsigned(0x3412)));
        assert_eq!(
            decode(&[0x1234], U16, Little, Big),
            Ok(Raw::Unsigned(0x1234)),
            "word order is moot for one word"
        );
        assert_eq!(decode(&[0xFFFF], U16, Big, Big), Ok(Raw::Unsigned(65_535)));
        assert_eq!(decode(&[0], U16, Big, Big), Ok(Raw::Unsigned(0)));
    }

    #[test]
    fn u32_every_layout() {
        // 0x12345678 as the four common layouts (ABCD, BADC, CDAB, DCBA).
        assert_eq!(decode(&[0x1234, 0x5678], U32, Big, Big), Ok(Raw::Unsigned(0x1234_5678)));
        assert_eq!(
            decode(&[0x3412, 0x7856], U32, Big, Little),
            Ok(Raw::Unsigned(0x1234_5678))
        );
        assert_eq!(
            decode(&[0x5678, 0x1234], U32, Little, Big),
            Ok(Raw::Unsigned(0x1234_5678))
        );
        assert_eq!(
            decode(&[0x7856, 0x3412], U32, Little, Little),
            Ok(Raw::Unsigned(0x1234_5678))
        );
        for (w, b) in ORDERS {
            for v in [0u32, 1, 65_535, 65_536, 123_456_789, u32::MAX] {
                let words = layout(&v.to_be_bytes(), w, b);
                assert_eq!(
                    decode(&words, U32, w, b),
                    Ok(Raw::Unsigned(u64::from(v))),
                    "{v} {w:?} {b:?}"
                );
            }
        }
    }

    #[test]
    fn i32_every_layout_and_sign() {
        assert_eq!(decode(&[0xFFFF, 0xFFFE], I32, Big, Big), Ok(Raw::Signed(-2)));
        assert_eq!(decode(&[0xFFFE, 0xFFFF], I32, Little, Big), Ok(Raw::Signed(-2)));
        for (w, b) in ORDERS {
            for v in [0i32, 1, -1, i32::MIN, i32::MAX, -123_456_789] {
                let words = layout(&v.to_be_bytes(), w, b);
                assert_eq!(
                    decode(&words, I32, w, b),
                    Ok(Raw::Signed(i64::from(v))),
                    "{v} {w:?} {b:?}"
                );
            }
        }
    }

    #[test]
    fn f32_every_layout() {
        // 1234.5 = 0x449A5000.
        assert_eq!(decode(&[0x449A, 0x5000], F32, Big, Big), Ok(Raw::Float(1234.5)));
        assert_eq!(decode(&[0x5000, 0x449A], F32, Little, Big), Ok(Raw::Float(1234.5)));
        assert_eq!(decode(&[0x9A44, 0x0050], F32, Big, Little), Ok(Raw::Float(1234.5)));
        assert_eq!(decode(&[0x0050, 0x9A44], F32, Little, Little), Ok(Raw::Float(1234.5)));
        for (w, b) in ORDERS {
            for v in [
                0.0f32,
                -0.0,
                1.5,
                -273.15,
                1.0e-38,
                f32::MAX,
                f32::MIN_POSITIVE,
                16_777_217.0,
            ] {
                let words = layout(&v.to_be_bytes(), w, b);
                assert_eq!(decode(&words, F32, w, b), Ok(Raw::Float(v)), "{v} {w:?} {b:?}");
            }
        }
    }

    #[test]
    fn f32_nan_and_infinities_are_refused() {
        for (w, b) in ORDERS {
            for v in [f32::NAN, -f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                let words = layout(&v.to_be_bytes(), w, b);
                assert!(
                    matches!(decode(&words, F32, w, b), Err(DecodeError::NotFinite(_))),
                    "{v} {w:?} {b:?}"
                );
            }
            // A signalling NaN with payload, as a dead sensor may report.
            let words = layout(&0x7FA0_0001u32.to_be_bytes(), w, b);
            assert!(matches!(decode(&words, F32, w, b), Err(DecodeError::NotFinite(_))));
        }
    }

    #[test]
    fn u64_every_layout() {
        assert_eq!(
            decode(&[0x0102, 0x0304, 0x0506, 0x0708], U64, Big, Big),
            Ok(Raw::Unsigned(0x0102_0304_0506_0708))
        );
        assert_eq!(
            decode(&[0x0708, 0x0506, 0x0304, 0x0102], U64, Little, Big),
            Ok(Raw::Unsigned(0x0102_0304_0506_0708))
        );
        assert_eq!(
            decode(&[0x0201, 0x0403, 0x0605, 0x0807], U64, Big, Little),
            Ok(Raw::Unsigned(0x0102_0304_0506_0708))
        );
        assert_eq!(
            decode(&[0x0807, 0x0605, 0x0403, 0x0201], U64, Little, Little),
            Ok(Raw::Unsigned(0x0102_0304_0506_0708))
        );
        for (w, b) in ORDERS {
            for v in [0u64, 1, u64::from(u32::MAX) + 1, (1 << 53) + 1, u64::MAX] {
                let words = layout(&v.to_be_bytes(), w, b);
                assert_eq!(decode(&words, U64, w, b), Ok(Raw::Unsigned(v)), "{v} {w:?} {b:?}");
            }
        }
    }

    #[test]
    fn a_wrong_number_of_registers_is_refused() {
        for (t, n) in [(U16, 2), (U32, 1), (I32, 3), (F32, 0), (U64, 2)] {
            let words = vec![0u16; n];
            assert_eq!(
                decode(&words, t, Big, Big),
                Err(DecodeError::Length {
                    data_type: t,
                    expected: t.words(),
                    got: n
                })
            );
        }
    }

    #[test]
    fn raw_values_convert_and_know_their_sign() {
        assert_eq!(Raw::Unsigned(u64::MAX).as_f64(), 18_446_744_073_709_551_615.0);
        assert!(Raw::Signed(-1).is_negative() && !Raw::Signed(0).is_negative());
        assert!(Raw::Float(-0.5).is_negative() && !Raw::Float(-0.0).is_negative());
        assert!(!Raw::Unsigned(0).is_negative());
    }
}
