//! The compile cache: one executable per entry point and concrete dims.

use super::exec::CpuExecutable;
use super::pool::Pool;
use crate::RuntimeError;
use kiln_codegen::cpu::Options as CodegenOptions;
use kiln_ir::schedule::ScheduleOptions;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// What an executable is compiled for: an entry point's name and the dims.
type Key = (String, BTreeMap<String, i64>);

/// Compiled executables keyed by (entry point, dims), so repeated runs
/// with the same shapes compile once. A cache belongs to one module: the
/// key does not identify the module. It also fixes where kernels run (its
/// [`Pool`]) and how entry points are scheduled.
#[derive(Debug)]
pub struct Cache {
    pool: Arc<Pool>,
    options: ScheduleOptions,
    codegen: CodegenOptions,
    map: Mutex<HashMap<Key, Arc<CpuExecutable>>>,
}

impl Default for Cache {
    fn default() -> Cache {
        Cache::new()
    }
}

impl Cache {
    /// An empty cache running kernels on rayon's global pool with the
    /// default scheduling options.
    pub fn new() -> Cache {
        Cache::with_pool(Arc::new(Pool::global()), ScheduleOptions::default())
    }

    /// An empty cache running kernels on `pool`; the scheduler is told the
    /// pool's thread count whatever `options.threads` says.
    pub fn with_pool(pool: Arc<Pool>, mut options: ScheduleOptions) -> Cache {
        options.threads = pool.threads();
        Cache { pool, options, codegen: CodegenOptions::default(), map: Mutex::new(HashMap::new()) }
    }

    /// The pool executables from this cache run on.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// The options entry points are scheduled with.
    pub fn options(&self) -> &ScheduleOptions {
        &self.options
    }

    /// This cache, compiling with `codegen` instead of the default code
    /// generation options (e.g. the portable f32x4 GEMM everywhere).
    pub fn with_codegen(mut self, codegen: CodegenOptions) -> Cache {
        self.codegen = codegen;
        self
    }

    /// The options kernels are compiled with.
    pub fn codegen(&self) -> &CodegenOptions {
        &self.codegen
    }

    /// The executable for `entry` with `dims`, built by `build` on a miss;
    /// the flag is true on a hit. `build` runs without the cache locked
    /// (two threads missing at once may both build; the first to finish
    /// is kept), and a failed build is not remembered.
    pub fn get_or_build(
        &self,
        entry: &str,
        dims: &BTreeMap<String, i64>,
        build: impl FnOnce() -> Result<CpuExecutable, RuntimeError>,
    ) -> Result<(Arc<CpuExecutable>, bool), RuntimeError> {
        let key = (entry.to_string(), dims.clone());
        if let Some(e) = self.lock().get(&key) {
            return Ok((e.clone(), true));
        }
        let exe = Arc::new(build()?);
        Ok((self.lock().entry(key).or_insert(exe).clone(), false))
    }

    /// How many executables are cached.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every executable.
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<CpuExecutable>>> {
        // A panic while holding the lock cannot leave the map inconsistent.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}
