//! cp.async: copies land in shared memory when a wait covers their group; src-size zero-fills.

mod common;

use common::{grid1, module, values};
use ptxemu::{Arg, Memory};

#[test]
fn cp_async_groups_complete_at_their_waits_and_zero_fill_past_src_size() {
    let m = module("async_copy");
    let x = values(512, 11);
    let mut mem = Memory::new();
    let (dx, out) = (mem.alloc(4 * 512), mem.alloc(4 * 8 * 64));
    mem.write_f32s(dx, &x);
    m.launch(
        "stage",
        grid1(1, 64),
        &[Arg::U64(dx), Arg::U64(out)],
        &mut mem,
    )
    .unwrap();
    let got = mem.read_f32s(out, 8 * 64).unwrap();
    for t in 0..64 {
        let row = &got[8 * t..8 * t + 8];
        assert_eq!(row[0], 0.0, "thread {t}: nothing has landed before a wait");
        assert_eq!(
            row[1],
            x[4 * t],
            "thread {t}: group 1 landed at wait_group 1"
        );
        assert_eq!(row[2], 0.0, "thread {t}: group 2 still in flight");
        let n = (t + 1) % 64;
        // 8 of 16 bytes copied: two floats, then zeros
        assert_eq!(
            row[4..],
            [x[256 + 4 * n], x[256 + 4 * n + 1], 0.0, 0.0],
            "thread {t}"
        );
        assert_eq!(row[3], row[4]);
    }
}
