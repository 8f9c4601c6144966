//! Turns tokens into kernels: directives, declarations, labels and decoded instructions.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::instr::{
    allowed_mods, parse_shape, Base, Imm, Instr, Mod, ModSet, Opcode, Operand, Special, Symbol,
};
use crate::lexer::{lex, Tok, Token};
use crate::module::{Kernel, Param};
use crate::types::Type;

/// A `.shared` variable: static ones get their own bytes, `.extern` ones alias the dynamic area.
#[derive(Debug, Clone)]
struct SharedVar {
    name: String,
    align: u64,
    /// `None` for `.extern` (dynamic) arrays.
    size: Option<u64>,
}

/// A bound on `%r<N>` that no real kernel reaches, so a typo cannot exhaust memory.
const MAX_REGS: u64 = 1 << 16;

struct Parser {
    toks: Vec<Token>,
    pos: usize,
}

/// Parses a module into its kernels.
pub(crate) fn parse(src: &str) -> Result<Vec<Kernel>> {
    let mut p = Parser {
        toks: lex(src)?,
        pos: 0,
    };
    let mut module_shared = Vec::new();
    let mut kernels = Vec::new();
    while let Some(t) = p.peek().cloned() {
        let line = t.line;
        match &t.tok {
            Tok::Word(w) if w == ".version" => {
                p.pos += 1;
                p.number()?;
            }
            Tok::Word(w) if w == ".target" => {
                p.pos += 1;
                p.word()?;
                while p.eat(',') {
                    p.word()?;
                }
            }
            Tok::Word(w) if w == ".address_size" => {
                p.pos += 1;
                if p.number()? != "64" {
                    return Err(Error::Unsupported {
                        what: ".address_size other than 64".into(),
                        line,
                    });
                }
            }
            Tok::Word(w) if w == ".shared" || w == ".extern" => {
                module_shared.push(p.shared_decl()?)
            }
            // debug file table: `.file 1 "k.cu"` has no semicolon, it ends with its line
            Tok::Word(w) if w == ".file" => {
                p.pos += 1;
                p.skip_line(line);
            }
            Tok::Word(w) if w == ".visible" || w == ".entry" => {
                if w == ".visible" {
                    p.pos += 1;
                }
                kernels.push(p.entry(&module_shared)?);
            }
            Tok::Word(w) => {
                return Err(Error::Unsupported {
                    what: w.clone(),
                    line,
                })
            }
            other => {
                return Err(Error::Parse {
                    line,
                    msg: format!("unexpected {other:?} at module level"),
                })
            }
        }
    }
    Ok(kernels)
}

/// Per-kernel name tables while its body is read.
struct Body {
    scopes: Vec<HashMap<String, u32>>,
    reg_bits: Vec<u32>,
    symbols: HashMap<String, Symbol>,
    labels: HashMap<String, usize>,
    instrs: Vec<Instr>,
    shared: Vec<SharedVar>,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.toks.get(self.pos)
    }

    fn line(&self) -> u32 {
        self.toks
            .get(self.pos)
            .or(self.toks.last())
            .map_or(1, |t| t.line)
    }

    fn err<T>(&self, msg: impl Into<String>) -> Result<T> {
        Err(Error::Parse {
            line: self.line(),
            msg: msg.into(),
        })
    }

    fn next(&mut self) -> Result<Token> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t.ok_or(Error::Parse {
            line: self.line(),
            msg: "unexpected end of input".into(),
        })
    }

    fn skip_line(&mut self, line: u32) {
        while self.peek().is_some_and(|t| t.line == line) {
            self.pos += 1;
        }
    }

    fn is_punct(&self, c: char) -> bool {
        matches!(self.peek(), Some(Token { tok: Tok::Punct(p), .. }) if *p == c)
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Token { tok: Tok::Word(x), .. }) if x == w)
    }

    fn eat(&mut self, c: char) -> bool {
        let yes = self.is_punct(c);
        if yes {
            self.pos += 1;
        }
        yes
    }

    fn expect(&mut self, c: char) -> Result<()> {
        if self.eat(c) {
            Ok(())
        } else {
            self.err(format!("expected `{c}`"))
        }
    }

    fn word(&mut self) -> Result<String> {
        match self.next()?.tok {
            Tok::Word(w) => Ok(w),
            other => self.err(format!("expected a name, found {other:?}")),
        }
    }

    fn number(&mut self) -> Result<String> {
        match self.next()?.tok {
            Tok::Number(n) => Ok(n),
            other => self.err(format!("expected a number, found {other:?}")),
        }
    }

    fn uint(&mut self) -> Result<u64> {
        let line = self.line();
        match parse_number(&self.number()?, line)? {
            Imm::Int(v) if v >= 0 => Ok(v as u64),
            _ => self.err("expected a non-negative integer"),
        }
    }

    fn type_word(&mut self) -> Result<Type> {
        let line = self.line();
        let w = self.word()?;
        w.strip_prefix('.')
            .and_then(Type::from_name)
            .ok_or(Error::Unsupported {
                what: format!("type {w}"),
                line,
            })
    }

    /// `[.extern] .shared [.align N] .type name[N]...;`
    fn shared_decl(&mut self) -> Result<SharedVar> {
        let is_extern = self.is_word(".extern");
        if is_extern {
            self.pos += 1;
        }
        if self.word()? != ".shared" {
            return self.err("expected .shared");
        }
        let mut align = 1;
        if self.is_word(".align") {
            self.pos += 1;
            align = self.uint()?;
        }
        let ty = self.type_word()?;
        align = align.max(ty.bytes());
        let name = self.word()?;
        let mut size = Some(ty.bytes());
        while self.eat('[') {
            if self.eat(']') {
                size = None;
                continue;
            }
            let n = self.uint()?;
            size = match size.map(|s| s.checked_mul(n)) {
                Some(None) => return self.err(format!("shared `{name}` is too large")),
                other => other.flatten(),
            };
            self.expect(']')?;
        }
        self.expect(';')?;
        if is_extern != size.is_none() {
            return self.err(format!(
                "shared `{name}`: only .extern arrays may be unsized"
            ));
        }
        Ok(SharedVar { name, align, size })
    }

    /// `.entry name(params) directives { body }`
    fn entry(&mut self, module_shared: &[SharedVar]) -> Result<Kernel> {
        if self.word()? != ".entry" {
            return self.err("expected .entry");
        }
        let name = self.word()?;
        let mut params = Vec::new();
        let mut param_bytes = 0u64;
        self.expect('(')?;
        while !self.eat(')') {
            if !params.is_empty() {
                self.expect(',')?;
            }
            if self.word()? != ".param" {
                return self.err("expected .param");
            }
            // `.ptr .global .align 8` pointer attributes only inform the optimizer; an array
            // parameter writes its `.align` before the type
            let mut align = 1;
            let mut attributes = |p: &mut Self| -> Result<()> {
                while p.is_word(".ptr") || p.is_word(".global") || p.is_word(".shared") || p.is_word(".align") {
                    if p.word()? == ".align" {
                        align = align.max(p.uint()?);
                    }
                }
                Ok(())
            };
            attributes(self)?;
            let ty = self.type_word()?;
            attributes(self)?;
            let align = align.max(ty.bytes());
            let pname = self.word()?;
            let mut bytes = ty.bytes();
            if self.eat('[') {
                bytes *= self.uint()?;
                self.expect(']')?;
            }
            let offset = param_bytes.next_multiple_of(align);
            param_bytes = offset + bytes;
            params.push(Param {
                name: pname,
                ty,
                bytes,
                offset,
            });
        }
        let (mut reqntid, mut maxntid) = (None, None);
        while !self.is_punct('{') {
            let line = self.line();
            let d = self.word()?;
            match d.as_str() {
                ".reqntid" | ".maxntid" => {
                    let mut dims = [1u32; 3];
                    for (i, dim) in dims.iter_mut().enumerate() {
                        if i > 0 && !self.eat(',') {
                            break;
                        }
                        *dim = u32::try_from(self.uint()?).map_err(|_| Error::Parse {
                            line,
                            msg: "too large".into(),
                        })?;
                    }
                    if d == ".reqntid" {
                        reqntid = Some(dims);
                    } else {
                        maxntid = Some(dims);
                    }
                }
                ".minnctapersm" | ".maxnreg" => {
                    self.uint()?;
                }
                _ => return Err(Error::Unsupported { what: d, line }),
            }
        }
        self.expect('{')?;
        let mut symbols: HashMap<String, Symbol> = params
            .iter()
            .map(|p| (p.name.clone(), Symbol::Param(p.offset)))
            .collect();
        let mut body = Body {
            scopes: vec![HashMap::new()],
            reg_bits: Vec::new(),
            symbols: HashMap::new(),
            labels: HashMap::new(),
            instrs: Vec::new(),
            shared: module_shared.to_vec(),
        };
        std::mem::swap(&mut body.symbols, &mut symbols);
        self.body(&mut body)?;
        let static_shared = layout_shared(&body.shared, &mut body.symbols);
        // second pass: the symbols and labels a use may precede
        for ins in &mut body.instrs {
            for arg in &mut ins.args {
                resolve(arg, &body.symbols, &body.labels, ins.line)?;
            }
        }
        Ok(Kernel {
            name,
            params,
            param_bytes,
            reg_bits: body.reg_bits,
            instrs: body.instrs,
            static_shared,
            reqntid,
            maxntid,
        })
    }

    fn body(&mut self, b: &mut Body) -> Result<()> {
        loop {
            let t = self.next()?;
            match &t.tok {
                Tok::Punct('{') => b.scopes.push(HashMap::new()),
                Tok::Punct('}') => {
                    b.scopes.pop();
                    if b.scopes.is_empty() {
                        return Ok(());
                    }
                }
                Tok::Word(w) if w == ".reg" => self.reg_decl(b)?,
                Tok::Word(w) if w == ".shared" || w == ".extern" => {
                    self.pos -= 1;
                    let v = self.shared_decl()?;
                    b.shared.push(v);
                }
                // debug line info: `.loc 1 5 3` has no semicolon, it ends with its line
                Tok::Word(w) if w == ".loc" => self.skip_line(t.line),
                Tok::Word(w) if w == ".pragma" => {
                    while !self.eat(';') {
                        self.next()?;
                    }
                }
                Tok::Word(w) if self.is_punct(':') => {
                    self.pos += 1;
                    if b.labels.insert(w.clone(), b.instrs.len()).is_some() {
                        return Err(Error::Parse {
                            line: t.line,
                            msg: format!("label `{w}` defined twice"),
                        });
                    }
                }
                Tok::Punct('@') => {
                    let negated = self.eat('!');
                    let r = self.word()?;
                    let reg = lookup_reg(b, &r).ok_or(Error::Parse {
                        line: t.line,
                        msg: format!("unknown predicate `{r}`"),
                    })?;
                    let op = self.word()?;
                    let mut ins = self.instruction(b, op, t.line)?;
                    ins.guard = Some((reg, negated));
                    b.instrs.push(ins);
                }
                Tok::Word(w) if !w.starts_with('.') => {
                    let ins = self.instruction(b, w.clone(), t.line)?;
                    b.instrs.push(ins);
                }
                Tok::Word(w) => {
                    return Err(Error::Unsupported {
                        what: w.clone(),
                        line: t.line,
                    })
                }
                other => {
                    return Err(Error::Parse {
                        line: t.line,
                        msg: format!("unexpected {other:?}"),
                    })
                }
            }
        }
    }

    /// `.reg .type %r<N>;` or `.reg .type %a, %b;`
    fn reg_decl(&mut self, b: &mut Body) -> Result<()> {
        let ty = self.type_word()?;
        loop {
            let name = self.word()?;
            let mut declare = |n: String| {
                let id = b.reg_bits.len() as u32;
                b.reg_bits.push(ty.bits());
                b.scopes
                    .last_mut()
                    .expect("a body always has a scope")
                    .insert(n, id);
            };
            if self.eat('<') {
                let count = self.uint()?;
                if count > MAX_REGS {
                    return self.err(format!(
                        "{count} registers in one declaration exceed {MAX_REGS}"
                    ));
                }
                self.expect('>')?;
                for i in 0..count {
                    declare(format!("{name}{i}"));
                }
            } else {
                declare(name);
            }
            if !self.eat(',') {
                break;
            }
        }
        self.expect(';')
    }

    fn instruction(&mut self, b: &Body, word: String, line: u32) -> Result<Instr> {
        let mut parts = word.split('.');
        let head = parts.next().unwrap_or_default();
        let unsupported = || Error::Unsupported {
            what: word.clone(),
            line,
        };
        let op = Opcode::from_name(head).ok_or_else(unsupported)?;
        let (mut mods, mut types, mut vec, mut shape) = (ModSet::default(), Vec::new(), 1, None);
        for part in parts {
            if let Some(ty) = Type::from_name(part) {
                types.push(ty);
            } else if let Some(s) = parse_shape(part).filter(|_| shape.is_none()) {
                shape = Some(s);
            } else if part == "v2" || part == "v4" {
                vec = if part == "v2" { 2 } else { 4 };
            } else {
                let m = Mod::from_name(part)
                    .filter(|m| allowed_mods(op).contains(m))
                    .ok_or_else(unsupported)?;
                mods.insert(m);
            }
        }
        let mut args = Vec::new();
        if !self.eat(';') {
            loop {
                args.push(self.operand(b, line)?);
                if self.eat(';') {
                    break;
                }
                self.expect(',')?;
            }
        }
        Ok(Instr {
            op,
            mods,
            types,
            vec,
            shape,
            args,
            guard: None,
            line,
            name: word,
        })
    }

    fn operand(&mut self, b: &Body, line: u32) -> Result<Operand> {
        if self.eat('{') {
            let mut elems = Vec::new();
            loop {
                elems.push(self.operand(b, line)?);
                if self.eat('}') {
                    return Ok(Operand::Vector(elems));
                }
                self.expect(',')?;
            }
        }
        if self.eat('[') {
            let base = match self.peek().map(|t| t.tok.clone()) {
                Some(Tok::Word(w)) => {
                    self.pos += 1;
                    match lookup_reg(b, &w) {
                        Some(r) => Base::Reg(r),
                        None => Base::Unresolved(w),
                    }
                }
                Some(Tok::Number(_)) => Base::Absolute,
                other => return self.err(format!("bad address {other:?}")),
            };
            if base != Base::Absolute && self.eat(',') {
                let Operand::Vector(coords) = self.operand(b, line)? else {
                    return self.err("expected `{coordinates}` after the tensor map");
                };
                self.expect(']')?;
                return Ok(Operand::TensorCoords(base, coords));
            }
            let mut offset = 0i64;
            if base == Base::Absolute || self.eat('+') || self.is_punct('-') {
                let neg = self.eat('-');
                let v = match parse_number(&self.number()?, line)? {
                    Imm::Int(v) => v,
                    _ => return self.err("address offsets are integers"),
                };
                offset = if neg { -v } else { v };
            }
            self.expect(']')?;
            return Ok(Operand::Addr(base, offset));
        }
        if self.eat('!') {
            let w = self.word()?;
            let r = lookup_reg(b, &w).ok_or(Error::Parse {
                line,
                msg: format!("unknown predicate `{w}`"),
            })?;
            return Ok(Operand::NotPred(r));
        }
        if self.eat('-') {
            return Ok(Operand::Imm(negate(parse_number(&self.number()?, line)?)));
        }
        match self.next()?.tok {
            Tok::Number(n) => Ok(Operand::Imm(parse_number(&n, line)?)),
            Tok::Word(w) if w == "_" => Ok(Operand::Sink),
            Tok::Word(w) => {
                if let Some(r) = lookup_reg(b, &w) {
                    if self.eat('|') {
                        let q = self.word()?;
                        let q = lookup_reg(b, &q).ok_or(Error::Parse {
                            line,
                            msg: format!("unknown register `{q}`"),
                        })?;
                        return Ok(Operand::PredPair(r, q));
                    }
                    return Ok(Operand::Reg(r));
                }
                if let Some(s) = Special::from_name(&w) {
                    return Ok(Operand::Special(s));
                }
                if w.starts_with('%') {
                    return Err(Error::Parse {
                        line,
                        msg: format!("unknown register `{w}`"),
                    });
                }
                Ok(Operand::Unresolved(w))
            }
            other => self.err(format!("unexpected {other:?} in operand")),
        }
    }
}

fn lookup_reg(b: &Body, name: &str) -> Option<u32> {
    b.scopes.iter().rev().find_map(|s| s.get(name).copied())
}

/// Static shared variables in declaration order, aligned; every `.extern` array starts after them.
fn layout_shared(vars: &[SharedVar], symbols: &mut HashMap<String, Symbol>) -> u64 {
    let mut end = 0u64;
    for v in vars {
        if let Some(size) = v.size {
            let at = end.next_multiple_of(v.align);
            symbols.insert(v.name.clone(), Symbol::Shared(at));
            end = at + size;
        }
    }
    let dynamic = vars
        .iter()
        .filter(|v| v.size.is_none())
        .map(|v| v.align)
        .fold(16, u64::max);
    let start = end.next_multiple_of(dynamic);
    for v in vars.iter().filter(|v| v.size.is_none()) {
        symbols.insert(v.name.clone(), Symbol::Shared(start));
    }
    start
}

fn resolve(
    arg: &mut Operand,
    symbols: &HashMap<String, Symbol>,
    labels: &HashMap<String, usize>,
    line: u32,
) -> Result<()> {
    let undefined = |n: &str| Error::Parse {
        line,
        msg: format!("undefined symbol `{n}`"),
    };
    match arg {
        Operand::Unresolved(name) => {
            *arg = match (symbols.get(name), labels.get(name)) {
                (Some(s), _) => Operand::Symbol(*s),
                (None, Some(&l)) => Operand::Label(l),
                (None, None) => return Err(undefined(name)),
            };
        }
        Operand::Addr(base, _) => {
            if let Base::Unresolved(name) = base {
                let sym = *symbols.get(name.as_str()).ok_or_else(|| undefined(name))?;
                *base = Base::Symbol(sym);
            }
        }
        Operand::TensorCoords(base, coords) => {
            if let Base::Unresolved(name) = base {
                let sym = *symbols.get(name.as_str()).ok_or_else(|| undefined(name))?;
                *base = Base::Symbol(sym);
            }
            for c in coords {
                resolve(c, symbols, labels, line)?;
            }
        }
        Operand::Vector(elems) => {
            for e in elems {
                resolve(e, symbols, labels, line)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn negate(imm: Imm) -> Imm {
    match imm {
        Imm::Int(v) => Imm::Int(v.wrapping_neg()),
        Imm::F32Bits(b) => Imm::F32Bits(b ^ 0x8000_0000),
        Imm::F64Bits(b) => Imm::F64Bits(b ^ (1 << 63)),
        Imm::Decimal(d) => Imm::Decimal(-d),
    }
}

/// Decodes a PTX literal: decimal, `0x` hex, `0b` binary, C octal, `0f`/`0d` float bits, decimal floats.
fn parse_number(text: &str, line: u32) -> Result<Imm> {
    let bad = || Error::Parse {
        line,
        msg: format!("bad number `{text}`"),
    };
    let s = text.strip_suffix(['U', 'u']).unwrap_or(text);
    let radix = |digits: &str, r: u32| {
        u64::from_str_radix(digits, r)
            .map(|v| Imm::Int(v as i64))
            .map_err(|_| bad())
    };
    if let Some(h) = s.strip_prefix("0f").or_else(|| s.strip_prefix("0F")) {
        return u32::from_str_radix(h, 16)
            .map(Imm::F32Bits)
            .map_err(|_| bad());
    }
    if let Some(h) = s.strip_prefix("0d").or_else(|| s.strip_prefix("0D")) {
        return u64::from_str_radix(h, 16)
            .map(Imm::F64Bits)
            .map_err(|_| bad());
    }
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        return radix(h, 16);
    }
    if let Some(h) = s.strip_prefix("0b").or_else(|| s.strip_prefix("0B")) {
        return radix(h, 2);
    }
    if s.contains(['.', 'e', 'E']) {
        return s.parse::<f64>().map(Imm::Decimal).map_err(|_| bad());
    }
    if s.len() > 1 && s.starts_with('0') {
        return radix(&s[1..], 8);
    }
    radix(s, 10)
}
