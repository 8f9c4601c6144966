//! The kernel IR verifier and dtype rules.

use super::{Expr, Kernel, Mem, Program, Step, Stmt, Var};
use crate::{BinaryOp, DType};
use std::collections::HashMap;

/// What is wrong with a kernel or program.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("kernel `{kernel}`: {msg}")]
pub struct KernelError {
    /// The kernel's name (or `program`).
    pub kernel: String,
    /// What is wrong.
    pub msg: String,
}

/// The dtype of a memory's elements as loaded (bf16/f16 load as f32).
pub fn mem_dtype(k: &Kernel, m: Mem) -> Option<DType> {
    let d = match m {
        Mem::Arg(i) => k.args.get(i as usize)?.dtype,
        Mem::Scratch(i) => k.scratch.get(i as usize)?.dtype,
    };
    Some(compute_dtype(d))
}

/// The type arithmetic happens in: half floats compute in f32.
pub fn compute_dtype(d: DType) -> DType {
    match d {
        DType::F16 | DType::BF16 => DType::F32,
        d => d,
    }
}

/// The dtype of an expression, given the dtypes of the variables in scope.
pub fn expr_dtype(k: &Kernel, vars: &HashMap<Var, DType>, e: &Expr) -> Result<DType, String> {
    Ok(match e {
        Expr::Const(_, d) => compute_dtype(*d),
        Expr::Var(v) => *vars.get(v).ok_or_else(|| format!("v{} is used before it is defined", v.0))?,
        Expr::Tile => DType::I64,
        Expr::Load(m, i) => {
            if expr_dtype(k, vars, i)? != DType::I64 {
                return Err("a load index must be i64".into());
            }
            mem_dtype(k, *m).ok_or_else(|| format!("{m:?} does not exist"))?
        }
        Expr::Unary(_, x) => expr_dtype(k, vars, x)?,
        Expr::Binary(op, a, b) => {
            let (x, y) = (expr_dtype(k, vars, a)?, expr_dtype(k, vars, b)?);
            if x != y {
                return Err(format!("{op:?} of {x} and {y}"));
            }
            if matches!(op, BinaryOp::And | BinaryOp::Or) != (x == DType::Bool) {
                return Err(format!("{op:?} on {x}"));
            }
            x
        }
        Expr::Rem(a, b) => {
            if expr_dtype(k, vars, a)? != DType::I64 || expr_dtype(k, vars, b)? != DType::I64 {
                return Err("rem takes i64".into());
            }
            DType::I64
        }
        Expr::Cmp(_, a, b) => {
            let (x, y) = (expr_dtype(k, vars, a)?, expr_dtype(k, vars, b)?);
            if x != y {
                return Err(format!("comparison of {x} and {y}"));
            }
            DType::Bool
        }
        Expr::Select(c, a, b) => {
            if expr_dtype(k, vars, c)? != DType::Bool {
                return Err("select needs a bool condition".into());
            }
            let (x, y) = (expr_dtype(k, vars, a)?, expr_dtype(k, vars, b)?);
            if x != y {
                return Err(format!("select of {x} and {y}"));
            }
            x
        }
        Expr::Cast(d, x) => {
            expr_dtype(k, vars, x)?;
            compute_dtype(*d)
        }
        Expr::Rand(seed, counter) => {
            if expr_dtype(k, vars, seed)? != DType::I64 || expr_dtype(k, vars, counter)? != DType::I64 {
                return Err("rand takes an i64 seed and counter".into());
            }
            DType::F32
        }
        Expr::Checked(c) => {
            if expr_dtype(k, vars, &c.index)? != DType::I64 || expr_dtype(k, vars, &c.pos)? != DType::I64 {
                return Err("a checked index and its position must be i64".into());
            }
            match c.status {
                Mem::Arg(i) if k.args.get(i as usize).is_some_and(|a| a.dtype == DType::I64 && a.len >= super::check::STATUS_LEN && a.access != super::Access::Read) => {}
                m => return Err(format!("a checked index reports to {m:?}, not a writable status argument")),
            }
            DType::I64
        }
    })
}

/// Checks one kernel.
pub fn kernel(k: &Kernel) -> Result<(), KernelError> {
    let err = |msg: String| KernelError { kernel: k.name.clone(), msg };
    let mut vars = HashMap::new();
    block(k, &k.body, &mut vars).map_err(err)?;
    Ok(())
}

fn define(vars: &mut HashMap<Var, DType>, v: Var, d: DType) -> Result<(), String> {
    if vars.insert(v, d).is_some() {
        return Err(format!("v{} is defined twice", v.0));
    }
    Ok(())
}

fn index(k: &Kernel, vars: &HashMap<Var, DType>, e: &Expr) -> Result<(), String> {
    match expr_dtype(k, vars, e)? {
        DType::I64 => Ok(()),
        d => Err(format!("an index must be i64, found {d}")),
    }
}

fn block(k: &Kernel, body: &[Stmt], vars: &mut HashMap<Var, DType>) -> Result<(), String> {
    for s in body {
        match s {
            Stmt::Loop { var, body, .. } => {
                define(vars, *var, DType::I64)?;
                block(k, body, vars)?;
            }
            Stmt::Let { var, value } => {
                let d = expr_dtype(k, vars, value)?;
                define(vars, *var, d)?;
            }
            Stmt::Reduce { var, op, index: i, value, .. } => {
                define(vars, *i, DType::I64)?;
                let d = expr_dtype(k, vars, value)?;
                if d == DType::Bool {
                    return Err("cannot reduce bool values".into());
                }
                define(vars, *var, if *op == super::RedOp::ArgMax { DType::I64 } else { d })?;
            }
            Stmt::Store { mem, index: i, value } => {
                mem_dtype(k, *mem).ok_or_else(|| format!("store to missing {mem:?}"))?;
                index(k, vars, i)?;
                expr_dtype(k, vars, value)?;
            }
            Stmt::If { cond, body } => {
                if expr_dtype(k, vars, cond)? != DType::Bool {
                    return Err("an if condition must be bool".into());
                }
                // The body's definitions go out of scope after it.
                block(k, body, &mut vars.clone())?;
            }
            Stmt::Gemm(g) => {
                for op in [&g.a, &g.b, &g.c] {
                    match mem_dtype(k, op.mem) {
                        Some(d) if d.is_float() => {}
                        Some(d) => return Err(format!("gemm operand of dtype {d}")),
                        None => return Err(format!("gemm operand {:?} does not exist", op.mem)),
                    }
                    index(k, vars, &op.offset)?;
                }
            }
        }
    }
    Ok(())
}

/// Checks every kernel and that every launch passes views of the right
/// dtype and enough length.
pub fn program(p: &Program) -> Result<(), KernelError> {
    for k in &p.kernels {
        kernel(k)?;
    }
    fn steps(p: &Program, s: &[Step], depth: u32) -> Result<(), KernelError> {
        let err = |msg: String| KernelError { kernel: "program".into(), msg };
        for st in s {
            match st {
                Step::Launch { kernel, args } => {
                    let k = p.kernels.get(kernel.0 as usize).ok_or_else(|| err(format!("launch of missing kernel {}", kernel.0)))?;
                    if k.args.len() != args.len() {
                        return Err(err(format!("`{}` takes {} arguments, launched with {}", k.name, k.args.len(), args.len())));
                    }
                    for (a, v) in k.args.iter().zip(args) {
                        let b = p.buffers.get(v.buf.0 as usize).ok_or_else(|| err("missing buffer".into()))?;
                        if b.dtype != a.dtype {
                            return Err(err(format!("`{}` gets {} for a {} argument", k.name, b.dtype, a.dtype)));
                        }
                        if v.offset.terms.iter().any(|(h, _)| h.0 >= depth) {
                            return Err(err("a view uses a loop counter outside its loop".into()));
                        }
                    }
                }
                Step::Repeat { var, body, .. } => {
                    if var.0 != depth {
                        return Err(err("host loop counters must be numbered by depth".into()));
                    }
                    steps(p, body, depth + 1)?;
                }
                Step::Copy { dst, src, .. } => {
                    let (d, s) = (p.buffers.get(dst.buf.0 as usize), p.buffers.get(src.buf.0 as usize));
                    match (d, s) {
                        (Some(d), Some(s)) if d.dtype == s.dtype => {}
                        _ => return Err(err("copy between missing buffers or different dtypes".into())),
                    }
                }
            }
        }
        Ok(())
    }
    steps(p, &p.steps, 0)?;
    intrinsics(p)
}

/// The [`super::intrinsic`] invariant: each intrinsic's kernels exist and
/// are launched together, in order, and nowhere else; its views lie inside
/// their buffers (at host loop counters 0).
fn intrinsics(p: &Program) -> Result<(), KernelError> {
    let err = |msg: String| KernelError { kernel: "program".into(), msg };
    for (i, x) in p.intrinsics.iter().enumerate() {
        if x.kernels.is_empty() || x.kernels.end as usize > p.kernels.len() {
            return Err(err(format!("intrinsic {i} names kernels {:?} of {}", x.kernels, p.kernels.len())));
        }
        for v in x.args.iter().flatten().chain(&x.results) {
            let b = p.buffers.get(v.buf.0 as usize).ok_or_else(|| err(format!("intrinsic {i} views a missing buffer")))?;
            if v.shape.len() != v.strides.len() || v.offset.constant + v.extent() > b.len {
                return Err(err(format!("intrinsic {i} views elements past the end of `{}`", b.name)));
            }
        }
    }
    let owner = |k: u32| p.intrinsics.iter().position(|x| x.kernels.contains(&k));
    let mut launched = vec![0u32; p.intrinsics.len()];
    fn walk(s: &[Step], owner: &dyn Fn(u32) -> Option<usize>, p: &Program, launched: &mut [u32]) -> Result<(), KernelError> {
        let mut at = 0;
        while at < s.len() {
            match &s[at] {
                Step::Launch { kernel, .. } => {
                    if let Some(i) = owner(kernel.0) {
                        let ks = p.intrinsics[i].kernels.clone();
                        let run = s[at..].iter().take(ks.len()).map(|st| match st {
                            Step::Launch { kernel, .. } => Some(kernel.0),
                            _ => None,
                        });
                        if !run.eq(ks.clone().map(Some)) {
                            return Err(KernelError { kernel: "program".into(), msg: format!("the kernels {ks:?} of intrinsic {i} are not launched together and in order") });
                        }
                        launched[i] += 1;
                        at += ks.len();
                        continue;
                    }
                }
                Step::Repeat { body, .. } => walk(body, owner, p, launched)?,
                Step::Copy { .. } => {}
            }
            at += 1;
        }
        Ok(())
    }
    walk(&p.steps, &owner, p, &mut launched)?;
    match launched.iter().position(|&n| n != 1) {
        Some(i) => Err(err(format!("intrinsic {i} is launched {} times, not once", launched[i]))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{Access, Arg};

    fn with_body(body: Vec<Stmt>) -> Kernel {
        Kernel { name: "t".into(), args: vec![Arg { dtype: DType::F32, len: 4, access: Access::Write }], scratch: vec![], grid: 1, body }
    }

    #[test]
    fn intrinsic_kernels_are_launched_together_once() {
        use crate::kernel::{AttentionCall, BufId, BufKind, Buffer, Intrinsic, IntrinsicOp, KernelId, TensorView, View};
        let view = || View { buf: BufId(0), offset: Default::default() };
        let launch = |k: u32| Step::Launch { kernel: KernelId(k), args: vec![view()] };
        let call = AttentionCall { scale: 1.0, causal: None, group: 1, mask: crate::AttnMask::None, dropout: 0.0 };
        let program = |steps: Vec<Step>, shape: Vec<u64>| Program {
            buffers: vec![Buffer { dtype: DType::F32, len: 4, kind: BufKind::Temp, name: "b".into() }],
            kernels: vec![with_body(vec![]), with_body(vec![]), with_body(vec![])],
            steps,
            intrinsics: vec![Intrinsic {
                op: IntrinsicOp::Attention(call.clone()),
                kernels: 1..3,
                args: vec![],
                results: vec![TensorView::dense(BufId(0), Default::default(), shape)],
            }],
            checks: vec![],
        };
        assert_eq!(super::program(&program(vec![launch(0), launch(1), launch(2)], vec![4])), Ok(()));
        let apart = program(vec![launch(1), Step::Copy { dst: view(), src: view(), len: 1 }, launch(2)], vec![4]);
        assert!(super::program(&apart).unwrap_err().msg.contains("not launched together"));
        let twice = program(vec![launch(1), launch(2), launch(1), launch(2)], vec![4]);
        assert!(super::program(&twice).unwrap_err().msg.contains("launched 2 times"));
        let never = program(vec![launch(0)], vec![4]);
        assert!(super::program(&never).unwrap_err().msg.contains("launched 0 times"));
        let too_big = program(vec![launch(1), launch(2)], vec![5]);
        assert!(super::program(&too_big).unwrap_err().msg.contains("past the end"));
    }

    #[test]
    fn if_needs_a_bool_and_scopes_its_body() {
        let (c, x) = (Var(0), Var(1));
        let cond = Expr::Cmp(crate::CmpOp::Lt, Box::new(Expr::Tile), Box::new(Expr::idx(1)));
        let def = Stmt::Let { var: x, value: Expr::Const(1.0, DType::F32) };
        let use_x = Stmt::Store { mem: Mem::Arg(0), index: Expr::idx(0), value: Expr::Var(x) };
        let ok = with_body(vec![Stmt::If { cond: cond.clone(), body: vec![def.clone(), use_x.clone()] }]);
        assert_eq!(kernel(&ok), Ok(()));
        let leaks = with_body(vec![Stmt::If { cond: cond.clone(), body: vec![def.clone()] }, use_x.clone()]);
        assert!(kernel(&leaks).unwrap_err().msg.contains("before it is defined"));
        let not_bool = with_body(vec![Stmt::Let { var: c, value: Expr::Tile }, Stmt::If { cond: Expr::Var(c), body: vec![] }]);
        assert!(kernel(&not_bool).unwrap_err().msg.contains("must be bool"));
    }
}
