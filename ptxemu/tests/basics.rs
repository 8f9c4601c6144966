//! Plain data-parallel kernels: parameters, special registers, .v4 global memory, bounds guards.

mod common;

use common::{grid1, module, values};
use ptxemu::{Arg, Memory};

#[test]
fn vector_add_with_v4_loads_matches_the_host_sum_and_leaves_the_tail_alone() {
    let m = module("vadd4");
    assert_eq!(m.kernels().collect::<Vec<_>>(), ["vadd4"]);
    let n4 = 70; // 70 threads of work in 3 CTAs of 32: the last 26 threads are guarded off
    let (a, b) = (values(4 * n4, 1), values(4 * n4, 2));
    let mut mem = Memory::new();
    let (da, db, dc) = (mem.alloc(16 * n4 + 64), mem.alloc(16 * n4), mem.alloc(16 * n4 + 64));
    mem.write_f32s(da, &a);
    mem.write_f32s(db, &b);
    mem.write_f32s(dc + 16 * n4 as u64, &[7.0; 16]);
    let args = [Arg::U64(da), Arg::U64(db), Arg::U64(dc), Arg::U32(n4 as u32)];
    let stats = m.launch("vadd4", grid1(3, 32), &args, &mut mem).unwrap();
    let c = mem.read_f32s(dc, 4 * n4).unwrap();
    let expected: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
    assert_eq!(c, expected);
    assert_eq!(mem.read_f32s(dc + 16 * n4 as u64, 16).unwrap(), vec![7.0; 16]);
    assert_eq!(stats.ctas, 3);
    // Each CTA's warp issues 25 instructions. In the last CTA, 6 lanes work and 26 branch to
    // `ret` after 10 instructions; min-PC reconvergence makes the 26 wait there for the 6, so the
    // `ret` issues once: 10 + 14 + 1 = 25 again, with fewer lanes in the middle.
    assert_eq!(stats.instructions, 75);
    // lanes whose guard fails do not count: nobody takes `@%p1 bra` in the full CTAs, 26 lanes do in the last
    assert_eq!(stats.thread_instructions, 2 * 24 * 32 + (9 * 32 + 26) + 14 * 6 + 32);
}
