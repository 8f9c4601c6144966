//! Loads and stores: kernel arguments live in global memory, scratch
//! arrays in `.shared`; bf16/f16 travel as 16-bit patterns, bool as a byte.

use super::emit::Emitter;
use super::regs::{Class, Reg};
use kiln_ir::kernel::Mem;
use kiln_ir::DType;

impl Emitter<'_> {
    /// The storage dtype of a memory.
    pub fn storage(&self, m: Mem) -> DType {
        match m {
            Mem::Arg(i) => self.k.args[i as usize].dtype,
            Mem::Scratch(i) => self.k.scratch[i as usize].dtype,
        }
    }

    /// The state space and byte address of element `index` (an i64 register).
    pub fn address(&mut self, m: Mem, index: Reg) -> (&'static str, Reg) {
        let size = self.storage(m).size_bytes();
        let a = self.reg(Class::B64);
        match m {
            Mem::Arg(i) => {
                let base = self.bases[i as usize];
                self.ins(format!("mad.lo.s64 {a}, {index}, {size}, {base};"));
                ("global", a)
            }
            Mem::Scratch(i) => {
                let base = self.reg(Class::B64);
                self.ins(format!("mov.u64 {base}, sc{i};"));
                self.ins(format!("mad.lo.s64 {a}, {index}, {size}, {base};"));
                ("shared", a)
            }
        }
    }

    /// `m[index]` in its compute dtype.
    pub fn load(&mut self, m: Mem, index: Reg) -> Reg {
        let d = self.storage(m);
        let (space, a) = self.address(m, index);
        match d {
            DType::F32 | DType::I32 | DType::I64 => {
                let r = self.reg(Class::of(d));
                self.ins(format!("ld.{space}.{} {r}, [{a}];", super::expr::arith(d)));
                r
            }
            DType::BF16 | DType::F16 => {
                let h = self.load_bits(space, a);
                self.widen_half(h, d)
            }
            DType::Bool => {
                let (w, p) = (self.reg(Class::B32), self.reg(Class::Pred));
                self.ins(format!("ld.{space}.u8 {w}, [{a}];"));
                self.ins(format!("setp.ne.u32 {p}, {w}, 0;"));
                p
            }
        }
    }

    /// The 16 bits of a bf16/f16 element.
    fn load_bits(&mut self, space: &str, a: Reg) -> Reg {
        let h = self.reg(Class::B16);
        self.ins(format!("ld.{space}.b16 {h}, [{a}];"));
        h
    }

    /// Two bf16/f16 elements `m[i]`, `m[j]` packed in a 32-bit register
    /// (`m[i]` in the low half), as tensor-core fragments hold them.
    pub fn load_pair(&mut self, m: Mem, i: Reg, j: Reg) -> Reg {
        let (s1, a1) = self.address(m, i);
        let lo = self.load_bits(s1, a1);
        let (s2, a2) = self.address(m, j);
        let hi = self.load_bits(s2, a2);
        let r = self.reg(Class::B32);
        self.ins(format!("mov.b32 {r}, {{{lo}, {hi}}};"));
        r
    }

    /// `m[index] = value` (of compute dtype `vd`), converted to the
    /// memory's dtype; only where `guard` holds when one is given.
    pub fn store(&mut self, m: Mem, index: Reg, value: Reg, vd: DType, guard: Option<Reg>) {
        let d = self.storage(m);
        let v = self.cast(value, vd, kiln_ir::kernel::verify::compute_dtype(d));
        let (space, a) = self.address(m, index);
        let g = guard.map(|p| format!("@{p} ")).unwrap_or_default();
        match d {
            DType::F32 | DType::I32 | DType::I64 => self.ins(format!("{g}st.{space}.{} [{a}], {v};", super::expr::arith(d))),
            DType::BF16 | DType::F16 => {
                let h = self.half_bits(v, d);
                self.ins(format!("{g}st.{space}.b16 [{a}], {h};"));
            }
            DType::Bool => {
                let w = self.bool_to_u32(v);
                self.ins(format!("{g}st.{space}.u8 [{a}], {w};"));
            }
        }
    }
}
