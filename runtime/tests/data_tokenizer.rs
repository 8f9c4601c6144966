//! The byte-level BPE tokenizer: exact round trips, deterministic
//! training, compression, and its file format.

use kiln_runtime::data::{Tokenizer, DEFAULT_CORPUS};
use proptest::prelude::*;
use std::sync::OnceLock;

/// The tokenizer `kiln train models/gpt.kl` uses: the default corpus at
/// the GPT model's vocabulary size. Trained once per test binary.
fn corpus_tokenizer() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| Tokenizer::train(DEFAULT_CORPUS, 512).unwrap())
}

fn err(e: kiln_runtime::RuntimeError) -> String {
    e.to_string()
}

#[test]
fn reaches_the_requested_vocabulary() {
    let t = corpus_tokenizer();
    assert_eq!(t.vocab_size(), 512);
    assert_eq!(t.merges().len(), 512 - Tokenizer::BYTE_TOKENS);
}

#[test]
fn ids_below_256_are_the_bytes_and_merges_number_the_rest() {
    let t = corpus_tokenizer();
    for b in 0..=255u8 {
        assert_eq!(t.token_bytes(b as u32), Some(&[b][..]));
    }
    for (k, &(a, b)) in t.merges().iter().enumerate() {
        let joined = [t.token_bytes(a).unwrap(), t.token_bytes(b).unwrap()].concat();
        assert_eq!(t.token_bytes(256 + k as u32), Some(&joined[..]), "merge {k}");
    }
    assert_eq!(t.token_bytes(512), None);
}

#[test]
fn the_default_corpus_round_trips_and_compresses() {
    let t = corpus_tokenizer();
    let ids = t.encode(DEFAULT_CORPUS).unwrap();
    assert_eq!(t.decode(&ids).unwrap(), DEFAULT_CORPUS);
    let (tokens, bytes) = (ids.len(), DEFAULT_CORPUS.len());
    // 256 merges learned on English prose shorten it to well under half.
    assert!(tokens * 2 < bytes, "{tokens} tokens for {bytes} bytes");
    assert!(ids.iter().all(|&id| (id as usize) < t.vocab_size()));
}

#[test]
fn a_text_over_a_megabyte_round_trips() {
    // Long texts are encoded in pieces, in parallel; the pieces must join
    // seamlessly.
    let t = corpus_tokenizer();
    let big = DEFAULT_CORPUS.repeat(10);
    let ids = t.encode(&big).unwrap();
    assert_eq!(t.decode(&ids).unwrap(), big);
    assert_eq!(ids.len(), 10 * t.encode(DEFAULT_CORPUS).unwrap().len());
}

#[test]
fn training_is_deterministic() {
    let a = Tokenizer::train(DEFAULT_CORPUS, 512).unwrap();
    let b = Tokenizer::train(DEFAULT_CORPUS, 512).unwrap();
    assert_eq!(a.merges(), b.merges());
    assert_eq!(a.merges(), corpus_tokenizer().merges());
    assert_eq!(a.to_json().unwrap(), b.to_json().unwrap());
}

#[test]
fn a_smaller_vocabulary_learns_a_prefix_of_the_merges() {
    // Greedy BPE picks the same pairs in the same order whatever the
    // target size; only where it stops differs.
    let small = Tokenizer::train(DEFAULT_CORPUS, 300).unwrap();
    assert_eq!(small.merges(), &corpus_tokenizer().merges()[..44]);
}

#[test]
fn frequent_words_become_single_tokens() {
    let t = Tokenizer::train(&"the cat and the hat and the bat\n".repeat(50), 280).unwrap();
    assert_eq!(t.encode(" the").unwrap().len(), 1);
    // One token per word, and the newline.
    assert_eq!(t.encode("the cat and the hat and the bat\n").unwrap().len(), 9);
    // An unseen word still encodes, byte by byte if need be.
    let ids = t.encode("zyxq").unwrap();
    assert_eq!(ids, [b'z' as u32, b'y' as u32, b'x' as u32, b'q' as u32]);
}

#[test]
fn a_text_with_few_pairs_gives_a_smaller_vocabulary() {
    let t = Tokenizer::train("abab", 1000).unwrap();
    assert_eq!(t.vocab_size(), 256 + t.merges().len());
    assert!(t.vocab_size() < 1000);
    assert_eq!(t.decode(&t.encode("abab").unwrap()).unwrap(), "abab");
    let empty = Tokenizer::train("", 512).unwrap();
    assert_eq!(empty.vocab_size(), 256);
    assert_eq!(empty.encode("hé").unwrap(), [b'h' as u32, 0xC3, 0xA9]);
}

#[test]
fn edge_strings_round_trip() {
    let t = corpus_tokenizer();
    for s in [
        "",
        " ",
        "\n",
        "  leading and trailing  ",
        "tabs\tand\r\nwindows lines\r\n",
        "\u{0}\u{1}\u{7f} controls",
        "héllo wörld, naïve café",
        "日本語のテキスト",
        "emoji 🦀🔥 and ZWJ 👩‍👩‍👧",
        "it's they're we've I'm you'll he'd",
        "1234567890 3.14159 -42",
        "\u{feff}BOM and \u{200b}zero width",
        "   \n\n\n   \t\t",
    ] {
        let ids = t.encode(s).unwrap();
        assert_eq!(t.decode(&ids).unwrap(), s, "{s:?}");
    }
}

#[test]
fn decoding_checks_ids_and_replaces_broken_characters() {
    let t = corpus_tokenizer();
    let e = err(t.decode(&[104, 105, 512]).unwrap_err());
    assert_eq!(e, "token id 512 at position 2 is out of range: the vocabulary has 512 tokens");
    // Half of "é" (0xC3 0xA9) is not text.
    assert_eq!(t.decode(&[b'a' as u32, 0xC3]).unwrap(), "a\u{fffd}");
    assert_eq!(t.decode_bytes(&[0xC3, 0xA9]).unwrap(), "é".as_bytes());
}

#[test]
fn a_vocabulary_below_256_is_refused() {
    let e = err(Tokenizer::train("text", 255).unwrap_err());
    assert_eq!(
        e,
        "tokenizer vocabulary size 255 is out of range: it must be at least 256 (one token per byte) and at most 1048576"
    );
    // Refused before the trainer allocates tables of that size.
    assert!(err(Tokenizer::train("text", usize::MAX).unwrap_err()).contains("out of range"));
}

#[test]
fn save_and_load_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    let t = corpus_tokenizer();
    t.save(&path).unwrap();
    let u = Tokenizer::load(&path).unwrap();
    assert_eq!(u.merges(), t.merges());
    assert_eq!(u.vocab_size(), t.vocab_size());
    assert_eq!(u.to_json().unwrap(), t.to_json().unwrap());
    let sample = &DEFAULT_CORPUS[..4000.min(DEFAULT_CORPUS.len())];
    assert_eq!(u.encode(sample).unwrap(), t.encode(sample).unwrap());
    // The atomic write leaves no temporary file behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn the_file_is_huggingface_tokenizer_json() {
    let v: serde_json::Value = serde_json::from_str(&corpus_tokenizer().to_json().unwrap()).unwrap();
    assert_eq!(v["model"]["type"], "BPE");
    assert_eq!(v["pre_tokenizer"]["type"], "ByteLevel");
    assert_eq!(v["decoder"]["type"], "ByteLevel");
    assert_eq!(v["model"]["vocab"]["Ġ"], 32, "byte 32 (space) is spelled Ġ and has id 32");
    assert_eq!(v["model"]["merges"].as_array().unwrap().len(), 256);
}

/// The tokenizer's JSON with `edit` applied, loaded back.
fn load_edited(edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut v: serde_json::Value = serde_json::from_str(&corpus_tokenizer().to_json().unwrap()).unwrap();
    edit(&mut v);
    err(Tokenizer::from_json(&v.to_string(), "tok.json").unwrap_err())
}

#[test]
fn files_that_would_not_round_trip_are_refused() {
    let p = "tok.json: not a byte-level BPE tokenizer: ";
    assert_eq!(
        load_edited(|v| v["normalizer"] = serde_json::json!({"type": "Lowercase"})),
        format!("{p}it has a normalizer, which would change the text before encoding")
    );
    assert_eq!(
        load_edited(|v| v["pre_tokenizer"]["add_prefix_space"] = true.into()),
        format!("{p}its pre-tokenizer adds a prefix space")
    );
    assert_eq!(
        load_edited(|v| v["pre_tokenizer"] = serde_json::json!({"type": "Whitespace"})),
        format!("{p}its pre-tokenizer is Whitespace, not ByteLevel")
    );
    assert_eq!(
        load_edited(|v| v["added_tokens"] = serde_json::json!([{"id": 0, "content": "<s>"}])),
        format!("{p}it has added (special) tokens")
    );
    let e = load_edited(|v| {
        v["model"]["vocab"].as_object_mut().unwrap().remove("Ġ");
    });
    assert!(
        e.starts_with(&format!("{p}token ")) && e.ends_with("has id 511, but ids must be 0 to 510 (one per token)"),
        "{e}"
    );
    assert_eq!(
        load_edited(|v| v["model"]["merges"][3] = serde_json::json!(["Ġ", "nope"])),
        format!("{p}merge 3 names \"nope\", which is not a token")
    );
    assert_eq!(
        load_edited(|v| v["model"]["merges"][3] = v["model"]["merges"][0].clone()),
        format!("{p}merge 3 repeats an earlier merge")
    );
    assert_eq!(load_edited(|v| v["model"]["type"] = "WordPiece".into()), format!("{p}its model is WordPiece, not BPE"));
}

#[test]
fn unreadable_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent.json");
    let e = err(Tokenizer::load(&missing).unwrap_err());
    assert!(e.starts_with(&format!("cannot read `{}`", missing.display())), "{e}");
    let garbage = dir.path().join("garbage.json");
    std::fs::write(&garbage, "{ not json").unwrap();
    let e = err(Tokenizer::load(&garbage).unwrap_err());
    assert!(e.starts_with(&format!("{}: not a valid tokenizer file: ", garbage.display())), "{e}");
}

#[test]
fn older_files_with_string_merges_load() {
    let t = corpus_tokenizer();
    let mut v: serde_json::Value = serde_json::from_str(&t.to_json().unwrap()).unwrap();
    let merges: Vec<serde_json::Value> = v["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| format!("{} {}", m[0].as_str().unwrap(), m[1].as_str().unwrap()).into())
        .collect();
    v["model"]["merges"] = merges.into();
    let u = Tokenizer::from_json(&v.to_string(), "old.json").unwrap();
    assert_eq!(u.merges(), t.merges());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_string_round_trips(s in any::<String>()) {
        let t = corpus_tokenizer();
        prop_assert_eq!(t.decode(&t.encode(&s).unwrap()).unwrap(), s);
    }

    /// Text close to the corpus exercises the learned merges.
    #[test]
    fn prose_like_strings_round_trip(s in "([A-Za-z]{1,8}|[ \n\t]{1,3}|[.,;:!?'\"()-]|[0-9]{1,4}|é|ß|中|🦀){0,64}") {
        let t = corpus_tokenizer();
        prop_assert_eq!(t.decode(&t.encode(&s).unwrap()).unwrap(), s);
    }

    /// Any slice of the corpus on character boundaries round-trips.
    #[test]
    fn corpus_slices_round_trip(start in 0usize..100_000, len in 0usize..3000) {
        let text = DEFAULT_CORPUS;
        let floor = |mut i: usize| { i = i.min(text.len()); while !text.is_char_boundary(i) { i -= 1; } i };
        let (a, b) = (floor(start), floor(start + len));
        let s = &text[a..b];
        let t = corpus_tokenizer();
        prop_assert_eq!(t.decode(&t.encode(s).unwrap()).unwrap(), s);
    }
}
