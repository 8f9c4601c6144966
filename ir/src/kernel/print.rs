//! The text form of the kernel IR (`kiln ir --stage kernels`, file tests).

use super::{Access, Expr, Gemm, Kernel, Mem, Program, RedOp, Step, Stmt, View};
use crate::BinaryOp;
use std::fmt::Write;

/// Renders a program: buffers, host steps, then each kernel.
pub fn program(p: &Program) -> String {
    let mut s = String::new();
    for (i, b) in p.buffers.iter().enumerate() {
        writeln!(s, "buf b{i}: {}[{}] {:?} {}", b.dtype, b.len, b.kind, b.name).unwrap();
    }
    steps(p, &p.steps, 0, &mut s);
    for k in &p.kernels {
        s.push('\n');
        s.push_str(&kernel(k));
    }
    s
}

fn view(v: &View) -> String {
    let mut s = format!("b{}", v.buf.0);
    if v.offset.constant != 0 || !v.offset.terms.is_empty() {
        s.push_str(&format!("+{}", v.offset.constant));
        for (h, c) in &v.offset.terms {
            s.push_str(&format!("+{c}*i{}", h.0));
        }
    }
    s
}

fn steps(p: &Program, st: &[Step], depth: usize, s: &mut String) {
    let pad = "  ".repeat(depth);
    for x in st {
        match x {
            Step::Launch { kernel, args } => {
                let a: Vec<String> = args.iter().map(view).collect();
                writeln!(s, "{pad}launch {}({})", p.kernels[kernel.0 as usize].name, a.join(", ")).unwrap();
            }
            Step::Repeat { var, count, body } => {
                writeln!(s, "{pad}repeat i{} in 0..{count} {{", var.0).unwrap();
                steps(p, body, depth + 1, s);
                writeln!(s, "{pad}}}").unwrap();
            }
            Step::Copy { dst, src, len } => writeln!(s, "{pad}copy {} <- {} ({len})", view(dst), view(src)).unwrap(),
        }
    }
}

/// Renders one kernel.
pub fn kernel(k: &Kernel) -> String {
    let mut s = String::new();
    let args: Vec<String> = k
        .args
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let acc = match a.access {
                Access::Read => "in",
                Access::Write => "out",
                Access::ReadWrite => "inout",
            };
            format!("a{i}: {acc} {}[{}]", a.dtype, a.len)
        })
        .collect();
    writeln!(s, "kernel {}({}) grid {} {{", k.name, args.join(", "), k.grid).unwrap();
    for (i, sc) in k.scratch.iter().enumerate() {
        writeln!(s, "  scratch s{i}: {}[{}]", sc.dtype, sc.len).unwrap();
    }
    block(&k.body, 1, &mut s);
    s.push_str("}\n");
    s
}

fn mem(m: &Mem) -> String {
    match m {
        Mem::Arg(i) => format!("a{i}"),
        Mem::Scratch(i) => format!("s{i}"),
    }
}

fn gemm(g: &Gemm) -> String {
    let op = |o: &super::Operand| format!("{}[{} ; {}, {}]", mem(&o.mem), expr(&o.offset), o.row_stride, o.col_stride);
    format!("gemm {}x{}x{} {} {} {} @ {}", g.m, g.n, g.k, op(&g.c), if g.accumulate { "+=" } else { "=" }, op(&g.a), op(&g.b))
}

fn block(body: &[Stmt], depth: usize, s: &mut String) {
    let pad = "  ".repeat(depth);
    for st in body {
        match st {
            Stmt::Loop { var, extent, vector, body } => {
                writeln!(s, "{pad}for v{} in 0..{extent}{} {{", var.0, if *vector { " vector" } else { "" }).unwrap();
                block(body, depth + 1, s);
                writeln!(s, "{pad}}}").unwrap();
            }
            Stmt::Let { var, value } => writeln!(s, "{pad}v{} = {}", var.0, expr(value)).unwrap(),
            Stmt::Reduce { var, op, index, extent, vector, value } => {
                let op = match op {
                    RedOp::Sum => "sum",
                    RedOp::Max => "max",
                    RedOp::Min => "min",
                    RedOp::ArgMax => "argmax",
                };
                let v = if *vector { " vector" } else { "" };
                writeln!(s, "{pad}v{} = {op} v{} in 0..{extent}{v}: {}", var.0, index.0, expr(value)).unwrap()
            }
            Stmt::Store { mem: m, index, value } => writeln!(s, "{pad}{}[{}] = {}", mem(m), expr(index), expr(value)).unwrap(),
            Stmt::Gemm(g) => writeln!(s, "{pad}{}", gemm(g)).unwrap(),
            Stmt::If { cond, body } => {
                writeln!(s, "{pad}if {} {{", expr(cond)).unwrap();
                block(body, depth + 1, s);
                writeln!(s, "{pad}}}").unwrap();
            }
        }
    }
}

/// Renders an expression with infix arithmetic.
pub fn expr(e: &Expr) -> String {
    match e {
        Expr::Const(v, d) => {
            if d.is_float() {
                format!("{v:?}")
            } else {
                format!("{v}")
            }
        }
        Expr::Var(v) => format!("v{}", v.0),
        Expr::Tile => "tile".into(),
        Expr::Load(m, i) => format!("{}[{}]", mem(m), expr(i)),
        Expr::Unary(op, x) => format!("{}({})", format!("{op:?}").to_lowercase(), expr(x)),
        Expr::Binary(op, a, b) => {
            let sym = match op {
                BinaryOp::Add => "+",
                BinaryOp::Sub => "-",
                BinaryOp::Mul => "*",
                BinaryOp::Div => "/",
                _ => return format!("{}({}, {})", format!("{op:?}").to_lowercase(), expr(a), expr(b)),
            };
            format!("({} {sym} {})", expr(a), expr(b))
        }
        Expr::Rem(a, b) => format!("({} % {})", expr(a), expr(b)),
        Expr::Cmp(op, a, b) => format!("{}({}, {})", format!("{op:?}").to_lowercase(), expr(a), expr(b)),
        Expr::Select(c, a, b) => format!("select({}, {}, {})", expr(c), expr(a), expr(b)),
        Expr::Cast(d, x) => format!("{d}({})", expr(x)),
        Expr::Rand(seed, counter) => format!("rand({}, {})", expr(seed), expr(counter)),
        Expr::Checked(c) => format!("checked({}, 0..{}, site {} at {}, {})", expr(&c.index), c.bound, c.site, expr(&c.pos), mem(&c.status)),
    }
}
