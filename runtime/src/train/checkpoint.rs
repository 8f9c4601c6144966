//! Checkpoints that resume bit-identically.
//!
//! A checkpoint directory holds:
//!
//! - `params-{step}.safetensors`: the parameters (the f32 master weights;
//!   a parameter declared bf16 or f16 is rounded to its dtype), in
//!   the same layout as any Kiln weights file (stacked layers split);
//! - `optimizer-{step}.safetensors`: the optimizer's state, one f32 tensor
//!   `{param}.{slot}` per trained parameter and slot (`m`, `v` or
//!   `momentum`), shaped like the parameter, and `{param}.master`, the f32
//!   master weights of a parameter declared bf16 or f16 (whose value in
//!   the params file is rounded);
//! - `checkpoint.json`, the sidecar ([`CheckpointMeta`]): the step, the
//!   run's configuration (optimizer hyper-parameters, schedule, precision,
//!   seed), the optimizer's step count, the loss scaler, the data stream's
//!   position (including its random state), the model's path and the
//!   names, dtypes and shapes of its parameters with their hash, the loss
//!   history, and the names and hashes of the two tensor files;
//! - `params.safetensors`: a copy of the latest parameters for
//!   `kiln run --weights` (not read on resume).
//!
//! Every file is written atomically (a temporary file renamed into
//! place), the tensor files under new names first and the sidecar last,
//! and only then are the previous step's files removed. A crash at any
//! point leaves the previous checkpoint readable, and a sidecar never
//! names files that are missing or torn: their hashes are checked.

use super::optim::OptimizerConfig;
use super::precision::LossScaler;
use super::trainer::{LogRow, TrainConfig, Trainer};
use super::TrainError;
use crate::init::fnv1a64;
use crate::safetensors::{decode_params, decode_tensors, encode_params, encode_tensors, storage_layout};
use crate::{write_atomic, RuntimeError, Tensor};
use kiln_ir::{DType, Module};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// The sidecar's file name.
pub const SIDECAR: &str = "checkpoint.json";
/// The latest parameters, for `kiln run --weights`.
pub const LATEST_PARAMS: &str = "params.safetensors";
/// The sidecar format this code writes and reads.
pub const FORMAT: u32 = 1;

/// One parameter as the checkpoint records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamEntry {
    /// The parameter's name (a stack's, without layer index).
    pub name: String,
    /// Its dtype.
    pub dtype: String,
    /// Its full shape (a stack's with the layer axis).
    pub shape: Vec<usize>,
}

/// A tensor file of the checkpoint and the hash of its bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// The file name, inside the checkpoint directory.
    pub name: String,
    /// 64-bit FNV-1a of its bytes, in hex.
    pub fnv1a64: String,
    /// Its size in bytes.
    pub bytes: u64,
}

/// The sidecar, `checkpoint.json` (see the module docs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// [`FORMAT`].
    pub format: u32,
    /// Updates taken.
    pub step: u64,
    /// The model's path as given to the trainer.
    pub model: String,
    /// [`model_hash`] of the model's parameters.
    pub model_hash: String,
    /// The model's parameters, in module order.
    pub params: Vec<ParamEntry>,
    /// The run's configuration (optimizer, schedule, precision, seed, ...).
    pub config: TrainConfig,
    /// The optimizer's hyper-parameters (also in `config`, for readers).
    pub optimizer: OptimizerConfig,
    /// Updates the optimizer applied (Adam's `t`; fewer than `step` when
    /// mixed precision skipped some).
    pub optimizer_steps: u64,
    /// The loss scaler of mixed precision.
    pub scaler: Option<LossScaler>,
    /// The data stream's position, including its random state.
    pub data: Value,
    /// The dimension sizes the run was compiled for (`B`, `T`, ...).
    pub dims: BTreeMap<String, i64>,
    /// The parameters file.
    pub params_file: FileEntry,
    /// The optimizer state file.
    pub optimizer_file: FileEntry,
    /// The loss history.
    pub history: Vec<LogRow>,
}

/// A checkpoint read back: its sidecar, the parameters (parallel to the
/// module's; bf16/f16 ones hold their f32 master weights) and the
/// optimizer's slots (`slots[k][i]`: slot `k` of the `i`-th trained
/// parameter).
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// The sidecar.
    pub meta: CheckpointMeta,
    /// Every parameter's value.
    pub params: Vec<Tensor>,
    /// The optimizer state.
    pub slots: Vec<Vec<Vec<f32>>>,
}

/// The parameters of `m` as a checkpoint records them.
pub fn param_entries(m: &Module) -> Result<Vec<ParamEntry>, TrainError> {
    m.params
        .iter()
        .map(|p| {
            let layout = storage_layout(p)?;
            Ok(ParamEntry { name: p.name.clone(), dtype: p.ty.dtype.to_string(), shape: layout.shape })
        })
        .collect()
}

/// A hash of the names, dtypes and shapes of `m`'s parameters.
pub fn model_hash(m: &Module) -> Result<String, TrainError> {
    let mut s = String::new();
    for e in param_entries(m)? {
        s.push_str(&format!("{} {}{:?}\n", e.name, e.dtype, e.shape));
    }
    Ok(format!("{:016x}", fnv1a64(s.as_bytes())))
}

fn file_entry(name: String, bytes: &[u8]) -> FileEntry {
    FileEntry { name, fnv1a64: format!("{:016x}", fnv1a64(bytes)), bytes: bytes.len() as u64 }
}

/// Writes `t`'s state as a checkpoint in `dir` (which must exist).
pub(super) fn save(t: &Trainer, dir: &Path) -> Result<(), TrainError> {
    let params = t.params();
    let param_bytes = encode_params(&t.module, &params)?;
    let names = t.optimizer.config().slot_names();
    let mut named = Vec::new();
    for (k, slot) in names.iter().enumerate() {
        for (j, &i) in t.trainable.iter().enumerate() {
            let shape = params[i].shape.clone();
            let data = t.optimizer.slot(k)[j].iter().map(|&x| x as f64).collect();
            named.push((format!("{}.{slot}", t.module.params[i].name), Tensor { dtype: DType::F32, shape, data }));
        }
    }
    // The params file holds a bf16/f16 parameter rounded to its dtype;
    // resuming needs its f32 master weights.
    for (j, &i) in t.trainable.iter().enumerate() {
        if t.module.params[i].ty.dtype != DType::F32 {
            let data = t.master[j].iter().map(|&x| x as f64).collect();
            let shape = params[i].shape.clone();
            named.push((format!("{}.master", t.module.params[i].name), Tensor { dtype: DType::F32, shape, data }));
        }
    }
    let opt_bytes = encode_tensors(&named)?;
    let params_file = file_entry(format!("params-{:08}.safetensors", t.step), &param_bytes);
    let optimizer_file = file_entry(format!("optimizer-{:08}.safetensors", t.step), &opt_bytes);
    write_atomic(&dir.join(&params_file.name), &param_bytes)?;
    write_atomic(&dir.join(&optimizer_file.name), &opt_bytes)?;
    let meta = CheckpointMeta {
        format: FORMAT,
        step: t.step,
        model: t.model_path.clone(),
        model_hash: model_hash(&t.module)?,
        params: param_entries(&t.module)?,
        config: t.config.clone(),
        optimizer: *t.optimizer.config(),
        optimizer_steps: t.optimizer.steps(),
        scaler: t.scaler,
        data: t.data.state(),
        dims: t.dims.clone(),
        params_file,
        optimizer_file,
        history: t.history.clone(),
    };
    let json = serde_json::to_vec_pretty(&meta)
        .map_err(|e| RuntimeError::Invalid(format!("cannot encode the checkpoint sidecar: {e}")))?;
    // The sidecar goes last: until it is renamed into place, the previous
    // checkpoint is the one a reader sees.
    write_atomic(&dir.join(SIDECAR), &json)?;
    remove_stale(dir, &[&meta.params_file.name, &meta.optimizer_file.name]);
    write_atomic(&dir.join(LATEST_PARAMS), &param_bytes)?;
    Ok(())
}

/// Removes tensor files of earlier checkpoints (best effort: a leftover
/// file wastes space but is never read).
fn remove_stale(dir: &Path, keep: &[&str]) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let ours = (name.starts_with("params-") || name.starts_with("optimizer-")) && name.ends_with(".safetensors");
        if ours && !keep.contains(&name.as_str()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

impl Checkpoint {
    /// Reads only the sidecar of the checkpoint in `dir`.
    pub fn read_meta(dir: &Path) -> Result<CheckpointMeta, TrainError> {
        let err = |reason: String| TrainError::Checkpoint { dir: dir.display().to_string(), reason };
        let path = dir.join(SIDECAR);
        if !dir.is_dir() {
            return Err(err("no such directory".into()));
        }
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(err(format!(
                    "no {SIDECAR} (not a checkpoint directory, or no checkpoint was completed there)"
                )))
            }
            Err(e) => return Err(RuntimeError::Read { path: path.display().to_string(), reason: e.to_string() }.into()),
        };
        let meta: CheckpointMeta = serde_json::from_slice(&bytes).map_err(|e| err(format!("{SIDECAR} is not valid: {e}")))?;
        if meta.format != FORMAT {
            return Err(err(format!("format {} is not supported (this Kiln reads format {FORMAT})", meta.format)));
        }
        Ok(meta)
    }

    /// Reads the checkpoint in `dir` for model `m`, refusing one saved for
    /// another model (naming the first parameter that differs) and one
    /// whose files are missing or do not match the sidecar.
    pub fn load(m: &Module, dir: &Path) -> Result<Checkpoint, TrainError> {
        let meta = Checkpoint::read_meta(dir)?;
        let err = |reason: String| TrainError::Checkpoint { dir: dir.display().to_string(), reason };
        check_model(m, &meta.params).map_err(|r| err(format!("it was saved for a different model: {r}")))?;
        let read = |f: &FileEntry| -> Result<Vec<u8>, TrainError> {
            let bytes = std::fs::read(dir.join(&f.name)).map_err(|e| err(format!("cannot read `{}`: {e}", f.name)))?;
            if bytes.len() as u64 != f.bytes || format!("{:016x}", fnv1a64(&bytes)) != f.fnv1a64 {
                return Err(err(format!("`{}` does not match {SIDECAR} (modified or torn)", f.name)));
            }
            Ok(bytes)
        };
        let pbytes = read(&meta.params_file)?;
        let mut params = decode_params(m, &pbytes, &dir.join(&meta.params_file.name).display().to_string())?;
        let obytes = read(&meta.optimizer_file)?;
        let ofile = dir.join(&meta.optimizer_file.name).display().to_string();
        let mut tensors = decode_tensors(&obytes, &ofile)?;
        let mut slots = Vec::new();
        for slot in meta.config.optimizer.slot_names() {
            let mut per = Vec::new();
            for (i, p) in m.params.iter().enumerate().filter(|(_, p)| p.ty.dtype.is_float()) {
                let name = format!("{}.{slot}", p.name);
                let t = tensors.remove(&name).ok_or_else(|| err(format!("`{ofile}` lacks the optimizer state `{name}`")))?;
                if t.shape != params[i].shape {
                    return Err(err(format!(
                        "optimizer state `{name}` has shape {:?}, the parameter {:?}",
                        t.shape, params[i].shape
                    )));
                }
                per.push(t.data.iter().map(|&x| x as f32).collect());
            }
            slots.push(per);
        }
        for (i, p) in m.params.iter().enumerate().filter(|(_, p)| p.ty.dtype.is_float() && p.ty.dtype != DType::F32) {
            let name = format!("{}.master", p.name);
            let t = tensors.remove(&name).ok_or_else(|| err(format!("`{ofile}` lacks the master weights `{name}`")))?;
            if t.shape != params[i].shape {
                return Err(err(format!("master weights `{name}` have shape {:?}, the parameter {:?}", t.shape, params[i].shape)));
            }
            params[i].data = t.data;
        }
        Ok(Checkpoint { meta, params, slots })
    }
}

/// The first difference between the model's parameters and a checkpoint's.
fn check_model(m: &Module, saved: &[ParamEntry]) -> Result<(), String> {
    let ours = param_entries(m).map_err(|e| e.to_string())?;
    for (k, a) in ours.iter().enumerate() {
        let Some(b) = saved.get(k) else {
            return Err(format!("the checkpoint has no parameter `{}`", a.name));
        };
        if a.name != b.name {
            return match saved.iter().any(|s| s.name == a.name) {
                true => Err(format!("parameter {k} is `{}` in the model but `{}` in the checkpoint", a.name, b.name)),
                false => Err(format!("the checkpoint has no parameter `{}` (it has `{}` there)", a.name, b.name)),
            };
        }
        if a.shape != b.shape || a.dtype != b.dtype {
            return Err(format!(
                "parameter `{}` is {}{:?} in the checkpoint but {}{:?} in the model",
                a.name, b.dtype, b.shape, a.dtype, a.shape
            ));
        }
    }
    if let Some(extra) = saved.get(ours.len()) {
        return Err(format!("the model has no parameter `{}`", extra.name));
    }
    Ok(())
}
