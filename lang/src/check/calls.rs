//! Which functions a function's body calls, read from the syntax tree, so
//! the checker can elaborate each function once from its outermost caller
//! instead of once per caller (a chain of n calls costs n, not n²).

use crate::ast::{self, ExprKind as K, IndexItem};

/// The names called in a function body (user functions and builtins alike),
/// with repeats.
pub(crate) fn callees(def: &ast::FnDef) -> Vec<&str> {
    let mut out = Vec::new();
    stmts(&def.body, &mut out);
    out
}

fn stmts<'a>(body: &'a [ast::Stmt], out: &mut Vec<&'a str>) {
    for s in body {
        match s {
            ast::Stmt::Let { value, .. } => expr(value, out),
            ast::Stmt::Return(e, _) => expr(e, out),
        }
    }
}

/// The walk is as deep as the tree, which the parser bounds (E0007).
fn expr<'a>(e: &'a ast::Expr, out: &mut Vec<&'a str>) {
    match &e.kind {
        K::Int(_) | K::Float(_) | K::Bool(_) | K::Name(_) | K::DType(_) => {}
        K::Field(x, _) | K::Unary(_, x) | K::Rearrange { input: x, .. } => expr(x, out),
        K::Binary(a, _, b) | K::Compare(a, _, b) => {
            expr(a, out);
            expr(b, out);
        }
        K::Call { func, args, kwargs } => {
            out.push(&func.name);
            args.iter().chain(kwargs.iter().map(|(_, e)| e)).for_each(|a| expr(a, out));
        }
        K::Index(x, items) => {
            expr(x, out);
            for it in items {
                match it {
                    IndexItem::At(e) => expr(e, out),
                    IndexItem::Range { start, end, step, .. } => [start, end, step].into_iter().flatten().for_each(|e| expr(e, out)),
                    IndexItem::Ellipsis(_) => {}
                }
            }
        }
        K::List(xs) | K::Tuple(xs) => xs.iter().for_each(|x| expr(x, out)),
        K::Einsum { operands, .. } => operands.iter().for_each(|(x, _)| expr(x, out)),
        K::Scan(s) => {
            s.seqs.iter().map(|q| &q.1).chain(s.carries.iter().map(|c| &c.1)).for_each(|x| expr(x, out));
            stmts(&s.body, out);
            s.next.iter().map(|n| &n.1).chain(&s.emit).for_each(|x| expr(x, out));
        }
    }
}
