//! Kernels to Cranelift IR, one function per kernel:
//! `fn(args: *const *mut u8, begin: u64, end: u64)` loops over tiles
//! `begin..end` and runs the body with [`Expr::Tile`] bound to the tile.
//!
//! Values: f32 (and f16/bf16, which load as f32) are `F32`, i32 `I32`,
//! i64 `I64`, bool an `I8` holding 0 or 1. Kernel variables are Cranelift
//! [`Variable`]s, so a `let` inside a loop needs no extra care.

use super::consts::ConstPool;
use super::jit::{Features, POWF, POWI};
use super::math::Fx;
use super::vector::VEnv;
use super::{gemm, native, CodegenError, Options, MAX_SCRATCH_BYTES};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{
    types, AbiParam, FuncRef, InstBuilder, MemFlagsData, StackSlotData, StackSlotKind, Type, UserFuncName, Value,
};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use cranelift_jit::JITModule;
use cranelift_module::{FuncId, Linkage, Module};
use kiln_ir::kernel::{verify, Expr, Gemm, Kernel, Mem, RedOp, Stmt, Var};
use kiln_ir::{BinaryOp, CmpOp, DType, UnaryOp};
use std::collections::HashMap;

/// The Cranelift type a value of this dtype computes in.
pub(crate) fn clty(d: DType) -> Type {
    match verify::compute_dtype(d) {
        DType::I32 => types::I32,
        DType::I64 => types::I64,
        DType::Bool => types::I8,
        // F32 (half floats compute as F32).
        _ => types::F32,
    }
}

/// Flags for kernel loads and stores: the kernel's indices are in bounds
/// (the IR's contract), alignment is not assumed.
pub(crate) fn data_flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// Defines the function of kernel `k` (number `index` in the module).
pub(crate) fn define_kernel(
    module: &mut JITModule,
    feat: Features,
    opts: &Options,
    k: &Kernel,
    index: usize,
) -> Result<FuncId, CodegenError> {
    verify::kernel(k).map_err(|e| CodegenError::Invalid(e.to_string()))?;
    let unsupported = |what: String| CodegenError::Unsupported { kernel: k.name.clone(), what };
    let scratch_bytes: u64 = k.scratch.iter().map(|s| s.len.saturating_mul(s.dtype.size_bytes() as u64)).sum();
    if scratch_bytes > MAX_SCRATCH_BYTES {
        return Err(unsupported(format!("{scratch_bytes} bytes of scratch (at most {MAX_SCRATCH_BYTES})")));
    }
    let mem_dtype = |m: Mem| match m {
        Mem::Arg(i) => k.args[i as usize].dtype,
        Mem::Scratch(i) => k.scratch[i as usize].dtype,
    };
    // Gemm helpers are defined (once per dtype triple) before this
    // function is built, so their definition never nests inside it.
    let mut gemms: Vec<(DType, DType, DType)> = Vec::new();
    visit_gemms(&k.body, &mut |g| {
        let key = (mem_dtype(g.a.mem), mem_dtype(g.b.mem), mem_dtype(g.c.mem));
        if !gemms.contains(&key) {
            gemms.push(key);
        }
    });
    let mut gemm_ids = Vec::new();
    for &(a, b, c) in &gemms {
        let id = if (a, b, c) == (DType::F32, DType::F32, DType::F32) && opts.native_gemm && native::isa().is_some() {
            native::declare(module)?
        } else {
            gemm::declare_gemm(module, a, b, c)?
        };
        gemm_ids.push(((a, b, c), id));
    }
    let cl = |e: cranelift_module::ModuleError| CodegenError::Cranelift(e.to_string());
    let ptr = module.target_config().pointer_type();
    let mut sig = module.make_signature();
    sig.params.extend([AbiParam::new(ptr), AbiParam::new(types::I64), AbiParam::new(types::I64)]);
    let id = module.declare_function(&format!("kiln_kernel{index}"), Linkage::Local, &sig).map_err(cl)?;
    let mut powf_sig = module.make_signature();
    powf_sig.params.extend([AbiParam::new(types::F32), AbiParam::new(types::F32)]);
    powf_sig.returns.push(AbiParam::new(types::F32));
    let powf_id = module.declare_function(POWF, Linkage::Import, &powf_sig).map_err(cl)?;
    let mut powi_sig = module.make_signature();
    powi_sig.params.extend([AbiParam::new(types::I64), AbiParam::new(types::I64)]);
    powi_sig.returns.push(AbiParam::new(types::I64));
    let powi_id = module.declare_function(POWI, Linkage::Import, &powi_sig).map_err(cl)?;

    let mut ctx = module.make_context();
    ctx.func.signature = sig;
    ctx.func.name = UserFuncName::user(0, id.as_u32());
    let powf = module.declare_func_in_func(powf_id, &mut ctx.func);
    let powi = module.declare_func_in_func(powi_id, &mut ctx.func);
    let gemm_refs = gemm_ids.into_iter().map(|(key, gid)| (key, module.declare_func_in_func(gid, &mut ctx.func))).collect();
    let mut pool = ConstPool::new(module, &mut ctx.func, index).map_err(cl)?;
    let mut fctx = FunctionBuilderContext::new();
    {
        let b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let mut l = Lowerer {
            b,
            k,
            feat,
            vectorize: opts.vectorize,
            args: Vec::new(),
            scratch: Vec::new(),
            vars: HashMap::new(),
            dtypes: HashMap::new(),
            tile: None,
            powf,
            powi,
            gemm: gemm_refs,
            consts: HashMap::new(),
            venv: None,
            pool: &mut pool,
        };
        l.function()?;
        l.b.finalize(module.target_config());
    }
    pool.define(module).map_err(cl)?;
    // Debugging aid: KILN_CLIF=1 prints each kernel's IR, =asm its machine code.
    let dump = std::env::var("KILN_CLIF").ok();
    if dump.as_deref() == Some("1") {
        eprintln!("; kernel `{}`\n{}", k.name, ctx.func.display());
    }
    ctx.set_disasm(dump.as_deref() == Some("asm"));
    module.define_function(id, &mut ctx).map_err(|e| match e {
        cranelift_module::ModuleError::Compilation(ce) => {
            CodegenError::Cranelift(cranelift_codegen::print_errors::pretty_error(&ctx.func, ce))
        }
        e => CodegenError::Cranelift(format!("kernel `{}`: {e}", k.name)),
    })?;
    if let (Some("asm"), Some(code)) = (dump.as_deref(), ctx.compiled_code()) {
        eprintln!("; kernel `{}`\n{}", k.name, code.vcode.as_deref().unwrap_or(""));
    }
    module.clear_context(&mut ctx);
    Ok(id)
}

fn visit_gemms<'k>(body: &'k [Stmt], f: &mut dyn FnMut(&'k Gemm)) {
    for s in body {
        match s {
            Stmt::Gemm(g) => f(g),
            Stmt::Loop { body, .. } | Stmt::If { body, .. } => visit_gemms(body, f),
            _ => {}
        }
    }
}

/// The state of one kernel function being built.
pub(crate) struct Lowerer<'f, 'k> {
    pub b: FunctionBuilder<'f>,
    pub k: &'k Kernel,
    pub feat: Features,
    pub vectorize: bool,
    /// Base pointer of each argument.
    pub args: Vec<Value>,
    /// Base address of each scratch array.
    pub scratch: Vec<Value>,
    /// Cranelift variable of each kernel variable defined so far.
    pub vars: HashMap<Var, Variable>,
    /// Compute dtype of each kernel variable defined so far.
    pub dtypes: HashMap<Var, DType>,
    /// The tile index (set once the tile loop is open).
    pub tile: Option<Variable>,
    pub powf: FuncRef,
    pub powi: FuncRef,
    pub gemm: HashMap<(DType, DType, DType), FuncRef>,
    /// Integer constants made by [`Lowerer::iconst`], for index analysis.
    pub consts: HashMap<Value, i64>,
    /// Lane values of the vector loop being emitted, if any.
    pub venv: Option<VEnv>,
    /// The kernel's vector constants.
    pub pool: &'f mut ConstPool,
}

pub(crate) type R<T> = Result<T, CodegenError>;

impl<'f, 'k> Lowerer<'f, 'k> {
    pub fn unsupported(&self, what: impl Into<String>) -> CodegenError {
        CodegenError::Unsupported { kernel: self.k.name.clone(), what: what.into() }
    }

    /// An f32/f32x4 helper on this builder.
    pub fn fx(&mut self, ty: Type) -> Fx<'_, 'f> {
        Fx::new(&mut self.b, ty, self.feat.fma, Some(self.pool))
    }

    /// An integer constant, remembered for index analysis.
    pub fn iconst(&mut self, ty: Type, v: i64) -> Value {
        let x = self.b.ins().iconst(ty, v);
        self.consts.insert(x, v);
        x
    }

    /// The integer value of `v`, when it is a constant made here.
    pub fn const_of(&self, v: Value) -> Option<i64> {
        self.consts.get(&v).copied()
    }

    fn function(&mut self) -> R<()> {
        let entry = self.b.create_block();
        self.b.append_block_params_for_function_params(entry);
        self.b.switch_to_block(entry);
        self.b.seal_block(entry);
        let p = self.b.block_params(entry).to_vec();
        let (argv, begin, end) = (p[0], p[1], p[2]);
        self.pool.start(&mut self.b);
        // The argument array is read once; pointers stay in registers.
        let fl = MemFlagsData::trusted().with_readonly();
        for i in 0..self.k.args.len() {
            let a = self.b.ins().load(types::I64, fl, argv, (8 * i) as i32);
            self.args.push(a);
        }
        for s in &self.k.scratch {
            let bytes = (s.len * s.dtype.size_bytes() as u64).max(1);
            let slot = self.b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, bytes as u32, 4));
            let a = self.b.ins().stack_addr(types::I64, slot, 0);
            self.scratch.push(a);
        }
        let tiles = self.b.create_block();
        let done = self.b.create_block();
        let any = self.b.ins().icmp(IntCC::UnsignedLessThan, begin, end);
        self.b.ins().brif(any, tiles, &[], done, &[]);
        self.b.seal_block(tiles);
        self.b.switch_to_block(tiles);
        let tile = self.b.declare_var(types::I64);
        self.tile = Some(tile);
        let body = self.k.body.as_slice();
        self.do_while(begin, end, 1, &mut |l, t| {
            l.b.def_var(tile, t);
            l.block(body)
        })?;
        self.b.ins().jump(done, &[]);
        self.b.seal_block(done);
        self.b.switch_to_block(done);
        self.b.ins().return_(&[]);
        Ok(())
    }

    /// `f(i)` for `i = start, start + step, ...` while `i < end` (unsigned);
    /// the first iteration always runs.
    pub fn do_while(&mut self, start: Value, end: Value, step: i64, f: &mut dyn FnMut(&mut Self, Value) -> R<()>) -> R<()> {
        let iv = self.b.declare_var(types::I64);
        self.b.def_var(iv, start);
        let body = self.b.create_block();
        let exit = self.b.create_block();
        self.b.ins().jump(body, &[]);
        self.b.switch_to_block(body);
        let i = self.b.use_var(iv);
        f(self, i)?;
        self.pool.carry(&mut self.b);
        let next = self.b.ins().iadd_imm_s(i, step);
        self.b.def_var(iv, next);
        let more = self.b.ins().icmp(IntCC::UnsignedLessThan, next, end);
        self.b.ins().brif(more, body, &[], exit, &[]);
        self.b.seal_block(body);
        self.b.switch_to_block(exit);
        self.b.seal_block(exit);
        Ok(())
    }

    /// `f(start + j * step)` for `j in 0..n`: nothing, straight-line code
    /// for one trip, else a loop.
    pub fn repeat(&mut self, start: i64, n: u64, step: i64, f: &mut dyn FnMut(&mut Self, Value) -> R<()>) -> R<()> {
        match n {
            0 => Ok(()),
            1 => {
                let i = self.iconst(types::I64, start);
                f(self, i)
            }
            _ => {
                let s = self.iconst(types::I64, start);
                let e = self.iconst(types::I64, start + n as i64 * step);
                self.do_while(s, e, step, f)
            }
        }
    }

    /// The Cranelift variable of `v`, declared on first use.
    pub fn var(&mut self, v: Var, d: DType) -> Variable {
        if let Some(x) = self.vars.get(&v) {
            return *x;
        }
        let x = self.b.declare_var(clty(d));
        self.vars.insert(v, x);
        self.dtypes.insert(v, verify::compute_dtype(d));
        x
    }

    /// The compute dtype of an expression.
    pub fn dtype_of(&self, e: &Expr) -> R<DType> {
        verify::expr_dtype(self.k, &self.dtypes, e).map_err(CodegenError::Invalid)
    }

    pub fn block(&mut self, body: &'k [Stmt]) -> R<()> {
        for s in body {
            self.stmt(s)?;
        }
        Ok(())
    }

    fn stmt(&mut self, s: &'k Stmt) -> R<()> {
        match s {
            Stmt::Loop { var, extent, vector, body } => {
                if *vector && self.vectorize && self.vector_loop(*var, *extent, body)? {
                    return Ok(());
                }
                let v = self.var(*var, DType::I64);
                self.repeat(0, *extent, 1, &mut |l, i| {
                    l.b.def_var(v, i);
                    l.block(body)
                })
            }
            Stmt::Let { var, value } => {
                let (x, d) = self.expr(value)?;
                let v = self.var(*var, d);
                self.b.def_var(v, x);
                Ok(())
            }
            Stmt::Reduce { var, op, index, extent, vector, value } => {
                if *vector && self.vectorize && self.vector_reduce(*var, *op, *index, *extent, value)? {
                    return Ok(());
                }
                self.reduce(*var, *op, *index, *extent, value)
            }
            Stmt::Store { mem, index, value } => {
                let (i, _) = self.expr(index)?;
                let (x, d) = self.expr(value)?;
                self.store(*mem, i, x, d)
            }
            Stmt::Gemm(g) => self.gemm(g),
            Stmt::If { cond, body } => {
                let (c, _) = self.expr(cond)?;
                let then = self.b.create_block();
                let join = self.b.create_block();
                self.b.ins().brif(c, then, &[], join, &[]);
                self.b.seal_block(then);
                self.b.switch_to_block(then);
                self.block(body)?;
                self.b.ins().jump(join, &[]);
                self.b.seal_block(join);
                self.b.switch_to_block(join);
                Ok(())
            }
        }
    }

    /// A scalar reduction: one accumulator, terms in index order.
    fn reduce(&mut self, var: Var, op: RedOp, index: Var, extent: u64, value: &'k Expr) -> R<()> {
        let iv = self.var(index, DType::I64);
        let d = self.dtype_of(value)?;
        let ty = clty(d);
        let acc = self.b.declare_var(ty);
        let init = self.red_init(op, d)?;
        self.b.def_var(acc, init);
        let best_i = self.b.declare_var(types::I64);
        let zero = self.iconst(types::I64, 0);
        self.b.def_var(best_i, zero);
        self.repeat(0, extent, 1, &mut |l, i| {
            l.b.def_var(iv, i);
            let (x, _) = l.expr(value)?;
            let a = l.b.use_var(acc);
            if op == RedOp::ArgMax {
                let take = l.argmax_takes(d, x, a);
                let nb = l.b.ins().select(take, x, a);
                let bi = l.b.use_var(best_i);
                let ni = l.b.ins().select(take, i, bi);
                l.b.def_var(acc, nb);
                l.b.def_var(best_i, ni);
            } else {
                let n = l.red_step(op, d, a, x)?;
                l.b.def_var(acc, n);
            }
            Ok(())
        })?;
        let (res, rd) = if op == RedOp::ArgMax { (self.b.use_var(best_i), DType::I64) } else { (self.b.use_var(acc), d) };
        let v = self.var(var, rd);
        self.b.def_var(v, res);
        Ok(())
    }

    /// The identity a reduction starts from.
    pub fn red_init(&mut self, op: RedOp, d: DType) -> R<Value> {
        Ok(match (d, op) {
            (DType::F32, RedOp::Sum) => self.b.ins().f32const(0.0),
            (DType::F32, RedOp::Max | RedOp::ArgMax) => self.b.ins().f32const(f32::NEG_INFINITY),
            (DType::F32, RedOp::Min) => self.b.ins().f32const(f32::INFINITY),
            (DType::I32 | DType::I64, _) => {
                let ty = clty(d);
                let (lo, hi) = if d == DType::I32 { (i32::MIN as i64, i32::MAX as i64) } else { (i64::MIN, i64::MAX) };
                let v = match op {
                    RedOp::Sum => 0,
                    RedOp::Max | RedOp::ArgMax => lo,
                    RedOp::Min => hi,
                };
                self.iconst(ty, v)
            }
            _ => return Err(self.unsupported(format!("{op:?} reduction of {d}"))),
        })
    }

    /// One step of a (non-argmax) reduction, scalar or f32x4.
    pub fn red_step(&mut self, op: RedOp, d: DType, acc: Value, x: Value) -> R<Value> {
        Ok(match (d, op) {
            (DType::F32, RedOp::Sum) => self.b.ins().fadd(acc, x),
            (DType::F32, RedOp::Max) => self.b.ins().fmax(acc, x),
            (DType::F32, RedOp::Min) => self.b.ins().fmin(acc, x),
            (_, RedOp::Sum) => self.b.ins().iadd(acc, x),
            (_, RedOp::Max) => self.imax(acc, x, true),
            (_, RedOp::Min) => self.imax(acc, x, false),
            (_, RedOp::ArgMax) => return Err(self.unsupported("argmax step")),
        })
    }

    /// Whether `x` replaces `best` in an argmax: greater, or the first NaN.
    fn argmax_takes(&mut self, d: DType, x: Value, best: Value) -> Value {
        if d == DType::F32 {
            let gt = self.b.ins().fcmp(FloatCC::GreaterThan, x, best);
            let xn = self.b.ins().fcmp(FloatCC::Unordered, x, x);
            let bn = self.b.ins().fcmp(FloatCC::Ordered, best, best);
            let first_nan = self.b.ins().band(xn, bn);
            self.b.ins().bor(gt, first_nan)
        } else {
            self.b.ins().icmp(IntCC::SignedGreaterThan, x, best)
        }
    }

    fn imax(&mut self, a: Value, b: Value, max: bool) -> Value {
        let cc = if max { IntCC::SignedGreaterThan } else { IntCC::SignedLessThan };
        let c = self.b.ins().icmp(cc, a, b);
        self.b.ins().select(c, a, b)
    }

    fn gemm(&mut self, g: &'k Gemm) -> R<()> {
        let key = (self.storage(g.a.mem)?, self.storage(g.b.mem)?, self.storage(g.c.mem)?);
        let f = *self.gemm.get(&key).ok_or_else(|| self.unsupported("an undeclared gemm"))?;
        let mut args = Vec::with_capacity(13);
        for op in [&g.a, &g.b, &g.c] {
            let (off, _) = self.expr(&op.offset)?;
            let p = self.addr(op.mem, off)?;
            let rs = self.iconst(types::I64, op.row_stride as i64);
            let cs = self.iconst(types::I64, op.col_stride as i64);
            args.extend([p, rs, cs]);
        }
        for v in [g.m as i64, g.n as i64, g.k as i64, g.accumulate as i64] {
            let c = self.iconst(types::I64, v);
            args.push(c);
        }
        self.b.ins().call(f, &args);
        Ok(())
    }

    /// The storage dtype of a memory.
    pub fn storage(&self, m: Mem) -> R<DType> {
        match m {
            Mem::Arg(i) => self.k.args.get(i as usize).map(|a| a.dtype),
            Mem::Scratch(i) => self.k.scratch.get(i as usize).map(|s| s.dtype),
        }
        .ok_or_else(|| CodegenError::Invalid(format!("{m:?} does not exist")))
    }

    /// `base(m) + index * sizeof(element)`.
    pub fn addr(&mut self, m: Mem, index: Value) -> R<Value> {
        let size = self.storage(m)?.size_bytes();
        let base = match m {
            Mem::Arg(i) => self.args[i as usize],
            Mem::Scratch(i) => self.scratch[i as usize],
        };
        let off = match size {
            1 => index,
            _ => self.b.ins().ishl_imm_u(index, size.trailing_zeros() as i64),
        };
        Ok(self.b.ins().iadd(base, off))
    }

    /// `m[index]` in its compute type.
    pub fn load(&mut self, m: Mem, index: Value) -> R<(Value, DType)> {
        let st = self.storage(m)?;
        let a = self.addr(m, index)?;
        let fl = data_flags();
        let v = match st {
            DType::F32 => self.b.ins().load(types::F32, fl, a, 0),
            DType::I32 => self.b.ins().load(types::I32, fl, a, 0),
            DType::I64 => self.b.ins().load(types::I64, fl, a, 0),
            DType::F16 | DType::BF16 => {
                let h = self.b.ins().uload16(types::I32, fl, a, 0);
                let mut fx = self.fx(types::F32);
                if st == DType::F16 {
                    fx.f16_to_f32(h)
                } else {
                    fx.bf16_to_f32(h)
                }
            }
            DType::Bool => {
                let v = self.b.ins().load(types::I8, fl, a, 0);
                self.b.ins().icmp_imm_s(IntCC::NotEqual, v, 0)
            }
        };
        Ok((v, verify::compute_dtype(st)))
    }

    /// `m[index] = x` (dtype `d`), converted to the memory's dtype.
    pub fn store(&mut self, m: Mem, index: Value, x: Value, d: DType) -> R<()> {
        let st = self.storage(m)?;
        let x = self.cast(d, verify::compute_dtype(st), x)?;
        let a = self.addr(m, index)?;
        let fl = data_flags();
        match st {
            DType::F16 | DType::BF16 => {
                let mut fx = self.fx(types::F32);
                let h = if st == DType::F16 { fx.f32_to_f16(x) } else { fx.f32_to_bf16(x) };
                self.b.ins().istore16(fl, h, a, 0);
            }
            _ => {
                self.b.ins().store(fl, x, a, 0);
            }
        }
        Ok(())
    }

    /// A constant of a dtype (half floats: the nearest half value).
    pub fn constant(&mut self, v: f64, d: DType) -> Value {
        match d {
            DType::F32 => self.b.ins().f32const(v as f32),
            DType::F16 => self.b.ins().f32const(super::half::round_const(v, false)),
            DType::BF16 => self.b.ins().f32const(super::half::round_const(v, true)),
            // `as` saturates (and maps NaN to 0); i32 then wraps, as the
            // interpreter's `DType::round` does.
            DType::I32 => self.iconst(types::I32, (v as i64) as i32 as i64),
            DType::I64 => self.iconst(types::I64, v as i64),
            DType::Bool => self.iconst(types::I8, (v != 0.0) as i64),
        }
    }

    /// A scalar expression and its compute dtype.
    pub fn expr(&mut self, e: &'k Expr) -> R<(Value, DType)> {
        Ok(match e {
            Expr::Const(v, d) => (self.constant(*v, *d), verify::compute_dtype(*d)),
            Expr::Var(v) => {
                let x = *self.vars.get(v).ok_or_else(|| CodegenError::Invalid(format!("v{} used before definition", v.0)))?;
                (self.b.use_var(x), self.dtypes[v])
            }
            Expr::Tile => {
                let t = self.tile.ok_or_else(|| self.unsupported("tile index outside the tile loop"))?;
                (self.b.use_var(t), DType::I64)
            }
            Expr::Load(m, i) => {
                let (i, _) = self.expr(i)?;
                self.load(*m, i)?
            }
            Expr::Unary(op, x) => {
                let (x, d) = self.expr(x)?;
                (self.unary(*op, d, x)?, d)
            }
            Expr::Binary(op, a, b) => {
                let (x, d) = self.expr(a)?;
                if let (BinaryOp::Pow, DType::F32, Expr::Const(c, _)) = (op, d, &**b) {
                    if let Some(v) = self.pow_const(x, *c, types::F32) {
                        return Ok((v, d));
                    }
                }
                let (y, _) = self.expr(b)?;
                (self.binary(*op, d, x, y)?, d)
            }
            Expr::Rem(a, b) => {
                let (x, d) = self.expr(a)?;
                let (y, _) = self.expr(b)?;
                (self.int_divrem(true, x, y), d)
            }
            Expr::Cmp(op, a, b) => {
                let (x, d) = self.expr(a)?;
                let (y, _) = self.expr(b)?;
                (self.cmp(*op, d, x, y), DType::Bool)
            }
            Expr::Select(c, a, b) => {
                let (c, _) = self.expr(c)?;
                let (x, d) = self.expr(a)?;
                let (y, _) = self.expr(b)?;
                (self.b.ins().select(c, x, y), d)
            }
            Expr::Cast(to, x) => {
                let (v, from) = self.expr(x)?;
                (self.cast(from, *to, v)?, verify::compute_dtype(*to))
            }
            Expr::Rand(seed, counter) => {
                let (s, _) = self.expr(seed)?;
                let (c, _) = self.expr(counter)?;
                (self.rand(s, c), DType::F32)
            }
            Expr::Checked(c) => {
                let (i, _) = self.expr(&c.index)?;
                (self.checked(c, i, &mut |l| Ok(l.expr(&c.pos)?.0))?, DType::I64)
            }
        })
    }

    /// `rng::uniform(seed, counter)` on two i64 values: SplitMix64's
    /// `counter`-th output, top 24 bits scaled to `[0, 1)`.
    pub fn rand(&mut self, seed: Value, counter: Value) -> Value {
        use kiln_ir::rng::{GAMMA, MIX1, MIX2};
        let n = self.b.ins().iadd_imm_u(counter, 1);
        let g = self.iconst(types::I64, GAMMA as i64);
        let step = self.b.ins().imul(n, g);
        let mut z = self.b.ins().iadd(seed, step);
        for (shift, mul) in [(30, Some(MIX1)), (27, Some(MIX2)), (31, None)] {
            let hi = self.b.ins().ushr_imm_u(z, shift);
            z = self.b.ins().bxor(z, hi);
            if let Some(m) = mul {
                let m = self.iconst(types::I64, m as i64);
                z = self.b.ins().imul(z, m);
            }
        }
        let top = self.b.ins().ushr_imm_u(z, 40);
        let f = self.b.ins().fcvt_from_uint(types::F32, top);
        let scale = self.b.ins().f32const(1.0 / (1u32 << 24) as f32);
        self.b.ins().fmul(f, scale)
    }

    /// A unary op on a scalar of compute dtype `d`.
    pub fn unary(&mut self, op: UnaryOp, d: DType, x: Value) -> R<Value> {
        match d {
            DType::F32 => self.funary(op, x, types::F32),
            DType::I32 | DType::I64 => {
                let ty = clty(d);
                Ok(match op {
                    UnaryOp::Neg => self.b.ins().ineg(x),
                    UnaryOp::Abs => {
                        let n = self.b.ins().ineg(x);
                        self.imax(x, n, true)
                    }
                    UnaryOp::Relu => {
                        let z = self.iconst(ty, 0);
                        self.imax(x, z, true)
                    }
                    _ => return Err(self.unsupported(format!("{op:?} on {d}"))),
                })
            }
            DType::Bool if op == UnaryOp::Not => Ok(self.b.ins().bxor_imm_u(x, 1)),
            _ => Err(self.unsupported(format!("{op:?} on {d}"))),
        }
    }

    /// A unary op on f32 or f32x4 (`ty`).
    pub fn funary(&mut self, op: UnaryOp, x: Value, ty: Type) -> R<Value> {
        let mut fx = self.fx(ty);
        Ok(match op {
            UnaryOp::Neg => fx.b.ins().fneg(x),
            UnaryOp::Abs => fx.abs(x),
            UnaryOp::Exp => fx.exp(x),
            UnaryOp::Log => fx.log(x),
            UnaryOp::Sqrt => fx.b.ins().sqrt(x),
            UnaryOp::Rsqrt => {
                let s = fx.b.ins().sqrt(x);
                let one = fx.c(1.0);
                fx.div(one, s)
            }
            UnaryOp::Tanh => fx.tanh(x),
            UnaryOp::Sigmoid => fx.sigmoid(x),
            // `x < 0 ? 0 : x` keeps NaN, like the interpreter.
            UnaryOp::Relu => {
                let neg = fx.cmpc(FloatCC::LessThan, x, 0.0);
                fx.selc(neg, 0.0, x)
            }
            UnaryOp::Gelu => fx.gelu(x),
            UnaryOp::GeluTanh => fx.gelu_tanh(x),
            UnaryOp::Silu => fx.silu(x),
            UnaryOp::Erf => fx.erf(x),
            UnaryOp::Sin => fx.sincos(x, false),
            UnaryOp::Cos => fx.sincos(x, true),
            UnaryOp::Not => return Err(self.unsupported("not on f32")),
        })
    }

    /// `x ^ c` for a constant exponent with a cheap exact-enough form
    /// (products round at most twice, within 1.5 ulp of `powf`).
    pub fn pow_const(&mut self, x: Value, c: f64, ty: Type) -> Option<Value> {
        let mut fx = self.fx(ty);
        Some(match c {
            0.0 => fx.c(1.0),
            1.0 => x,
            2.0 => fx.mul(x, x),
            3.0 => {
                let x2 = fx.mul(x, x);
                fx.mul(x2, x)
            }
            4.0 => {
                let x2 = fx.mul(x, x);
                fx.mul(x2, x2)
            }
            -1.0 => {
                let one = fx.c(1.0);
                fx.div(one, x)
            }
            _ => return None,
        })
    }

    /// A binary op on scalars of compute dtype `d`.
    pub fn binary(&mut self, op: BinaryOp, d: DType, x: Value, y: Value) -> R<Value> {
        match d {
            DType::F32 => self.fbinary(op, x, y, types::F32),
            DType::I32 | DType::I64 => {
                Ok(match op {
                    BinaryOp::Add => self.b.ins().iadd(x, y),
                    BinaryOp::Sub => self.b.ins().isub(x, y),
                    BinaryOp::Mul => self.b.ins().imul(x, y),
                    BinaryOp::Div => self.int_divrem(false, x, y),
                    BinaryOp::Max => self.imax(x, y, true),
                    BinaryOp::Min => self.imax(x, y, false),
                    BinaryOp::Pow => {
                        let wide = d == DType::I32;
                        let (a, b) = if wide { (self.b.ins().sextend(types::I64, x), self.b.ins().sextend(types::I64, y)) } else { (x, y) };
                        let call = self.b.ins().call(self.powi, &[a, b]);
                        let r = self.b.inst_results(call)[0];
                        if wide {
                            self.b.ins().ireduce(types::I32, r)
                        } else {
                            r
                        }
                    }
                    BinaryOp::And | BinaryOp::Or => return Err(self.unsupported(format!("{op:?} on {d}"))),
                })
            }
            DType::Bool => Ok(match op {
                BinaryOp::And | BinaryOp::Min => self.b.ins().band(x, y),
                BinaryOp::Or | BinaryOp::Max => self.b.ins().bor(x, y),
                _ => return Err(self.unsupported(format!("{op:?} on bool"))),
            }),
            _ => Err(self.unsupported(format!("{op:?} on {d}"))),
        }
    }

    /// A binary op on f32 or f32x4 (`ty`).
    pub fn fbinary(&mut self, op: BinaryOp, x: Value, y: Value, ty: Type) -> R<Value> {
        Ok(match op {
            BinaryOp::Add => self.b.ins().fadd(x, y),
            BinaryOp::Sub => self.b.ins().fsub(x, y),
            BinaryOp::Mul => self.b.ins().fmul(x, y),
            BinaryOp::Div => self.b.ins().fdiv(x, y),
            // Cranelift's fmax/fmin propagate NaN, as the IR requires; for
            // vectors a shorter sequence does the same.
            BinaryOp::Max | BinaryOp::Min if ty.is_vector() => self.fx(ty).max_min(x, y, op == BinaryOp::Max),
            BinaryOp::Max => self.b.ins().fmax(x, y),
            BinaryOp::Min => self.b.ins().fmin(x, y),
            BinaryOp::Pow if ty.is_vector() => {
                let mut out = None;
                for lane in 0..4u8 {
                    let a = self.b.ins().extractlane(x, lane);
                    let b = self.b.ins().extractlane(y, lane);
                    let call = self.b.ins().call(self.powf, &[a, b]);
                    let r = self.b.inst_results(call)[0];
                    out = Some(match out {
                        None => self.b.ins().splat(ty, r),
                        Some(v) => self.b.ins().insertlane(v, r, lane),
                    });
                }
                out.unwrap_or(x)
            }
            BinaryOp::Pow => {
                let call = self.b.ins().call(self.powf, &[x, y]);
                self.b.inst_results(call)[0]
            }
            BinaryOp::And | BinaryOp::Or => return Err(self.unsupported(format!("{op:?} on f32"))),
        })
    }

    /// Truncating integer division or remainder that never traps: by zero
    /// gives 0, `MIN / -1` wraps to MIN (`MIN % -1` is 0).
    pub fn int_divrem(&mut self, rem: bool, x: Value, y: Value) -> Value {
        if let Some(c) = self.const_of(y) {
            if c != 0 && c != -1 {
                return if rem { self.b.ins().srem(x, y) } else { self.b.ins().sdiv(x, y) };
            }
        }
        let ty = self.b.func.dfg.value_type(x);
        let zero = self.iconst(ty, 0);
        let one = self.iconst(ty, 1);
        let y0 = self.b.ins().icmp_imm_s(IntCC::Equal, y, 0);
        let ym1 = self.b.ins().icmp_imm_s(IntCC::Equal, y, -1);
        let bad = self.b.ins().bor(y0, ym1);
        let ys = self.b.ins().select(bad, one, y);
        let q = if rem { self.b.ins().srem(x, ys) } else { self.b.ins().sdiv(x, ys) };
        let alt = if rem {
            zero
        } else {
            let n = self.b.ins().ineg(x);
            self.b.ins().select(ym1, n, zero)
        };
        self.b.ins().select(bad, alt, q)
    }

    /// A comparison of scalars of compute dtype `d`; an i8 0/1.
    pub fn cmp(&mut self, op: CmpOp, d: DType, x: Value, y: Value) -> Value {
        if d == DType::F32 {
            self.b.ins().fcmp(float_cc(op), x, y)
        } else {
            // Bools are 0/1, so signed order is their order too.
            self.b.ins().icmp(int_cc(op), x, y)
        }
    }

    /// Converts a scalar of compute dtype `from` to dtype `to` (a cast to
    /// f16/bf16 rounds to that precision; the result computes as f32).
    pub fn cast(&mut self, from: DType, to: DType, x: Value) -> R<Value> {
        let to_c = verify::compute_dtype(to);
        let v = match (from, to_c) {
            (a, b) if a == b => x,
            (DType::F32, DType::I64) => self.b.ins().fcvt_to_sint_sat(types::I64, x),
            (DType::F32, DType::I32) => {
                let w = self.b.ins().fcvt_to_sint_sat(types::I64, x);
                self.b.ins().ireduce(types::I32, w)
            }
            (DType::F32, DType::Bool) => {
                let z = self.b.ins().f32const(0.0);
                self.b.ins().fcmp(FloatCC::NotEqual, x, z)
            }
            (DType::I32 | DType::I64, DType::F32) => self.b.ins().fcvt_from_sint(types::F32, x),
            (DType::I32, DType::I64) => self.b.ins().sextend(types::I64, x),
            (DType::I64, DType::I32) => self.b.ins().ireduce(types::I32, x),
            (DType::I32 | DType::I64, DType::Bool) => self.b.ins().icmp_imm_s(IntCC::NotEqual, x, 0),
            (DType::Bool, DType::F32) => {
                let one = self.b.ins().f32const(1.0);
                let zero = self.b.ins().f32const(0.0);
                self.b.ins().select(x, one, zero)
            }
            (DType::Bool, DType::I32 | DType::I64) => self.b.ins().uextend(clty(to_c), x),
            _ => return Err(self.unsupported(format!("cast from {from} to {to}"))),
        };
        Ok(match to {
            DType::F16 => self.fx(types::F32).round_f16(v),
            DType::BF16 => self.fx(types::F32).round_bf16(v),
            _ => v,
        })
    }
}

/// The IEEE comparison for a [`CmpOp`]: ordered, except `Ne` (true on NaN).
pub(crate) fn float_cc(op: CmpOp) -> FloatCC {
    match op {
        CmpOp::Eq => FloatCC::Equal,
        CmpOp::Ne => FloatCC::NotEqual,
        CmpOp::Lt => FloatCC::LessThan,
        CmpOp::Le => FloatCC::LessThanOrEqual,
        CmpOp::Gt => FloatCC::GreaterThan,
        CmpOp::Ge => FloatCC::GreaterThanOrEqual,
    }
}

/// The signed integer comparison for a [`CmpOp`].
pub(crate) fn int_cc(op: CmpOp) -> IntCC {
    match op {
        CmpOp::Eq => IntCC::Equal,
        CmpOp::Ne => IntCC::NotEqual,
        CmpOp::Lt => IntCC::SignedLessThan,
        CmpOp::Le => IntCC::SignedLessThanOrEqual,
        CmpOp::Gt => IntCC::SignedGreaterThan,
        CmpOp::Ge => IntCC::SignedGreaterThanOrEqual,
    }
}
