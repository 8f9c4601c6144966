//! Which attention nodes of a program run on the tensor-core FlashAttention
//! kernels ([`kiln_codegen::ptx::flash`]) instead of their generic kernels,
//! and what each flash kernel gets as arguments.
//!
//! A node is substituted when the flash generators accept its
//! configuration (bf16/f16, no mask, no dropout, head sizes they support) and every
//! tensor they touch is a dense `[heads, rows, cols]` array (any batch and
//! head axes merged) whose start is 16-byte aligned (`cp.async` copies 16
//! bytes at a time). Anything else keeps the generic kernels.

use kiln_codegen::ptx::flash::{self, FlashConfig, FlashKernel, Half, TensorMapParam};
use kiln_codegen::ptx::Arch;
use kiln_ir::kernel::{Intrinsic, IntrinsicOp, Program, TensorView};
use kiln_ir::{AttnMask, DType};

/// What a flash kernel parameter points at.
#[derive(Clone, Debug, PartialEq)]
pub enum FlashArg {
    /// A tensor of the program.
    View(TensorView),
    /// A tensor of the program, through a tensor map.
    TensorMap(TensorMapParam, TensorView),
    /// The node's f32 workspace ([`Substitute::workspace_bytes`]).
    Workspace,
}

/// The flash kernels that replace one intrinsic, in launch order, each
/// with one argument per pointer parameter.
#[derive(Clone, Debug)]
pub struct Substitute {
    /// The kernels and their arguments.
    pub launches: Vec<(FlashKernel, Vec<FlashArg>)>,
    /// Bytes of scratch the kernels share (0: none).
    pub workspace_bytes: u64,
}

/// The flash kernels for `x`, or why it keeps its generic kernels.
pub fn substitute(p: &Program, x: &Intrinsic, arch: Arch) -> Result<Substitute, String> {
    let (call, backward) = match &x.op {
        IntrinsicOp::Attention(c) => (c, false),
        IntrinsicOp::AttentionGrad(c) => (c, true),
    };
    if call.mask != AttnMask::None {
        return Err("a mask argument".into());
    }
    if call.dropout != 0.0 {
        return Err("dropout".into());
    }
    let arg = |i: usize| x.args.get(i).cloned().flatten().ok_or_else(|| format!("argument {i} is not in memory"));
    let (q, k, v) = (arg(0)?, arg(1)?, arg(2)?);
    let r = q.shape.len();
    let u32_of = |n: u64| u32::try_from(n).map_err(|_| format!("a size of {n}"));
    let half = match p.buffers[q.buf.0 as usize].dtype {
        DType::BF16 => Half::Bf16,
        DType::F16 => Half::F16,
        d => return Err(format!("{d} data")),
    };
    let cfg = FlashConfig {
        heads: u32_of(q.shape[..r - 2].iter().product())?,
        group: call.group,
        sq: u32_of(q.shape[r - 2])?,
        sk: u32_of(k.shape[r - 2])?,
        d: u32_of(q.shape[r - 1])?,
        dv: u32_of(v.shape[r - 1])?,
        causal: call.causal,
        scale: call.scale as f32,
        dtype: half,
    };
    let kernels = if backward { flash::backward(&cfg, arch) } else { flash::forward(&cfg, arch).map(|k| vec![k]) }.map_err(|e| e.to_string())?;
    // Parameter names of the generators -> the node's arguments and results.
    let named = |name: &str| -> Result<FlashArg, String> {
        let view = match (backward, name) {
            (_, "q") => q.clone(),
            (_, "k") => k.clone(),
            (_, "v") => v.clone(),
            (false, "o") => x.results[0].clone(),
            (false, "lse") => x.results[1].clone(),
            (true, "o") => arg(3)?,
            (true, "lse") => arg(4)?,
            (true, "do") => arg(5)?,
            (true, "dq") => x.results[0].clone(),
            (true, "dk") => x.results[1].clone(),
            (true, "dv") => x.results[2].clone(),
            (true, "stats") => return Ok(FlashArg::Workspace),
            _ => return Err(format!("a flash kernel parameter `{name}`")),
        };
        let dtype = p.buffers[view.buf.0 as usize].dtype;
        let want = if name == "lse" { DType::F32 } else { q_dtype(half) };
        if dtype != want {
            return Err(format!("`{name}` in {dtype}"));
        }
        // halves move 16 bytes (8 elements) at a time; f32 rows one at a time
        let align = if dtype == DType::F32 { 1 } else { 8 };
        if !view.is_dense() || view.offset.constant % align != 0 || view.offset.terms.iter().any(|(_, c)| c % align != 0) {
            return Err(format!("`{name}` is not a dense, 16-byte aligned array"));
        }
        Ok(FlashArg::View(view))
    };
    let launches = kernels
        .into_iter()
        .map(|k| {
            let args = k
                .params
                .iter()
                .map(|n| match k.tensor_maps.iter().find(|m| m.param == *n) {
                    Some(m) => match named(m.tensor)? {
                        FlashArg::View(v) => Ok(FlashArg::TensorMap(m.clone(), v)),
                        _ => Err(format!("a tensor map of `{}`", m.tensor)),
                    },
                    None => named(n),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok((k, args))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let workspace_bytes = if backward { u64::from(cfg.heads) * u64::from(cfg.sq) * 2 * 4 } else { 0 };
    Ok(Substitute { launches, workspace_bytes })
}

fn q_dtype(h: Half) -> DType {
    match h {
        Half::Bf16 => DType::BF16,
        Half::F16 => DType::F16,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::kernel::{AttentionCall, BufId, BufKind, Buffer, HostOffset};

    /// `attention(q, k, v)` (or its gradient) over `[2, 3, 17, d]` tensors
    /// of `dtype`, one buffer each, q starting at element `q_offset`.
    fn node(dtype: DType, d: u64, q_offset: u64, backward: bool) -> (Program, Intrinsic) {
        let shape = vec![2, 3, 17, d];
        let mut p = Program::default();
        let mut view = |dtype: DType, shape: Vec<u64>, offset: u64| {
            let len = offset + shape.iter().product::<u64>();
            p.buffers.push(Buffer { dtype, len, kind: BufKind::Temp, name: format!("b{}", p.buffers.len()) });
            TensorView::dense(BufId(p.buffers.len() as u32 - 1), HostOffset { constant: offset, terms: vec![] }, shape)
        };
        let (q, k, v) = (view(dtype, shape.clone(), q_offset), view(dtype, shape.clone(), 0), view(dtype, shape.clone(), 0));
        let call = AttentionCall { scale: 0.125, causal: Some(0), group: 1, mask: AttnMask::None, dropout: 0.0 };
        let x = if backward {
            let (o, lse, dout) = (view(dtype, shape.clone(), 0), view(DType::F32, vec![2, 3, 17, 2], 0), view(dtype, shape.clone(), 0));
            let results = (0..3).map(|_| view(dtype, shape.clone(), 0)).collect();
            Intrinsic { op: IntrinsicOp::AttentionGrad(call), kernels: 0..1, args: [q, k, v, o, lse, dout].map(Some).to_vec(), results }
        } else {
            let results = vec![view(dtype, shape.clone(), 0), view(DType::F32, vec![2, 3, 17, 2], 0)];
            Intrinsic { op: IntrinsicOp::Attention(call), kernels: 0..1, args: [q, k, v].map(Some).to_vec(), results }
        };
        (p, x)
    }

    fn buffers(args: &[FlashArg]) -> Vec<Option<u32>> {
        args.iter()
            .map(|a| match a {
                FlashArg::View(v) | FlashArg::TensorMap(_, v) => Some(v.buf.0),
                FlashArg::Workspace => None,
            })
            .collect()
    }

    #[test]
    fn dense_aligned_halves_run_on_flash_kernels() {
        let (p, x) = node(DType::BF16, 64, 8, false);
        let s = substitute(&p, &x, Arch::Sm80).expect("forward");
        let [(k, args)] = &s.launches[..] else { panic!("one kernel") };
        assert!(k.name.starts_with("flash_fwd_sm_80_bf16_h6g1_q17_k17_d64_64_causal_0"), "{}", k.name);
        // q, k, v, o, lse
        assert_eq!(buffers(args), [Some(0), Some(1), Some(2), Some(3), Some(4)]);
        assert_eq!(s.workspace_bytes, 0);
        // the sm_90a forward reads q, k and v through tensor maps
        let (p, x) = node(DType::BF16, 64, 8, false);
        let s = substitute(&p, &x, Arch::Sm90a).expect("forward");
        let [(k, args)] = &s.launches[..] else { panic!("one kernel") };
        assert_eq!(buffers(args), [Some(0), Some(1), Some(2), Some(3), Some(4)]);
        let maps: Vec<&str> = args.iter().filter_map(|a| if let FlashArg::TensorMap(m, _) = a { Some(m.tensor) } else { None }).collect();
        assert_eq!(maps, ["q", "k", "v"], "{}", k.name);
        let (p, x) = node(DType::F16, 32, 0, true);
        let s = substitute(&p, &x, Arch::Sm90a).expect("backward");
        let names: Vec<&str> = s.launches.iter().map(|(k, _)| k.name.split("_sm_90a").next().unwrap_or("")).collect();
        assert_eq!(names, ["flash_bwd_prep", "flash_bwd_dq", "flash_bwd_dkv"]);
        // buffers: q k v o lse do | dq dk dv; the workspace is the stats
        assert_eq!(buffers(&s.launches[0].1), [Some(3), Some(5), Some(4), None]);
        assert_eq!(buffers(&s.launches[2].1), [Some(0), Some(1), Some(2), Some(5), None, Some(7), Some(8)]);
        assert_eq!(s.workspace_bytes, 6 * 17 * 2 * 4);
    }

    #[test]
    fn everything_else_keeps_the_generic_kernels() {
        let reason = |(p, x): (Program, Intrinsic)| substitute(&p, &x, Arch::Sm80).map(|_| ()).unwrap_err();
        assert_eq!(reason(node(DType::F32, 64, 0, false)), "f32 data");
        assert!(reason(node(DType::BF16, 16, 0, false)).contains("head size d = 16"));
        assert_eq!(reason(node(DType::BF16, 64, 4, true)), "`q` is not a dense, 16-byte aligned array");
        let (p, mut x) = node(DType::BF16, 64, 0, false);
        x.args[0].as_mut().expect("q").strides.swap(1, 2);
        assert_eq!(reason((p, x)), "`q` is not a dense, 16-byte aligned array");
        let (p, mut x) = node(DType::BF16, 64, 0, false);
        x.args[1] = None;
        assert_eq!(reason((p, x)), "argument 1 is not in memory");
        let (p, mut x) = node(DType::BF16, 64, 0, false);
        if let IntrinsicOp::Attention(c) = &mut x.op {
            c.mask = AttnMask::Keep;
        }
        assert_eq!(reason((p, x)), "a mask argument");
        let (p, mut x) = node(DType::BF16, 64, 0, true);
        if let IntrinsicOp::AttentionGrad(c) = &mut x.op {
            c.dropout = 0.1;
        }
        assert_eq!(reason((p, x)), "dropout");
    }
}
