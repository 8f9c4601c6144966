//! The Cranelift GEMM against an f64 reference: awkward sizes, transposed
//! and strided views, accumulation, k = 0, bf16/f16 operands and results,
//! concurrency, and the no-FMA code path.

use cranelift_jit::JITModule;
use kiln_codegen::cpu::gemm::{declare_gemm, declare_gemm_with, Blocking};
use kiln_ir::DType;
use proptest::prelude::*;

type GemmFn = unsafe extern "C" fn(*const u8, i64, i64, *const u8, i64, i64, *mut u8, i64, i64, i64, i64, i64, i64);

/// The backend's host JIT module; `fma: false` turns the x86 FMA feature off.
fn module(fma: bool) -> JITModule {
    kiln_codegen::cpu::host_module(&kiln_codegen::cpu::Options { fma, ..Default::default() }).expect("host module")
}

/// A compiled GEMM for one dtype triple (keeps its module alive).
struct Gemm {
    f: GemmFn,
    _m: JITModule,
}

fn compile(a: DType, b: DType, c: DType, fma: bool) -> Gemm {
    let mut m = module(fma);
    let id = declare_gemm(&mut m, a, b, c).unwrap();
    m.finalize_definitions().unwrap();
    let p = m.get_finalized_function(id);
    // SAFETY: the GEMM's signature is the C ABI of `GemmFn`.
    Gemm { f: unsafe { std::mem::transmute::<*const u8, GemmFn>(p) }, _m: m }
}

/// A GEMM with an explicit blocking (and micro-kernel arithmetic).
fn compile_with(a: DType, b: DType, c: DType, blk: Blocking) -> Gemm {
    let mut m = module(true);
    let id = declare_gemm_with(&mut m, a, b, c, blk).unwrap();
    m.finalize_definitions().unwrap();
    let p = m.get_finalized_function(id);
    // SAFETY: the GEMM's signature is the C ABI of `GemmFn`.
    Gemm { f: unsafe { std::mem::transmute::<*const u8, GemmFn>(p) }, _m: m }
}

// ---- storage formats, decoded exactly (independently of the JIT code) ----

fn f16_to_f64(h: u16) -> f64 {
    let s = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let e = ((h >> 10) & 31) as i32;
    let m = (h & 1023) as f64;
    s * match e {
        0 => m * 2f64.powi(-24),
        31 if m == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        _ => (1024.0 + m) * 2f64.powi(e - 25),
    }
}

fn bf16_to_f64(h: u16) -> f64 {
    f32::from_bits((h as u32) << 16) as f64
}

/// `x` rounded to nearest even in a binary format with `mant` fraction
/// bits, minimum normal exponent `emin` and largest finite `max`.
fn round_format(x: f64, mant: i32, emin: i32, max: f64) -> f64 {
    if x.is_nan() || x == 0.0 || x.is_infinite() {
        return x;
    }
    let e = (x.abs().log2().floor() as i32).max(emin);
    // Guard against log2 rounding at exact powers of two.
    let e = if 2f64.powi(e) > x.abs() && e > emin { e - 1 } else { e };
    let ulp = 2f64.powi(e - mant);
    let r = (x / ulp).round_ties_even() * ulp;
    // Overflow: anything that rounds past max is infinite.
    if r.abs() > max {
        x.signum() * f64::INFINITY
    } else {
        r
    }
}

fn round_to(d: DType, x: f64) -> f64 {
    match d {
        DType::F32 => x as f32 as f64,
        DType::F16 => round_format(x, 10, -14, 65504.0),
        DType::BF16 => round_format(x, 7, -126, f32::from_bits(0x7f7f_0000) as f64),
        _ => unreachable!(),
    }
}

/// A matrix view into a byte buffer: element (r, c) at element index
/// `off + r·rs + c·cs`.
#[derive(Clone)]
struct Mat {
    d: DType,
    buf: Vec<u8>,
    off: i64,
    rs: i64,
    cs: i64,
    rows: usize,
    cols: usize,
}

/// How a test lays a matrix out.
#[derive(Clone, Copy, Debug)]
enum Layout {
    /// Row-major, rows padded by `pad` elements (a sub-matrix view when
    /// `pad > 0`).
    Row { pad: usize },
    /// Column-major (a transposed operand), columns padded by `pad`.
    Col { pad: usize },
    /// Row-major with the rows in reverse order (negative row stride).
    Flipped,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
}

impl Mat {
    fn size(&self) -> usize {
        self.d.size_bytes()
    }

    fn new(d: DType, rows: usize, cols: usize, layout: Layout) -> Mat {
        let (off, rs, cs, len) = match layout {
            Layout::Row { pad } => (pad as i64, (cols + pad) as i64, 1, (rows + 1) * (cols + pad) + pad),
            Layout::Col { pad } => (pad as i64, 1, (rows + pad) as i64, (cols + 1) * (rows + pad) + pad),
            Layout::Flipped => ((rows.max(1) - 1) as i64 * cols as i64, -(cols as i64), 1, rows * cols),
        };
        let size = d.size_bytes();
        // A sentinel pattern everywhere (checked untouched around C).
        Mat { d, buf: vec![0x5a; len.max(1) * size], off, rs, cs, rows, cols }
    }

    fn index(&self, r: usize, c: usize) -> usize {
        (self.off + r as i64 * self.rs + c as i64 * self.cs) as usize * self.size()
    }

    fn get(&self, r: usize, c: usize) -> f64 {
        let i = self.index(r, c);
        let b = &self.buf[i..i + self.size()];
        match self.d {
            DType::F32 => f32::from_le_bytes(b.try_into().unwrap()) as f64,
            DType::F16 => f16_to_f64(u16::from_le_bytes(b.try_into().unwrap())),
            DType::BF16 => bf16_to_f64(u16::from_le_bytes(b.try_into().unwrap())),
            _ => unreachable!(),
        }
    }

    fn set_bits(&mut self, r: usize, c: usize, bits: u32) {
        let i = self.index(r, c);
        let s = self.size();
        self.buf[i..i + s].copy_from_slice(&bits.to_le_bytes()[..s]);
    }

    /// Random values: uniform in [-1, 1) for f32; random bit patterns of
    /// moderate exponent (and some subnormal f16s) for half types.
    fn fill(&mut self, rng: &mut Rng) {
        for r in 0..self.rows {
            for c in 0..self.cols {
                let x = rng.next();
                let bits = match self.d {
                    DType::F32 => (rng.unit() as f32).to_bits(),
                    DType::BF16 => {
                        let e = 120 + (x % 10) as u32;
                        ((x >> 8) as u32 & 0x8000) | (e << 7) | ((x >> 20) as u32 & 0x7f)
                    }
                    DType::F16 => {
                        let e = if x.is_multiple_of(16) { 0 } else { 10 + (x % 9) as u32 };
                        ((x >> 8) as u32 & 0x8000) | (e << 10) | ((x >> 20) as u32 & 0x3ff)
                    }
                    _ => unreachable!(),
                };
                self.set_bits(r, c, bits);
            }
        }
    }

    fn ptr(&self) -> *const u8 {
        // The view's element (0, 0), possibly inside the buffer.
        // SAFETY: `off` is within the buffer (or the buffer is empty).
        unsafe { self.buf.as_ptr().add(self.off as usize * self.size()) }
    }
}

/// Runs the GEMM on views (C modified in place).
fn run(g: &Gemm, a: &Mat, b: &Mat, c: &mut Mat, k: usize, accumulate: bool) {
    let (m, n) = (c.rows, c.cols);
    // SAFETY: the views describe valid memory for these sizes.
    unsafe {
        let cp = c.buf.as_mut_ptr().add(c.off as usize * c.d.size_bytes());
        (g.f)(
            a.ptr(),
            a.rs,
            a.cs,
            b.ptr(),
            b.rs,
            b.cs,
            cp,
            c.rs,
            c.cs,
            m as i64,
            n as i64,
            k as i64,
            accumulate as i64,
        );
    }
}

fn eps(d: DType) -> f64 {
    match d {
        DType::F32 => 2f64.powi(-24),
        DType::F16 => 2f64.powi(-11),
        DType::BF16 => 2f64.powi(-8),
        _ => unreachable!(),
    }
}

/// Checks `C` against the f64 product of the (dequantized) inputs: f32
/// accumulation error bounded by `(k + 2)·ε32·Σ|a·b|`, plus one rounding
/// to C's dtype; and that C's buffer outside the view is untouched.
fn check(a: &Mat, b: &Mat, c0: &Mat, c: &Mat, k: usize, accumulate: bool) {
    let mut in_view = vec![false; c.buf.len()];
    // Decoded once: A row-major, B column-major, for a fast reference.
    let ad: Vec<f64> = (0..c.rows).flat_map(|i| (0..k).map(move |p| a.get(i, p))).collect();
    let bd: Vec<f64> = (0..c.cols).flat_map(|j| (0..k).map(move |p| b.get(p, j))).collect();
    for i in 0..c.rows {
        for j in 0..c.cols {
            let mut s = if accumulate { c0.get(i, j) } else { 0.0 };
            let mut mag = s.abs();
            for (x, y) in ad[i * k..(i + 1) * k].iter().zip(&bd[j * k..(j + 1) * k]) {
                let x = x * y;
                s += x;
                mag += x.abs();
            }
            let got = c.get(i, j);
            let tol = (k as f64 + 2.0) * eps(DType::F32) * mag + eps(c.d) * s.abs() + 1e-30;
            assert!(
                (got - s).abs() <= tol,
                "C[{i},{j}] = {got}, want {s} ± {tol} (m={} n={} k={k} acc={accumulate} {:?}×{:?}→{:?})",
                c.rows,
                c.cols,
                a.d,
                b.d,
                c.d
            );
            let idx = c.index(i, j);
            for x in &mut in_view[idx..idx + c.size()] {
                *x = true;
            }
        }
    }
    for (i, (&x, &y)) in c.buf.iter().zip(&c0.buf).enumerate() {
        assert!(in_view[i] || x == y, "byte {i} outside C's view changed");
    }
}

#[allow(clippy::too_many_arguments)]
fn case(
    g: &Gemm,
    dts: [DType; 3],
    m: usize,
    n: usize,
    k: usize,
    la: Layout,
    lb: Layout,
    lc: Layout,
    acc: bool,
    seed: u64,
) {
    let mut rng = Rng(seed | 1);
    let mut a = Mat::new(dts[0], m, k, la);
    let mut b = Mat::new(dts[1], k, n, lb);
    let mut c = Mat::new(dts[2], m, n, lc);
    a.fill(&mut rng);
    b.fill(&mut rng);
    c.fill(&mut rng);
    let c0 = c.clone();
    run(g, &a, &b, &mut c, k, acc);
    check(&a, &b, &c0, &c, k, acc);
}

const F: DType = DType::F32;
const ROW: Layout = Layout::Row { pad: 0 };
const COL: Layout = Layout::Col { pad: 0 };

#[test]
fn f32_awkward_sizes() {
    let g = compile(F, F, F, true);
    let sizes = [1, 2, 3, 7, 17, 33, 64, 127, 257];
    let mut seed = 1;
    for (x, &m) in sizes.iter().enumerate() {
        for (y, &n) in sizes.iter().enumerate() {
            // A rotating k keeps the combinations varied but few.
            let k = sizes[(x * 3 + y * 5) % sizes.len()];
            if m * n * k > 2_000_000 {
                continue;
            }
            seed += 1;
            case(&g, [F; 3], m, n, k, ROW, ROW, ROW, seed % 2 == 0, seed);
        }
    }
}

#[test]
fn f32_blocking_boundaries() {
    // Crosses KC (256), MC (24) and NC (256) with edge tiles everywhere.
    let g = compile(F, F, F, true);
    case(&g, [F; 3], 257, 257, 257, ROW, ROW, ROW, false, 7);
    case(&g, [F; 3], 97, 257, 257, ROW, ROW, ROW, true, 8);
    case(&g, [F; 3], 193, 9, 257, COL, ROW, ROW, false, 9);
}

#[test]
fn transposes_and_views() {
    let g = compile(F, F, F, true);
    let layouts = [ROW, COL, Layout::Row { pad: 5 }, Layout::Col { pad: 3 }, Layout::Flipped];
    let mut seed = 100;
    for la in layouts {
        for lb in layouts {
            for lc in [ROW, Layout::Row { pad: 2 }, COL, Layout::Flipped] {
                seed += 1;
                case(&g, [F; 3], 33, 17, 64, la, lb, lc, seed % 3 == 0, seed);
            }
        }
    }
}

#[test]
fn accumulate_on_and_off() {
    let g = compile(F, F, F, true);
    for acc in [false, true] {
        case(&g, [F; 3], 64, 64, 64, ROW, ROW, ROW, acc, 3);
        case(&g, [F; 3], 7, 33, 257, ROW, COL, Layout::Row { pad: 1 }, acc, 4);
    }
}

#[test]
fn k_zero_and_empty() {
    for dc in [F, DType::BF16, DType::F16] {
        let g = compile(F, F, dc, true);
        // k = 0: C = 0, or unchanged when accumulating.
        for acc in [false, true] {
            case(&g, [F, F, dc], 7, 9, 0, ROW, ROW, Layout::Row { pad: 3 }, acc, 5);
        }
        // m = 0 / n = 0: nothing written (check() sees the sentinel).
        case(&g, [F, F, dc], 0, 9, 5, ROW, ROW, Layout::Row { pad: 3 }, false, 6);
        case(&g, [F, F, dc], 4, 0, 5, ROW, ROW, Layout::Row { pad: 3 }, false, 6);
    }
}

#[test]
fn half_operands_and_results() {
    let ds = [F, DType::BF16, DType::F16];
    let mut seed = 1000;
    for da in ds {
        for db in ds {
            for dc in ds {
                let g = compile(da, db, dc, true);
                for (m, n, k, la, lb) in
                    [(17, 33, 7, ROW, ROW), (33, 17, 64, COL, ROW), (7, 9, 257, ROW, COL), (64, 3, 33, COL, COL)]
                {
                    seed += 1;
                    case(&g, [da, db, dc], m, n, k, la, lb, Layout::Row { pad: 1 }, seed % 2 == 0, seed);
                }
                // A half-precision C wider than NC and deeper than KC (the
                // f32 scratch block path across blocks) with a strided C.
                if dc != F {
                    case(&g, [da, db, dc], 100, 257, 257, ROW, ROW, COL, true, seed);
                }
            }
        }
    }
}

/// Every bf16 and f16 bit pattern as A (an m × 1 column, B = 1): C (f32)
/// must be the exact value.
#[test]
fn half_inputs_decode_exactly() {
    for d in [DType::BF16, DType::F16] {
        let g = compile(d, F, F, true);
        let mut a = Mat::new(d, 65536, 1, ROW);
        for h in 0..65536 {
            a.set_bits(h, 0, h as u32);
        }
        let mut b = Mat::new(F, 1, 1, ROW);
        b.set_bits(0, 0, 1f32.to_bits());
        let mut c = Mat::new(F, 65536, 1, ROW);
        run(&g, &a, &b, &mut c, 1, false);
        for h in 0..65536 {
            let (want, got) = (a.get(h, 0), c.get(h, 0));
            assert!(want == got || want.is_nan() && got.is_nan(), "{d:?} {h:#06x}: {got} != {want}");
        }
    }
}

/// C = A · 1 for f32 values around every rounding hazard: the stored
/// bf16/f16 must be the round-to-nearest-even of the value.
#[test]
fn half_results_round_to_nearest_even() {
    let mut vals: Vec<f32> = vec![
        0.0,
        -0.0,
        1.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        65504.0,
        65519.99,
        65520.0,
        1e6,
        -1e30,
        f32::MAX,
        f32::MIN_POSITIVE,
        1e-40,
        6.0e-8,
        2.98e-8,
        2.9802322e-8,
        5.96e-8,
    ];
    let mut rng = Rng(99);
    for _ in 0..4000 {
        // Random bit patterns over the whole f32 range, and halfway cases.
        vals.push(f32::from_bits(rng.next() as u32));
        let h = (rng.next() % 0x7c00) as u16;
        let x = f16_to_f64(h);
        let y = f16_to_f64(h + 1);
        vals.push(((x + y) / 2.0) as f32);
        let b = f32::from_bits(((rng.next() as u32) & 0x7fff_0000) | 0x8000);
        vals.push(b);
    }
    for d in [DType::BF16, DType::F16] {
        let g = compile(F, F, d, true);
        let mut a = Mat::new(F, vals.len(), 1, ROW);
        for (i, v) in vals.iter().enumerate() {
            a.set_bits(i, 0, v.to_bits());
        }
        let mut b = Mat::new(F, 1, 1, ROW);
        b.set_bits(0, 0, 1f32.to_bits());
        // A column-major C exercises the scalar path, a row of C the
        // vector path: do both.
        for lc in [ROW, COL] {
            let mut c = Mat::new(d, vals.len(), 1, lc);
            run(&g, &a, &b, &mut c, 1, false);
            let mut ct = Mat::new(d, 1, vals.len(), ROW);
            let mut at = Mat::new(F, 1, 1, ROW);
            at.set_bits(0, 0, 1f32.to_bits());
            let mut bt = Mat::new(F, 1, vals.len(), ROW);
            for (i, v) in vals.iter().enumerate() {
                bt.set_bits(0, i, v.to_bits());
            }
            run(&g, &at, &bt, &mut ct, 1, false);
            for (i, &v) in vals.iter().enumerate() {
                let want = round_to(d, v as f64);
                for got in [c.get(i, 0), ct.get(0, i)] {
                    let ok = if want.is_nan() {
                        got.is_nan()
                    } else {
                        got == want && (got == 0.0 || got.signum() == want.signum())
                    };
                    assert!(ok, "{d:?}: {v:e} ({:#010x}) stored as {got:e}, want {want:e}", v.to_bits());
                }
            }
        }
    }
}

#[test]
fn without_fma() {
    let g = compile(F, F, F, false);
    case(&g, [F; 3], 33, 65, 127, ROW, COL, ROW, true, 11);
    let g = compile(DType::BF16, F, DType::F16, false);
    case(&g, [DType::BF16, F, DType::F16], 17, 17, 17, ROW, ROW, ROW, false, 12);
}

/// Both micro-kernel forms (FMA, multiply + add) whatever the host
/// prefers, and non-default blockings (other tile shapes, small blocks so
/// that every loop runs several times).
#[test]
fn kernel_forms_and_blockings() {
    let d = Blocking::DEFAULT;
    let blockings = [
        Blocking { fma: Some(true), ..d },
        Blocking { fma: Some(false), ..d },
        Blocking { mr: 4, nr: 12, kc: 16, mc: 8, nc: 24, fma: Some(true) },
        Blocking { mr: 3, nr: 16, kc: 7, mc: 6, nc: 32, fma: Some(false) },
        Blocking { mr: 8, nr: 4, kc: 32, mc: 16, nc: 8, fma: None },
    ];
    for (x, blk) in blockings.into_iter().enumerate() {
        let g = compile_with(F, F, F, blk);
        case(&g, [F; 3], 37, 41, 70, ROW, COL, ROW, x % 2 == 0, 20 + x as u64);
        case(&g, [F; 3], 6, 8, 1, COL, ROW, Layout::Row { pad: 2 }, true, 30 + x as u64);
        let g = compile_with(DType::BF16, DType::F16, DType::BF16, blk);
        case(&g, [DType::BF16, DType::F16, DType::BF16], 70, 29, 45, ROW, ROW, COL, false, 40 + x as u64);
    }
}

#[test]
fn memoized_per_module() {
    let mut m = module(true);
    let x = declare_gemm(&mut m, F, F, F).unwrap();
    let y = declare_gemm(&mut m, F, F, F).unwrap();
    let z = declare_gemm(&mut m, DType::BF16, F, F).unwrap();
    assert_eq!(x, y);
    assert_ne!(x, z);
    assert!(declare_gemm(&mut m, DType::I32, F, F).is_err());
    m.finalize_definitions().unwrap();
}

/// Row blocks of one C on several threads at once (the runtime's use).
#[test]
fn concurrent_row_blocks() {
    let g = compile(F, F, F, true);
    let (m, n, k) = (200, 130, 90);
    let mut rng = Rng(5);
    let mut a = Mat::new(F, m, k, ROW);
    let mut b = Mat::new(F, k, n, ROW);
    a.fill(&mut rng);
    b.fill(&mut rng);
    let c0 = Mat::new(F, m, n, ROW);
    let mut c = c0.clone();
    let rows_per = 50;
    let cp = c.buf.as_mut_ptr() as usize;
    std::thread::scope(|s| {
        for t in 0..m / rows_per {
            let (a, b, f) = (&a, &b, g.f);
            s.spawn(move || {
                let r0 = t * rows_per;
                // SAFETY: the threads write disjoint row blocks of C.
                unsafe {
                    let ap = a.ptr().add(r0 * k * 4);
                    let cp = (cp as *mut u8).add(r0 * n * 4);
                    f(ap, k as i64, 1, b.ptr(), n as i64, 1, cp, n as i64, 1, rows_per as i64, n as i64, k as i64, 0);
                }
            });
        }
    });
    check(&a, &b, &c0, &c, k, false);
}

#[derive(Clone, Copy, Debug)]
enum L {
    Row,
    Col,
    Padded,
}

fn layout(l: L) -> Layout {
    match l {
        L::Row => ROW,
        L::Col => COL,
        L::Padded => Layout::Row { pad: 3 },
    }
}

fn arb_layout() -> impl Strategy<Value = L> {
    prop_oneof![Just(L::Row), Just(L::Col), Just(L::Padded)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn prop_f32_matches_reference(
        m in 1usize..80,
        n in 1usize..80,
        k in 0usize..258,
        la in arb_layout(),
        lb in arb_layout(),
        lc in arb_layout(),
        acc: bool,
        seed: u64,
    ) {
        thread_local! {
            static G: Gemm = compile(F, F, F, true);
        }
        G.with(|g| case(g, [F; 3], m, n, k, layout(la), layout(lb), layout(lc), acc, seed));
    }
}
