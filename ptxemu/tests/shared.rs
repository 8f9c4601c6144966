//! Shared memory (static, dynamic, through generic addresses), atomics, 2D launches, named barriers.

mod common;

use common::{module, values};
use ptxemu::{Arg, Launch, Memory};

#[test]
fn a_dynamic_shared_histogram_with_generic_atomics_counts_every_value() {
    let m = module("shared");
    let n = 1000u32;
    let x: Vec<u32> = (0..n).map(|i| i.wrapping_mul(2_654_435_761) >> 7).collect();
    let mut mem = Memory::new();
    let (dx, bins) = (mem.alloc(4 * n as usize), mem.alloc(64));
    mem.write_u32s(dx, &x);
    mem.write_u32s(bins, &[1000; 16]);
    let launch = Launch {
        grid: [3, 1, 1],
        block: [96, 1, 1],
        dynamic_shared: 64,
    };
    m.launch(
        "histogram",
        launch,
        &[Arg::U64(dx), Arg::U32(n), Arg::U64(bins)],
        &mut mem,
    )
    .unwrap();
    let mut expected = [1000u32; 16];
    for v in &x {
        expected[(v & 15) as usize] += 3; // every CTA counts the whole input
    }
    assert_eq!(mem.read_u32s(bins, 16).unwrap(), expected);
    // without the dynamic bytes the first shared store is out of bounds
    let small = Launch {
        dynamic_shared: 0,
        ..launch
    };
    let err = m
        .launch(
            "histogram",
            small,
            &[Arg::U64(dx), Arg::U32(n), Arg::U64(bins)],
            &mut mem,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            ptxemu::Error::MemoryFault {
                space: "shared",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_two_dimensional_launch_sees_its_coordinates() {
    let m = module("shared");
    let (w, h) = (24u32, 12u32);
    let input = values((w * h) as usize, 31);
    let mut mem = Memory::new();
    let (din, dout) = (mem.alloc(4 * input.len()), mem.alloc(4 * input.len()));
    mem.write_f32s(din, &input);
    let launch = Launch {
        grid: [w / 8, h / 4, 1],
        block: [8, 4, 1],
        dynamic_shared: 0,
    };
    let args = [Arg::U64(din), Arg::U64(dout), Arg::U32(w), Arg::U32(h)];
    m.launch("transpose", launch, &args, &mut mem).unwrap();
    let out = mem.read_f32s(dout, input.len()).unwrap();
    for y in 0..h as usize {
        for x in 0..w as usize {
            assert_eq!(
                out[x * h as usize + y],
                input[y * w as usize + x],
                "({x}, {y})"
            );
        }
    }
}

#[test]
fn named_barriers_with_counts_release_their_own_warps() {
    let m = module("shared");
    let mut mem = Memory::new();
    let out = mem.alloc(4 * 128);
    let stats = m
        .launch("pairs", common::grid1(1, 128), &[Arg::U64(out)], &mut mem)
        .unwrap();
    let expected: Vec<u32> = (0..128u32)
        .map(|t| 2 * ((t & 64) | ((t + 32) & 63)) + 1)
        .collect();
    assert_eq!(mem.read_u32s(out, 128).unwrap(), expected);
    assert_eq!(stats.barriers, 3);
}
