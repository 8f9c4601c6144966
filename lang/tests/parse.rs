//! Parser tests: the example models, every precedence level, every syntactic
//! form, every error code with its location, and property tests that no
//! input panics.

use kiln_lang::ast::*;
use kiln_lang::{parse, Diagnostic, Sources};
use proptest::prelude::*;

const GPT: &str = include_str!("../../models/gpt.kl");
const MLP: &str = include_str!("../../models/mlp.kl");

// ---------------------------------------------------------------- printing

/// An expression as an s-expression, so tests can state tree shapes tersely.
fn sx(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Int(n) => n.to_string(),
        ExprKind::Float(x) => format!("{x:?}"),
        ExprKind::Bool(b) => b.to_string(),
        ExprKind::Name(n) | ExprKind::DType(n) => n.clone(),
        ExprKind::Field(b, f) => format!("(. {} {f})", sx(b)),
        ExprKind::Binary(a, op, b) => {
            let op = match op {
                BinOp::Add => "+",
                BinOp::Sub => "-",
                BinOp::Mul => "*",
                BinOp::Div => "/",
                BinOp::MatMul => "@",
                BinOp::Pow => "**",
                BinOp::And => "and",
                BinOp::Or => "or",
            };
            format!("({op} {} {})", sx(a), sx(b))
        }
        ExprKind::Compare(a, op, b) => format!("({} {} {})", cmp(*op), sx(a), sx(b)),
        ExprKind::Unary(UnOp::Neg, a) => format!("(neg {})", sx(a)),
        ExprKind::Unary(UnOp::Not, a) => format!("(not {})", sx(a)),
        ExprKind::Call { func, args, kwargs } => {
            let mut s = format!("(call {func}");
            for a in args {
                s += &format!(" {}", sx(a));
            }
            for (k, v) in kwargs {
                s += &format!(" {k}={}", sx(v));
            }
            s + ")"
        }
        ExprKind::Index(b, items) => {
            let items: Vec<String> = items
                .iter()
                .map(|i| match i {
                    IndexItem::At(e) => sx(e),
                    IndexItem::Ellipsis(_) => "...".to_string(),
                    IndexItem::Range { start, end, step, .. } => {
                        let part = |p: &Option<Expr>| p.as_ref().map_or("_".to_string(), sx);
                        format!("(: {} {} {})", part(start), part(end), part(step))
                    }
                })
                .collect();
            format!("(index {} {})", sx(b), items.join(" "))
        }
        ExprKind::List(items) => format!("[{}]", list(items)),
        ExprKind::Tuple(items) => format!("(tuple {})", list(items)),
        ExprKind::Einsum { operands, output } => {
            let mut s = "(einsum".to_string();
            for (e, letters) in operands {
                s += &format!(" ({} {})", sx(e), names(letters));
            }
            format!("{s} -> {})", names(output))
        }
        ExprKind::Rearrange { input, from, to, sizes } => {
            let mut s = format!("(rearrange {} [{}] -> [{}]", sx(input), pattern(from), pattern(to));
            for (n, d) in sizes {
                s += &format!(" {n}={}", dx(d));
            }
            s + ")"
        }
        ExprKind::Scan(scan) => {
            let mut s = "(scan".to_string();
            for (n, seq, axis) in &scan.seqs {
                let axis = axis.as_ref().map_or(String::new(), |a| format!(" over {}", dx(a)));
                s += &format!(" ({n} in {}{axis})", sx(seq));
            }
            for (n, e) in &scan.carries {
                s += &format!(" (with {n} {})", sx(e));
            }
            for st in &scan.body {
                s += &format!(" {}", stmt(st));
            }
            for (n, e) in &scan.next {
                s += &format!(" (next {n} {})", sx(e));
            }
            if !scan.emit.is_empty() {
                s += &format!(" (emit {})", list(&scan.emit));
            }
            s + ")"
        }
    }
}

fn cmp(op: CmpOp) -> &'static str {
    match op {
        CmpOp::Eq => "==",
        CmpOp::Ne => "!=",
        CmpOp::Lt => "<",
        CmpOp::Le => "<=",
        CmpOp::Gt => ">",
        CmpOp::Ge => ">=",
    }
}

fn list(items: &[Expr]) -> String {
    items.iter().map(sx).collect::<Vec<_>>().join(" ")
}

fn names(ids: &[Ident]) -> String {
    ids.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(" ")
}

fn pattern(axes: &[PatternAxis]) -> String {
    axes.iter()
        .map(|a| match a {
            PatternAxis::Name(n) => n.name.clone(),
            PatternAxis::Group(ns, _) => format!("({})", names(ns)),
            PatternAxis::Unit(_) => "1".to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn dx(d: &DimExpr) -> String {
    match d {
        DimExpr::Int(n, _) => n.to_string(),
        DimExpr::Name(n) => n.name.clone(),
        DimExpr::Bin(a, op, b, _) => {
            let op = match op {
                DimOp::Add => "+",
                DimOp::Sub => "-",
                DimOp::Mul => "*",
                DimOp::Div => "/",
                DimOp::Mod => "%",
            };
            format!("({op} {} {})", dx(a), dx(b))
        }
    }
}

fn ty(t: &TypeExpr) -> String {
    format!("{}[{}]", t.dtype, t.dims.iter().map(dx).collect::<Vec<_>>().join(", "))
}

fn stmt(s: &Stmt) -> String {
    match s {
        Stmt::Let { names: ns, ty: t, value, .. } => {
            let t = t.as_ref().map_or(String::new(), |t| format!(" : {}", ty(t)));
            format!("(let ({}){t} {})", names(ns), sx(value))
        }
        Stmt::Return(e, _) => format!("(return {})", sx(e)),
    }
}

// ---------------------------------------------------------------- helpers

fn ok(src: &str) -> File {
    match parse(FileId(0), src) {
        Ok(f) => f,
        Err(d) => panic!("{src:?} failed to parse: {}", render(src, &d)),
    }
}

fn err(src: &str) -> Diagnostic {
    match parse(FileId(0), src) {
        Ok(f) => panic!("{src:?} parsed, expected an error: {f:?}"),
        Err(d) => d,
    }
}

fn render(src: &str, d: &Diagnostic) -> String {
    let mut sources = Sources::default();
    sources.add("test.kl", src.to_string());
    d.render(&sources)
}

/// (line, column) of the error's primary span start.
fn at(src: &str, d: &Diagnostic) -> (usize, usize) {
    let mut sources = Sources::default();
    let id = sources.add("test.kl", src.to_string());
    sources.line_col(id, d.primary.span.start)
}

/// The text the error's primary span covers.
fn covered<'a>(src: &'a str, d: &Diagnostic) -> &'a str {
    &src[d.primary.span.start as usize..d.primary.span.end as usize]
}

fn fns(f: &File) -> Vec<&FnDef> {
    f.items
        .iter()
        .filter_map(|i| match i {
            Item::Fn(f) => Some(f),
            _ => None,
        })
        .collect()
}

/// The body of the only function in `src`.
fn body(src: &str) -> Vec<Stmt> {
    fns(&ok(src))[0].body.clone()
}

/// Parses `e` as the returned expression of a function.
fn expr(e: &str) -> Expr {
    let src = format!("fn f() -> f32 {{ return {e} }}");
    match body(&src).pop() {
        Some(Stmt::Return(e, _)) => e,
        other => panic!("no return in {other:?}"),
    }
}

fn s(e: &str) -> String {
    sx(&expr(e))
}

/// The text of every expression span in a tree, outermost first.
fn spans(src: &str, e: &Expr, out: &mut Vec<String>) {
    out.push(src[e.span.start as usize..e.span.end as usize].to_string());
    match &e.kind {
        ExprKind::Field(b, _) | ExprKind::Unary(_, b) => spans(src, b, out),
        ExprKind::Binary(a, _, b) | ExprKind::Compare(a, _, b) => {
            spans(src, a, out);
            spans(src, b, out);
        }
        ExprKind::Call { args, kwargs, .. } => {
            args.iter().for_each(|a| spans(src, a, out));
            kwargs.iter().for_each(|(_, a)| spans(src, a, out));
        }
        ExprKind::List(items) | ExprKind::Tuple(items) => items.iter().for_each(|a| spans(src, a, out)),
        ExprKind::Index(b, _) => spans(src, b, out),
        _ => {}
    }
}

// ---------------------------------------------------------------- example models

#[test]
fn gpt_parses() {
    let f = ok(GPT);
    // config, dim, 4 layers, 4 params, 5 functions.
    assert_eq!(f.items.len(), 15);
    let Item::Config(entries) = &f.items[0] else { panic!("first item is {:?}", f.items[0]) };
    let names: Vec<&str> = entries.iter().map(|e| e.name.name.as_str()).collect();
    assert_eq!(names, ["n_layer", "n_head", "n_embd", "block", "vocab", "d_head", "eps", "p_drop"]);
    assert_eq!(sx(&entries[5].value), "(/ n_embd n_head)");
    assert_eq!(sx(&entries[6].value), "1e-5");
    let Item::DimAlias { name, target } = &f.items[1] else { panic!() };
    assert_eq!((name.name.as_str(), dx(target).as_str()), ("S", "T"));

    let Item::Layer(attn) = &f.items[3] else { panic!() };
    assert_eq!(attn.name.name, "Attention");
    assert_eq!(attn.params.len(), 4);
    let ParamKind::Tensor { ty: t, init } = &attn.params[0].kind else { panic!() };
    assert_eq!(ty(t), "f32[n_embd, (* 3 n_embd)]");
    assert_eq!(sx(init), "(call normal std=0.02)");
    let ParamKind::Tensor { init, .. } = &attn.params[2].kind else { panic!() };
    assert_eq!(sx(init), "(call normal std=(/ 0.02 (call sqrt (* 2 n_layer))))");

    let Item::Param(blocks) = &f.items[8] else { panic!() };
    assert_eq!(blocks.name.name, "blocks");
    let ParamKind::Layer { layer, count: Some(n) } = &blocks.kind else { panic!() };
    assert_eq!((layer.name.as_str(), dx(n).as_str()), ("Block", "n_layer"));
    let Item::Param(ln_f) = &f.items[9] else { panic!() };
    assert!(matches!(&ln_f.kind, ParamKind::Layer { count: None, .. }));

    let fs = fns(&f);
    let names: Vec<&str> = fs.iter().map(|f| f.name.name.as_str()).collect();
    assert_eq!(names, ["norm", "attention", "mlp", "forward", "loss"]);
    assert_eq!(fs.iter().filter(|f| f.public).count(), 2);

    let attention = fs[1];
    assert!(matches!(&attention.args[0].ty, ArgType::Layer(l) if l.name == "Attention"));
    assert!(matches!(&attention.args[1].ty, ArgType::Tensor(t) if ty(t) == "f32[B, T, n_embd]"));
    let stmts: Vec<String> = attention.body.iter().map(stmt).collect();
    assert_eq!(stmts[0], "(let (qkv) (+ (@ x (. p w_qkv)) (. p b_qkv)))");
    assert_eq!(stmts[1], "(let (q k v) (call split qkv 3 over=(neg 1)))");
    assert_eq!(stmts[2], "(let (q) (rearrange q [b t (h d)] -> [b h t d] h=n_head))");
    // `@` and `/` share a level and associate left.
    assert_eq!(stmts[5], "(let (scores) : f32[B, n_head, T, S] (/ (@ q (call transpose k)) (call sqrt d_head)))");
    assert_eq!(stmts[7], "(let (weights) (call dropout (call softmax (call where causal scores (neg inf)) over=S) p_drop))");
    assert_eq!(stmts[8], "(let (y) (rearrange (@ weights v) [b h t d] -> [b t (h d)]))");

    let forward = fs[3];
    assert_eq!(forward.results.len(), 1);
    assert_eq!(forward.results[0].0.as_ref().unwrap().name, "logits");
    assert_eq!(ty(&forward.results[0].1), "f32[B, T, vocab]");
    assert_eq!(forward.wheres.len(), 1);
    let w = &forward.wheres[0];
    assert_eq!((dx(&w.lhs).as_str(), w.op, dx(&w.rhs).as_str()), ("T", CmpOp::Le, "block"));
    let stmts: Vec<String> = forward.body.iter().map(stmt).collect();
    assert_eq!(stmts[0], "(let (x) (+ (index wte tokens) (index wpe (: 0 T _))))");
    assert_eq!(
        stmts[1],
        "(let (x) (scan (blk in blocks) (with h x) \
         (let (h) (+ h (call attention (. blk attn) (call norm (. blk ln1) h)))) \
         (next h (+ h (call mlp (. blk mlp) (call norm (. blk ln2) h))))))"
    );
    // The signature span runs from `fn` to the end of the results.
    let sig = &GPT[forward.span.start as usize..forward.span.end as usize];
    assert_eq!(sig, "fn forward(tokens: i32[B, T]) -> logits: f32[B, T, vocab]");
    assert_eq!(ty(&fs[4].results[0].1), "f32[]");
}

#[test]
fn mlp_parses() {
    let f = ok(MLP);
    assert_eq!(f.items.len(), 7);
    let fs = fns(&f);
    assert_eq!(fs.len(), 2);
    assert_eq!(stmt(&fs[0].body[0]), "(let (h) (call relu (+ (@ x w1) b1)))");
    assert_eq!(stmt(&fs[0].body[1]), "(return (+ (@ h w2) b2))");
    assert_eq!(stmt(&fs[1].body[0]), "(return (call cross_entropy (call forward x) labels over=classes))");
}

// ---------------------------------------------------------------- precedence

#[test]
fn precedence_of_every_level() {
    let cases = [
        // or < and < not < comparison
        ("a or b and c", "(or a (and b c))"),
        ("a and b or c", "(or (and a b) c)"),
        ("a or b or c", "(or (or a b) c)"),
        ("a and b and c", "(and (and a b) c)"),
        ("not a and b", "(and (not a) b)"),
        ("not a == b", "(not (== a b))"),
        ("not not a", "(not (not a))"),
        ("a < b and c", "(and (< a b) c)"),
        ("a == b or c != d", "(or (== a b) (!= c d))"),
        // comparison < + -
        ("a + b <= c - d", "(<= (+ a b) (- c d))"),
        ("a > b", "(> a b)"),
        ("a >= b", "(>= a b)"),
        // + - < * / @
        ("a + b * c", "(+ a (* b c))"),
        ("a - b / c", "(- a (/ b c))"),
        ("a - b - c", "(- (- a b) c)"),
        ("a + b @ c", "(+ a (@ b c))"),
        // * / @ share a level, left-assoc
        ("a * b @ c", "(@ (* a b) c)"),
        ("q @ k * s", "(* (@ q k) s)"),
        ("a / b / c", "(/ (/ a b) c)"),
        ("x @ w @ v", "(@ (@ x w) v)"),
        // * < unary -
        ("-a * b", "(* (neg a) b)"),
        ("a * -b", "(* a (neg b))"),
        ("a - -b", "(- a (neg b))"),
        ("- - a", "(neg (neg a))"),
        // unary - < **, and ** is right-assoc
        ("-x ** 2", "(neg (** x 2))"),
        ("2 ** -1", "(** 2 (neg 1))"),
        ("a ** b ** c", "(** a (** b c))"),
        ("a ** -b ** c", "(** a (neg (** b c)))"),
        ("a * b ** c", "(* a (** b c))"),
        // ** < postfix
        ("x.w ** 2", "(** (. x w) 2)"),
        ("x[0] ** f(y)", "(** (index x 0) (call f y))"),
        ("-p.w[0]", "(neg (index (. p w) 0))"),
        ("f(x).y[1].z", "(. (index (. (call f x) y) 1) z)"),
        // parentheses override everything
        ("(a + b) * c", "(* (+ a b) c)"),
        ("-(x ** 2)", "(neg (** x 2))"),
        ("(-x) ** 2", "(** (neg x) 2)"),
        ("not (a and b)", "(not (and a b))"),
    ];
    for (src, want) in cases {
        assert_eq!(s(src), want, "in {src:?}");
    }
}

#[test]
fn comparisons_do_not_chain() {
    let d = err("fn f() -> f32 { return a < b < c }");
    assert_eq!(d.code, "E0002");
    assert!(d.message.ends_with("found `<`"), "{}", d.message);
    assert!(err("fn f() -> f32 { return a == not b }").message.contains("found `not`"));
}

// ---------------------------------------------------------------- forms

#[test]
fn atoms() {
    let cases = [
        ("256", "256"),
        ("0.02", "0.02"),
        ("3.", "3.0"),
        (".5", "0.5"),
        ("1e-5", "1e-5"),
        ("true", "true"),
        ("false", "false"),
        ("cast(x, bf16)", "(call cast x bf16)"),
        ("(a)", "a"),
        ("((a))", "a"),
        ("(a, b)", "(tuple a b)"),
        ("(a,)", "(tuple a)"),
        ("(a, b,)", "(tuple a b)"),
        ("[a, b]", "[a b]"),
        ("[]", "[]"),
        ("[B, T, -1]", "[B T (neg 1)]"),
        ("zeros", "zeros"),
        ("f()", "(call f)"),
        ("normal(std: 0.02)", "(call normal std=0.02)"),
        ("uniform(low: -0.1, high: 0.1)", "(call uniform low=(neg 0.1) high=0.1)"),
        ("f(a, k: 1, b)", "(call f a b k=1)"),
        ("sum(x, over: [T, d], keep: true,)", "(call sum x over=[T d] keep=true)"),
        ("f(in: 1, with: 2, dim: 3)", "(call f in=1 with=2 dim=3)"),
        ("where(c, a, where(d, b, 0))", "(call where c a (call where d b 0))"),
    ];
    for (src, want) in cases {
        assert_eq!(s(src), want, "in {src:?}");
    }
}

#[test]
fn indexing() {
    let cases = [
        ("x[i]", "(index x i)"),
        ("x[0:T]", "(index x (: 0 T _))"),
        ("x[:, -1]", "(index x (: _ _ _) (neg 1))"),
        ("x[..., 1:]", "(index x ... (: 1 _ _))"),
        ("x[a:b:c]", "(index x (: a b c))"),
        ("x[::2]", "(index x (: _ _ 2))"),
        ("x[:n - 1]", "(index x (: _ (- n 1) _))"),
        ("x[tokens]", "(index x tokens)"),
        ("x[i, j,]", "(index x i j)"),
        ("x[0][1]", "(index (index x 0) 1)"),
    ];
    for (src, want) in cases {
        assert_eq!(s(src), want, "in {src:?}");
    }
    assert!(err("fn f() -> f32 { return x[] }").message.contains("found `]`"));
}

#[test]
fn einsum_forms() {
    assert_eq!(s("einsum(q: b h t d, k: b h s d -> b h t s)"), "(einsum (q b h t d) (k b h s d) -> b h t s)");
    assert_eq!(s("einsum(x: i, y: i -> )"), "(einsum (x i) (y i) -> )");
    assert_eq!(s("einsum(p.w + 1: a b -> b a)"), "(einsum ((+ (. p w) 1) a b) -> b a)");
    assert_eq!(err("fn f() -> f32 { return einsum(x -> i) }").code, "E0002");
}

#[test]
fn rearrange_forms() {
    assert_eq!(s("rearrange(x, b t (h d) -> b h t d, h: n_head)"), "(rearrange x [b t (h d)] -> [b h t d] h=n_head)");
    assert_eq!(s("rearrange(x, a 1 -> 1 a ())"), "(rearrange x [a 1] -> [1 a ()])");
    assert_eq!(
        s("rearrange(x, (a b c) -> a b c, a: 2, b: n / 2,)"),
        "(rearrange x [(a b c)] -> [a b c] a=2 b=(/ n 2))"
    );
    let e = expr("rearrange(x, b (h d) -> b h d)");
    let ExprKind::Rearrange { from, .. } = &e.kind else { panic!() };
    let PatternAxis::Group(names, span) = &from[1] else { panic!() };
    assert_eq!((names.len(), span.end - span.start), (2, 5));
}

#[test]
fn scan_forms() {
    let e = "scan x_t in xs over T, m_t in ms with h = h0, c = c0 { \
             let a = x_t * m_t \
             next h = a + h, c = c \
             emit h, c }";
    assert_eq!(
        s(e),
        "(scan (x_t in xs over T) (m_t in ms) (with h h0) (with c c0) \
         (let (a) (* x_t m_t)) (next h (+ a h)) (next c c) (emit h c))"
    );
    assert_eq!(s("scan x in xs { emit x * 2 }"), "(scan (x in xs) (emit (* x 2)))");
    assert_eq!(s("scan x in xs over 2 * T { }"), "(scan (x in xs over (* 2 T)))");
    assert_eq!(s("scan x in xs {}[0]"), "(index (scan (x in xs)) 0)");
    // `next` and `emit` come after the statements, in that order.
    assert_eq!(err("fn f() -> f32 { return scan x in xs { emit x next h = x } }").code, "E0002");
    assert_eq!(err("fn f() -> f32 { return scan x in xs { next h = x let y = x } }").code, "E0002");
}

#[test]
fn statements() {
    let b = body("fn f() -> f32 { let x = 1 let y: f32[B, S] = x let a, b, c = t let (d, e,) = t return (a, b) }");
    let got: Vec<String> = b.iter().map(stmt).collect();
    assert_eq!(
        got,
        ["(let (x) 1)", "(let (y) : f32[B, S] x)", "(let (a b c) t)", "(let (d e) t)", "(return (tuple a b))",]
    );
    // A type ascription needs a single name.
    assert_eq!(err("fn f() -> f32 { let a, b: f32 = t }").code, "E0002");
    // Return may appear anywhere; the checker decides where it is allowed.
    assert_eq!(body("fn f() -> f32 { return 1 let x = 2 }").len(), 2);
}

#[test]
fn items_and_signatures() {
    let f = ok(r#"
        import "lib/other.kl"
        config { a = 1, b = a * 2  c = 0.5 }
        dim S = (T + 1) * 2
        layer L { param w: f32[n % 8, n] = constant(0.5) param s: f32 = zeros }
        param k: bool[] = zeros
        fn f(x: f32[B, T], p: L) -> (f32[B], y: i64[T]) where T % 8 == 0, B != 1, T > 2 { return x }
        pub fn g(x: f16) -> (a: f32, b: f32) { return x }
        fn h() -> (f32[2 - 1 - 1],) { return 1 }
    "#);
    assert_eq!(f.items.len(), 8);
    let Item::Import { path, span } = &f.items[0] else { panic!() };
    assert_eq!((path.as_str(), span.end - span.start), ("lib/other.kl", 14));
    let Item::Config(entries) = &f.items[1] else { panic!() };
    assert_eq!(entries.len(), 3);
    let Item::DimAlias { target, .. } = &f.items[2] else { panic!() };
    assert_eq!(dx(target), "(* (+ T 1) 2)");
    let Item::Layer(l) = &f.items[3] else { panic!() };
    let ParamKind::Tensor { ty: t, .. } = &l.params[0].kind else { panic!() };
    assert_eq!(ty(t), "f32[(% n 8), n]");
    let ParamKind::Tensor { ty: t, .. } = &l.params[1].kind else { panic!() };
    assert_eq!(ty(t), "f32[]");
    let fs = fns(&f);
    assert_eq!(fs[0].results.len(), 2);
    assert!(fs[0].results[0].0.is_none());
    assert_eq!(fs[0].results[1].0.as_ref().unwrap().name, "y");
    let wheres: Vec<String> =
        fs[0].wheres.iter().map(|w| format!("{} {} {}", dx(&w.lhs), cmp(w.op), dx(&w.rhs))).collect();
    assert_eq!(wheres, ["(% T 8) == 0", "B != 1", "T > 2"]);
    assert!(!fs[0].public && fs[1].public);
    assert_eq!(fs[1].results.len(), 2);
    // `-` on dims is left-assoc.
    assert_eq!(ty(&fs[2].results[0].1), "f32[(- (- 2 1) 1)]");
    // The result list is required, and a layer is no result type.
    assert_eq!(err("fn f(x: f32) { return x }").code, "E0002");
    assert_eq!(err("fn f(x: f32) -> L { return x }").code, "E0002");
    // Layer arguments have no count.
    assert_eq!(err("fn f(p: L[2]) -> f32 { return 1 }").code, "E0002");
    // A tensor param needs an initializer.
    assert_eq!(err("param w: f32[2]").code, "E0003");
}

#[test]
fn spans_cover_their_text() {
    let src = "fn f() -> f32 { return -(a + b) * f(c, k: d)[0:T].w }";
    let Stmt::Return(e, ret) = body(src).pop().unwrap() else { panic!() };
    assert_eq!(&src[ret.start as usize..ret.end as usize], "return -(a + b) * f(c, k: d)[0:T].w");
    let mut got = Vec::new();
    spans(src, &e, &mut got);
    assert_eq!(
        got,
        [
            "-(a + b) * f(c, k: d)[0:T].w",
            "-(a + b)",
            "(a + b)",
            "a",
            "b",
            "f(c, k: d)[0:T].w",
            "f(c, k: d)[0:T]",
            "f(c, k: d)",
            "c",
            "d",
        ]
    );
    let ExprKind::Binary(_, _, rhs) = &e.kind else { panic!() };
    let ExprKind::Field(base, w) = &rhs.kind else { panic!() };
    assert_eq!(&src[w.span.start as usize..w.span.end as usize], "w");
    let ExprKind::Index(call, items) = &base.kind else { panic!() };
    let IndexItem::Range { span, .. } = &items[0] else { panic!() };
    assert_eq!(&src[span.start as usize..span.end as usize], "0:T");
    let ExprKind::Call { func, kwargs, .. } = &call.kind else { panic!() };
    assert_eq!(func.span, Span::new(FileId(0), 34, 35));
    assert_eq!(&src[kwargs[0].0.span.start as usize..kwargs[0].0.span.end as usize], "k");

    // Every span carries the file id given to `parse`.
    let f = parse(FileId(7), "dim S = T").unwrap();
    let Item::DimAlias { name, target } = &f.items[0] else { panic!() };
    assert_eq!((name.span.file, target.span().file), (FileId(7), FileId(7)));
}

// ---------------------------------------------------------------- errors

#[test]
fn e0001_invalid_character() {
    let src = "config {\n    a = 1 $ 2\n}";
    let d = err(src);
    assert_eq!((d.code, at(src, &d), covered(src, &d)), ("E0001", (2, 11), "$"));
    assert_eq!(d.message, "invalid character '$'");
    // A multi-byte character is labelled whole, and columns count characters.
    let src = "fn f() -> f32 { return é é }";
    let d = err(src);
    assert_eq!((d.code, at(src, &d), covered(src, &d)), ("E0001", (1, 24), "é"));
    // `!` is only a token as part of `!=`.
    assert_eq!(err("fn f() -> f32 { return a ! b }").code, "E0001");
    // The first error wins: a syntax error before a bad character.
    let src = "let é";
    let d = err(src);
    assert_eq!((d.code, at(src, &d), covered(src, &d)), ("E0002", (1, 1), "let"));
}

#[test]
fn e0002_unexpected_token() {
    let src = "fn f(a: f32[B]\n     = 1) -> f32 { return a }";
    let d = err(src);
    assert_eq!((d.code, at(src, &d), covered(src, &d)), ("E0002", (2, 6), "="));
    assert_eq!(d.message, "expected one of `)`, `,`, found `=`");
    let d = err("fn f() -> f32 { let y = }");
    assert_eq!(d.message, "expected expression, found `}`");
    let d = err("fn f() -> f32 { return g(a b) }");
    assert_eq!(d.message, "expected one of `)`, `,`, found identifier `b`");
    let d = err("fn f() -> f32 { return a + }");
    assert_eq!(d.message, "expected expression, found `}`");
    let d = err("fn f(x: f32[B T]) -> f32 { return 1 }");
    assert_eq!(d.message, "expected one of `]`, `,`, `+`, `-`, `*`, `/`, `%`, found identifier `T`");
    // The rendered diagnostic points at the token.
    let src = "dim = 3";
    let r = render(src, &err(src));
    assert!(r.starts_with("test.kl:1:5: error[E0002]: expected identifier, found `=`"), "{r}");
}

#[test]
fn e0003_unexpected_end_of_file() {
    let src = "fn f(x: f32) -> f32 {\n    return x\n";
    let d = err(src);
    assert_eq!((d.code, d.primary.span.start as usize, d.primary.span.end as usize), ("E0003", src.len(), src.len()));
    assert_eq!(at(src, &d), (3, 1));
    assert!(d.message.starts_with("unexpected end of file, expected one of `}`"), "{}", d.message);
    let d = err("layer");
    assert_eq!((d.message.as_str(), at("layer", &d)), ("unexpected end of file, expected identifier", (1, 6)));
}

#[test]
fn e0004_unterminated_string() {
    let src = "import \"a.kl\nimport \"b.kl\"";
    let d = err(src);
    assert_eq!((d.code, at(src, &d), covered(src, &d)), ("E0004", (1, 8), "\"a.kl"));
    let src = "\n  import \"x";
    let d = err(src);
    assert_eq!((d.code, at(src, &d), covered(src, &d)), ("E0004", (2, 10), "\"x"));
}

#[test]
fn e0005_integer_too_large() {
    let src = "config {\n  n = 9223372036854775808\n}";
    let d = err(src);
    assert_eq!((d.code, at(src, &d), covered(src, &d)), ("E0005", (2, 7), "9223372036854775808"));
    assert!(parse(FileId(0), "config { n = 9223372036854775807 }").is_ok());
    let src = "fn f(x: f32[99999999999999999999]) -> f32 { return x }";
    assert_eq!(err(src).code, "E0005");
}

#[test]
fn e0006_malformed_rearrange_pattern() {
    let src = "fn f() -> f32 {\n  return rearrange(x, a 2 -> a)\n}";
    let d = err(src);
    assert_eq!((d.code, at(src, &d), covered(src, &d)), ("E0006", (2, 25), "2"));
    let src = "fn f() -> f32 { return rearrange(x, a (b (c d)) -> a) }";
    let d = err(src);
    assert_eq!((d.code, covered(src, &d)), ("E0006", "(c d)"));
    assert!(d.message.contains("nested group"));
    assert_eq!(covered(src, &d), "(c d)");
    let src = "fn f() -> f32 { return rearrange(x, a -> (a 1)) }";
    let d = err(src);
    assert_eq!((d.code, covered(src, &d)), ("E0006", "1"));
}

#[test]
fn e0007_nesting_too_deep_without_overflow() {
    // Each of these would build a tree thousands of levels deep.
    let n = 5000;
    for e in [
        "-".repeat(n) + "x",
        "not ".repeat(n) + "x",
        vec!["a"; n].join(" + "),
        vec!["a"; n].join(" ** "),
        "[".repeat(n) + &"]".repeat(n),
        "f(".repeat(n) + &")".repeat(n),
        "x".to_string() + &".y".repeat(n),
    ] {
        let src = format!("fn f() -> f32 {{ return {e} }}");
        let d = err(&src);
        assert_eq!(d.code, "E0007", "{}", &e[..20]);
    }
    let src = format!("fn f() -> f32[{}] {{ return 1 }}", vec!["1"; n].join(" * "));
    assert_eq!(err(&src).code, "E0007");
    // Parentheses add no node, so deep ones are fine.
    assert_eq!(s(&("(".repeat(n) + "x" + &")".repeat(n))), "x");
    // And ordinary depth is well within the limit.
    assert!(parse(FileId(0), &format!("fn f() -> f32 {{ return {} }}", vec!["a"; 100].join(" + "))).is_ok());
}

// ---------------------------------------------------------------- robustness

/// Every span in a diagnostic lies within the text, on char boundaries.
fn check_spans(src: &str, d: &Diagnostic) {
    for l in std::iter::once(&d.primary).chain(&d.secondary) {
        let (a, b) = (l.span.start as usize, l.span.end as usize);
        assert!(a <= b && b <= src.len(), "span {a}..{b} outside {} bytes: {d:?}", src.len());
        assert!(src.is_char_boundary(a) && src.is_char_boundary(b), "span {a}..{b} splits a char: {d:?}");
    }
}

fn parse_any(src: &str) {
    if let Err(d) = parse(FileId(0), src) {
        check_spans(src, &d);
        let _ = render(src, &d);
    }
}

/// Real token texts, so random sequences reach deep into the grammar.
const SOUP: &[&str] = &[
    "config",
    "dim",
    "layer",
    "param",
    "fn",
    "pub",
    "let",
    "return",
    "import",
    "scan",
    "in",
    "over",
    "with",
    "next",
    "emit",
    "where",
    "true",
    "false",
    "and",
    "or",
    "not",
    "einsum",
    "rearrange",
    "f32",
    "bf16",
    "i32",
    "bool",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ",",
    ":",
    ".",
    "...",
    "=",
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "+",
    "-",
    "*",
    "/",
    "%",
    "@",
    "**",
    "->",
    "x",
    "T",
    "Block",
    "1",
    "0",
    "256",
    "0.5",
    "1e-5",
    "\"a.kl\"",
    "\"",
    "# c\n",
    "$",
    "99999999999999999999",
];

#[test]
fn every_truncation_of_gpt_fails_cleanly() {
    for (i, _) in GPT.char_indices().chain(std::iter::once((GPT.len(), ' '))) {
        let src = &GPT[..i];
        if let Err(d) = parse(FileId(0), src) {
            check_spans(src, &d);
            assert!(d.primary.span.start as usize <= src.len());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        parse_any(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn token_soup_never_panics(picks in proptest::collection::vec(0..SOUP.len(), 0..64)) {
        let src: Vec<&str> = picks.iter().map(|&i| SOUP[i]).collect();
        parse_any(&src.join(" "));
    }

    /// Near-valid programs: gpt.kl with a random stretch replaced by a token.
    #[test]
    fn mutated_gpt_never_panics(a in 0..GPT.len(), len in 0usize..40, tok in 0..SOUP.len()) {
        let a = (0..=a).rev().find(|&i| GPT.is_char_boundary(i)).unwrap_or(0);
        let b = (a + len).min(GPT.len());
        let b = (b..=GPT.len()).find(|&i| GPT.is_char_boundary(i)).unwrap_or(GPT.len());
        parse_any(&format!("{}{}{}", &GPT[..a], SOUP[tok], &GPT[b..]));
    }
}
