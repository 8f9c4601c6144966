//! No input makes the front end panic: random token soups and mutated
//! models are checked end to end (parse, check, lower, verify).

use kiln_lang::compile_source;
use kiln_tests::repo_root;
use proptest::prelude::*;
use std::path::Path;

const WORDS: &[&str] = &[
    "config", "dim", "layer", "param", "fn", "pub", "let", "return", "scan", "in", "over", "with", "next", "emit",
    "where", "and", "or", "not", "einsum", "rearrange", "f32", "i32", "bool", "x", "y", "B", "T", "S", "n", "d",
    "softmax", "sum", "mean", "transpose", "reshape", "concat", "split", "tril", "cross_entropy", "layernorm", "(",
    ")", "[", "]", "{", "}", ",", ":", ".", "...", "=", "==", "<=", "+", "-", "*", "/", "%", "@", "**", "->", "0",
    "1", "3", "-1", "2.5", "\"a.kl\"", "\n",
];

fn compile(text: String) {
    // The result does not matter; only that it returns.
    let _ = compile_source(Path::new("fuzz.kl"), text);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn token_soup_never_panics(words in prop::collection::vec(prop::sample::select(WORDS), 0..80)) {
        compile(words.join(" "));
    }

    #[test]
    fn mutated_models_never_panic(which in 0usize..2, at in any::<prop::sample::Index>(), len in 0usize..40,
                                  insert in prop::collection::vec(prop::sample::select(WORDS), 0..6)) {
        let name = ["models/gpt.kl", "models/mlp.kl"][which];
        let src = std::fs::read_to_string(repo_root().join(name)).expect("model");
        let mut cut = at.index(src.len());
        while !src.is_char_boundary(cut) { cut -= 1; }
        let mut end = (cut + len).min(src.len());
        while !src.is_char_boundary(end) { end -= 1; }
        let mutated = format!("{}{}{}", &src[..cut], insert.join(" "), &src[end..]);
        compile(mutated);
    }
}

#[test]
fn every_prefix_of_gpt_is_handled() {
    let src = std::fs::read_to_string(repo_root().join("models/gpt.kl")).expect("model");
    let bounds: Vec<usize> = (0..=src.len()).filter(|&i| src.is_char_boundary(i)).step_by(7).collect();
    for i in bounds {
        compile(src[..i].to_string());
    }
}
