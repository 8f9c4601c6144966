//! VJP of `scan`: a backward `scan` over the reversed sequence.
//!
//! The forward copy of an active scan with carries is augmented (in
//! `Sweep::copy_forward`) to emit each step's *incoming* carries, stacked
//! after its own results. The backward scan then runs over the steps in
//! reverse (the IR has no reverse op: sequences are reversed by gathering
//! along axis 0 with the indices `len-1-iota`) and per step:
//!
//! 1. rematerializes the forward body from the saved carries, that step's
//!    sequence slices and the captures (the body is recomputed, not saved:
//!    per-step memory is only the carries);
//! 2. seeds the body's new-carry results with the carry adjoints and its
//!    emitted results with that step's emit adjoints, and runs the body's
//!    own reverse sweep (recursively, so nested scans work);
//! 3. carries on the adjoints of the incoming carries, plus running sums
//!    of the gradients of the captures and of the parameters used inside
//!    the body (a parameter read inside a body gets one contribution per
//!    step), and emits the adjoints of its sequence slices.
//!
//! The emitted slice adjoints come out in reversed order and are
//! un-reversed with the same gather. A layer stack is this case exactly:
//! its stacked parameters are sequences, so their gradient is the stack of
//! per-layer slice gradients.

use super::build::B;
use super::{scan_activity, used_params, AutodiffError, Sweep};
use crate::{Op, TensorType, Type, ValueId};
use std::collections::BTreeSet;

/// Adjoints of the arguments of scan node `v`, given the adjoints `dys` of
/// its result tuple's elements. Gradients of parameters used inside the
/// body go straight to `sw`.
pub(super) fn vjp(sw: &mut Sweep, v: ValueId, dys: &[Option<ValueId>]) -> Result<Vec<Option<ValueId>>, AutodiffError> {
    let node = sw.g.node(v).clone();
    let Op::Scan { body, n_carry, n_seq } = &node.op else { unreachable!("dispatched by op") };
    let (nc, ns) = (*n_carry as usize, *n_seq as usize);
    let nk = node.args.len() - nc - ns;
    let n_emit = match sw.saved.get(&v) {
        Some(&first) => first as usize - nc,
        None => body.outputs.len() - nc,
    };
    let arg_ty: Vec<TensorType> = node.args.iter().map(|&a| sw.g.tensor_type(a).clone()).collect();
    let arg_act: Vec<bool> = node.args.iter().map(|&a| sw.active(a)).collect();
    let sa = scan_activity(sw.cx, body, nc, &arg_act);
    let body_act = super::activity(sw.cx, body, &sa.inputs);
    let out_active = |o: ValueId| body_act[o.index()][0];

    // The backward loop's state: active carries' adjoints, then running
    // sums for active captures and for selected params used in the body.
    let carries: Vec<usize> = (0..nc).filter(|&j| sa.inputs[j]).collect();
    let captures: Vec<usize> = (0..nk).filter(|&k| arg_act[nc + ns + k]).collect();
    let mut used = BTreeSet::new();
    used_params(body, &mut used);
    let params: Vec<u32> = used
        .into_iter()
        .filter(|&p| sw.cx.params[p as usize] && sw.cx.m.params[p as usize].ty.dtype.is_float())
        .collect();
    let emits: Vec<usize> =
        (0..n_emit).filter(|&e| dys[nc + e].is_some() && out_active(body.outputs[nc + e])).collect();
    let seqs: Vec<usize> = (0..ns).filter(|&i| arg_act[nc + i]).collect();
    let flows = carries.iter().any(|&j| dys[j].is_some()) || !emits.is_empty();
    if !flows {
        return Ok(vec![None; node.args.len()]);
    }

    let n_carry2 = carries.len() + captures.len() + params.len();
    let n_seq2 = nc + ns + emits.len();
    let len = arg_ty[nc].shape[0].clone();
    let slice_ty = |t: &TensorType| TensorType::new(t.dtype, t.shape[1..].to_vec());

    // Outer side: initial state, and the reversed sequences.
    let mut b = B::new(&mut sw.g);
    let rev = b.reverse_index(&len);
    let mut inits = Vec::with_capacity(n_carry2);
    for &j in &carries {
        inits.push(match dys[j] {
            Some(d) => d,
            None => b.zeros(&arg_ty[j]),
        });
    }
    for &k in &captures {
        inits.push(b.zeros(&arg_ty[nc + ns + k]));
    }
    for &p in &params {
        inits.push(b.zeros(&sw.cx.m.params[p as usize].ty));
    }
    let mut seq_args = Vec::with_capacity(n_seq2);
    if nc > 0 {
        let first = *sw.saved.get(&v).expect("active scans with carries are augmented");
        for j in 0..nc {
            let saved = b.extract(v, first + j as u32);
            seq_args.push(b.reverse(saved, rev));
        }
    }
    for i in 0..ns {
        seq_args.push(b.reverse(node.args[nc + i], rev));
    }
    for &e in &emits {
        let d = dys[nc + e].expect("filtered on Some");
        seq_args.push(b.reverse(d, rev));
    }
    let capture_args: Vec<ValueId> = node.args[nc + ns..].to_vec();

    // The backward body: the forward body's copy reads saved carries,
    // slices and captures from the backward body's inputs.
    let mut inputs: Vec<TensorType> = inits.iter().map(|&x| b.ty(x)).collect();
    inputs.extend(seq_args.iter().map(|&x| slice_ty(&b.ty(x))));
    inputs.extend(capture_args.iter().map(|&x| b.ty(x)));
    let remap = move |j: u32| {
        let j = j as usize;
        let k = if j < nc + ns { n_carry2 + j } else { n_carry2 + n_seq2 + (j - nc - ns) };
        k as u32
    };
    let roots: Vec<ValueId> =
        carries.iter().map(|&j| body.outputs[j]).chain(emits.iter().map(|&e| body.outputs[nc + e])).collect();
    let mut inner = Sweep::new(sw.cx, body, inputs.clone(), &sa.inputs, &remap, &roots);
    let state: Vec<ValueId> =
        (0..n_carry2).map(|i| inner.g.push_tensor(Op::Input { index: i as u32 }, vec![], inputs[i].clone())).collect();
    for (q, &j) in carries.iter().enumerate() {
        inner.seed(body.outputs[j], state[q]);
    }
    for (q, &e) in emits.iter().enumerate() {
        let at = n_carry2 + nc + ns + q;
        let d = inner.g.push_tensor(Op::Input { index: at as u32 }, vec![], inputs[at].clone());
        inner.seed(body.outputs[nc + e], d);
    }
    inner.run()?;
    let mut outs = Vec::with_capacity(n_carry2 + seqs.len());
    for &j in &carries {
        let d = inner.input_grads.get(&remap(j as u32)).copied();
        outs.push(d.unwrap_or_else(|| B::new(&mut inner.g).zeros(&arg_ty[j])));
    }
    for (q, &k) in captures.iter().enumerate() {
        let d = inner.input_grads.get(&remap((nc + ns + k) as u32)).copied();
        outs.push(accumulate(&mut inner.g, state[carries.len() + q], d));
    }
    for (q, &p) in params.iter().enumerate() {
        let d = inner.param_grads.get(&p).copied();
        outs.push(accumulate(&mut inner.g, state[carries.len() + captures.len() + q], d));
    }
    for &i in &seqs {
        let d = inner.input_grads.get(&remap((nc + i) as u32)).copied();
        outs.push(d.unwrap_or_else(|| B::new(&mut inner.g).zeros(&slice_ty(&arg_ty[nc + i]))));
    }
    let mut bbody = inner.g;
    bbody.outputs = outs;

    // The backward scan, and its results mapped back to the forward arguments.
    let mut tuple: Vec<TensorType> = inputs[..n_carry2].to_vec();
    tuple.extend(seqs.iter().map(|&i| arg_ty[nc + i].clone()));
    let mut args = inits;
    args.extend(seq_args);
    args.extend(capture_args);
    let op = Op::Scan { body: Box::new(bbody), n_carry: n_carry2 as u32, n_seq: n_seq2 as u32 };
    let back = sw.g.push(op, args, Type::Tuple(tuple));
    let mut b = B::new(&mut sw.g);
    let mut contribs = vec![None; node.args.len()];
    for (q, &j) in carries.iter().enumerate() {
        if arg_act[j] {
            contribs[j] = Some(b.extract(back, q as u32));
        }
    }
    for (q, &k) in captures.iter().enumerate() {
        contribs[nc + ns + k] = Some(b.extract(back, (carries.len() + q) as u32));
    }
    let mut param_grads = Vec::with_capacity(params.len());
    for (q, &p) in params.iter().enumerate() {
        param_grads.push((p, b.extract(back, (carries.len() + captures.len() + q) as u32)));
    }
    for (q, &i) in seqs.iter().enumerate() {
        let reversed = b.extract(back, (n_carry2 + q) as u32);
        contribs[nc + i] = Some(b.reverse(reversed, rev));
    }
    for (p, d) in param_grads {
        sw.add_param_grad(p, d);
    }
    Ok(contribs)
}

/// `sum + d`, or `sum` when there is no contribution.
fn accumulate(g: &mut crate::Graph, sum: ValueId, d: Option<ValueId>) -> ValueId {
    match d {
        Some(d) => B::new(g).add(sum, d),
        None => sum,
    }
}
