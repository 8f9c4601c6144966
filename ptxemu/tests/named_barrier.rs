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

/// Both warps arrive at barrier 3 and then meet at barrier 0, so barrier 3's phase completes by
/// arrivals alone; then warp 1 spends a while before storing a value and syncing on barrier 3,
/// where warp 0 waits to read it (a leftover arrival count would release warp 0 early).
const LATE_WRITER: &str = r#"
.version 8.0
.target sm_90a
.address_size 64
.visible .entry late(.param .u64 late_out)
.reqntid 64, 1, 1
{
    .reg .pred %p<2>;
    .reg .b32 %r<6>;
    .reg .b64 %rd<2>;
    .shared .align 4 .b32 cell;
    ld.param.u64 %rd1, [late_out];
    mov.u32 %r1, %tid.x;
    shr.u32 %r2, %r1, 5;
    mov.u32 %r3, cell;
    bar.arrive 3, 64;
    bar.sync 0;
    setp.eq.u32 %p1, %r2, 0;
    @%p1 bra $L__reader;
    mov.u32 %r4, 0;
$L__spin:
    add.u32 %r4, %r4, 1;
    setp.lt.u32 %p1, %r4, 200;
    @%p1 bra $L__spin;
    st.shared.u32 [%r3], 7;
    bar.sync 3, 64;
    ret;
$L__reader:
    bar.sync 3, 64;
    ld.shared.u32 %r5, [%r3];
    st.global.u32 [%rd1], %r5;
    ret;
}
"#;

#[test]
fn a_phase_completed_by_arrivals_alone_does_not_release_a_later_sync() {
    let m = ptxemu::Module::parse(LATE_WRITER).unwrap();
    let mut mem = Memory::new();
    let out = mem.alloc(4);
    m.launch("late", grid1(1, 64), &[Arg::U64(out)], &mut mem).unwrap();
    assert_eq!(mem.read(out, 4).unwrap(), 7u32.to_le_bytes());
}
