//! The data pipeline: packing, the train/validation split and its
//! deduplication, seeded batches, resumable state, and the errors a user
//! sees for a missing, empty or too small corpus.

use kiln_ir::DType;
use kiln_runtime::data::{BatchState, Dataset, Tokenizer, DEFAULT_CORPUS, DEFAULT_CORPUS_NAME};
use kiln_runtime::Tensor;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::OnceLock;

fn tokenizer() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| Tokenizer::train(DEFAULT_CORPUS, 512).unwrap())
}

/// The default corpus at the GPT model's block size.
fn corpus() -> &'static Dataset {
    static D: OnceLock<Dataset> = OnceLock::new();
    D.get_or_init(|| Dataset::from_text(DEFAULT_CORPUS, DEFAULT_CORPUS_NAME, tokenizer(), 256).unwrap())
}

fn ints(t: &Tensor) -> Vec<u32> {
    t.data.iter().map(|&x| x as u32).collect()
}

fn err<T: std::fmt::Debug>(r: Result<T, kiln_runtime::RuntimeError>) -> String {
    r.unwrap_err().to_string()
}

/// Tokens `0, 1, ..., n - 1`.
fn count_to(n: u32) -> Vec<u32> {
    (0..n).collect()
}

#[test]
fn packing_by_hand() {
    // 11 tokens, block 3: sequences start every 3 tokens and hold 4, so
    // [0 1 2 3] [3 4 5 6] [6 7 8 9]; token 10 is left over. One of three
    // sequences (a tenth, rounded up) validates.
    let d = Dataset::from_tokens(&count_to(11), "hand", 3).unwrap();
    assert_eq!((d.num_tokens(), d.block(), d.train_len(), d.valid_len()), (11, 3, 2, 1));
    assert_eq!(d.train_sequence(0), Some(&[0, 1, 2, 3][..]));
    assert_eq!(d.train_sequence(1), Some(&[3, 4, 5, 6][..]));
    assert_eq!(d.train_sequence(2), None);
    assert_eq!(d.valid_sequence(0), Some(&[6, 7, 8, 9][..]));

    let (x, y) = d.batches(0).next_batch(2).unwrap();
    assert_eq!((x.dtype, y.dtype), (DType::I32, DType::I32));
    assert_eq!((x.shape.clone(), y.shape.clone()), (vec![2, 3], vec![2, 3]));
    let mut rows: Vec<(Vec<u32>, Vec<u32>)> =
        ints(&x).chunks(3).map(<[u32]>::to_vec).zip(ints(&y).chunks(3).map(<[u32]>::to_vec)).collect();
    rows.sort();
    assert_eq!(rows, [(vec![0, 1, 2], vec![1, 2, 3]), (vec![3, 4, 5], vec![4, 5, 6])]);

    let v: Vec<(Tensor, Tensor)> = d.valid_batches(8).unwrap().collect();
    assert_eq!(v.len(), 1);
    assert_eq!((ints(&v[0].0), ints(&v[0].1)), (vec![6, 7, 8], vec![7, 8, 9]));
}

#[test]
fn the_smallest_corpus_has_one_sequence_each() {
    let d = Dataset::from_tokens(&count_to(9), "min", 4).unwrap();
    assert_eq!((d.train_len(), d.valid_len()), (1, 1));
    assert_eq!(d.train_sequence(0), Some(&[0, 1, 2, 3, 4][..]));
    assert_eq!(d.valid_sequence(0), Some(&[4, 5, 6, 7, 8][..]));
}

#[test]
fn a_tenth_of_the_sequences_validate() {
    let d = Dataset::from_tokens(&count_to(1001), "t", 10).unwrap();
    assert_eq!((d.train_len(), d.valid_len()), (90, 10));
    // The split is the end of the corpus, in order.
    assert_eq!(d.valid_sequence(0).unwrap()[0], 900);
    assert_eq!(d.valid_sequence(9).unwrap()[10], 1000);
}

#[test]
fn targets_are_inputs_shifted_by_one_in_every_batch() {
    let d = corpus();
    let mut it = d.batches(7);
    for _ in 0..5 {
        let (x, y) = it.next_batch(4).unwrap();
        assert_eq!(x.shape, [4, 256]);
        for (xr, yr) in ints(&x).chunks(256).zip(ints(&y).chunks(256)) {
            assert_eq!(&xr[1..], &yr[..255]);
            // The row is one of the training sequences, whole.
            let row: Vec<u32> = xr.iter().chain(&yr[255..]).copied().collect();
            assert!((0..d.train_len()).any(|i| d.train_sequence(i) == Some(&row[..])));
        }
    }
}

#[test]
fn the_default_corpus_makes_a_usable_dataset() {
    let d = corpus();
    assert!(d.train_len() >= 100, "{} training sequences", d.train_len());
    assert!(d.valid_len() >= 10, "{} validation sequences", d.valid_len());
    assert_eq!(d.duplicates_dropped(), 0);
    // The shipped file is the text built into the binary.
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/tiny-corpus.txt");
    let f = Dataset::from_file(&path, tokenizer(), 256).unwrap();
    assert_eq!((f.train_len(), f.valid_len()), (d.train_len(), d.valid_len()));
}

#[test]
fn validation_shares_no_sequence_with_training() {
    let d = corpus();
    let train: HashSet<&[u32]> = (0..d.train_len()).map(|i| d.train_sequence(i).unwrap()).collect();
    for i in 0..d.valid_len() {
        assert!(!train.contains(d.valid_sequence(i).unwrap()), "validation sequence {i}");
    }
}

#[test]
fn validation_copies_of_training_sequences_are_dropped() {
    // Block 2, 41 tokens: 20 sequences, the last 2 validate. The last one
    // repeats the first training sequence [0 1 2].
    let mut tokens = count_to(41);
    tokens[38..41].copy_from_slice(&[0, 1, 2]);
    let d = Dataset::from_tokens(&tokens, "rep", 2).unwrap();
    assert_eq!((d.train_len(), d.valid_len(), d.duplicates_dropped()), (18, 1, 1));
    assert_eq!(d.valid_sequence(0), Some(&[36, 37, 0][..]));

    // When every validation sequence is a copy, nothing is left to measure.
    let e = err(Dataset::from_tokens(&[5, 6, 5, 6, 5, 6, 5], "loop", 2));
    assert_eq!(
        e,
        "corpus `loop`: every validation sequence of block size 2 also appears in the training data, so nothing is left to validate on; use a larger or less repetitive corpus"
    );
}

/// The first `n` batches of `size` from `seed`.
fn draw(d: &Dataset, seed: u64, size: usize, n: usize) -> Vec<(Tensor, Tensor)> {
    let mut it = d.batches(seed);
    (0..n).map(|_| it.next_batch(size).unwrap()).collect()
}

#[test]
fn the_same_seed_deals_the_same_batches() {
    let d = corpus();
    // Well past the first epoch.
    let n = 2 * d.train_len() / 8 + 3;
    assert_eq!(draw(d, 1, 8, n), draw(d, 1, 8, n));
    assert_ne!(draw(d, 1, 8, n), draw(d, 2, 8, n));
}

#[test]
fn each_epoch_deals_every_sequence_once_in_a_new_order() {
    let d = Dataset::from_tokens(&count_to(2001), "t", 10).unwrap();
    let mut it = d.batches(3);
    let mut epochs = Vec::new();
    for e in 0..3 {
        assert_eq!((it.epoch(), it.position()), (e, 0));
        let firsts: Vec<u32> = (0..d.train_len()).map(|_| ints(&it.next_batch(1).unwrap().0)[0]).collect();
        let mut sorted = firsts.clone();
        sorted.sort();
        assert_eq!(sorted, (0..d.train_len() as u32).map(|k| k * 10).collect::<Vec<_>>());
        epochs.push(firsts);
    }
    assert_ne!(epochs[0], epochs[1]);
    assert_ne!(epochs[1], epochs[2]);
    // Batches run on from one epoch into the next.
    let mut it = d.batches(3);
    let (x, _) = it.next_batch(d.train_len() + 5).unwrap();
    assert_eq!(x.shape, [d.train_len() + 5, 10]);
    assert_eq!((it.epoch(), it.position()), (1, 5));
}

#[test]
fn a_saved_state_resumes_bit_identically() {
    let d = corpus();
    for (skip, size) in [(0, 3), (5, 7), (d.train_len() / 7, 7), (2 * d.train_len() / 5 + 1, 5)] {
        let mut it = d.batches(42);
        for _ in 0..skip {
            it.next_batch(size).unwrap();
        }
        // Through JSON text, as a checkpoint stores it.
        let text = it.state().to_json().to_string();
        let state = BatchState::from_json(&serde_json::from_str(&text).unwrap()).unwrap();
        assert_eq!(state, it.state());
        let mut resumed = d.resume(&state).unwrap();
        for _ in 0..40 {
            assert_eq!(resumed.next_batch(size).unwrap(), it.next_batch(size).unwrap());
        }
        assert_eq!(resumed.state(), it.state());
    }
}

#[test]
fn state_json_is_plain() {
    let mut it = corpus().batches(u64::MAX);
    it.next_batch(3).unwrap();
    let v = it.state().to_json();
    assert_eq!(v["seed"], u64::MAX);
    assert_eq!((v["epoch"].as_u64(), v["position"].as_u64()), (Some(0), Some(3)));
    assert_eq!(v["fingerprint"].as_str().unwrap().len(), 16);
}

#[test]
fn a_state_for_other_data_is_refused() {
    let d = corpus();
    let state = d.batches(1).state();
    let other = Dataset::from_text(DEFAULT_CORPUS, DEFAULT_CORPUS_NAME, tokenizer(), 128).unwrap();
    let e = err(other.resume(&state));
    assert!(e.starts_with("the saved data position is for other training data"), "{e}");
    assert!(e.ends_with("was the corpus, tokenizer or block size changed?"), "{e}");

    let past = BatchState { position: d.train_len(), ..state };
    let e = err(d.resume(&past));
    assert_eq!(
        e,
        format!("the saved data position {} is past the end of an epoch of {} sequences", d.train_len(), d.train_len())
    );

    let e = err(BatchState::from_json(&serde_json::json!({"seed": 1, "epoch": -1})));
    assert_eq!(e, "saved data position: `fingerprint` is missing or not a hex string");
    let mut v = state.to_json();
    v["epoch"] = (-1).into();
    assert_eq!(err(BatchState::from_json(&v)), "saved data position: `epoch` is missing or not a non-negative integer");
}

#[test]
fn validation_batches_cover_the_set_in_order() {
    let d = corpus();
    let batches: Vec<(Tensor, Tensor)> = d.valid_batches(4).unwrap().collect();
    assert_eq!(batches.len(), d.valid_len().div_ceil(4));
    let rows: usize = batches.iter().map(|(x, _)| x.shape[0]).sum();
    assert_eq!(rows, d.valid_len());
    let last = d.valid_sequence(d.valid_len() - 1).unwrap();
    let (x, y) = batches.last().unwrap();
    assert_eq!(ints(x)[x.data.len() - 256..], last[..256]);
    assert_eq!(ints(y)[y.data.len() - 256..], last[1..]);
}

#[test]
fn zero_sizes_are_refused() {
    let d = corpus();
    assert_eq!(err(d.batches(0).next_batch(0)), "batch size must be at least 1");
    let e = err(d.batches(0).next_batch(usize::MAX));
    assert!(e.starts_with(&format!("batch size {} is too large", usize::MAX)), "{e}");
    assert_eq!(err(d.valid_batches(0).map(|_| ())), "batch size must be at least 1");
    assert_eq!(err(Dataset::from_tokens(&count_to(100), "t", 0)), "block size must be at least 1");
}

#[test]
fn corpus_errors_are_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let t = tokenizer();

    let missing = dir.path().join("missing.txt");
    let e = err(Dataset::from_file(&missing, t, 256));
    assert_eq!(e, format!("cannot read `{}`: No such file or directory", missing.display()));

    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let e = err(Dataset::from_file(&empty, t, 256));
    assert_eq!(e, format!("corpus `{}` is empty: there is no text to train on", empty.display()));

    let tiny = dir.path().join("tiny.txt");
    std::fs::write(&tiny, "A corpus of one short sentence.\n").unwrap();
    let n = t.encode("A corpus of one short sentence.\n").unwrap().len();
    let e = err(Dataset::from_file(&tiny, t, 256));
    assert_eq!(
        e,
        format!(
            "corpus `{}` is too small for block size 256: it has {n} tokens, but one training and one validation sequence need at least 513",
            tiny.display()
        )
    );

    let binary = dir.path().join("binary.txt");
    std::fs::write(&binary, b"text, then \xff\xfe").unwrap();
    let e = err(Dataset::from_file(&binary, t, 4));
    assert_eq!(e, format!("corpus `{}` is not UTF-8 text: invalid bytes at offset 11", binary.display()));

    assert_eq!(err(Dataset::from_tokens(&[], "none", 4)), "corpus `none` is empty: there is no text to train on");
    assert_eq!(
        err(Dataset::from_tokens(&count_to(8), "eight", 4)),
        "corpus `eight` is too small for block size 4: it has 8 tokens, but one training and one validation sequence need at least 9"
    );
    // A block too large to add one to is just too large, not a crash.
    let e = err(Dataset::from_tokens(&count_to(8), "huge", usize::MAX));
    assert!(e.contains("need at least 18446744073709551615"), "{e}");
}
