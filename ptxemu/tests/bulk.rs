//! sm_90 bulk copies completing on mbarrier phases.

mod common;

use common::{grid1, module, values};
use ptxemu::{Arg, Error, Memory};

#[test]
fn bulk_copies_complete_mbarrier_phases_that_try_wait_observes() {
    let m = module("bulk");
    let x = values(512, 41);
    let mut mem = Memory::new();
    let (dx, out) = (mem.alloc(4 * 512), mem.alloc(4 * 512));
    mem.write_f32s(dx, &x);
    m.launch(
        "bulk",
        grid1(1, 256),
        &[Arg::U64(dx), Arg::U64(out)],
        &mut mem,
    )
    .unwrap();
    assert_eq!(mem.read_f32s(out, 512).unwrap(), x);
}

/// Runs bulk.ptx with `from` replaced by `to`, bounded to 100 000 warp instructions; returns the error.
fn broken_variant(from: &str, to: &str) -> Error {
    let path = format!("{}/tests/ptx/bulk.ptx", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(path).unwrap().replace(from, to);
    let mut m = ptxemu::Module::parse(&text).unwrap();
    m.set_step_limit(100_000);
    let mut mem = Memory::new();
    let (dx, out) = (mem.alloc(4 * 512), mem.alloc(4 * 512));
    let args = [Arg::U64(dx), Arg::U64(out)];
    m.launch("bulk", grid1(1, 256), &args, &mut mem)
        .unwrap_err()
}

#[test]
fn a_phase_that_never_gets_its_bytes_spins_into_the_step_limit() {
    // the barrier expects 2048 bytes but the copy brings 1024: the phase never completes
    let err = broken_variant("[%r2], 1024;", "[%r2], 2048;");
    assert_eq!(err, Error::StepLimit(100_000));
}

#[test]
fn more_arrivals_than_the_mbarrier_expects_are_reported() {
    // every thread arrives at a barrier initialised for one arrival
    let err = broken_variant(
        "@%p1 mbarrier.arrive.expect_tx",
        "mbarrier.arrive.expect_tx",
    );
    assert!(matches!(&err, Error::Undefined { line: 34, .. }), "{err}");
}
