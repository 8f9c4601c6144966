//! Rewrite rules as data: `rules/*.rules`, one topic per file, parsed when
//! the optimizer starts. A line is
//!
//! ```text
//! name: LHS => RHS [if guard(?in, ..., ?out) ...]
//! ```
//!
//! with egg patterns on both sides (IR op names, attribute leaves first).
//! Guards run left to right; each reads bound variables and may bind new
//! ones that later guards and the RHS use. See `rules/README.md`.

use super::analysis::{Facts, EG};
use super::guards::{self, Guard};
use super::lang::ENode;
use egg::{Applier, Id, Pattern, PatternAst, Rewrite, Subst, Symbol, Var};
use std::collections::HashSet;
use thiserror::Error;

/// The rule files, by topic.
pub const FILES: [(&str, &str); 4] = [
    ("algebra.rules", include_str!("rules/algebra.rules")),
    ("layout.rules", include_str!("rules/layout.rules")),
    ("elementwise.rules", include_str!("rules/elementwise.rules")),
    ("attention.rules", include_str!("rules/attention.rules")),
];

/// A malformed rule.
#[derive(Clone, Debug, PartialEq, Error)]
#[error("{file}:{line}: {msg}")]
pub struct RuleError {
    /// The rule file.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub msg: String,
}

/// The RHS of a rule behind its guards.
struct Guarded {
    rhs: Pattern<ENode>,
    guards: Vec<(&'static Guard, Vec<Var>)>,
}

impl Applier<ENode, Facts> for Guarded {
    fn apply_one(&self, eg: &mut EG, eclass: Id, subst: &Subst, ast: Option<&PatternAst<ENode>>, rule: Symbol) -> Vec<Id> {
        let mut s = subst.clone();
        for (g, vars) in &self.guards {
            if !(g.run)(eg, &mut s, vars) {
                return vec![];
            }
        }
        self.rhs.apply_one(eg, eclass, &s, ast, rule)
    }
}

/// Parses one rule file.
pub fn parse(file: &str, text: &str) -> Result<Vec<Rewrite<ENode, Facts>>, RuleError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let err = |msg: String| RuleError { file: file.into(), line: i + 1, msg };
        out.push(parse_rule(line).map_err(err)?);
    }
    Ok(out)
}

fn parse_rule(line: &str) -> Result<Rewrite<ENode, Facts>, String> {
    let (name, rest) = line.split_once(':').ok_or("expected `name: LHS => RHS`")?;
    let (lhs, rest) = rest.split_once("=>").ok_or("expected `=>`")?;
    let (rhs, conds) = match rest.split_once(" if ") {
        Some((r, c)) => (r, c),
        None => (rest, ""),
    };
    let lhs: Pattern<ENode> = lhs.trim().parse().map_err(|e| format!("left side: {e}"))?;
    let rhs: Pattern<ENode> = rhs.trim().parse().map_err(|e| format!("right side: {e}"))?;
    let mut bound: HashSet<Var> = lhs.vars().into_iter().collect();
    let mut gs = Vec::new();
    for call in conds.split(')').map(str::trim).filter(|c| !c.is_empty()) {
        let (gname, args) = call.split_once('(').ok_or_else(|| format!("expected `guard(?a, ...)`, got `{call}`"))?;
        let g = guards::find(gname.trim()).ok_or_else(|| format!("unknown guard `{}`", gname.trim()))?;
        let vars: Vec<Var> = args
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(|a| a.parse::<Var>().map_err(|e| format!("guard `{}`: {e}", g.name)))
            .collect::<Result<_, _>>()?;
        if vars.len() != g.n_in + g.n_out {
            return Err(format!("guard `{}` takes {} variables, got {}", g.name, g.n_in + g.n_out, vars.len()));
        }
        if let Some(v) = vars[..g.n_in].iter().find(|v| !bound.contains(v)) {
            return Err(format!("guard `{}` reads {v} before it is bound", g.name));
        }
        bound.extend(vars[g.n_in..].iter().copied());
        gs.push((g, vars));
    }
    if let Some(v) = rhs.vars().into_iter().find(|v| !bound.contains(v)) {
        return Err(format!("the right side uses {v}, which nothing binds"));
    }
    Rewrite::new(name.trim(), lhs, Guarded { rhs, guards: gs })
}

/// All rules of all files.
pub fn load() -> Result<Vec<Rewrite<ENode, Facts>>, RuleError> {
    let mut all = Vec::new();
    for (file, text) in FILES {
        all.extend(parse(file, text)?);
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_rule_file_parses() {
        for (file, text) in FILES {
            let rules = parse(file, text).unwrap_or_else(|e| panic!("{e}"));
            let lines = text.lines().filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')).count();
            assert_eq!(rules.len(), lines, "{file}: one rule per non-comment line");
        }
    }

    fn error(text: &str) -> String {
        match parse("t.rules", text) {
            Ok(_) => panic!("`{text}` parsed"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn malformed_rules_are_located_errors() {
        assert_eq!(error("# ok\nno-arrow: (add ?a ?b)"), "t.rules:2: expected `=>`");
        assert!(error("r: (frobnicate ?a) => ?a").starts_with("t.rules:1: left side:"));
        assert_eq!(error("r: (add ?a ?b) => ?c"), "t.rules:1: the right side uses ?c, which nothing binds");
        assert_eq!(error("r: (add ?a ?b) => ?a if nope(?a)"), "t.rules:1: unknown guard `nope`");
        assert_eq!(error("r: (add ?a ?b) => ?a if neg-inf(?a, ?b)"), "t.rules:1: guard `neg-inf` takes 1 variables, got 2");
        assert_eq!(
            error("r: (add ?a ?b) => ?c if scale(?x, ?b, ?c)"),
            "t.rules:1: guard `scale` reads ?x before it is bound"
        );
    }

    #[test]
    fn guard_outputs_bind_right_side_variables() {
        let rules = parse("t.rules", "r: (mul ?s ?c) => ?b if plain(?a) scale(?a, ?c, ?b)").expect("parses");
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].name.as_str(), "r");
    }
}
