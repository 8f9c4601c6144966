//! Graphs, functions and modules.

use crate::{DimExpr, Init, Op, TensorType, Type};
use std::fmt;

/// A handle to a node (and its value) inside one [`Graph`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub u32);

impl ValueId {
    /// The index into [`Graph::nodes`].
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for ValueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0)
    }
}

/// One operation applied to earlier values.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// What the node computes.
    pub op: Op,
    /// Operands; each refers to an earlier node.
    pub args: Vec<ValueId>,
    /// The result type.
    pub ty: Type,
}

/// A dataflow graph in SSA form: nodes in topological order (every
/// argument precedes its user), the argument types, and the results.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Graph {
    /// Nodes; a node's position is its [`ValueId`].
    pub nodes: Vec<Node>,
    /// Types of the graph's arguments, read by `input` nodes.
    pub inputs: Vec<TensorType>,
    /// The values the graph returns.
    pub outputs: Vec<ValueId>,
}

impl Graph {
    /// Appends a node and returns its value.
    pub fn push(&mut self, op: Op, args: Vec<ValueId>, ty: Type) -> ValueId {
        let id = ValueId(self.nodes.len() as u32);
        self.nodes.push(Node { op, args, ty });
        id
    }

    /// Appends a node whose result is one tensor.
    pub fn push_tensor(&mut self, op: Op, args: Vec<ValueId>, ty: TensorType) -> ValueId {
        self.push(op, args, Type::Tensor(ty))
    }

    /// The node behind a value.
    pub fn node(&self, v: ValueId) -> &Node {
        &self.nodes[v.index()]
    }

    /// The tensor type of a value. Panics on a tuple (only valid after verification).
    pub fn tensor_type(&self, v: ValueId) -> &TensorType {
        self.node(v).ty.tensor().expect("tuple value used as a tensor")
    }
}

/// A condition on symbolic dims that could not be settled when the program
/// was checked; it is checked when concrete sizes are known.
#[derive(Clone, Debug, PartialEq)]
pub struct Constraint {
    /// Left side.
    pub lhs: DimExpr,
    /// The relation.
    pub rel: Relation,
    /// Right side.
    pub rhs: DimExpr,
    /// The condition as the user wrote it, for the error message.
    pub text: String,
    /// The config constants `text` names, with their values (folded into
    /// `lhs`/`rhs`), so a failure can state them.
    pub consts: Vec<(String, i64)>,
}

/// Relation in a [`Constraint`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relation {
    /// `lhs == rhs`.
    Eq,
    /// `lhs <= rhs`.
    Le,
    /// `lhs % rhs == 0`.
    Divides,
}

impl Constraint {
    /// Checks the constraint with concrete dims; `Err` gives the message.
    pub fn check(&self, env: &dyn Fn(&str) -> Option<i64>) -> Result<(), String> {
        let l = self.lhs.eval(env).map_err(|e| e.to_string())?;
        let r = self.rhs.eval(env).map_err(|e| e.to_string())?;
        let ok = match self.rel {
            Relation::Eq => l == r,
            Relation::Le => l <= r,
            Relation::Divides => r != 0 && l % r == 0,
        };
        if ok {
            return Ok(());
        }
        // Every name the clause mentions, in the order written, then any
        // variable it reaches only through an alias.
        let mut names: Vec<String> = Vec::new();
        let written = self.text.split(|c: char| !(c.is_alphanumeric() || c == '_'));
        for w in written.map(str::to_string).chain(self.lhs.vars()).chain(self.rhs.vars()) {
            if !names.contains(&w) {
                names.push(w);
            }
        }
        let value = |n: &str| env(n).or_else(|| self.consts.iter().find(|(c, _)| c == n).map(|c| c.1));
        let values: Vec<String> = names.iter().filter_map(|n| value(n).map(|v| format!("{n} = {v}"))).collect();
        Err(format!("constraint `{}` does not hold: {}", self.text, values.join(", ")))
    }
}

/// One entry point: a graph plus what a caller needs to run it.
#[derive(Clone, Debug, PartialEq)]
pub struct Function {
    /// The entry point's name (`forward`, `loss`, ...).
    pub name: String,
    /// Argument names, parallel to `graph.inputs`.
    pub arg_names: Vec<String>,
    /// For integer arguments used as indices (embedding lookups, one-hot,
    /// targets), the exclusive upper bound of valid values; random inputs
    /// are drawn below it.
    pub arg_bounds: Vec<Option<DimExpr>>,
    /// For bounded arguments, one more accepted value outside the bound:
    /// the `ignore_index` of a cross-entropy (padding targets).
    pub arg_ignore: Vec<Option<i64>>,
    /// Result names, parallel to `graph.outputs`.
    pub output_names: Vec<String>,
    /// Dimension variables bound from the arguments' shapes.
    pub dim_vars: Vec<String>,
    /// Checks that run once the dimension variables are known.
    pub constraints: Vec<Constraint>,
    /// The computation.
    pub graph: Graph,
}

/// A model parameter.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    /// Dotted name; for a stacked layer, the name without the layer index
    /// (`blocks.attn.w_q`), stored per layer as `blocks.0.attn.w_q`, ...
    pub name: String,
    /// Type; a stacked parameter has the stack as its leading axis.
    pub ty: TensorType,
    /// How to draw its initial value.
    pub init: Init,
    /// For a parameter of a layer stack, the stack's name (`blocks`), a
    /// prefix of `name`; each layer's slice is stored under
    /// `{stack}.{i}{rest of name}`.
    pub stack: Option<String>,
}

/// A compiled program: parameters shared by all entry points, and the entries.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Module {
    /// Every parameter of the model.
    pub params: Vec<Param>,
    /// Entry points.
    pub functions: Vec<Function>,
}

impl Param {
    /// The storage names of the parameter: one per layer for a stack.
    pub fn storage_names(&self) -> Vec<String> {
        match &self.stack {
            None => vec![self.name.clone()],
            Some(prefix) => {
                let rest = &self.name[prefix.len()..];
                let n = self.ty.shape.first().and_then(|d| d.as_const()).unwrap_or(0);
                (0..n).map(|i| format!("{prefix}.{i}{rest}")).collect()
            }
        }
    }
}

impl Module {
    /// The entry point called `name`.
    pub fn function(&self, name: &str) -> Option<&Function> {
        self.functions.iter().find(|f| f.name == name)
    }
}
