//! The e-graph optimizer: equality saturation over the graph IR with egg,
//! then extraction of the cheapest equivalent graph. Its job today is
//! attention fusion: `softmax(q @ k^T * scale + mask) @ v`, written as plain
//! math, becomes one [`Op::Attention`] node (see `docs/optimizer.md`).
//!
//! The pieces: [`lang`] (e-nodes), [`analysis`] (types and constant facts
//! per class), `rules/*.rules` parsed by [`rules`] with conditions from
//! [`guards`], [`cost`] (bytes + flops per backend) and [`convert`]
//! (graph ↔ e-graph). Scan bodies are optimized first, each on its own.

pub mod analysis;
pub mod convert;
pub mod cost;
pub mod guards;
pub mod lang;
pub mod rules;

use crate::{verify, AttnVariant, Attention, Function, Graph, Module, Op};
use analysis::{Facts, EG};
use cost::{Backend, Cost};
use egg::{Extractor, Runner};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;
use thiserror::Error;

/// How the optimizer runs.
#[derive(Clone, Debug)]
pub struct OptOptions {
    /// Stop once the e-graph has this many e-nodes.
    pub node_limit: usize,
    /// Stop after this many rewrite iterations.
    pub iter_limit: usize,
    /// Stop after this long (per graph: each scan body has its own budget).
    pub time_limit: Duration,
    /// Force the attention variant (default FlashAttention-2).
    pub variant: Option<AttnVariant>,
    /// The cost weights.
    pub backend: Backend,
}

impl Default for OptOptions {
    fn default() -> Self {
        OptOptions {
            node_limit: 20_000,
            iter_limit: 30,
            time_limit: Duration::from_secs(5),
            variant: None,
            backend: Backend::CPU,
        }
    }
}

/// Why a run of equality saturation stopped.
#[derive(Clone, Debug, PartialEq)]
pub enum Stop {
    /// No rule could add anything new: every equivalent form was explored.
    Saturated,
    /// The iteration limit.
    IterationLimit(usize),
    /// The e-node limit was reached; the e-graph's size then.
    NodeLimit(usize),
    /// The time limit (seconds).
    TimeLimit(f64),
    /// Anything else egg reports.
    Other(String),
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stop::Saturated => f.write_str("saturated"),
            Stop::IterationLimit(n) => write!(f, "iteration limit ({n})"),
            Stop::NodeLimit(n) => write!(f, "node limit ({n} e-nodes)"),
            Stop::TimeLimit(s) => write!(f, "time limit ({s}s)"),
            Stop::Other(s) => f.write_str(s),
        }
    }
}

/// One run of equality saturation (a function's graph or a scan body).
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    /// Which graph: `loss`, `loss/scan%19`, ...
    pub scope: String,
    /// Why it stopped.
    pub stop: Stop,
    /// Iterations run.
    pub iterations: usize,
    /// E-nodes at the end.
    pub enodes: usize,
    /// How often each rule applied.
    pub applied: BTreeMap<String, usize>,
    /// The attention nodes the extracted graph contains.
    pub fused: Vec<Attention>,
}

/// What the optimizer did to a function.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// One entry per graph, bodies before the graph that contains them.
    pub runs: Vec<Run>,
}

impl Report {
    /// Every fused attention node, with its scope.
    pub fn fused(&self) -> impl Iterator<Item = (&str, &Attention)> {
        self.runs.iter().flat_map(|r| r.fused.iter().map(move |a| (r.scope.as_str(), a)))
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for r in &self.runs {
            writeln!(f, "{}: stopped: {}; {} iterations, {} e-nodes", r.scope, r.stop, r.iterations, r.enodes)?;
            let applied: Vec<String> = r.applied.iter().map(|(k, v)| format!("{k} x{v}")).collect();
            if !applied.is_empty() {
                writeln!(f, "  rules: {}", applied.join(", "))?;
            }
            for a in &r.fused {
                writeln!(f, "  fused attention[{a}]")?;
            }
        }
        Ok(())
    }
}

/// What can go wrong.
#[derive(Clone, Debug, PartialEq, Error)]
pub enum OptError {
    /// A rule file is malformed (a bug in Kiln, caught by its tests).
    #[error("internal: rule file {0}")]
    Rules(#[from] rules::RuleError),
    /// Extraction found no graph for an output (internal).
    #[error("internal: no extractable form for an output of `{0}`")]
    Extract(String),
    /// The optimized graph fails verification (internal).
    #[error("internal: the optimized graph is invalid: {0}")]
    Verify(#[from] verify::VerifyError),
}

/// Optimizes one entry point; the result passes the verifier.
pub fn optimize(m: &Module, f: &Function, opts: &OptOptions) -> Result<(Function, Report), OptError> {
    let rules = rules::load()?;
    let mut runs = Vec::new();
    let inputs = vec![false; f.graph.inputs.len()];
    let graph = optimize_graph(&f.graph, &f.name, &inputs, opts, &rules, &mut runs)?;
    let out = Function { graph, ..f.clone() };
    verify::function(m, &out)?;
    Ok((out, Report { runs }))
}

/// Per node of `g`, whether it may depend on a parameter, given the same
/// for `g`'s inputs.
fn param_dependence(g: &Graph, inputs: &[bool]) -> Vec<bool> {
    let mut dep: Vec<bool> = Vec::with_capacity(g.nodes.len());
    for n in &g.nodes {
        let d = match &n.op {
            Op::Param { .. } => true,
            Op::Input { index } => inputs.get(*index as usize).copied().unwrap_or(true),
            _ => n.args.iter().any(|a| dep[a.index()]),
        };
        dep.push(d);
    }
    dep
}

/// Optimizes `g` (scan bodies first); `param_inputs` says which of its
/// inputs may depend on parameters.
fn optimize_graph(
    g: &Graph,
    scope: &str,
    param_inputs: &[bool],
    opts: &OptOptions,
    rules: &[egg::Rewrite<lang::ENode, Facts>],
    runs: &mut Vec<Run>,
) -> Result<Graph, OptError> {
    let dep = param_dependence(g, param_inputs);
    let mut bodies = HashMap::new();
    for (i, n) in g.nodes.iter().enumerate() {
        if let Op::Scan { body, n_carry, .. } = &n.op {
            // A carry may pick up parameters from any step of the loop.
            let inputs: Vec<bool> =
                n.args.iter().enumerate().map(|(j, a)| j < *n_carry as usize || dep[a.index()]).collect();
            let b = optimize_graph(body, &format!("{scope}/scan%{i}"), &inputs, opts, rules, runs)?;
            bodies.insert(i, b);
        }
    }
    let facts = Facts { variant: opts.variant, param_inputs: param_inputs.to_vec(), ..Facts::default() };
    let mut eg = EG::new(facts.clone());
    let ids = convert::add_graph(&mut eg, g, bodies);
    let roots: Vec<_> = g.outputs.iter().map(|o| ids[o.index()]).collect();
    let mut runner = Runner::<_, _, ()>::new(facts)
        .with_egraph(eg)
        .with_node_limit(opts.node_limit)
        .with_iter_limit(opts.iter_limit)
        .with_time_limit(opts.time_limit)
        .run(rules);
    runner.egraph.rebuild();
    let stop = match &runner.stop_reason {
        Some(egg::StopReason::Saturated) => Stop::Saturated,
        Some(egg::StopReason::IterationLimit(n)) => Stop::IterationLimit(*n),
        Some(egg::StopReason::NodeLimit(n)) => Stop::NodeLimit(*n),
        Some(egg::StopReason::TimeLimit(s)) => Stop::TimeLimit(*s),
        other => Stop::Other(format!("{other:?}")),
    };
    let mut applied = BTreeMap::new();
    for it in &runner.iterations {
        for (rule, n) in &it.applied {
            *applied.entry(rule.to_string()).or_insert(0) += n;
        }
    }
    let eg = &runner.egraph;
    let ex = Extractor::new(eg, Cost { eg, backend: opts.backend });
    let out = convert::extract_graph(eg, &g.inputs, &roots, &|id| ex.find_best_node(id).clone())
        .ok_or_else(|| OptError::Extract(scope.to_string()))?;
    let fused = out
        .nodes
        .iter()
        .filter_map(|n| match &n.op {
            Op::Attention(a) => Some((**a).clone()),
            _ => None,
        })
        .collect();
    runs.push(Run {
        scope: scope.to_string(),
        stop,
        iterations: runner.iterations.len(),
        enodes: eg.total_number_of_nodes(),
        applied,
        fused,
    });
    Ok(out)
}
