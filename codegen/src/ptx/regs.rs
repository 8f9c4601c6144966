//! Virtual registers: one counter per PTX register class; ptxas does the
//! real allocation, so every value gets a fresh register.

use kiln_ir::DType;
use std::fmt;

/// A PTX register class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// `.pred`: bool values.
    Pred,
    /// `.b16`: bf16/f16 bits on their way to or from memory.
    B16,
    /// `.b32`: i32 values and 32-bit scratch.
    B32,
    /// `.f32`: every float computation.
    F32,
    /// `.b64`: i64 values and addresses.
    B64,
}

impl Class {
    const ALL: [Class; 5] = [Class::Pred, Class::B16, Class::B32, Class::F32, Class::B64];

    fn prefix(self) -> &'static str {
        match self {
            Class::Pred => "p",
            Class::B16 => "h",
            Class::B32 => "r",
            Class::F32 => "f",
            Class::B64 => "rd",
        }
    }

    fn decl(self) -> &'static str {
        match self {
            Class::Pred => ".pred",
            Class::B16 => ".b16",
            Class::B32 => ".b32",
            Class::F32 => ".f32",
            Class::B64 => ".b64",
        }
    }

    /// The class holding a compute dtype's values.
    pub fn of(d: DType) -> Class {
        match d {
            DType::Bool => Class::Pred,
            DType::I32 => Class::B32,
            DType::I64 => Class::B64,
            DType::F32 | DType::F16 | DType::BF16 => Class::F32,
        }
    }
}

/// One virtual register, printed as `%f12`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Reg {
    /// Its class.
    pub class: Class,
    n: u32,
}

impl fmt::Display for Reg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}{}", self.class.prefix(), self.n)
    }
}

/// Hands out fresh registers and prints their declarations.
#[derive(Default)]
pub(crate) struct Regs {
    counts: [u32; 5],
}

impl Regs {
    /// A fresh register of a class.
    pub fn new_reg(&mut self, class: Class) -> Reg {
        let i = Class::ALL.iter().position(|c| *c == class).expect("every class is listed");
        let n = self.counts[i];
        self.counts[i] += 1;
        Reg { class, n }
    }

    /// `.reg .f32 %f<12>;` lines for every class in use.
    pub fn declarations(&self) -> String {
        Class::ALL
            .iter()
            .zip(self.counts)
            .filter(|(_, n)| *n > 0)
            .map(|(c, n)| format!("    .reg {} %{}<{}>;\n", c.decl(), c.prefix(), n))
            .collect()
    }
}
