//! Memory-mapped safetensors files: open reads only the header, `get` hands
//! out tensors that point into the map (no copy, pages read on first touch),
//! and `save_safetensors` writes the standard format atomically.
//!
//! Format (<https://github.com/huggingface/safetensors>): an 8-byte
//! little-endian header length `n`, `n` bytes of JSON mapping each tensor
//! name to `{"dtype", "shape", "data_offsets": [begin, end]}` (offsets into
//! the data section that follows the header) plus an optional
//! `"__metadata__"` string map, then the data section, little-endian,
//! row-major.
//!
//! Every check of a file's header raises an [`Error::File`] naming the file
//! and, where one is involved, the tensor, and says what to do about it.

use super::atomic::write_atomic;
use crate::tensor::{CpuStorage, MappedBytes, Storage};
use crate::{DType, Device, Error, Result, Tensor};
use serde::Deserialize;
use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bytes of the header-length prefix.
const LEN_PREFIX: usize = 8;
/// Largest header accepted; the reference implementation uses the same
/// bound, so a larger value means a damaged or foreign file, not a big model.
const MAX_HEADER_LEN: usize = 100_000_000;
/// The header key of the free-form string map.
const METADATA_KEY: &str = "__metadata__";
/// How many candidate names a "no such tensor" error lists.
const CLOSE_NAMES: usize = 5;

/// Where one tensor lives in a safetensors file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorEntry {
    /// The tensor's name in the header.
    pub name: String,
    /// Element type as stored.
    pub dtype: DType,
    /// Row-major shape.
    pub shape: Vec<usize>,
    /// Byte range within the data section (after the header), as in the header.
    pub data_offsets: (usize, usize),
}

impl TensorEntry {
    /// Number of bytes of data.
    pub fn len_bytes(&self) -> usize {
        self.data_offsets.1 - self.data_offsets.0
    }
}

/// A parsed, validated header.
#[derive(Clone, Debug, Default)]
struct Header {
    /// Sorted by data offset (file order).
    entries: Vec<TensorEntry>,
    metadata: HashMap<String, String>,
    /// Where the data section starts in the file.
    data_start: usize,
}

/// An open, memory-mapped safetensors file. Opening parses and checks the
/// header only; tensor bytes are read when a tensor's elements are used.
pub struct SafeTensorsFile {
    path: PathBuf,
    map: Arc<memmap2::Mmap>,
    header: Header,
    by_name: HashMap<String, usize>,
}

impl std::fmt::Debug for SafeTensorsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafeTensorsFile")
            .field("path", &self.path)
            .field("tensors", &self.header.entries.len())
            .field("bytes", &self.map.len())
            .finish()
    }
}

impl SafeTensorsFile {
    /// Map `path` and validate its header: lengths, JSON, dtypes, shapes and
    /// offsets (in range, not inverted, not overlapping). No tensor data is read.
    pub fn open(path: impl AsRef<Path>) -> Result<SafeTensorsFile> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        let file_len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        if file_len < LEN_PREFIX as u64 {
            return Err(Error::file(
                &path,
                format!("{file_len} bytes is too short for a safetensors file (it starts with an 8-byte header length) — the file is empty or truncated"),
            ));
        }
        // SAFETY: the map is read-only and lives as long as any tensor that
        // points into it (they hold the Arc). Like every reader of mapped
        // files, we rely on nobody truncating or rewriting the file in place
        // while it is open; privdistill itself only ever replaces files by
        // atomic rename, which leaves an existing mapping intact.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
        let header = parse_header(&path, &map)?;
        let by_name = header.entries.iter().enumerate().map(|(i, e)| (e.name.clone(), i)).collect();
        Ok(SafeTensorsFile { path, map: Arc::new(map), header, by_name })
    }

    /// The file this was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tensor names in file (data offset) order.
    pub fn names(&self) -> Vec<&str> {
        self.header.entries.iter().map(|e| e.name.as_str()).collect()
    }

    /// All entries in file order.
    pub fn entries(&self) -> &[TensorEntry] {
        &self.header.entries
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.header.entries.len()
    }

    /// Whether the file holds no tensors.
    pub fn is_empty(&self) -> bool {
        self.header.entries.is_empty()
    }

    /// Whether a tensor of this name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// The `__metadata__` string map (empty when the file has none).
    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.header.metadata
    }

    /// The entry of `name`, or an error listing close names.
    pub fn entry(&self, name: &str) -> Result<&TensorEntry> {
        match self.by_name.get(name) {
            Some(&i) => Ok(&self.header.entries[i]),
            None => Err(Error::file(&self.path, missing_tensor_message(name, self.names()))),
        }
    }

    /// Dtype and shape of `name`, without touching its data.
    pub fn info(&self, name: &str) -> Result<(DType, &[usize])> {
        let e = self.entry(name)?;
        Ok((e.dtype, &e.shape))
    }

    /// The tensor `name` on the CPU in its stored dtype. When its bytes are
    /// aligned for the dtype (always, for files written by
    /// [`save_safetensors`] and by the reference implementation) the storage
    /// is [`CpuStorage::Mapped`]: no copy, pages load when first read.
    /// Otherwise the bytes are copied into an owned buffer.
    pub fn get(&self, name: &str) -> Result<Tensor> {
        let e = self.entry(name)?;
        let start = self.header.data_start + e.data_offsets.0;
        let len_bytes = e.len_bytes();
        let aligned = (self.map.as_ptr() as usize + start) % e.dtype.size_in_bytes() == 0;
        let storage = if aligned {
            CpuStorage::Mapped(MappedBytes { map: self.map.clone(), start, len_bytes, dtype: e.dtype })
        } else {
            CpuStorage::from_bytes(e.dtype, &self.map[start..start + len_bytes])
        };
        Ok(Tensor::from_storage(Storage::Cpu(storage), &e.shape))
    }

    /// The tensor `name` converted to `dtype` on load. Conversion happens
    /// between float dtypes (F32, F64, F16, BF16); an integer tensor must be
    /// asked for in its own dtype.
    pub fn get_as(&self, name: &str, dtype: DType) -> Result<Tensor> {
        let e = self.entry(name)?;
        if e.dtype == dtype {
            return self.get(name);
        }
        if !(e.dtype.is_float() && dtype.is_float()) {
            return Err(Error::file(
                &self.path,
                format!(
                    "tensor {name:?}: stored as {} and cannot be loaded as {} (only float dtypes F32, F64, F16 and BF16 convert into each other)",
                    st_name(e.dtype),
                    st_name(dtype)
                ),
            ));
        }
        crate::no_grad(|| self.get(name)?.to_dtype(dtype))
    }

    /// The tensor `name` as a model expects it: exactly `expected_shape`, in
    /// `dtype` (a float tensor is converted from another float dtype, as in
    /// [`get_as`](Self::get_as)). A mismatch is an error naming the file, the
    /// tensor, what was expected and what was found.
    pub fn get_checked(&self, name: &str, expected_shape: &[usize], dtype: DType) -> Result<Tensor> {
        let e = self.entry(name)?;
        let dtype_ok = e.dtype == dtype || (e.dtype.is_float() && dtype.is_float());
        if e.shape != expected_shape || !dtype_ok {
            return Err(Error::file(
                &self.path,
                format!(
                    "tensor {name:?}: the model expects shape {expected_shape:?} dtype {} but the file holds shape {:?} dtype {} — the checkpoint does not match this model's configuration",
                    st_name(dtype),
                    e.shape,
                    st_name(e.dtype)
                ),
            ));
        }
        self.get_as(name, dtype)
    }

    /// Every tensor, in file order (mapped, as [`get`](Self::get)).
    pub fn get_all(&self) -> Result<Vec<(String, Tensor)>> {
        self.header.entries.iter().map(|e| Ok((e.name.clone(), self.get(&e.name)?))).collect()
    }
}

/// The safetensors header name of a dtype.
pub fn st_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "F32",
        DType::F64 => "F64",
        DType::F16 => "F16",
        DType::BF16 => "BF16",
        DType::I64 => "I64",
        DType::I32 => "I32",
        DType::U8 => "U8",
    }
}

/// Parse a safetensors dtype name; the error says whether it is a real
/// safetensors dtype that privdistill does not read, or not one at all.
fn parse_dtype(name: &str) -> std::result::Result<DType, String> {
    Ok(match name {
        "F32" => DType::F32,
        "F64" => DType::F64,
        "F16" => DType::F16,
        "BF16" => DType::BF16,
        "I64" => DType::I64,
        "I32" => DType::I32,
        "U8" => DType::U8,
        other => {
            const SUPPORTED: &str = "F32, F64, F16, BF16, I64, I32, U8";
            // The reference crate's dtype list tells a known-but-unsupported
            // dtype (convert the file) from garbage (the header is damaged).
            return Err(match serde_json::from_value::<safetensors::Dtype>(serde_json::Value::String(other.to_string())) {
                Ok(_) => format!(
                    "dtype {other} is not supported (privdistill reads {SUPPORTED}) — convert the tensor, e.g. to F32 or F16, before loading"
                ),
                Err(_) => format!("unknown dtype {other:?} (safetensors dtypes privdistill reads: {SUPPORTED}) — the header is damaged or not safetensors"),
            });
        }
    })
}

/// One tensor's header entry, as written.
#[derive(Deserialize)]
struct RawEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: (usize, usize),
}

/// Read and validate the header at the start of `bytes` (the whole file).
/// Touches only the first `8 + n` bytes.
fn parse_header(path: &Path, bytes: &[u8]) -> Result<Header> {
    let fail = |msg: String| Error::file(path, msg);
    let file_len = bytes.len();
    let prefix: [u8; LEN_PREFIX] = bytes[..LEN_PREFIX].try_into().expect("length checked by the caller");
    let header_len = u64::from_le_bytes(prefix);
    if header_len > (file_len - LEN_PREFIX) as u64 {
        return Err(fail(format!(
            "header length {header_len} bytes (from the first 8 bytes) is larger than the file ({file_len} bytes) — the file is truncated or not a safetensors file"
        )));
    }
    let header_len = header_len as usize;
    if header_len > MAX_HEADER_LEN {
        return Err(fail(format!(
            "header length {header_len} bytes exceeds the {MAX_HEADER_LEN}-byte limit of the format — the file is damaged or not a safetensors file"
        )));
    }
    let data_start = LEN_PREFIX + header_len;
    let json = &bytes[LEN_PREFIX..data_start];
    let top: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(json).map_err(|e| fail(format!("bad header JSON: {e}{}", json_context(json, &e))))?;

    let mut header = Header { data_start, ..Header::default() };
    for (name, value) in top {
        if name == METADATA_KEY {
            header.metadata = serde_json::from_value(value)
                .map_err(|e| fail(format!("bad {METADATA_KEY} in the header: {e} (it must map strings to strings)")))?;
            continue;
        }
        let raw: RawEntry = serde_json::from_value(value).map_err(|e| {
            fail(format!(
                "tensor {name:?}: malformed header entry: {e} (expected {{\"dtype\": \"F32\", \"shape\": [..], \"data_offsets\": [begin, end]}})"
            ))
        })?;
        let dtype = parse_dtype(&raw.dtype).map_err(|msg| fail(format!("tensor {name:?}: {msg}")))?;
        let (begin, end) = raw.data_offsets;
        if begin > end {
            return Err(fail(format!(
                "tensor {name:?}: data offsets {begin}..{end} are inverted (begin after end) — the header is corrupt"
            )));
        }
        let numel = raw.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        let needed = numel.and_then(|n| n.checked_mul(dtype.size_in_bytes()));
        if needed != Some(end - begin) {
            let needed = match (numel, needed) {
                (Some(n), Some(b)) => format!("{b} bytes ({n} elements × {} bytes)", dtype.size_in_bytes()),
                _ => "more bytes than can be addressed".to_string(),
            };
            return Err(fail(format!(
                "tensor {name:?}: data offsets {begin}..{end} hold {} bytes, but dtype {} with shape {:?} needs {needed} — the header is corrupt",
                end - begin,
                raw.dtype,
                raw.shape
            )));
        }
        header.entries.push(TensorEntry { name, dtype, shape: raw.shape, data_offsets: (begin, end) });
    }
    header.entries.sort_by(|a, b| a.data_offsets.cmp(&b.data_offsets).then_with(|| a.name.cmp(&b.name)));

    // Overlap: after sorting by begin, an entry overlaps an earlier one exactly
    // when it starts before the furthest end seen so far. Empty tensors own no
    // bytes and overlap nothing.
    let mut furthest: Option<&TensorEntry> = None;
    for e in header.entries.iter().filter(|e| e.len_bytes() > 0) {
        if let Some(prev) = furthest {
            if e.data_offsets.0 < prev.data_offsets.1 {
                return Err(fail(format!(
                    "tensor {:?}: data offsets {}..{} overlap tensor {:?} ({}..{}) — the header is corrupt",
                    e.name, e.data_offsets.0, e.data_offsets.1, prev.name, prev.data_offsets.0, prev.data_offsets.1
                )));
            }
        }
        if furthest.is_none_or(|p| e.data_offsets.1 > p.data_offsets.1) {
            furthest = Some(e);
        }
    }

    let data_len = file_len - data_start;
    if let Some(last) = furthest.filter(|e| e.data_offsets.1 > data_len) {
        let described = last.data_offsets.1;
        let total: usize = header.entries.iter().map(TensorEntry::len_bytes).sum();
        if total == described {
            // The tensors tile the data section without gaps: the header is
            // self-consistent and the file is short, so its tail went missing.
            return Err(fail(format!(
                "file is truncated: tensor {:?} ends at byte {described} of the data section but only {data_len} bytes are present (file is {file_len} bytes, should be {}) — the file was not completely written or downloaded; fetch or write it again",
                last.name,
                data_start + described
            )));
        }
    }
    // Empty tensors count too: their offsets are still used to slice the map.
    if let Some(out) = header.entries.iter().find(|e| e.data_offsets.1 > data_len) {
        return Err(fail(format!(
            "tensor {:?}: data offsets {}..{} are out of range: the data section holds {data_len} bytes — the header is corrupt",
            out.name, out.data_offsets.0, out.data_offsets.1
        )));
    }
    Ok(header)
}

/// A short excerpt of the header around a JSON error, to show where it broke.
fn json_context(json: &[u8], e: &serde_json::Error) -> String {
    // serde_json reports 1-based line and column; find the byte offset.
    let line_start: usize = json.split(|&b| b == b'\n').take(e.line().saturating_sub(1)).map(|l| l.len() + 1).sum();
    let at = (line_start + e.column().saturating_sub(1)).min(json.len());
    let from = at.saturating_sub(30);
    let to = (at + 10).min(json.len());
    format!(" (near byte {at} of the header: {:?})", String::from_utf8_lossy(&json[from..to]))
}

/// "no tensor named …" with the names closest by edit distance.
pub(crate) fn missing_tensor_message<'a>(name: &str, names: impl IntoIterator<Item = &'a str>) -> String {
    let mut scored: Vec<(usize, &str)> = names.into_iter().map(|n| (edit_distance(name, n), n)).collect();
    if scored.is_empty() {
        return format!("no tensor named {name:?} (there are no tensors)");
    }
    let count = scored.len();
    scored.sort();
    let close: Vec<String> = scored.iter().take(CLOSE_NAMES).map(|(_, n)| format!("{n:?}")).collect();
    format!("no tensor named {name:?} ({count} tensors; closest: {})", close.join(", "))
}

/// Levenshtein distance over bytes.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, &ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != cb);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// A (name, tensor) pair, however the caller holds it: `(String, Tensor)`,
/// `&(String, Tensor)` (from a slice), `(&String, &Tensor)` (from a map).
pub trait NamedTensor {
    /// The name the tensor is saved under.
    fn name(&self) -> &str;
    /// The tensor.
    fn tensor(&self) -> &Tensor;
}

impl<K: AsRef<str>, T: Borrow<Tensor>> NamedTensor for (K, T) {
    fn name(&self) -> &str {
        self.0.as_ref()
    }
    fn tensor(&self) -> &Tensor {
        self.1.borrow()
    }
}

impl<K: AsRef<str>, T: Borrow<Tensor>> NamedTensor for &(K, T) {
    fn name(&self) -> &str {
        self.0.as_ref()
    }
    fn tensor(&self) -> &Tensor {
        self.1.borrow()
    }
}

/// Write `tensors` (any device, any layout) and `metadata` to `path` in the
/// safetensors format, atomically (see [`write_atomic`]).
///
/// Tensors are laid out by decreasing element size, then by name (the
/// reference implementation's order), so with the 8-byte-aligned header
/// every tensor is aligned for its dtype and loads without a copy. Data is
/// streamed one tensor at a time: a CUDA model is copied to the host tensor
/// by tensor, not all at once. Bytes are written in the host's order, which
/// on every supported target is the little-endian order the format requires.
pub fn save_safetensors<N: NamedTensor>(
    path: impl AsRef<Path>,
    tensors: impl IntoIterator<Item = N>,
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let path = path.as_ref();
    let mut items: Vec<(String, Tensor)> = tensors.into_iter().map(|n| (n.name().to_string(), n.tensor().clone())).collect();
    let mut seen = HashSet::new();
    for (name, _) in &items {
        if name == METADATA_KEY {
            return Err(Error::file(path, format!("cannot save a tensor named {METADATA_KEY:?}: the format reserves that key")));
        }
        if !seen.insert(name.as_str()) {
            return Err(Error::file(path, format!("cannot save: tensor name {name:?} appears twice")));
        }
    }
    items.sort_by(|(na, a), (nb, b)| b.dtype().size_in_bytes().cmp(&a.dtype().size_in_bytes()).then_with(|| na.cmp(nb)));

    let header = header_json(&items, metadata.as_ref())?;
    write_atomic(path, |w| {
        w.write_bytes(&(header.len() as u64).to_le_bytes())?;
        w.write_bytes(header.as_bytes())?;
        for (_, tensor) in &items {
            let host = crate::no_grad(|| tensor.to_device(Device::Cpu)?.contiguous())?;
            let storage = host.storage();
            let cpu = storage.cpu().expect("copied to the host above");
            let elems = host.layout().contiguous_range().expect("made contiguous above");
            let size = host.dtype().size_in_bytes();
            w.write_bytes(&cpu.as_bytes()[elems.start * size..elems.end * size])?;
        }
        Ok(())
    })
}

/// The header JSON for `items` in order, padded with spaces to a multiple of 8 bytes.
fn header_json(items: &[(String, Tensor)], metadata: Option<&HashMap<String, String>>) -> Result<String> {
    fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<String> {
        serde_json::to_string(value).map_err(|e| Error::msg(format!("cannot encode a safetensors header: {e}")))
    }
    let mut out = String::from("{");
    if let Some(meta) = metadata {
        let sorted: BTreeMap<&String, &String> = meta.iter().collect();
        out.push_str(&format!("{}:{}", to_json(METADATA_KEY)?, to_json(&sorted)?));
    }
    let mut offset = 0usize;
    for (name, t) in items {
        let len = t.numel() * t.dtype().size_in_bytes();
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str(&format!(
            "{}:{{\"dtype\":\"{}\",\"shape\":{},\"data_offsets\":[{},{}]}}",
            to_json(name)?,
            st_name(t.dtype()),
            to_json(t.shape())?,
            offset,
            offset + len
        ));
        offset += len;
    }
    out.push('}');
    let padded = out.len().next_multiple_of(LEN_PREFIX);
    out.extend(std::iter::repeat_n(' ', padded - out.len()));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("conv.weight", "conv.weight"), 0);
        assert_eq!(edit_distance("conv.weight", "conv.weights"), 1);
        assert_eq!(edit_distance("conv.bias", "conv.weight"), 5); // b→w, +e, i, a→g, s→h, +t
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn header_is_padded_to_eight_bytes() {
        let items = vec![("a".to_string(), Tensor::from_vec(vec![1f32, 2.0, 3.0], &[3]).unwrap())];
        let h = header_json(&items, None).unwrap();
        assert_eq!(h.len() % 8, 0);
        assert!(h.starts_with("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}}"));
        assert!(h.trim_end().len() + 8 > h.len());
    }
}
