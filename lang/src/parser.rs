//! The parser: the lalrpop grammar in `grammar.lalrpop` over the logos
//! lexer, plus the node builders its actions call and the translation of
//! lalrpop's errors into [`Diagnostic`]s.
//!
//! Error codes: E0001 invalid character, E0002 unexpected token, E0003
//! unexpected end of file, E0004 unterminated string, E0005 integer literal
//! too large, E0006 malformed rearrange pattern, E0007 nesting too deep.

use crate::ast::*;
use crate::diag::Diagnostic;
use crate::lexer::{LexError, Token};
use crate::source::floor_char_boundary;
use lalrpop_util::{lalrpop_mod, ParseError};
use logos::Logos;

lalrpop_mod!(
    #[allow(clippy::all, unused_parens, unused_imports, dead_code)]
    grammar,
    "/grammar.rs"
);

/// How deep a syntax tree may nest. Deeper trees are refused (E0007) while
/// they are built, because every later pass, and even dropping the tree,
/// walks them recursively and could overflow the stack. Real programs
/// nest a few levels; 128 also bounds a chain like `a + b + ...`, which is
/// a tree as deep as it is long.
pub(crate) const MAX_DEPTH: u32 = 128;

/// Parses one `.kl` file. Returns the first error in source order.
///
/// Never panics: every input yields either a tree or a diagnostic whose
/// spans are valid byte ranges of `src`.
#[allow(clippy::result_large_err)] // The crate's error type, returned once.
pub fn parse(file: FileId, src: &str) -> Result<File, Diagnostic> {
    // A lexical error reaches lalrpop as an `Err` item, which it returns at
    // once. Tokens are read lazily, so that is the first error in source
    // order, with one exception: an action's error (E0006, E0007) is raised
    // only once the token after its construct has been read, and a bad
    // character there is reported instead.
    let tokens = Token::lexer(src).spanned().map(|(tok, range)| match tok {
        Ok(t) => Ok((range.start, t, range.end)),
        Err(e) => Err(Box::new(lex_error(file, src, e, range.start, range.end))),
    });
    grammar::FileParser::new().parse(file, tokens).map_err(|e| parse_error(file, src, e))
}

// ---------------------------------------------------------------- errors

fn lex_error(file: FileId, src: &str, e: LexError, start: usize, end: usize) -> Diagnostic {
    let text = src.get(start..end).unwrap_or_default();
    let span = Span::new(file, start, end);
    match e {
        LexError::InvalidChar => {
            let c = text.chars().next().unwrap_or(' ');
            Diagnostic::new("E0001", format!("invalid character {c:?}"), span)
                .label("no token starts with this character")
        }
        LexError::UnterminatedString => {
            Diagnostic::new("E0004", "unterminated string", span).label("this string has no closing `\"` on its line")
        }
        LexError::IntTooLarge => Diagnostic::new("E0005", "integer literal too large", span)
            .label(format!("does not fit in 64 bits (the largest is {})", i64::MAX)),
    }
}

// Boxed inside the parser: results travel through every grammar action.
type PError<'a> = ParseError<usize, Token<'a>, Box<Diagnostic>>;
type PResult<'a, T> = Result<T, PError<'a>>;

fn user<'a>(d: Diagnostic) -> PError<'a> {
    ParseError::User { error: Box::new(d) }
}

fn parse_error(file: FileId, src: &str, e: PError<'_>) -> Diagnostic {
    match e {
        ParseError::User { error } => *error,
        ParseError::UnrecognizedEof { expected, .. } => {
            let span = Span::new(file, src.len(), src.len());
            let expected = expected_list(&expected);
            let message = if expected.is_empty() {
                "unexpected end of file".to_string()
            } else {
                format!("unexpected end of file, expected {expected}")
            };
            Diagnostic::new("E0003", message, span).label("the file ends here")
        }
        ParseError::UnrecognizedToken { token: (l, tok, r), expected } => {
            let found = describe(src, l, r, &tok);
            let expected = expected_list(&expected);
            let message = if expected.is_empty() {
                format!("unexpected {found}")
            } else {
                format!("expected {expected}, found {found}")
            };
            Diagnostic::new("E0002", message, Span::new(file, l, r)).label("unexpected token")
        }
        ParseError::ExtraToken { token: (l, tok, r) } => {
            let found = describe(src, l, r, &tok);
            Diagnostic::new("E0002", format!("unexpected {found}"), Span::new(file, l, r)).label("unexpected token")
        }
        // Only lalrpop's built-in lexer reports this; kept total for safety.
        ParseError::InvalidToken { location } => {
            let start = floor_char_boundary(src, location);
            let end = src[start..].chars().next().map_or(start, |c| start + c.len_utf8());
            Diagnostic::new("E0001", "invalid token", Span::new(file, start, end))
        }
    }
}

/// How an error message names the token it found.
fn describe(src: &str, l: usize, r: usize, tok: &Token<'_>) -> String {
    let text = src.get(l..r).unwrap_or_default();
    match tok {
        Token::Ident(_) => format!("identifier `{text}`"),
        Token::Int(_) => format!("integer `{text}`"),
        Token::Float(_) => format!("number `{text}`"),
        Token::Str(_) => format!("string {text}"),
        Token::DType(_) => format!("dtype `{text}`"),
        _ => format!("`{text}`"),
    }
}

/// The terminals that can start an expression. When a parser state accepts
/// any operand (names, numbers and parentheses), the message says
/// "expression" instead of listing these; which prefix keywords are among
/// them depends on the precedence level and is not worth spelling out.
const EXPR_START: &[&str] = &[
    "Ident",
    "Int",
    "Float",
    "DType",
    "\"(\"",
    "\"[\"",
    "\"-\"",
    "\"not\"",
    "\"true\"",
    "\"false\"",
    "\"scan\"",
    "\"einsum\"",
    "\"rearrange\"",
    "\"where\"",
];

/// The most alternatives a message lists.
const MAX_EXPECTED: usize = 8;

/// Turns lalrpop's terminal names (`"\")\""`, `Ident`) into a readable
/// list: closers and separators first, binary operators last, at most
/// [`MAX_EXPECTED`] entries.
fn expected_list(expected: &[String]) -> String {
    let mut names: Vec<(u8, String)> = Vec::new();
    let is_expr = ["Ident", "Int", "Float", "\"(\""].iter().all(|t| expected.iter().any(|e| e == t));
    if is_expr {
        names.push((1, "expression".to_string()));
    }
    for e in expected {
        if is_expr && EXPR_START.contains(&e.as_str()) {
            continue;
        }
        let (rank, name) = match e.as_str() {
            "Ident" => (1, "identifier".to_string()),
            "Int" => (1, "integer".to_string()),
            "Float" => (1, "number".to_string()),
            "DType" => (1, "dtype".to_string()),
            "Str" => (1, "string".to_string()),
            quoted => {
                let text = quoted.trim_matches('"');
                let rank = match text {
                    ")" | "]" | "}" | "," | ":" | "=" | "->" | "{" => 0,
                    "+" | "-" | "*" | "/" | "%" | "@" | "**" | "==" | "!=" | "<" | "<=" | ">" | ">=" | "and" | "or"
                    | "." | "[" | "(" => 2,
                    _ => 1,
                };
                (rank, format!("`{text}`"))
            }
        };
        names.push((rank, name));
    }
    names.sort_by_key(|(rank, _)| *rank);
    let total = names.len();
    let shown: Vec<String> = names.into_iter().take(MAX_EXPECTED).map(|(_, n)| n).collect();
    match total {
        0 => String::new(),
        1 => shown[0].clone(),
        n if n <= MAX_EXPECTED => format!("one of {}", shown.join(", ")),
        n => format!("one of {} (or {} more)", shown.join(", "), n - MAX_EXPECTED),
    }
}

// ---------------------------------------------------------------- node builders
//
// The grammar's actions call these; each takes the node's byte range `l..r`.

/// A node and the depth of its tree (a leaf is 1).
pub(crate) struct D<T> {
    pub node: T,
    pub depth: u32,
}

/// One argument in a call's parentheses.
pub(crate) enum CallArg {
    Pos(D<Expr>),
    Kw(Ident, D<Expr>),
}

pub(crate) fn sp(file: FileId, l: usize, r: usize) -> Span {
    Span::new(file, l, r)
}

pub(crate) fn ident(file: FileId, l: usize, r: usize, name: &str) -> Ident {
    Ident { name: name.to_string(), span: sp(file, l, r) }
}

/// Refuses a node whose children reach `children` levels.
fn check_depth<'a>(file: FileId, l: usize, r: usize, children: u32) -> PResult<'a, u32> {
    let depth = children + 1;
    if depth > MAX_DEPTH {
        return Err(user(
            Diagnostic::new("E0007", "expression nested too deeply", sp(file, l, r))
                .label(format!("more than {MAX_DEPTH} levels"))
                .help("split it into several `let` statements"),
        ));
    }
    Ok(depth)
}

pub(crate) fn leaf(file: FileId, l: usize, r: usize, kind: ExprKind) -> D<Expr> {
    D { node: Expr { kind, span: sp(file, l, r) }, depth: 1 }
}

/// An expression node over children `children` levels deep.
pub(crate) fn node<'a>(file: FileId, l: usize, r: usize, kind: ExprKind, children: u32) -> PResult<'a, D<Expr>> {
    let depth = check_depth(file, l, r, children)?;
    Ok(D { node: Expr { kind, span: sp(file, l, r) }, depth })
}

/// Unwraps nodes, returning them with their greatest depth.
fn unzip(items: Vec<D<Expr>>) -> (Vec<Expr>, u32) {
    let depth = items.iter().map(|d| d.depth).max().unwrap_or(0);
    (items.into_iter().map(|d| d.node).collect(), depth)
}

pub(crate) fn bin<'a>(file: FileId, l: usize, r: usize, a: D<Expr>, op: BinOp, b: D<Expr>) -> PResult<'a, D<Expr>> {
    let depth = a.depth.max(b.depth);
    node(file, l, r, ExprKind::Binary(Box::new(a.node), op, Box::new(b.node)), depth)
}

pub(crate) fn compare<'a>(file: FileId, l: usize, r: usize, a: D<Expr>, op: CmpOp, b: D<Expr>) -> PResult<'a, D<Expr>> {
    let depth = a.depth.max(b.depth);
    node(file, l, r, ExprKind::Compare(Box::new(a.node), op, Box::new(b.node)), depth)
}

pub(crate) fn unary<'a>(file: FileId, l: usize, r: usize, op: UnOp, a: D<Expr>) -> PResult<'a, D<Expr>> {
    node(file, l, r, ExprKind::Unary(op, Box::new(a.node)), a.depth)
}

pub(crate) fn field<'a>(file: FileId, l: usize, r: usize, a: D<Expr>, f: Ident) -> PResult<'a, D<Expr>> {
    node(file, l, r, ExprKind::Field(Box::new(a.node), f), a.depth)
}

pub(crate) fn index<'a>(
    file: FileId,
    l: usize,
    r: usize,
    a: D<Expr>,
    items: Vec<D<IndexItem>>,
) -> PResult<'a, D<Expr>> {
    let depth = items.iter().map(|i| i.depth).fold(a.depth, u32::max);
    let items = items.into_iter().map(|i| i.node).collect();
    node(file, l, r, ExprKind::Index(Box::new(a.node), items), depth)
}

/// `start:end:step` inside `[...]`.
pub(crate) fn index_range(
    file: FileId,
    l: usize,
    r: usize,
    start: Option<D<Expr>>,
    end: Option<D<Expr>>,
    step: Option<D<Expr>>,
) -> D<IndexItem> {
    let depth = [&start, &end, &step].iter().filter_map(|p| p.as_ref()).map(|p| p.depth).max();
    D {
        node: IndexItem::Range {
            start: start.map(|d| d.node),
            end: end.map(|d| d.node),
            step: step.map(|d| d.node),
            span: sp(file, l, r),
        },
        depth: depth.unwrap_or(0),
    }
}

pub(crate) fn call<'a>(file: FileId, l: usize, r: usize, func: Ident, all: Vec<CallArg>) -> PResult<'a, D<Expr>> {
    let mut depth = 0;
    let mut args = Vec::new();
    let mut kwargs = Vec::new();
    for a in all {
        match a {
            CallArg::Pos(e) => {
                depth = depth.max(e.depth);
                args.push(e.node);
            }
            CallArg::Kw(k, e) => {
                depth = depth.max(e.depth);
                kwargs.push((k, e.node));
            }
        }
    }
    node(file, l, r, ExprKind::Call { func, args, kwargs }, depth)
}

/// `(e)` is `e` itself; its span grows to include the parentheses so that
/// it still covers all of its text.
pub(crate) fn paren(file: FileId, l: usize, r: usize, mut e: D<Expr>) -> D<Expr> {
    e.node.span = sp(file, l, r);
    e
}

pub(crate) fn tuple<'a>(file: FileId, l: usize, r: usize, first: D<Expr>, rest: Vec<D<Expr>>) -> PResult<'a, D<Expr>> {
    let mut items = vec![first];
    items.extend(rest);
    let (items, depth) = unzip(items);
    node(file, l, r, ExprKind::Tuple(items), depth)
}

pub(crate) fn list<'a>(file: FileId, l: usize, r: usize, items: Vec<D<Expr>>) -> PResult<'a, D<Expr>> {
    let (items, depth) = unzip(items);
    node(file, l, r, ExprKind::List(items), depth)
}

pub(crate) fn einsum<'a>(
    file: FileId,
    l: usize,
    r: usize,
    ops: Vec<(D<Expr>, Vec<Ident>)>,
    output: Vec<Ident>,
) -> PResult<'a, D<Expr>> {
    let depth = ops.iter().map(|(e, _)| e.depth).max().unwrap_or(0);
    let operands = ops.into_iter().map(|(e, letters)| (e.node, letters)).collect();
    node(file, l, r, ExprKind::Einsum { operands, output }, depth)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn rearrange<'a>(
    file: FileId,
    l: usize,
    r: usize,
    input: D<Expr>,
    from: Vec<PatternAxis>,
    to: Vec<PatternAxis>,
    sizes: Vec<(Ident, D<DimExpr>)>,
) -> PResult<'a, D<Expr>> {
    let depth = sizes.iter().map(|(_, d)| d.depth).fold(input.depth, u32::max);
    let sizes = sizes.into_iter().map(|(n, d)| (n, d.node)).collect();
    node(file, l, r, ExprKind::Rearrange { input: Box::new(input.node), from, to, sizes }, depth)
}

/// `1` in a rearrange pattern; any other integer is malformed.
pub(crate) fn unit_axis<'a>(file: FileId, l: usize, r: usize, n: i64) -> PResult<'a, PatternAxis> {
    if n == 1 {
        return Ok(PatternAxis::Unit(sp(file, l, r)));
    }
    Err(user(
        Diagnostic::new("E0006", format!("malformed rearrange pattern: `{n}` is not an axis"), sp(file, l, r))
            .label("only `1` may stand for an axis")
            .help("name the axis and give its size after the pattern, as in `rearrange(x, a (h d) -> a h d, h: 4)`"),
    ))
}

/// `( ... )` in a rearrange pattern: only names may be grouped.
pub(crate) fn group_axis<'a>(file: FileId, l: usize, r: usize, axes: Vec<PatternAxis>) -> PResult<'a, PatternAxis> {
    let mut names = Vec::with_capacity(axes.len());
    for a in axes {
        match a {
            PatternAxis::Name(n) => names.push(n),
            PatternAxis::Group(_, s) => {
                return Err(user(
                    Diagnostic::new("E0006", "malformed rearrange pattern: nested group", s)
                        .label("a group cannot contain another group")
                        .with(sp(file, l, r), "in this group"),
                ))
            }
            PatternAxis::Unit(s) => {
                return Err(user(
                    Diagnostic::new("E0006", "malformed rearrange pattern: `1` inside a group", s)
                        .label("a unit axis cannot be merged")
                        .with(sp(file, l, r), "in this group"),
                ))
            }
        }
    }
    Ok(PatternAxis::Group(names, sp(file, l, r)))
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn scan<'a>(
    file: FileId,
    l: usize,
    r: usize,
    seqs: Vec<(Ident, D<Expr>, Option<DimExpr>)>,
    carries: Vec<(Ident, D<Expr>)>,
    body: Vec<D<Stmt>>,
    next: Vec<(Ident, D<Expr>)>,
    emit: Vec<D<Expr>>,
) -> PResult<'a, D<Expr>> {
    let depth = seqs
        .iter()
        .map(|s| s.1.depth)
        .chain(carries.iter().map(|c| c.1.depth))
        .chain(body.iter().map(|s| s.depth))
        .chain(next.iter().map(|n| n.1.depth))
        .chain(emit.iter().map(|e| e.depth))
        .max()
        .unwrap_or(0);
    let scan = Scan {
        seqs: seqs.into_iter().map(|(n, e, axis)| (n, e.node, axis)).collect(),
        carries: carries.into_iter().map(|(n, e)| (n, e.node)).collect(),
        body: body.into_iter().map(|s| s.node).collect(),
        next: next.into_iter().map(|(n, e)| (n, e.node)).collect(),
        emit: emit.into_iter().map(|e| e.node).collect(),
    };
    node(file, l, r, ExprKind::Scan(Box::new(scan)), depth)
}

pub(crate) fn dim_int(file: FileId, l: usize, r: usize, n: i64) -> D<DimExpr> {
    D { node: DimExpr::Int(n, sp(file, l, r)), depth: 1 }
}

pub(crate) fn dim_bin<'a>(
    file: FileId,
    l: usize,
    r: usize,
    a: D<DimExpr>,
    op: DimOp,
    b: D<DimExpr>,
) -> PResult<'a, D<DimExpr>> {
    let depth = check_depth(file, l, r, a.depth.max(b.depth))?;
    Ok(D { node: DimExpr::Bin(Box::new(a.node), op, Box::new(b.node), sp(file, l, r)), depth })
}

pub(crate) fn let_stmt(
    file: FileId,
    l: usize,
    r: usize,
    names: Vec<Ident>,
    ty: Option<TypeExpr>,
    value: D<Expr>,
) -> D<Stmt> {
    D { depth: value.depth, node: Stmt::Let { names, ty, value: value.node, span: sp(file, l, r) } }
}

pub(crate) fn return_stmt(file: FileId, l: usize, r: usize, value: D<Expr>) -> D<Stmt> {
    D { depth: value.depth, node: Stmt::Return(value.node, sp(file, l, r)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quoted(ts: &[&str]) -> Vec<String> {
        ts.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn expected_lists_read_well() {
        assert_eq!(expected_list(&quoted(&["Ident"])), "identifier");
        assert_eq!(expected_list(&quoted(&["\"+\"", "\",\"", "\")\""])), "one of `,`, `)`, `+`");
        let many: Vec<String> = (0..11).map(|i| format!("\"k{i}\"")).collect();
        assert_eq!(expected_list(&many), "one of `k0`, `k1`, `k2`, `k3`, `k4`, `k5`, `k6`, `k7` (or 3 more)");
        let mut expr = quoted(EXPR_START);
        expr.push("\"]\"".to_string());
        assert_eq!(expected_list(&expr), "one of `]`, expression");
    }
}
