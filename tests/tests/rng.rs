//! `Expr::Rand` is `ir::rng::uniform` bit for bit on every backend: the
//! kernel IR's evaluator, Cranelift (scalar and vectorized loops), and the
//! PTX renderer (accepted by ptxas, run in the emulator).

use kiln_codegen::ptx::{self, Arch};
use kiln_ir::interp::Tensor;
use kiln_ir::kernel::{Access, Arg, BufId, BufKind, Buffer, Expr, Kernel, KernelId, Mem, Program, Step, Stmt, Var, View};
use kiln_ir::{rng, BinaryOp, DType};
use kiln_runtime as rt;

const N: u64 = 37;
/// Seeds at the edges of their range, and counters far from 0.
const SEEDS: [u64; 3] = [0, 0x1234_5678_9ABC, rng::SEED_LIMIT - 1];
const STRIDE: u64 = 1_000_003_021;

/// Tile `t` draws `N` numbers with seed `SEEDS[t]` at counters
/// `j * STRIDE + t`, once in a vectorized loop (output 0) and once in a
/// sequential one (output 1).
fn program() -> Program {
    let i = |v: u64| Expr::idx(v);
    let bin = |op, a, b| Expr::Binary(op, Box::new(a), Box::new(b));
    let draw = |j: u32, out: u32, vector: bool| {
        let at = bin(BinaryOp::Add, bin(BinaryOp::Mul, Expr::Tile, i(N)), Expr::Var(Var(j)));
        let counter = bin(BinaryOp::Add, bin(BinaryOp::Mul, Expr::Var(Var(j)), i(STRIDE)), Expr::Tile);
        let value = Expr::Rand(Box::new(Expr::Var(Var(0))), Box::new(counter));
        Stmt::Loop { var: Var(j), extent: N, vector, body: vec![Stmt::Store { mem: Mem::Arg(out), index: at, value }] }
    };
    let n = SEEDS.len() as u64;
    let kernel = Kernel {
        name: "rand".into(),
        args: vec![
            Arg { dtype: DType::I64, len: n, access: Access::Read },
            Arg { dtype: DType::F32, len: n * N, access: Access::Write },
            Arg { dtype: DType::F32, len: n * N, access: Access::Write },
        ],
        scratch: vec![],
        grid: n,
        body: vec![Stmt::Let { var: Var(0), value: Expr::Load(Mem::Arg(0), Box::new(Expr::Tile)) }, draw(1, 1, true), draw(2, 2, false)],
    };
    let buf = |dtype, len, kind| Buffer { dtype, len, kind, name: String::new() };
    Program {
        buffers: vec![buf(DType::I64, n, BufKind::Input(0)), buf(DType::F32, n * N, BufKind::Output(0)), buf(DType::F32, n * N, BufKind::Output(1))],
        kernels: vec![kernel],
        steps: vec![Step::Launch { kernel: KernelId(0), args: (0..3).map(|b| View { buf: BufId(b), offset: Default::default() }).collect() }],
        intrinsics: vec![],
        checks: vec![],
    }
}

fn seeds() -> Tensor {
    Tensor { dtype: DType::I64, shape: vec![SEEDS.len()], data: SEEDS.iter().map(|&s| s as f64).collect() }
}

/// What every output must hold, from the reference function.
fn expected() -> Vec<f64> {
    let mut v = Vec::new();
    for (t, &s) in SEEDS.iter().enumerate() {
        v.extend((0..N).map(|j| rng::uniform(s, j * STRIDE + t as u64) as f64));
    }
    v
}

fn check(backend: &str, outs: &[Vec<f64>]) {
    let want = expected();
    assert_eq!(outs.len(), 2, "{backend}");
    for (o, got) in outs.iter().enumerate() {
        assert_eq!(got.len(), want.len(), "{backend}");
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.to_bits(), w.to_bits(), "{backend}: output {o} element {k}: {g} vs rng::uniform {w}");
        }
    }
}

#[test]
fn the_kernel_evaluator_draws_the_reference_numbers() {
    check("kernel-eval", &kiln_ir::kernel::eval::run(&program(), &[seeds()], &[]).expect("eval"));
}

#[test]
fn cranelift_draws_the_reference_numbers_in_scalar_and_vector_loops() {
    let n = (SEEDS.len() as u64 * N) as usize;
    let exe = rt::cpu::CpuExecutable::new(program(), vec![vec![n], vec![n]]).expect("compiles");
    let outs: Vec<Vec<f64>> = exe.run(&[], &[seeds()]).expect("runs").into_iter().map(|t| t.data).collect();
    check("cpu", &outs);
}

#[test]
fn ptx_draws_the_reference_numbers_in_the_emulator_and_ptxas_accepts_it() {
    let p = program();
    let outs = rt::cuda::run_program(&mut kiln_tests::ptx_emu::EmuDevice::default(), &p, Arch::Sm80, &[seeds()], &[]).expect("emulated");
    check("ptx-emu", &outs);
    let ptxas = ptx::ptxas::from_env().unwrap_or_else(|e| panic!("{e}"));
    let dir = std::env::temp_dir().join(format!("kiln-rng-ptxas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for arch in [Arch::Sm80, Arch::Sm90a] {
        let r = ptx::render(&p.kernels[0], arch).expect("render");
        assert!(r.ptx.contains("mul.lo.u64"), "{}", r.ptx);
        ptx::ptxas::assemble(&ptxas, &r.ptx, &r.manifest.name, arch, &dir).unwrap_or_else(|e| panic!("{e}\n{}", r.ptx));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
