//! DL/T 645-2007 frames: pure encoding and decoding, no sockets, so every
//! byte is checked by unit tests against frames worked out from the standard.
//!
//! A frame is `68 A0..A5 68 C L DATA CS 16`: the meter address is six BCD
//! bytes sent least significant first, every data byte travels with 0x33
//! added (so a line idle at 0x00 never looks like data), and the checksum is
//! the sum modulo 256 of every byte from the first 0x68 to the end of the
//! data. Up to four 0xFE bytes may precede a frame to wake the line's
//! receivers; they are not part of the checksum. A meter answers a read
//! (control 0x11) with 0x91 (normal), 0xB1 (normal, more frames follow) or
//! 0xD1 (refused, one error byte).
//!
//! DL/T 645-1997, still in many older meters, frames the same way (address,
//! 0x33 offset, checksum, wake-up bytes) but reads with control 0x01, answers
//! with 0x81 / 0xA1 / 0xC1, and names a total by a two-byte identifier
//! (9010 forward, 9020 reverse active energy; it has no combined total).

use serde::{Deserialize, Serialize};
use std::fmt;

/// Start and end delimiters, and the wake-up byte.
const START: u8 = 0x68;
const END: u8 = 0x16;
const WAKE: u8 = 0xFE;
/// Added to every data byte on the wire.
const OFFSET: u8 = 0x33;
/// Control code of a read-data request.
pub const READ: u8 = 0x11;
/// Bytes from the first 0x68 to the length byte.
const HEADER: usize = 10;

/// A meter address as printed on its nameplate: twelve decimal digits, most
/// significant first (`202311230001`); on the wire it is reversed byte-wise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address([u8; 6]);

/// Why a nameplate address was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("meter address {0:?} must be exactly 12 decimal digits, as on the nameplate")]
pub struct AddressError(pub String);

impl Address {
    /// Parses the twelve nameplate digits.
    pub fn parse(s: &str) -> Result<Self, AddressError> {
        let digits = s.as_bytes();
        if digits.len() != 12 || !digits.iter().all(u8::is_ascii_digit) {
            return Err(AddressError(s.chars().take(32).collect()));
        }
        let mut wire = [0u8; 6];
        for (i, pair) in digits.chunks(2).enumerate() {
            // Nameplate byte i (from the left) is wire byte 5 - i.
            wire[5 - i] = ((pair[0] - b'0') << 4) | (pair[1] - b'0');
        }
        Ok(Self(wire))
    }

    /// The six bytes as sent (A0 first).
    pub fn wire(&self) -> [u8; 6] {
        self.0
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0.iter().rev() {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Address::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Which active-energy total a meter is asked for (DL/T 645-2007 table A.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Quantity {
    /// 组合有功总电能, DI 00 00 00 00; may be negative (sign bit).
    #[default]
    Combined,
    /// 正向有功总电能, DI 00 01 00 00.
    Forward,
    /// 反向有功总电能, DI 00 02 00 00.
    Reverse,
}

impl Quantity {
    /// The data identifier DI3 DI2 DI1 DI0 as written in the standard.
    pub fn data_id(self) -> u32 {
        match self {
            Quantity::Combined => 0x0000_0000,
            Quantity::Forward => 0x0001_0000,
            Quantity::Reverse => 0x0002_0000,
        }
    }

    /// Whether the top bit of the highest byte is a sign: only the combined
    /// total (forward minus reverse, depending on the meter's combination
    /// word) can fall below zero.
    fn signed(self) -> bool {
        self == Quantity::Combined
    }
}

/// Which edition of the standard a meter speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub enum Protocol {
    /// DL/T 645-2007: four-byte data identifiers, control 0x11.
    #[default]
    #[serde(rename = "2007")]
    V2007,
    /// DL/T 645-1997: two-byte data identifiers, control 0x01.
    #[serde(rename = "1997")]
    V1997,
}

/// Control code of a DL/T 645-1997 read request.
pub const READ_1997: u8 = 0x01;

impl Quantity {
    /// The DL/T 645-1997 data identifier (DI1 DI0 as written), if that edition has the total.
    pub fn data_id_1997(self) -> Option<u16> {
        match self {
            Quantity::Combined => None,
            Quantity::Forward => Some(0x9010),
            Quantity::Reverse => Some(0x9020),
        }
    }
}

/// The read request in `protocol`'s edition; `None` for a total that
/// edition does not have (the configuration check refuses those).
pub fn request(protocol: Protocol, address: Address, quantity: Quantity, wake: usize) -> Option<Vec<u8>> {
    match protocol {
        Protocol::V2007 => Some(read_request(address, quantity, wake)),
        Protocol::V1997 => {
            let di = quantity.data_id_1997()?;
            let mut out = vec![WAKE; wake.min(4)];
            let start = out.len();
            out.push(START);
            out.extend_from_slice(&address.wire());
            out.push(START);
            out.push(READ_1997);
            out.push(2);
            out.extend(di.to_le_bytes().iter().map(|b| b.wrapping_add(OFFSET)));
            out.push(checksum(&out[start..]));
            out.push(END);
            Some(out)
        }
    }
}

/// The energy total in an answer, read as `protocol`'s edition.
pub fn answer(protocol: Protocol, frame: &Frame, quantity: Quantity) -> Result<Energy, AnswerError> {
    match protocol {
        Protocol::V2007 => energy(frame, quantity),
        Protocol::V1997 => energy_1997(frame, quantity),
    }
}

/// A DL/T 645-1997 answer: control 0x81 (or 0xA1, more follows) with the
/// two-byte identifier and four BCD bytes XXXXXX.XX, or 0xC1 and an error byte.
fn energy_1997(frame: &Frame, quantity: Quantity) -> Result<Energy, AnswerError> {
    let follow_up = match frame.control {
        0x81 => false,
        0xA1 => true,
        0xC1 => return Err(AnswerError::Refused1997(frame.data.first().copied().unwrap_or(0))),
        c => return Err(AnswerError::Control(c)),
    };
    let want = u32::from(quantity.data_id_1997().unwrap_or(0));
    let [d0, d1, v0, v1, v2, v3] = frame.data[..] else {
        return Err(AnswerError::Length(frame.data.len()));
    };
    let got = u32::from(u16::from_le_bytes([d0, d1]));
    if got != want {
        return Err(AnswerError::DataId { got, want });
    }
    let value = [v0, v1, v2, v3];
    let mut hundredths: i64 = 0;
    for b in [v3, v2, v1, v0] {
        let (hi, lo) = (b >> 4, b & 0x0F);
        if hi > 9 || lo > 9 {
            return Err(AnswerError::NotBcd(value));
        }
        hundredths = hundredths * 100 + i64::from(hi * 10 + lo);
    }
    Ok(Energy { hundredths, follow_up })
}

/// The read request for `quantity` from `address`, with `wake` 0xFE bytes in front.
pub fn read_request(address: Address, quantity: Quantity, wake: usize) -> Vec<u8> {
    let mut out = vec![WAKE; wake.min(4)];
    let start = out.len();
    out.push(START);
    out.extend_from_slice(&address.wire());
    out.push(START);
    out.push(READ);
    out.push(4);
    // DI0 first on the wire.
    out.extend(quantity.data_id().to_le_bytes().iter().map(|b| b.wrapping_add(OFFSET)));
    out.push(checksum(&out[start..]));
    out.push(END);
    out
}

/// Sum modulo 256 of `bytes`.
fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b))
}

/// A whole frame found in a byte stream, its data with the 0x33 offset removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Address the frame carries.
    pub address: Address,
    /// Control code.
    pub control: u8,
    /// Data, offset removed.
    pub data: Vec<u8>,
}

/// What the start of a receive buffer holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan {
    /// No whole frame yet; read more. Bytes before the first candidate start may be dropped.
    Incomplete {
        /// Bytes that cannot belong to any frame.
        skip: usize,
    },
    /// A frame, and how many bytes it (with anything before it) used.
    Frame { frame: Frame, used: usize },
    /// A 0x68 that starts no valid frame (bad checksum, end byte or second 0x68): drop `skip` bytes and scan again.
    Corrupt { skip: usize, problem: &'static str },
}

/// Looks for the first frame in `buf`, skipping wake-up bytes and line noise.
pub fn scan(buf: &[u8]) -> Scan {
    let Some(start) = buf.iter().position(|b| *b == START) else {
        return Scan::Incomplete { skip: buf.len() };
    };
    let rest = &buf[start..];
    if rest.len() < HEADER {
        return Scan::Incomplete { skip: start };
    }
    if rest[7] != START {
        return Scan::Corrupt {
            skip: start + 1,
            problem: "no second 0x68 after the address",
        };
    }
    let len = usize::from(rest[9]);
    let total = HEADER + len + 2;
    if rest.len() < total {
        return Scan::Incomplete { skip: start };
    }
    if checksum(&rest[..HEADER + len]) != rest[HEADER + len] {
        return Scan::Corrupt {
            skip: start + 1,
            problem: "checksum does not match",
        };
    }
    if rest[total - 1] != END {
        return Scan::Corrupt {
            skip: start + 1,
            problem: "no 0x16 end byte",
        };
    }
    let mut address = [0u8; 6];
    address.copy_from_slice(&rest[1..7]);
    Scan::Frame {
        frame: Frame {
            address: Address(address),
            control: rest[8],
            data: rest[HEADER..HEADER + len]
                .iter()
                .map(|b| b.wrapping_sub(OFFSET))
                .collect(),
        },
        used: start + total,
    }
}

/// Why a meter's answer carries no value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AnswerError {
    #[error("meter refused the read (control 0xD1), error byte {0:#04x}: {text}", text = error_text(*.0))]
    Refused(u8),
    #[error("meter refused the read (DL/T 645-1997 control 0xC1), error byte {0:#04x}: {text}", text = error_text_1997(*.0))]
    Refused1997(u8),
    #[error(
        "unexpected control code {0:#04x} (a read is answered with 0x91, 0xB1 or 0xD1; in 1997 0x81, 0xA1 or 0xC1)"
    )]
    Control(u8),
    #[error("answer holds {0} data bytes; an energy total needs 4 for the data identifier and 4 for the value")]
    Length(usize),
    #[error("answer is for data identifier {got:08x}, not {want:08x}")]
    DataId { got: u32, want: u32 },
    #[error("value bytes {0:02x?} are not BCD")]
    NotBcd([u8; 4]),
}

/// The standard's meaning of each bit of the error byte (DL/T 645-2007 table 4).
fn error_text(err: u8) -> String {
    const BITS: [&str; 7] = [
        "other error",
        "no data requested",
        "password wrong or not authorised",
        "baud rate cannot be changed",
        "too many annual time zones",
        "too many daily time slots",
        "too many tariffs",
    ];
    let names: Vec<&str> = BITS
        .iter()
        .enumerate()
        .filter(|(i, _)| err & (1 << i) != 0)
        .map(|(_, n)| *n)
        .collect();
    if names.is_empty() {
        "no reason given".into()
    } else {
        names.join(", ")
    }
}

/// The 1997 edition's meaning of each bit of the error byte.
fn error_text_1997(err: u8) -> String {
    const BITS: [&str; 7] = [
        "illegal data",
        "data identifier wrong",
        "password wrong",
        "",
        "too many annual time zones",
        "too many daily time slots",
        "too many tariffs",
    ];
    let names: Vec<&str> = BITS
        .iter()
        .enumerate()
        .filter(|(i, n)| err & (1 << i) != 0 && !n.is_empty())
        .map(|(_, n)| *n)
        .collect();
    if names.is_empty() {
        "no reason given".into()
    } else {
        names.join(", ")
    }
}

/// An energy total as read: hundredths of a kWh (format XXXXXX.XX), and
/// whether the meter said more frames follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Energy {
    /// Value in 0.01 kWh; negative only for a combined total.
    pub hundredths: i64,
    /// Control 0xB1: the meter has follow-up frames (none are needed for a total).
    pub follow_up: bool,
}

impl Energy {
    /// The value in kWh.
    pub fn kwh(self) -> f64 {
        self.hundredths as f64 / 100.0
    }
}

/// Reads the energy total out of an answer to a read of `quantity`.
pub fn energy(frame: &Frame, quantity: Quantity) -> Result<Energy, AnswerError> {
    let follow_up = match frame.control {
        0x91 => false,
        0xB1 => true,
        0xD1 => return Err(AnswerError::Refused(frame.data.first().copied().unwrap_or(0))),
        c => return Err(AnswerError::Control(c)),
    };
    let [d0, d1, d2, d3, v0, v1, v2, v3] = frame.data[..] else {
        return Err(AnswerError::Length(frame.data.len()));
    };
    let got = u32::from_le_bytes([d0, d1, d2, d3]);
    if got != quantity.data_id() {
        return Err(AnswerError::DataId {
            got,
            want: quantity.data_id(),
        });
    }
    let value = [v0, v1, v2, v3];
    let (top, negative) = if quantity.signed() {
        (v3 & 0x7F, v3 & 0x80 != 0)
    } else {
        (v3, false)
    };
    let mut hundredths: i64 = 0;
    // Most significant byte first: v3 (digits 1-2) .. v0 (the hundredths).
    for b in [top, v2, v1, v0] {
        let (hi, lo) = (b >> 4, b & 0x0F);
        if hi > 9 || lo > 9 {
            return Err(AnswerError::NotBcd(value));
        }
        hundredths = hundredths * 100 + i64::from(hi * 10 + lo);
    }
    Ok(Energy {
        hundredths: if negative { -hundredths } else { hundredths },
        follow_up,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meter() -> Address {
        Address::parse("202311230001").unwrap()
    }

    #[test]
    fn nameplate_address_is_reversed_on_the_wire() {
        assert_eq!(meter().wire(), [0x01, 0x00, 0x23, 0x11, 0x23, 0x20]);
        assert_eq!(meter().to_string(), "202311230001");
        assert!(Address::parse("20231123000").is_err(), "11 digits");
        assert!(Address::parse("20231123000A").is_err(), "not decimal");
        assert!(Address::parse("2023112300011").is_err(), "13 digits");
    }

    #[test]
    fn read_request_is_byte_exact() {
        // Combined active energy, DI 00 00 00 00 → on the wire 33 33 33 33.
        // Checksum: 68+01+00+23+11+23+20+68 = 0x148 (328); + 11 + 04 = 349;
        // + 4 × 33 (204) = 553 = 2 × 256 + 41 → 0x29.
        assert_eq!(
            read_request(meter(), Quantity::Combined, 4),
            [
                0xFE, 0xFE, 0xFE, 0xFE, 0x68, 0x01, 0x00, 0x23, 0x11, 0x23, 0x20, 0x68, 0x11, 0x04, 0x33, 0x33, 0x33,
                0x33, 0x29, 0x16
            ]
        );
        // Forward active energy, DI 00 01 00 00: DI0 DI1 DI2 DI3 = 00 00 01 00
        // → 33 33 34 33; checksum one more than above: 554 mod 256 = 0x2A.
        assert_eq!(
            read_request(meter(), Quantity::Forward, 0),
            [0x68, 0x01, 0x00, 0x23, 0x11, 0x23, 0x20, 0x68, 0x11, 0x04, 0x33, 0x33, 0x34, 0x33, 0x2A, 0x16]
        );
        // Reverse, DI 00 02 00 00 → 33 33 35 33; checksum 555 mod 256 = 0x2B.
        assert_eq!(
            read_request(meter(), Quantity::Reverse, 0)[10..16],
            [0x33, 0x33, 0x35, 0x33, 0x2B, 0x16]
        );
    }

    /// A normal answer: 123456.78 kWh combined from meter 202311230001.
    /// Value bytes, least significant first: 78 56 34 12 → +33: AB 89 67 45.
    /// Checksum: header 68+01+00+23+11+23+20+68 = 328; plus 91 (145) and 08 = 481;
    /// plus the DI, 4 × 33 (204) = 685; plus AB (171), 89 (137), 67 (103), 45 (69) = 1165;
    /// 1165 = 4 × 256 + 141 → 0x8D.
    const NORMAL: [u8; 24] = [
        0xFE, 0xFE, 0xFE, 0xFE, 0x68, 0x01, 0x00, 0x23, 0x11, 0x23, 0x20, 0x68, 0x91, 0x08, 0x33, 0x33, 0x33, 0x33,
        0xAB, 0x89, 0x67, 0x45, 0x8D, 0x16,
    ];

    #[test]
    fn normal_answer_decodes_to_kwh() {
        let Scan::Frame { frame, used } = scan(&NORMAL) else {
            panic!("{:?}", scan(&NORMAL));
        };
        assert_eq!(used, NORMAL.len());
        assert_eq!(frame.address, meter());
        assert_eq!(frame.control, 0x91);
        assert_eq!(frame.data, [0, 0, 0, 0, 0x78, 0x56, 0x34, 0x12]);
        let e = energy(&frame, Quantity::Combined).unwrap();
        assert_eq!(e.hundredths, 12_345_678);
        assert_eq!(e.kwh(), 123_456.78);
        assert!(!e.follow_up);
        assert_eq!(
            energy(&frame, Quantity::Forward),
            Err(AnswerError::DataId {
                got: 0,
                want: 0x0001_0000
            })
        );
    }

    #[test]
    fn follow_up_and_sign_bit() {
        // Control B1, combined total with the sign bit set: value bytes
        // v0..v3 = 01 00 00 80, i.e. sign bit and digits 00 00 00 01 → -0.01 kWh.
        // On the wire (+33): 34 33 33 B3. Checksum: 328 + B1 (177) + 08 = 513;
        // + 204 = 717; + 34 (52) + 33 (51) + 33 (51) + B3 (179) = 1050;
        // 1050 - 4 × 256 = 26 → 0x1A.
        let bytes = [
            0x68, 0x01, 0x00, 0x23, 0x11, 0x23, 0x20, 0x68, 0xB1, 0x08, 0x33, 0x33, 0x33, 0x33, 0x34, 0x33, 0x33, 0xB3,
            0x1A, 0x16,
        ];
        let Scan::Frame { frame, .. } = scan(&bytes) else {
            panic!("{:?}", scan(&bytes));
        };
        let e = energy(&frame, Quantity::Combined).unwrap();
        assert_eq!((e.hundredths, e.follow_up), (-1, true));
        // For forward energy there is no sign bit: 0x80 is two BCD digits "80".
        let mut fwd = bytes;
        fwd[12] = 0x34; // DI2 = 01 → forward
        fwd[18] = 0x1B; // checksum one more
        let Scan::Frame { frame, .. } = scan(&fwd) else {
            panic!("{:?}", scan(&fwd));
        };
        assert_eq!(energy(&frame, Quantity::Forward).unwrap().hundredths, 80_000_001);
    }

    #[test]
    fn error_answer_names_the_bits() {
        // Error byte 02 (no data requested) → on the wire 35.
        // Checksum: 328 + D1 (209) + 01 + 35 (53) = 591; 591 - 2 × 256 = 79 → 0x4F.
        let bytes = [
            0x68, 0x01, 0x00, 0x23, 0x11, 0x23, 0x20, 0x68, 0xD1, 0x01, 0x35, 0x4F, 0x16,
        ];
        let Scan::Frame { frame, .. } = scan(&bytes) else {
            panic!("{:?}", scan(&bytes));
        };
        let err = energy(&frame, Quantity::Combined).unwrap_err();
        assert_eq!(err, AnswerError::Refused(0x02));
        assert!(err.to_string().contains("no data requested"), "{err}");
    }

    #[test]
    fn streams_with_noise_partial_and_corrupt_frames() {
        // Nothing but wake-up bytes: all can go.
        assert_eq!(scan(&[0xFE, 0xFE]), Scan::Incomplete { skip: 2 });
        // Half a frame: keep it from its 0x68.
        assert_eq!(scan(&NORMAL[..15]), Scan::Incomplete { skip: 4 });
        assert_eq!(scan(&NORMAL[..23]), Scan::Incomplete { skip: 4 });
        // A wrong checksum is corrupt, found at the first 0x68.
        let mut bad = NORMAL;
        bad[22] = 0x8E;
        assert!(matches!(
            scan(&bad),
            Scan::Corrupt {
                skip: 5,
                problem: "checksum does not match"
            }
        ));
        let mut bad = NORMAL;
        bad[23] = 0x17;
        assert!(matches!(
            scan(&bad),
            Scan::Corrupt {
                problem: "no 0x16 end byte",
                ..
            }
        ));
        // Garbage with a stray 0x68 before a good frame: skipped, then found.
        let mut noisy = vec![0x00, 0x68, 0x01];
        noisy.extend_from_slice(&NORMAL);
        let Scan::Corrupt { skip, .. } = scan(&noisy) else {
            panic!("{:?}", scan(&noisy));
        };
        assert!(
            matches!(scan(&noisy[skip..]), Scan::Frame { used: 25, .. }),
            "the stray 01 and the wake-up bytes are used up with the frame"
        );
    }

    #[test]
    fn non_bcd_and_short_answers_are_refused() {
        let frame = Frame {
            address: meter(),
            control: 0x91,
            data: vec![0, 0, 0, 0, 0x1A, 0, 0, 0],
        };
        assert_eq!(
            energy(&frame, Quantity::Combined),
            Err(AnswerError::NotBcd([0x1A, 0, 0, 0]))
        );
        let short = Frame {
            data: vec![0, 0, 0, 0],
            ..frame.clone()
        };
        assert_eq!(energy(&short, Quantity::Combined), Err(AnswerError::Length(4)));
        let write_ack = Frame { control: 0x94, ..frame };
        assert_eq!(energy(&write_ack, Quantity::Combined), Err(AnswerError::Control(0x94)));
    }

    #[test]
    fn dlt645_1997_request_and_answer_are_byte_exact() {
        // Forward active energy, DI 9010 → on the wire DI0 DI1 = 10 90 → +33: 43 C3.
        // Checksum: header 328; + 01 + 02 = 331; + 43 (67) + C3 (195) = 593 = 2 × 256 + 81 → 0x51.
        assert_eq!(
            request(Protocol::V1997, meter(), Quantity::Forward, 0).unwrap(),
            [0x68, 0x01, 0x00, 0x23, 0x11, 0x23, 0x20, 0x68, 0x01, 0x02, 0x43, 0xC3, 0x51, 0x16]
        );
        assert_eq!(
            request(Protocol::V1997, meter(), Quantity::Combined, 0),
            None,
            "no combined total in 1997"
        );
        assert_eq!(
            request(Protocol::V2007, meter(), Quantity::Forward, 4).unwrap(),
            read_request(meter(), Quantity::Forward, 4)
        );
        // Answer 0x81: 43 C3, then 1234.56 kWh = value bytes 56 34 12 00 → +33: 89 67 45 33.
        // Checksum: 328 + 81 (129) + 06 = 463; + 67 + 195 = 725; + 137 + 103 + 69 + 51 = 1085;
        // 1085 - 4 × 256 = 61 → 0x3D.
        let bytes = [
            0xFE, 0x68, 0x01, 0x00, 0x23, 0x11, 0x23, 0x20, 0x68, 0x81, 0x06, 0x43, 0xC3, 0x89, 0x67, 0x45, 0x33, 0x3D,
            0x16,
        ];
        let Scan::Frame { frame, .. } = scan(&bytes) else {
            panic!("{:?}", scan(&bytes));
        };
        assert_eq!(
            answer(Protocol::V1997, &frame, Quantity::Forward).unwrap().hundredths,
            123_456
        );
        assert_eq!(
            answer(Protocol::V1997, &frame, Quantity::Reverse),
            Err(AnswerError::DataId {
                got: 0x9010,
                want: 0x9020
            })
        );
        // Read as 2007 the same frame is refused, not misread.
        assert_eq!(
            answer(Protocol::V2007, &frame, Quantity::Forward),
            Err(AnswerError::Control(0x81))
        );
        let refused = Frame {
            address: meter(),
            control: 0xC1,
            data: vec![0x02],
        };
        let e = answer(Protocol::V1997, &refused, Quantity::Forward).unwrap_err();
        assert_eq!(e, AnswerError::Refused1997(0x02));
        assert!(e.to_string().contains("data identifier wrong"), "{e}");
    }

    #[test]
    fn largest_value_decodes_exactly() {
        let frame = Frame {
            address: meter(),
            control: 0x91,
            data: vec![0, 0, 1, 0, 0x99, 0x99, 0x99, 0x99],
        };
        assert_eq!(energy(&frame, Quantity::Forward).unwrap().hundredths, 99_999_999);
    }
}
