//! The PTX backend on every kernel of every model (models/ and
//! tests/fixtures): ptxas accepts each for sm_80 and sm_90a, and each
//! entry point run in the PTX emulator matches the kernel IR's evaluator.

use kiln_codegen::ptx::{self, Arch};
use kiln_ir::interp::Tensor;
use kiln_ir::kernel::Program;
use kiln_runtime as rt;
use kiln_tests::{compile_model, repo_root};
use std::path::{Path, PathBuf};

/// Every `.kl` model and fixture.
fn models() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = ["models", "tests/fixtures"]
        .iter()
        .flat_map(|d| std::fs::read_dir(repo_root().join(d)).expect("model dir"))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "kl"))
        .collect();
    v.sort();
    assert!(v.len() >= 5, "expected the models and fixtures, found {v:?}");
    v
}

/// Every entry point of a model (large ones at their small config),
/// scheduled at small dims, with random inputs and initialized parameters.
fn programs(path: &Path) -> Vec<(String, Program, Vec<Tensor>, Vec<Tensor>)> {
    let c = compile_model(path);
    let params = rt::init_params(&c.module, 3).expect("init");
    c.module
        .functions
        .iter()
        .map(|f| {
            let dims: Vec<(String, i64)> = [("B", 2), ("T", 5), ("N", 3)].iter().filter(|(n, _)| f.dim_vars.iter().any(|v| v == n)).map(|(n, v)| (n.to_string(), *v)).collect();
            let bound = rt::bind_dims(f, &vec![None; f.arg_names.len()], &dims).expect("bind");
            let env = |n: &str| bound.get(n);
            let p = kiln_ir::schedule::schedule(&c.module, f, &env, &Default::default()).expect("schedule");
            let inputs = (0..f.arg_names.len()).map(|i| rt::random_input(f, i, &env, 5 + i as u64).expect("input")).collect();
            (format!("{}::{}", path.file_name().expect("name").to_string_lossy(), f.name), p, inputs, params.clone())
        })
        .collect()
}

/// Fails unless ptxas's report says nothing spilled.
fn assert_no_spills(name: &str, usage: &str) {
    assert!(usage.contains(" 0 bytes spill stores") && usage.contains(" 0 bytes spill loads"), "{name} spills: {usage}");
}

#[test]
fn ptxas_accepts_every_kernel_of_every_model() {
    let ptxas = ptx::ptxas::from_env().unwrap_or_else(|e| panic!("{e}"));
    let dir = std::env::temp_dir().join(format!("kiln-ptxas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut assembled = 0;
    for path in models() {
        for (name, p, _, _) in programs(&path) {
            for k in &p.kernels {
                for arch in [Arch::Sm80, Arch::Sm90a] {
                    let r = ptx::render(k, arch).unwrap_or_else(|e| panic!("{name}: {e}"));
                    let usage = ptx::ptxas::assemble(&ptxas, &r.ptx, &r.manifest.name, arch, &dir).unwrap_or_else(|e| panic!("{name}: {e}\n{}", r.ptx));
                    println!("{name} {} {}: {usage}", arch.name(), k.name);
                    assert_no_spills(&format!("{name} {} {}", arch.name(), k.name), &usage);
                    assembled += 1;
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(assembled > 50, "only {assembled} kernels assembled");
}

#[test]
fn every_model_matches_the_kernel_evaluator_in_the_emulator() {
    // gpt.kl's fixed widths (256 wide, 4 layers) take minutes to emulate;
    // tiny_gpt.kl has the same kernels at a small width.
    for path in models().into_iter().filter(|p| !p.ends_with("models/gpt.kl")) {
        for (name, p, inputs, params) in programs(&path) {
            let want = kiln_ir::kernel::eval::run(&p, &inputs, &params).unwrap_or_else(|e| panic!("{name}: eval: {e}"));
            let mut dev = kiln_tests::ptx_emu::EmuDevice::default();
            let got = rt::cuda::run_program(&mut dev, &p, Arch::Sm80, &inputs, &params).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(got.len(), want.len(), "{name}");
            for (o, (g, w)) in got.iter().zip(&want).enumerate() {
                let scale = w.iter().filter(|x| x.is_finite()).fold(1.0f64, |a, x| a.max(x.abs()));
                for (i, (x, y)) in g.iter().zip(w).enumerate() {
                    assert!((x - y).abs() <= 1e-4 * scale || x == y, "{name}: output {o} element {i}: emulated {x} vs evaluated {y}");
                }
            }
            println!("{name}: {} kernels, {} warp instructions emulated", p.kernels.len(), dev.instructions);
        }
    }
}

/// bf16 and f16 GEMM tiles in whole 16×8×16 blocks take the tensor-core
/// path (row-major and transposed operands); the emulator runs its
/// `mma.sync` and the results match the evaluator to the output's rounding.
#[test]
fn tensor_core_gemm_matches_the_kernel_evaluator() {
    for dt in ["bf16", "f16"] {
        let src = format!("pub fn f(x: {dt}[N, M], y: {dt}[M, N]) -> ({dt}[N, N], f32[M, M]) {{ return (x @ y, cast(transpose(x) @ transpose(y), f32)) }}");
        let c = kiln_lang::compile_source(Path::new("gemm.kl"), src).unwrap_or_else(|e| panic!("{}", e.render()));
        let f = &c.module.functions[0];
        let bound = rt::bind_dims(f, &[None, None], &[("N".into(), 32), ("M".into(), 48)]).expect("bind");
        let env = |n: &str| bound.get(n);
        let p = kiln_ir::schedule::schedule(&c.module, f, &env, &Default::default()).expect("schedule");
        let mma = p.kernels.iter().filter(|k| ptx::render(k, Arch::Sm80).expect("render").ptx.contains("mma.sync.aligned.m16n8k16")).count();
        assert!(mma >= 1, "{dt}: no kernel took the tensor-core path");
        let inputs: Vec<Tensor> = (0..2).map(|i| rt::random_input(f, i, &env, 9 + i as u64).expect("input")).collect();
        let want = kiln_ir::kernel::eval::run(&p, &inputs, &[]).expect("eval");
        let got = rt::cuda::run_program(&mut kiln_tests::ptx_emu::EmuDevice::default(), &p, Arch::Sm80, &inputs, &[]).expect("emulated");
        for (o, (g, w)) in got.iter().zip(&want).enumerate() {
            let scale = w.iter().fold(1.0f64, |a, x| a.max(x.abs()));
            for (i, (x, y)) in g.iter().zip(w).enumerate() {
                assert!((x - y).abs() <= 8e-3 * scale, "{dt} output {o} element {i}: emulated {x} vs evaluated {y}");
            }
        }
    }
}

/// `c = a @ b` then `c += a @ b` in one tile (the scheduler does not emit
/// accumulating GEMMs yet): both GEMM forms read c back, so c = 2·a·b.
#[test]
fn accumulating_gemm_in_both_forms_matches_the_kernel_evaluator() {
    use kiln_ir::kernel::{Access, Arg, BufId, BufKind, Buffer, Expr, Gemm, Kernel, KernelId, Mem, Operand, Step, Stmt, View};
    use kiln_ir::DType;
    for dt in [DType::BF16, DType::F32] {
        let (m, n, k) = (32u64, 16u64, 48u64);
        let op = |mem, cols| Operand { mem: Mem::Arg(mem), offset: Expr::idx(0), row_stride: cols, col_stride: 1 };
        let gemm = |accumulate| Stmt::Gemm(Gemm { m, n, k, a: op(0, k), b: op(1, n), c: op(2, n), accumulate });
        let arg = |dtype, len, access| Arg { dtype, len, access };
        let kernel = Kernel {
            name: "twice".into(),
            args: vec![arg(dt, m * k, Access::Read), arg(dt, k * n, Access::Read), arg(DType::F32, m * n, Access::ReadWrite)],
            scratch: vec![],
            grid: 1,
            body: vec![gemm(false), gemm(true)],
        };
        let buf = |dtype, len, kind| Buffer { dtype, len, kind, name: String::new() };
        let p = Program {
            buffers: vec![buf(dt, m * k, BufKind::Input(0)), buf(dt, k * n, BufKind::Input(1)), buf(DType::F32, m * n, BufKind::Output(0))],
            kernels: vec![kernel],
            steps: vec![Step::Launch { kernel: KernelId(0), args: (0..3).map(|b| View { buf: BufId(b), offset: Default::default() }).collect() }],
            intrinsics: vec![],
            checks: vec![],
        };
        assert_eq!(ptx::render(&p.kernels[0], Arch::Sm80).expect("render").ptx.contains("mma.sync"), dt == DType::BF16);
        // Small integers: every product and sum is exact, so both forms must agree exactly.
        let input = |len: u64, s: u64| Tensor { dtype: dt, shape: vec![len as usize], data: (0..len).map(|i| ((i * s) % 7) as f64 - 3.0).collect() };
        let inputs = [input(m * k, 5), input(k * n, 3)];
        let want = kiln_ir::kernel::eval::run(&p, &inputs, &[]).expect("eval");
        let got = rt::cuda::run_program(&mut kiln_tests::ptx_emu::EmuDevice::default(), &p, Arch::Sm80, &inputs, &[]).expect("emulated");
        assert!(want[0].iter().any(|x| *x != 0.0));
        assert_eq!(got, want, "{dt}");
    }
}

/// Scratch arrays become `.shared`: values one thread stores (in a spread
/// loop, or thread 0 in uniform code) are read by others after a barrier.
#[test]
fn scratch_written_by_some_threads_is_read_by_others() {
    use kiln_ir::kernel::{Access, Arg, BufId, BufKind, Buffer, Expr, Kernel, KernelId, Mem, Scratch, Step, Stmt, Var, View};
    use kiln_ir::{BinaryOp, DType};
    // Enough iterations per thread that, without the barrier, warp 0 would
    // read sc0[n - 1] before warp 3 wrote it (the emulator interleaves warps).
    let n = 128 * 8 + 3;
    let v = |i| Expr::Var(Var(i));
    let bin = |op, a, b| Expr::Binary(op, Box::new(a), Box::new(b));
    let load = |m, i| Expr::Load(m, Box::new(i));
    let body = vec![
        // sc1[j] = j, sequential: thread 0 stores.
        Stmt::Loop { var: Var(1), extent: 8, vector: false, body: vec![Stmt::Store { mem: Mem::Scratch(1), index: v(1), value: Expr::Cast(DType::F32, Box::new(v(1))) }] },
        // sc0[i] = 2 * a0[i], spread over the threads.
        Stmt::Loop { var: Var(0), extent: n, vector: true, body: vec![Stmt::Store { mem: Mem::Scratch(0), index: v(0), value: bin(BinaryOp::Mul, load(Mem::Arg(0), v(0)), Expr::Const(2.0, DType::F32)) }] },
        // a1[i] = sc0[n - 1 - i] + sc1[i % 8]: other threads' values.
        Stmt::Loop {
            var: Var(4),
            extent: n,
            vector: true,
            body: vec![Stmt::Store {
                mem: Mem::Arg(1),
                index: v(4),
                value: bin(BinaryOp::Add, load(Mem::Scratch(0), bin(BinaryOp::Sub, Expr::idx(n - 1), v(4))), load(Mem::Scratch(1), Expr::Rem(Box::new(v(4)), Box::new(Expr::idx(8))))),
            }],
        },
    ];
    let kernel = Kernel {
        name: "scratch".into(),
        args: vec![Arg { dtype: DType::F32, len: n, access: Access::Read }, Arg { dtype: DType::F32, len: n, access: Access::Write }],
        scratch: vec![Scratch { dtype: DType::F32, len: n }, Scratch { dtype: DType::F32, len: 8 }],
        grid: 1,
        body,
    };
    let buf = |kind| Buffer { dtype: DType::F32, len: n, kind, name: String::new() };
    let p = Program {
        buffers: vec![buf(BufKind::Input(0)), buf(BufKind::Output(0))],
        kernels: vec![kernel],
        steps: vec![Step::Launch { kernel: KernelId(0), args: (0..2).map(|b| View { buf: BufId(b), offset: Default::default() }).collect() }],
        intrinsics: vec![],
        checks: vec![],
    };
    let input = Tensor { dtype: DType::F32, shape: vec![n as usize], data: (0..n).map(|i| (i % 13) as f64 - 6.0).collect() };
    let want = kiln_ir::kernel::eval::run(&p, std::slice::from_ref(&input), &[]).expect("eval");
    let got = rt::cuda::run_program(&mut kiln_tests::ptx_emu::EmuDevice::default(), &p, Arch::Sm80, &[input], &[]).expect("emulated");
    assert_eq!(got, want);
}

/// How one GEMM operand lies in memory for [`staged_gemm`].
#[derive(Clone, Copy, Debug)]
enum Layout {
    /// Rows contiguous, `pad` extra elements at the end of each row.
    Rows { pad: u64 },
    /// Columns contiguous (a transposed operand).
    Cols,
    /// Neither dimension contiguous: every element two apart.
    Sparse,
}

/// `(row_stride, col_stride, elements spanned)` of an `r × c` operand.
fn strides(l: Layout, r: u64, c: u64) -> (u64, u64, u64) {
    match l {
        Layout::Rows { pad } => (c + pad, 1, r * (c + pad)),
        Layout::Cols => (1, r, r * c),
        Layout::Sparse => (2 * c, 2, 2 * r * c),
    }
}

/// One `m × n × k` GEMM tile kernel (a and b of dtype `dt` at element
/// offset `at`, c in f32 with a padded row stride; `twice`: `c = a @ b`
/// then `c += a @ b`) and random small-integer inputs, whose products and
/// sums are exact in f32.
fn staged_gemm(dt: kiln_ir::DType, [m, n, k]: [u64; 3], [la, lb]: [Layout; 2], at: u64, twice: bool) -> (Program, Vec<Tensor>) {
    use kiln_ir::kernel::{Access, Arg, BufId, BufKind, Buffer, Expr, Gemm, Kernel, KernelId, Operand, Step, Stmt, View};
    use kiln_ir::DType;
    let ((ars, acs, alen), (brs, bcs, blen)) = (strides(la, m, k), strides(lb, k, n));
    let (alen, blen, clen) = (alen + at, blen + at, m * (n + 3));
    let op = |mem, offset, row_stride, col_stride| Operand { mem: kiln_ir::kernel::Mem::Arg(mem), offset: Expr::idx(offset), row_stride, col_stride };
    let g = |accumulate| Stmt::Gemm(Gemm { m, n, k, a: op(0, at, ars, acs), b: op(1, at, brs, bcs), c: op(2, 0, n + 3, 1), accumulate });
    let kernel = Kernel {
        name: "staged".into(),
        args: vec![Arg { dtype: dt, len: alen, access: Access::Read }, Arg { dtype: dt, len: blen, access: Access::Read }, Arg { dtype: DType::F32, len: clen, access: Access::ReadWrite }],
        scratch: vec![],
        grid: 1,
        body: if twice { vec![g(false), g(true)] } else { vec![g(false)] },
    };
    let buf = |dtype, len, kind| Buffer { dtype, len, kind, name: String::new() };
    let p = Program {
        buffers: vec![buf(dt, alen, BufKind::Input(0)), buf(dt, blen, BufKind::Input(1)), buf(DType::F32, clen, BufKind::Output(0))],
        kernels: vec![kernel],
        steps: vec![Step::Launch { kernel: KernelId(0), args: (0..3).map(|b| View { buf: BufId(b), offset: Default::default() }).collect() }],
        intrinsics: vec![],
        checks: vec![],
    };
    let input = |dtype, len: u64, s: u64| Tensor { dtype, shape: vec![len as usize], data: (0..len).map(|i| ((i * s + i / 7) % 7) as f64 - 3.0).collect() };
    (p, vec![input(dt, alen, 5), input(dt, blen, 3)])
}

/// The staged tensor-core GEMM (shared-memory tiles, double-buffered over
/// k; `ldmatrix` + `mma.sync` on sm_80, `wgmma` on sm_90a) at sizes that
/// leave partial tiles in m, n and k, with row-major, transposed and
/// non-contiguous operands, 16-byte aligned and misaligned origins: the
/// emulator's result equals the kernel evaluator's exactly.
#[test]
fn staged_tensor_core_gemm_matches_the_kernel_evaluator_at_awkward_sizes() {
    use kiln_ir::DType;
    let rows = |pad| Layout::Rows { pad };
    let cases: &[([u64; 3], [Layout; 2], u64, bool)] = &[
        ([1, 1, 1], [rows(0), rows(0)], 0, false),
        ([3, 17, 127], [rows(1), rows(7)], 0, false),
        ([17, 3, 3], [Layout::Cols, Layout::Cols], 0, true),
        ([127, 127, 17], [rows(7), Layout::Cols], 8, false),
        ([33, 40, 48], [rows(0), rows(0)], 0, true),
        ([20, 24, 40], [rows(0), rows(0)], 1, false),
        ([40, 130, 64], [rows(0), Layout::Cols], 0, true),
        ([5, 8, 24], [rows(8), Layout::Cols], 1, false),
        ([70, 9, 33], [Layout::Sparse, Layout::Sparse], 0, false),
    ];
    for arch in [Arch::Sm80, Arch::Sm90a] {
        for dt in [DType::BF16, DType::F16] {
            for &(mnk, layouts, at, twice) in cases {
                let name = format!("{} {dt} {mnk:?} {layouts:?} at {at}", arch.name());
                let (p, inputs) = staged_gemm(dt, mnk, layouts, at, twice);
                let ptx = ptx::render(&p.kernels[0], arch).unwrap_or_else(|e| panic!("{name}: {e}")).ptx;
                // wgmma takes the sm_90a tiles it can read K-major; an
                // operand contiguous along m or n only stays on mma.sync.
                let ((ars, acs, _), (brs, bcs, _)) = (strides(layouts[0], mnk[0], mnk[2]), strides(layouts[1], mnk[2], mnk[1]));
                let mn_major = (ars == 1 && acs != 1) || (bcs == 1 && brs != 1);
                let mma = if arch == Arch::Sm90a && !mn_major { "wgmma.mma_async" } else { "mma.sync.aligned.m16n8k16" };
                assert!(ptx.contains(mma) && ptx.contains("cp.async.wait_group"), "{name}: not the staged form with {mma}");
                let want = kiln_ir::kernel::eval::run(&p, &inputs, &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
                let got = rt::cuda::run_program(&mut kiln_tests::ptx_emu::EmuDevice::default(), &p, arch, &inputs, &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert!(want[0].iter().filter(|x| **x != 0.0).count() as u64 >= mnk[0].min(mnk[1]), "{name}: trivial result");
                assert_eq!(got, want, "{name}");
            }
        }
    }
}

/// ptxas accepts the staged GEMM kernels of the test above for both
/// architectures without spilling.
#[test]
fn ptxas_accepts_the_staged_gemm_kernels_without_spills() {
    let ptxas = ptx::ptxas::from_env().unwrap_or_else(|e| panic!("{e}"));
    let dir = std::env::temp_dir().join(format!("kiln-ptxas-staged-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let shapes = [([3, 17, 127], [Layout::Rows { pad: 1 }, Layout::Cols]), ([127, 127, 48], [Layout::Cols, Layout::Rows { pad: 0 }]), ([256, 256, 256], [Layout::Rows { pad: 0 }, Layout::Cols])];
    for arch in [Arch::Sm80, Arch::Sm90a] {
        for (mnk, layouts) in shapes {
            let (p, _) = staged_gemm(kiln_ir::DType::BF16, mnk, layouts, 0, true);
            let r = ptx::render(&p.kernels[0], arch).expect("render");
            let usage = ptx::ptxas::assemble(&ptxas, &r.ptx, &r.manifest.name, arch, &dir).unwrap_or_else(|e| panic!("{e}\n{}", r.ptx));
            println!("staged gemm {} {mnk:?}: {usage}", arch.name());
            assert_no_spills(&format!("staged gemm {} {mnk:?}", arch.name()), &usage);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// An elementwise loop with contiguous loads and stores (and a broadcast
/// load that stays scalar), after a sum and a max over the row, takes
/// 16-byte vector accesses when its rows start 16-byte aligned and the
/// scalar form otherwise, with a scalar tail past the last whole group:
/// the emulator matches the evaluator exactly (small integers).
#[test]
fn vector_loads_and_stores_match_the_kernel_evaluator() {
    use kiln_ir::kernel::{Access, Arg, BufId, BufKind, Buffer, Expr, Kernel, KernelId, Mem, RedOp, Step, Stmt, Var, View};
    use kiln_ir::{BinaryOp, DType};
    let e = 203u64;
    for dt in [DType::F32, DType::BF16, DType::F16] {
        // rows of `stride` elements: 16-byte aligned rows, or every other
        // row misaligned
        for stride in [e.next_multiple_of(8), e] {
            let (v, bin) = (|i| Expr::Var(Var(i)), |op, a, b| Expr::Binary(op, Box::new(a), Box::new(b)));
            let row = bin(BinaryOp::Mul, Expr::Tile, Expr::idx(stride));
            let load = |m, i| Expr::Load(Mem::Arg(m), Box::new(i));
            // s = sum over j of a[row + j]; m = max over j of a[row + j] * b[j / 3]
            // out[row + j] = a[row + j] * 2 + b[j / 3] + s - m
            let a_j = |j| load(0, bin(BinaryOp::Add, row.clone(), v(j)));
            let b_j = |j| load(1, bin(BinaryOp::Div, v(j), Expr::idx(3)));
            let reduce = |var, op, index, value| Stmt::Reduce { var: Var(var), op, index: Var(index), extent: e, vector: true, value };
            let value = bin(BinaryOp::Sub, bin(BinaryOp::Add, bin(BinaryOp::Add, bin(BinaryOp::Mul, a_j(1), Expr::Const(2.0, dt)), b_j(1)), v(2)), v(4));
            let body = vec![
                reduce(2, RedOp::Sum, 3, a_j(3)),
                reduce(4, RedOp::Max, 5, bin(BinaryOp::Mul, a_j(5), b_j(5))),
                Stmt::Loop { var: Var(1), extent: e, vector: true, body: vec![Stmt::Store { mem: Mem::Arg(2), index: bin(BinaryOp::Add, row.clone(), v(1)), value }] },
            ];
            let (tiles, n) = (3u64, 3 * stride);
            let kernel = Kernel {
                name: "axpb".into(),
                args: vec![Arg { dtype: dt, len: n, access: Access::Read }, Arg { dtype: dt, len: e / 3 + 1, access: Access::Read }, Arg { dtype: dt, len: n, access: Access::Write }],
                scratch: vec![],
                grid: tiles,
                body,
            };
            let buf = |len, kind| Buffer { dtype: dt, len, kind, name: String::new() };
            let p = Program {
                buffers: vec![buf(n, BufKind::Input(0)), buf(e / 3 + 1, BufKind::Input(1)), buf(n, BufKind::Output(0))],
                kernels: vec![kernel],
                steps: vec![Step::Launch { kernel: KernelId(0), args: (0..3).map(|b| View { buf: BufId(b), offset: Default::default() }).collect() }],
                intrinsics: vec![],
                checks: vec![],
            };
            let ptx = ptx::render(&p.kernels[0], Arch::Sm80).expect("render").ptx;
            let (ld, st) = if dt == DType::F32 { ("ld.global.v4.f32", "st.global.v4.f32") } else { ("ld.global.v4.b32", "st.global.v4.b32") };
            // one vector load in each reduction and in the loop
            assert!(ptx.matches(ld).count() >= 3 && ptx.contains(st), "{dt}: no vector accesses");
            let input = |len: u64, s: u64| Tensor { dtype: dt, shape: vec![len as usize], data: (0..len).map(|i| ((i * s) % 11) as f64 - 5.0).collect() };
            let inputs = [input(n, 7), input(e / 3 + 1, 3)];
            let want = kiln_ir::kernel::eval::run(&p, &inputs, &[]).expect("eval");
            let got = rt::cuda::run_program(&mut kiln_tests::ptx_emu::EmuDevice::default(), &p, Arch::Sm80, &inputs, &[]).expect("emulated");
            assert!(want[0].iter().filter(|x| **x != 0.0).count() > (tiles * e / 2) as usize);
            assert_eq!(got, want, "{dt} rows of {stride}");
        }
    }
}

/// A bf16 GEMM of whole 16×8×16 blocks in a kernel whose scratch leaves
/// no room for the staging buffers takes the direct tensor-core form
/// (fragments loaded straight from memory) and still matches exactly.
#[test]
fn gemm_without_room_to_stage_loads_fragments_directly() {
    use kiln_ir::kernel::Scratch;
    use kiln_ir::DType;
    for arch in [Arch::Sm80, Arch::Sm90a] {
        let (mut p, inputs) = staged_gemm(DType::BF16, [32, 16, 48], [Layout::Rows { pad: 0 }, Layout::Cols], 0, true);
        p.kernels[0].scratch.push(Scratch { dtype: DType::F32, len: 10 * 1024 + 256 });
        let ptx = ptx::render(&p.kernels[0], arch).expect("render").ptx;
        assert!(ptx.contains("mma.sync.aligned.m16n8k16") && !ptx.contains("ldmatrix") && !ptx.contains("cp.async"), "{}: not the direct form", arch.name());
        let want = kiln_ir::kernel::eval::run(&p, &inputs, &[]).expect("eval");
        let got = rt::cuda::run_program(&mut kiln_tests::ptx_emu::EmuDevice::default(), &p, arch, &inputs, &[]).expect("emulated");
        assert!(want[0].iter().any(|x| *x != 0.0));
        assert_eq!(got, want, "{}", arch.name());
    }
}
