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
//!   names, dtypes and shapes of its stored tensors (the names of the
//!   params file) with their hash, the lowered `loss` graph and its
//!   fingerprint, the loss history, the names and hashes of the two
//!   tensor files, and a checksum of all of that;
//! - `params.safetensors`: a copy of the latest parameters for
//!   `kiln run --weights` (not read on resume).
//!
//! Every file is written atomically (a temporary file renamed into
//! place), the tensor files under new names first, then
//! `params.safetensors`, the sidecar last, and only then are the previous
//! step's files removed. A crash at any point leaves the previous
//! checkpoint readable, and a sidecar never names files that are missing
//! or torn: their hashes are checked. A crash between the last two
//! renames leaves `params.safetensors` one checkpoint ahead of the
//! sidecar; [`tidy`], run when the folder is next written to, puts it
//! back in step and removes what killed writes left behind.
//!
//! Resuming refuses a model whose parameters or computation differ from
//! the checkpoint's (another activation, epsilon or dropout rate changes
//! the printed graph), and a sidecar edited by hand or damaged (its
//! checksum no longer matches).

use super::optim::OptimizerConfig;
use super::precision::LossScaler;
use super::trainer::{LogRow, TrainConfig, Trainer};
use super::TrainError;
use crate::error::io_reason;
use crate::init::fnv1a64;
use crate::safetensors::{decode_params, decode_tensors, encode_params, encode_tensors, storage_layout};
use crate::{remove_temp_files, write_atomic, RuntimeError, Tensor};
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
pub const FORMAT: u32 = 2;

/// One stored tensor of the parameters, as the checkpoint records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamEntry {
    /// The tensor's name in the params file (one per layer of a stack,
    /// e.g. `blocks.0.attn.w_qkv`).
    pub name: String,
    /// Its dtype.
    pub dtype: String,
    /// Its shape (a layer's, for a stack).
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
    /// The fingerprint of [`graph`](Self::graph) ([`graph_fingerprint`]).
    pub graph_fingerprint: String,
    /// The model's `loss` as lowered by the front end, one printed line
    /// per entry, so that a refusal can say what changed.
    pub graph: Vec<String>,
    /// The model's stored parameter tensors, in module order.
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
    /// [`CheckpointMeta::checksum_of`] every other field: a sidecar
    /// edited by hand or damaged is refused.
    pub checksum: String,
}

impl CheckpointMeta {
    /// Refuses model `m` when its parameters or its computation differ
    /// from those of this checkpoint (read from `dir`), naming the first
    /// difference.
    pub fn check_model(&self, m: &Module, dir: &Path) -> Result<(), TrainError> {
        let err = |reason: String| TrainError::Checkpoint { dir: dir.display().to_string(), reason };
        check_model(m, &self.params).map_err(|r| err(format!("it was saved for a different model: {r}")))?;
        check_graph(&graph_lines(m)?, self).map_err(err)
    }

    /// 64-bit FNV-1a, in hex, of the compact JSON of every field but
    /// `checksum` (canonical: re-encoding what was read gives the bytes
    /// that were hashed, as floats round-trip exactly).
    pub fn checksum_of(&self) -> Result<String, TrainError> {
        let body = CheckpointMeta { checksum: String::new(), ..self.clone() };
        let json = serde_json::to_vec(&body)
            .map_err(|e| RuntimeError::Invalid(format!("cannot encode the checkpoint sidecar: {e}")))?;
        Ok(format!("{:016x}", fnv1a64(&json)))
    }
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

/// The parameters of `m` as a checkpoint records them: one entry per
/// tensor of the params file, under the same name.
pub fn param_entries(m: &Module) -> Result<Vec<ParamEntry>, TrainError> {
    let mut entries = Vec::new();
    for p in &m.params {
        let layout = storage_layout(p)?;
        for name in layout.names {
            entries.push(ParamEntry { name, dtype: p.ty.dtype.to_string(), shape: layout.slice_shape.clone() });
        }
    }
    Ok(entries)
}

/// `m`'s `loss` entry point as the front end lowered it, printed (the
/// stable text form of `kiln ir`), one entry per line.
pub fn graph_lines(m: &Module) -> Result<Vec<String>, TrainError> {
    let f = super::trainer::loss_function(m)?;
    Ok(kiln_ir::print::function(m, f).lines().map(str::to_string).collect())
}

/// The fingerprint of a printed graph: 64-bit FNV-1a of its lines, in hex.
pub fn graph_fingerprint(lines: &[String]) -> String {
    format!("{:016x}", fnv1a64(lines.join("\n").as_bytes()))
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
    // Before the sidecar: a sidecar never names a step whose weights
    // `params.safetensors` lacks (see `tidy` for the other direction).
    write_atomic(&dir.join(LATEST_PARAMS), &param_bytes)?;
    let graph = graph_lines(&t.module)?;
    let mut meta = CheckpointMeta {
        format: FORMAT,
        step: t.step,
        model: t.model_path.clone(),
        model_hash: model_hash(&t.module)?,
        graph_fingerprint: graph_fingerprint(&graph),
        graph,
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
        checksum: String::new(),
    };
    meta.checksum = meta.checksum_of()?;
    let json = serde_json::to_vec_pretty(&meta)
        .map_err(|e| RuntimeError::Invalid(format!("cannot encode the checkpoint sidecar: {e}")))?;
    // The sidecar goes last: until it is renamed into place, the previous
    // checkpoint is the one a reader sees.
    write_atomic(&dir.join(SIDECAR), &json)?;
    remove_stale(dir, &[&meta.params_file.name, &meta.optimizer_file.name]);
    Ok(())
}

/// Brings checkpoint folder `dir` back in order after a run killed while
/// writing: removes temporary files and tensor files the sidecar does not
/// name, and restores `params.safetensors` from the sidecar's params file
/// when it holds another step. A folder without a readable checkpoint
/// only loses its temporary files. The caller must be the folder's only
/// writer (hold its [`crate::DirLock`]).
pub fn tidy(dir: &Path) -> Result<(), TrainError> {
    remove_temp_files(dir);
    let Ok(meta) = Checkpoint::read_meta(dir) else { return Ok(()) };
    remove_stale(dir, &[&meta.params_file.name, &meta.optimizer_file.name]);
    let Ok(params) = std::fs::read(dir.join(&meta.params_file.name)) else { return Ok(()) };
    if file_entry(meta.params_file.name.clone(), &params) != meta.params_file {
        // Torn: resuming reports it; there is nothing good to copy.
        return Ok(());
    }
    let latest = dir.join(LATEST_PARAMS);
    if std::fs::read(&latest).ok().as_deref() != Some(params.as_slice()) {
        write_atomic(&latest, &params)?;
    }
    Ok(())
}

/// Deletes the checkpoint in `dir`: the sidecar first, so that a crash
/// midway leaves no checkpoint rather than a broken one, then its tensor
/// files and `params.safetensors`.
pub fn remove(dir: &Path) -> Result<(), TrainError> {
    match std::fs::remove_file(dir.join(SIDECAR)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(RuntimeError::Write { path: dir.join(SIDECAR).display().to_string(), reason: io_reason(&e) }.into()),
    }
    remove_stale(dir, &[]);
    let _ = std::fs::remove_file(dir.join(LATEST_PARAMS));
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
        if dir.exists() && !dir.is_dir() {
            return Err(err("it is a file, not a checkpoint directory".into()));
        }
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
        let invalid = |e: serde_json::Error| err(format!("{SIDECAR} is not valid: {e}"));
        // The format first: another format's fields need not parse as ours.
        let value: Value = serde_json::from_slice(&bytes).map_err(invalid)?;
        match value.get("format").and_then(Value::as_u64) {
            Some(f) if f == u64::from(FORMAT) => {}
            f => {
                let f = f.map_or_else(|| "missing".to_string(), |f| f.to_string());
                return Err(err(format!(
                    "format {f} is not supported (this Kiln reads format {FORMAT}); its `{LATEST_PARAMS}` still loads with `kiln run --weights`"
                )));
            }
        }
        let meta: CheckpointMeta = serde_json::from_value(value).map_err(invalid)?;
        if meta.checksum_of()? != meta.checksum {
            return Err(err(format!(
                "{SIDECAR} was edited or damaged: its contents no longer match its checksum (a checkpoint's step, learning rate, dtype, batch or schedule cannot be changed by hand)"
            )));
        }
        Ok(meta)
    }

    /// Reads the checkpoint in `dir` for model `m`, refusing one saved for
    /// another model (naming the first parameter that differs) and one
    /// whose files are missing or do not match the sidecar.
    pub fn load(m: &Module, dir: &Path) -> Result<Checkpoint, TrainError> {
        let meta = Checkpoint::read_meta(dir)?;
        let err = |reason: String| TrainError::Checkpoint { dir: dir.display().to_string(), reason };
        meta.check_model(m, dir)?;
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

/// Refuses a model whose `loss` computes something else than the
/// checkpoint's, naming the first line of the printed graph that differs.
fn check_graph(ours: &[String], meta: &CheckpointMeta) -> Result<(), String> {
    let now = graph_fingerprint(ours);
    if now == meta.graph_fingerprint {
        return Ok(());
    }
    let what = match ours.iter().zip(&meta.graph).position(|(a, b)| a != b) {
        Some(k) => format!("`{}` was `{}`", ours[k].trim(), meta.graph[k].trim()),
        None => format!("`loss` has {} lines, was {}", ours.len(), meta.graph.len()),
    };
    Err(format!(
        "the model's computation changed since the checkpoint (graph fingerprint {now}, was {}): {what}",
        meta.graph_fingerprint
    ))
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
