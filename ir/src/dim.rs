//! Symbolic dimension expressions.
//!
//! A dimension is a polynomial with integer coefficients over dimension
//! variables (`B`, `T`, ...), where floor division and remainder by a
//! constant that cannot be simplified stay as opaque atoms. Polynomials are
//! kept in a canonical form (sorted monomials, no zero coefficients), so
//! `B*T` and `T*B` are the same value and equality is structural.
//!
//! Every variable stands for an integer `>= 1`; [`Facts`] adds what a
//! program states in `where` clauses. [`Facts::le`] and [`Facts::eq`]
//! answer [`Truth::Unknown`] when they can neither prove nor refute, and
//! the caller turns that into an error that names the comparison.

use std::collections::BTreeMap;
use std::fmt;
use std::rc::Rc;

/// An indivisible factor of a monomial.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Atom {
    Var(Rc<str>),
    FloorDiv(Box<DimExpr>, i64),
    Mod(Box<DimExpr>, i64),
}

/// A product of atoms with positive powers; the empty product is 1.
type Mono = Vec<(Atom, u32)>;

/// A symbolic dimension: a canonical polynomial over dimension variables.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct DimExpr {
    terms: BTreeMap<Mono, i64>,
}

/// The answer to a symbolic comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Truth {
    /// Holds for every value of the variables that satisfies the facts.
    True,
    /// Fails for every such value.
    False,
    /// Depends on the values.
    Unknown,
}

fn mono_mul(a: &Mono, b: &Mono) -> Mono {
    let mut m: BTreeMap<Atom, u32> = a.iter().cloned().collect();
    for (atom, p) in b {
        *m.entry(atom.clone()).or_insert(0) += p;
    }
    m.into_iter().collect()
}

impl DimExpr {
    /// The constant `c`.
    pub fn constant(c: i64) -> DimExpr {
        let mut terms = BTreeMap::new();
        if c != 0 {
            terms.insert(Vec::new(), c);
        }
        DimExpr { terms }
    }

    /// The variable `name`.
    pub fn var(name: &str) -> DimExpr {
        Self::atom(Atom::Var(Rc::from(name)))
    }

    fn atom(a: Atom) -> DimExpr {
        let mut terms = BTreeMap::new();
        terms.insert(vec![(a, 1)], 1);
        DimExpr { terms }
    }

    /// The value if the expression has no variables.
    pub fn as_const(&self) -> Option<i64> {
        match self.terms.len() {
            0 => Some(0),
            1 => self.terms.get(&Vec::new()).copied(),
            _ => None,
        }
    }

    /// The variable name if the expression is exactly one variable.
    pub fn as_var(&self) -> Option<&str> {
        let (mono, &c) = self.terms.iter().next()?;
        match (self.terms.len(), c, mono.as_slice()) {
            (1, 1, [(Atom::Var(v), 1)]) => Some(v),
            _ => None,
        }
    }

    /// `self + other`.
    pub fn add(&self, other: &DimExpr) -> DimExpr {
        let mut terms = self.terms.clone();
        for (m, c) in &other.terms {
            let e = terms.entry(m.clone()).or_insert(0);
            *e += c;
            if *e == 0 {
                terms.remove(m);
            }
        }
        DimExpr { terms }
    }

    /// `self - other`.
    pub fn sub(&self, other: &DimExpr) -> DimExpr {
        self.add(&other.scale(-1))
    }

    /// `c * self`.
    pub fn scale(&self, c: i64) -> DimExpr {
        if c == 0 {
            return DimExpr::default();
        }
        DimExpr { terms: self.terms.iter().map(|(m, k)| (m.clone(), k * c)).collect() }
    }

    /// `self * other`.
    pub fn mul(&self, other: &DimExpr) -> DimExpr {
        let mut out = DimExpr::default();
        for (ma, ca) in &self.terms {
            for (mb, cb) in &other.terms {
                let mut t = BTreeMap::new();
                t.insert(mono_mul(ma, mb), ca * cb);
                out = out.add(&DimExpr { terms: t });
            }
        }
        out
    }

    /// `self / c` when every coefficient is divisible by `c`, else `None`.
    pub fn div_exact(&self, c: i64) -> Option<DimExpr> {
        if c == 0 || self.terms.values().any(|k| k % c != 0) {
            return None;
        }
        Some(DimExpr { terms: self.terms.iter().map(|(m, k)| (m.clone(), k / c)).collect() })
    }

    /// Floor division by a positive constant: exact when divisible, folded
    /// when constant, an opaque atom otherwise.
    pub fn floor_div(&self, c: i64) -> DimExpr {
        assert!(c > 0, "floor_div by non-positive constant {c}");
        if let Some(q) = self.div_exact(c) {
            return q;
        }
        if let Some(v) = self.as_const() {
            return DimExpr::constant(v.div_euclid(c));
        }
        Self::atom(Atom::FloorDiv(Box::new(self.clone()), c))
    }

    /// Remainder by a positive constant: 0 when divisible, folded when
    /// constant, an opaque atom otherwise.
    pub fn modulo(&self, c: i64) -> DimExpr {
        assert!(c > 0, "modulo by non-positive constant {c}");
        if self.div_exact(c).is_some() {
            return DimExpr::default();
        }
        if let Some(v) = self.as_const() {
            return DimExpr::constant(v.rem_euclid(c));
        }
        Self::atom(Atom::Mod(Box::new(self.clone()), c))
    }

    /// Replaces variables by expressions; variables missing from `map` stay.
    pub fn subst(&self, map: &dyn Fn(&str) -> Option<DimExpr>) -> DimExpr {
        let mut out = DimExpr::default();
        for (mono, c) in &self.terms {
            let mut term = DimExpr::constant(*c);
            for (atom, p) in mono {
                let a = match atom {
                    Atom::Var(v) => map(v).unwrap_or_else(|| DimExpr::var(v)),
                    Atom::FloorDiv(e, k) => e.subst(map).floor_div(*k),
                    Atom::Mod(e, k) => e.subst(map).modulo(*k),
                };
                for _ in 0..*p {
                    term = term.mul(&a);
                }
            }
            out = out.add(&term);
        }
        out
    }

    /// Evaluates with concrete variable values; `Err(name)` names the first
    /// variable that `env` does not bind.
    pub fn eval(&self, env: &dyn Fn(&str) -> Option<i64>) -> Result<i64, String> {
        let missing = std::cell::RefCell::new(None);
        let e = self.subst(&|v| match env(v) {
            Some(x) => Some(DimExpr::constant(x)),
            None => {
                missing.borrow_mut().get_or_insert_with(|| v.to_string());
                None
            }
        });
        match (e.as_const(), missing.into_inner()) {
            (Some(v), _) => Ok(v),
            (None, Some(m)) => Err(m),
            (None, None) => Err(e.to_string()),
        }
    }

    /// The variables that occur in the expression, sorted, without repeats.
    pub fn vars(&self) -> Vec<String> {
        fn walk(e: &DimExpr, out: &mut Vec<String>) {
            for mono in e.terms.keys() {
                for (atom, _) in mono {
                    match atom {
                        Atom::Var(v) => out.push(v.to_string()),
                        Atom::FloorDiv(e, _) | Atom::Mod(e, _) => walk(e, out),
                    }
                }
            }
        }
        let mut out = Vec::new();
        walk(self, &mut out);
        out.sort();
        out.dedup();
        out
    }

    /// Lower bound of the expression's value given that every variable is at
    /// least 1 and every opaque atom at least 0, when all non-constant
    /// coefficients are non-negative; `None` otherwise.
    fn lower_bound(&self) -> Option<i64> {
        let mut lb = 0i64;
        for (mono, &c) in &self.terms {
            if mono.is_empty() {
                lb += c;
            } else if c < 0 {
                return None;
            } else if mono.iter().all(|(a, _)| matches!(a, Atom::Var(_))) {
                lb += c;
            }
        }
        Some(lb)
    }

    /// Upper bound, when every non-constant coefficient is non-positive.
    fn upper_bound(&self) -> Option<i64> {
        self.scale(-1).lower_bound().map(|v| -v)
    }
}

impl From<i64> for DimExpr {
    fn from(c: i64) -> DimExpr {
        DimExpr::constant(c)
    }
}

impl fmt::Display for Atom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Atom::Var(v) => f.write_str(v),
            Atom::FloorDiv(e, c) if e.terms.len() == 1 => write!(f, "{e} / {c}"),
            Atom::FloorDiv(e, c) => write!(f, "({e}) / {c}"),
            Atom::Mod(e, c) if e.terms.len() == 1 => write!(f, "{e} % {c}"),
            Atom::Mod(e, c) => write!(f, "({e}) % {c}"),
        }
    }
}

impl fmt::Display for DimExpr {
    /// Highest-degree terms first, then the constant: `2*B*T + T + 1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.terms.is_empty() {
            return f.write_str("0");
        }
        let mut terms: Vec<_> = self.terms.iter().collect();
        terms.sort_by_key(|(m, _)| std::cmp::Reverse(m.iter().map(|(_, p)| *p).sum::<u32>()));
        for (i, (mono, &c)) in terms.into_iter().enumerate() {
            let mag = c.abs();
            if i == 0 {
                if c < 0 {
                    f.write_str("-")?;
                }
            } else {
                f.write_str(if c < 0 { " - " } else { " + " })?;
            }
            let mut parts: Vec<String> = Vec::new();
            if mag != 1 || mono.is_empty() {
                parts.push(mag.to_string());
            }
            for (atom, p) in mono {
                let s = match atom {
                    Atom::Var(_) => atom.to_string(),
                    _ if mono.len() > 1 || mag != 1 => format!("({atom})"),
                    _ => atom.to_string(),
                };
                for _ in 0..*p {
                    parts.push(s.clone());
                }
            }
            f.write_str(&parts.join("*"))?;
        }
        Ok(())
    }
}

/// What a program states about its dimensions beyond "each is >= 1":
/// `where` clauses such as `T <= block`.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    /// Pairs `(a, b)` meaning `a <= b`.
    pub le: Vec<(DimExpr, DimExpr)>,
}

impl Facts {
    /// Is `a == b`? Canonical forms make equality structural; a difference
    /// that is a nonzero constant, or provably positive or negative, refutes.
    pub fn eq(&self, a: &DimExpr, b: &DimExpr) -> Truth {
        let d = a.sub(b);
        if d.terms.is_empty() {
            return Truth::True;
        }
        if matches!(d.lower_bound(), Some(l) if l > 0) || matches!(d.upper_bound(), Some(u) if u < 0) {
            return Truth::False;
        }
        if self.nonneg(&d.sub(&DimExpr::constant(1))) || self.nonneg(&d.scale(-1).sub(&DimExpr::constant(1))) {
            return Truth::False;
        }
        Truth::Unknown
    }

    /// Is `a <= b`?
    pub fn le(&self, a: &DimExpr, b: &DimExpr) -> Truth {
        let d = b.sub(a);
        if self.nonneg(&d) {
            Truth::True
        } else if self.nonneg(&d.scale(-1).sub(&DimExpr::constant(1))) {
            Truth::False
        } else {
            Truth::Unknown
        }
    }

    /// Is `d >= 0`, directly or by subtracting one stated fact's slack?
    fn nonneg(&self, d: &DimExpr) -> bool {
        if matches!(d.lower_bound(), Some(l) if l >= 0) {
            return true;
        }
        self.le.iter().any(|(x, y)| matches!(d.sub(&y.sub(x)).lower_bound(), Some(l) if l >= 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> DimExpr {
        DimExpr::var(s)
    }

    #[test]
    fn products_commute_and_sums_normalize() {
        assert_eq!(v("B").mul(&v("T")), v("T").mul(&v("B")));
        let e = v("T").add(&v("B")).sub(&v("T"));
        assert_eq!(e, v("B"));
        assert_eq!(e.as_var(), Some("B"));
        assert_eq!(v("B").scale(2).mul(&v("T")).add(&DimExpr::constant(1)).to_string(), "2*B*T + 1");
    }

    #[test]
    fn division_exact_when_divisible() {
        let d = DimExpr::constant(256);
        let q = d.floor_div(4);
        assert_eq!(q.as_const(), Some(64));
        assert_eq!(q.mul(&DimExpr::constant(4)), d);
        let bt = v("T").scale(6);
        assert_eq!(bt.floor_div(3), v("T").scale(2));
        let odd = v("T").floor_div(2);
        assert_eq!(odd.to_string(), "T / 2");
        assert_eq!(odd.eval(&|_| Some(7)), Ok(3));
        assert_eq!(v("T").modulo(2).eval(&|_| Some(7)), Ok(1));
        assert_eq!(v("T").scale(4).modulo(2).as_const(), Some(0));
    }

    #[test]
    fn comparisons() {
        let f = Facts::default();
        assert_eq!(f.eq(&v("B"), &v("B")), Truth::True);
        assert_eq!(f.eq(&v("B").add(&1.into()), &v("B")), Truth::False);
        assert_eq!(f.eq(&v("B"), &v("T")), Truth::Unknown);
        assert_eq!(f.le(&DimExpr::constant(1), &v("T")), Truth::True);
        assert_eq!(f.le(&v("T"), &DimExpr::constant(256)), Truth::Unknown);
        assert_eq!(f.le(&v("T").add(&1.into()), &v("T")), Truth::False);
        let facts = Facts { le: vec![(v("T"), DimExpr::constant(256))] };
        assert_eq!(facts.le(&v("T"), &DimExpr::constant(256)), Truth::True);
        assert_eq!(facts.le(&v("T"), &DimExpr::constant(512)), Truth::True);
        assert_eq!(facts.le(&DimExpr::constant(300), &v("T")), Truth::False);
    }

    #[test]
    fn subst_and_eval() {
        let e = v("B").mul(&v("T")).add(&v("T"));
        let s = e.subst(&|n| (n == "B").then(|| DimExpr::constant(3)));
        assert_eq!(s, v("T").scale(4));
        assert_eq!(e.eval(&|n| Some(if n == "B" { 2 } else { 5 })), Ok(15));
        assert_eq!(e.eval(&|n| (n == "B").then_some(2)), Err("T".to_string()));
        assert_eq!(e.vars(), vec!["B".to_string(), "T".to_string()]);
    }
}
