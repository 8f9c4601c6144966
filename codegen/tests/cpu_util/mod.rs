//! Shared helpers of the CPU backend tests: kernel and expression
//! builders, typed buffers, and an independent f16/bf16 oracle.
#![allow(dead_code)]

use kiln_codegen::cpu::{compile_with, Options};
use kiln_ir::kernel::{Access, Arg, Expr, Kernel, Mem, RedOp, Scratch, Stmt, Var};
use kiln_ir::{BinaryOp, CmpOp, DType, UnaryOp};

// ---------------------------------------------------------------- exprs

/// An f32 constant.
pub fn f(v: f64) -> Expr {
    Expr::Const(v, DType::F32)
}
/// An i64 constant.
pub fn i(v: i64) -> Expr {
    Expr::Const(v as f64, DType::I64)
}
/// A constant of any dtype.
pub fn k(v: f64, d: DType) -> Expr {
    Expr::Const(v, d)
}
/// A variable.
pub fn v(x: u32) -> Expr {
    Expr::Var(Var(x))
}
/// The tile index.
pub fn tile() -> Expr {
    Expr::Tile
}
/// `arg[a][idx]`.
pub fn ld(a: u32, idx: Expr) -> Expr {
    Expr::Load(Mem::Arg(a), Box::new(idx))
}
/// `scratch[s][idx]`.
pub fn lds(s: u32, idx: Expr) -> Expr {
    Expr::Load(Mem::Scratch(s), Box::new(idx))
}
pub fn un(op: UnaryOp, x: Expr) -> Expr {
    Expr::Unary(op, Box::new(x))
}
pub fn bin(op: BinaryOp, a: Expr, b: Expr) -> Expr {
    Expr::Binary(op, Box::new(a), Box::new(b))
}
pub fn add(a: Expr, b: Expr) -> Expr {
    bin(BinaryOp::Add, a, b)
}
pub fn sub(a: Expr, b: Expr) -> Expr {
    bin(BinaryOp::Sub, a, b)
}
pub fn mul(a: Expr, b: Expr) -> Expr {
    bin(BinaryOp::Mul, a, b)
}
pub fn div(a: Expr, b: Expr) -> Expr {
    bin(BinaryOp::Div, a, b)
}
pub fn rem(a: Expr, b: Expr) -> Expr {
    Expr::Rem(Box::new(a), Box::new(b))
}
pub fn cmp(op: CmpOp, a: Expr, b: Expr) -> Expr {
    Expr::Cmp(op, Box::new(a), Box::new(b))
}
pub fn sel(c: Expr, a: Expr, b: Expr) -> Expr {
    Expr::Select(Box::new(c), Box::new(a), Box::new(b))
}
pub fn cast(d: DType, x: Expr) -> Expr {
    Expr::Cast(d, Box::new(x))
}

// ---------------------------------------------------------------- stmts

pub fn store(a: u32, idx: Expr, value: Expr) -> Stmt {
    Stmt::Store { mem: Mem::Arg(a), index: idx, value }
}
pub fn stores(s: u32, idx: Expr, value: Expr) -> Stmt {
    Stmt::Store { mem: Mem::Scratch(s), index: idx, value }
}
pub fn lp(var: u32, extent: u64, vector: bool, body: Vec<Stmt>) -> Stmt {
    Stmt::Loop { var: Var(var), extent, vector, body }
}
pub fn let_(var: u32, value: Expr) -> Stmt {
    Stmt::Let { var: Var(var), value }
}
pub fn reduce(var: u32, op: RedOp, index: u32, extent: u64, vector: bool, value: Expr) -> Stmt {
    Stmt::Reduce { var: Var(var), op, index: Var(index), extent, vector, value }
}

/// A kernel over arguments `(dtype, len)`; access is ReadWrite so any
/// argument may be loaded and stored.
pub fn kernel(args: &[(DType, u64)], grid: u64, body: Vec<Stmt>) -> Kernel {
    Kernel {
        name: "test".into(),
        args: args.iter().map(|&(dtype, len)| Arg { dtype, len, access: Access::ReadWrite }).collect(),
        scratch: vec![],
        grid,
        body,
    }
}

/// The same kernel with scratch arrays.
pub fn with_scratch(mut k: Kernel, s: &[(DType, u64)]) -> Kernel {
    k.scratch = s.iter().map(|&(dtype, len)| Scratch { dtype, len }).collect();
    k
}

/// Flips every `vector` flag.
pub fn set_vector(body: &mut [Stmt], on: bool) {
    for s in body {
        match s {
            Stmt::Loop { vector, body, .. } => {
                *vector = on;
                set_vector(body, on);
            }
            Stmt::Reduce { vector, .. } => *vector = on,
            _ => {}
        }
    }
}

// ---------------------------------------------------------------- buffers

/// Guard words around every buffer: stores outside `[0, len)` show up.
const GUARD: usize = 4;
const CANARY: u64 = 0xdead_beef_cafe_f00d;

/// A typed buffer with canaries on both sides.
pub struct Buf {
    pub dtype: DType,
    pub len: usize,
    words: Vec<u64>,
}

impl Buf {
    /// A buffer holding `vals` (converted to the dtype as a store would).
    pub fn new(dtype: DType, vals: &[f64]) -> Buf {
        let bytes = vals.len() * dtype.size_bytes();
        let mut words = vec![CANARY; 2 * GUARD + bytes.div_ceil(8)];
        {
            let b = bytemuck_mut(&mut words[GUARD..]);
            for (i, &x) in vals.iter().enumerate() {
                encode(dtype, x, &mut b[i * dtype.size_bytes()..]);
            }
        }
        Buf { dtype, len: vals.len(), words }
    }

    /// `len` zeros.
    pub fn zeros(dtype: DType, len: usize) -> Buf {
        Buf::new(dtype, &vec![0.0; len])
    }

    /// Raw f32s (bit-exact, NaN payloads included).
    pub fn from_f32(vals: &[f32]) -> Buf {
        let mut b = Buf::zeros(DType::F32, vals.len());
        let bytes = bytemuck_mut(&mut b.words[GUARD..]);
        for (i, x) in vals.iter().enumerate() {
            bytes[4 * i..4 * i + 4].copy_from_slice(&x.to_le_bytes());
        }
        b
    }

    /// Raw 16-bit patterns (for f16/bf16).
    pub fn from_u16(dtype: DType, vals: &[u16]) -> Buf {
        let mut b = Buf::zeros(dtype, vals.len());
        let bytes = bytemuck_mut(&mut b.words[GUARD..]);
        for (i, x) in vals.iter().enumerate() {
            bytes[2 * i..2 * i + 2].copy_from_slice(&x.to_le_bytes());
        }
        b
    }

    /// Pointer to element 0, for calling kernels directly.
    pub fn as_ptr(&mut self) -> *mut u8 {
        self.words[GUARD..].as_mut_ptr() as *mut u8
    }

    /// Writes raw i64 values (exact beyond 2^53).
    pub fn set_i64(&mut self, vals: &[i64]) {
        assert_eq!(self.dtype, DType::I64);
        let bytes = bytemuck_mut(&mut self.words[GUARD..]);
        for (i, x) in vals.iter().enumerate() {
            bytes[8 * i..8 * i + 8].copy_from_slice(&x.to_le_bytes());
        }
    }

    /// The values as raw i64s.
    pub fn i64s(&self) -> Vec<i64> {
        assert_eq!(self.dtype, DType::I64);
        (0..self.len).map(|i| i64::from_le_bytes(self.bytes()[8 * i..8 * i + 8].try_into().unwrap())).collect()
    }

    fn bytes(&self) -> &[u8] {
        let n = self.len * self.dtype.size_bytes();
        &bytemuck(&self.words[GUARD..])[..n]
    }

    /// The values as f64 (half floats decoded exactly, bool 0/1).
    pub fn get(&self) -> Vec<f64> {
        let s = self.dtype.size_bytes();
        (0..self.len).map(|i| decode(self.dtype, &self.bytes()[i * s..])).collect()
    }

    /// The values as raw f32s.
    pub fn f32s(&self) -> Vec<f32> {
        assert_eq!(self.dtype, DType::F32);
        (0..self.len).map(|i| f32::from_le_bytes(self.bytes()[4 * i..4 * i + 4].try_into().unwrap())).collect()
    }

    /// The values as raw 16-bit patterns.
    pub fn u16s(&self) -> Vec<u16> {
        (0..self.len).map(|i| u16::from_le_bytes(self.bytes()[2 * i..2 * i + 2].try_into().unwrap())).collect()
    }

    /// Panics if anything was written outside the buffer.
    pub fn check_guards(&self) {
        let n = self.len * self.dtype.size_bytes();
        let b = bytemuck(&self.words);
        let end = GUARD * 8 + n;
        assert!(self.words[..GUARD].iter().all(|&w| w == CANARY), "store before element 0");
        // Bytes past the data (also in its last word) keep the canary's.
        let tail_ok = b[end..].iter().enumerate().all(|(j, &x)| x == CANARY.to_le_bytes()[(end + j) % 8]);
        assert!(tail_ok, "store past the last element");
    }
}

fn bytemuck(w: &[u64]) -> &[u8] {
    // SAFETY: u64 has no padding and u8 has alignment 1.
    unsafe { std::slice::from_raw_parts(w.as_ptr() as *const u8, w.len() * 8) }
}

fn bytemuck_mut(w: &mut [u64]) -> &mut [u8] {
    // SAFETY: as above; the borrow is exclusive.
    unsafe { std::slice::from_raw_parts_mut(w.as_mut_ptr() as *mut u8, w.len() * 8) }
}

fn encode(d: DType, x: f64, out: &mut [u8]) {
    match d {
        DType::F32 => out[..4].copy_from_slice(&(x as f32).to_le_bytes()),
        DType::F16 => out[..2].copy_from_slice(&f16_bits(x).to_le_bytes()),
        DType::BF16 => out[..2].copy_from_slice(&bf16_bits(x).to_le_bytes()),
        DType::I32 => out[..4].copy_from_slice(&((x as i64) as i32).to_le_bytes()),
        DType::I64 => out[..8].copy_from_slice(&(x as i64).to_le_bytes()),
        DType::Bool => out[0] = (x != 0.0) as u8,
    }
}

fn decode(d: DType, b: &[u8]) -> f64 {
    match d {
        DType::F32 => f32::from_le_bytes(b[..4].try_into().unwrap()) as f64,
        DType::F16 => f16_value(u16::from_le_bytes(b[..2].try_into().unwrap())),
        DType::BF16 => bf16_value(u16::from_le_bytes(b[..2].try_into().unwrap())),
        DType::I32 => i32::from_le_bytes(b[..4].try_into().unwrap()) as f64,
        DType::I64 => i64::from_le_bytes(b[..8].try_into().unwrap()) as f64,
        DType::Bool => b[0] as f64,
    }
}

// ---------------------------------------------------------------- half floats
//
// Written from the definitions (value = sign * mantissa * 2^exp), not with
// the bit tricks the backend uses.

/// The value of f16 bits.
pub fn f16_value(h: u16) -> f64 {
    let s = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let e = ((h >> 10) & 0x1f) as i32;
    let m = (h & 0x3ff) as f64;
    match e {
        0 => s * m * 2f64.powi(-24),
        31 if m == 0.0 => s * f64::INFINITY,
        31 => f64::NAN,
        _ => s * (1024.0 + m) * 2f64.powi(e - 25),
    }
}

/// The value of bf16 bits.
pub fn bf16_value(h: u16) -> f64 {
    f32::from_bits((h as u32) << 16) as f64
}

/// The nearest of the two candidate patterns `lo` and `lo + 1` (same
/// sign, increasing magnitude), ties to the even pattern.
fn nearest(x: f64, lo: u16, value: fn(u16) -> f64) -> u16 {
    let (a, b) = (value(lo), value(lo + 1));
    let (da, db) = ((x - a).abs(), (x - b).abs());
    if da < db || (da == db && lo.is_multiple_of(2)) {
        lo
    } else {
        lo + 1
    }
}

/// Bits of `x` rounded to nearest even among the positive finite
/// patterns `0..inf` (decoded by `value`), by search from the definition;
/// past the largest finite value plus half its spacing, infinity.
fn round_bits(x: f64, inf: u16, value: fn(u16) -> f64) -> u16 {
    let sign = if x.is_sign_negative() { 0x8000 } else { 0 };
    let a = x.abs();
    let (max, below) = (value(inf - 1), value(inf - 2));
    // A tie at the top rounds to the even pattern, which is infinity.
    if a >= max + (max - below) / 2.0 {
        return sign | inf;
    }
    let (mut lo, mut hi) = (0u16, inf - 1);
    if a >= max {
        return sign | (inf - 1);
    }
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if value(mid) <= a {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    sign | nearest(a, lo, value)
}

/// f16 bits of `x`, rounded to nearest even (from f64: exact for f32 inputs).
pub fn f16_bits(x: f64) -> u16 {
    if x.is_nan() {
        return 0x7e00;
    }
    round_bits(x, 0x7c00, f16_value)
}

/// bf16 bits of `x` (rounded from f64 straight, nearest even).
pub fn bf16_bits(x: f64) -> u16 {
    if x.is_nan() {
        return 0x7fc0;
    }
    round_bits(x, 0x7f80, bf16_value)
}

/// `x` rounded to f16 (as a value).
pub fn round_f16(x: f64) -> f64 {
    f16_value(f16_bits(x))
}

/// `x` rounded to bf16 (as a value).
pub fn round_bf16(x: f64) -> f64 {
    bf16_value(bf16_bits(x))
}

// ---------------------------------------------------------------- running

/// Compiles `k` with `opts` and runs tiles `tiles` on `bufs` (one per
/// argument, in order); checks the guards afterwards.
pub fn run_opts(k: &Kernel, opts: &Options, bufs: &mut [&mut Buf], tiles: std::ops::Range<u64>) {
    assert_eq!(k.args.len(), bufs.len(), "one buffer per argument");
    for (a, b) in k.args.iter().zip(bufs.iter()) {
        assert_eq!(a.dtype, b.dtype);
        assert!(b.len as u64 >= a.len);
    }
    let c = compile_with(std::slice::from_ref(k), opts).expect("compiles");
    let ptrs: Vec<*mut u8> = bufs.iter_mut().map(|b| b.as_ptr()).collect();
    // SAFETY: every buffer is at least as long as its argument, and the
    // test kernels index inside their arguments.
    unsafe { (c.get(kiln_ir::kernel::KernelId(0)))(ptrs.as_ptr(), tiles.start, tiles.end) };
    for b in bufs.iter() {
        b.check_guards();
    }
}

/// Runs every tile with default options.
pub fn run(k: &Kernel, bufs: &mut [&mut Buf]) {
    run_opts(k, &Options::default(), bufs, 0..k.grid);
}

/// Every combination of options worth testing: default, no FMA, scalar.
pub fn all_options() -> Vec<Options> {
    vec![
        Options::default(),
        Options { fma: false, ..Options::default() },
        Options { vectorize: false, ..Options::default() },
    ]
}

/// Units in the last place of f32 between `got` and the exact `want`.
pub fn ulps(got: f32, want: f64) -> f64 {
    if got.is_nan() && want.is_nan() {
        return 0.0;
    }
    if got as f64 == want {
        return 0.0;
    }
    // Past f32's range the right answer is the overflowed one.
    let w32 = want as f32;
    if w32.is_infinite() {
        return if got == w32 { 0.0 } else { f64::INFINITY };
    }
    if got.is_infinite() || want.is_infinite() || got.is_nan() || want.is_nan() {
        return f64::INFINITY;
    }
    // ulp of the f32 nearest `want` (subnormal spacing at the bottom).
    let w = want.abs().max(f32::MIN_POSITIVE as f64);
    let e = w.log2().floor();
    let ulp = 2f64.powf(e - 23.0);
    (got as f64 - want).abs() / ulp
}
