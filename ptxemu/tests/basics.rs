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
    let (da, db, dc) = (
        mem.alloc(16 * n4 + 64),
        mem.alloc(16 * n4),
        mem.alloc(16 * n4 + 64),
    );
    mem.write_f32s(da, &a);
    mem.write_f32s(db, &b);
    mem.write_f32s(dc + 16 * n4 as u64, &[7.0; 16]);
    let args = [
        Arg::U64(da),
        Arg::U64(db),
        Arg::U64(dc),
        Arg::U32(n4 as u32),
    ];
    let stats = m.launch("vadd4", grid1(3, 32), &args, &mut mem).unwrap();
    let c = mem.read_f32s(dc, 4 * n4).unwrap();
    let expected: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
    assert_eq!(c, expected);
    assert_eq!(
        mem.read_f32s(dc + 16 * n4 as u64, 16).unwrap(),
        vec![7.0; 16]
    );
    assert_eq!(stats.ctas, 3);
    // Each CTA's warp issues 25 instructions. In the last CTA, 6 lanes work and 26 branch to
    // `ret` after 10 instructions; min-PC reconvergence makes the 26 wait there for the 6, so the
    // `ret` issues once: 10 + 14 + 1 = 25 again, with fewer lanes in the middle.
    assert_eq!(stats.instructions, 75);
    // lanes whose guard fails do not count: nobody takes `@%p1 bra` in the full CTAs, 26 lanes do in the last
    assert_eq!(
        stats.thread_instructions,
        2 * 24 * 32 + (9 * 32 + 26) + 14 * 6 + 32
    );
}

#[test]
fn block_sum_with_shuffles_shared_memory_and_a_barrier_adds_every_element_once() {
    let m = module("block_sum");
    let n = 3000;
    // small integers: every summation order is exact, so the oracle can be exact too
    let x: Vec<f32> = (0..n).map(|i| (i % 7) as f32 - 3.0).collect();
    let mut mem = Memory::new();
    let (dx, dout) = (mem.alloc(4 * n), mem.alloc(4));
    mem.write_f32s(dx, &x);
    mem.write_f32s(dout, &[0.5]);
    let args = [Arg::U64(dx), Arg::U64(dout), Arg::U32(n as u32)];
    let stats = m
        .launch("block_sum", grid1(4, 256), &args, &mut mem)
        .unwrap();
    let expected = 0.5 + x.iter().map(|&v| f64::from(v)).sum::<f64>();
    assert_eq!(mem.read_f32s(dout, 1).unwrap(), vec![expected as f32]);
    assert_eq!(stats.barriers, 4);
}

#[test]
fn divergent_loops_and_branches_reconverge_before_a_warp_shuffle() {
    let m = module("control");
    let mut mem = Memory::new();
    let out = mem.alloc(4 * 64);
    m.launch("diverge", grid1(1, 64), &[Arg::U64(out)], &mut mem)
        .unwrap();
    let x = |t: u32| {
        let x = t * (t % 5);
        if t % 2 == 1 {
            x * 3
        } else {
            x + 100
        }
    };
    let expected: Vec<u32> = (0..64).map(|t| x(t).wrapping_add(x(t ^ 1) << 16)).collect();
    assert_eq!(mem.read_u32s(out, 64).unwrap(), expected);
}

#[test]
fn predicated_stores_follow_setp_pairs_and_combined_predicates() {
    let m = module("control");
    let (n, limit) = (48u32, 20u32); // two warps, the second partial
    let mut mem = Memory::new();
    let out = mem.alloc(4 * 3 * n as usize);
    mem.write_u32s(out, &vec![0xdead; 3 * n as usize]);
    m.launch(
        "predicated",
        grid1(1, n),
        &[Arg::U64(out), Arg::U32(limit)],
        &mut mem,
    )
    .unwrap();
    let got = mem.read_u32s(out, 3 * n as usize).unwrap();
    for t in 0..n {
        let both = t % 3 != 0 && t < limit;
        assert_eq!(got[t as usize], if t < limit { 1 } else { 2 }, "out[{t}]");
        assert_eq!(
            got[(n + t) as usize],
            if both { t } else { 0xdead },
            "out[n + {t}]"
        );
        assert_eq!(
            got[(2 * n + t) as usize],
            if both { 10 } else { 20 },
            "out[2n + {t}]"
        );
    }
}

#[test]
fn registers_declared_in_nested_blocks_shadow_and_then_vanish() {
    let m = module("control");
    let mut mem = Memory::new();
    let out = mem.alloc(4 * 32);
    m.launch("scopes", grid1(1, 32), &[Arg::U64(out)], &mut mem)
        .unwrap();
    let expected: Vec<u32> = (0..32).map(|t| (t + 10) + 1000 + t).collect();
    assert_eq!(mem.read_u32s(out, 32).unwrap(), expected);
}
