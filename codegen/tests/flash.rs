//! The flash-attention kernels: ptxas accepts them for sm_80 and sm_90a,
//! and run in the PTX emulator they match plain f64 attention (forward) and
//! its gradients (backward) on the same half-rounded inputs.
//!
//! Forward tolerances. The kernel computes `q · k` exactly (products of halves,
//! f32 accumulation of at most 128 terms: relative error ~1e-6), but it
//! rounds the probabilities `p` to the half type before `P · V` and rounds
//! `o` to the half type on store. With unit roundoff `u` (2⁻⁸ bf16, 2⁻¹¹
//! f16) that bounds `|o - o_ref| <= u·max|v| + u·|o_ref|` up to f32 terms,
//! so the test allows `u·(max|v| + |o_ref|) + 1e-4`. `lse` stays in f32
//! with `ex2.approx`/`lg2.approx` (relative error ~2⁻²²), so 1e-4 absolute.

//!
//! Backward tolerances. The kernels round P (for dV) and dS (for dQ, dK) to
//! the half type before the tensor-core products and round the gradients
//! on store; everything else is f32. So each gradient element may be off by
//! `u·Σ|terms|` (the absolute sum of the products it adds up, computed by
//! the reference) plus `u·|ref|`; the test allows twice the first for the
//! f32 recomputation of P, dP and Δ, plus 1e-4.

use half::{bf16, f16};
use kiln_codegen::ptx::flash::{self, FlashConfig, FlashError, FlashKernel, Half, TensorMapParam, TmaSwizzle};
use kiln_codegen::ptx::{self, Arch};
use ptxemu::tma::{Swizzle, TensorMap};
use ptxemu::{Arg, Launch, Memory, Module};

/// Deterministic values in [-1, 1) (a 64-bit LCG; no dependency).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn encode(dt: Half, x: f32) -> u16 {
    match dt {
        Half::Bf16 => bf16::from_f32(x).to_bits(),
        Half::F16 => f16::from_f32(x).to_bits(),
    }
}

fn decode(dt: Half, b: u16) -> f32 {
    match dt {
        Half::Bf16 => bf16::from_bits(b).to_f32(),
        Half::F16 => f16::from_bits(b).to_f32(),
    }
}

fn unit_roundoff(dt: Half) -> f64 {
    match dt {
        Half::Bf16 => 2f64.powi(-8),
        Half::F16 => 2f64.powi(-11),
    }
}

/// Attention in f64 straight from the definition: (o, lse) with `lse` the
/// pairs `[m, log l]`, a fully masked row giving NaN in o and `log l`, as
/// `kiln_ir::interp`'s attention does.
fn reference(cfg: &FlashConfig, q: &[f32], k: &[f32], v: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let (sq, sk, d, dv) = (cfg.sq as usize, cfg.sk as usize, cfg.d as usize, cfg.dv as usize);
    let mut o = vec![0f64; cfg.heads as usize * sq * dv];
    let mut lse = vec![0f64; 2 * cfg.heads as usize * sq];
    for h in 0..cfg.heads as usize {
        let kh = h / cfg.group as usize;
        for i in 0..sq {
            let visible = |j: usize| cfg.causal.is_none_or(|c| j as i64 <= i as i64 + c);
            let s: Vec<f64> = (0..sk)
                .map(|j| {
                    if !visible(j) {
                        return f64::NEG_INFINITY;
                    }
                    let dot: f64 = (0..d).map(|x| f64::from(q[(h * sq + i) * d + x]) * f64::from(k[(kh * sk + j) * d + x])).sum();
                    dot * f64::from(cfg.scale)
                })
                .collect();
            let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let l: f64 = s.iter().map(|x| (x - m).exp()).sum();
            lse[2 * (h * sq + i)..][..2].copy_from_slice(&[m, l.ln()]);
            for c in 0..dv {
                o[(h * sq + i) * dv + c] = (0..sk).map(|j| (s[j] - m).exp() / l * f64::from(v[(kh * sk + j) * dv + c])).sum();
            }
        }
    }
    (o, lse)
}

/// Device buffers in the emulator's memory.
struct Device {
    mem: Memory,
}

impl Device {
    fn upload_halves(&mut self, dt: Half, x: &[f32]) -> u64 {
        let p = self.mem.alloc(2 * x.len());
        self.mem.write_u16s(p, &x.iter().map(|&x| encode(dt, x)).collect::<Vec<_>>());
        p
    }

    fn halves(&self, dt: Half, p: u64, n: usize) -> Vec<f32> {
        self.mem.read_u16s(p, n).unwrap().into_iter().map(|b| decode(dt, b)).collect()
    }

    /// Runs `k` with the tensors `args` (by name): a pointer parameter gets
    /// the tensor's address, a tensor-map parameter the emulator's encoding
    /// of the map the kernel describes over that tensor.
    fn launch(&mut self, k: &FlashKernel, args: &[(&str, u64)]) {
        let module = Module::parse(&k.ptx).unwrap_or_else(|e| panic!("{}: {e}\n{}", k.name, k.ptx));
        let address = |name: &str| args.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("no {name}")).1;
        let ptrs: Vec<Arg> = k
            .params
            .iter()
            .map(|p| match k.tensor_maps.iter().find(|m| m.param == *p) {
                Some(m) => Arg::TensorMap(tensor_map(m, address(m.tensor)).encode()),
                None => Arg::U64(address(p)),
            })
            .collect();
        let launch = Launch { grid: k.grid, block: k.block, dynamic_shared: k.shared_bytes };
        module.launch(&k.name, launch, &ptrs, &mut self.mem).unwrap_or_else(|e| panic!("{}: {e}", k.name));
    }
}

/// The emulator's tensor map for a kernel's description, over the tensor at `address`.
fn tensor_map(m: &TensorMapParam, address: u64) -> TensorMap {
    let swizzle = match m.swizzle {
        TmaSwizzle::B128 => Swizzle::B128,
    };
    TensorMap { address, element_bytes: 2, dims: m.dims.to_vec(), strides: m.strides.to_vec(), box_dims: m.box_dims.to_vec(), swizzle }
}

/// Random inputs rounded to the half type: q, k, v (and do for the backward).
fn inputs(cfg: &FlashConfig) -> [Vec<f32>; 4] {
    let kv_heads = (cfg.heads / cfg.group) as usize;
    let (hq, sq, sk, d, dv) = (cfg.heads as usize, cfg.sq as usize, cfg.sk as usize, cfg.d as usize, cfg.dv as usize);
    let round = |x: Vec<f32>| -> Vec<f32> { x.into_iter().map(|x| decode(cfg.dtype, encode(cfg.dtype, x))).collect() };
    [round(values(hq * sq * d, 1)), round(values(kv_heads * sk * d, 2)), round(values(kv_heads * sk * dv, 3)), round(values(hq * sq * dv, 4))]
}

/// Runs the forward kernel for `arch` in the emulator and checks it against [`reference`].
fn check_arch(cfg: &FlashConfig, arch: Arch) {
    let kern = flash::forward(cfg, arch).unwrap_or_else(|e| panic!("{cfg:?}: {e}"));
    let dt = cfg.dtype;
    let (hq, sq, dv) = (cfg.heads as usize, cfg.sq as usize, cfg.dv as usize);
    let [q, k, v, _] = inputs(cfg);
    let mut dev = Device { mem: Memory::new() };
    let (pq, pk, pv) = (dev.upload_halves(dt, &q), dev.upload_halves(dt, &k), dev.upload_halves(dt, &v));
    let (po, pl) = (dev.mem.alloc(2 * hq * sq * dv), dev.mem.alloc(8 * hq * sq));
    dev.launch(&kern, &[("q", pq), ("k", pk), ("v", pv), ("o", po), ("lse", pl)]);

    let (want_o, want_lse) = reference(cfg, &q, &k, &v);
    let got_o = dev.halves(dt, po, hq * sq * dv);
    let got_lse = dev.mem.read_f32s(pl, 2 * hq * sq).unwrap();
    let vmax = v.iter().fold(0f64, |a, &x| a.max(f64::from(x).abs()));
    let u = unit_roundoff(dt);
    for (i, (&g, &w)) in got_o.iter().zip(&want_o).enumerate() {
        let ok = if w.is_nan() { g.is_nan() } else { (f64::from(g) - w).abs() <= u * (vmax + w.abs()) + 1e-4 };
        assert!(ok, "{}: o[{i}] (head {}, row {}, col {}) = {g}, want {w}", kern.name, i / (sq * dv), i / dv % sq, i % dv);
    }
    for (i, (&g, &w)) in got_lse.iter().zip(&want_lse).enumerate() {
        let ok = if w.is_nan() { g.is_nan() } else { f64::from(g) == w || (f64::from(g) - w).abs() <= 1e-4 };
        assert!(ok, "{}: lse[{i}] (head {}, row {}) = {g}, want {w}", kern.name, i / 2 / sq, i / 2 % sq);
    }
}

fn check(cfg: &FlashConfig) {
    check_arch(cfg, Arch::Sm80);
}

/// Gradients in f64 from the definition, given the forward's (rounded) o
/// and lse: `(dq, dk, dv)` and for each element the absolute sum of the
/// terms it adds (for the tolerance). A query that sees no key contributes
/// nothing (its probabilities are taken as zero).
#[allow(clippy::type_complexity)]
fn grad_reference(cfg: &FlashConfig, q: &[f32], k: &[f32], v: &[f32], o: &[f32], lse: &[f32], dout: &[f32]) -> [(Vec<f64>, Vec<f64>); 3] {
    let (sq, sk, d, dv) = (cfg.sq as usize, cfg.sk as usize, cfg.d as usize, cfg.dv as usize);
    let kv_heads = (cfg.heads / cfg.group) as usize;
    let mut dq = (vec![0f64; cfg.heads as usize * sq * d], vec![0f64; cfg.heads as usize * sq * d]);
    let mut dk = (vec![0f64; kv_heads * sk * d], vec![0f64; kv_heads * sk * d]);
    let mut dvv = (vec![0f64; kv_heads * sk * dv], vec![0f64; kv_heads * sk * dv]);
    let f = |x: f32| f64::from(x);
    let scale = f(cfg.scale);
    for h in 0..cfg.heads as usize {
        let kh = h / cfg.group as usize;
        for i in 0..sq {
            let row = h * sq + i;
            let (m, ls) = (f(lse[2 * row]), f(lse[2 * row + 1]));
            if ls.is_nan() {
                continue;
            }
            let delta: f64 = (0..dv).map(|c| f(dout[row * dv + c]) * f(o[row * dv + c])).sum();
            for j in (0..sk).filter(|&j| cfg.causal.is_none_or(|c| j as i64 <= i as i64 + c)) {
                let s = scale * (0..d).map(|x| f(q[row * d + x]) * f(k[(kh * sk + j) * d + x])).sum::<f64>();
                let p = ((s - m) - ls).exp();
                let dp: f64 = (0..dv).map(|c| f(dout[row * dv + c]) * f(v[(kh * sk + j) * dv + c])).sum();
                let ds = p * (dp - delta);
                for x in 0..d {
                    dq.0[row * d + x] += scale * ds * f(k[(kh * sk + j) * d + x]);
                    dq.1[row * d + x] += (scale * ds * f(k[(kh * sk + j) * d + x])).abs();
                    dk.0[(kh * sk + j) * d + x] += scale * ds * f(q[row * d + x]);
                    dk.1[(kh * sk + j) * d + x] += (scale * ds * f(q[row * d + x])).abs();
                }
                for c in 0..dv {
                    dvv.0[(kh * sk + j) * dv + c] += p * f(dout[row * dv + c]);
                    dvv.1[(kh * sk + j) * dv + c] += (p * f(dout[row * dv + c])).abs();
                }
            }
        }
    }
    [dq, dk, dvv]
}

/// Runs the three backward kernels in the emulator on the reference
/// forward's o and lse, and checks dq, dk, dv against [`grad_reference`].
fn check_backward(cfg: &FlashConfig) {
    let kernels = flash::backward(cfg, Arch::Sm80).unwrap_or_else(|e| panic!("{cfg:?}: {e}"));
    let dt = cfg.dtype;
    let kv_heads = (cfg.heads / cfg.group) as usize;
    let (hq, sq, sk, d, dv) = (cfg.heads as usize, cfg.sq as usize, cfg.sk as usize, cfg.d as usize, cfg.dv as usize);
    let [q, k, v, dout] = inputs(cfg);
    let (o_ref, lse_ref) = reference(cfg, &q, &k, &v);
    let o: Vec<f32> = o_ref.iter().map(|&x| decode(dt, encode(dt, x as f32))).collect();
    let lse: Vec<f32> = lse_ref.iter().map(|&x| x as f32).collect();
    let mut dev = Device { mem: Memory::new() };
    let bufs = [
        ("q", dev.upload_halves(dt, &q)),
        ("k", dev.upload_halves(dt, &k)),
        ("v", dev.upload_halves(dt, &v)),
        ("o", dev.upload_halves(dt, &o)),
        ("do", dev.upload_halves(dt, &dout)),
        ("lse", dev.mem.alloc(8 * hq * sq)),
        ("stats", dev.mem.alloc(8 * hq * sq)),
        ("dq", dev.mem.alloc(2 * hq * sq * d)),
        ("dk", dev.mem.alloc(2 * kv_heads * sk * d)),
        ("dv", dev.mem.alloc(2 * kv_heads * sk * dv)),
    ];
    dev.mem.write_f32s(bufs[5].1, &lse);
    for kern in &kernels {
        dev.launch(kern, &bufs);
    }
    let want = grad_reference(cfg, &q, &k, &v, &o, &lse, &dout);
    let u = unit_roundoff(dt);
    let by = [("dq", bufs[7].1, &kernels[1]), ("dk", bufs[8].1, &kernels[2]), ("dv", bufs[9].1, &kernels[2])];
    for ((name, p, kern), (w, terms)) in by.into_iter().zip(&want) {
        let got = dev.halves(dt, p, w.len());
        for (i, &g) in got.iter().enumerate() {
            let tol = 2.0 * u * terms[i] + u * w[i].abs() + 1e-4;
            assert!((f64::from(g) - w[i]).abs() <= tol, "{}: {name}[{i}] = {g}, want {} (tolerance {tol})", kern.name, w[i]);
        }
    }
}

fn cfg(sq: u32, sk: u32, d: u32, dv: u32, causal: Option<i64>, dtype: Half) -> FlashConfig {
    FlashConfig { heads: 2, group: 2, sq, sk, d, dv, causal, scale: 0.3, dtype }
}

#[test]
fn forward_matches_f64_attention_for_partial_and_single_blocks() {
    for (sq, sk) in [(1, 1), (40, 40), (81, 81), (1, 81), (81, 40)] {
        check(&cfg(sq, sk, 64, 64, None, Half::Bf16));
    }
}

#[test]
fn causal_forward_matches_f64_attention_and_gives_nan_rows_when_nothing_is_visible() {
    // offset 0 (square), bottom-right aligned (sk - sq), and negative
    // offsets that hide every key from the first rows (NaN o and lse),
    // the last one from the whole first Q block (no K/V tile visited)
    for (sq, sk, c) in [(81, 81, 0), (40, 81, 41), (81, 40, -41), (81, 81, -5), (40, 40, 100), (81, 40, -70)] {
        check(&cfg(sq, sk, 64, 64, Some(c), Half::Bf16));
    }
}

#[test]
fn forward_handles_f16_grouped_heads_and_other_head_sizes() {
    check(&cfg(81, 81, 64, 64, Some(0), Half::F16));
    check(&cfg(40, 81, 128, 64, None, Half::F16));
    check(&cfg(40, 81, 64, 128, Some(41), Half::Bf16));
    check(&cfg(40, 40, 96, 48, None, Half::Bf16));
    check(&FlashConfig { heads: 4, group: 2, ..cfg(40, 81, 64, 64, Some(0), Half::Bf16) });
    check(&FlashConfig { heads: 2, group: 1, ..cfg(40, 40, 32, 16, None, Half::Bf16) });
}

#[test]
fn sm90_forward_matches_f64_attention_for_partial_and_single_blocks() {
    // the Q block is 128 rows: one row, part of the first consumer's 64,
    // both consumers, and a second CTA; keys 1, one partial tile, several
    for (sq, sk) in [(1, 1), (40, 81), (81, 40), (130, 150), (1, 130)] {
        check_arch(&cfg(sq, sk, 64, 64, None, Half::Bf16), Arch::Sm90a);
    }
}

#[test]
fn sm90_causal_forward_matches_f64_attention_with_any_offset() {
    // square, bottom-right aligned, negative offsets hiding every key from
    // the first rows (NaN rows) and from a whole CTA (no tile visited)
    for (sq, sk, c) in [(130, 130, 0), (40, 150, 110), (150, 40, -41), (81, 81, -5), (40, 40, 100), (81, 40, -70), (200, 70, -140)] {
        check_arch(&cfg(sq, sk, 64, 64, Some(c), Half::Bf16), Arch::Sm90a);
    }
}

#[test]
fn sm90_forward_handles_f16_grouped_heads_and_wide_heads() {
    check_arch(&cfg(81, 81, 64, 64, Some(0), Half::F16), Arch::Sm90a);
    check_arch(&cfg(40, 81, 128, 128, None, Half::F16), Arch::Sm90a);
    check_arch(&cfg(70, 100, 128, 64, Some(30), Half::Bf16), Arch::Sm90a);
    check_arch(&cfg(40, 81, 64, 128, Some(41), Half::Bf16), Arch::Sm90a);
    check_arch(&FlashConfig { heads: 4, group: 2, ..cfg(40, 81, 64, 64, Some(0), Half::Bf16) }, Arch::Sm90a);
}

#[test]
fn sm90_forward_describes_its_tensor_maps() {
    let c = FlashConfig { heads: 6, group: 3, ..cfg(100, 300, 128, 64, None, Half::F16) };
    let k = flash::forward(&c, Arch::Sm90a).unwrap();
    assert_eq!(k.params, ["tmap_q", "tmap_k", "tmap_v", "o", "lse"]);
    let maps: Vec<_> = k.tensor_maps.iter().map(|m| (m.param, m.tensor, m.dims, m.strides, m.box_dims)).collect();
    assert_eq!(
        maps,
        [
            ("tmap_q", "q", [128, 100, 6], [256, 256 * 100], [64, 64, 1]),
            ("tmap_k", "k", [128, 300, 2], [256, 256 * 300], [64, 64, 1]),
            ("tmap_v", "v", [64, 300, 2], [128, 128 * 300], [64, 64, 1]),
        ]
    );
    assert!(k.tensor_maps.iter().all(|m| m.dtype == Half::F16 && m.swizzle == TmaSwizzle::B128));
    assert_eq!((k.grid, k.block), ([1, 6, 1], [384, 1, 1]));
    assert!(k.ptx.contains(".param .align 64 .b8 tmap_q[128]"), "{}", k.ptx);
}

#[test]
fn backward_matches_f64_gradients() {
    for (sq, sk) in [(1, 1), (40, 81), (81, 40)] {
        check_backward(&cfg(sq, sk, 64, 64, None, Half::Bf16));
    }
}

#[test]
fn causal_backward_matches_f64_gradients() {
    // including rows that see no key (they contribute no gradient)
    for (sq, sk, c) in [(81, 81, 0), (40, 81, 41), (81, 40, -41), (81, 40, -70)] {
        check_backward(&cfg(sq, sk, 64, 64, Some(c), Half::Bf16));
    }
}

#[test]
fn backward_handles_f16_grouped_heads_and_other_head_sizes() {
    check_backward(&cfg(81, 81, 64, 64, Some(0), Half::F16));
    check_backward(&FlashConfig { heads: 4, group: 2, ..cfg(40, 81, 128, 64, None, Half::Bf16) });
    check_backward(&FlashConfig { heads: 2, group: 1, ..cfg(40, 40, 32, 96, Some(3), Half::F16) });
}

#[test]
fn unsupported_configurations_are_errors() {
    let base = cfg(40, 40, 64, 64, None, Half::Bf16);
    for bad in [
        FlashConfig { d: 80, ..base.clone() },
        FlashConfig { dv: 8, ..base.clone() },
        FlashConfig { sq: 0, ..base.clone() },
        FlashConfig { group: 3, ..base.clone() },
        FlashConfig { scale: f32::NAN, ..base.clone() },
    ] {
        assert!(matches!(flash::forward(&bad, Arch::Sm80), Err(FlashError::Unsupported(_))), "{bad:?}");
    }
    // the FA3-style sm_90a forward takes head sizes 64 and 128; other sizes
    // get the mma.sync kernel (no tensor maps)
    for (d, dv, fa3) in [(32, 64, false), (64, 96, false), (96, 128, false), (64, 128, true)] {
        let k = flash::forward(&FlashConfig { d, dv, ..base.clone() }, Arch::Sm90a).expect("a kernel");
        assert_eq!(k.tensor_maps.is_empty(), !fa3, "d = {d}, dv = {dv}: {}", k.name);
    }
    let err = flash::backward(&FlashConfig { dv: 48, ..base }, Arch::Sm80).unwrap_err();
    assert!(err.to_string().contains("backward"), "{err}");
}

#[test]
fn ptxas_accepts_every_forward_and_backward_variant() {
    let ptxas = ptx::ptxas::from_env().unwrap_or_else(|e| panic!("{e}"));
    let dir = std::env::temp_dir().join(format!("kiln-flash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for arch in [Arch::Sm80, Arch::Sm90a] {
        for dtype in [Half::Bf16, Half::F16] {
            for (d, dv) in [(64, 64), (128, 128), (64, 128), (128, 64)] {
                for causal in [None, Some(0)] {
                    let c = FlashConfig { heads: 32, group: 4, ..cfg(1000, 1000, d, dv, causal, dtype) };
                    for k in std::iter::once(flash::forward(&c, arch).unwrap()).chain(flash::backward(&c, arch).unwrap()) {
                    let usage = ptx::ptxas::assemble(&ptxas, &k.ptx, &k.name, arch, &dir).unwrap_or_else(|e| panic!("{e}"));
                    println!("{} ({} B dynamic shared): {usage}", k.name, k.shared_bytes);
                    // the FA3-style kernel keeps S, P and O in registers with no spills
                    if !k.tensor_maps.is_empty() {
                        assert!(usage.contains(" 0 bytes spill stores, 0 bytes spill loads"), "{}: {usage}", k.name);
                    }
                    }
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
