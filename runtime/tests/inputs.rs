//! Random inputs: shapes from the signature, value ranges per dtype.

mod common;

use common::{function, sym};
use kiln_ir::{DType, DimExpr, Function};
use kiln_runtime::random_input;

fn f() -> Function {
    function(
        "forward",
        &[
            ("tokens", sym(DType::I32, &["B", "T"]), Some(DimExpr::var("V"))),
            ("x", sym(DType::F32, &["B", "T", "64"]), None),
            ("mask", sym(DType::Bool, &["T", "T"]), None),
            ("pos", sym(DType::I64, &["T"]), None),
            ("h", sym(DType::BF16, &["T"]), None),
        ],
        &["B", "T"],
    )
}

fn dims(n: &str) -> Option<i64> {
    match n {
        "B" => Some(4),
        "T" => Some(50),
        "V" => Some(7),
        _ => None,
    }
}

#[test]
fn integers_are_below_their_bound() {
    let t = random_input(&f(), 0, &dims, 1).unwrap();
    assert_eq!((t.dtype, t.shape.clone()), (DType::I32, vec![4, 50]));
    assert!(t.data.iter().all(|&x| x.fract() == 0.0 && (0.0..7.0).contains(&x)));
    for v in 0..7 {
        assert!(t.data.contains(&(v as f64)), "{v} never drawn");
    }
    // No bound: [0, 100).
    let p = random_input(&f(), 3, &dims, 1).unwrap();
    assert!(p.data.iter().all(|&x| x.fract() == 0.0 && (0.0..100.0).contains(&x)));
    assert!(p.data.iter().any(|&x| x >= 50.0));
}

#[test]
fn floats_are_standard_normal() {
    let t = random_input(&f(), 1, &dims, 1).unwrap();
    assert_eq!(t.shape, vec![4, 50, 64]);
    let n = t.data.len() as f64;
    let mean = t.data.iter().sum::<f64>() / n;
    let std = (t.data.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
    assert!(mean.abs() < 0.05 && (std - 1.0).abs() < 0.05, "{mean} {std}");
    assert!(t.data.iter().all(|&x| DType::F32.round(x) == x));
    let h = random_input(&f(), 4, &dims, 1).unwrap();
    assert!(h.data.iter().all(|&x| DType::BF16.round(x) == x));
}

#[test]
fn bools_are_a_fair_coin() {
    let t = random_input(&f(), 2, &dims, 1).unwrap();
    let ones = t.data.iter().filter(|&&x| x == 1.0).count();
    assert!(t.data.iter().all(|&x| x == 0.0 || x == 1.0));
    assert!((1100..1400).contains(&ones), "{ones} of 2500");
}

#[test]
fn deterministic_per_seed_and_name() {
    let a = random_input(&f(), 1, &dims, 9).unwrap();
    assert_eq!(a, random_input(&f(), 1, &dims, 9).unwrap());
    assert_ne!(a, random_input(&f(), 1, &dims, 10).unwrap());
    // The stream follows the argument's name, not its position.
    let g = function("g", &[("x", sym(DType::F32, &["B", "T", "64"]), None)], &["B", "T"]);
    assert_eq!(a, random_input(&g, 0, &dims, 9).unwrap());
}

#[test]
fn errors_name_the_input() {
    let msg = random_input(&f(), 1, &|n| (n == "B").then_some(2), 0).unwrap_err().to_string();
    assert_eq!(msg, "input `x`: dimension `T` is unbound");
    let msg = random_input(&f(), 0, &|n| if n == "V" { Some(0) } else { Some(2) }, 0).unwrap_err().to_string();
    assert_eq!(msg, "input `tokens`: the index bound is 0, which leaves no valid values");
    let msg = random_input(&f(), 0, &|n| if n == "V" { Some(1 << 40) } else { Some(2) }, 0).unwrap_err().to_string();
    assert_eq!(msg, "input `tokens`: the index bound 1099511627776 does not fit in i32");
    let msg = random_input(&f(), 9, &dims, 0).unwrap_err().to_string();
    assert_eq!(msg, "input `#9`: `forward` takes 5 inputs");
}
