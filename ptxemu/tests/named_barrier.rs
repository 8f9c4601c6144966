//! `bar.arrive` and `bar.sync` with named barriers and thread counts: a two-warp handoff.

mod common;

use common::{grid1, module, values};
use ptxemu::{Arg, Memory};

#[test]
fn bar_arrive_hands_a_buffer_to_the_warp_waiting_on_bar_sync() {
    let x = values(128, 71);
    let mut mem = Memory::new();
    let (dx, out) = (mem.alloc(4 * 128), mem.alloc(4 * 128));
    mem.write_f32s(dx, &x);
    module("handoff").launch("handoff", grid1(1, 64), &[Arg::U64(dx), Arg::U64(out)], &mut mem).unwrap();
    let doubled: Vec<f32> = x.iter().map(|v| v * 2.0).collect();
    assert_eq!(mem.read_f32s(out, 128).unwrap(), doubled);
}

#[test]
fn a_missing_arrival_is_a_deadlock() {
    let path = format!("{}/tests/ptx/handoff.ptx", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(path).unwrap().replace("    bar.arrive 1, 64;\n", "");
    let mut mem = Memory::new();
    let (dx, out) = (mem.alloc(4 * 128), mem.alloc(4 * 128));
    let m = ptxemu::Module::parse(&text).unwrap();
    let err = m.launch("handoff", grid1(1, 64), &[Arg::U64(dx), Arg::U64(out)], &mut mem).unwrap_err();
    assert!(matches!(err, ptxemu::Error::Deadlock { .. }), "{err}");
}
