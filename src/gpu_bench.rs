//! `kiln bench --backend cuda`: the FlashAttention kernels the CUDA backend
//! runs for fused attention, timed on the GPU (CUDA events around
//! back-to-back launches after a warm-up), forward and backward, bf16,
//! B·H = 16·16, D = 64 and 128, causal and not, S from 1k to 16k.
//! `scripts/gpu-check.sh` puts the rows beside PyTorch's SDPA.

use kiln_codegen::ptx::flash::{self, FlashConfig, FlashKernel, Half};
use kiln_codegen::ptx::Arch;
use kiln_runtime::cuda::{CudaDevice, Device, KernelArg, Launchable};
use std::fmt::Write;

/// Batch and heads of every benchmark (B·H = 16·16).
pub const BATCH: u32 = 16;
/// See [`BATCH`].
pub const HEADS: u32 = 16;

/// One attention problem.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Problem {
    /// Query and key length.
    pub s: u32,
    /// Head size (of q, k and v).
    pub d: u32,
    /// Causal masking (offset 0).
    pub causal: bool,
}

/// Forward or backward.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pass {
    /// `o, lse` from `q, k, v`.
    Forward,
    /// `dq, dk, dv` (all three backward kernels).
    Backward,
}

impl Pass {
    fn name(self) -> &'static str {
        match self {
            Pass::Forward => "forward",
            Pass::Backward => "backward",
        }
    }
}

impl Problem {
    /// The usual FLOP count: `4·B·H·S²·D` forward (two GEMMs), halved when
    /// causal; the backward's five GEMMs are 2.5 times that.
    pub fn flops(&self, pass: Pass) -> f64 {
        let s = f64::from(self.s);
        let fwd = 4.0 * f64::from(BATCH * HEADS) * s * s * f64::from(self.d) / if self.causal { 2.0 } else { 1.0 };
        match pass {
            Pass::Forward => fwd,
            Pass::Backward => 2.5 * fwd,
        }
    }

    fn config(&self) -> FlashConfig {
        FlashConfig {
            heads: BATCH * HEADS,
            group: 1,
            sq: self.s,
            sk: self.s,
            d: self.d,
            dv: self.d,
            causal: self.causal.then_some(0),
            scale: 1.0 / (self.d as f32).sqrt(),
            dtype: Half::Bf16,
        }
    }
}

/// The problems, grouped by `(s, d)` (causal after non-causal): S = 1k
/// to 16k, or 1k, 4k and 16k when `quick`.
pub fn problems(quick: bool) -> Vec<Problem> {
    let lengths: &[u32] = if quick { &[1024, 4096, 16384] } else { &[1024, 2048, 4096, 8192, 16384] };
    let mut v = Vec::new();
    for &s in lengths {
        for d in [64, 128] {
            for causal in [false, true] {
                v.push(Problem { s, d, causal });
            }
        }
    }
    v
}

/// One measurement.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// The architecture the kernels were generated for.
    pub arch: Arch,
    /// Forward or backward.
    pub pass: Pass,
    /// The problem.
    pub problem: Problem,
    /// Seconds per call.
    pub seconds: f64,
}

impl Row {
    fn tflops(&self) -> f64 {
        self.problem.flops(self.pass) / self.seconds / 1e12
    }

    /// The row as JSON (a line of `kiln bench --backend cuda --json`).
    pub fn json(&self) -> serde_json::Value {
        let p = &self.problem;
        serde_json::json!({"arch": self.arch.name(), "pass": self.pass.name(), "b": BATCH, "h": HEADS, "s": p.s, "d": p.d,
            "causal": p.causal, "flops": p.flops(self.pass), "ms": self.seconds * 1e3, "tflops": self.tflops()})
    }

    /// The row of [`table`] (no newline).
    fn line(&self) -> String {
        let p = &self.problem;
        let causal = if p.causal { "yes" } else { "no" };
        format!("| flash {} | {} | {BATCH}·{HEADS} | {} | {} | {causal} | {:.3} | {:.1} |", self.arch.name(), self.pass.name(), p.s, p.d, self.seconds * 1e3, self.tflops())
    }
}

/// A Markdown table of the rows.
pub fn table(rows: &[Row]) -> String {
    let mut t = String::from("| kernels | pass | B·H | S | D | causal | ms | TFLOP/s |\n|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        let _ = writeln!(t, "{}", r.line());
    }
    t
}

/// Fills `bytes` at `addr` with bf16 values in [-1, 1) (a fixed pattern
/// per `seed`, uploaded in chunks so no host copy of the whole tensor is made).
fn fill(dev: &mut CudaDevice, addr: u64, bytes: u64, seed: u64) -> Result<(), String> {
    const CHUNK: u64 = 4 << 20;
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let chunk: Vec<u8> = (0..CHUNK / 2)
        .flat_map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let v = ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0;
            // bf16: the high half of the f32 (truncated; any value will do)
            ((v.to_bits() >> 16) as u16).to_le_bytes()
        })
        .collect();
    let mut at = 0;
    while at < bytes {
        let n = CHUNK.min(bytes - at);
        dev.upload(addr + at, &chunk[..n as usize]).map_err(|e| e.to_string())?;
        at += n;
    }
    Ok(())
}

/// Seconds per call of `launches`: as many back-to-back repetitions as fit
/// about a quarter second (1 to 20), after a one-call estimate.
fn time(dev: &mut CudaDevice, launches: &[(usize, Vec<KernelArg>)]) -> Result<f64, String> {
    let once = dev.time_launches(launches, 1).map_err(|e| e.to_string())?;
    if once >= 0.25 {
        return Ok(once);
    }
    let reps = (0.25 / once.max(1e-6)).ceil().clamp(1.0, 20.0) as u32;
    dev.time_launches(launches, reps).map_err(|e| e.to_string())
}

/// Times every problem's forward and backward kernels for `arch`: a
/// Markdown table, or with `json` one JSON object per line as each row is measured.
pub fn run(arch: Arch, quick: bool, json: bool) -> Result<(), String> {
    let mut rows = Vec::new();
    let all = problems(quick);
    for pair in all.chunks(2) {
        // one device (and one set of buffers) per (s, d); freed when dropped
        let mut dev = CudaDevice::open().map_err(|e| e.to_string())?;
        let cfg = pair[0].config();
        let (rows_n, elems) = (u64::from(cfg.heads) * u64::from(cfg.sq), u64::from(cfg.heads) * u64::from(cfg.sq) * u64::from(cfg.d));
        let mut buffers = Vec::new();
        for (i, name) in ["q", "k", "v", "o", "do", "dq", "dk", "dv", "lse", "stats"].into_iter().enumerate() {
            let bytes = match name {
                "lse" => 8 * rows_n,
                "stats" => 8 * rows_n,
                _ => 2 * elems,
            };
            let addr = dev.alloc(bytes).map_err(|e| e.to_string())?;
            if matches!(name, "q" | "k" | "v" | "do") {
                fill(&mut dev, addr, bytes, i as u64)?;
            }
            buffers.push((name, addr));
        }
        let mut loaded = 0;
        for p in pair {
            let cfg = p.config();
            let fwd = flash::forward(&cfg, arch).map_err(|e| e.to_string())?;
            let bwd = flash::backward(&cfg, arch).map_err(|e| e.to_string())?;
            let kernels: Vec<FlashKernel> = std::iter::once(fwd).chain(bwd).collect();
            let launches = kernels
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    let args = KernelArg::for_flash(k, |n| buffers.iter().find(|(b, _)| *b == n).map(|b| b.1))?;
                    Ok((loaded + i, args))
                })
                .collect::<Result<Vec<_>, String>>()?;
            dev.load(&kernels.into_iter().map(Launchable::from).collect::<Vec<_>>()).map_err(|e| e.to_string())?;
            loaded += launches.len();
            // the forward runs first: the backward reads its o and lse
            for (pass, l) in [(Pass::Forward, &launches[..1]), (Pass::Backward, &launches[1..])] {
                let row = Row { arch, pass, problem: *p, seconds: time(&mut dev, l)? };
                // row by row, so a run cut short by a timeout keeps what it measured
                if json {
                    println!("{}", row.json());
                } else {
                    eprintln!("{}", row.line());
                }
                rows.push(row);
            }
        }
    }
    if !json {
        print!("{}", table(&rows));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flops_by_the_usual_convention() {
        let p = Problem { s: 1024, d: 64, causal: false };
        // 4 · 256 · 1024² · 64
        assert_eq!(p.flops(Pass::Forward), 68_719_476_736.0);
        assert_eq!(p.flops(Pass::Backward), 2.5 * 68_719_476_736.0);
        let c = Problem { causal: true, ..p };
        assert_eq!(c.flops(Pass::Forward), 34_359_738_368.0);
        assert_eq!(Problem { s: 2048, d: 128, causal: false }.flops(Pass::Forward), 8.0 * 68_719_476_736.0);
    }

    #[test]
    fn problems_cover_the_sizes() {
        let all = problems(false);
        assert_eq!(all.len(), 5 * 2 * 2);
        assert_eq!(all[0], Problem { s: 1024, d: 64, causal: false });
        assert_eq!(all[19], Problem { s: 16384, d: 128, causal: true });
        // pairs share (s, d), as `run` relies on
        assert!(all.chunks(2).all(|p| p[0].s == p[1].s && p[0].d == p[1].d && !p[0].causal && p[1].causal));
        assert_eq!(problems(true).iter().map(|p| p.s).collect::<Vec<_>>(), [1024; 4].into_iter().chain([4096; 4]).chain([16384; 4]).collect::<Vec<_>>());
        // every configuration is one the flash generators accept
        for p in all {
            flash::forward(&p.config(), Arch::Sm80).expect("forward");
        }
    }

    #[test]
    fn table_and_json_rows() {
        let rows = [
            Row { arch: Arch::Sm80, pass: Pass::Forward, problem: Problem { s: 1024, d: 64, causal: false }, seconds: 68.719_476_736e-3 },
            Row { arch: Arch::Sm90a, pass: Pass::Backward, problem: Problem { s: 1024, d: 64, causal: true }, seconds: 1e-3 },
        ];
        let want = "| kernels | pass | B·H | S | D | causal | ms | TFLOP/s |\n|---|---|---|---|---|---|---|---|\n\
                    | flash sm_80 | forward | 16·16 | 1024 | 64 | no | 68.719 | 1.0 |\n\
                    | flash sm_90a | backward | 16·16 | 1024 | 64 | yes | 1.000 | 85.9 |\n";
        assert_eq!(table(&rows), want);
        let j = rows[1].json();
        assert_eq!((j["arch"].as_str(), j["pass"].as_str(), j["s"].as_u64(), j["causal"].as_bool()), (Some("sm_90a"), Some("backward"), Some(1024), Some(true)));
        assert_eq!(j["flops"].as_f64(), Some(2.5 * 34_359_738_368.0));
        assert!((j["tflops"].as_f64().unwrap() - 85.899_345_92).abs() < 1e-6);
    }
}
