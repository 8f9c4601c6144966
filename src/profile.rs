//! `kiln run --profile` and `--repeat N`: the first call's costs
//! (compiling, loading weights, the first run) apart from the steady state
//! of the kernels, the mean of runs 2..N.

use kiln_runtime::cpu::{Ceilings, Profile, Stats};
use std::time::Duration;

/// Where the time of a `kiln run` went.
#[derive(Default)]
pub struct Timings {
    /// How many times the entry runs (at least 1).
    pub runs: u32,
    /// Parsing, checking and lowering the model.
    pub front: Duration,
    /// The e-graph optimizer.
    pub optimize: Duration,
    /// Reading or initializing the weights and converting them for the backend.
    pub weights: Duration,
    /// Scheduling the graph into kernels.
    pub schedule: Duration,
    /// Checking, planning and generating code for the kernels.
    pub codegen: Duration,
    /// The first run, inputs to outputs.
    pub first: Duration,
    /// Runs 2..N summed (run 1 when there is only one), each run's wall
    /// time its time from inputs to outputs.
    steady: Profile,
}

impl Timings {
    /// Timings of `runs` runs, none recorded yet.
    pub fn new(runs: u32) -> Timings {
        Timings { runs, ..Timings::default() }
    }

    /// Records run `i` (from 0).
    pub fn record(&mut self, i: u32, st: &Stats) {
        if i == 0 {
            self.first = st.run_time;
        }
        if i > 0 || self.runs == 1 {
            self.steady.add(&st.profile);
            self.steady.wall += st.run_time;
        }
    }

    /// The report: first-call costs, then the steady state's table against
    /// the machine's `ceilings`.
    pub fn report(&self, entry: &str, ceilings: &Ceilings) -> String {
        let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
        let steady_runs = if self.runs == 1 { 1 } else { self.runs - 1 };
        let per_run = self.steady.per_run(steady_runs);
        let which = match self.runs {
            1 => "the only run; --repeat N reports the mean of runs 2..N".to_string(),
            2 => "run 2".to_string(),
            n => format!("mean of runs 2..{n}"),
        };
        format!(
            "profile of `{entry}`:\nfirst call: front end {}, optimizer {}, schedule {}, codegen {},\n            weights {}, first run {}\nsteady state: {} per run ({which})\n{}",
            ms(self.front),
            ms(self.optimize),
            ms(self.schedule),
            ms(self.codegen),
            ms(self.weights),
            ms(self.first),
            ms(per_run.wall),
            per_run.table(usize::MAX, ceilings)
        )
    }
}
