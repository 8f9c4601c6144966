//! The `scan` loop.

use super::error::{InterpError, OpError};
use super::tensor::{numel, shape_str};
use super::{Env, Tensor};
use crate::Graph;

/// One scan node, ready to run.
pub(crate) struct Scan<'a> {
    /// The loop body.
    pub body: &'a Graph,
    /// Number of carried values.
    pub n_carry: usize,
    /// Number of sequences.
    pub n_seq: usize,
    /// The node, for errors inside the body.
    pub desc: &'a str,
}

impl Scan<'_> {
    /// Runs the loop over the leading axis of the sequences. `shapes` are
    /// the result tuple's shapes: the carries', then `[len, ...]` per
    /// emitted value (which fixes the shape even when `len` is 0).
    pub(crate) fn run(&self, env: &Env, args: &[&Tensor], shapes: &[Vec<usize>]) -> Result<Vec<Tensor>, OpError> {
        let (nc, ns) = (self.n_carry, self.n_seq);
        let seqs = &args[nc..nc + ns];
        let len = seqs[0].shape[0];
        if let Some(s) = seqs.iter().find(|s| s.shape[0] != len) {
            return Err(format!("sequences have lengths {len} and {}", s.shape[0]).into());
        }
        let mut carries: Vec<Tensor> = args[..nc].iter().map(|&t| t.clone()).collect();
        let mut emits: Vec<Vec<f64>> = vec![Vec::new(); self.body.outputs.len() - nc];
        for step in 0..len {
            let mut inputs = carries.clone();
            inputs.extend(seqs.iter().map(|s| row(s, step)));
            inputs.extend(args[nc + ns..].iter().map(|&t| t.clone()));
            let outs = env.eval(self.body, &inputs).map_err(|e| {
                OpError::Full(InterpError::InScan { node: self.desc.to_string(), step, inner: Box::new(e) })
            })?;
            let mut outs = outs.into_iter();
            carries = outs.by_ref().take(nc).collect();
            for (data, e) in emits.iter_mut().zip(outs) {
                data.extend_from_slice(&e.data);
            }
        }
        let mut result = carries;
        for (j, data) in emits.into_iter().enumerate() {
            let shape = shapes[nc + j].clone();
            if data.len() != numel(&shape) {
                return Err(format!("emitted {} elements for result {}", data.len(), shape_str(&shape)).into());
            }
            let dtype = self.body.tensor_type(self.body.outputs[nc + j]).dtype;
            result.push(Tensor::new(dtype, shape, data));
        }
        Ok(result)
    }
}

/// Element `i` of a tensor's leading axis.
fn row(s: &Tensor, i: usize) -> Tensor {
    let inner = numel(&s.shape[1..]);
    Tensor::new(s.dtype, s.shape[1..].to_vec(), s.data[i * inner..(i + 1) * inner].to_vec())
}
