//! Parameter initialization: determinism, statistics, per-name streams and
//! dtype rounding.

mod common;

use common::{module, normal, param, stacked};
use kiln_ir::{DType, DimExpr, Init, Param, TensorType};
use kiln_runtime::init::{fnv1a64, init_param, init_params};

fn mean_std(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

#[test]
fn fnv1a_matches_the_reference_vectors() {
    assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
}

#[test]
fn fixed_seed_gives_fixed_values() {
    // Pinned: a change here changes every checkpoint initialized by Kiln.
    let p = param("wte", DType::F32, &[4], normal(0.0, 1.0));
    let t = init_param(&p, 1234).unwrap();
    assert_eq!(t.data, PINNED_NORMAL);
    let u = param("wte", DType::F32, &[3], Init::Uniform { low: 0.0, high: 1.0 });
    assert_eq!(init_param(&u, 1234).unwrap().data, PINNED_UNIFORM);
    // And the same again.
    assert_eq!(init_param(&p, 1234).unwrap(), t);
    assert_ne!(init_param(&p, 1235).unwrap(), t);
}

const PINNED_NORMAL: [f64; 4] = [-0.4380374252796173, 0.5022559762001038, 0.8919540643692017, -0.36408448219299316];
const PINNED_UNIFORM: [f64; 3] = [0.3159700632095337, 0.7073460817337036, 0.8293177485466003];

#[test]
fn normal_statistics() {
    let p = param("w", DType::F32, &[100, 100], normal(0.5, 2.0));
    let t = init_param(&p, 0).unwrap();
    let (mean, std) = mean_std(&t.data);
    assert!((mean - 0.5).abs() < 0.06, "mean {mean}");
    assert!((std - 2.0).abs() < 0.06, "std {std}");
    let within = t.data.iter().filter(|x| (*x - 0.5).abs() < 2.0).count() as f64 / 1e4;
    assert!((within - 0.6827).abs() < 0.02, "one-sigma fraction {within}");
}

#[test]
fn uniform_statistics() {
    let p = param("w", DType::F32, &[10_000], Init::Uniform { low: -1.0, high: 3.0 });
    let t = init_param(&p, 3).unwrap();
    assert!(t.data.iter().all(|&x| (-1.0..3.0).contains(&x)));
    let (mean, std) = mean_std(&t.data);
    assert!((mean - 1.0).abs() < 0.05, "mean {mean}");
    assert!((std - 4.0 / 12f64.sqrt()).abs() < 0.05, "std {std}");
}

#[test]
fn constants() {
    let p = param("g", DType::F32, &[2, 3], Init::Constant(1.0));
    assert_eq!(init_param(&p, 9).unwrap().data, vec![1.0; 6]);
    let p = param("g", DType::F16, &[2], Init::Constant(0.1));
    assert_eq!(init_param(&p, 9).unwrap().data, vec![half::f16::from_f64(0.1).to_f64(); 2]);
    let p = param("m", DType::Bool, &[2], Init::Constant(3.0));
    assert_eq!(init_param(&p, 9).unwrap().data, vec![1.0; 2]);
    let p = param("s", DType::F32, &[], Init::Uniform { low: 2.0, high: 2.0 });
    assert_eq!(init_param(&p, 9).unwrap().data, vec![2.0]);
}

#[test]
fn streams_depend_on_the_name_only() {
    let a = param("a", DType::F32, &[8], normal(0.0, 1.0));
    let b = param("b", DType::F32, &[8], normal(0.0, 1.0));
    let c = param("c", DType::F32, &[3, 3], normal(0.0, 1.0));
    let one = init_params(&module(vec![a.clone(), b.clone()]), 5).unwrap();
    let two = init_params(&module(vec![c, a.clone()]), 5).unwrap();
    assert_eq!(one[0], two[1], "adding or moving parameters changes nothing else");
    assert_ne!(one[0].data, one[1].data, "different names give different streams");
    // A longer tensor of the same name starts with the same values.
    let long = init_param(&param("a", DType::F32, &[16], normal(0.0, 1.0)), 5).unwrap();
    assert_eq!(long.data[..8], one[0].data[..]);
}

#[test]
fn stacked_layers_match_the_unrolled_names() {
    let s = stacked("blocks.attn.w", "blocks", DType::F32, &[3, 2, 2], normal(0.0, 1.0));
    let t = init_param(&s, 11).unwrap();
    assert_eq!(t.shape, vec![3, 2, 2]);
    for layer in 0..3 {
        let p = param(&format!("blocks.{layer}.attn.w"), DType::F32, &[2, 2], normal(0.0, 1.0));
        assert_eq!(init_param(&p, 11).unwrap().data[..], t.data[layer * 4..(layer + 1) * 4]);
    }
}

#[test]
fn values_are_rounded_to_the_dtype() {
    for dtype in [DType::F32, DType::F16, DType::BF16, DType::I32, DType::I64, DType::Bool] {
        let p = param("w", dtype, &[1000], normal(0.0, 10.0));
        let t = init_param(&p, 2).unwrap();
        assert_eq!(t.dtype, dtype);
        assert!(t.data.iter().all(|&x| dtype.round(x) == x), "{dtype}");
        if dtype != DType::Bool {
            let (_, std) = mean_std(&t.data);
            assert!(std > 8.0, "{dtype}: {std}");
        }
    }
    let t = init_param(&param("w", DType::F32, &[100], normal(0.0, 1.0)), 2).unwrap();
    assert!(t.data.iter().any(|&x| DType::BF16.round(x) != x), "f32 keeps more bits than bf16");
}

#[test]
fn invalid_initializers_are_errors() {
    let cases = [
        (normal(0.0, -1.0), "std >= 0"),
        (normal(f64::NAN, 1.0), "finite mean"),
        (Init::Uniform { low: 1.0, high: 0.0 }, "low <= high"),
        (Init::Uniform { low: 0.0, high: f64::INFINITY }, "finite bounds"),
    ];
    for (init, want) in cases {
        let msg = init_param(&param("w", DType::F32, &[2], init), 0).unwrap_err().to_string();
        assert!(msg.starts_with("parameter `w`: ") && msg.contains(want), "{msg}");
    }
    let sym = Param {
        name: "w".into(),
        ty: TensorType::new(DType::F32, vec![DimExpr::var("D")]),
        init: normal(0.0, 1.0),
        stack: None,
    };
    assert!(init_param(&sym, 0).unwrap_err().to_string().contains("symbolic"));
}
