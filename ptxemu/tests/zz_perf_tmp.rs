mod common;
use common::{grid1, module};
use ptxemu::{Arg, Memory};
#[test]
fn perf() {
    let m = module("block_sum");
    let n = 1 << 20;
    let x: Vec<f32> = (0..n).map(|i| (i % 7) as f32 - 3.0).collect();
    let mut mem = Memory::new();
    let (dx, dout) = (mem.alloc(4 * n), mem.alloc(4));
    mem.write_f32s(dx, &x);
    let t = std::time::Instant::now();
    let stats = m
        .launch(
            "block_sum",
            grid1(16, 256),
            &[Arg::U64(dx), Arg::U64(dout), Arg::U32(n as u32)],
            &mut mem,
        )
        .unwrap();
    eprintln!(
        "PERF {:?} {:?} -> {:.1} M thread-instr/s",
        t.elapsed(),
        stats,
        stats.thread_instructions as f64 / t.elapsed().as_secs_f64() / 1e6
    );
}
