//! Named rule conditions, implemented in Rust. A guard reads the classes
//! bound to its input variables (their types and constant facts) and may
//! bind its output variables to new classes (attention attributes, a
//! transposed view). Guards only read facts that hold for a class's value,
//! so they stay sound when classes merge.

use super::analysis::{leaf, tensor, Fact, EG};
use super::lang::{Attr, ENode};
use crate::{AttnMask, AttnVariant, Attention, DimExpr, TensorType};
use egg::{Id, Subst, Var};

/// A guard: reads `vars[..n_in]`, binds `vars[n_in..]`; false rejects the match.
pub type GuardFn = fn(&mut EG, &mut Subst, &[Var]) -> bool;

/// A guard's name, counts of input and output variables, and function.
pub struct Guard {
    /// The name rules call it by.
    pub name: &'static str,
    /// Variables it reads.
    pub n_in: usize,
    /// Variables it binds.
    pub n_out: usize,
    /// The check.
    pub run: GuardFn,
}

/// Every guard rules may use.
pub const GUARDS: &[Guard] = &[
    Guard { name: "keys", n_in: 1, n_out: 1, run: keys },
    Guard { name: "plain", n_in: 0, n_out: 1, run: plain },
    Guard { name: "scale", n_in: 2, n_out: 1, run: |eg, s, v| scale_by(eg, s, v, false) },
    Guard { name: "scale-recip", n_in: 2, n_out: 1, run: |eg, s, v| scale_by(eg, s, v, true) },
    Guard { name: "neg-inf", n_in: 1, n_out: 0, run: neg_inf },
    Guard { name: "causal-keep", n_in: 2, n_out: 1, run: |eg, s, v| causal(eg, s, v, Form::Keep) },
    Guard { name: "causal-drop", n_in: 2, n_out: 1, run: |eg, s, v| causal(eg, s, v, Form::Drop) },
    Guard { name: "causal-bias", n_in: 2, n_out: 1, run: |eg, s, v| causal(eg, s, v, Form::Bias) },
    Guard { name: "keep-mask", n_in: 2, n_out: 1, run: |eg, s, v| mask(eg, s, v, AttnMask::Keep) },
    Guard { name: "bias", n_in: 2, n_out: 1, run: |eg, s, v| mask(eg, s, v, AttnMask::Bias) },
    Guard { name: "last-axis", n_in: 2, n_out: 0, run: last_axis },
    Guard { name: "fuse", n_in: 4, n_out: 1, run: fuse },
    Guard { name: "fuse-masked", n_in: 5, n_out: 1, run: fuse },
    Guard { name: "dropout", n_in: 2, n_out: 1, run: with_dropout },
    Guard { name: "fuse-dropout", n_in: 5, n_out: 1, run: fuse },
    Guard { name: "fuse-masked-dropout", n_in: 6, n_out: 1, run: fuse },
    Guard { name: "group-broadcast", n_in: 4, n_out: 1, run: group_broadcast },
    Guard { name: "group-repeat", n_in: 10, n_out: 1, run: group_repeat },
    Guard { name: "compose", n_in: 2, n_out: 1, run: compose },
    Guard { name: "identity", n_in: 1, n_out: 0, run: identity },
    Guard { name: "permuted-type", n_in: 3, n_out: 1, run: permuted_type },
];

/// The guard called `name`.
pub fn find(name: &str) -> Option<&'static Guard> {
    GUARDS.iter().find(|g| g.name == name)
}

fn attn(eg: &EG, id: Id) -> Option<Attention> {
    match leaf(eg, id)? {
        Attr::Attn(i) => Some(eg.analysis.tables.attns[i as usize].clone()),
        _ => None,
    }
}

fn ints(eg: &EG, id: Id) -> Option<Vec<u32>> {
    match leaf(eg, id)? {
        Attr::Ints(i) => Some(eg.analysis.tables.ints[i as usize].clone()),
        _ => None,
    }
}

fn bind_attn(eg: &mut EG, s: &mut Subst, var: Var, a: Attention) -> bool {
    let l = eg.analysis.tables.attn(a);
    s.insert(var, eg.add(ENode::Leaf(l)));
    true
}

fn bind_ints(eg: &mut EG, v: Vec<u32>) -> Id {
    let l = eg.analysis.tables.ints(v);
    eg.add(ENode::Leaf(l))
}

fn constant(eg: &EG, id: Id) -> Option<f64> {
    match eg[id].data.fact {
        Fact::Const(c) => Some(c),
        _ => None,
    }
}

/// `keys(?kt, ?k)`: `?kt` is `[..., D, Sk]`; binds `?k` to its transpose
/// `[..., Sk, D]` (layout rules fold a transpose of a transpose).
fn keys(eg: &mut EG, s: &mut Subst, v: &[Var]) -> bool {
    let Some(r) = tensor(eg, s[v[0]]).map(|t| t.rank()) else { return false };
    if r < 2 {
        return false;
    }
    let mut perm: Vec<u32> = (0..r as u32).collect();
    perm.swap(r - 2, r - 1);
    let p = bind_ints(eg, perm);
    let k = eg.add(ENode::Op("transpose", vec![p, s[v[0]]]));
    s.insert(v[1], k);
    true
}

/// `plain(?a)`: unscaled, unmasked scores.
fn plain(eg: &mut EG, s: &mut Subst, v: &[Var]) -> bool {
    let a = Attention { scale: 1.0, causal: None, mask: AttnMask::None, group: 1, dropout: 0.0, variant: AttnVariant::Fa2 };
    bind_attn(eg, s, v[0], a)
}

/// `scale(?a, ?c, ?b)`: `?c` is a constant fill; `?b` scales by it (or by
/// its reciprocal). Scaling after a bias would scale the bias, and a
/// non-positive factor after `-inf` masking would flip or erase it.
fn scale_by(eg: &mut EG, s: &mut Subst, v: &[Var], recip: bool) -> bool {
    let (Some(mut a), Some(c)) = (attn(eg, s[v[0]]), constant(eg, s[v[1]])) else { return false };
    let c = if recip { 1.0 / c } else { c };
    let masked = a.causal.is_some() || a.mask != AttnMask::None;
    if !c.is_finite() || c == 0.0 || a.mask == AttnMask::Bias || masked && c < 0.0 {
        return false;
    }
    a.scale *= c;
    bind_attn(eg, s, v[2], a)
}

fn neg_inf(eg: &mut EG, s: &mut Subst, v: &[Var]) -> bool {
    constant(eg, s[v[0]]) == Some(f64::NEG_INFINITY)
}

/// How a causal triangle appears.
enum Form {
    /// `where(keep, s, -inf)` with `keep` the visible keys.
    Keep,
    /// `where(drop, -inf, s)` with `drop` the hidden keys.
    Drop,
    /// `s + m` with `m` 0 on visible keys and `-inf` elsewhere.
    Bias,
}

/// `causal-*(?a, ?m, ?b)`: `?m` is a triangle over (query, key) that keeps
/// exactly the keys `j <= i + c`; `?b` adds that causal mask.
fn causal(eg: &mut EG, s: &mut Subst, v: &[Var], form: Form) -> bool {
    let Some(mut a) = attn(eg, s[v[0]]) else { return false };
    let ninf = f64::NEG_INFINITY;
    let c = match (form, eg[s[v[1]]].data.fact.clone()) {
        (Form::Keep, Fact::Tri { lower: true, c }) => c,
        (Form::Drop, Fact::Tri { lower: false, c }) => c - 1,
        (Form::Bias, Fact::TriFill { lower: true, c, inside, outside }) if inside == 0.0 && outside == ninf => c,
        (Form::Bias, Fact::TriFill { lower: false, c, inside, outside }) if inside == ninf && outside == 0.0 => {
            c - 1
        }
        _ => return false,
    };
    let c = DimExpr::constant(c);
    if a.causal.as_ref().is_some_and(|old| *old != c) {
        return false;
    }
    a.causal = Some(c);
    bind_attn(eg, s, v[2], a)
}

/// `keep-mask(?a, ?m, ?b)` / `bias(?a, ?m, ?b)`: `?m` becomes the mask
/// argument. A bias must not read parameters: the fused backward has no
/// gradient for it.
fn mask(eg: &mut EG, s: &mut Subst, v: &[Var], kind: AttnMask) -> bool {
    let Some(mut a) = attn(eg, s[v[0]]) else { return false };
    if a.mask != AttnMask::None || kind == AttnMask::Bias && eg[s[v[1]]].data.uses_param {
        return false;
    }
    a.mask = kind;
    bind_attn(eg, s, v[2], a)
}

/// `last-axis(?ax, ?q)`: the softmax axis is the scores' last (the scores
/// have the rank of `q`).
fn last_axis(eg: &mut EG, s: &mut Subst, v: &[Var]) -> bool {
    let rank = tensor(eg, s[v[1]]).map(|t| t.rank() as i64);
    matches!((leaf(eg, s[v[0]]), rank), (Some(Attr::Int(ax)), Some(r)) if ax == r - 1)
}

/// `dropout(?a, ?p, ?b)`: `?b` is `?a` with dropout `?p` (a positive
/// probability) on the probabilities.
fn with_dropout(eg: &mut EG, s: &mut Subst, v: &[Var]) -> bool {
    let (Some(mut a), Some(Attr::Num(p))) = (attn(eg, s[v[0]]), leaf(eg, s[v[1]])) else { return false };
    let p = f64::from_bits(p);
    if a.dropout != 0.0 || !(p > 0.0 && p < 1.0) {
        return false;
    }
    a.dropout = p;
    bind_attn(eg, s, v[2], a)
}

/// `fuse(?a, ?q, ?k, ?v[, ?m][, ?seed], ?f)`: the attention node's attributes, with
/// the requested variant, if its type rule accepts the arguments.
fn fuse(eg: &mut EG, s: &mut Subst, v: &[Var]) -> bool {
    let Some(mut a) = attn(eg, s[v[0]]) else { return false };
    a.variant = eg.analysis.variant.unwrap_or(AttnVariant::Fa2);
    let args = &v[1..v.len() - 1];
    let tys: Option<Vec<TensorType>> = args.iter().map(|&x| tensor(eg, s[x]).cloned()).collect();
    let Some(tys) = tys else { return false };
    if a.forward_types(&tys.iter().collect::<Vec<_>>()).is_err() {
        return false;
    }
    bind_attn(eg, s, v[v.len() - 1], a)
}

fn ty_leaf(eg: &EG, id: Id) -> Option<TensorType> {
    match leaf(eg, id)? {
        Attr::Ty(i) => eg.analysis.tables.types[i as usize].tensor().cloned(),
        _ => None,
    }
}

/// `a` with `group` query heads per key/value head, if `a` has none yet
/// and the node's type rule accepts the new key/value arguments.
fn regroup(eg: &mut EG, s: &mut Subst, a: Id, q: Id, kv: [Id; 2], group: i64, out: Var) -> bool {
    let (Some(mut a), Some(q), Some(k), Some(v)) =
        (attn(eg, a), tensor(eg, q).cloned(), tensor(eg, kv[0]).cloned(), tensor(eg, kv[1]).cloned())
    else {
        return false;
    };
    if a.group != 1 || group < 2 {
        return false;
    }
    a.group = group as u32;
    // The mask (if any) keeps the query heads' shape, which the type rule
    // checks; the seed (if any) is a scalar.
    let probe = Attention { mask: AttnMask::None, dropout: 0.0, ..a.clone() };
    probe.forward_types(&[&q, &k, &v]).is_ok() && bind_attn(eg, s, out, a)
}

/// `group-broadcast(?a, ?q, ?k, ?v, ?b)`: k and v have a single head that a
/// broadcast repeats for every query head (multi-query attention).
fn group_broadcast(eg: &mut EG, s: &mut Subst, v: &[Var]) -> bool {
    let (Some(q), Some(k), Some(val)) = (tensor(eg, s[v[1]]), tensor(eg, s[v[2]]), tensor(eg, s[v[3]])) else {
        return false;
    };
    let r = q.rank();
    if r < 3 || k.rank() != r || val.rank() != r || k.shape[r - 3] != DimExpr::constant(1) || val.shape[r - 3] != k.shape[r - 3] {
        return false;
    }
    let Some(h) = q.shape[r - 3].as_const() else { return false };
    regroup(eg, s, s[v[0]], s[v[1]], [s[v[2]], s[v[3]]], h, v[4])
}

/// The repeat factor of `reshape(broadcast(reshape(x)))` with types
/// `w, u, t`, if it is the interleaving repeat of x's head axis (axis
/// `r - 3`): `[.., H, S, D] -> [.., H, 1, S, D] -> [.., H, g, S, D] -> [.., H*g, S, D]`.
fn repeat_factor(x: &TensorType, w: &TensorType, u: &TensorType, t: &TensorType) -> Option<i64> {
    let r = x.rank();
    if r < 3 || w.rank() != r + 1 || u.rank() != r + 1 || t.rank() != r {
        return None;
    }
    let g = u.shape[r - 2].as_const()?;
    let mut want_w = x.shape.clone();
    want_w.insert(r - 2, DimExpr::constant(1));
    let mut want_u = x.shape.clone();
    want_u.insert(r - 2, DimExpr::constant(g));
    let mut want_t = x.shape.clone();
    want_t[r - 3] = x.shape[r - 3].scale(g);
    (w.shape == want_w && u.shape == want_u && t.shape == want_t).then_some(g)
}

/// `group-repeat(?a, ?q, ?k, ?w, ?u, ?t, ?v, ?w2, ?u2, ?t2, ?b)`: k and v are
/// repeated per query-head group (grouped-query attention).
fn group_repeat(eg: &mut EG, s: &mut Subst, v: &[Var]) -> bool {
    let tys = |eg: &EG, i: usize| -> Option<[TensorType; 4]> {
        Some([tensor(eg, s[v[i]])?.clone(), ty_leaf(eg, s[v[i + 1]])?, ty_leaf(eg, s[v[i + 2]])?, ty_leaf(eg, s[v[i + 3]])?])
    };
    let (Some([k, kw, ku, kt]), Some([val, vw, vu, vt])) = (tys(eg, 2), tys(eg, 6)) else { return false };
    match (repeat_factor(&k, &kw, &ku, &kt), repeat_factor(&val, &vw, &vu, &vt)) {
        (Some(g), Some(h)) if g == h => regroup(eg, s, s[v[0]], s[v[1]], [s[v[2]], s[v[6]]], g, v[10]),
        _ => false,
    }
}

/// `compose(?p, ?r, ?pr)`: `transpose p (transpose r x)` is `transpose pr x`.
fn compose(eg: &mut EG, s: &mut Subst, v: &[Var]) -> bool {
    let (Some(p), Some(r)) = (ints(eg, s[v[0]]), ints(eg, s[v[1]])) else { return false };
    if p.len() != r.len() {
        return false;
    }
    let pr = p.iter().map(|&i| r[i as usize]).collect();
    let id = bind_ints(eg, pr);
    s.insert(v[2], id);
    true
}

fn identity(eg: &mut EG, s: &mut Subst, v: &[Var]) -> bool {
    ints(eg, s[v[0]]).is_some_and(|p| p.iter().enumerate().all(|(i, &a)| a as usize == i))
}

/// `permuted-type(?p, ?t, ?x, ?pt)`: a broadcast to type `?t` that keeps
/// `?x`'s rank commutes with a transpose `?p`; binds `?pt`, the permuted
/// broadcast type.
fn permuted_type(eg: &mut EG, s: &mut Subst, v: &[Var]) -> bool {
    let (Some(p), Some(t), Some(x)) = (ints(eg, s[v[0]]), ty_leaf(eg, s[v[1]]), tensor(eg, s[v[2]])) else {
        return false;
    };
    if x.rank() != t.rank() || p.len() != t.rank() {
        return false;
    }
    let pt = TensorType::new(t.dtype, p.iter().map(|&a| t.shape[a as usize].clone()).collect());
    let l = eg.analysis.tables.ty(crate::Type::Tensor(pt));
    s.insert(v[3], eg.add(ENode::Leaf(l)));
    true
}
