//! Where a program's time goes: wall time and launch count per kernel,
//! accumulated over runs (`kiln train --profile`, `kiln run --profile`).

use std::time::Duration;

/// The time spent in one kernel.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KernelTime {
    /// The kernel's name (`k13_reduce_sum_log_softmax_mul`).
    pub name: String,
    /// Wall time of all its launches (all tiles, all threads).
    pub time: Duration,
    /// How many times it was launched.
    pub launches: u64,
}

/// Per-kernel times of one program, indexed like its kernels.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Profile {
    /// One entry per kernel of the program.
    pub kernels: Vec<KernelTime>,
}

impl Profile {
    /// An empty profile for kernels with these names.
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Profile {
        Profile { kernels: names.into_iter().map(|n| KernelTime { name: n.to_string(), ..Default::default() }).collect() }
    }

    /// Total launches.
    pub fn launches(&self) -> u64 {
        self.kernels.iter().map(|k| k.launches).sum()
    }

    /// Adds another run's times (of the same program, or of another one:
    /// kernels are matched by name).
    pub fn add(&mut self, other: &Profile) {
        for k in &other.kernels {
            match self.kernels.iter_mut().find(|m| m.name == k.name) {
                Some(m) => {
                    m.time += k.time;
                    m.launches += k.launches;
                }
                None => self.kernels.push(k.clone()),
            }
        }
    }

    /// A table of the `top` kernels by time, with each one's share of the
    /// total, for humans.
    pub fn table(&self, top: usize) -> String {
        let total: Duration = self.kernels.iter().map(|k| k.time).sum();
        let mut ks: Vec<&KernelTime> = self.kernels.iter().filter(|k| k.launches > 0).collect();
        ks.sort_by(|a, b| b.time.cmp(&a.time));
        let mut s = format!("{:>9}  {:>6}  {:>8}  kernel\n", "ms", "share", "launches");
        for k in ks.iter().take(top) {
            let share = if total.is_zero() { 0.0 } else { 100.0 * k.time.as_secs_f64() / total.as_secs_f64() };
            s += &format!("{:>9.2}  {:>5.1}%  {:>8}  {}\n", k.time.as_secs_f64() * 1e3, share, k.launches, k.name);
        }
        if ks.len() > top {
            let rest: Duration = ks[top..].iter().map(|k| k.time).sum();
            s += &format!("{:>9.2}  {:>5.1}%  {:>8}  ({} more kernels)\n", rest.as_secs_f64() * 1e3,
                100.0 * rest.as_secs_f64() / total.as_secs_f64().max(f64::MIN_POSITIVE), "", ks.len() - top);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let t = p.table(1);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[1].contains("3.00") && lines[1].contains("75.0%") && lines[1].ends_with(" b"), "{t}");
        assert!(lines[2].contains("(1 more kernels)"), "{t}");
    }
}
