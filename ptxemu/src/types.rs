//! PTX scalar types (`.u32`, `.f16x2`, `.pred`, ...): their widths and kinds.

/// A PTX fundamental type as written after a dot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)] // the variants are the PTX type names
pub enum Type {
    Pred,
    B8,
    B16,
    B32,
    B64,
    U8,
    U16,
    U32,
    U64,
    S8,
    S16,
    S32,
    S64,
    F16,
    F16x2,
    Bf16,
    Bf16x2,
    F32,
    F64,
}

/// How an operation interprets the bits of a type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Untyped bits (`.bN`) and unsigned integers.
    Unsigned,
    /// Two's complement integers.
    Signed,
    /// IEEE floats, including packed half pairs.
    Float,
    /// A predicate.
    Pred,
}

impl Type {
    /// Parses a type name without its dot.
    pub fn from_name(s: &str) -> Option<Type> {
        Some(match s {
            "pred" => Type::Pred,
            "b8" => Type::B8,
            "b16" => Type::B16,
            "b32" => Type::B32,
            "b64" => Type::B64,
            "u8" => Type::U8,
            "u16" => Type::U16,
            "u32" => Type::U32,
            "u64" => Type::U64,
            "s8" => Type::S8,
            "s16" => Type::S16,
            "s32" => Type::S32,
            "s64" => Type::S64,
            "f16" => Type::F16,
            "f16x2" => Type::F16x2,
            "bf16" => Type::Bf16,
            "bf16x2" => Type::Bf16x2,
            "f32" => Type::F32,
            "f64" => Type::F64,
            _ => return None,
        })
    }

    /// Width in bits (a predicate counts as 1).
    pub fn bits(self) -> u32 {
        match self {
            Type::Pred => 1,
            Type::B8 | Type::U8 | Type::S8 => 8,
            Type::B16 | Type::U16 | Type::S16 | Type::F16 | Type::Bf16 => 16,
            Type::B32 | Type::U32 | Type::S32 | Type::F32 | Type::F16x2 | Type::Bf16x2 => 32,
            Type::B64 | Type::U64 | Type::S64 | Type::F64 => 64,
        }
    }

    /// Width in bytes in memory.
    pub fn bytes(self) -> u64 {
        u64::from(self.bits().div_ceil(8))
    }

    /// How operations read this type.
    pub fn kind(self) -> Kind {
        match self {
            Type::Pred => Kind::Pred,
            Type::S8 | Type::S16 | Type::S32 | Type::S64 => Kind::Signed,
            Type::F16 | Type::F16x2 | Type::Bf16 | Type::Bf16x2 | Type::F32 | Type::F64 => {
                Kind::Float
            }
            _ => Kind::Unsigned,
        }
    }
}

/// Keeps the low `bits` bits of `v`.
pub fn truncate(v: u64, bits: u32) -> u64 {
    if bits >= 64 {
        v
    } else {
        v & ((1u64 << bits) - 1)
    }
}

/// Sign-extends the low `bits` bits of `v` to 64 bits.
pub fn sign_extend(v: u64, bits: u32) -> i64 {
    if bits >= 64 {
        v as i64
    } else {
        let shift = 64 - bits;
        ((v << shift) as i64) >> shift
    }
}

/// Extends the low bits of `v` to 64 bits according to the type's signedness.
pub fn extend(v: u64, ty: Type) -> u64 {
    match ty.kind() {
        Kind::Signed => sign_extend(v, ty.bits()) as u64,
        _ => truncate(v, ty.bits()),
    }
}
