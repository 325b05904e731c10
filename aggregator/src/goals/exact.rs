//! An exact sum of `f64` values that can also take values out again.
//!
//! Goal tallies are kept up to date by subtracting an enterprise's old
//! contribution and adding its new one. With plain `f64` arithmetic every such
//! step rounds, so after a day of readings the maintained sum would drift from
//! a fresh sum over the same values, and the two could not be compared. Here
//! every finite `f64` is held as a fixed-point integer in units of 2⁻¹⁰⁷⁴ (the
//! smallest subnormal) spread over 32-bit chunks, so adding and removing are
//! exact and [`ExactSum::value`] is the correctly rounded sum, whatever the
//! order the values came in. The full scan uses the same type, which is what
//! makes "incremental == recompute" hold bit for bit.

/// Bits of the fixed-point number each chunk holds once normalised.
const CHUNK_BITS: u32 = 32;
const CHUNK_MASK: i64 = (1 << CHUNK_BITS) - 1;
/// 2098 bits span every finite `f64` in units of 2⁻¹⁰⁷⁴; the rest is headroom for carries.
const CHUNKS: usize = 67;
/// Additions before the chunks are normalised: each adds less than 2³² to a chunk,
/// so 2³⁰ of them keep every chunk far inside `i64`.
const NORMALISE_AFTER: u32 = 1 << 30;

/// The exact sum of the values added minus those subtracted.
///
/// Serialised as its normalised chunks that are not zero (see [`WireSum`]),
/// so a zone's tallies reach a center exactly and merge there bit for bit as
/// they would in one process.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "WireSum", into = "WireSum")]
pub struct ExactSum {
    chunks: [i64; CHUNKS],
    pending: u32,
    /// +∞, −∞ and NaN added (minus subtracted): kept apart so they can be taken out again.
    pos_inf: i64,
    neg_inf: i64,
    nan: i64,
}

impl Default for ExactSum {
    fn default() -> Self {
        Self {
            chunks: [0; CHUNKS],
            pending: 0,
            pos_inf: 0,
            neg_inf: 0,
            nan: 0,
        }
    }
}

impl std::fmt::Debug for ExactSum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ExactSum({:e})", self.value())
    }
}

impl PartialEq for ExactSum {
    fn eq(&self, other: &Self) -> bool {
        (self.pos_inf, self.neg_inf, self.nan) == (other.pos_inf, other.neg_inf, other.nan)
            && normalised(&self.chunks) == normalised(&other.chunks)
    }
}

/// Carries propagated so every chunk but the top one is in `0..2³²`; the top one carries the sign.
fn normalised(c: &[i64; CHUNKS]) -> [i64; CHUNKS] {
    let mut c = *c;
    normalise(&mut c);
    c
}

fn normalise(c: &mut [i64; CHUNKS]) {
    for i in 0..CHUNKS - 1 {
        let carry = c[i] >> CHUNK_BITS;
        c[i] &= CHUNK_MASK;
        c[i + 1] += carry;
    }
}

impl ExactSum {
    /// Adds `x`.
    pub fn add(&mut self, x: f64) {
        self.put(x, false);
    }

    /// Takes `x` out again.
    pub fn sub(&mut self, x: f64) {
        self.put(x, true);
    }

    /// Adds everything `other` holds.
    pub fn merge(&mut self, other: &ExactSum) {
        normalise(&mut self.chunks);
        let o = normalised(&other.chunks);
        for (a, b) in self.chunks.iter_mut().zip(o) {
            *a += b;
        }
        self.pending = 1;
        self.pos_inf += other.pos_inf;
        self.neg_inf += other.neg_inf;
        self.nan += other.nan;
    }

    fn put(&mut self, x: f64, negate: bool) {
        if !x.is_finite() {
            let d = if negate { -1 } else { 1 };
            if x.is_nan() {
                self.nan += d;
            } else if x > 0.0 {
                self.pos_inf += d;
            } else {
                self.neg_inf += d;
            }
            return;
        }
        let bits = x.to_bits();
        let negative = (bits >> 63 == 1) != negate;
        let biased = ((bits >> 52) & 0x7ff) as u32;
        let frac = bits & ((1 << 52) - 1);
        // value = m × 2^(shift − 1074)
        let (m, shift) = if biased == 0 {
            (frac, 0)
        } else {
            (frac | (1 << 52), biased - 1)
        };
        if m == 0 {
            return;
        }
        if self.pending >= NORMALISE_AFTER {
            normalise(&mut self.chunks);
            self.pending = 0;
        }
        self.pending += 1;
        let at = (shift / CHUNK_BITS) as usize;
        let wide = u128::from(m) << (shift % CHUNK_BITS);
        for k in 0..3 {
            let piece = ((wide >> (CHUNK_BITS as usize * k)) as i64) & CHUNK_MASK;
            if negative {
                self.chunks[at + k] -= piece;
            } else {
                self.chunks[at + k] += piece;
            }
        }
    }

    /// The sum, correctly rounded (to nearest, ties to even); 0.0 when nothing is held.
    pub fn value(&self) -> f64 {
        if self.nan != 0 || (self.pos_inf != 0 && self.neg_inf != 0) {
            return f64::NAN;
        }
        if self.pos_inf != 0 {
            return f64::INFINITY;
        }
        if self.neg_inf != 0 {
            return f64::NEG_INFINITY;
        }
        let mut c = normalised(&self.chunks);
        let negative = c[CHUNKS - 1] < 0;
        if negative {
            for x in c.iter_mut() {
                *x = -*x;
            }
            normalise(&mut c);
        }
        let sign = if negative { 1u64 << 63 } else { 0 };
        let Some(top) = (0..CHUNKS).rev().find(|&i| c[i] != 0) else {
            return 0.0;
        };
        // Position of the highest set bit, in units of 2⁻¹⁰⁷⁴.
        let p = top * CHUNK_BITS as usize + (63 - c[top].leading_zeros() as usize);
        if p >= 1074 + 1024 {
            return f64::from_bits(sign | f64::INFINITY.to_bits());
        }
        if p < 53 {
            // m × 2⁻¹⁰⁷⁴ with m < 2⁵³: its bit pattern is m itself (subnormal, or the lowest binade).
            return f64::from_bits(sign | bits(&c, 0, p + 1));
        }
        // The 64 bits from p down, and whether anything below them is set.
        let (window, sticky) = if p >= 63 {
            let lo = p - 63;
            (bits(&c, lo, 64), any_below(&c, lo))
        } else {
            (bits(&c, 0, p + 1) << (63 - p), false)
        };
        let mut mant = window >> 11;
        let rest = window & 0x7ff;
        let mut p = p;
        if rest > 0x400 || (rest == 0x400 && (sticky || mant & 1 == 1)) {
            mant += 1;
            if mant == 1 << 53 {
                mant >>= 1;
                p += 1;
            }
        }
        let biased = (p - 51) as u64;
        if biased >= 2047 {
            return f64::from_bits(sign | f64::INFINITY.to_bits());
        }
        f64::from_bits(sign | (biased << 52) | (mant & ((1 << 52) - 1)))
    }
}

/// Largest magnitude a wire sum's top chunk or its infinity and NaN counts
/// may have: far beyond any real tally, small enough that merging millions
/// of them cannot overflow an `i64`.
const WIRE_LIMIT: i64 = 1 << 32;

/// An [`ExactSum`] on the wire: `(index, value)` of each normalised chunk that
/// is not zero, and the infinity and NaN counts.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireSum {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    c: Vec<(u8, i64)>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pi: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    ni: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    nan: i64,
}

fn is_zero(x: &i64) -> bool {
    *x == 0
}

/// Why a wire sum was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireSumError {
    #[error("chunk index {0} is beyond the {CHUNKS} chunks of an exact sum")]
    Index(u8),
    #[error("chunk {0} is given twice")]
    Twice(u8),
    #[error("chunk {index} holds {value}, outside what a normalised sum can hold")]
    Chunk { index: u8, value: i64 },
    #[error("infinity or NaN count {0} is out of range")]
    Count(i64),
}

impl From<ExactSum> for WireSum {
    fn from(s: ExactSum) -> Self {
        let c = normalised(&s.chunks);
        WireSum {
            c: (0..CHUNKS).filter(|&i| c[i] != 0).map(|i| (i as u8, c[i])).collect(),
            pi: s.pos_inf,
            ni: s.neg_inf,
            nan: s.nan,
        }
    }
}

impl TryFrom<WireSum> for ExactSum {
    type Error = WireSumError;
    fn try_from(w: WireSum) -> Result<Self, WireSumError> {
        let mut s = ExactSum::default();
        let mut seen = [false; CHUNKS];
        for (index, value) in w.c {
            let i = usize::from(index);
            if i >= CHUNKS {
                return Err(WireSumError::Index(index));
            }
            if std::mem::replace(&mut seen[i], true) {
                return Err(WireSumError::Twice(index));
            }
            let fits = if i == CHUNKS - 1 {
                (-WIRE_LIMIT..=WIRE_LIMIT).contains(&value)
            } else {
                (0..=CHUNK_MASK).contains(&value)
            };
            if !fits {
                return Err(WireSumError::Chunk { index, value });
            }
            s.chunks[i] = value;
        }
        for n in [w.pi, w.ni, w.nan] {
            if !(-WIRE_LIMIT..=WIRE_LIMIT).contains(&n) {
                return Err(WireSumError::Count(n));
            }
        }
        (s.pos_inf, s.neg_inf, s.nan) = (w.pi, w.ni, w.nan);
        s.pending = 1;
        Ok(s)
    }
}

/// `n` (≤ 64) bits of the normalised magnitude starting at bit `lo`.
fn bits(c: &[i64; CHUNKS], lo: usize, n: usize) -> u64 {
    let mut out = 0u64;
    for k in 0..n {
        let b = lo + k;
        let chunk = c[b / CHUNK_BITS as usize] as u64;
        if (chunk >> (b % CHUNK_BITS as usize)) & 1 == 1 {
            out |= 1 << k;
        }
    }
    out
}

fn any_below(c: &[i64; CHUNKS], lo: usize) -> bool {
    let whole = lo / CHUNK_BITS as usize;
    c[..whole].iter().any(|&x| x != 0) || (c[whole] as u64) & ((1u64 << (lo % CHUNK_BITS as usize)) - 1) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(xs: &[f64]) -> f64 {
        let mut s = ExactSum::default();
        for x in xs {
            s.add(*x);
        }
        s.value()
    }

    #[test]
    fn small_exact_sums_come_out_exact() {
        assert_eq!(sum(&[]), 0.0);
        assert_eq!(sum(&[100.0, 300.0]), 400.0);
        assert_eq!(
            sum(&[0.1, 0.2]),
            0.30000000000000004,
            "the correctly rounded sum of the two doubles"
        );
        assert_eq!(sum(&[1e16, 1.0, -1e16]), 1.0, "naive summation loses the 1");
        assert_eq!(sum(&[-2.5, 1.0]), -1.5);
        assert_eq!(
            sum(&[f64::MIN_POSITIVE / 4.0, f64::MIN_POSITIVE / 4.0]),
            f64::MIN_POSITIVE / 2.0
        );
        assert_eq!(sum(&[f64::MAX, f64::MAX]), f64::INFINITY);
        assert_eq!(sum(&[f64::MAX, f64::MAX, -f64::MAX]), f64::MAX);
        assert_eq!(sum(&[5e-324]), 5e-324);
    }

    #[test]
    fn rounding_is_to_nearest_with_ties_to_even() {
        let ulp_half = 2f64.powi(-53);
        assert_eq!(sum(&[1.0, ulp_half]), 1.0, "tie, 1.0 is even");
        assert_eq!(
            sum(&[1.0 + 2.0 * ulp_half, ulp_half]),
            1.0 + 4.0 * ulp_half,
            "tie, rounds up to even"
        );
        assert_eq!(
            sum(&[1.0, ulp_half, 1e-300]),
            1.0 + 2.0 * ulp_half,
            "just above the tie"
        );
    }

    /// A deterministic stream of awkward doubles.
    fn doubles(seed: u64, n: usize) -> Vec<f64> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let mantissa = (s >> 11) as f64 / (1u64 << 53) as f64;
                let exp = ((s >> 3) % 40) as i32 - 20;
                let sign = if s & 1 == 1 { -1.0 } else { 1.0 };
                sign * mantissa * 2f64.powi(exp)
            })
            .collect()
    }

    #[test]
    fn order_and_removal_do_not_change_the_sum() {
        let xs = doubles(7, 2000);
        let forward = sum(&xs);
        let mut rev = xs.clone();
        rev.reverse();
        assert_eq!(forward.to_bits(), sum(&rev).to_bits());
        // Add everything, take out every other value: same as adding only the rest.
        let mut s = ExactSum::default();
        for x in &xs {
            s.add(*x);
        }
        let kept: Vec<f64> = xs.iter().copied().step_by(2).collect();
        for x in xs.iter().skip(1).step_by(2) {
            s.sub(*x);
        }
        assert_eq!(s.value().to_bits(), sum(&kept).to_bits());
        assert_eq!(s, {
            let mut t = ExactSum::default();
            for x in &kept {
                t.add(*x);
            }
            t
        });
        // Close to a compensated sum (which is not exact but within a few ulps).
        let naive: f64 = kept.iter().sum();
        assert!((s.value() - naive).abs() <= 1e-9 * kept.iter().map(|x| x.abs()).sum::<f64>());
    }

    #[test]
    fn a_sum_survives_the_wire_bit_for_bit_and_bad_wire_sums_are_refused() {
        let xs = doubles(13, 500);
        let mut s = ExactSum::default();
        for x in &xs {
            s.add(*x);
        }
        s.sub(xs[3]);
        s.add(f64::INFINITY);
        let text = serde_json::to_string(&s).unwrap();
        let back: ExactSum = serde_json::from_str(&text).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.value().to_bits(), s.value().to_bits());
        let mut neg = ExactSum::default();
        neg.add(-1234.5);
        let back: ExactSum = serde_json::from_str(&serde_json::to_string(&neg).unwrap()).unwrap();
        assert_eq!(back.value(), -1234.5);
        assert_eq!(serde_json::to_string(&ExactSum::default()).unwrap(), "{}");
        for bad in [
            r#"{"c":[[67,1]]}"#,
            r#"{"c":[[1,1],[1,2]]}"#,
            r#"{"c":[[0,-1]]}"#,
            r#"{"c":[[0,4294967296]]}"#,
            r#"{"c":[[66,9223372036854775807]]}"#,
            r#"{"nan":9223372036854775807}"#,
            r#"{"x":1}"#,
        ] {
            assert!(serde_json::from_str::<ExactSum>(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn merged_sums_equal_one_sum_and_infinities_come_back_out() {
        let xs = doubles(11, 300);
        let (mut a, mut b) = (ExactSum::default(), ExactSum::default());
        for (i, x) in xs.iter().enumerate() {
            if i % 3 == 0 {
                a.add(*x)
            } else {
                b.add(*x)
            }
        }
        a.merge(&b);
        assert_eq!(a.value().to_bits(), sum(&xs).to_bits());
        a.add(f64::INFINITY);
        assert_eq!(a.value(), f64::INFINITY);
        a.sub(f64::INFINITY);
        assert_eq!(a.value().to_bits(), sum(&xs).to_bits());
    }
}
