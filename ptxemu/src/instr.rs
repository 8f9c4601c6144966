//! Decoded instructions: opcode, modifiers, types and operands, as the parser leaves them.

use crate::error::Error;
use crate::types::Type;

/// Declares a C-like enum together with its PTX spelling.
macro_rules! spelled {
    ($(#[$meta:meta])* enum $name:ident { $($var:ident = $text:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum $name { $($var,)* }
        impl $name {
            /// How many variants there are.
            #[allow(dead_code)] // only `Mod` needs it
            pub(crate) const COUNT: usize = [$($text),*].len();

            pub(crate) fn from_name(s: &str) -> Option<Self> {
                match s { $($text => Some(Self::$var),)* _ => None }
            }
        }
    };
}

spelled! {
    /// The first dot-separated part of an instruction.
    enum Opcode {
        Add = "add", Sub = "sub", Mul = "mul", Mad = "mad", Fma = "fma", Div = "div", Rem = "rem",
        Neg = "neg", Abs = "abs", Min = "min", Max = "max",
        And = "and", Or = "or", Xor = "xor", Not = "not", Shl = "shl", Shr = "shr",
        Selp = "selp", Setp = "setp", Cvt = "cvt", Cvta = "cvta", Mov = "mov",
        Ld = "ld", St = "st", Atom = "atom", Red = "red",
        Ex2 = "ex2", Lg2 = "lg2", Rcp = "rcp", Sqrt = "sqrt", Rsqrt = "rsqrt", Sin = "sin", Cos = "cos",
        Tanh = "tanh", Copysign = "copysign",
        Bra = "bra", Ret = "ret", Exit = "exit", Bar = "bar", Barrier = "barrier", Membar = "membar", Fence = "fence",
        Shfl = "shfl", Cp = "cp", Mma = "mma", Ldmatrix = "ldmatrix", Mbarrier = "mbarrier", Wgmma = "wgmma",
    }
}

spelled! {
    /// A dot-separated modifier that is not a type.
    enum Mod {
        Lo = "lo", Hi = "hi", Wide = "wide",
        Rn = "rn", Rz = "rz", Rm = "rm", Rp = "rp", Rni = "rni", Rzi = "rzi", Rmi = "rmi", Rpi = "rpi",
        Sat = "sat", Ftz = "ftz", NaN = "NaN", Approx = "approx", Full = "full",
        Global = "global", Shared = "shared", Param = "param", To = "to",
        Nc = "nc", Ca = "ca", Cg = "cg", Cs = "cs", Lu = "lu", Cv = "cv", Volatile = "volatile",
        Relaxed = "relaxed", Acquire = "acquire", Release = "release", AcqRel = "acq_rel", Sc = "sc",
        Gpu = "gpu", Cta = "cta", Sys = "sys",
        NoAllocate = "L1::no_allocate", EvictLast = "L1::evict_last", EvictFirst = "L1::evict_first",
        EvictNormal = "L1::evict_normal", Prefetch64 = "L2::64B", Prefetch128 = "L2::128B", Prefetch256 = "L2::256B",
        Eq = "eq", Ne = "ne", Lt = "lt", Le = "le", Gt = "gt", Ge = "ge", Ls = "ls", Hs = "hs",
        Equ = "equ", Neu = "neu", Ltu = "ltu", Leu = "leu", Gtu = "gtu", Geu = "geu", Num = "num", Nan = "nan",
        And = "and", Or = "or", Xor = "xor",
        Uni = "uni", Sync = "sync", Aligned = "aligned",
        Bfly = "bfly", Down = "down", Up = "up", Idx = "idx",
        Add = "add", Min = "min", Max = "max",
        Async = "async", CommitGroup = "commit_group", WaitGroup = "wait_group", WaitAll = "wait_all",
        X1 = "x1", X2 = "x2", X4 = "x4", Trans = "trans",
        Row = "row", Col = "col", Proxy = "proxy", Warp = "warp", Gl = "gl", SharedCta = "shared::cta",
        SharedCluster = "shared::cluster", Cluster = "cluster", MbarrierInit = "mbarrier_init",
        Init = "init", Arrive = "arrive", ExpectTx = "expect_tx", TryWait = "try_wait", TestWait = "test_wait",
        Parity = "parity", Inval = "inval", Bulk = "bulk", CompleteTxBytes = "mbarrier::complete_tx::bytes",
        Fence = "fence", MmaAsync = "mma_async",
        Tensor = "tensor", Tile = "tile", D1 = "1d", D2 = "2d", D3 = "3d", D4 = "4d", D5 = "5d",
    }
}

// a `ModSet` has one bit per modifier
const _: () = assert!(Mod::COUNT <= 128);

/// A set of modifiers, one bit each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ModSet(u128);

impl ModSet {
    pub(crate) fn insert(&mut self, m: Mod) {
        self.0 |= 1u128 << (m as u32);
    }
    pub(crate) fn has(self, m: Mod) -> bool {
        self.0 & (1u128 << (m as u32)) != 0
    }
}

/// Special registers (`%tid.x`, `%laneid`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Special {
    Tid(usize),
    Ntid(usize),
    Ctaid(usize),
    Nctaid(usize),
    LaneId,
    WarpId,
    NWarpId,
}

impl Special {
    pub(crate) fn from_name(s: &str) -> Option<Special> {
        let (base, dim) = match s.rsplit_once('.') {
            Some((b, "x")) => (b, 0),
            Some((b, "y")) => (b, 1),
            Some((b, "z")) => (b, 2),
            _ => (s, 0),
        };
        Some(match base {
            "%tid" => Special::Tid(dim),
            "%ntid" => Special::Ntid(dim),
            "%ctaid" => Special::Ctaid(dim),
            "%nctaid" => Special::Nctaid(dim),
            "%laneid" => Special::LaneId,
            "%warpid" => Special::WarpId,
            "%nwarpid" => Special::NWarpId,
            _ => return None,
        })
    }
}

/// A literal as written; its bits depend on the type it is used at.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Imm {
    Int(i64),
    /// `0fXXXXXXXX`
    F32Bits(u32),
    /// `0dXXXXXXXXXXXXXXXX`
    F64Bits(u64),
    /// `1.5`
    Decimal(f64),
}

/// A named variable in a state space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Symbol {
    /// Offset in the CTA's shared memory.
    Shared(u64),
    /// Offset in the kernel's parameter block.
    Param(u64),
}

/// The base of an address operand.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Base {
    Reg(u32),
    Symbol(Symbol),
    Absolute,
    /// A symbol resolved after the whole body is read.
    Unresolved(String),
}

/// An operand.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Operand {
    Reg(u32),
    Imm(Imm),
    Special(Special),
    Symbol(Symbol),
    /// `[base+offset]`
    Addr(Base, i64),
    /// `[tensorMap, {c0, c1, ..}]`: a tensor map's address and box coordinates (`cp.async.bulk.tensor`).
    TensorCoords(Base, Vec<Operand>),
    /// `{a, b, ...}`
    Vector(Vec<Operand>),
    /// A branch target, as an instruction index.
    Label(usize),
    /// A name the parser resolves once the whole body is read (labels may be used before they appear).
    Unresolved(String),
    /// `!%p` as a source predicate.
    NotPred(u32),
    /// `%p|%q` as a `setp` destination.
    PredPair(u32, u32),
    /// `_`: a destination whose value is discarded.
    Sink,
}

/// One instruction.
#[derive(Debug, Clone)]
pub(crate) struct Instr {
    pub op: Opcode,
    pub mods: ModSet,
    /// The type suffixes in order (`cvt.rn.f16.f32` has `[F16, F32]`).
    pub types: Vec<Type>,
    /// 1, 2 or 4 (`.v2`, `.v4`).
    pub vec: usize,
    /// A matrix shape `.mMnNkK` as [M, N, K] (K is 0 in `.m8n8`).
    pub shape: Option<[u32; 3]>,
    pub args: Vec<Operand>,
    /// `@%p` (false) or `@!%p` (true).
    pub guard: Option<(u32, bool)>,
    pub line: u32,
    /// The opcode with modifiers, as written, for messages.
    pub name: String,
}

impl Instr {
    pub(crate) fn has(&self, m: Mod) -> bool {
        self.mods.has(m)
    }

    /// The error for a combination of modifiers, types or operands outside the subset.
    pub(crate) fn unsupported(&self) -> Error {
        Error::Unsupported {
            what: self.name.clone(),
            line: self.line,
        }
    }

    /// The `i`-th type suffix; missing ones are outside the subset.
    pub(crate) fn ty(&self, i: usize) -> Result<Type, Error> {
        self.types.get(i).copied().ok_or_else(|| self.unsupported())
    }

    /// The `i`-th operand.
    pub(crate) fn arg(&self, i: usize) -> Result<&Operand, Error> {
        self.args.get(i).ok_or_else(|| Error::Parse {
            line: self.line,
            msg: format!("`{}` needs at least {} operands", self.name, i + 1),
        })
    }
}

/// Parses a matrix shape such as `m16n8k16` or `m8n8`.
pub(crate) fn parse_shape(s: &str) -> Option<[u32; 3]> {
    let (m, rest) = s.strip_prefix('m')?.split_once('n')?;
    let (n, k) = rest.split_once('k').unwrap_or((rest, "0"));
    Some([m.parse().ok()?, n.parse().ok()?, k.parse().ok()?])
}

/// The modifiers each opcode accepts; anything else is `Error::Unsupported` at parse time.
pub(crate) fn allowed_mods(op: Opcode) -> &'static [Mod] {
    use Mod::*;
    const ROUND: &[Mod] = &[Rn, Rz, Rm, Rp, Ftz, Sat, Lo, Hi, Wide];
    const CACHE: &[Mod] = &[
        Global,
        Shared,
        Param,
        Nc,
        Ca,
        Cg,
        Cs,
        Lu,
        Cv,
        Volatile,
        Relaxed,
        Acquire,
        Release,
        Gpu,
        Cta,
        Sys,
        NoAllocate,
        EvictLast,
        EvictFirst,
        EvictNormal,
        Prefetch64,
        Prefetch128,
        Prefetch256,
    ];
    match op {
        Opcode::Add | Opcode::Sub | Opcode::Mul | Opcode::Mad | Opcode::Fma => ROUND,
        Opcode::Div => &[Rn, Approx, Full, Ftz],
        Opcode::Neg | Opcode::Abs => &[Ftz],
        Opcode::Min | Opcode::Max => &[Ftz, NaN],
        Opcode::Rem
        | Opcode::And
        | Opcode::Or
        | Opcode::Xor
        | Opcode::Not
        | Opcode::Shl
        | Opcode::Shr => &[],
        Opcode::Selp | Opcode::Mov | Opcode::Copysign => &[],
        Opcode::Setp => &[
            Eq, Ne, Lt, Le, Gt, Ge, Lo, Ls, Hi, Hs, Equ, Neu, Ltu, Leu, Gtu, Geu, Num, Nan, And,
            Or, Xor, Ftz,
        ],
        Opcode::Cvt => &[Rn, Rz, Rm, Rp, Rni, Rzi, Rmi, Rpi, Sat, Ftz],
        Opcode::Cvta => &[To, Global, Shared, Param],
        Opcode::Ld | Opcode::St => CACHE,
        Opcode::Atom | Opcode::Red => &[
            Global, Shared, Add, Min, Max, Relaxed, Acquire, Release, AcqRel, Gpu, Cta, Sys,
        ],
        Opcode::Ex2 | Opcode::Lg2 | Opcode::Sin | Opcode::Cos | Opcode::Tanh | Opcode::Rsqrt => {
            &[Approx, Ftz]
        }
        Opcode::Rcp | Opcode::Sqrt => &[Approx, Rn, Ftz],
        Opcode::Bra => &[Uni],
        Opcode::Ret | Opcode::Exit => &[],
        Opcode::Bar | Opcode::Barrier => &[Sync, Arrive, Aligned, Warp],
        Opcode::Membar | Opcode::Fence => &[
            Cta,
            Gpu,
            Gl,
            Sys,
            Sc,
            AcqRel,
            Proxy,
            Async,
            Shared,
            SharedCta,
            SharedCluster,
            Cluster,
            MbarrierInit,
            Release,
        ],
        Opcode::Shfl => &[Sync, Bfly, Down, Up, Idx],
        Opcode::Cp => &[
            Async,
            Ca,
            Cg,
            Shared,
            Global,
            CommitGroup,
            WaitGroup,
            WaitAll,
            Prefetch64,
            Prefetch128,
            Prefetch256,
            Bulk,
            SharedCluster,
            SharedCta,
            CompleteTxBytes,
            Tensor,
            Tile,
            D1,
            D2,
            D3,
            D4,
            D5,
        ],
        Opcode::Mbarrier => &[
            Init, Arrive, ExpectTx, TryWait, TestWait, Parity, Inval, Shared, SharedCta, Relaxed,
            Acquire, Release, Cta, Cluster,
        ],
        Opcode::Mma => &[Sync, Aligned, Row, Col],
        Opcode::Ldmatrix => &[Sync, Aligned, X1, X2, X4, Trans, Shared],
        Opcode::Wgmma => &[Sync, Aligned, Fence, CommitGroup, WaitGroup, MmaAsync],
    }
}
