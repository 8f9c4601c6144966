//! Checked indices ([`kiln_ir::kernel::check`]): an in-range index costs a
//! compare and a predicted branch; the report and the clamp live in a cold
//! block.

use super::lower::{Lowerer, R};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, AtomicRmwOp, InstBuilder, MemFlagsData, Value};
use kiln_ir::kernel::check::{code_base, Checked, POS_MAX};
use kiln_ir::kernel::Mem;

impl<'f, 'k> Lowerer<'f, 'k> {
    /// `index` if it lies in `0..c.bound`; otherwise records the failure
    /// in the status words (`pos` computes its position, only then) and
    /// yields the index clamped into range.
    pub fn checked(&mut self, c: &'k Checked, index: Value, pos: &mut dyn FnMut(&mut Self) -> R<Value>) -> R<Value> {
        let Mem::Arg(s) = c.status else { return Err(self.unsupported("a status word in scratch memory")) };
        let status = self.args[s as usize];
        let (fail, raise, done) = (self.b.create_block(), self.b.create_block(), self.b.create_block());
        let out = self.b.append_block_param(done, types::I64);
        // Unsigned: a negative index is a huge one.
        let ok = self.b.ins().icmp_imm_u(IntCC::UnsignedLessThan, index, c.bound as i64);
        self.b.ins().brif(ok, done, &[index.into()], fail, &[]);
        self.b.set_cold_block(fail);
        self.b.set_cold_block(raise);
        self.b.seal_block(fail);
        self.b.switch_to_block(fail);
        let zero = self.iconst(types::I64, 0);
        let hi = self.iconst(types::I64, c.clamp_max() as i64);
        let clamped = self.b.ins().smax(index, zero);
        let clamped = self.b.ins().smin(clamped, hi);
        let p = pos(self)?;
        let max = self.iconst(types::I64, POS_MAX as i64);
        let p = self.b.ins().umin(p, max);
        let base = self.iconst(types::I64, code_base(c.site) as i64);
        let code = self.b.ins().isub(base, p);
        let old = self.b.ins().atomic_rmw(types::I64, MemFlagsData::trusted(), AtomicRmwOp::Umax, status, code);
        let won = self.b.ins().icmp(IntCC::UnsignedGreaterThan, code, old);
        self.b.ins().brif(won, raise, &[], done, &[clamped.into()]);
        self.b.seal_block(raise);
        self.b.switch_to_block(raise);
        self.b.ins().store(MemFlagsData::trusted(), index, status, 8);
        self.b.ins().jump(done, &[clamped.into()]);
        self.b.seal_block(done);
        self.b.switch_to_block(done);
        Ok(out)
    }
}
