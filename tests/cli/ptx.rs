//! `kiln ptx` and `kiln run --backend cuda`.

use crate::util::{kiln, repo, s, TempDir};

fn mlp() -> String {
    s(&repo("models/mlp.kl")).to_string()
}

#[test]
fn ptx_writes_one_file_per_kernel_and_a_manifest() {
    let dir = TempDir::new();
    let out = dir.join("ptx");
    let run = kiln(&["ptx", &mlp(), "--entry", "loss", "--arch", "sm_90a", "--dim", "N=3", "--out", s(&out)]).ok();
    let ir = kiln(&["ir", &mlp(), "--entry", "loss", "--stage", "kernels", "--dim", "N=3"]).ok();
    let count: usize = ir.stdout.lines().next().and_then(|l| l.strip_prefix("# loss: ")).and_then(|l| l.split(' ').next()).and_then(|n| n.parse().ok()).expect("`# loss: N kernels` header");
    assert!(run.stdout.contains(&format!("wrote {count} kernels for sm_90a")), "{}", run.stdout);
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).expect("manifest")).expect("json");
    assert_eq!(manifest["entry"], "loss");
    assert_eq!(manifest["arch"], "sm_90a");
    assert_eq!(manifest["dims"]["N"], 3);
    let kernels = manifest["kernels"].as_array().expect("kernels");
    assert_eq!(kernels.len(), count);
    assert_eq!(manifest["flash_attention"].as_array().map(Vec::len), Some(0), "no attention in the MLP");
    for k in kernels {
        let name = k["name"].as_str().expect("name");
        assert!(ir.stdout.contains(&format!("kernel {name}(")), "{name} is not a kernel of the program");
        assert_eq!(k["block"][0], 128);
        let params = k["params"].as_array().expect("params");
        let text = std::fs::read_to_string(out.join(k["file"].as_str().expect("file"))).expect("ptx file");
        assert!(text.contains(".version 8.0\n.target sm_90a\n.address_size 64\n"), "{text}");
        assert!(text.contains(&format!(".visible .entry {name}(")));
        assert_eq!(text.matches(".param .u64").count(), params.len(), "{name}: params");
    }
}

/// Attention written as math in bf16: the manifest also lists the
/// FlashAttention kernels `--backend cuda` runs instead of the node's
/// generic ones (the FA3-style forward on sm_90a, with its tensor maps).
#[test]
fn ptx_writes_the_flash_attention_kernels_that_replace_an_attention_node() {
    let dir = TempDir::new();
    let model = dir.join("attn.kl");
    std::fs::write(
        &model,
        "config { H = 2 \n D = 64 }\ndim S = T\n\
         pub fn attn(q: bf16[B, H, T, D], k: bf16[B, H, T, D], v: bf16[B, H, T, D]) -> bf16[B, H, T, D] {\n\
         let s: bf16[B, H, T, S] = q @ transpose(k) / sqrt(D)\n\
         return softmax(where(tril(T, S), s, -inf), over: S) @ v\n}\n",
    )
    .expect("model");
    for (arch, fwd, maps) in [("sm_80", "flash_fwd_sm_80", 0), ("sm_90a", "flash3_fwd_sm_90a", 3)] {
        let out = dir.join(arch);
        let run = kiln(&["ptx", s(&model), "--entry", "attn", "--arch", arch, "--dim", "B=2", "--dim", "T=100", "--out", s(&out)]).ok();
        assert!(run.stdout.contains("and 1 FlashAttention kernels for 1 attention nodes"), "{}", run.stdout);
        let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).expect("manifest")).expect("json");
        let generic: Vec<&str> = manifest["kernels"].as_array().expect("kernels").iter().filter_map(|k| k["name"].as_str()).collect();
        let [node] = &manifest["flash_attention"].as_array().expect("flash_attention")[..] else { panic!("one attention node: {manifest}") };
        let replaces = node["replaces"].as_array().expect("replaces");
        assert!(!replaces.is_empty() && replaces.iter().all(|r| generic.contains(&r.as_str().expect("name"))), "{node}");
        let [k] = &node["kernels"].as_array().expect("kernels")[..] else { panic!("one forward kernel: {node}") };
        let name = k["name"].as_str().expect("name");
        assert!(name.starts_with(fwd), "{name}");
        assert_eq!(k["tensor_maps"].as_array().expect("tensor_maps").len(), maps);
        let text = std::fs::read_to_string(out.join(k["file"].as_str().expect("file"))).expect("ptx file");
        assert!(text.contains(&format!(".target {arch}")) && text.contains(&format!(".entry {name}(")), "{name}");
        assert_eq!(text.contains("cp.async.bulk.tensor"), maps > 0, "{name}: TMA");
    }
}

#[test]
fn ptx_bad_arch_and_entry_are_one_line_errors() {
    let dir = TempDir::new();
    let out = dir.join("ptx");
    kiln(&["ptx", &mlp(), "--arch", "sm_70", "--out", s(&out)]).one_line_error(&["sm_70", "sm_80", "sm_90a"]);
    kiln(&["ptx", &mlp(), "--entry", "nope", "--dim", "N=2", "--out", s(&out)]).one_line_error(&["nope", "forward", "loss"]);
    assert!(!out.exists(), "a failed run created the output directory");
}

/// Without a driver: the one-line error. With one: the GPU's outputs
/// match the CPU backend's.
#[test]
fn run_backend_cuda_needs_a_driver_or_matches_cpu() {
    let dir = TempDir::new();
    let (gpu, cpu) = (dir.join("gpu"), dir.join("cpu"));
    let run = kiln(&["run", &mlp(), "--backend", "cuda", "--dim", "N=3", "--out", s(&gpu)]);
    if run.code != 0 {
        run.one_line_error(&["no CUDA driver found"]);
        return;
    }
    kiln(&["run", &mlp(), "--backend", "cpu", "--dim", "N=3", "--out", s(&cpu)]).ok();
    let (g, c) = (kiln_runtime::read_npy(&gpu.join("logits.npy")).expect("gpu"), kiln_runtime::read_npy(&cpu.join("logits.npy")).expect("cpu"));
    assert_eq!(g.shape, c.shape);
    for (x, y) in g.data.iter().zip(&c.data) {
        assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "cuda {x} vs cpu {y}");
    }
}

/// Without a driver: the one-line error. With one: a forward and a
/// backward row per problem, each with a positive rate.
#[test]
fn bench_backend_cuda_needs_a_driver_or_times_attention() {
    let run = kiln(&["bench", "--backend", "cuda", "--arch", "sm_80", "--quick", "--json"]);
    if run.code != 0 {
        run.one_line_error(&["no CUDA driver found"]);
        return;
    }
    let rows: Vec<serde_json::Value> = run.stdout.lines().map(|l| serde_json::from_str(l).expect("a JSON row per line")).collect();
    assert_eq!(rows.len(), 3 * 2 * 2 * 2);
    assert!(rows.iter().all(|r| r["tflops"].as_f64().is_some_and(|t| t > 0.0)), "{rows:?}");
}
