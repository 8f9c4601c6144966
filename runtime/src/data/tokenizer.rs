//! A byte-level BPE tokenizer: trained on a corpus to a target vocabulary
//! size, it turns any UTF-8 text into token ids and back, exactly.
//!
//! It is HuggingFace's [`tokenizers`] crate, configured as GPT-2 is: the
//! `ByteLevel` pre-tokenizer splits text into chunks (words with their
//! leading space, runs of digits, of punctuation, of whitespace) and spells
//! every byte as one printable character, and a BPE model merges adjacent
//! tokens by rank. The crate builds without its default features: the
//! pre-tokenizer's regex is `fancy-regex` (pure Rust), so no C library is
//! compiled. Its `BpeTrainer` learns the merges, most frequent pair first;
//! ties between equally frequent pairs go by a fixed order of the pairs
//! (never by hash-map order), so training the same text to the same size
//! gives the same merges every time, in every process.
//!
//! Kiln then renumbers the vocabulary so that it reads as a BPE table: ids
//! `0..256` are the single bytes (id `b` is byte `b`) and id `256 + k` is
//! the token the `k`-th merge made. Every byte is a token, there is no
//! normalizer and no unknown token, so `decode(encode(s)) == s` for every
//! string.
//!
//! The tokenizer is saved as HuggingFace's `tokenizer.json`, which Python's
//! `tokenizers.Tokenizer.from_file` also reads. [`Tokenizer::load`] takes
//! any such file that keeps these guarantees and refuses the others (a
//! normalizer, added tokens, a prefix space, ...) with a one-line error.

use crate::{fsutil, RuntimeError};
use rayon::prelude::*;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{BpeTrainer, Vocab, BPE};
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::processors::PostProcessorWrapper;
use tokenizers::{AddedToken, TokenizerImpl};

/// HuggingFace's tokenizer with a BPE model and Kiln's pipeline.
type Inner = TokenizerImpl<BPE, NormalizerWrapper, PreTokenizerWrapper, PostProcessorWrapper, DecoderWrapper>;

/// Texts longer than this are encoded (and trained on) in pieces of about
/// this size, in parallel, so a large corpus never becomes one huge
/// HuggingFace `Encoding` (which keeps a string and offsets per token).
const CHUNK_BYTES: usize = 1 << 20;

/// The largest vocabulary Kiln trains or loads. Real tokenizers stay far
/// below it (GPT-4's has about 100,000 tokens); the trainer allocates
/// tables of this size up front, so an absurd request must not reach it.
const MAX_VOCAB: usize = 1 << 20;

/// A trained byte-level BPE tokenizer (see the module docs).
#[derive(Clone)]
pub struct Tokenizer {
    inner: Inner,
    /// The bytes each id stands for, indexed by id.
    pieces: Vec<Vec<u8>>,
    /// The merges as id pairs, highest priority first.
    merges: Vec<(u32, u32)>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer").field("vocab_size", &self.vocab_size()).field("merges", &self.merges.len()).finish()
    }
}

impl Tokenizer {
    /// The number of single-byte tokens, ids `0..256`.
    pub const BYTE_TOKENS: usize = 256;

    /// Learns merges from `text`, most frequent adjacent pair first, until
    /// the vocabulary has `vocab_size` tokens (256 bytes plus
    /// `vocab_size - 256` merges) or no pair is left to merge: a small text
    /// may give a smaller vocabulary, which [`Tokenizer::vocab_size`]
    /// reports. Deterministic: the same text and size give the same merges.
    pub fn train(text: &str, vocab_size: usize) -> Result<Tokenizer, RuntimeError> {
        if !(Self::BYTE_TOKENS..=MAX_VOCAB).contains(&vocab_size) {
            return Err(RuntimeError::Invalid(format!(
                "tokenizer vocabulary size {vocab_size} is out of range: it must be at least {} (one token per byte) and at most {MAX_VOCAB}",
                Self::BYTE_TOKENS
            )));
        }
        let mut trainer = BpeTrainer::builder()
            .vocab_size(vocab_size)
            .show_progress(false)
            .special_tokens(Vec::<AddedToken>::new())
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build();
        let mut hf = pipeline(BPE::default());
        // The trainer sees the same pieces `encode` does (see `chunks`).
        hf.train(&mut trainer, chunks(text, CHUNK_BYTES).into_iter())
            .map_err(|e| internal(format!("training failed: {e}")))?;
        // The trainer numbers tokens its own way (alphabet by character,
        // then merges); only its merge list, in rank order, is kept.
        let trained = serde_json::to_value(hf.get_model())
            .map_err(|e| internal(format!("cannot read the trained model: {e}")))?;
        let Some(list) = trained.get("merges").and_then(Value::as_array) else {
            return Err(internal("the trained model has no merge list".into()));
        };
        let mut pieces: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        let mut ids: HashMap<Vec<u8>, u32> = pieces.iter().enumerate().map(|(i, p)| (p.clone(), i as u32)).collect();
        let mut merges = Vec::with_capacity(list.len());
        for m in list {
            let pair = merge_pair(m).ok_or_else(|| internal(format!("unexpected merge {m} in the trained model")))?;
            let mut id_of = |s: &str| -> Result<u32, RuntimeError> {
                let bytes = unspell(s).ok_or_else(|| internal(format!("trained token {s:?} is not byte-level")))?;
                Ok(*ids.entry(bytes.clone()).or_insert_with(|| {
                    pieces.push(bytes);
                    (pieces.len() - 1) as u32
                }))
            };
            let (a, b) = (id_of(pair.0)?, id_of(pair.1)?);
            id_of(&format!("{}{}", pair.0, pair.1))?;
            merges.push((a, b));
        }
        Tokenizer::from_parts(pieces, merges)
            .map_err(|why| internal(format!("the trained tokenizer is inconsistent: {why}")))
    }

    /// How many tokens there are: ids are `0..vocab_size()`.
    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    /// The merges as pairs of token ids, highest priority (learned first)
    /// first.
    pub fn merges(&self) -> &[(u32, u32)] {
        &self.merges
    }

    /// The bytes token `id` stands for, or `None` if there is no such token.
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        self.pieces.get(id as usize).map(Vec::as_slice)
    }

    /// The token ids of `text`. Every string can be encoded; the `Result`
    /// only carries a failure inside the tokenizer library, which would be
    /// a bug.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, RuntimeError> {
        self.encode_in_chunks(text, CHUNK_BYTES)
    }

    /// [`Tokenizer::encode`] with pieces of about `chunk` bytes.
    fn encode_in_chunks(&self, text: &str, chunk: usize) -> Result<Vec<u32>, RuntimeError> {
        let parts: Vec<Vec<u32>> = chunks(text, chunk)
            .into_par_iter()
            .map(|c| {
                self.inner
                    .encode_fast(c, false)
                    .map(|e| e.get_ids().to_vec())
                    .map_err(|e| internal(format!("encoding failed: {e}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(parts.concat())
    }

    /// The bytes `ids` stand for; an error names the first id that is not
    /// a token.
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>, RuntimeError> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        for (i, &id) in ids.iter().enumerate() {
            let piece = self.token_bytes(id).ok_or_else(|| {
                RuntimeError::Invalid(format!(
                    "token id {id} at position {i} is out of range: the vocabulary has {} tokens",
                    self.vocab_size()
                ))
            })?;
            out.extend_from_slice(piece);
        }
        Ok(out)
    }

    /// The text `ids` stand for. Ids from [`Tokenizer::encode`] give back
    /// the exact text; an arbitrary sequence (say, sampled from a model)
    /// may cut a character's bytes apart, and each such broken sequence
    /// becomes U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> Result<String, RuntimeError> {
        let bytes = self.decode_bytes(ids)?;
        Ok(match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    /// The tokenizer as HuggingFace `tokenizer.json` text. Only a bug in
    /// the tokenizer library could make this fail.
    pub fn to_json(&self) -> Result<String, RuntimeError> {
        self.inner.to_string(true).map_err(|e| internal(format!("cannot serialize the tokenizer: {e}")))
    }

    /// Reads a tokenizer from `tokenizer.json` text; `source` names it in
    /// errors (a file name).
    pub fn from_json(json: &str, source: &str) -> Result<Tokenizer, RuntimeError> {
        let bad = |why: String| RuntimeError::Invalid(format!("{source}: not a byte-level BPE tokenizer: {why}"));
        let v: Value = serde_json::from_str(json)
            .map_err(|e| RuntimeError::Invalid(format!("{source}: not a valid tokenizer file: {e}")))?;
        check_pipeline(&v).map_err(bad)?;
        let (pieces, merges) = read_model(&v["model"]).map_err(bad)?;
        Tokenizer::from_parts(pieces, merges).map_err(bad)
    }

    /// Saves the tokenizer as `tokenizer.json` text, atomically (see
    /// [`crate::fsutil`]).
    pub fn save(&self, path: &Path) -> Result<(), RuntimeError> {
        fsutil::write_atomic(path, self.to_json()?.as_bytes())
    }

    /// Loads a tokenizer saved by [`Tokenizer::save`] (or by Python's
    /// `tokenizers`, if it is a plain byte-level BPE).
    pub fn load(path: &Path) -> Result<Tokenizer, RuntimeError> {
        let bytes = fsutil::read_file(path)?;
        let source = path.display().to_string();
        let text = std::str::from_utf8(&bytes)
            .map_err(|e| RuntimeError::Invalid(format!("{source}: not a valid tokenizer file: {e}")))?;
        Tokenizer::from_json(text, &source)
    }

    /// Builds the tokenizer from each id's bytes and the merges by rank.
    /// Checks what the rest of the module relies on: every byte is a token,
    /// no two ids spell the same bytes, and each merge joins two tokens into
    /// a third.
    fn from_parts(pieces: Vec<Vec<u8>>, merges: Vec<(u32, u32)>) -> Result<Tokenizer, String> {
        if pieces.len() > MAX_VOCAB {
            return Err(format!("it has {} tokens, more than the {MAX_VOCAB} Kiln supports", pieces.len()));
        }
        let mut vocab = Vocab::default();
        for (id, p) in pieces.iter().enumerate() {
            if p.is_empty() {
                return Err(format!("token {id} is empty"));
            }
            if vocab.insert(spell(p), id as u32).is_some() {
                return Err(format!("token {id} ({:?}) appears twice", String::from_utf8_lossy(p)));
            }
        }
        for b in 0..=255u8 {
            if !vocab.contains_key(&spell(&[b])) {
                return Err(format!("byte {b:#04x} has no token, so some text cannot be encoded"));
            }
        }
        let mut hf_merges = Vec::with_capacity(merges.len());
        let mut seen = std::collections::HashSet::new();
        for (rank, &(a, b)) in merges.iter().enumerate() {
            if !seen.insert((a, b)) {
                return Err(format!("merge {rank} repeats an earlier merge"));
            }
            let (Some(pa), Some(pb)) = (pieces.get(a as usize), pieces.get(b as usize)) else {
                return Err(format!("merge {rank} names a token id beyond the vocabulary"));
            };
            if !vocab.contains_key(&spell(&[pa.as_slice(), pb.as_slice()].concat())) {
                return Err(format!("merge {rank} makes a token that is not in the vocabulary"));
            }
            hf_merges.push((spell(pa), spell(pb)));
        }
        let model = BPE::builder().vocab_and_merges(vocab, hf_merges).build().map_err(|e| e.to_string())?;
        Ok(Tokenizer { inner: pipeline(model), pieces, merges })
    }
}

/// GPT-2's pipeline around `model`: byte-level pre-tokenizer and decoder,
/// nothing else.
fn pipeline(model: BPE) -> Inner {
    let mut hf = TokenizerImpl::new(model);
    // No prefix space (it would add a byte that decoding keeps); the regex
    // split is GPT-2's.
    hf.with_pre_tokenizer(Some(PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, false, true))));
    hf.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::new(false, false, true))));
    hf
}

/// Byte `b` spelled as GPT-2's printable character: printable Latin-1
/// bytes stand for themselves, the other 68 take U+0100 onwards in order.
fn byte_char(b: u8) -> char {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    if printable(b) {
        return char::from(b);
    }
    let n = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(0x100 + n).unwrap_or(char::REPLACEMENT_CHARACTER)
}

/// Bytes spelled with [`byte_char`].
fn spell(bytes: &[u8]) -> String {
    use std::sync::OnceLock;
    static TABLE: OnceLock<[char; 256]> = OnceLock::new();
    let table = TABLE.get_or_init(|| std::array::from_fn(|b| byte_char(b as u8)));
    bytes.iter().map(|&b| table[b as usize]).collect()
}

/// The bytes a byte-level spelling stands for, or `None` if a character
/// is not one of the 256.
fn unspell(s: &str) -> Option<Vec<u8>> {
    use std::sync::OnceLock;
    static TABLE: OnceLock<HashMap<char, u8>> = OnceLock::new();
    let table = TABLE.get_or_init(|| (0..=255u8).map(|b| (byte_char(b), b)).collect());
    s.chars().map(|c| table.get(&c).copied()).collect()
}

/// A merge as `["a", "b"]` (current format) or `"a b"` (older files).
fn merge_pair(m: &Value) -> Option<(&str, &str)> {
    match m {
        Value::Array(v) if v.len() == 2 => Some((v[0].as_str()?, v[1].as_str()?)),
        // Byte-level spelling has no plain space, so the split is unique.
        Value::String(s) => s.split_once(' '),
        _ => None,
    }
}

/// Splits `text` into pieces of at least about `target` bytes that encode,
/// one by one, exactly as the whole text does. A cut goes just before a
/// `\n` that follows a visible ASCII character: the GPT-2 pre-tokenizer
/// never puts a non-space and a following whitespace in one chunk, and it
/// looks only forward, so its chunks on either side of such a cut are the
/// same with or without the other side.
fn chunks(text: &str, target: usize) -> Vec<&str> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = start + target.max(1);
    while i < bytes.len() {
        if bytes[i] == b'\n' && bytes[i - 1].is_ascii_graphic() {
            out.push(&text[start..i]);
            start = i;
            i += target.max(1);
        } else {
            i += 1;
        }
    }
    if start < bytes.len() || out.is_empty() {
        out.push(&text[start..]);
    }
    out
}

/// Checks that the file's pipeline is the one [`pipeline`] builds, so the
/// tokenizer Kiln rebuilds from the model encodes as the file says.
fn check_pipeline(v: &Value) -> Result<(), String> {
    if !v.is_object() {
        return Err("the file is not a JSON object".into());
    }
    if !v["normalizer"].is_null() {
        return Err("it has a normalizer, which would change the text before encoding".into());
    }
    if v["added_tokens"].as_array().is_some_and(|a| !a.is_empty()) {
        return Err("it has added (special) tokens".into());
    }
    let pre = &v["pre_tokenizer"];
    if pre["type"] != "ByteLevel" {
        return Err(format!("its pre-tokenizer is {}, not ByteLevel", kind(pre)));
    }
    if pre["add_prefix_space"] == true {
        return Err("its pre-tokenizer adds a prefix space".into());
    }
    if pre["use_regex"] == false {
        return Err("its pre-tokenizer does not split with GPT-2's regex".into());
    }
    let model = &v["model"];
    if model["type"] != "BPE" {
        return Err(format!("its model is {}, not BPE", kind(model)));
    }
    if !model["dropout"].is_null() {
        return Err("its model uses BPE dropout".into());
    }
    for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
        if !(model[key].is_null() || model[key] == "") {
            return Err(format!("its model has a {key}"));
        }
    }
    for key in ["byte_fallback", "ignore_merges"] {
        if model[key] == true {
            return Err(format!("its model sets {key}"));
        }
    }
    Ok(())
}

/// What a pipeline component is, for messages.
fn kind(v: &Value) -> String {
    match &v["type"] {
        Value::String(s) => s.clone(),
        _ if v.is_null() => "missing".into(),
        _ => "of no known type".into(),
    }
}

/// Each id's bytes and the merges (as ids) from a BPE model's JSON.
type Parts = (Vec<Vec<u8>>, Vec<(u32, u32)>);

/// Reads the model's vocabulary (ids must be exactly `0..n`) and merges.
fn read_model(model: &Value) -> Result<Parts, String> {
    let vocab = model["vocab"].as_object().ok_or("its model has no vocabulary")?;
    let mut pieces: Vec<Option<Vec<u8>>> = vec![None; vocab.len()];
    let mut ids = HashMap::with_capacity(vocab.len());
    for (token, id) in vocab {
        let id = id.as_u64().filter(|&i| (i as usize) < pieces.len()).ok_or_else(|| {
            format!("token {token:?} has id {id}, but ids must be 0 to {} (one per token)", pieces.len() - 1)
        })?;
        let bytes = unspell(token).ok_or_else(|| format!("token {token:?} is not byte-level"))?;
        if pieces[id as usize].replace(bytes).is_some() {
            return Err(format!("two tokens have id {id}"));
        }
        ids.insert(token.as_str(), id as u32);
    }
    // `len` tokens with distinct ids below `len`: every slot is filled.
    let pieces: Vec<Vec<u8>> = pieces.into_iter().flatten().collect();
    let list = model["merges"].as_array().ok_or("its model has no merge list")?;
    let merges = list
        .iter()
        .enumerate()
        .map(|(rank, m)| {
            let (a, b) = merge_pair(m).ok_or_else(|| format!("merge {rank} is not a pair of tokens"))?;
            let id =
                |t: &str| ids.get(t).copied().ok_or_else(|| format!("merge {rank} names {t:?}, which is not a token"));
            Ok((id(a)?, id(b)?))
        })
        .collect::<Result<_, String>>()?;
    Ok((pieces, merges))
}

fn internal(message: String) -> RuntimeError {
    RuntimeError::Internal { site: "the tokenizer".into(), message }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tiny() -> &'static Tokenizer {
        use std::sync::OnceLock;
        static T: OnceLock<Tokenizer> = OnceLock::new();
        T.get_or_init(|| {
            let text = "the cat sat on the mat.\nthe dog ate the hat!\n  then  they slept\n\n".repeat(20);
            Tokenizer::train(&text, 300).unwrap()
        })
    }

    #[test]
    fn byte_spelling_is_gpt2s() {
        let ours: std::collections::HashSet<char> = (0..=255u8).map(byte_char).collect();
        let theirs: std::collections::HashSet<char> = ByteLevel::alphabet().into_iter().collect();
        assert_eq!(ours, theirs);
        assert_eq!(byte_char(b' '), 'Ġ');
        assert_eq!(byte_char(b'\n'), 'Ċ');
        assert_eq!(byte_char(0), 'Ā');
    }

    #[test]
    fn chunks_cover_the_text() {
        let text = "ab\ncd \n ef\ng\n";
        for target in 1..text.len() + 2 {
            assert_eq!(chunks(text, target).concat(), text);
        }
        assert_eq!(chunks("", 4), [""]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Chunked encoding is exactly the whole-text encoding.
        #[test]
        fn chunking_changes_nothing(text in "([a-z]{0,3}[ \n\t.!'0-9]{0,3}){0,40}", chunk in 1usize..24) {
            let t = tiny();
            let whole = t.inner.encode_fast(text.as_str(), false).unwrap().get_ids().to_vec();
            prop_assert_eq!(t.encode_in_chunks(&text, chunk).unwrap(), whole);
        }
    }
}
