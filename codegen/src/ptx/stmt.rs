//! Statements. Code outside `vector` loops is *uniform*: every thread of
//! the CTA runs it redundantly (same values, same trip counts), and only
//! thread 0 stores. A `vector` loop in uniform code is spread over the
//! threads (thread t runs iterations t, t + 128, ...); inside it each
//! thread runs its iterations alone, storing unguarded.
//!
//! An `if` branches around its body: uniformly in uniform code (the
//! condition is computed from uniform values), per thread in spread code.
//!
//! Ordering: a uniform statement that writes memory (a store anywhere in
//! it, or a GEMM) has a `bar.sync` before it (earlier reads by other
//! threads are done: no write-after-read race) and after it (its writes
//! are visible to every thread that reads them next).

use super::emit::Emitter;
use super::regs::Class;
use super::PtxError;
use kiln_ir::kernel::{Stmt, Var};
use kiln_ir::DType;

/// Whether a statement writes memory.
fn writes(s: &Stmt) -> bool {
    match s {
        Stmt::Loop { body, .. } | Stmt::If { body, .. } => body.iter().any(writes),
        Stmt::Store { .. } | Stmt::Gemm(_) => true,
        Stmt::Let { .. } | Stmt::Reduce { .. } => false,
    }
}

impl Emitter<'_> {
    /// Statements; `spread` when inside a loop spread over the threads.
    pub fn block(&mut self, body: &[Stmt], spread: bool) -> Result<(), PtxError> {
        for s in body {
            let sync = !spread && writes(s);
            if sync {
                self.bar();
            }
            self.stmt(s, spread)?;
            if sync {
                self.bar();
            }
        }
        Ok(())
    }

    /// A loop variable's register, bound for the body.
    pub fn index_var(&mut self, v: Var) -> super::regs::Reg {
        let r = self.reg(Class::B64);
        self.define(v, DType::I64, r);
        r
    }

    fn stmt(&mut self, s: &Stmt, spread: bool) -> Result<(), PtxError> {
        match s {
            Stmt::Loop { var, extent, vector, body } => {
                let share = *vector && !spread;
                if share && self.vector_loop(*var, *extent, body)? {
                    return Ok(());
                }
                let v = self.index_var(*var);
                self.counted(v, share, *extent, |e| e.block(body, spread || share))
            }
            Stmt::Let { var, value } => {
                let d = self.dtype(value)?;
                let r = self.expr(value)?;
                self.define(*var, d, r);
                Ok(())
            }
            Stmt::Reduce { var, op, index, extent, vector, value } => self.reduce(*var, *op, *index, *extent, *vector && !spread, value),
            Stmt::Store { mem, index, value } => {
                let vd = self.dtype(value)?;
                let i = self.expr(index)?;
                let v = self.expr(value)?;
                let guard = if spread { None } else { Some(self.first) };
                self.store(*mem, i, v, vd, guard);
                Ok(())
            }
            Stmt::Gemm(g) => self.gemm(g, !spread),
            Stmt::If { cond, body } => {
                // In uniform code the condition is the same in every thread,
                // so the barriers inside the body are reached by all or none.
                let p = self.expr(cond)?;
                let skip = self.label();
                self.ins(format!("@!{p} bra {skip};"));
                self.block(body, spread)?;
                self.place(&skip);
                Ok(())
            }
        }
    }
}
