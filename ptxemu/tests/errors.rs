//! Every way a kernel or its text can fail is a typed error that names the culprit.

mod common;

use common::{grid1, module};
use ptxemu::{Arg, Error, Launch, Memory, Module};

const HEADER: &str = ".version 8.0\n.target sm_80\n.address_size 64\n";

#[test]
fn an_instruction_outside_the_subset_is_named_with_its_line() {
    // popc is valid PTX (ptxas accepts it) that the emulator does not implement
    let text = format!(
        "{HEADER}.visible .entry k()\n{{\n.reg .b32 %r<3>;\npopc.b32 %r1, %r2;\nret;\n}}\n"
    );
    let err = Module::parse(&text).unwrap_err();
    assert_eq!(
        err,
        Error::Unsupported {
            what: "popc.b32".into(),
            line: 7
        }
    );
    assert_eq!(
        err.to_string(),
        "unsupported instruction `popc.b32` at line 7"
    );
}

#[test]
fn an_unsupported_modifier_or_state_space_is_named_too() {
    let text = format!(
        "{HEADER}.visible .entry k()\n{{\n.reg .b32 %r<3>;\nld.local.u32 %r1, [%r2];\nret;\n}}\n"
    );
    assert_eq!(
        Module::parse(&text).unwrap_err(),
        Error::Unsupported {
            what: "ld.local.u32".into(),
            line: 7
        }
    );
}

#[test]
fn syntax_errors_and_undefined_names_carry_their_line() {
    let text = format!("{HEADER}.visible .entry k()\n{{\nbra $L__nowhere;\n}}\n");
    assert!(matches!(
        Module::parse(&text),
        Err(Error::Parse { line: 6, .. })
    ));
    let text =
        format!("{HEADER}.visible .entry k()\n{{\n.reg .b32 %r<2>;\nmov.u32 %r1, %r9;\n}}\n");
    assert!(matches!(
        Module::parse(&text),
        Err(Error::Parse { line: 7, .. })
    ));
}

#[test]
fn an_out_of_bounds_store_names_instruction_line_and_address() {
    let m = module("faults");
    let mut mem = Memory::new();
    let out = mem.alloc(4 * 40);
    let err = m
        .launch("overrun", grid1(1, 64), &[Arg::U64(out)], &mut mem)
        .unwrap_err();
    // thread 40 is the first past the end
    let expected = Error::MemoryFault {
        instr: "st.global.u32".into(),
        line: 15,
        space: "global",
        addr: out + 160,
        bytes: 4,
        why: "outside every allocation",
    };
    assert_eq!(err, expected);
    assert!(
        err.to_string().contains(&format!("{:#x}", out + 160)),
        "{err}"
    );
    // the threads before the fault did store
    assert_eq!(
        mem.read_u32s(out, 40).unwrap(),
        (0..40).collect::<Vec<u32>>()
    );
}

#[test]
fn misaligned_and_shared_out_of_bounds_accesses_fault() {
    let m = module("faults");
    let mut mem = Memory::new();
    let out = mem.alloc(64);
    let err = m
        .launch("misaligned", grid1(1, 1), &[Arg::U64(out)], &mut mem)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::MemoryFault {
                why: "misaligned",
                line: 25,
                ..
            }
        ),
        "{err}"
    );
    let err = m
        .launch("shared_overrun", grid1(1, 1), &[], &mut mem)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::MemoryFault {
                space: "shared",
                addr: 64,
                why: "out of bounds",
                line: 69,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_barrier_that_exited_threads_never_reach_is_a_deadlock() {
    let m = module("faults");
    let mut mem = Memory::new();
    let out = mem.alloc(4);
    let err = m
        .launch("early_exit", grid1(2, 64), &[Arg::U64(out)], &mut mem)
        .unwrap_err();
    let Error::Deadlock { cta, msg } = &err else {
        panic!("{err}")
    };
    assert_eq!(*cta, [0, 0, 0]);
    assert!(
        msg.contains("line 37") && msg.contains("only 32 of 64 arrived (32 exited)"),
        "{msg}"
    );
    // with one warp every thread reaches the barrier
    m.launch("early_exit", grid1(2, 32), &[Arg::U64(out)], &mut mem)
        .unwrap();
}

#[test]
fn an_endless_loop_stops_at_the_step_limit() {
    let mut m = module("faults");
    m.set_step_limit(10_000);
    let err = m
        .launch("spin", grid1(1, 32), &[], &mut Memory::new())
        .unwrap_err();
    assert_eq!(err, Error::StepLimit(10_000));
}

#[test]
fn a_shuffle_missing_lanes_of_its_member_mask_is_an_error() {
    let m = module("faults");
    let mut mem = Memory::new();
    let out = mem.alloc(4);
    let err = m
        .launch("half_shuffle", grid1(1, 32), &[Arg::U64(out)], &mut mem)
        .unwrap_err();
    assert!(matches!(err, Error::NotConverged { line: 58, .. }), "{err}");
}

#[test]
fn launches_that_do_not_fit_the_kernel_are_rejected() {
    let m = module("faults");
    let mut mem = Memory::new();
    let bad = |r: Result<ptxemu::Stats, Error>| matches!(r, Err(Error::BadLaunch { .. }));
    assert!(bad(m.launch("overrun", grid1(1, 32), &[], &mut mem)));
    assert!(bad(m.launch(
        "overrun",
        grid1(1, 32),
        &[Arg::U32(1)],
        &mut mem
    )));
    assert!(bad(m.launch(
        "overrun",
        grid1(1, 2048),
        &[Arg::U64(0)],
        &mut mem
    )));
    let huge = Launch {
        grid: [1, 1, 1],
        block: [32, 1, 1],
        dynamic_shared: 1 << 20,
    };
    assert!(bad(m.launch("spin", huge, &[], &mut mem)));
    assert_eq!(
        m.launch("nope", grid1(1, 1), &[], &mut mem),
        Err(Error::UnknownKernel("nope".into()))
    );
}

#[test]
fn absurd_declarations_are_parse_errors_not_crashes() {
    let regs = format!("{HEADER}.visible .entry k()\n{{\n.reg .b32 %r<100000000000>;\nret;\n}}\n");
    assert!(matches!(
        Module::parse(&regs),
        Err(Error::Parse { line: 6, .. })
    ));
    let shared = format!("{HEADER}.shared .b8 big[4294967296][4294967296][16];\n");
    assert!(matches!(
        Module::parse(&shared),
        Err(Error::Parse { line: 4, .. })
    ));
}
