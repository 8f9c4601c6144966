//! wgmma.mma_async m64n16k16 from shared-memory descriptors, unswizzled and 128-byte swizzled.

mod common;

use common::{grid1, module, values};
use half::bf16;
use ptxemu::{Arg, Memory};

/// Where element (r, k) of a K-major 16-bit operand sits, as the PTX ISA describes the layouts.
#[derive(Clone, Copy)]
enum Layout {
    /// 8x(16 bytes) core matrices: `lbo` apart along K, `sbo` apart along rows.
    Interleaved { lbo: u64, sbo: u64 },
    /// 8 rows of 128 bytes per 1024-byte atom; 16-byte chunk c of row r is stored at chunk c ^ (r % 8).
    Swizzle128,
}

impl Layout {
    fn offset(self, r: u64, k: u64) -> u64 {
        match self {
            Layout::Interleaved { lbo, sbo } => {
                (r / 8) * sbo + (k / 8) * lbo + (r % 8) * 16 + (k % 8) * 2
            }
            Layout::Swizzle128 => {
                let (chunk, within) = ((2 * k) / 16, (2 * k) % 16);
                (r / 8) * 1024 + (r % 8) * 128 + (chunk ^ (r % 8)) * 16 + within
            }
        }
    }

    /// The descriptor bits other than the start address.
    fn descriptor(self) -> u64 {
        match self {
            Layout::Interleaved { lbo, sbo } => ((lbo >> 4) << 16) | ((sbo >> 4) << 32),
            Layout::Swizzle128 => ((1024u64 >> 4) << 32) | (1 << 62),
        }
    }
}

fn run(layout: Layout) {
    let a: Vec<u16> = values(64 * 16, 51)
        .iter()
        .map(|&x| bf16::from_f32(x).to_bits())
        .collect();
    let b: Vec<u16> = values(16 * 16, 52)
        .iter()
        .map(|&x| bf16::from_f32(x).to_bits())
        .collect();
    // A rows are M, B rows are N (B is stored K-major: b[n][k] = B[k][n])
    // A takes up to 8 KiB (eight 1024-byte swizzle atoms), B 2 KiB after it
    let b_offset = 8192u64;
    let mut img = vec![0u8; 10240];
    let mut put =
        |at: u64, v: u16| img[at as usize..at as usize + 2].copy_from_slice(&v.to_le_bytes());
    for r in 0..64 {
        for k in 0..16 {
            put(layout.offset(r, k), a[(r * 16 + k) as usize]);
        }
    }
    for n in 0..16 {
        for k in 0..16 {
            put(b_offset + layout.offset(n, k), b[(k * 16 + n) as usize]);
        }
    }
    let mut mem = Memory::new();
    let (dimg, out) = (mem.alloc(img.len()), mem.alloc(4 * 64 * 16));
    mem.write(dimg, &img);
    let args = [
        Arg::U64(dimg),
        Arg::U32(img.len() as u32),
        Arg::U64(layout.descriptor()),
        Arg::U64(layout.descriptor()),
        Arg::U32(b_offset as u32),
        Arg::U64(out),
    ];
    module("wgmma")
        .launch("wgmma_tile", grid1(1, 128), &args, &mut mem)
        .unwrap();
    let f = |v: u16| f64::from(bf16::from_bits(v).to_f32());
    let expected: Vec<f32> = (0..64)
        .flat_map(|i| (0..16).map(move |j| (i, j)))
        .map(|(i, j)| {
            (0..16)
                .map(|k| f(a[i * 16 + k]) * f(b[k * 16 + j]))
                .sum::<f64>() as f32
        })
        .collect();
    assert_eq!(mem.read_f32s(out, 64 * 16).unwrap(), expected);
}

#[test]
fn wgmma_from_interleaved_core_matrices_matches_a_cpu_matmul() {
    run(Layout::Interleaved { lbo: 128, sbo: 256 });
    // the same data with the row groups and K halves placed differently
    run(Layout::Interleaved {
        lbo: 1024,
        sbo: 128,
    });
}

#[test]
fn wgmma_from_128_byte_swizzled_tiles_matches_a_cpu_matmul() {
    run(Layout::Swizzle128);
}
