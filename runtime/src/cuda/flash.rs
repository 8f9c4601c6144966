//! Which attention nodes of a program run on the tensor-core FlashAttention
//! kernels ([`kiln_codegen::ptx::flash`]) instead of their generic kernels,
//! and what each flash kernel gets as arguments.
//!
//! A node is substituted when the flash generators accept its
//! configuration (bf16/f16, no mask, head sizes they support) and every
//! tensor they touch is a dense `[heads, rows, cols]` array (any batch and
//! head axes merged) whose start is 16-byte aligned (`cp.async` copies 16
//! bytes at a time). Anything else keeps the generic kernels.

use kiln_codegen::ptx::flash::{self, FlashConfig, FlashKernel, Half};
use kiln_codegen::ptx::Arch;
use kiln_ir::kernel::{Intrinsic, IntrinsicOp, Program, TensorView};
use kiln_ir::{AttnMask, DType};

/// What a flash kernel parameter points at.
#[derive(Clone, Debug, PartialEq)]
pub enum FlashArg {
    /// A tensor of the program.
    View(TensorView),
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
            let args = k.params.iter().map(|n| named(n)).collect::<Result<Vec<_>, _>>()?;
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
