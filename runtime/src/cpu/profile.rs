//! Where a program's time goes: wall time, launches, work and traffic per
//! kernel, accumulated over runs (`kiln train --profile`, `kiln run
//! --profile`), and a table of them beside the machine's [`Ceilings`].
//!
//! Work and traffic follow [`kiln_ir::kernel::cost`]: flops counted per
//! operation (a GEMM tile is 2·m·n·k, `exp` is 1), bytes as compulsory
//! traffic (each argument once per launch), so GB/s is a lower bound on
//! what the memory system moved.

use super::ceilings::Ceilings;
use kiln_ir::kernel::cost::Cost;
use std::fmt::Write;
use std::time::Duration;

/// The time spent in one kernel (or one kind of host work).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KernelTime {
    /// The kernel's name (`k13_reduce_sum_log_softmax_mul`).
    pub name: String,
    /// Wall time of all its launches (all tiles, all threads).
    pub time: Duration,
    /// How many times it was launched.
    pub launches: u64,
    /// Floating-point operations of all its launches.
    pub flops: u64,
    /// Bytes all its launches moved.
    pub bytes: u64,
}

impl KernelTime {
    /// Counts one launch of a kernel of this cost that took `time`.
    pub fn launched(&mut self, cost: Cost, time: Duration) {
        self.time += time;
        self.launches += 1;
        self.flops = self.flops.saturating_add(cost.flops);
        self.bytes = self.bytes.saturating_add(cost.bytes);
    }

    /// Adds another entry's time, launches, work and traffic to this one.
    fn absorb(&mut self, k: &KernelTime) {
        self.time += k.time;
        self.launches += k.launches;
        self.flops = self.flops.saturating_add(k.flops);
        self.bytes = self.bytes.saturating_add(k.bytes);
    }
}

/// Per-kernel times of one program, indexed like its kernels, and the
/// time around them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Profile {
    /// One entry per kernel of the program.
    pub kernels: Vec<KernelTime>,
    /// Work between kernels: host steps, the optimizer, conversions
    /// (flops and bytes are not counted for them).
    pub host: Vec<KernelTime>,
    /// The wall time the profile covers, kernels and all (zero when the
    /// caller did not measure it); what neither kernels nor `host` account
    /// for is reported as "other".
    pub wall: Duration,
}

impl Profile {
    /// An empty profile for kernels with these names.
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Profile {
        Profile { kernels: names.into_iter().map(|n| KernelTime { name: n.to_string(), ..Default::default() }).collect(), ..Default::default() }
    }

    /// Total launches.
    pub fn launches(&self) -> u64 {
        self.kernels.iter().map(|k| k.launches).sum()
    }

    /// Time in kernels.
    pub fn kernel_time(&self) -> Duration {
        self.kernels.iter().map(|k| k.time).sum()
    }

    /// Adds `time` spent on host work `what` (one entry per name).
    pub fn add_host(&mut self, what: &str, time: Duration) {
        merge(&mut self.host, &KernelTime { name: what.to_string(), time, launches: 1, ..Default::default() });
    }

    /// Adds another run's times (of the same program, or of another one:
    /// kernels are matched by name).
    pub fn add(&mut self, other: &Profile) {
        for k in &other.kernels {
            merge(&mut self.kernels, k);
        }
        for h in &other.host {
            merge(&mut self.host, h);
        }
        self.wall += other.wall;
    }

    /// The profile of one run on average, from one of `runs` runs.
    pub fn per_run(&self, runs: u32) -> Profile {
        let runs = runs.max(1);
        let scale = |ks: &[KernelTime]| -> Vec<KernelTime> {
            ks.iter()
                .map(|k| KernelTime {
                    name: k.name.clone(),
                    time: k.time / runs,
                    launches: k.launches / u64::from(runs),
                    flops: k.flops / u64::from(runs),
                    bytes: k.bytes / u64::from(runs),
                })
                .collect()
        };
        Profile { kernels: scale(&self.kernels), host: scale(&self.host), wall: self.wall / runs }
    }

    /// The kernels merged by kind: their names without the `k<N>_` prefix
    /// (a training step's 400 kernels are a few dozen kinds: `matmul`,
    /// `matmul_gelu_add`, `attention_bwd`, ...).
    pub fn by_kind(&self) -> Profile {
        let mut kinds: Vec<KernelTime> = Vec::new();
        for k in &self.kernels {
            let kind = k.name.strip_prefix('k').and_then(|r| r.split_once('_')).filter(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            let name = kind.map_or(k.name.as_str(), |(_, rest)| rest);
            merge(&mut kinds, &KernelTime { name: name.to_string(), ..k.clone() });
        }
        Profile { kernels: kinds, host: self.host.clone(), wall: self.wall }
    }

    /// A table of the `top` kernels by time: each one's time, share, speed
    /// and traffic beside the `ceilings`, a total line, then the time
    /// outside kernels. At most 100 columns, kernel names aside.
    pub fn table(&self, top: usize, ceilings: &Ceilings) -> String {
        let total = self.kernel_time();
        let mut ks: Vec<&KernelTime> = self.kernels.iter().filter(|k| k.launches > 0).collect();
        ks.sort_by(|a, b| b.time.cmp(&a.time));
        let mut s = format!(
            "ceilings: {:.1} GFLOP/s ({} FMA, {} threads), copy {:.1} GB/s; ridge {:.1} flop/byte\n",
            ceilings.gflops, ceilings.isa, ceilings.threads, ceilings.gbs, ceilings.ridge()
        );
        s += &format!("{:>9}  {:>6}  {:>8}  {:>8}  {:>5}  {:>7}  {:>5}  {:>5}  kernel\n", "ms", "share", "launches", "GFLOP/s", "%fp", "GB/s", "%bw", "bound");
        let share = |t: Duration| if total.is_zero() { 0.0 } else { 100.0 * t.as_secs_f64() / total.as_secs_f64() };
        for k in ks.iter().take(top) {
            s += &row(k, share(k.time), ceilings);
        }
        if ks.len() > top {
            let rest = sum(&format!("({} more kernels)", ks.len() - top), &ks[top..]);
            s += &row(&rest, share(rest.time), ceilings);
        }
        s += &row(&sum("total in kernels", &ks), share(total), ceilings);
        if !self.host.is_empty() || !self.wall.is_zero() {
            s += "outside kernels:\n";
            let ms = |t: Duration| t.as_secs_f64() * 1e3;
            for h in &self.host {
                let _ = writeln!(s, "{:>9.2}  {}", ms(h.time), h.name);
            }
            if !self.wall.is_zero() {
                let accounted = total + self.host.iter().map(|h| h.time).sum::<Duration>();
                let _ = writeln!(s, "{:>9.2}  other (data, input and output conversion, bookkeeping)", ms(self.wall.saturating_sub(accounted)));
                let _ = writeln!(s, "{:>9.2}  wall time, {:.1}% of it in kernels", ms(self.wall), 100.0 * total.as_secs_f64() / self.wall.as_secs_f64());
            }
        }
        s
    }
}

/// Adds `k` to the entry of its name in `into`, or appends it.
fn merge(into: &mut Vec<KernelTime>, k: &KernelTime) {
    match into.iter_mut().find(|m| m.name == k.name) {
        Some(m) => m.absorb(k),
        None => into.push(k.clone()),
    }
}

/// The entries `ks` together, named `name`.
fn sum(name: &str, ks: &[&KernelTime]) -> KernelTime {
    let mut t = KernelTime { name: name.to_string(), ..Default::default() };
    ks.iter().for_each(|k| t.absorb(k));
    t
}

/// One line of the table: a kernel's time and share, its speed against
/// the FMA ceiling, its traffic against the copy bandwidth, and which of
/// them binds (its flops per byte against the ridge point).
fn row(k: &KernelTime, share: f64, c: &Ceilings) -> String {
    let secs = k.time.as_secs_f64();
    let (gflops, gbs) = if secs > 0.0 { (k.flops as f64 / secs / 1e9, k.bytes as f64 / secs / 1e9) } else { (0.0, 0.0) };
    let bound = match (k.flops, k.bytes) {
        (0, 0) => "-",
        (_, 0) => "fp",
        (f, b) if f as f64 / b as f64 >= c.ridge() => "fp",
        _ => "mem",
    };
    format!(
        "{:>9.2}  {:>5.1}%  {:>8}  {:>8.1}  {:>4.0}%  {:>7.1}  {:>4.0}%  {:>5}  {}\n",
        secs * 1e3,
        share,
        k.launches,
        gflops,
        100.0 * gflops / c.gflops,
        gbs,
        100.0 * gbs / c.gbs,
        bound,
        k.name
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const CEILINGS: Ceilings = Ceilings { threads: 2, gflops: 400.0, isa: "avx512f", gbs: 20.0 };

    #[test]
    fn kinds_merge_kernels_of_one_name_after_the_number() {
        let mut p = Profile::new(["k1_matmul", "k7_matmul", "k3_layernorm", "kx_odd"]);
        for (k, ms) in p.kernels.iter_mut().zip([2, 3, 4, 5]) {
            k.launched(Cost { flops: 10, bytes: 1 }, Duration::from_millis(ms));
        }
        let kinds = p.by_kind();
        let names: Vec<&str> = kinds.kernels.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["matmul", "layernorm", "kx_odd"]);
        assert_eq!(kinds.kernels[0].time, Duration::from_millis(5));
        assert_eq!((kinds.kernels[0].launches, kinds.kernels[0].flops), (2, 20));
    }

    #[test]
    fn adds_by_name_and_ranks_by_time() {
        let mut p = Profile::new(["a", "b"]);
        p.kernels[0].time = Duration::from_millis(1);
        p.kernels[0].launches = 1;
        let mut q = Profile::new(["b", "c"]);
        q.kernels[0].time = Duration::from_millis(3);
        q.kernels[0].launches = 2;
        p.add(&q);
        assert_eq!(p.kernels.len(), 3);
        assert_eq!(p.launches(), 3);
        let t = p.table(1, &CEILINGS);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[2].contains("3.00") && lines[2].contains("75.0%") && lines[2].ends_with(" b"), "{t}");
        assert!(lines[3].contains("(1 more kernels)"), "{t}");
        assert!(lines[4].contains("4.00") && lines[4].contains("100.0%") && lines[4].ends_with("total in kernels"), "{t}");
    }

    /// 1 GFLOP and 0.1 GB in 10 ms: 100 GFLOP/s (25% of 400) and 10 GB/s
    /// (50% of 20); 10 flop/byte is below the ridge at 400 / 20 = 20.
    #[test]
    fn a_row_is_work_over_time_against_the_ceilings() {
        let mut p = Profile::new(["k0_matmul"]);
        for _ in 0..2 {
            p.kernels[0].launched(Cost { flops: 500_000_000, bytes: 50_000_000 }, Duration::from_millis(5));
        }
        let t = p.table(10, &CEILINGS);
        let row: Vec<&str> = t.lines().nth(2).expect("row").split_whitespace().collect();
        assert_eq!(row, ["10.00", "100.0%", "2", "100.0", "25%", "10.0", "50%", "mem", "k0_matmul"], "{t}");
        assert!(t.starts_with("ceilings: 400.0 GFLOP/s (avx512f FMA, 2 threads), copy 20.0 GB/s; ridge 20.0 flop/byte\n"), "{t}");
    }

    /// Four runs, averaged; the wall time nothing else accounts for is
    /// "other".
    #[test]
    fn per_run_divides_and_the_rest_is_other() {
        let mut p = Profile::new(["k"]);
        for _ in 0..4 {
            p.kernels[0].launched(Cost { flops: 8, bytes: 4 }, Duration::from_millis(2));
            p.add_host("(host) optimizer update", Duration::from_millis(1));
            p.wall += Duration::from_millis(10);
        }
        let one = p.per_run(4);
        assert_eq!(one.kernels[0], KernelTime { name: "k".into(), time: Duration::from_millis(2), launches: 1, flops: 8, bytes: 4 });
        assert_eq!(one.host[0].time, Duration::from_millis(1));
        let t = one.table(10, &CEILINGS);
        assert!(t.contains("     1.00  (host) optimizer update\n"), "{t}");
        assert!(t.contains("     7.00  other ("), "{t}");
        assert!(t.contains("    10.00  wall time, 20.0% of it in kernels"), "{t}");
    }
}
