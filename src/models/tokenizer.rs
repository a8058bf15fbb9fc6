//! Tokenizers for the text encoders, read from a Hugging Face `tokenizer.json`
//! (the `tokenizers` crate does the normalisation and BPE / WordPiece), with
//! the special tokens, truncation and padding that the reference pipelines use.

use crate::{Error, Result, Tensor};
use std::path::{Path, PathBuf};

/// Load a tokenizer with any padding or truncation saved in the file turned
/// off: the wrappers below add specials, truncate and pad themselves.
fn load(path: &Path) -> Result<tokenizers::Tokenizer> {
    let mut tok = tokenizers::Tokenizer::from_file(path).map_err(|e| Error::file(path, format!("cannot read tokenizer: {e}")))?;
    tok.with_padding(None);
    tok.with_truncation(None).map_err(|e| Error::file(path, format!("cannot reset truncation: {e}")))?;
    Ok(tok)
}

fn token_id(tok: &tokenizers::Tokenizer, path: &Path, token: &str) -> Result<u32> {
    tok.token_to_id(token).ok_or_else(|| Error::file(path, format!("the vocabulary has no `{token}` token")))
}

fn raw_ids(tok: &tokenizers::Tokenizer, text: &str) -> Result<Vec<u32>> {
    Ok(tok.encode(text, false).map_err(|e| Error::msg(format!("tokenizing {text:?}: {e}")))?.get_ids().to_vec())
}

/// CLIP's byte-level BPE with `<|startoftext|>` / `<|endoftext|>`, truncated
/// to the context length and padded with the pad token (SD pads with EOS).
pub struct ClipTokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    bos: u32,
    eos: u32,
    pad: u32,
    context_length: usize,
}

impl ClipTokenizer {
    /// Load `tokenizer.json` (a file, or a folder holding one).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let mut path = path.as_ref().to_path_buf();
        if path.is_dir() {
            path = path.join("tokenizer.json");
        }
        let inner = load(&path)?;
        let bos = token_id(&inner, &path, "<|startoftext|>")?;
        let eos = token_id(&inner, &path, "<|endoftext|>")?;
        Ok(ClipTokenizer { inner, path, bos, eos, pad: eos, context_length: 77 })
    }

    /// The tokenizer shipped in `weights/clip-tokenizer/` (OpenAI CLIP's BPE vocabulary).
    pub fn shipped() -> Result<Self> {
        Self::from_file(Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/clip-tokenizer/tokenizer.json"))
    }

    /// Pad with another token (some SD-2 pipelines pad with `!`, id 0).
    pub fn with_pad_id(mut self, pad: u32) -> Self {
        self.pad = pad;
        self
    }

    pub fn context_length(&self) -> usize {
        self.context_length
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tokens of `text` without specials or truncation (to measure prompt length).
    pub fn count_tokens(&self, text: &str) -> Result<usize> {
        Ok(raw_ids(&self.inner, text)?.len())
    }

    /// `[BOS, tokens…, EOS, PAD…]`, exactly `context_length` ids, as
    /// `tokenizer(text, padding="max_length", truncation=True)` gives them.
    pub fn encode(&self, text: &str) -> Result<Vec<i64>> {
        let mut ids = raw_ids(&self.inner, text)?;
        ids.truncate(self.context_length - 2);
        let mut out = Vec::with_capacity(self.context_length);
        out.push(self.bos as i64);
        out.extend(ids.iter().map(|&i| i as i64));
        out.push(self.eos as i64);
        out.resize(self.context_length, self.pad as i64);
        Ok(out)
    }

    /// A batch of prompts as an i64 tensor [B, context_length].
    pub fn encode_batch(&self, texts: &[&str]) -> Result<Tensor> {
        let mut all = Vec::with_capacity(texts.len() * self.context_length);
        for t in texts {
            all.extend(self.encode(t)?);
        }
        Tensor::from_vec(all, &[texts.len(), self.context_length])
    }
}

/// BERT's WordPiece with `[CLS]` / `[SEP]`, padded with `[PAD]`, and the attention mask.
pub struct BertTokenizer {
    inner: tokenizers::Tokenizer,
    cls: u32,
    sep: u32,
    pad: u32,
}

impl BertTokenizer {
    /// Load `tokenizer.json` (a file, or a folder holding one).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let mut path = path.as_ref().to_path_buf();
        if path.is_dir() {
            path = path.join("tokenizer.json");
        }
        let inner = load(&path)?;
        let (cls, sep, pad) = (token_id(&inner, &path, "[CLS]")?, token_id(&inner, &path, "[SEP]")?, token_id(&inner, &path, "[PAD]")?);
        Ok(BertTokenizer { inner, cls, sep, pad })
    }

    /// The uncased BERT vocabulary shipped in `weights/bert-tokenizer/`.
    pub fn shipped() -> Result<Self> {
        Self::from_file(Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/bert-tokenizer/tokenizer.json"))
    }

    /// WordPiece tokens of `text` without specials.
    pub fn count_tokens(&self, text: &str) -> Result<usize> {
        Ok(raw_ids(&self.inner, text)?.len())
    }

    /// `([CLS] tokens… [SEP] [PAD]…, mask)`, exactly `max_len` each.
    pub fn encode(&self, text: &str, max_len: usize) -> Result<(Vec<i64>, Vec<i64>)> {
        let mut ids = raw_ids(&self.inner, text)?;
        ids.truncate(max_len.saturating_sub(2));
        let mut out = vec![self.cls as i64];
        out.extend(ids.iter().map(|&i| i as i64));
        out.push(self.sep as i64);
        let real = out.len();
        out.resize(max_len, self.pad as i64);
        let mask = (0..max_len).map(|i| (i < real) as i64).collect();
        Ok((out, mask))
    }

    /// A batch as (input_ids, attention_mask), each i64 [B, max_len].
    pub fn encode_batch(&self, texts: &[&str], max_len: usize) -> Result<(Tensor, Tensor)> {
        let (mut ids, mut masks) = (Vec::new(), Vec::new());
        for t in texts {
            let (i, m) = self.encode(t, max_len)?;
            ids.extend(i);
            masks.extend(m);
        }
        Ok((Tensor::from_vec(ids, &[texts.len(), max_len])?, Tensor::from_vec(masks, &[texts.len(), max_len])?))
    }
}
