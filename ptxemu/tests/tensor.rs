//! mma.sync and ldmatrix against a CPU matmul and the PTX ISA's fragment layouts.

mod common;

use common::{grid1, values};
use half::{bf16, f16};
use ptxemu::{Arg, Memory, Module};

fn tensor_ptx() -> String {
    std::fs::read_to_string(format!(
        "{}/tests/ptx/tensor.ptx",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// A 16-bit float format: encode an f32, decode bits.
type Half = (fn(f32) -> u16, fn(u16) -> f32);
const BF16: Half = (
    |x| bf16::from_f32(x).to_bits(),
    |b| bf16::from_bits(b).to_f32(),
);
const F16: Half = (
    |x| f16::from_f32(x).to_bits(),
    |b| f16::from_bits(b).to_f32(),
);

/// Row-major D = A·B + C on the CPU. Products of halves and their sums are exact in f64 for
/// these magnitudes, so rounding once to f32 gives the one right answer in any summation order.
fn matmul(a: &[f32], b: &[f32], c: &[f32], k: usize) -> Vec<f32> {
    let mut d = vec![0f32; 16 * 8];
    for i in 0..16 {
        for j in 0..8 {
            let dot: f64 = (0..k)
                .map(|kk| f64::from(a[i * k + kk]) * f64::from(b[kk * 8 + j]))
                .sum();
            d[i * 8 + j] = (dot + f64::from(c[i * 8 + j])) as f32;
        }
    }
    d
}

/// Runs `kernel(a, b, c, d)` on one warp with random inputs rounded to `half`; returns (D, expected).
fn run_mma(module: &Module, kernel: &str, k: usize, half: Half) -> (Vec<f32>, Vec<f32>) {
    let (enc, dec) = half;
    let a_bits: Vec<u16> = values(16 * k, 3).iter().map(|&x| enc(x)).collect();
    let b_bits: Vec<u16> = values(k * 8, 4).iter().map(|&x| enc(x)).collect();
    let c = values(16 * 8, 5);
    let mut mem = Memory::new();
    let (da, db, dc, dd) = (
        mem.alloc(2 * 16 * k),
        mem.alloc(2 * k * 8),
        mem.alloc(4 * 128),
        mem.alloc(4 * 128),
    );
    mem.write_u16s(da, &a_bits);
    mem.write_u16s(db, &b_bits);
    mem.write_f32s(dc, &c);
    let args = [Arg::U64(da), Arg::U64(db), Arg::U64(dc), Arg::U64(dd)];
    module
        .launch(kernel, grid1(1, 32), &args, &mut mem)
        .unwrap();
    let a: Vec<f32> = a_bits.iter().map(|&b| dec(b)).collect();
    let b: Vec<f32> = b_bits.iter().map(|&b| dec(b)).collect();
    (mem.read_f32s(dd, 128).unwrap(), matmul(&a, &b, &c, k))
}

#[test]
fn mma_m16n8k16_bf16_with_fragments_from_the_isa_layout_matches_a_cpu_matmul() {
    let m = Module::parse(&tensor_ptx()).unwrap();
    let (got, expected) = run_mma(&m, "mma_direct", 16, BF16);
    assert_eq!(got, expected);
}

#[test]
fn mma_m16n8k16_f16_matches_a_cpu_matmul() {
    let m = Module::parse(&tensor_ptx().replace("bf16", "f16")).unwrap();
    let (got, expected) = run_mma(&m, "mma_direct", 16, F16);
    assert_eq!(got, expected);
}

#[test]
fn mma_m16n8k8_f16_matches_a_cpu_matmul() {
    let m = Module::parse(&tensor_ptx()).unwrap();
    let (got, expected) = run_mma(&m, "mma_k8", 8, F16);
    assert_eq!(got, expected);
}

/// A 16x16 tile whose element (r, c) is 0x100 * r + c: every value names its position.
fn position_tile() -> Vec<u16> {
    (0..16u16)
        .flat_map(|r| (0..16u16).map(move |c| 0x100 * r + c))
        .collect()
}

#[test]
fn ldmatrix_hands_each_lane_the_isa_fragment_plain_and_transposed() {
    let m = Module::parse(&tensor_ptx()).unwrap();
    let tile = position_tile();
    let mut mem = Memory::new();
    let (da, out) = (mem.alloc(512), mem.alloc(44 * 32));
    mem.write_u16s(da, &tile);
    m.launch(
        "ldmatrix_dump",
        grid1(1, 32),
        &[Arg::U64(da), Arg::U64(out)],
        &mut mem,
    )
    .unwrap();
    let got = mem.read_u32s(out, 11 * 32).unwrap();
    // matrix j is the 8x8 block at rows 8 (j % 2), columns 8 (j / 2), as the lane addresses say
    let at =
        |j: usize, r: usize, c: usize| u32::from(tile[(8 * (j % 2) + r) * 16 + 8 * (j / 2) + c]);
    let pair = |lo: u32, hi: u32| lo | (hi << 16);
    for lane in 0..32 {
        let (r, c) = (lane / 4, 2 * (lane % 4));
        let word = |i: usize| got[lane * 11 + i];
        for j in 0..4 {
            assert_eq!(
                word(j),
                pair(at(j, r, c), at(j, r, c + 1)),
                "x4 lane {lane} reg {j}"
            );
            assert_eq!(
                word(4 + j),
                pair(at(j, c, r), at(j, c + 1, r)),
                "x4.trans lane {lane} reg {j}"
            );
        }
        assert_eq!(word(8), word(0), "x1 lane {lane}");
        assert_eq!((word(9), word(10)), (word(0), word(1)), "x2 lane {lane}");
    }
}

#[test]
fn ldmatrix_fed_mma_through_shared_memory_matches_a_cpu_matmul() {
    let m = Module::parse(&tensor_ptx()).unwrap();
    let (enc, dec) = BF16;
    let a_bits: Vec<u16> = values(256, 7).iter().map(|&x| enc(x)).collect();
    let b_bits: Vec<u16> = values(128, 8).iter().map(|&x| enc(x)).collect();
    let mut mem = Memory::new();
    let (da, db, dd) = (mem.alloc(512), mem.alloc(256), mem.alloc(512));
    mem.write_u16s(da, &a_bits);
    mem.write_u16s(db, &b_bits);
    m.launch(
        "mma_ldmatrix",
        grid1(1, 32),
        &[Arg::U64(da), Arg::U64(db), Arg::U64(dd)],
        &mut mem,
    )
    .unwrap();
    let a: Vec<f32> = a_bits.iter().map(|&b| dec(b)).collect();
    let b: Vec<f32> = b_bits.iter().map(|&b| dec(b)).collect();
    assert_eq!(
        mem.read_f32s(dd, 128).unwrap(),
        matmul(&a, &b, &[0.0; 128], 16)
    );
}
