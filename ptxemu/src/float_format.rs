//! IEEE binary formats (f16, bf16, f32, f64) with exact decoding and rounding in every PTX mode.
//!
//! Values are carried as `f64` (which holds every f16, bf16 and f32 exactly) or as an integer
//! significand with a binary exponent, and rounded once into the target format.

use crate::types::Type;

/// An IEEE binary interchange format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Format {
    exp_bits: u32,
    man_bits: u32,
}

pub(crate) const F16: Format = Format {
    exp_bits: 5,
    man_bits: 10,
};
pub(crate) const BF16: Format = Format {
    exp_bits: 8,
    man_bits: 7,
};
pub(crate) const F32: Format = Format {
    exp_bits: 8,
    man_bits: 23,
};
pub(crate) const F64: Format = Format {
    exp_bits: 11,
    man_bits: 52,
};

/// IEEE rounding directions (`.rn`, `.rz`, `.rm`, `.rp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Round {
    NearestEven,
    Zero,
    Down,
    Up,
}

impl Format {
    /// The format of a float type, and how many lanes a register of it packs.
    pub(crate) fn of(ty: Type) -> Option<(Format, u32)> {
        Some(match ty {
            Type::F16 => (F16, 1),
            Type::F16x2 => (F16, 2),
            Type::Bf16 => (BF16, 1),
            Type::Bf16x2 => (BF16, 2),
            Type::F32 => (F32, 1),
            Type::F64 => (F64, 1),
            _ => return None,
        })
    }

    /// Width of one value in bits.
    pub(crate) fn bits(self) -> u32 {
        1 + self.exp_bits + self.man_bits
    }

    fn bias(self) -> i64 {
        (1 << (self.exp_bits - 1)) - 1
    }

    fn inf_bits(self) -> u64 {
        ((1u64 << self.exp_bits) - 1) << self.man_bits
    }

    fn sign_bit(self) -> u64 {
        1u64 << (self.exp_bits + self.man_bits)
    }

    /// The canonical NaN NVIDIA GPUs produce (all mantissa bits set, sign clear).
    pub(crate) fn nan(self) -> u64 {
        self.inf_bits() | ((1u64 << self.man_bits) - 1)
    }

    /// The exact value of `bits`.
    pub(crate) fn decode(self, bits: u64) -> f64 {
        if self == F64 {
            return f64::from_bits(bits);
        }
        if self == F32 {
            return f64::from(f32::from_bits(bits as u32));
        }
        let sign = if bits & self.sign_bit() != 0 {
            -1.0
        } else {
            1.0
        };
        let exp = ((bits >> self.man_bits) & ((1 << self.exp_bits) - 1)) as i64;
        let man = bits & ((1u64 << self.man_bits) - 1);
        let max_exp = (1 << self.exp_bits) - 1;
        let magnitude = if exp == max_exp {
            if man == 0 {
                f64::INFINITY
            } else {
                f64::NAN
            }
        } else if exp == 0 {
            man as f64 * pow2(1 - self.bias() - i64::from(self.man_bits))
        } else {
            (man | (1 << self.man_bits)) as f64 * pow2(exp - self.bias() - i64::from(self.man_bits))
        };
        sign * magnitude
    }

    /// Rounds `x` into this format.
    pub(crate) fn encode(self, x: f64, mode: Round) -> u64 {
        if self == F32 && mode == Round::NearestEven && !x.is_nan() {
            return u64::from((x as f32).to_bits()); // `as` rounds to nearest even: the hot path
        }
        let neg = x.is_sign_negative();
        let sign = if neg { self.sign_bit() } else { 0 };
        if x.is_nan() {
            return self.nan();
        }
        if x.is_infinite() {
            return sign | self.inf_bits();
        }
        if x == 0.0 {
            return sign;
        }
        let bits = x.to_bits();
        let exp_field = ((bits >> 52) & 0x7ff) as i64;
        let frac = bits & ((1u64 << 52) - 1);
        let (man, exp) = if exp_field == 0 {
            (frac, -1074)
        } else {
            (frac | (1 << 52), exp_field - 1075)
        };
        self.round(neg, u128::from(man), exp, mode)
    }

    /// Rounds the integer `±magnitude` into this format.
    pub(crate) fn encode_int(self, neg: bool, magnitude: u64, mode: Round) -> u64 {
        if magnitude == 0 {
            return 0;
        }
        self.round(neg, u128::from(magnitude), 0, mode)
    }

    /// Rounds `±man * 2^exp` (man > 0).
    fn round(self, neg: bool, man: u128, exp: i64, mode: Round) -> u64 {
        let sign = if neg { self.sign_bit() } else { 0 };
        let top = 127 - i64::from(man.leading_zeros());
        let e = exp + top; // floor(log2(|value|))
        let emin = 1 - self.bias();
        let quantum = e.max(emin) - i64::from(self.man_bits);
        let shift = quantum - exp;
        let (mut q, round_up) = if shift <= 0 {
            (man << (-shift), false)
        } else {
            let (q, rem, half) = if shift >= 128 {
                (0, 1, u128::MAX) // nonzero and below half
            } else {
                (
                    man >> shift,
                    man & ((1u128 << shift) - 1),
                    1u128 << (shift - 1),
                )
            };
            let inexact = rem != 0;
            let up = match mode {
                Round::NearestEven => rem > half || (rem == half && q & 1 == 1),
                Round::Zero => false,
                Round::Down => neg && inexact,
                Round::Up => !neg && inexact,
            };
            (q, up)
        };
        q += u128::from(round_up);
        let biased = e.max(emin) + self.bias() - 1;
        let overflow = biased >= (1 << self.exp_bits) - 1;
        let bits = if overflow {
            u128::MAX
        } else {
            ((biased as u128) << self.man_bits) + q
        };
        if bits >= u128::from(self.inf_bits()) {
            let to_inf = match mode {
                Round::NearestEven => true,
                Round::Zero => false,
                Round::Down => neg,
                Round::Up => !neg,
            };
            return sign
                | if to_inf {
                    self.inf_bits()
                } else {
                    self.inf_bits() - 1
                };
        }
        sign | bits as u64
    }
}

/// 2^e as an f64 (exact for the exponents the formats above produce).
fn pow2(e: i64) -> f64 {
    2f64.powi(e as i32)
}
