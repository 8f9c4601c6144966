//! A kernel's 128-bit vector constants, kept in a read-only data object and
//! loaded where they are used.
//!
//! Cranelift hoists a `vconst` out of the loop that uses it; a vectorized
//! transcendental has dozens of them, more than the 16 vector registers,
//! so they were spilled to the stack, reloaded, and stored again at every
//! back edge. A load from this table is pure, so it is placed just before
//! its first use (where a load with one use folds into its instruction as
//! a memory operand), but it is not hoisted: the table's address is a
//! loop-carried value of every loop ([`ConstPool::carry`]), which the
//! optimizer cannot prove invariant. The loop body gets shorter, and
//! more iterations of a long dependency chain fit in flight at once.

use cranelift_codegen::ir::{types, GlobalValue, InstBuilder, MemFlagsData, Type, Value};
use cranelift_frontend::{FunctionBuilder, Variable};
use cranelift_jit::JITModule;
use cranelift_module::{DataDescription, DataId, Linkage, Module, ModuleError};
use std::collections::HashMap;

/// The constants of one kernel function, deduplicated by their bits.
pub(crate) struct ConstPool {
    data: DataId,
    base: GlobalValue,
    /// The table's address, once [`ConstPool::start`] defined it.
    var: Option<Variable>,
    bytes: Vec<u8>,
    offsets: HashMap<u128, i32>,
}

impl ConstPool {
    /// An empty pool for kernel number `index`, whose data object `func`
    /// can address.
    pub fn new(module: &mut JITModule, func: &mut cranelift_codegen::ir::Function, index: usize) -> Result<Self, ModuleError> {
        let data = module.declare_data(&format!("kiln_consts{index}"), Linkage::Local, false, false)?;
        let base = module.declare_data_in_func(data, func);
        Ok(ConstPool { data, base, var: None, bytes: Vec::new(), offsets: HashMap::new() })
    }

    /// Defines the table's address (in the function's entry block).
    pub fn start(&mut self, b: &mut FunctionBuilder) {
        let var = b.declare_var(types::I64);
        let base = b.ins().symbol_value(types::I64, self.base);
        b.def_var(var, base);
        self.var = Some(var);
    }

    /// Redefines the address at the end of a loop body, so that the
    /// address (and the loads from it) are values of the loop.
    pub fn carry(&mut self, b: &mut FunctionBuilder) {
        if let Some(var) = self.var {
            let base = b.use_var(var);
            let again = b.ins().iadd_imm_s(base, 0);
            b.def_var(var, again);
        }
    }

    /// The 128-bit constant `bits` as a value of vector type `ty` (`None`
    /// before [`ConstPool::start`]).
    pub fn load(&mut self, b: &mut FunctionBuilder, ty: Type, bits: u128) -> Option<Value> {
        let var = self.var?;
        let next = self.bytes.len() as i32;
        let offset = *self.offsets.entry(bits).or_insert_with(|| {
            self.bytes.extend_from_slice(&bits.to_le_bytes());
            next
        });
        let base = b.use_var(var);
        let flags = MemFlagsData::trusted().with_readonly().with_can_move();
        Some(b.ins().load(ty, flags, base, offset))
    }

    /// Defines the data object with the constants collected (after the
    /// function is built).
    pub fn define(self, module: &mut JITModule) -> Result<(), ModuleError> {
        let mut desc = DataDescription::new();
        let mut bytes = self.bytes;
        // A data object may not be empty.
        bytes.resize(bytes.len().max(16), 0);
        desc.define(bytes.into_boxed_slice());
        desc.set_align(16);
        module.define_data(self.data, &desc)
    }
}

/// The 128 bits of four copies of the 32-bit pattern `x`.
pub(crate) fn splat32(x: u32) -> u128 {
    let x = x as u128;
    x | x << 32 | x << 64 | x << 96
}
