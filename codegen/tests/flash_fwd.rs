//! The flash-attention forward kernel: ptxas accepts it for sm_80 and
//! sm_90a, and run in the PTX emulator it matches a plain f64 attention on
//! the same half-rounded inputs.
//!
//! Tolerances. The kernel computes `q · k` exactly (products of halves,
//! f32 accumulation of at most 128 terms: relative error ~1e-6), but it
//! rounds the probabilities `p` to the half type before `P · V` and rounds
//! `o` to the half type on store. With unit roundoff `u` (2⁻⁸ bf16, 2⁻¹¹
//! f16) that bounds `|o - o_ref| <= u·max|v| + u·|o_ref|` up to f32 terms,
//! so the test allows `u·(max|v| + |o_ref|) + 1e-4`. `lse` stays in f32
//! with `ex2.approx`/`lg2.approx` (relative error ~2⁻²²), so 1e-4 absolute.

use half::{bf16, f16};
use kiln_codegen::ptx::flash::{self, FlashConfig, FlashError, Half};
use kiln_codegen::ptx::Arch;
use ptxemu::{Arg, Launch, Memory, Module};
use std::process::Command;

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

/// Attention in f64 straight from the definition: (o, lse), a fully
/// masked row giving NaN in both, as `kiln_ir::interp`'s attention does.
fn reference(cfg: &FlashConfig, q: &[f32], k: &[f32], v: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let (sq, sk, d, dv) = (cfg.sq as usize, cfg.sk as usize, cfg.d as usize, cfg.dv as usize);
    let mut o = vec![0f64; cfg.heads as usize * sq * dv];
    let mut lse = vec![0f64; cfg.heads as usize * sq];
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
            lse[h * sq + i] = m + l.ln();
            for c in 0..dv {
                o[(h * sq + i) * dv + c] = (0..sk).map(|j| (s[j] - m).exp() / l * f64::from(v[(kh * sk + j) * dv + c])).sum();
            }
        }
    }
    (o, lse)
}

/// Runs the forward kernel in the emulator and checks it against [`reference`].
fn check(cfg: &FlashConfig) {
    let kern = flash::forward(cfg, Arch::Sm80).unwrap_or_else(|e| panic!("{cfg:?}: {e}"));
    let dt = cfg.dtype;
    let kv_heads = (cfg.heads / cfg.group) as usize;
    let (hq, sq, sk, d, dv) = (cfg.heads as usize, cfg.sq as usize, cfg.sk as usize, cfg.d as usize, cfg.dv as usize);
    let round = |x: Vec<f32>| -> Vec<u16> { x.into_iter().map(|x| encode(dt, x)).collect() };
    let (qb, kb, vb) = (round(values(hq * sq * d, 1)), round(values(kv_heads * sk * d, 2)), round(values(kv_heads * sk * dv, 3)));
    let mut mem = Memory::new();
    let (pq, pk, pv) = (mem.alloc(2 * qb.len()), mem.alloc(2 * kb.len()), mem.alloc(2 * vb.len()));
    let (po, pl) = (mem.alloc(2 * hq * sq * dv), mem.alloc(4 * hq * sq));
    mem.write_u16s(pq, &qb);
    mem.write_u16s(pk, &kb);
    mem.write_u16s(pv, &vb);
    let module = Module::parse(&kern.ptx).unwrap_or_else(|e| panic!("{}: {e}\n{}", kern.name, kern.ptx));
    let launch = Launch { grid: kern.grid, block: kern.block, dynamic_shared: kern.shared_bytes };
    let args: Vec<Arg> = [pq, pk, pv, po, pl].into_iter().map(Arg::U64).collect();
    assert_eq!(kern.params, ["q", "k", "v", "o", "lse"]);
    module.launch(&kern.name, launch, &args, &mut mem).unwrap_or_else(|e| panic!("{}: {e}", kern.name));

    let dec = |b: &[u16]| -> Vec<f32> { b.iter().map(|&x| decode(dt, x)).collect() };
    let (want_o, want_lse) = reference(cfg, &dec(&qb), &dec(&kb), &dec(&vb));
    let got_o: Vec<f32> = dec(&mem.read_u16s(po, hq * sq * dv).unwrap());
    let got_lse = mem.read_f32s(pl, hq * sq).unwrap();
    let vmax = dec(&vb).iter().fold(0f64, |a, &x| a.max(f64::from(x).abs()));
    let u = unit_roundoff(dt);
    for (i, (&g, &w)) in got_o.iter().zip(&want_o).enumerate() {
        let ok = if w.is_nan() { g.is_nan() } else { (f64::from(g) - w).abs() <= u * (vmax + w.abs()) + 1e-4 };
        assert!(ok, "{}: o[{i}] (head {}, row {}, col {}) = {g}, want {w}", kern.name, i / (sq * dv), i / dv % sq, i % dv);
    }
    for (i, (&g, &w)) in got_lse.iter().zip(&want_lse).enumerate() {
        let ok = if w.is_nan() { g.is_nan() } else { (f64::from(g) - w).abs() <= 1e-4 };
        assert!(ok, "{}: lse[{i}] (head {}, row {}) = {g}, want {w}", kern.name, i / sq, i % sq);
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
    // offset 0 (square), bottom-right aligned (sk - sq), and a negative
    // offset that hides every key from the first rows (NaN o and lse)
    for (sq, sk, c) in [(81, 81, 0), (40, 81, 41), (81, 40, -41), (81, 81, -5), (40, 40, 100)] {
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
    let err = flash::backward(&base, Arch::Sm80).unwrap_err();
    assert!(err.to_string().contains("backward"), "{err}");
}

/// ptxas from KILN_PTXAS (CI) or the tools directory; the test fails without it.
fn ptxas() -> String {
    let path = std::env::var("KILN_PTXAS").unwrap_or_else(|_| "/work/tools-ptxas/nvidia/cuda_nvcc/bin/ptxas".into());
    assert!(std::path::Path::new(&path).exists(), "ptxas not found at {path}: set KILN_PTXAS (scripts/test.sh installs it)");
    path
}

#[test]
fn ptxas_accepts_every_forward_variant() {
    let ptxas = ptxas();
    let dir = std::env::temp_dir().join(format!("kiln-flash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for arch in [Arch::Sm80, Arch::Sm90a] {
        for dtype in [Half::Bf16, Half::F16] {
            for (d, dv) in [(64, 64), (128, 128), (64, 128), (128, 64)] {
                for causal in [None, Some(0)] {
                    let k = flash::forward(&FlashConfig { heads: 32, group: 4, ..cfg(1000, 1000, d, dv, causal, dtype) }, arch).unwrap();
                    let file = dir.join(format!("{}.ptx", k.name));
                    std::fs::write(&file, &k.ptx).unwrap();
                    let out = Command::new(&ptxas)
                        .args([&format!("-arch={}", arch.name()), "-v"])
                        .arg(&file)
                        .arg("-o")
                        .arg(file.with_extension("cubin"))
                        .output()
                        .unwrap_or_else(|e| panic!("cannot run {ptxas}: {e}"));
                    let log = String::from_utf8_lossy(&out.stderr);
                    assert!(out.status.success(), "ptxas -arch={} rejected {}:\n{log}", arch.name(), k.name);
                    let usage: Vec<&str> = log.lines().filter(|l| l.contains("Used") || l.contains("spill")).map(|l| l.trim_start_matches("ptxas info    : ")).collect();
                    println!("{} ({} B dynamic shared): {}", k.name, k.shared_bytes, usage.join("; "));
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
