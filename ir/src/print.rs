//! The stable text form of the IR, used by file tests and `kiln ir`.
//!
//! ```text
//! param wte: f32[512, 256] = normal(0, 0.02)
//! fn forward(tokens: i32[B, T]) -> (logits) {
//!   %0 = input 0 : i32[B, T]
//!   ...
//!   return %41
//! }
//! ```

use crate::{Function, Graph, Init, Module, Op};
use std::fmt::Write;

/// Renders a whole module: its parameters, then each entry point.
pub fn module(m: &Module) -> String {
    let mut s = String::new();
    for p in &m.params {
        let stacked = if p.stack.is_some() { " stacked" } else { "" };
        writeln!(s, "param{stacked} {}: {} = {}", p.name, p.ty, init(&p.init)).unwrap();
    }
    for f in &m.functions {
        if !s.is_empty() {
            s.push('\n');
        }
        s.push_str(&function(m, f));
    }
    s
}

/// Renders one entry point.
pub fn function(m: &Module, f: &Function) -> String {
    let mut s = String::new();
    let args: Vec<String> =
        f.arg_names.iter().zip(&f.graph.inputs).map(|(n, t)| format!("{n}: {t}")).collect();
    write!(s, "fn {}({}) -> ({})", f.name, args.join(", "), f.output_names.join(", ")).unwrap();
    for c in &f.constraints {
        write!(s, "\n  where {}", c.text).unwrap();
    }
    s.push_str(" {\n");
    graph_body(m, &f.graph, 1, &mut s);
    s.push_str("}\n");
    s
}

fn init(i: &Init) -> String {
    match i {
        Init::Normal { mean, std } => format!("normal({mean}, {std})"),
        Init::Uniform { low, high } => format!("uniform({low}, {high})"),
        Init::Constant(c) => format!("constant({c})"),
    }
}

/// The bracketed attributes of an op, e.g. `[axis=2]`.
fn attrs(m: &Module, op: &Op) -> String {
    let list = |v: &[u32]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ");
    match op {
        Op::Input { index } => format!(" {index}"),
        Op::Param { index } => {
            format!(" {}", m.params.get(*index as usize).map_or("?", |p| p.name.as_str()))
        }
        Op::Const { value } => format!(" {value}"),
        Op::Iota { axis } | Op::Softmax { axis } | Op::LogSoftmax { axis } | Op::Concat { axis } | Op::Gather { axis } => {
            format!("[axis={axis}]")
        }
        Op::Transpose { perm } => format!("[{}]", list(perm)),
        Op::Reduce { axes, keepdim, .. } => {
            format!("[axes=[{}]{}]", list(axes), if *keepdim { ", keepdim" } else { "" })
        }
        Op::LayerNorm { eps } | Op::RmsNorm { eps } => format!("[eps={eps}]"),
        Op::Dropout { p } => format!("[p={p}]"),
        Op::Slice { axis, start, end, step } => format!("[axis={axis}, {start}..{end}, step={step}]"),
        Op::Scan { n_carry, n_seq, .. } => format!("[carry={n_carry}, seq={n_seq}]"),
        Op::Extract { index } => format!("[{index}]"),
        Op::Attention(a) | Op::AttentionGrad(a) => format!("[{a}]"),
        _ => String::new(),
    }
}

fn graph_body(m: &Module, g: &Graph, depth: usize, s: &mut String) {
    let pad = "  ".repeat(depth);
    for (i, n) in g.nodes.iter().enumerate() {
        let args: Vec<String> = n.args.iter().map(|a| a.to_string()).collect();
        let sep = if args.is_empty() { "" } else { " " };
        write!(s, "{pad}%{i} = {}{}{sep}{} : {}", n.op.name(), attrs(m, &n.op), args.join(", "), n.ty).unwrap();
        if let Op::Scan { body, .. } = &n.op {
            s.push_str(" {\n");
            graph_body(m, body, depth + 1, s);
            writeln!(s, "{pad}}}").unwrap();
        } else {
            s.push('\n');
        }
    }
    let outs: Vec<String> = g.outputs.iter().map(|o| o.to_string()).collect();
    writeln!(s, "{pad}return {}", outs.join(", ")).unwrap();
}
