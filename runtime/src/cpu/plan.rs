//! The memory plan: where each temporary buffer lives in one arena.
//!
//! Lifetimes are measured over the program's top-level steps: a temp lives
//! from the first top-level step that uses it to the last. A use anywhere
//! inside a `Repeat` counts as a use at that `Repeat`'s position, so a
//! buffer touched by a loop body lives for the whole loop (values such as
//! a scan's carry flow from one iteration to the next).
//!
//! Offsets are assigned greedily, largest buffer first: each buffer goes at
//! the lowest 64-byte aligned offset where it overlaps no already placed
//! buffer whose lifetime overlaps its own (first fit among the gaps). Two
//! temps whose lifetimes are disjoint may share bytes; two that are live at
//! the same step never do. Inputs, parameters and outputs are not planned:
//! they are owned by the caller or returned to it.

use super::storage::{byte_len, ALIGN};
use crate::RuntimeError;
use kiln_ir::kernel::{BufId, BufKind, Program, Step};

/// The top-level steps during which a buffer is live (both ends included).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetime {
    /// Index of the first top-level step that uses the buffer.
    pub first: usize,
    /// Index of the last top-level step that uses it.
    pub last: usize,
}

impl Lifetime {
    /// True when some step lies in both lifetimes.
    pub fn overlaps(&self, other: &Lifetime) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

/// A buffer to place: its size and lifetime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// Size in bytes.
    pub bytes: u64,
    /// When it is live.
    pub life: Lifetime,
}

/// Where a buffer lives in the arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    /// Byte offset from the arena's start (a multiple of 64).
    pub offset: u64,
    /// Size in bytes.
    pub bytes: u64,
}

impl Slot {
    /// True when the two slots share a byte.
    pub fn overlaps(&self, other: &Slot) -> bool {
        self.bytes > 0 && other.bytes > 0 && self.offset < other.offset + other.bytes && other.offset < self.offset + self.bytes
    }
}

/// The arena layout of a program's temps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryPlan {
    /// Per buffer (parallel to [`Program::buffers`]): its slot when it is a
    /// temp that some step uses, `None` otherwise.
    pub slots: Vec<Option<Slot>>,
    /// The arena's size in bytes: the peak memory of the temps.
    pub peak_bytes: u64,
    /// What the temps would take without sharing: the sum of their sizes,
    /// each rounded up to 64 bytes.
    pub naive_bytes: u64,
}

/// `x` rounded up to a multiple of 64 (saturating).
fn align_up(x: u64) -> u64 {
    let a = ALIGN as u64;
    x.div_ceil(a).saturating_mul(a)
}

/// The lifetime of every buffer (parallel to [`Program::buffers`]); `None`
/// for a buffer that no step uses. Buffer ids out of range are ignored
/// (the verifier reports them).
pub fn lifetimes(p: &Program) -> Vec<Option<Lifetime>> {
    fn touch(lives: &mut [Option<Lifetime>], b: BufId, at: usize) {
        if let Some(l) = lives.get_mut(b.0 as usize) {
            let life = l.get_or_insert(Lifetime { first: at, last: at });
            life.first = life.first.min(at);
            life.last = life.last.max(at);
        }
    }
    fn visit(steps: &[Step], at: usize, lives: &mut [Option<Lifetime>]) {
        for s in steps {
            match s {
                Step::Launch { args, .. } => args.iter().for_each(|v| touch(lives, v.buf, at)),
                Step::Copy { dst, src, .. } => {
                    touch(lives, dst.buf, at);
                    touch(lives, src.buf, at);
                }
                Step::Repeat { body, .. } => visit(body, at, lives),
            }
        }
    }
    let mut lives = vec![None; p.buffers.len()];
    for (i, s) in p.steps.iter().enumerate() {
        visit(std::slice::from_ref(s), i, &mut lives);
    }
    lives
}

/// Places buffers in one arena (see the module docs); returns a slot per
/// request and the arena's size.
pub fn assign(reqs: &[Request]) -> (Vec<Slot>, u64) {
    let mut order: Vec<usize> = (0..reqs.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(reqs[i].bytes), reqs[i].life.first, i));
    let mut slots = vec![Slot { offset: 0, bytes: 0 }; reqs.len()];
    // Placed buffers, kept sorted by offset.
    let mut placed: Vec<(Slot, Lifetime)> = Vec::new();
    let mut peak = 0u64;
    for i in order {
        let r = reqs[i];
        if r.bytes == 0 {
            continue;
        }
        let mut offset = 0u64;
        for (s, life) in &placed {
            if !life.overlaps(&r.life) {
                continue;
            }
            if offset.saturating_add(r.bytes) <= s.offset {
                break; // fits in the gap below `s`
            }
            offset = offset.max(align_up(s.offset.saturating_add(s.bytes)));
        }
        let slot = Slot { offset, bytes: r.bytes };
        let at = placed.partition_point(|(s, _)| s.offset <= offset);
        placed.insert(at, (slot, r.life));
        slots[i] = slot;
        peak = peak.max(align_up(offset.saturating_add(r.bytes)));
    }
    (slots, peak)
}

/// Plans the arena for a program's temps.
pub fn plan(p: &Program) -> Result<MemoryPlan, RuntimeError> {
    let lives = lifetimes(p);
    let mut ids = Vec::new();
    let mut reqs = Vec::new();
    let mut naive = 0u64;
    for (i, b) in p.buffers.iter().enumerate() {
        if b.kind != BufKind::Temp {
            continue;
        }
        let bytes = byte_len(b.dtype, b.len)? as u64;
        naive = naive.saturating_add(align_up(bytes));
        if let Some(life) = lives[i] {
            ids.push(i);
            reqs.push(Request { bytes, life });
        }
    }
    let (placed, peak) = assign(&reqs);
    if peak > isize::MAX as u64 {
        return Err(RuntimeError::Invalid(format!("the temporaries of this program need {peak} bytes")));
    }
    let mut slots = vec![None; p.buffers.len()];
    for (i, s) in ids.into_iter().zip(placed) {
        slots[i] = Some(s);
    }
    Ok(MemoryPlan { slots, peak_bytes: peak, naive_bytes: naive })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::kernel::{Buffer, HostOffset, HostVar, View};
    use kiln_ir::DType;
    use proptest::prelude::*;

    fn req(bytes: u64, first: usize, last: usize) -> Request {
        Request { bytes, life: Lifetime { first, last } }
    }

    fn check(reqs: &[Request], slots: &[Slot], peak: u64) {
        let naive: u64 = reqs.iter().map(|r| align_up(r.bytes)).sum();
        assert!(peak <= naive, "peak {peak} > naive {naive}");
        for (i, (a, ra)) in slots.iter().zip(reqs).enumerate() {
            assert_eq!(a.bytes, ra.bytes);
            assert_eq!(a.offset % ALIGN as u64, 0);
            assert!(a.offset + a.bytes <= peak);
            for (b, rb) in slots[i + 1..].iter().zip(&reqs[i + 1..]) {
                if ra.life.overlaps(&rb.life) {
                    assert!(!a.overlaps(b), "{ra:?} at {a:?} and {rb:?} at {b:?}");
                }
            }
        }
    }

    #[test]
    fn a_chain_reuses_memory() {
        // a -> b -> c: a and c are never live together.
        let reqs = [req(1000, 0, 1), req(1000, 1, 2), req(1000, 2, 3)];
        let (slots, peak) = assign(&reqs);
        check(&reqs, &slots, peak);
        assert_eq!(slots[0].offset, slots[2].offset);
        assert_eq!(peak, 2048);
    }

    #[test]
    fn live_buffers_are_stacked() {
        let reqs = [req(100, 0, 5), req(10, 1, 2), req(300, 3, 4)];
        let (slots, peak) = assign(&reqs);
        check(&reqs, &slots, peak);
        // The 300-byte buffer goes first at 0, then 100 above it, then the
        // 10-byte buffer reuses the gap the 300 leaves during steps 1..2.
        assert_eq!(slots[2].offset, 0);
        assert_eq!(slots[0].offset, 320);
        assert_eq!(slots[1].offset, 0);
        assert_eq!(peak, 448);
    }

    #[test]
    fn empty_buffers_take_no_space() {
        let reqs = [req(0, 0, 0), req(64, 0, 0)];
        let (slots, peak) = assign(&reqs);
        check(&reqs, &slots, peak);
        assert_eq!(peak, 64);
    }

    proptest! {
        #[test]
        fn overlapping_lifetimes_never_share_memory(
            raw in prop::collection::vec((0u64..5000, 0usize..30, 0usize..8), 0..40)
        ) {
            let reqs: Vec<Request> = raw.iter().map(|&(b, f, l)| req(b, f, f + l)).collect();
            let (slots, peak) = assign(&reqs);
            check(&reqs, &slots, peak);
        }
    }

    fn temp(len: u64) -> Buffer {
        Buffer { dtype: DType::F32, len, kind: BufKind::Temp, name: String::new() }
    }

    fn copy(dst: u32, src: u32, offset: HostOffset) -> Step {
        let v = |b: u32, o: HostOffset| View { buf: kiln_ir::kernel::BufId(b), offset: o };
        Step::Copy { dst: v(dst, offset), src: v(src, HostOffset::default()), len: 1 }
    }

    #[test]
    fn a_loop_body_lives_for_the_whole_loop() {
        let mut p = Program::default();
        p.buffers = vec![temp(16), temp(16), temp(16), temp(16), temp(16)];
        let counter = HostOffset { constant: 0, terms: vec![(HostVar(0), 1)] };
        p.steps = vec![
            copy(1, 0, HostOffset::default()),
            Step::Repeat { var: HostVar(0), count: 3, body: vec![copy(2, 1, HostOffset::default()), copy(3, 2, counter)] },
            copy(4, 3, HostOffset::default()),
        ];
        let lives = lifetimes(&p);
        let l = |first, last| Some(Lifetime { first, last });
        assert_eq!(lives, vec![l(0, 0), l(0, 1), l(1, 1), l(1, 2), l(2, 2)]);
        let plan = plan(&p).unwrap();
        assert_eq!(plan.naive_bytes, 5 * 64);
        // 0, 2 and 4 share the first 64 bytes.
        assert_eq!(plan.slots[4], Some(Slot { offset: 0, bytes: 64 }));
        assert_eq!(plan.peak_bytes, 3 * 64);
    }

    #[test]
    fn only_used_temps_get_slots() {
        let mut p = Program::default();
        p.buffers = vec![temp(4), temp(4), Buffer { kind: BufKind::Output(0), ..temp(4) }];
        p.steps = vec![copy(2, 0, HostOffset::default())];
        let plan = plan(&p).unwrap();
        assert!(plan.slots[0].is_some());
        assert_eq!(plan.slots[1], None);
        assert_eq!(plan.slots[2], None);
        assert_eq!(plan.naive_bytes, 128);
        assert_eq!(plan.peak_bytes, 64);
    }
}
