//! How much memory a run may still take, and refusing a run that needs more.
//!
//! A request larger than the machine makes the allocator abort the process
//! (`memory allocation of N bytes failed`), so work whose size is known
//! up front is checked here first and refused with the numbers. The limit
//! is the smallest of what the kernel reports available (`MemAvailable`),
//! what the process's cgroup still allows (`memory.max - memory.current`)
//! and what its address-space limit (`ulimit -v`) leaves. On a system that
//! reports none of these nothing is refused here, and the allocations that
//! can fail (kernel buffers) still fail as errors.

use crate::RuntimeError;
use kiln_ir::TensorType;

/// One part of a run's memory, for the message: `("inputs", bytes)`.
pub type Part<'a> = (&'a str, u64);

/// Bytes the process can still allocate, if the system says.
pub fn available() -> Option<u64> {
    [mem_available(), cgroup_headroom(), address_space_headroom()].into_iter().flatten().min()
}

/// Refuses `parts` when together they need more than [`available`].
pub fn ensure(what: &str, parts: &[Part]) -> Result<(), RuntimeError> {
    match available() {
        Some(free) => ensure_within(what, parts, free),
        None => Ok(()),
    }
}

/// [`ensure`] against a given number of free bytes.
pub fn ensure_within(what: &str, parts: &[Part], free: u64) -> Result<(), RuntimeError> {
    let needed = parts.iter().fold(0u64, |s, (_, b)| s.saturating_add(*b));
    if needed <= free {
        return Ok(());
    }
    let detail: Vec<String> = parts.iter().filter(|(_, b)| *b > 0).map(|(n, b)| format!("{n} {}", bytes(*b))).collect();
    Err(RuntimeError::OutOfMemory { what: what.to_string(), needed, detail: detail.join(", "), available: free })
}

/// Bytes of tensors of these types, `per_elem` bytes an element, with
/// dims from `env` (an unbound dim counts as 0; sizes saturate).
pub fn tensors_bytes<'t>(types: impl IntoIterator<Item = &'t TensorType>, env: &dyn Fn(&str) -> Option<i64>, per_elem: u64) -> u64 {
    types.into_iter().fold(0u64, |sum, t| {
        let elems = t.shape.iter().fold(1u64, |n, d| n.saturating_mul(d.eval(env).map_or(0, |v| u64::try_from(v).unwrap_or(0))));
        sum.saturating_add(elems.saturating_mul(per_elem))
    })
}

/// `1.5 GiB`, `12.0 MiB`, `300 B`.
pub fn bytes(n: u64) -> String {
    const UNITS: [(u64, &str); 4] = [(1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    UNITS.iter().find(|(u, _)| n >= *u).map_or(format!("{n} B"), |(u, name)| format!("{:.1} {name}", n as f64 / *u as f64))
}

/// `MemAvailable` from /proc/meminfo.
fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    field_kib(&text, "MemAvailable:")
}

/// What the process's cgroup (v2) still allows.
fn cgroup_headroom() -> Option<u64> {
    let read = |f: &str| std::fs::read_to_string(format!("/sys/fs/cgroup/{f}")).ok();
    let max: u64 = read("memory.max")?.trim().parse().ok()?; // "max" means no limit
    let current: u64 = read("memory.current")?.trim().parse().ok()?;
    Some(max.saturating_sub(current))
}

/// What `ulimit -v` (RLIMIT_AS) leaves beyond the address space in use.
fn address_space_headroom() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max address space"))?;
    let soft: u64 = line.split_whitespace().nth(3)?.parse().ok()?; // "unlimited" means none
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    Some(soft.saturating_sub(field_kib(&status, "VmSize:")?))
}

/// A `Name:   1234 kB` line's value in bytes.
fn field_kib(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    let kib: u64 = line[name.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_with_the_numbers() {
        assert!(ensure_within("this run", &[("inputs", 10), ("outputs", 20)], 30).is_ok());
        let e = ensure_within("`forward`", &[("inputs", 3 << 30), ("outputs", 0), ("temporaries", 1 << 30)], 2 << 30).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`forward` needs 4.0 GiB of memory (inputs 3.0 GiB, temporaries 1.0 GiB), but only 2.0 GiB is available"
        );
        // sizes past u64 saturate instead of wrapping to something small
        assert!(ensure_within("x", &[("a", u64::MAX), ("b", 5)], u64::MAX - 1).is_err());
    }

    #[test]
    fn reads_kib_fields() {
        assert_eq!(field_kib("MemTotal:  100 kB\nMemAvailable:    2048 kB\n", "MemAvailable:"), Some(2048 * 1024));
        assert_eq!(field_kib("VmSize:\t  12 kB\n", "VmSize:"), Some(12 * 1024));
        assert_eq!(field_kib("MemTotal: 1 kB\n", "MemAvailable:"), None);
    }

    #[test]
    fn this_machine_reports_some_memory() {
        // Linux CI and developer machines have /proc/meminfo.
        if cfg!(target_os = "linux") {
            assert!(available().is_some_and(|b| b > 0));
        }
    }
}
