//! Index arithmetic for kernels: affine forms over variables with known
//! ranges, with the floor-division and remainder simplifications that turn
//! reshapes of exact splits back into plain strides.

use crate::kernel::{Expr, Var};
use crate::{BinaryOp, DType};
use std::collections::HashMap;

/// `constant + Σ coeff·var`, every var in `0..range`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Affine {
    pub constant: i64,
    pub terms: Vec<(Var, i64)>,
}

/// One axis index: affine when possible, else a general expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Ix {
    Aff(Affine),
    Ex(Expr),
}

/// The extent of every variable that can appear in an index.
pub type Ranges = HashMap<Var, u64>;

impl Affine {
    pub fn constant(c: i64) -> Affine {
        Affine { constant: c, terms: vec![] }
    }

    pub fn var(v: Var) -> Affine {
        Affine { constant: 0, terms: vec![(v, 1)] }
    }

    pub fn add(&self, o: &Affine) -> Affine {
        let mut r = self.clone();
        r.constant += o.constant;
        for (v, c) in &o.terms {
            match r.terms.iter_mut().find(|(w, _)| w == v) {
                Some(t) => t.1 += c,
                None => r.terms.push((*v, *c)),
            }
        }
        r.terms.retain(|(_, c)| *c != 0);
        r
    }

    pub fn scale(&self, k: i64) -> Affine {
        if k == 0 {
            return Affine::default();
        }
        Affine { constant: self.constant * k, terms: self.terms.iter().map(|(v, c)| (*v, c * k)).collect() }
    }

    /// The coefficient of `v`.
    pub fn coeff(&self, v: Var) -> i64 {
        self.terms.iter().find(|(w, _)| *w == v).map_or(0, |t| t.1)
    }

    /// The same form without the `v` term.
    pub fn without(&self, v: Var) -> Affine {
        Affine { constant: self.constant, terms: self.terms.iter().filter(|(w, _)| *w != v).copied().collect() }
    }

    fn bounds(&self, ranges: &Ranges) -> (i64, i64) {
        let (mut lo, mut hi) = (self.constant, self.constant);
        for (v, c) in &self.terms {
            let top = ranges.get(v).copied().unwrap_or(1).saturating_sub(1) as i64 * c;
            if top < 0 {
                lo += top;
            } else {
                hi += top;
            }
        }
        (lo, hi)
    }

    /// Splits into (multiples of d divided by d, the rest), the rest's
    /// constant reduced into `0..d`.
    fn split(&self, d: i64) -> (Affine, Affine) {
        let mut q = Affine::constant(self.constant.div_euclid(d));
        let mut r = Affine::constant(self.constant.rem_euclid(d));
        for (v, c) in &self.terms {
            if c % d == 0 {
                q.terms.push((*v, c / d));
            } else {
                r.terms.push((*v, *c));
            }
        }
        (q, r)
    }

    pub fn to_expr(&self) -> Expr {
        let mut e = Expr::idx(0);
        for (v, c) in &self.terms {
            e = Expr::add(e, Expr::mul(Expr::Var(*v), Expr::Const(*c as f64, DType::I64)));
        }
        Expr::add(e, Expr::Const(self.constant as f64, DType::I64))
    }
}

impl Ix {
    pub fn constant(c: i64) -> Ix {
        Ix::Aff(Affine::constant(c))
    }

    pub fn var(v: Var) -> Ix {
        Ix::Aff(Affine::var(v))
    }

    pub fn to_expr(&self) -> Expr {
        match self {
            Ix::Aff(a) => a.to_expr(),
            Ix::Ex(e) => e.clone(),
        }
    }

    pub fn add(&self, o: &Ix) -> Ix {
        match (self, o) {
            (Ix::Aff(a), Ix::Aff(b)) => Ix::Aff(a.add(b)),
            _ => Ix::Ex(Expr::add(self.to_expr(), o.to_expr())),
        }
    }

    pub fn scale(&self, k: i64) -> Ix {
        match self {
            Ix::Aff(a) => Ix::Aff(a.scale(k)),
            Ix::Ex(e) => Ix::Ex(Expr::mul(e.clone(), Expr::Const(k as f64, DType::I64))),
        }
    }

    /// Floor division by a positive constant (indices are non-negative).
    pub fn div(&self, d: i64, ranges: &Ranges) -> Ix {
        if d == 1 {
            return self.clone();
        }
        if let Ix::Aff(a) = self {
            let (q, r) = a.split(d);
            let (lo, hi) = r.bounds(ranges);
            if lo >= 0 && hi < d {
                return Ix::Aff(q);
            }
        }
        Ix::Ex(Expr::Binary(BinaryOp::Div, Box::new(self.to_expr()), Box::new(Expr::idx(d as u64))))
    }

    /// Remainder by a positive constant.
    pub fn rem(&self, d: i64, ranges: &Ranges) -> Ix {
        if d == 1 {
            return Ix::constant(0);
        }
        if let Ix::Aff(a) = self {
            let (lo, hi) = a.bounds(ranges);
            if lo >= 0 && hi < d {
                return self.clone();
            }
            let (_, r) = a.split(d);
            let (lo, hi) = r.bounds(ranges);
            if lo >= 0 && hi < d {
                return Ix::Aff(r);
            }
        }
        Ix::Ex(Expr::Rem(Box::new(self.to_expr()), Box::new(Expr::idx(d as u64))))
    }
}

/// Row-major strides of a shape.
pub fn strides(shape: &[u64]) -> Vec<u64> {
    let mut s = vec![1u64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// The flat index of a multi-index.
pub fn linearize(idx: &[Ix], shape: &[u64]) -> Ix {
    let st = strides(shape);
    idx.iter().zip(&st).fold(Ix::constant(0), |acc, (i, s)| acc.add(&i.scale(*s as i64)))
}

/// The multi-index of a flat index.
pub fn unravel(flat: &Ix, shape: &[u64], ranges: &Ranges) -> Vec<Ix> {
    if shape.contains(&0) {
        // No element to find (and strides of 0 to divide by): any index will do.
        return vec![Ix::constant(0); shape.len()];
    }
    let st = strides(shape);
    (0..shape.len())
        .map(|i| {
            let q = flat.div(st[i] as i64, ranges);
            if i == 0 {
                q
            } else {
                q.rem(shape[i] as i64, ranges)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_splits_stay_affine() {
        // [B=2, T=3, 256] viewed as [2, 3, 4, 64]: (b, t, h, d) -> b*768 + t*256 + h*64 + d.
        let (b, t, h, d) = (Var(0), Var(1), Var(2), Var(3));
        let ranges: Ranges = [(b, 2), (t, 3), (h, 4), (d, 64)].into_iter().collect();
        let idx = [Ix::var(b), Ix::var(t), Ix::var(h), Ix::var(d)];
        let flat = linearize(&idx, &[2, 3, 4, 64]);
        let back = unravel(&flat, &[2, 3, 256], &ranges);
        let Ix::Aff(last) = &back[2] else { panic!("not affine: {back:?}") };
        assert_eq!((last.coeff(h), last.coeff(d), last.coeff(t), last.constant), (64, 1, 0, 0));
        assert_eq!(back[0], Ix::var(b));
        assert_eq!(back[1], Ix::var(t));
    }

    #[test]
    fn zero_size_shapes_unravel_without_dividing() {
        let v = Var(0);
        let ranges: Ranges = [(v, 1)].into_iter().collect();
        assert_eq!(unravel(&Ix::var(v), &[2, 0, 1], &ranges), vec![Ix::constant(0); 3]);
    }

    #[test]
    fn inexact_splits_fall_back() {
        let v = Var(0);
        let ranges: Ranges = [(v, 10)].into_iter().collect();
        assert!(matches!(Ix::var(v).div(3, &ranges), Ix::Ex(_)));
        assert!(matches!(Ix::var(v).rem(3, &ranges), Ix::Ex(_)));
        assert_eq!(Ix::var(v).rem(16, &ranges), Ix::var(v));
        assert_eq!(Ix::var(v).div(16, &ranges), Ix::constant(0));
    }
}
