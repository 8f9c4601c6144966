//! `kiln ptx`: renders an entry point's kernels as PTX files plus a
//! manifest.json describing how to launch each, and the FlashAttention
//! kernels `--backend cuda` runs in place of attention nodes' kernels.

use crate::{compile, function, parse_dims, Failed};
use kiln_codegen::ptx::{self, Arch, Manifest};
use kiln_ir::kernel::Access;
use kiln_runtime as rt;
use serde_json::json;
use std::path::{Path, PathBuf};

/// `kiln ptx` flags.
#[derive(clap::Args)]
pub struct Args {
    /// The `.kl` file.
    file: PathBuf,
    /// Entry point to render.
    #[arg(long, default_value = "forward")]
    entry: String,
    /// Target architecture: sm_80 or sm_90a.
    #[arg(long, default_value = "sm_80")]
    arch: String,
    /// Output directory (one .ptx per kernel and manifest.json).
    #[arg(long)]
    out: PathBuf,
    /// A dimension's size as NAME=N (repeatable); others default as in `kiln run`.
    #[arg(long = "dim", value_name = "NAME=N")]
    dims: Vec<String>,
    #[command(flatten)]
    fuse: crate::FuseArgs,
}

fn manifest_json(m: &Manifest, file: &str) -> serde_json::Value {
    let params: Vec<_> = m
        .params
        .iter()
        .map(|p| {
            let access = match p.access {
                Access::Read => "in",
                Access::Write => "out",
                Access::ReadWrite => "inout",
            };
            json!({ "dtype": p.dtype.name(), "len": p.len, "access": access })
        })
        .collect();
    json!({ "name": m.name, "file": file, "grid": [m.grid, 1, 1], "block": [m.block, 1, 1], "shared_bytes": m.shared_bytes, "params": params })
}

/// The .ptx files a manifest lists, kernels and FlashAttention kernels.
fn listed_files(manifest: &serde_json::Value) -> Vec<String> {
    let kernels = manifest["kernels"].as_array().into_iter().flatten();
    let flash = manifest["flash_attention"].as_array().into_iter().flatten().flat_map(|x| x["kernels"].as_array().into_iter().flatten());
    kernels.chain(flash).filter_map(|k| k["file"].as_str()).map(str::to_string).collect()
}

/// The files an earlier `kiln ptx` into `dir` wrote, by its manifest.
fn previous_files(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("manifest.json")).unwrap_or_default();
    serde_json::from_str(&text).map(|m| listed_files(&m)).unwrap_or_default()
}

/// Removes the kernels an earlier run wrote that the new manifest does not
/// list, so the folder holds exactly one program. Only files that manifest
/// named are touched; anything else in the folder is the user's.
fn remove_stale(dir: &Path, previous: Vec<String>, manifest: &serde_json::Value) -> Result<(), Failed> {
    let current = listed_files(manifest);
    for f in previous.iter().filter(|f| !current.contains(f)) {
        // a plain file name, never a path out of the folder
        if f.ends_with(".ptx") && Path::new(f).file_name() == Some(f.as_ref()) {
            match std::fs::remove_file(dir.join(f)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Failed(format!("error: cannot remove stale {}: {e}\n", dir.join(f).display()))),
                _ => {}
            }
        }
    }
    Ok(())
}

/// Runs `kiln ptx`.
pub fn run(a: &Args) -> Result<(), Failed> {
    let arch = Arch::parse(&a.arch).ok_or_else(|| Failed(format!("error: unknown --arch `{}`; expected sm_80 or sm_90a\n", a.arch)))?;
    let c = compile(&a.file)?;
    let (f, _) = a.fuse.apply(&c.module, function(&c, &a.entry)?)?;
    let f = &f;
    let bound = rt::bind_dims(f, &vec![None; f.arg_names.len()], &parse_dims(&a.dims)?)?;
    if let Some(note) = bound.defaults_note() {
        eprintln!("note: {note} (set them with --dim NAME=N)");
    }
    let env = |n: &str| bound.get(n);
    let p = kiln_ir::schedule::schedule(&c.module, f, &env, &Default::default())?;
    let rendered = p.kernels.iter().map(|k| ptx::render(k, arch)).collect::<Result<Vec<_>, _>>()?;
    rt::create_output_dir(&a.out)?;
    let previous = previous_files(&a.out);
    let mut kernels = Vec::new();
    for k in &rendered {
        let file = format!("{}.ptx", k.manifest.name);
        rt::write_atomic(&a.out.join(&file), k.ptx.as_bytes())?;
        kernels.push(manifest_json(&k.manifest, &file));
    }
    // what `--backend cuda` runs in place of attention nodes' kernels
    let mut flash = Vec::new();
    for x in &p.intrinsics {
        let Ok(sub) = rt::cuda::flash::substitute(&p, x, arch) else { continue };
        let mut launches = Vec::new();
        for (k, _) in &sub.launches {
            let file = format!("{}.ptx", k.name);
            rt::write_atomic(&a.out.join(&file), k.ptx.as_bytes())?;
            let maps: Vec<_> = k.tensor_maps.iter().map(|m| json!({ "param": m.param, "tensor": m.tensor, "dims": m.dims, "strides": m.strides, "box": m.box_dims })).collect();
            launches.push(json!({ "name": k.name, "file": file, "grid": k.grid, "block": k.block, "shared_bytes": k.shared_bytes, "params": k.params, "tensor_maps": maps }));
        }
        let replaces: Vec<&str> = x.kernels.clone().map(|i| rendered[i as usize].manifest.name.as_str()).collect();
        flash.push(json!({ "replaces": replaces, "workspace_bytes": sub.workspace_bytes, "kernels": launches }));
    }
    let dims: serde_json::Map<String, serde_json::Value> = bound.dims.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    let manifest = json!({ "entry": f.name, "arch": arch.name(), "dims": dims, "kernels": kernels, "flash_attention": flash });
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| Failed(format!("error: {e}\n")))? + "\n";
    rt::write_atomic(&a.out.join("manifest.json"), text.as_bytes())?;
    remove_stale(&a.out, previous, &manifest)?;
    let flash_kernels: usize = flash.iter().map(|f| f["kernels"].as_array().map_or(0, Vec::len)).sum();
    println!("wrote {} kernels for {} to {}", rendered.len(), arch.name(), a.out.display());
    if !flash.is_empty() {
        println!("and {flash_kernels} FlashAttention kernels for {} attention nodes (manifest.json: flash_attention)", flash.len());
    }
    Ok(())
}
