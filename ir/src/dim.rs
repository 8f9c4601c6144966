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

/// Why a dimension has no concrete value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DimError {
    /// A variable the expression mentions has no value.
    #[error("dimension `{0}` is unbound")]
    Unbound(String),
    /// The value does not fit in a 64-bit integer.
    #[error("dimension `{expr}` overflows 64-bit integers ({})", values.join(", "))]
    Overflow {
        /// The symbolic size.
        expr: String,
        /// `name = value` for each variable in it.
        values: Vec<String>,
    },
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

/// The panic of the unchecked operators: a broken invariant, since every
/// size user input controls is built with the checked ones.
fn overflow(a: &DimExpr, op: &str, b: &DimExpr) -> ! {
    panic!("dimension arithmetic overflows i64: ({a}) {op} ({b})")
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

    /// `self + other`. Panics on overflow: sizes that user input can make
    /// arbitrarily large go through [`DimExpr::checked_add`] instead.
    pub fn add(&self, other: &DimExpr) -> DimExpr {
        self.checked_add(other).unwrap_or_else(|| overflow(self, "+", other))
    }

    /// `self - other`; panics on overflow (see [`DimExpr::add`]).
    pub fn sub(&self, other: &DimExpr) -> DimExpr {
        self.checked_sub(other).unwrap_or_else(|| overflow(self, "-", other))
    }

    /// `c * self`; panics on overflow (see [`DimExpr::add`]).
    pub fn scale(&self, c: i64) -> DimExpr {
        self.checked_scale(c).unwrap_or_else(|| overflow(self, "*", &DimExpr::constant(c)))
    }

    /// `self * other`; panics on overflow (see [`DimExpr::add`]).
    pub fn mul(&self, other: &DimExpr) -> DimExpr {
        self.checked_mul(other).unwrap_or_else(|| overflow(self, "*", other))
    }

    /// `self + other`, or `None` if a coefficient overflows `i64`.
    pub fn checked_add(&self, other: &DimExpr) -> Option<DimExpr> {
        let mut terms = self.terms.clone();
        for (m, c) in &other.terms {
            let e = terms.entry(m.clone()).or_insert(0);
            *e = e.checked_add(*c)?;
            if *e == 0 {
                terms.remove(m);
            }
        }
        Some(DimExpr { terms })
    }

    /// `self - other`, or `None` on overflow.
    pub fn checked_sub(&self, other: &DimExpr) -> Option<DimExpr> {
        self.checked_add(&other.checked_scale(-1)?)
    }

    /// `c * self`, or `None` on overflow.
    pub fn checked_scale(&self, c: i64) -> Option<DimExpr> {
        if c == 0 {
            return Some(DimExpr::default());
        }
        let terms = self.terms.iter().map(|(m, k)| Some((m.clone(), k.checked_mul(c)?))).collect::<Option<_>>()?;
        Some(DimExpr { terms })
    }

    /// `self * other`, or `None` on overflow.
    pub fn checked_mul(&self, other: &DimExpr) -> Option<DimExpr> {
        let mut out = DimExpr::default();
        for (ma, ca) in &self.terms {
            for (mb, cb) in &other.terms {
                let mut t = BTreeMap::new();
                t.insert(mono_mul(ma, mb), ca.checked_mul(*cb)?);
                out = out.checked_add(&DimExpr { terms: t })?;
            }
        }
        Some(out)
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
    /// Panics on overflow (see [`DimExpr::add`]).
    pub fn subst(&self, map: &dyn Fn(&str) -> Option<DimExpr>) -> DimExpr {
        self.checked_subst(map).unwrap_or_else(|| panic!("dimension arithmetic overflows i64 substituting into `{self}`"))
    }

    /// [`DimExpr::subst`], or `None` if the result overflows `i64`.
    pub fn checked_subst(&self, map: &dyn Fn(&str) -> Option<DimExpr>) -> Option<DimExpr> {
        let mut out = DimExpr::default();
        for (mono, c) in &self.terms {
            let mut term = DimExpr::constant(*c);
            for (atom, p) in mono {
                let a = match atom {
                    Atom::Var(v) => map(v).unwrap_or_else(|| DimExpr::var(v)),
                    Atom::FloorDiv(e, k) => e.checked_subst(map)?.floor_div(*k),
                    Atom::Mod(e, k) => e.checked_subst(map)?.modulo(*k),
                };
                for _ in 0..*p {
                    term = term.checked_mul(&a)?;
                }
            }
            out = out.checked_add(&term)?;
        }
        Some(out)
    }

    /// Evaluates with concrete variable values: an error names the first
    /// variable that `env` does not bind, or says the value overflows.
    pub fn eval(&self, env: &dyn Fn(&str) -> Option<i64>) -> Result<i64, DimError> {
        let missing = std::cell::RefCell::new(None);
        let e = self.checked_subst(&|v| match env(v) {
            Some(x) => Some(DimExpr::constant(x)),
            None => {
                missing.borrow_mut().get_or_insert_with(|| v.to_string());
                None
            }
        });
        let Some(e) = e else {
            let vars = self.vars().into_iter().filter_map(|v| env(&v).map(|x| format!("{v} = {x}"))).collect();
            return Err(DimError::Overflow { expr: self.to_string(), values: vars });
        };
        match (e.as_const(), missing.into_inner()) {
            (Some(v), _) => Ok(v),
            (None, Some(m)) => Err(DimError::Unbound(m)),
            (None, None) => Err(DimError::Unbound(e.to_string())),
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
                lb = lb.checked_add(c)?;
            } else if c < 0 {
                return None;
            } else if mono.iter().all(|(a, _)| matches!(a, Atom::Var(_))) {
                lb = lb.checked_add(c)?;
            }
        }
        Some(lb)
    }

    /// Upper bound, when every non-constant coefficient is non-positive.
    fn upper_bound(&self) -> Option<i64> {
        self.checked_scale(-1)?.lower_bound()?.checked_neg()
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
    /// Arithmetic that overflows proves nothing (`Unknown`).
    pub fn eq(&self, a: &DimExpr, b: &DimExpr) -> Truth {
        let Some(d) = a.checked_sub(b) else { return Truth::Unknown };
        if d.terms.is_empty() {
            return Truth::True;
        }
        if matches!(d.lower_bound(), Some(l) if l > 0) || matches!(d.upper_bound(), Some(u) if u < 0) {
            return Truth::False;
        }
        let one = DimExpr::constant(1);
        if self.nonneg(d.checked_sub(&one)) || self.nonneg(d.checked_scale(-1).and_then(|n| n.checked_sub(&one))) {
            return Truth::False;
        }
        Truth::Unknown
    }

    /// Is `a <= b`?
    pub fn le(&self, a: &DimExpr, b: &DimExpr) -> Truth {
        let Some(d) = b.checked_sub(a) else { return Truth::Unknown };
        if self.nonneg(Some(d.clone())) {
            Truth::True
        } else if self.nonneg(d.checked_scale(-1).and_then(|n| n.checked_sub(&DimExpr::constant(1)))) {
            Truth::False
        } else {
            Truth::Unknown
        }
    }

    /// Is `d >= 0`, directly or by subtracting one stated fact's slack?
    /// `None` (an overflowed difference) is not.
    fn nonneg(&self, d: Option<DimExpr>) -> bool {
        let Some(d) = d else { return false };
        if matches!(d.lower_bound(), Some(l) if l >= 0) {
            return true;
        }
        let slack = |x: &DimExpr, y: &DimExpr| d.checked_sub(&y.checked_sub(x)?)?.lower_bound();
        self.le.iter().any(|(x, y)| matches!(slack(x, y), Some(l) if l >= 0))
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
        assert_eq!(e.eval(&|n| (n == "B").then_some(2)), Err(DimError::Unbound("T".to_string())));
        assert_eq!(e.vars(), vec!["B".to_string(), "T".to_string()]);
    }

    #[test]
    fn overflow_is_detected_not_wrapped() {
        // 2^32 * 2^32 + 5 wraps to 5 in i64 arithmetic.
        let a = DimExpr::constant(1 << 32);
        assert_eq!(a.checked_mul(&a), None);
        assert_eq!(DimExpr::constant(i64::MAX).checked_add(&DimExpr::constant(1)), None);
        assert_eq!(DimExpr::constant(i64::MIN).checked_scale(-1), None);
        let e = v("a").mul(&v("a")).add(&DimExpr::constant(5));
        let err = e.eval(&|_| Some(1 << 32)).unwrap_err();
        assert!(matches!(&err, DimError::Overflow { values, .. } if values == &["a = 4294967296"]), "{err}");
        assert_eq!(e.eval(&|_| Some(3)), Ok(14));
    }

    #[test]
    fn comparisons_that_overflow_prove_nothing() {
        let f = Facts::default();
        let big = DimExpr::constant(i64::MAX);
        let neg = DimExpr::constant(-2);
        // MAX - (-2) overflows: neither true nor false.
        assert_eq!(f.le(&neg, &big), Truth::Unknown);
        assert_eq!(f.eq(&big, &neg), Truth::Unknown);
    }
}
