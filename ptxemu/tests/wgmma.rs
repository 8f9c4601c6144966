//! wgmma.mma_async from shared-memory descriptors (K-major A and B; MN-major B), unswizzled and
//! 128-byte swizzled, and with A from registers.

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

/// Where element (n, k) of a 16 x 128 B operand stored MN-major (n contiguous) sits.
#[derive(Clone, Copy)]
enum MnLayout {
    /// 8 (k) x 16-byte core matrices: `lbo` apart along K, `sbo` apart along N.
    Interleaved { lbo: u64, sbo: u64 },
    /// 128-byte rows of 64 n at one k, 8 k per 1024-byte atom (`sbo` apart along K), 64-n
    /// blocks `lbo` apart; 16-byte chunk c of row k stored at chunk c ^ (k % 8).
    Swizzle128 { lbo: u64, sbo: u64 },
}

impl MnLayout {
    fn offset(self, n: u64, k: u64) -> u64 {
        match self {
            MnLayout::Interleaved { lbo, sbo } => (n / 8) * sbo + (k / 8) * lbo + (k % 8) * 16 + (n % 8) * 2,
            MnLayout::Swizzle128 { lbo, sbo } => {
                let (chunk, within) = ((2 * (n % 64)) / 16, (2 * (n % 64)) % 16);
                (n / 64) * lbo + (k / 8) * sbo + (k % 8) * 128 + (chunk ^ (k % 8)) * 16 + within
            }
        }
    }

    fn descriptor(self) -> u64 {
        let (lbo, sbo, mode) = match self {
            MnLayout::Interleaved { lbo, sbo } => (lbo, sbo, 0),
            MnLayout::Swizzle128 { lbo, sbo } => (lbo, sbo, 1),
        };
        ((lbo >> 4) << 16) | ((sbo >> 4) << 32) | (mode << 62)
    }
}

/// One warpgroup: D (64x128) = A (64x16, from registers in the mma A-fragment layout, loaded
/// from row-major global memory) times B (16x128, MN-major in shared memory, `imm-trans-b` 1).
fn regs_kernel() -> String {
    let f: Vec<String> = (0..64).map(|i| format!("%f{i}")).collect();
    let mut stores = String::new();
    for i in 0..64 {
        let off = ((8 * ((i / 2) % 2)) * 128 + 8 * (i / 4) + i % 2) * 4;
        stores += &format!("    st.global.f32 [%rd6+{off}], %f{i};\n");
    }
    format!(
        r#".version 8.0
.target sm_90a
.address_size 64
.visible .entry wgmma_regs(.param .u64 p_a, .param .u64 p_b, .param .u64 p_desc, .param .u64 p_out)
.reqntid 128, 1, 1
{{
    .reg .pred %p<2>;
    .reg .b32 %r<16>, %a<4>;
    .reg .f32 %f<64>;
    .reg .b64 %rd<12>;
    .shared .align 1024 .b8 smem[4096];
    ld.param.u64 %rd1, [p_a];
    ld.param.u64 %rd2, [p_b];
    ld.param.u64 %rd3, [p_desc];
    ld.param.u64 %rd4, [p_out];
    mov.u32 %r1, %tid.x;
    mov.u32 %r2, smem;
    shl.b32 %r3, %r1, 5;
    cvt.u64.u32 %rd5, %r3;
    add.s64 %rd5, %rd2, %rd5;
    add.s32 %r4, %r2, %r3;
    ld.global.v4.u32 {{%r5, %r6, %r7, %r8}}, [%rd5];
    st.shared.v4.u32 [%r4], {{%r5, %r6, %r7, %r8}};
    ld.global.v4.u32 {{%r5, %r6, %r7, %r8}}, [%rd5+16];
    st.shared.v4.u32 [%r4+16], {{%r5, %r6, %r7, %r8}};
    fence.proxy.async.shared::cta;
    bar.sync 0;
    // row0 = 16 warp + lane / 4; A fragment j: row row0 + 8 (j % 2), columns 2 (lane % 4) + 8 (j / 2)
    shr.u32 %r9, %r1, 5;
    shl.b32 %r9, %r9, 4;
    and.b32 %r10, %r1, 31;
    shr.u32 %r11, %r10, 2;
    add.s32 %r9, %r9, %r11;
    and.b32 %r12, %r10, 3;
    shl.b32 %r12, %r12, 1;
    mad.lo.u32 %r13, %r9, 16, %r12;
    mul.wide.u32 %rd7, %r13, 2;
    add.s64 %rd7, %rd1, %rd7;
    ld.global.b32 %a0, [%rd7];
    ld.global.b32 %a1, [%rd7+256];
    ld.global.b32 %a2, [%rd7+16];
    ld.global.b32 %a3, [%rd7+272];
    cvt.u64.u32 %rd8, %r2;
    shr.u64 %rd8, %rd8, 4;
    or.b64 %rd8, %rd3, %rd8;
    setp.ne.u32 %p1, %r1, %r1;
    wgmma.fence.sync.aligned;
    wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {{{}}}, {{%a0, %a1, %a2, %a3}}, %rd8, %p1, 1, 1, 1;
    wgmma.commit_group.sync.aligned;
    wgmma.wait_group.sync.aligned 0;
    mad.lo.u32 %r14, %r9, 128, %r12;
    mul.wide.u32 %rd6, %r14, 4;
    add.s64 %rd6, %rd4, %rd6;
{stores}    ret;
}}
"#,
        f.join(", ")
    )
}

fn run_regs(layout: MnLayout) {
    let a: Vec<u16> = values(64 * 16, 61).iter().map(|&x| bf16::from_f32(x).to_bits()).collect();
    let b: Vec<u16> = values(16 * 128, 62).iter().map(|&x| bf16::from_f32(x).to_bits()).collect();
    let mut img = vec![0u8; 4096];
    for k in 0..16 {
        for n in 0..128 {
            let at = layout.offset(n, k) as usize;
            img[at..at + 2].copy_from_slice(&b[(k * 128 + n) as usize].to_le_bytes());
        }
    }
    let mut mem = Memory::new();
    let (da, db, out) = (mem.alloc(2 * a.len()), mem.alloc(4096), mem.alloc(4 * 64 * 128));
    let a_bytes: Vec<u8> = a.iter().flat_map(|v| v.to_le_bytes()).collect();
    mem.write(da, &a_bytes);
    mem.write(db, &img);
    let m = ptxemu::Module::parse(&regs_kernel()).unwrap();
    let args = [Arg::U64(da), Arg::U64(db), Arg::U64(layout.descriptor()), Arg::U64(out)];
    m.launch("wgmma_regs", grid1(1, 128), &args, &mut mem).unwrap();
    let f = |v: u16| f64::from(bf16::from_bits(v).to_f32());
    let expected: Vec<f32> = (0..64)
        .flat_map(|i| (0..128).map(move |j| (i, j)))
        .map(|(i, j)| (0..16).map(|k| f(a[i * 16 + k]) * f(b[k * 128 + j])).sum::<f64>() as f32)
        .collect();
    assert_eq!(mem.read_f32s(out, 64 * 128).unwrap(), expected);
}

#[test]
fn wgmma_with_a_from_registers_and_mn_major_b_matches_a_cpu_matmul() {
    run_regs(MnLayout::Swizzle128 { lbo: 2048, sbo: 1024 });
    run_regs(MnLayout::Interleaved { lbo: 128, sbo: 256 });
}

#[test]
fn reading_an_accumulator_before_wait_group_is_reported() {
    // drop the wait: the stores then read accumulators of wgmmas still in flight
    let path = format!("{}/tests/ptx/wgmma.ptx", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(path).unwrap().replace("    wgmma.wait_group.sync.aligned 0;\n", "");
    let m = ptxemu::Module::parse(&text).unwrap();
    let mut mem = Memory::new();
    let (img, out) = (mem.alloc(10240), mem.alloc(4 * 64 * 16));
    let args = [Arg::U64(img), Arg::U32(10240), Arg::U64(1 << 16 | 2 << 32), Arg::U64(1 << 16 | 2 << 32), Arg::U32(8192), Arg::U64(out)];
    let err = m.launch("wgmma_tile", grid1(1, 128), &args, &mut mem).unwrap_err();
    assert!(matches!(&err, ptxemu::Error::Undefined { msg, .. } if msg.contains("wgmma.wait_group")), "{err}");
}
