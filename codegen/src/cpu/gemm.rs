//! The packed, cache-blocked, register-blocked GEMM of the CPU backend.
//!
//! [`declare_gemm`] defines (once per module and dtype triple) a Cranelift
//! function
//!
//! ```text
//! gemm(a, a_rs, a_cs, b, b_rs, b_cs, c, c_rs, c_cs, m, n, k, accumulate)
//! ```
//!
//! (pointers of the target's pointer type, everything else `i64`) that
//! computes `C = A·B`, or `C += A·B` when `accumulate != 0`, for an `m × k`
//! matrix `A`, a `k × n` matrix `B` and an `m × n` matrix `C`. Element
//! `(r, c)` of an operand lives at `ptr + (r·rs + c·cs)·size_of(dtype)`:
//! strides are in elements, any value, negative included (transposes and
//! sub-matrix views are just strides). Arithmetic is f32 whatever the
//! storage dtypes: f32, bf16 and f16 operands are widened exactly while
//! packing, and a bf16 or f16 `C` is rounded once, to nearest even, when
//! its block is complete (partial sums stay f32). `m`, `n` or `k` ≤ 0 is
//! allowed: with `k ≤ 0`, `C` becomes 0 (or is left alone when
//! accumulating); with `m` or `n` ≤ 0 nothing is touched.
//!
//! # Structure (BLIS / GotoBLAS)
//!
//! ```text
//! for jc in 0..n step NC                      // B panel: KC×NC, in L2
//!   for pc in 0..k step KC
//!     pack B[pc.., jc..] into k-major panels of NR columns
//!     for ic in 0..m step MC                  // A block: MC×KC, in L2
//!       pack A[ic.., pc..] into k-major panels of MR rows (pre-broadcast)
//!       for jr in 0..nc step NR               // B micro-panel: KC×NR, L1
//!         for ir in 0..mc step MR             // A micro-panel: MR×KC, L1
//!           MR×NR micro-kernel over kc, accumulators in registers
//! ```
//!
//! For a bf16 or f16 `C` the `pc` loop moves inside a loop over blocks of
//! `4·MC` rows, and the micro-kernel accumulates into an f32 `4·MC × NC`
//! scratch block that is rounded into `C` once `k` is exhausted: B is then
//! packed once per 96 rows instead of once in all (a few percent more
//! work, for a singly rounded result).
//!
//! Packing converts to f32 and zero-pads edge panels (rows beyond `m`,
//! columns beyond `n`), so the micro-kernel always computes full `MR×NR`
//! tiles; a full panel is read with vector loads across its lanes when they
//! are contiguous, else lane by lane along k when the k steps are (a
//! row-major A, a transposed B: the common small operands of attention
//! blocks), else element by element. Full tiles of an f32 `C` with unit
//! column stride are written with vector loads and stores, edge tiles (and
//! any other `C` layout)
//! through a small stack tile and scalar read-modify-writes. A is packed
//! *pre-broadcast*: each element stored as an f32x4 of four copies, so the
//! micro-kernel loads ready-made broadcast vectors (see `Gen::micro`
//! for why that matters with Cranelift).
//!
//! The micro-kernel is a function of its own
//! (`kiln_gemm_tile_{MR}x{NR}_{fma|muladd}`, see `declare_tile`) called
//! per tile, so that its registers are allocated apart from the loop nest
//! around it.
//!
//! # Micro-kernel arithmetic
//!
//! Cranelift's x86 FMA (`vfmadd213ps`/`vfmadd132ps`) overwrites a
//! multiplicand, never the accumulator, so an FMA kernel pays a register
//! copy per FMA (a shared A broadcast must be copied, or the result lands
//! in a new register and the loop's back edge moves it back). A separate
//! `vmulps` + `vaddps` (three-operand AVX) leaves the accumulators in
//! place: a k step is then 8 loads and 24 FP operations instead of ~45
//! instructions, and on cores with two FP multiply and two FP add pipes
//! (AMD Zen) it runs at nearly the FMA rate: on Zen 5 the whole GEMM
//! reaches ~87 % of the FMA ceiling this way against ~78 % with FMA. So
//! the kernel uses multiply + add on AMD CPUs (and wherever the ISA lacks
//! FMA) and FMA elsewhere; [`Blocking::fma`] overrides the choice. The
//! separate form rounds each product to f32 before adding it: both forms
//! are f32 arithmetic with the usual `O(k·ε)` error bound.
//!
//! # Blocking parameters ([`Blocking::DEFAULT`])
//!
//! - Micro-tile `MR × NR = 6 × 8`: 12 f32x4 accumulators, 2 B vectors, an
//!   A vector and a product temporary: all 16 xmm registers Cranelift has
//!   on x86-64. One k step is 12 vector multiply-adds for 8 loads. 5×8,
//!   4×8, 4×12 and 3×16 measured slower (fewer accumulators, or spills).
//! - `KC = 256`: an A micro-panel (`MR·KC·16` = 24 KiB pre-broadcast) plus
//!   a B micro-panel (`KC·NR·4` = 8 KiB) use 2/3 of a 48 KiB L1d, and a C
//!   tile is read and written once per 256·12 multiply-adds.
//! - `MC = 24`: the packed A block (`MC·KC·16` = 96 KiB) stays in L2
//!   (1–2 MiB) while it is swept once per B micro-panel; 24 to 96 measured
//!   the same, so the smallest (least stack) wins.
//! - `NC = 256`: the packed B panel (`KC·NC·4` = 256 KiB) sits in L2 beside
//!   the A block; A is repacked once per 256 columns, ~2 % of the work.
//!
//! # Memory
//!
//! The packing buffers are stack slots of the generated function: 96 KiB
//! for A, 256 KiB for B, a 192-byte edge tile, and for a bf16/f16 `C` a
//! 96 KiB (`4·MC·NC·4`) f32 scratch block: about 352 KiB (448 KiB with a
//! half-precision `C`) of the calling thread's stack (see
//! [`Blocking::stack_bytes`]). No global state: the function is reentrant
//! and may run on many threads at once. (The backend's module enables
//! inline stack probes, so a thread with too small a stack faults on its
//! guard page rather than corrupting memory.)

use super::CodegenError;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{
    types, AbiParam, Endianness, FuncRef, InstBuilder, MemFlagsData, StackSlotData, StackSlotKind, Type, UserFuncName,
    Value,
};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::JITModule;
use cranelift_module::{FuncId, FuncOrDataId, Linkage, Module};
use kiln_ir::DType;

/// A bf16/f16 `C` accumulates in an f32 scratch block of this many A blocks'
/// rows (`SCRATCH_BLOCKS·MC × NC`): B is packed once per scratch block.
const SCRATCH_BLOCKS: usize = 4;

/// Cache and register blocking, and the micro-kernel's arithmetic, of the
/// generated GEMM. [`Blocking::DEFAULT`] is what [`declare_gemm`] uses;
/// other values exist for tuning and testing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Blocking {
    /// Rows of the micro-tile (1..=8).
    pub mr: usize,
    /// Columns of the micro-tile (4, 8, 12 or 16; `mr·nr/4 ≤ 16`).
    pub nr: usize,
    /// k extent of a packed block.
    pub kc: usize,
    /// Rows of a packed A block (a multiple of `mr`).
    pub mc: usize,
    /// Columns of a packed B panel (a multiple of `nr`).
    pub nc: usize,
    /// The micro-kernel's multiply-add: `Some(true)` FMA (where the ISA has
    /// it; otherwise as `Some(false)`), `Some(false)` a separate multiply
    /// and add, `None` the better one for the host CPU (see the module
    /// documentation).
    pub fma: Option<bool>,
}

impl Blocking {
    /// The blocking [`declare_gemm`] uses (see the module documentation).
    pub const DEFAULT: Blocking = Blocking { mr: 6, nr: 8, kc: 256, mc: 24, nc: 256, fma: None };

    fn check(&self) -> Result<(), String> {
        let ok = (1..=8).contains(&self.mr)
            && self.nr.is_multiple_of(4)
            && (4..=16).contains(&self.nr)
            && self.mr * self.nr / 4 <= 16
            && self.kc > 0
            && self.mc > 0
            && self.mc.is_multiple_of(self.mr)
            && self.nc > 0
            && self.nc.is_multiple_of(self.nr)
            && self.stack_bytes(DType::F16) <= 4 << 20;
        if ok {
            Ok(())
        } else {
            Err(format!("blocking {self:?}"))
        }
    }

    /// Bytes of stack the generated GEMM uses for its buffers when `C` has
    /// storage dtype `c` (A pre-broadcast, B, the edge tile, and for a
    /// bf16/f16 `C` the f32 scratch block).
    pub fn stack_bytes(&self, c: DType) -> usize {
        let scratch = if c == DType::F32 { 0 } else { SCRATCH_BLOCKS * self.mc * self.nc * 4 };
        (4 * self.mc * self.kc + self.kc * self.nc + self.mr * self.nr) * 4 + scratch
    }
}

/// The GEMM's signature (see the [module documentation](self)): three
/// (pointer, row stride, column stride) operands, then `m`, `n`, `k` and
/// `accumulate`. [`super::native`]'s GEMM has the same one.
pub(crate) fn signature(module: &JITModule) -> cranelift_codegen::ir::Signature {
    let ptr = module.target_config().pointer_type();
    let mut sig = module.make_signature();
    for i in 0..13 {
        let ty = if i % 3 == 0 && i < 9 { ptr } else { types::I64 };
        sig.params.push(AbiParam::new(ty));
    }
    sig
}

/// Declares and defines, once per module and dtype triple, the GEMM for
/// operands of storage dtypes `a`, `b` and `c` (each f32, bf16 or f16).
/// See the [module documentation](self) for the function's signature and
/// semantics.
///
/// The function is named `kiln_gemm_{a}_{b}_{c}` with local linkage; a
/// second call with the same dtypes returns the id declared by the first.
/// The caller finalizes the module.
pub fn declare_gemm(module: &mut JITModule, a: DType, b: DType, c: DType) -> Result<FuncId, CodegenError> {
    declare_gemm_with(module, a, b, c, Blocking::DEFAULT)
}

/// [`declare_gemm`] with an explicit [`Blocking`] (for tuning). Functions
/// of a non-default blocking are named with its parameters appended.
pub fn declare_gemm_with(
    module: &mut JITModule,
    a: DType,
    b: DType,
    c: DType,
    blk: Blocking,
) -> Result<FuncId, CodegenError> {
    let mut name = format!("kiln_gemm_{}_{}_{}", a.name(), b.name(), c.name());
    if blk != Blocking::DEFAULT {
        name += &format!("_{}x{}_k{}_m{}_n{}", blk.mr, blk.nr, blk.kc, blk.mc, blk.nc);
        if let Some(f) = blk.fma {
            name += if f { "_fma" } else { "_muladd" };
        }
    }
    if let Some(FuncOrDataId::Func(id)) = module.get_name(&name) {
        return Ok(id);
    }
    let unsupported = |what: String| CodegenError::Unsupported { kernel: name.clone(), what };
    for d in [a, b, c] {
        if !matches!(d, DType::F32 | DType::F16 | DType::BF16) {
            return Err(unsupported(format!("gemm of {} operands", d.name())));
        }
    }
    blk.check().map_err(unsupported)?;
    let cl = |e: cranelift_module::ModuleError| CodegenError::Cranelift(e.to_string());
    let ptr = module.target_config().pointer_type();
    let sig = signature(module);
    let fused = module.isa().has_native_fma() && blk.fma.unwrap_or_else(|| !prefers_mul_add(module.isa().name()));
    let tile = declare_tile(module, blk, fused)?;
    let id = module.declare_function(&name, Linkage::Local, &sig).map_err(cl)?;
    let mut ctx = module.make_context();
    ctx.func.signature = sig;
    ctx.func.name = UserFuncName::user(0x6765, id.as_u32());
    let tile = import_far(module, tile, &mut ctx.func);
    let mut fctx = FunctionBuilderContext::new();
    {
        let mut bd = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let mut g = Gen { b: &mut bd, ptr, fused, blk, dt: [a, b, c], tile: Some(tile) };
        g.body();
        bd.seal_all_blocks();
        bd.finalize(module.target_config());
    }
    define(module, id, &mut ctx, &name)?;
    Ok(id)
}

/// Imports `id` into `func` for calls through an absolute address. (A
/// local function would otherwise be "colocated", called with a 32-bit
/// PC-relative offset, which cranelift-jit cannot guarantee to reach:
/// functions are separate allocations.)
fn import_far(module: &JITModule, id: FuncId, func: &mut cranelift_codegen::ir::Function) -> FuncRef {
    use cranelift_codegen::ir::{ExtFuncData, ExternalName, UserExternalName};
    let signature = func.import_signature(module.declarations().get_function_decl(id).signature.clone());
    let name = func.declare_imported_user_function(UserExternalName { namespace: 0, index: id.as_u32() });
    func.import_function(ExtFuncData { name: ExternalName::user(name), signature, colocated: false, patchable: false })
}

/// Defines `id` from `ctx` (and clears it), with Cranelift's errors
/// rendered against the function.
fn define(
    module: &mut JITModule,
    id: FuncId,
    ctx: &mut cranelift_codegen::Context,
    name: &str,
) -> Result<(), CodegenError> {
    if let Err(e) = module.define_function(id, ctx) {
        let msg = match e {
            cranelift_module::ModuleError::Compilation(e) => {
                cranelift_codegen::print_errors::pretty_error(&ctx.func, e)
            }
            e => e.to_string(),
        };
        return Err(CodegenError::Cranelift(format!("{name}: {msg}")));
    }
    module.clear_context(ctx);
    Ok(())
}

/// Declares and defines (once per module and micro-tile shape) the
/// micro-kernel as a function of its own,
///
/// ```text
/// tile(a_panel, b_panel, kc, c, c_rs_bytes, beta)
/// ```
///
/// which runs the register-blocked loop over `kc ≥ 1` packed steps and
/// stores the full `MR × NR` tile to the f32 rows at `c + i·c_rs_bytes`
/// (adding to them when `beta != 0`). A function of its own so that the
/// loop's registers are allocated free of the enclosing loop nest's state
/// (which otherwise spills into the loop); the call costs a few cycles per
/// `kc·MR·NR/4` vector multiply-adds.
fn declare_tile(module: &mut JITModule, blk: Blocking, fused: bool) -> Result<FuncId, CodegenError> {
    let name = format!("kiln_gemm_tile_{}x{}_{}", blk.mr, blk.nr, if fused { "fma" } else { "muladd" });
    if let Some(FuncOrDataId::Func(id)) = module.get_name(&name) {
        return Ok(id);
    }
    let cl = |e: cranelift_module::ModuleError| CodegenError::Cranelift(e.to_string());
    let ptr = module.target_config().pointer_type();
    let mut sig = module.make_signature();
    for ty in [ptr, ptr, types::I64, ptr, types::I64, types::I64] {
        sig.params.push(AbiParam::new(ty));
    }
    let id = module.declare_function(&name, Linkage::Local, &sig).map_err(cl)?;
    let mut ctx = module.make_context();
    ctx.func.signature = sig;
    ctx.func.name = UserFuncName::user(0x6765, id.as_u32());
    let mut fctx = FunctionBuilderContext::new();
    {
        let mut bd = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let entry = bd.create_block();
        bd.append_block_params_for_function_params(entry);
        bd.switch_to_block(entry);
        bd.seal_block(entry);
        let p = bd.block_params(entry).to_vec();
        let mut g = Gen { b: &mut bd, ptr, fused, blk, dt: [DType::F32; 3], tile: None };
        let accs = g.micro(p[0], p[1], p[2]);
        let beta = g.b.ins().icmp_imm_s(IntCC::NotEqual, p[5], 0);
        g.store_tile(&accs, p[3], p[4], beta);
        g.b.ins().return_(&[]);
        bd.seal_all_blocks();
        bd.finalize(module.target_config());
    }
    define(module, id, &mut ctx, &name)?;
    Ok(id)
}

/// Whether the micro-kernel should use a multiply and an add rather than
/// FMA even where FMA exists: on AMD cores (two FP multiply and two FP add
/// pipes since Zen 1) the separate form runs at the full FMA rate and,
/// unlike Cranelift's x86 FMA (which overwrites a multiplicand), leaves the
/// accumulators in place (see [`Gen::micro`]). Elsewhere (e.g. Intel cores
/// where adds share the FMA ports) FMA stays. Only meaningful for the host
/// (the JIT compiles for the CPU it runs on).
fn prefers_mul_add(isa_name: &str) -> bool {
    #[cfg(target_arch = "x86_64")]
    if isa_name == "x64" {
        let id = std::arch::x86_64::__cpuid(0);
        let mut vendor = [0u8; 12];
        vendor[..4].copy_from_slice(&id.ebx.to_le_bytes());
        vendor[4..8].copy_from_slice(&id.edx.to_le_bytes());
        vendor[8..].copy_from_slice(&id.ecx.to_le_bytes());
        return &vendor == b"AuthenticAMD" || &vendor == b"HygonGenuine";
    }
    let _ = isa_name;
    false
}

/// Flags for every access: the generated code only touches memory the
/// caller vouched for, or its own stack.
fn mem() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// Flags for the packed buffers (16-byte aligned stack slots).
fn packed() -> MemFlagsData {
    MemFlagsData::trusted()
}

/// Flags for the micro-kernel's loads of packed panels: besides aligned
/// and non-trapping, `readonly` and `can_move`, which makes them pure for
/// Cranelift's mid-end, so each is placed right at its use (where a
/// single-use one can fold into its user's memory operand) instead of all
/// loads of a step being issued first and kept live across it. Sound
/// because the micro-kernel is a function of its own that only reads the
/// panels, which its caller packed before the call.
fn panel_load() -> MemFlagsData {
    MemFlagsData::trusted().with_readonly().with_can_move()
}

/// Where a micro-kernel writes its tile.
#[derive(Clone, Copy)]
enum Dest {
    /// Straight into an f32 `C`: `c_rs`/`c_cs` in bytes, `unit` (i8) when
    /// the column stride is one element, `beta` (i8) to add to `C`.
    Direct { rs: Value, cs: Value, unit: Value, beta: Value },
    /// Into the f32 scratch block (row stride `nc·4` bytes, always a full
    /// tile); `beta` (i8) to add to what is there.
    Scratch { beta: Value },
}

struct Gen<'a, 'f> {
    b: &'a mut FunctionBuilder<'f>,
    ptr: Type,
    /// The micro-kernel uses FMA (else a multiply and an add).
    fused: bool,
    blk: Blocking,
    /// Storage dtypes of A, B, C.
    dt: [DType; 3],
    /// The micro-tile function (see [`declare_tile`]).
    tile: Option<FuncRef>,
}

impl Gen<'_, '_> {
    fn iconst(&mut self, v: i64) -> Value {
        self.b.ins().iconst(types::I64, v)
    }

    fn min(&mut self, x: Value, y: Value) -> Value {
        self.b.ins().smin(x, y)
    }

    /// `x · k` for a constant `k`.
    fn muli(&mut self, x: Value, k: i64) -> Value {
        self.b.ins().imul_imm_s(x, k)
    }

    fn addi(&mut self, x: Value, k: i64) -> Value {
        self.b.ins().iadd_imm_s(x, k)
    }

    /// `ptr + off` (both pointer-sized).
    fn at(&mut self, p: Value, off: Value) -> Value {
        self.b.ins().iadd(p, off)
    }

    /// The address of element `(r, c)` of a matrix at `p` whose rows and
    /// columns are `rs` and `cs` bytes apart.
    fn elem(&mut self, p: Value, (r, rs): (Value, Value), (c, cs): (Value, Value)) -> Value {
        let o1 = self.b.ins().imul(r, rs);
        let o2 = self.b.ins().imul(c, cs);
        let q = self.at(p, o1);
        self.at(q, o2)
    }

    fn stack(&mut self, bytes: usize) -> Value {
        let ss = self.b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, bytes as u32, 4));
        self.b.ins().stack_addr(self.ptr, ss, 0)
    }

    /// `for i in (start..end).step_by(step) { f(i) }` with `i` an i64.
    fn for_range(&mut self, start: Value, end: Value, step: i64, f: &mut dyn FnMut(&mut Self, Value)) {
        let iv = self.b.declare_var(types::I64);
        self.b.def_var(iv, start);
        let (head, body, exit) = (self.b.create_block(), self.b.create_block(), self.b.create_block());
        self.b.ins().jump(head, &[]);
        self.b.switch_to_block(head);
        let i = self.b.use_var(iv);
        let more = self.b.ins().icmp(IntCC::SignedLessThan, i, end);
        self.b.ins().brif(more, body, &[], exit, &[]);
        self.b.switch_to_block(body);
        self.b.seal_block(body);
        f(self, i);
        let next = self.addi(i, step);
        self.b.def_var(iv, next);
        self.b.ins().jump(head, &[]);
        self.b.seal_block(head);
        self.b.switch_to_block(exit);
        self.b.seal_block(exit);
    }

    /// `if c { t } else { e }` (either may be empty).
    fn if_else(&mut self, c: Value, t: &mut dyn FnMut(&mut Self), e: &mut dyn FnMut(&mut Self)) {
        let (bt, be, join) = (self.b.create_block(), self.b.create_block(), self.b.create_block());
        self.b.ins().brif(c, bt, &[], be, &[]);
        self.b.switch_to_block(bt);
        self.b.seal_block(bt);
        t(self);
        self.b.ins().jump(join, &[]);
        self.b.switch_to_block(be);
        self.b.seal_block(be);
        e(self);
        self.b.ins().jump(join, &[]);
        self.b.switch_to_block(join);
        self.b.seal_block(join);
    }

    fn body(&mut self) {
        let entry = self.b.create_block();
        self.b.append_block_params_for_function_params(entry);
        self.b.switch_to_block(entry);
        self.b.seal_block(entry);
        let p = self.b.block_params(entry).to_vec();
        let [da, db, dc] = self.dt;
        let (pa, pb, pc) = (p[0], p[3], p[6]);
        let (m, n, k, acc) = (p[9], p[10], p[11], p[12]);
        let sz = |d: DType| d.size_bytes() as i64;
        let ars = self.muli(p[1], sz(da));
        let acs = self.muli(p[2], sz(da));
        let brs = self.muli(p[4], sz(db));
        let bcs = self.muli(p[5], sz(db));
        let crs = self.muli(p[7], sz(dc));
        let ccs = self.muli(p[8], sz(dc));

        // Nothing to do for an empty C.
        let zero = self.iconst(0);
        let em = self.b.ins().icmp(IntCC::SignedLessThanOrEqual, m, zero);
        let en = self.b.ins().icmp(IntCC::SignedLessThanOrEqual, n, zero);
        let empty = self.b.ins().bor(em, en);
        let (ret, work) = (self.b.create_block(), self.b.create_block());
        self.b.ins().brif(empty, ret, &[], work, &[]);
        self.b.switch_to_block(work);
        self.b.seal_block(work);

        // k ≤ 0: C = 0 unless accumulating.
        let kz = self.b.ins().icmp(IntCC::SignedLessThanOrEqual, k, zero);
        let accz = self.b.ins().icmp_imm_s(IntCC::Equal, acc, 0);
        let clear = self.b.ins().band(kz, accz);
        self.if_else(
            clear,
            &mut |g| {
                g.for_range(zero, m, 1, &mut |g, i| {
                    let row = g.b.ins().imul(i, crs);
                    let row = g.at(pc, row);
                    g.for_range(zero, n, 1, &mut |g, j| {
                        let off = g.b.ins().imul(j, ccs);
                        let addr = g.at(row, off);
                        if dc == DType::F32 {
                            let z = g.b.ins().f32const(0.0);
                            g.b.ins().store(mem(), z, addr, 0);
                        } else {
                            let z = g.b.ins().iconst(types::I32, 0);
                            g.b.ins().istore16(mem(), z, addr, 0);
                        }
                    });
                });
            },
            &mut |_| {},
        );
        let main = self.b.create_block();
        self.b.ins().brif(kz, ret, &[], main, &[]);
        self.b.switch_to_block(main);
        self.b.seal_block(main);

        let blk = self.blk;
        let ap = self.stack(blk.mc * blk.kc * 16);
        let bp = self.stack(blk.kc * blk.nc * 4);
        let tile = self.stack(blk.mr * blk.nr * 4);
        let a_unit = self.b.ins().icmp_imm_s(IntCC::Equal, p[1], 1);
        let b_unit = self.b.ins().icmp_imm_s(IntCC::Equal, p[5], 1);
        let c_unit = self.b.ins().icmp_imm_s(IntCC::Equal, p[8], 1);
        let accnz = self.b.ins().icmp_imm_s(IntCC::NotEqual, acc, 0);
        let (kcb, mcb, ncb) = (self.iconst(blk.kc as i64), self.iconst(blk.mc as i64), self.iconst(blk.nc as i64));

        if dc == DType::F32 {
            self.for_range(zero, n, blk.nc as i64, &mut |g, jc| {
                let rest = g.b.ins().isub(n, jc);
                let nc = g.min(ncb, rest);
                g.for_range(zero, k, blk.kc as i64, &mut |g, kk| {
                    let rest = g.b.ins().isub(k, kk);
                    let kc = g.min(kcb, rest);
                    let later = g.b.ins().icmp_imm_s(IntCC::NotEqual, kk, 0);
                    let beta = g.b.ins().bor(later, accnz);
                    // Pack B[kk.., jc..]: lanes are columns.
                    let src = g.elem(pb, (kk, brs), (jc, bcs));
                    g.pack(bp, src, bcs, brs, b_unit, blk.nr, nc, kc, db, false);
                    g.for_range(zero, m, blk.mc as i64, &mut |g, ic| {
                        let rest = g.b.ins().isub(m, ic);
                        let mc = g.min(mcb, rest);
                        let src = g.elem(pa, (ic, ars), (kk, acs));
                        g.pack(ap, src, ars, acs, a_unit, blk.mr, mc, kc, da, true);
                        // C block origin.
                        let cblk = g.elem(pc, (ic, crs), (jc, ccs));
                        let dest = Dest::Direct { rs: crs, cs: ccs, unit: c_unit, beta };
                        g.macro_kernel(ap, bp, cblk, mc, nc, kc, tile, dest);
                    });
                });
            });
        } else {
            // The scratch block covers `SCRATCH_BLOCKS` A blocks, so that
            // each packed B panel serves that many.
            let rows = SCRATCH_BLOCKS * blk.mc;
            let cs = self.stack(rows * blk.nc * 4);
            let rowsb = self.iconst(rows as i64);
            self.for_range(zero, n, blk.nc as i64, &mut |g, jc| {
                let rest = g.b.ins().isub(n, jc);
                let nc = g.min(ncb, rest);
                g.for_range(zero, m, rows as i64, &mut |g, is| {
                    let rest = g.b.ins().isub(m, is);
                    let ms = g.min(rowsb, rest);
                    g.for_range(zero, k, blk.kc as i64, &mut |g, kk| {
                        let rest = g.b.ins().isub(k, kk);
                        let kc = g.min(kcb, rest);
                        let beta = g.b.ins().icmp_imm_s(IntCC::NotEqual, kk, 0);
                        let src = g.elem(pb, (kk, brs), (jc, bcs));
                        g.pack(bp, src, bcs, brs, b_unit, blk.nr, nc, kc, db, false);
                        g.for_range(zero, ms, blk.mc as i64, &mut |g, ic| {
                            let rest = g.b.ins().isub(ms, ic);
                            let mc = g.min(mcb, rest);
                            let row = g.b.ins().iadd(is, ic);
                            let src = g.elem(pa, (row, ars), (kk, acs));
                            g.pack(ap, src, ars, acs, a_unit, blk.mr, mc, kc, da, true);
                            let o = g.muli(ic, (blk.nc * 4) as i64);
                            let sblk = g.at(cs, o);
                            g.macro_kernel(ap, bp, sblk, mc, nc, kc, tile, Dest::Scratch { beta });
                        });
                    });
                    let cblk = g.elem(pc, (is, crs), (jc, ccs));
                    g.store_scratch(cs, cblk, crs, ccs, c_unit, accnz, ms, nc);
                });
            });
        }
        self.b.ins().jump(ret, &[]);
        self.b.switch_to_block(ret);
        self.b.seal_block(ret);
        self.b.ins().return_(&[]);
    }

    /// Packs `valid` lanes (rows of A or columns of B) × `kc` k steps of the
    /// operand at `src` (lane stride `lane_s`, k stride `k_s`, in bytes;
    /// `unit` when the lane stride is one element) into panels of `r`
    /// lanes at `dst`: panel `q` holds lanes `q·r..q·r+r`, k-major, as f32
    /// (`kc·r` floats; with `splat`, each stored four times as an f32x4,
    /// `4·kc·r` floats), zero past `valid` lanes.
    #[allow(clippy::too_many_arguments)]
    fn pack(
        &mut self,
        dst: Value,
        src: Value,
        lane_s: Value,
        k_s: Value,
        unit: Value,
        r: usize,
        valid: Value,
        kc: Value,
        d: DType,
        splat: bool,
    ) {
        let zero = self.iconst(0);
        let rr = self.iconst(r as i64);
        let w = if splat { 4 } else { 1 };
        let kc4 = self.muli(kc, 4 * w);
        let k_unit = self.b.ins().icmp_imm_s(IntCC::Equal, k_s, d.size_bytes() as i64);
        self.for_range(zero, valid, r as i64, &mut |g, q| {
            let rest = g.b.ins().isub(valid, q);
            let lanes = g.min(rr, rest);
            let o = g.b.ins().imul(q, lane_s);
            let s = g.at(src, o);
            // `q` counts lanes: its panel starts `q·kc·w` floats in.
            let o = g.b.ins().imul(q, kc4);
            let dpanel = g.at(dst, o);
            let full = g.b.ins().icmp(IntCC::Equal, lanes, rr);
            g.if_else(
                full,
                &mut |g| {
                    // Contiguous lanes: vector loads across them; else
                    // contiguous k steps: lane by lane along k.
                    let strided = &mut |g: &mut Self| {
                        g.if_else(
                            k_unit,
                            &mut |g| g.pack_lanes(dpanel, s, lane_s, r, kc, d, splat),
                            &mut |g| g.pack_panel(dpanel, s, lane_s, k_s, r, None, false, kc, d, splat),
                        )
                    };
                    if splat {
                        strided(g)
                    } else {
                        g.if_else(unit, &mut |g| g.pack_panel(dpanel, s, lane_s, k_s, r, None, true, kc, d, false), strided)
                    }
                },
                &mut |g| g.pack_panel(dpanel, s, lane_s, k_s, r, Some(lanes), false, kc, d, splat),
            );
        });
    }

    /// One panel: `kc` k steps of `r` lanes. `edge = Some(lanes)` reads only
    /// the first `lanes` lanes (the rest become 0); `vector` reads groups of
    /// four consecutive lanes at once (lane stride one element); `splat`
    /// stores each element as an f32x4 of four copies.
    #[allow(clippy::too_many_arguments)]
    fn pack_panel(
        &mut self,
        dst: Value,
        s: Value,
        lane_s: Value,
        k_s: Value,
        r: usize,
        edge: Option<Value>,
        vector: bool,
        kc: Value,
        d: DType,
        splat: bool,
    ) {
        let w = if splat { 4 } else { 1 };
        // Per-lane source pointers (clamped to a valid lane on an edge
        // panel) and keep-masks.
        let mut lp = vec![];
        let mut keep = vec![];
        if !vector {
            for l in 0..r {
                let li = self.iconst(l as i64);
                let (li, kp) = match edge {
                    Some(lanes) => {
                        let last = self.addi(lanes, -1);
                        let kp = self.b.ins().icmp(IntCC::SignedLessThan, li, lanes);
                        (self.min(li, last), Some(kp))
                    }
                    None => (li, None),
                };
                let o = self.b.ins().imul(li, lane_s);
                lp.push(self.at(s, o));
                keep.push(kp);
            }
        }
        let zero = self.iconst(0);
        let dv = self.b.declare_var(self.ptr);
        self.b.def_var(dv, dst);
        // Counts k steps; the source offset advances by the (runtime) k
        // stride and the destination by one packed row.
        let ov = self.b.declare_var(types::I64);
        self.b.def_var(ov, zero);
        self.for_range(zero, kc, 1, &mut |g, _| {
            let off = g.b.use_var(ov);
            let dp = g.b.use_var(dv);
            if vector {
                let base = g.at(s, off);
                for grp in 0..r / 4 {
                    let v = g.load4(base, (grp * 4 * d.size_bytes()) as i32, d);
                    g.b.ins().store(packed(), v, dp, (grp * 16) as i32);
                }
                for l in (r / 4) * 4..r {
                    let v = g.load1(base, (l * d.size_bytes()) as i32, d);
                    g.b.ins().store(packed(), v, dp, (l * 4) as i32);
                }
            } else {
                for l in 0..r {
                    let a = g.at(lp[l], off);
                    let mut v = g.load1(a, 0, d);
                    if let Some(kp) = keep[l] {
                        let z = g.b.ins().f32const(0.0);
                        v = g.b.ins().select(kp, v, z);
                    }
                    if splat {
                        let v4 = g.b.ins().splat(types::F32X4, v);
                        g.b.ins().store(packed(), v4, dp, (l * 16) as i32);
                    } else {
                        g.b.ins().store(packed(), v, dp, (l * 4) as i32);
                    }
                }
            }
            let off = g.b.ins().iadd(off, k_s);
            g.b.def_var(ov, off);
            let dp = g.addi(dp, (r * 4 * w) as i64);
            g.b.def_var(dv, dp);
        });
    }

    /// A full panel of `r` lanes whose k steps are consecutive elements,
    /// one lane at a time: each lane's `kc` elements are read from a running
    /// pointer with constant offsets, four k steps per iteration, and
    /// stored `r` packed elements apart (as [`Gen::pack_panel`] lays them
    /// out). Reading across the lanes instead, as `pack_panel` does, keeps
    /// `r` lane pointers live through the loop, which spill.
    #[allow(clippy::too_many_arguments)]
    fn pack_lanes(&mut self, dst: Value, s: Value, lane_s: Value, r: usize, kc: Value, d: DType, splat: bool) {
        let (w, es) = (if splat { 4 } else { 1 }, d.size_bytes() as i64);
        let step = (r * 4 * w) as i64;
        let kc4 = self.b.ins().band_imm_s(kc, !3i64);
        let zero = self.iconst(0);
        for l in 0..r {
            let o = self.muli(lane_s, l as i64);
            let src = self.at(s, o);
            let dl = self.addi(dst, (l * 4 * w) as i64);
            let (sv, dv) = (self.b.declare_var(self.ptr), self.b.declare_var(self.ptr));
            self.b.def_var(sv, src);
            self.b.def_var(dv, dl);
            let copy = |g: &mut Self, n: i64| {
                let (sp, dp) = (g.b.use_var(sv), g.b.use_var(dv));
                for t in 0..n {
                    let v = g.load1(sp, (t * es) as i32, d);
                    let v = if splat { g.b.ins().splat(types::F32X4, v) } else { v };
                    g.b.ins().store(packed(), v, dp, (t * step) as i32);
                }
                let sp = g.addi(sp, n * es);
                g.b.def_var(sv, sp);
                let dp = g.addi(dp, n * step);
                g.b.def_var(dv, dp);
            };
            self.for_range(zero, kc4, 4, &mut |g, _| copy(g, 4));
            self.for_range(kc4, kc, 1, &mut |g, _| copy(g, 1));
        }
    }

    /// One element of storage dtype `d` at `p + off`, as f32.
    fn load1(&mut self, p: Value, off: i32, d: DType) -> Value {
        match d {
            DType::F32 => self.b.ins().load(types::F32, mem(), p, off),
            _ => {
                let h = self.b.ins().uload16(types::I32, mem(), p, off);
                self.half_to_f32(h, d)
            }
        }
    }

    /// Four consecutive elements of storage dtype `d` at `p + off`, as f32x4.
    fn load4(&mut self, p: Value, off: i32, d: DType) -> Value {
        match d {
            DType::F32 => self.b.ins().load(types::F32X4, mem(), p, off),
            _ => {
                let h = self.b.ins().uload16x4(mem(), p, off);
                self.half_to_f32(h, d)
            }
        }
    }

    /// `c ? x : y` lane-wise: `select` on scalars, `bitselect` on vectors
    /// (`c` from an `icmp` of the same shape).
    fn sel(&mut self, c: Value, x: Value, y: Value) -> Value {
        if self.b.func.dfg.value_type(x).is_vector() {
            self.b.ins().bitselect(c, x, y)
        } else {
            self.b.ins().select(c, x, y)
        }
    }

    /// An integer constant of `ty` (`I32` or `I32X4`).
    fn ci(&mut self, ty: Type, v: i32) -> Value {
        let s = self.b.ins().iconst(types::I32, v as i64);
        if ty.is_vector() {
            self.b.ins().splat(ty, s)
        } else {
            s
        }
    }

    fn bitcast(&mut self, ty: Type, x: Value) -> Value {
        self.b.ins().bitcast(ty, MemFlagsData::new().with_endianness(Endianness::Little), x)
    }

    /// bf16 / f16 bits (zero-extended into `I32` or `I32X4` lanes) to f32
    /// (`F32` / `F32X4`), exactly: subnormals, infinities and NaN included.
    fn half_to_f32(&mut self, h: Value, d: DType) -> Value {
        let ity = self.b.func.dfg.value_type(h);
        let fty = if ity.is_vector() { types::F32X4 } else { types::F32 };
        if d == DType::BF16 {
            let x = self.b.ins().ishl_imm_u(h, 16);
            return self.bitcast(fty, x);
        }
        // f16: shift exponent and mantissa into place and rebias; fix up
        // Inf/NaN (exponent all ones) and subnormals (renormalized by a
        // float subtraction that is exact).
        let c7fff = self.ci(ity, 0x7fff);
        let mag = self.b.ins().band(h, c7fff);
        let o = self.b.ins().ishl_imm_u(mag, 13);
        let cexp = self.ci(ity, 0x7c00 << 13);
        let e = self.b.ins().band(o, cexp);
        let bias = self.ci(ity, (127 - 15) << 23);
        let o = self.b.ins().iadd(o, bias);
        // Inf/NaN.
        let more = self.ci(ity, (128 - 16) << 23);
        let infnan = self.b.ins().iadd(o, more);
        // Subnormal: (o + 2^23) as float − 2^-14.
        let one = self.ci(ity, 1 << 23);
        let sub = self.b.ins().iadd(o, one);
        let subf = self.bitcast(fty, sub);
        let magic = self.b.ins().f32const(f32::from_bits(113 << 23));
        let magic = if ity.is_vector() { self.b.ins().splat(fty, magic) } else { magic };
        let subf = self.b.ins().fsub(subf, magic);
        let sub = self.bitcast(ity, subf);
        let is_infnan = self.b.ins().icmp(IntCC::Equal, e, cexp);
        let zero = self.ci(ity, 0);
        let is_sub = self.b.ins().icmp(IntCC::Equal, e, zero);
        let r = self.sel(is_infnan, infnan, o);
        let r = self.sel(is_sub, sub, r);
        let c8000 = self.ci(ity, 0x8000);
        let sign = self.b.ins().band(h, c8000);
        let sign = self.b.ins().ishl_imm_u(sign, 16);
        let r = self.b.ins().bor(r, sign);
        self.bitcast(fty, r)
    }

    /// f32 (`F32` / `F32X4`) to bf16 / f16 bits in the low 16 bits of
    /// `I32` / `I32X4` lanes, rounding to nearest even. NaN stays NaN
    /// (quieted), f16 overflow becomes infinity, f16 subnormals are exact.
    fn f32_to_half(&mut self, x: Value, d: DType) -> Value {
        let fty = self.b.func.dfg.value_type(x);
        let ity = if fty.is_vector() { types::I32X4 } else { types::I32 };
        let f = self.bitcast(ity, x);
        let abs_mask = self.ci(ity, 0x7fff_ffff);
        let abs = self.b.ins().band(f, abs_mask);
        let inf = self.ci(ity, 0x7f80_0000);
        let is_nan = self.b.ins().icmp(IntCC::SignedGreaterThan, abs, inf);
        if d == DType::BF16 {
            let hi = self.b.ins().ushr_imm_u(f, 16);
            let one = self.ci(ity, 1);
            let odd = self.b.ins().band(hi, one);
            let bias = self.ci(ity, 0x7fff);
            let r = self.b.ins().iadd(f, bias);
            let r = self.b.ins().iadd(r, odd);
            let r = self.b.ins().ushr_imm_u(r, 16);
            let q = self.ci(ity, 0x40);
            let qn = self.b.ins().bor(hi, q);
            return self.sel(is_nan, qn, r);
        }
        // f16 (after F. Giesen's float_to_half_fast3_rtne).
        let sign = self.b.ins().band_not(f, abs_mask);
        let sign = self.b.ins().ushr_imm_u(sign, 16);
        // Overflow → Inf, NaN → quiet NaN.
        let c7c00 = self.ci(ity, 0x7c00);
        let c7e00 = self.ci(ity, 0x7e00);
        let big = self.sel(is_nan, c7e00, c7c00);
        let f16max = self.ci(ity, (127 + 16) << 23);
        let is_big = self.b.ins().icmp(IntCC::SignedGreaterThanOrEqual, abs, f16max);
        // Result subnormal (|x| < 2^-14): |x| + 0.5 rounds at 2^-24.
        let absf = self.bitcast(fty, abs);
        let half = self.b.ins().f32const(0.5);
        let half = if fty.is_vector() { self.b.ins().splat(fty, half) } else { half };
        let t = self.b.ins().fadd(absf, half);
        let t = self.bitcast(ity, t);
        let half_bits = self.ci(ity, 0x3f00_0000);
        let small = self.b.ins().isub(t, half_bits);
        let min_normal = self.ci(ity, 113 << 23);
        let is_small = self.b.ins().icmp(IntCC::SignedLessThan, abs, min_normal);
        // Normal: rebias, round to nearest even at bit 13.
        let sh = self.b.ins().ushr_imm_u(abs, 13);
        let one = self.ci(ity, 1);
        let odd = self.b.ins().band(sh, one);
        let rebias = self.ci(ity, ((15 - 127) << 23) + 0xfff);
        let nrm = self.b.ins().iadd(abs, rebias);
        let nrm = self.b.ins().iadd(nrm, odd);
        let nrm = self.b.ins().ushr_imm_u(nrm, 13);
        let r = self.sel(is_small, small, nrm);
        let r = self.sel(is_big, big, r);
        self.b.ins().bor(r, sign)
    }

    /// Runs the micro-kernel over an `mc × nc` block: packed A at `ap`
    /// (panels of `mr` rows), packed B at `bp` (panels of `nr` columns),
    /// both `kc` steps deep; `cblk` is C's (or the scratch's) block origin.
    #[allow(clippy::too_many_arguments)]
    fn macro_kernel(
        &mut self,
        ap: Value,
        bp: Value,
        cblk: Value,
        mc: Value,
        nc: Value,
        kc: Value,
        tile: Value,
        dest: Dest,
    ) {
        let blk = self.blk;
        let zero = self.iconst(0);
        let (mrv, nrv) = (self.iconst(blk.mr as i64), self.iconst(blk.nr as i64));
        let kc4 = self.muli(kc, 4);
        let kc16 = self.muli(kc, 16);
        self.for_range(zero, nc, blk.nr as i64, &mut |g, jr| {
            let rest = g.b.ins().isub(nc, jr);
            let nr = g.min(nrv, rest);
            let o = g.b.ins().imul(jr, kc4);
            let bpanel = g.at(bp, o);
            let ccol = match dest {
                Dest::Direct { cs, .. } => g.b.ins().imul(jr, cs),
                Dest::Scratch { .. } => g.muli(jr, 4),
            };
            let ccol = g.at(cblk, ccol);
            g.for_range(zero, mc, blk.mr as i64, &mut |g, ir| {
                let rest = g.b.ins().isub(mc, ir);
                let mr = g.min(mrv, rest);
                let o = g.b.ins().imul(ir, kc16);
                let apanel = g.at(ap, o);
                let crow = match dest {
                    Dest::Direct { rs, .. } => g.b.ins().imul(ir, rs),
                    Dest::Scratch { .. } => g.muli(ir, (blk.nc * 4) as i64),
                };
                let ctile = g.at(ccol, crow);
                g.write_tile(apanel, bpanel, kc, ctile, mr, nr, tile, dest);
            });
        });
    }

    /// The register-blocked inner loop: returns the `mr × nr/4` f32x4
    /// accumulators (row-major) of `Σ_p A[:, p] ⊗ B[p, :]` over the `kc`
    /// packed steps (`kc ≥ 1`; A packed pre-broadcast, B plain).
    ///
    /// One k step loads `nr/4` B vectors and the `mr` broadcast A values
    /// and updates every accumulator. The CLIF is shaped for what Cranelift
    /// makes of it:
    ///
    /// - x86's `vfmadd213`/`vfmadd132` (the forms Cranelift emits) overwrite
    ///   a multiplicand, never the addend, so an FMA's result lands in a
    ///   new register and the loop's back edge needs one register move per
    ///   accumulator. Separate `vmulps` + `vaddps` (three-operand AVX) keep
    ///   each accumulator in place; with a pre-broadcast A vector shared by
    ///   the `nr/4` products of its row, a step is 8 loads and 24 FP
    ///   operations, which cores with two FP multiply and two FP add pipes
    ///   (AMD Zen) run at nearly the FMA rate (≈ 90 % of an FMA-only loop on
    ///   Zen 5). That is the `fused = false` form, also used without FMA.
    /// - `fused = true` (other CPUs with FMA) issues a fresh A load per FMA
    ///   (the overwritten operand), from distinct address expressions (`pa`
    ///   or the next iteration's `pa2`, offsets adjusted) so the mid-end
    ///   does not merge them.
    /// - The panel loads are pure (see [`panel_load`]) so the mid-end places
    ///   each next to its use; pinned in program order, all of them would
    ///   come first and their values would spill. The loop is top-tested,
    ///   so the back edge is the only use of each new accumulator.
    /// - No unrolling: Cranelift merges straight-line blocks and places pure
    ///   instructions by use, so an unrolled body computes each
    ///   accumulator's chain through all steps at once, keeping every
    ///   step's B vectors live (more than 16 xmm registers).
    fn micro(&mut self, apanel: Value, bpanel: Value, kc: Value) -> Vec<Value> {
        let blk = self.blk;
        let (mr, nv) = (blk.mr, blk.nr / 4);
        let nacc = mr * nv;
        let z = self.b.ins().f32const(0.0);
        let zv = self.b.ins().splat(types::F32X4, z);
        let bytes = self.b.ins().imul_imm_s(kc, (blk.nr * 4) as i64);
        let bend = self.at(bpanel, bytes);
        let (head, body, done) = (self.b.create_block(), self.b.create_block(), self.b.create_block());
        let pa = self.b.append_block_param(head, self.ptr);
        let pb = self.b.append_block_param(head, self.ptr);
        let accs: Vec<Value> = (0..nacc).map(|_| self.b.append_block_param(head, types::F32X4)).collect();
        let args: Vec<_> = [apanel, bpanel].into_iter().chain(std::iter::repeat_n(zv, nacc)).map(Into::into).collect();
        self.b.ins().jump(head, &args);
        self.b.switch_to_block(head);
        let more = self.b.ins().icmp(IntCC::UnsignedLessThan, pb, bend);
        self.b.ins().brif(more, body, &[], done, &[]);
        self.b.switch_to_block(body);
        self.b.seal_block(body);
        // One packed A step: `mr` f32x4 (pre-broadcast).
        let astep = (mr * 16) as i64;
        let pa2 = self.addi(pa, astep);
        let pb2 = self.addi(pb, (blk.nr * 4) as i64);
        let bv: Vec<Value> =
            (0..nv).map(|j| self.b.ins().load(types::F32X4, panel_load(), pb, (16 * j) as i32)).collect();
        let mut cur = accs.clone();
        for i in 0..mr {
            let at = (16 * i) as i64;
            let shared = (!self.fused).then(|| self.b.ins().load(types::F32X4, panel_load(), pa, at as i32));
            for j in 0..nv {
                let c = &mut cur[i * nv + j];
                *c = match shared {
                    Some(av) => {
                        let p = self.b.ins().fmul(av, bv[j]);
                        self.b.ins().fadd(*c, p)
                    }
                    None => {
                        // Distinct address expressions for the `nv` loads
                        // of A[i, p]: `pa`, `pa2`, then `pa + 4096·j`
                        // (folded into the addressing mode).
                        let (base, off) = match j {
                            0 => (pa, at),
                            1 => (pa2, at - astep),
                            _ => (self.addi(pa, 4096 * j as i64), at - 4096 * j as i64),
                        };
                        let av = self.b.ins().load(types::F32X4, panel_load(), base, off as i32);
                        self.b.ins().fma(av, bv[j], *c)
                    }
                };
            }
        }
        let next: Vec<_> = [pa2, pb2].into_iter().chain(cur.iter().copied()).map(Into::into).collect();
        self.b.ins().jump(head, &next);
        self.b.seal_block(head);
        self.b.switch_to_block(done);
        self.b.seal_block(done);
        accs
    }

    /// Stores (`beta` false) or adds (`beta` true) the full tile of
    /// accumulators to the f32 rows at `ctile + i·rs` (`rs` in bytes).
    fn store_tile(&mut self, accs: &[Value], ctile: Value, rs: Value, beta: Value) {
        let blk = self.blk;
        let nv = blk.nr / 4;
        let accs = accs.to_vec();
        let emit = |g: &mut Self, add: bool| {
            let mut row = ctile;
            for i in 0..blk.mr {
                for j in 0..nv {
                    let mut v = accs[i * nv + j];
                    if add {
                        let old = g.b.ins().load(types::F32X4, mem(), row, (16 * j) as i32);
                        v = g.b.ins().fadd(old, v);
                    }
                    g.b.ins().store(mem(), v, row, (16 * j) as i32);
                }
                if i + 1 < blk.mr {
                    row = g.at(row, rs);
                }
            }
        };
        self.if_else(beta, &mut |g| emit(g, true), &mut |g| emit(g, false));
    }

    /// Runs the micro-tile function on packed panels and writes (or adds,
    /// per `dest`'s beta) the valid `mr × nr` part of the tile at `ctile`:
    /// directly when the tile is full and C's columns are contiguous,
    /// otherwise through the stack `tile` and scalar read-modify-writes.
    #[allow(clippy::too_many_arguments)]
    fn write_tile(
        &mut self,
        apanel: Value,
        bpanel: Value,
        kc: Value,
        ctile: Value,
        mr: Value,
        nr: Value,
        tile: Value,
        dest: Dest,
    ) {
        let blk = self.blk;
        let f = self.tile.expect("the GEMM body calls the tile function");
        let call = |g: &mut Self, c: Value, rs: Value, beta: Value| {
            let beta = g.b.ins().uextend(types::I64, beta);
            g.b.ins().call(f, &[apanel, bpanel, kc, c, rs, beta]);
        };
        match dest {
            Dest::Scratch { beta } => {
                let rs = self.iconst((blk.nc * 4) as i64);
                call(self, ctile, rs, beta);
            }
            Dest::Direct { rs, cs, unit, beta } => {
                let mrf = self.b.ins().icmp_imm_s(IntCC::Equal, mr, blk.mr as i64);
                let nrf = self.b.ins().icmp_imm_s(IntCC::Equal, nr, blk.nr as i64);
                let full = self.b.ins().band(mrf, nrf);
                let fast = self.b.ins().band(full, unit);
                self.if_else(fast, &mut |g| call(g, ctile, rs, beta), &mut |g| {
                    // Edge tile or strided C: the tile goes to the
                    // stack, then a scalar read-modify-write of the
                    // valid part.
                    let trs = g.iconst((blk.nr * 4) as i64);
                    let no = g.b.ins().iconst(types::I8, 0);
                    call(g, tile, trs, no);
                    let zero = g.iconst(0);
                    g.for_range(zero, mr, 1, &mut |g, i| {
                        let o = g.b.ins().imul(i, rs);
                        let crow = g.at(ctile, o);
                        let o = g.muli(i, (blk.nr * 4) as i64);
                        let trow = g.at(tile, o);
                        g.for_range(zero, nr, 1, &mut |g, j| {
                            let o = g.muli(j, 4);
                            let t = g.at(trow, o);
                            let v = g.b.ins().load(types::F32, packed(), t, 0);
                            let o = g.b.ins().imul(j, cs);
                            let c = g.at(crow, o);
                            let old = g.b.ins().load(types::F32, mem(), c, 0);
                            let sum = g.b.ins().fadd(old, v);
                            let r = g.b.ins().select(beta, sum, v);
                            g.b.ins().store(mem(), r, c, 0);
                        });
                    });
                });
            }
        }
    }

    /// Rounds the f32 scratch block (`mc × nc` of it, row stride `NC` floats) into
    /// a bf16/f16 `C` block at `cblk`, adding C's old values when
    /// `accumulate`.
    #[allow(clippy::too_many_arguments)]
    fn store_scratch(
        &mut self,
        cs: Value,
        cblk: Value,
        crs: Value,
        ccs: Value,
        c_unit: Value,
        accumulate: Value,
        mc: Value,
        nc: Value,
    ) {
        let dc = self.dt[2];
        let blk = self.blk;
        let zero = self.iconst(0);
        self.for_range(zero, mc, 1, &mut |g, i| {
            let o = g.b.ins().imul(i, crs);
            let crow = g.at(cblk, o);
            let o = g.muli(i, (blk.nc * 4) as i64);
            let srow = g.at(cs, o);
            // Groups of four when C's columns are contiguous.
            let nc4 = g.b.ins().band_imm_s(nc, !3i64);
            let start = g.b.ins().select(c_unit, nc4, zero);
            g.for_range(zero, start, 4, &mut |g, j| {
                let o = g.muli(j, 4);
                let sp = g.at(srow, o);
                let v = g.b.ins().load(types::F32X4, packed(), sp, 0);
                let o = g.muli(j, 2);
                let cp = g.at(crow, o);
                let v = {
                    let mut out = v;
                    g.if_else_value(accumulate, &mut out, &mut |g, v| {
                        let old = g.load4(cp, 0, dc);
                        g.b.ins().fadd(old, v)
                    });
                    out
                };
                let h = g.f32_to_half(v, dc);
                let h16 = g.b.ins().unarrow(h, h);
                let q = g.bitcast(types::I64X2, h16);
                let q = g.b.ins().extractlane(q, 0);
                g.b.ins().store(mem(), q, cp, 0);
            });
            g.for_range(start, nc, 1, &mut |g, j| {
                let o = g.muli(j, 4);
                let sp = g.at(srow, o);
                let v = g.b.ins().load(types::F32, packed(), sp, 0);
                let o = g.b.ins().imul(j, ccs);
                let cp = g.at(crow, o);
                let old = g.load1(cp, 0, dc);
                let sum = g.b.ins().fadd(old, v);
                let v = g.b.ins().select(accumulate, sum, v);
                let h = g.f32_to_half(v, dc);
                g.b.ins().istore16(mem(), h, cp, 0);
            });
        });
    }

    /// `*v = c ? f(*v) : *v`, with `f` emitted on a branch (so its loads
    /// only run when `c`).
    fn if_else_value(&mut self, c: Value, v: &mut Value, f: &mut dyn FnMut(&mut Self, Value) -> Value) {
        let ty = self.b.func.dfg.value_type(*v);
        let (bt, join) = (self.b.create_block(), self.b.create_block());
        let out = self.b.append_block_param(join, ty);
        let x = *v;
        self.b.ins().brif(c, bt, &[], join, &[x.into()]);
        self.b.switch_to_block(bt);
        self.b.seal_block(bt);
        let y = f(self, x);
        self.b.ins().jump(join, &[y.into()]);
        self.b.switch_to_block(join);
        self.b.seal_block(join);
        *v = out;
    }
}
