//! Shuffle modes with segments and predicates, lane and warp ids, atomics' old values.

mod common;

use common::{grid1, module};
use ptxemu::{Arg, Memory};

#[test]
fn shuffles_ids_and_atomics_behave_like_their_cuda_counterparts() {
    let n = 64u32;
    let m = module("warp");
    let mut mem = Memory::new();
    let (out, cells) = (mem.alloc(32 * n as usize), mem.alloc(12));
    mem.write_u32s(cells, &[1000, i32::MIN as u32, i32::MAX as u32]);
    m.launch(
        "lanes",
        grid1(1, n),
        &[Arg::U64(out), Arg::U64(cells)],
        &mut mem,
    )
    .unwrap();
    let got = mem.read_u32s(out, 8 * n as usize).unwrap();
    let v = |t: u32| t * t + 1;
    let mut olds = Vec::new();
    for t in 0..n {
        let lane = t % 32;
        let w = &got[8 * t as usize..8 * t as usize + 8];
        // __shfl_up_sync(v, 3): lanes below 3 keep their own value
        let up_ok = lane >= 3;
        assert_eq!(
            (w[0], w[1]),
            (if up_ok { v(t - 3) } else { v(t) }, u32::from(up_ok)),
            "up, t = {t}"
        );
        // __shfl_sync(v, 5, width 8): lane 5 of the thread's 8-lane segment
        assert_eq!(w[2], v(t - lane % 8 + 5), "idx, t = {t}");
        // __shfl_down_sync(v, 2, width 16): only within the 16-lane segment
        let down_ok = lane % 16 + 2 < 16;
        assert_eq!(
            (w[3], w[4]),
            (if down_ok { v(t + 2) } else { v(t) }, u32::from(down_ok)),
            "down, t = {t}"
        );
        assert_eq!(w[5], lane + 100 * (t / 32), "ids, t = {t}");
        assert_eq!(w[7], 77, "shared through cvta.to.shared, t = {t}");
        olds.push(w[6]);
    }
    olds.sort_unstable();
    assert_eq!(
        olds,
        (1000..1000 + n).collect::<Vec<_>>(),
        "each add saw a distinct old value"
    );
    let vals: Vec<i32> = (0..n as i32).map(|t| t * 7 % 13 - 6).collect();
    let cells_now = mem.read_u32s(cells, 3).unwrap();
    assert_eq!(cells_now[0], 1000 + n);
    assert_eq!(cells_now[1] as i32, *vals.iter().max().unwrap());
    assert_eq!(cells_now[2] as i32, *vals.iter().min().unwrap());
}
