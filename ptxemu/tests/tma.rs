//! TMA tile copies (`cp.async.bulk.tensor`) through the emulator's tensor maps: boxes inside and
//! across the tensor's edges (zero fill), unswizzled and 128-byte swizzled, checked against
//! index arithmetic written here from the PTX ISA's description.

mod common;

use common::{grid1, module};
use ptxemu::tma::{Swizzle, TensorMap};
use ptxemu::{Arg, Memory};

/// A 3-d tensor of u16 `[planes][rows][cols]` with distinct values; returns the box that a copy
/// at `c` (innermost first) lands as 4096 shared bytes read back as u16.
fn copy_box(dims: [u64; 3], box_dims: [u32; 3], swizzle: Swizzle, c: [i32; 3]) -> (Vec<u16>, Vec<u16>) {
    let n = (dims[0] * dims[1] * dims[2]) as usize;
    let data: Vec<u16> = (0..n).map(|i| (i as u16).wrapping_mul(7).wrapping_add(1)).collect();
    let mut mem = Memory::new();
    let (src, out) = (mem.alloc(2 * n), mem.alloc(4096));
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    mem.write(src, &bytes);
    let map = TensorMap {
        address: src,
        element_bytes: 2,
        dims: dims.to_vec(),
        strides: vec![2 * dims[0], 2 * dims[0] * dims[1]],
        box_dims: box_dims.to_vec(),
        swizzle,
    };
    let box_bytes = 2 * box_dims.iter().product::<u32>();
    let args = [
        Arg::TensorMap(map.encode()),
        Arg::S32(c[0]),
        Arg::S32(c[1]),
        Arg::S32(c[2]),
        Arg::U32(box_bytes),
        Arg::U64(out),
    ];
    module("tma").launch("tma", grid1(1, 128), &args, &mut mem).unwrap();
    let raw = mem.read(out, 4096).unwrap();
    let got = raw.chunks(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect();
    (data, got)
}

/// The expected shared image: element (i0, i1, i2) of the box at dense byte offset
/// `2 (i0 + b0 (i1 + b1 i2))`, 16-byte chunk XORed with `(offset / 128) % 8` when swizzled.
fn expected(data: &[u16], dims: [u64; 3], box_dims: [u32; 3], swizzle: bool, c: [i32; 3]) -> Vec<u16> {
    let mut img = vec![0u16; 2048];
    let [b0, b1, b2] = box_dims.map(|x| x as usize);
    for i2 in 0..b2 {
        for i1 in 0..b1 {
            for i0 in 0..b0 {
                let dense = 2 * (i0 + b0 * (i1 + b1 * i2));
                let at = if swizzle { dense ^ (((dense / 128) % 8) * 16) } else { dense };
                let g = [c[0] + i0 as i32, c[1] + i1 as i32, c[2] + i2 as i32];
                let inside = (0..3).all(|d| g[d] >= 0 && (g[d] as u64) < dims[d]);
                img[at / 2] = if inside {
                    data[g[0] as usize + dims[0] as usize * (g[1] as usize + dims[1] as usize * g[2] as usize)]
                } else {
                    0
                };
            }
        }
    }
    img
}

#[test]
fn tma_boxes_land_row_major_with_out_of_bounds_elements_zero() {
    let (dims, b) = ([24, 10, 3], [16, 8, 2]);
    for c in [[0, 0, 0], [8, 5, 2], [-4, -3, -1], [16, 9, 0]] {
        let (data, got) = copy_box(dims, b, Swizzle::None, c);
        assert_eq!(got, expected(&data, dims, b, false, c), "coordinates {c:?}");
    }
}

#[test]
fn tma_128_byte_swizzle_permutes_16_byte_chunks_by_row() {
    // 64 halves per box row: exactly one 128-byte swizzle span
    let (dims, b) = ([80, 20, 2], [64, 16, 2]);
    for c in [[0, 0, 0], [64, 12, 1], [-8, -2, 0]] {
        let (data, got) = copy_box(dims, b, Swizzle::B128, c);
        assert_eq!(got, expected(&data, dims, b, true, c), "coordinates {c:?}");
    }
}

#[test]
fn a_box_wider_than_the_swizzle_span_is_rejected() {
    let mut mem = Memory::new();
    let src = mem.alloc(4096);
    let map = TensorMap {
        address: src,
        element_bytes: 2,
        dims: vec![128, 8, 1],
        strides: vec![256, 2048],
        box_dims: vec![128, 8, 1],
        swizzle: Swizzle::B128,
    };
    let out = mem.alloc(4096);
    let args = [Arg::TensorMap(map.encode()), Arg::S32(0), Arg::S32(0), Arg::S32(0), Arg::U32(2048), Arg::U64(out)];
    let err = module("tma").launch("tma", grid1(1, 128), &args, &mut mem).unwrap_err();
    assert!(err.to_string().contains("tensor map: box [128, 8, 1]"), "{err}");
}

#[test]
fn a_tensor_map_named_by_its_param_symbol_is_unsupported() {
    // ptxas wants the map's generic address (`cvta.param`), not the `.param` symbol
    let path = format!("{}/tests/ptx/tma.ptx", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(path).unwrap().replace("[%rd1, {", "[tma_map, {");
    let m = ptxemu::Module::parse(&text).unwrap();
    let mut mem = Memory::new();
    let out = mem.alloc(4096);
    let map = TensorMap { address: out, element_bytes: 2, dims: vec![8, 1, 1], strides: vec![16, 16], box_dims: vec![8, 1, 1], swizzle: Swizzle::None };
    let args = [Arg::TensorMap(map.encode()), Arg::S32(0), Arg::S32(0), Arg::S32(0), Arg::U32(16), Arg::U64(out)];
    let err = m.launch("tma", grid1(1, 128), &args, &mut mem).unwrap_err();
    assert!(matches!(err, ptxemu::Error::Unsupported { .. }), "{err}");
}
