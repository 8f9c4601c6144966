//! The graphs under construction and the helpers that append nodes.
//!
//! Frame 0 is the entry point's graph; each enclosing `scan` body adds a
//! frame. A value from an outer frame used inside a body is captured: it
//! becomes a body input, and the scan node passes the outer value.

use super::scope::TVal;
use super::ty::{Axis, Ty};
use super::Checker;
use kiln_ir::{BinaryOp, DType, DimExpr, Graph, Op, ValueId};
use std::collections::HashMap;

/// One graph being built.
#[derive(Default)]
pub(crate) struct Frame {
    pub graph: Graph,
    /// (outer value, body input) pairs, in body-input order.
    pub captures: Vec<(ValueId, ValueId)>,
    /// Entry frames only: which input node is which argument, and the
    /// index bound recorded for integer arguments used as indices.
    pub arg_of: HashMap<ValueId, usize>,
    pub bounds: Vec<Option<DimExpr>>,
    /// A value accepted besides the bound (cross_entropy's `ignore_index`).
    pub ignore: Vec<Option<i64>>,
    /// Entry frames only: the hidden dropout seed argument, once a
    /// `dropout` needs it, and how many dropout sites there are so far.
    pub seed: Option<ValueId>,
    pub dropouts: u32,
    /// Scan bodies only: the number of carry and sequence inputs, and the
    /// step index (an extra sequence input), once a `dropout` needs it.
    pub seq_end: u32,
    pub step: Option<ValueId>,
}

/// Site offsets stay below this; a scan step's offset is a multiple of it.
const STEP_STRIDE: i64 = 1 << 20;

impl Checker<'_> {
    pub fn depth(&self) -> usize {
        self.frames.len() - 1
    }

    fn frame(&mut self) -> &mut Frame {
        self.frames.last_mut().expect("no graph frame")
    }

    /// The id of `v` in frame `depth`, capturing it through every frame in
    /// between.
    fn id_at(&mut self, v: &TVal, depth: usize) -> ValueId {
        if v.depth >= depth {
            return v.id;
        }
        let outer = self.id_at(v, depth - 1);
        let frame = &mut self.frames[depth];
        if let Some((_, inner)) = frame.captures.iter().find(|(o, _)| *o == outer) {
            return *inner;
        }
        let index = frame.graph.inputs.len() as u32;
        frame.graph.inputs.push(v.ty.ir());
        let inner = frame.graph.push_tensor(Op::Input { index }, vec![], v.ty.ir());
        frame.captures.push((outer, inner));
        inner
    }

    /// The id of `v` in the current graph (captured if it is from outside).
    pub fn capture(&mut self, v: &TVal) -> ValueId {
        let depth = self.depth();
        self.id_at(v, depth)
    }

    /// Appends a node to the current graph.
    pub fn emit(&mut self, op: Op, args: &[&TVal], ty: Ty) -> TVal {
        let depth = self.depth();
        let ids: Vec<ValueId> = args.iter().map(|a| self.id_at(a, depth)).collect();
        let id = self.frame().graph.push_tensor(op, ids, ty.ir());
        TVal { id, depth, ty }
    }

    /// The seed of a new dropout site: the entry's hidden seed argument
    /// (appended after the declared ones at the first site) plus the
    /// number of earlier sites, so that sites draw independent masks.
    /// Runtime seeds are below `2^52`; offsets stay below `2^51` for fewer
    /// than `2^20` sites and `2^31` steps, so every seed is exact in f64.
    pub fn dropout_seed(&mut self) -> TVal {
        let ty = Ty::new(DType::I64, vec![]);
        let entry = &mut self.frames[0];
        let id = *entry.seed.get_or_insert_with(|| {
            let index = entry.graph.inputs.len() as u32;
            entry.graph.inputs.push(ty.ir());
            entry.bounds.push(Some(DimExpr::constant(kiln_ir::rng::SEED_LIMIT as i64)));
            entry.ignore.push(None);
            entry.graph.push_tensor(Op::Input { index }, vec![], ty.ir())
        });
        let site = entry.dropouts;
        entry.dropouts += 1;
        let mut seed = TVal { id, depth: 0, ty: ty.clone() };
        if site > 0 {
            let k = self.konst(site as f64, DType::I64);
            seed = self.emit(Op::Binary(BinaryOp::Add), &[&seed, &k], ty.clone());
        }
        // In a scan body every step draws its own mask: the step index of
        // each enclosing scan, scaled past the site offsets, joins the seed.
        for d in 1..=self.depth() {
            let step = self.scan_step(d);
            let stride = self.konst(STEP_STRIDE as f64, DType::I64);
            let offset = self.emit(Op::Binary(BinaryOp::Mul), &[&step, &stride], ty.clone());
            seed = self.emit(Op::Binary(BinaryOp::Add), &[&seed, &offset], ty.clone());
        }
        seed
    }

    /// The step index of the scan whose body is frame `d`: a sequence
    /// input after the others (the scan passes `iota` for it), inserted
    /// before the captures on first use.
    fn scan_step(&mut self, d: usize) -> TVal {
        let ty = Ty::new(DType::I64, vec![]);
        let frame = &mut self.frames[d];
        let id = match frame.step {
            Some(id) => id,
            None => {
                let at = frame.seq_end;
                for n in &mut frame.graph.nodes {
                    if let Op::Input { index } = &mut n.op {
                        if *index >= at {
                            *index += 1;
                        }
                    }
                }
                frame.graph.inputs.insert(at as usize, ty.ir());
                let id = frame.graph.push_tensor(Op::Input { index: at }, vec![], ty.ir());
                frame.step = Some(id);
                id
            }
        };
        TVal { id, depth: d, ty }
    }

    /// A rank-0 constant.
    pub fn konst(&mut self, value: f64, dtype: DType) -> TVal {
        self.emit(Op::Const { value: dtype.round(value) }, &[], Ty::new(dtype, vec![]))
    }

    /// A constant filled to a shape.
    pub fn filled(&mut self, value: f64, dtype: DType, axes: &[Axis]) -> TVal {
        let c = self.konst(value, dtype);
        self.broadcast(&c, axes)
    }

    /// Numpy-broadcasts `v` to `axes` (no node when the shape already matches).
    pub fn broadcast(&mut self, v: &TVal, axes: &[Axis]) -> TVal {
        let ty = Ty::new(v.ty.dtype, axes.to_vec());
        if v.ty.sizes() == ty.sizes() {
            return TVal { ty, ..v.clone() };
        }
        self.emit(Op::Broadcast, &[v], ty)
    }

    /// Reshapes (no node when the shape already matches).
    pub fn reshape(&mut self, v: &TVal, axes: Vec<Axis>) -> TVal {
        let ty = Ty::new(v.ty.dtype, axes);
        if v.ty.sizes() == ty.sizes() {
            return TVal { ty, ..v.clone() };
        }
        self.emit(Op::Reshape, &[v], ty)
    }

    /// Permutes axes: output axis `i` is input axis `perm[i]` (no node for
    /// the identity).
    pub fn transpose(&mut self, v: &TVal, perm: &[usize]) -> TVal {
        let axes = perm.iter().map(|&p| v.ty.axes[p].clone()).collect();
        let ty = Ty::new(v.ty.dtype, axes);
        if perm.iter().enumerate().all(|(i, &p)| i == p) {
            return TVal { ty, ..v.clone() };
        }
        self.emit(Op::Transpose { perm: perm.iter().map(|&p| p as u32).collect() }, &[v], ty)
    }

    /// Converts to another dtype (no node when equal).
    pub fn cast(&mut self, v: &TVal, dtype: DType) -> TVal {
        if v.ty.dtype == dtype {
            return v.clone();
        }
        self.emit(Op::Cast, &[v], v.ty.with_dtype(dtype))
    }

    /// The entry argument `v` is, through casts (None for other values).
    fn entry_arg(&self, v: &TVal) -> Option<usize> {
        if v.depth != 0 {
            return None;
        }
        let frame = self.frames.first()?;
        let mut id = v.id;
        while let Op::Cast = frame.graph.node(id).op {
            id = frame.graph.node(id).args[0];
        }
        frame.arg_of.get(&id).copied()
    }

    /// Records that an entry argument is used as an index below `bound`.
    pub fn note_index_bound(&mut self, idx: &TVal, bound: &DimExpr) {
        let Some(arg) = self.entry_arg(idx) else { return };
        let slot = &mut self.frames[0].bounds[arg];
        if slot.as_ref().is_none_or(|b| b.as_const().zip(bound.as_const()).is_some_and(|(x, y)| y < x)) {
            *slot = Some(bound.clone());
        }
    }

    /// Records that an entry argument may also hold `value` (ignored targets).
    pub fn note_ignored_index(&mut self, idx: &TVal, value: i64) {
        if let Some(arg) = self.entry_arg(idx) {
            self.frames[0].ignore[arg] = Some(value);
        }
    }
}
