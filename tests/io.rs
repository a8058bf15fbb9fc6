//! The io layer: safetensors round trips and interop, zero-copy mapped loads,
//! one test per kind of corrupt file, atomic writes under failure, checkpoints,
//! and opening a multi-GB file without reading it.

use half::{bf16, f16};
use privdistill::io::{save_safetensors, write_atomic, write_atomic_bytes, Checkpoint, CheckpointMeta, SafeTensorsFile};
use privdistill::tensor::{CpuStorage, Storage};
use privdistill::testing::rand_f32;
use privdistill::{DType, Error, Rng, Tensor};
use std::collections::HashMap;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// Write a safetensors file by hand: length prefix, header, data (no padding, which readers must not need).
fn write_raw(path: &Path, header: &str, data: &[u8]) {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    std::fs::write(path, bytes).unwrap();
}

/// The message of the error `open` must return.
fn open_error(path: &Path) -> String {
    match SafeTensorsFile::open(path) {
        Ok(_) => panic!("{} opened, but it is corrupt", path.display()),
        Err(e) => e.to_string(),
    }
}

#[track_caller]
fn assert_mentions(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "error message does not mention {p:?}:\n{msg}");
    }
}

fn is_mapped(t: &Tensor) -> bool {
    matches!(&*t.storage(), Storage::Cpu(CpuStorage::Mapped(_)))
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn all_dtype_tensors() -> Vec<(String, Tensor)> {
    let f = |v: &[f64]| v.to_vec();
    vec![
        ("f32".into(), Tensor::from_vec(vec![1.5f32, -2.25, 3.0e-39, f32::MAX, -0.0, 7.0], &[2, 3]).unwrap()),
        ("f64".into(), Tensor::from_vec(f(&[1.0 / 3.0, -1e300, 5e-324]), &[3]).unwrap()),
        ("f16".into(), Tensor::from_vec([0.5, -65504.0, 6e-8, 1.0].map(f16::from_f64).to_vec(), &[2, 2]).unwrap()),
        ("bf16".into(), Tensor::from_vec([3.0e38, -1.0, 0.0078125].map(bf16::from_f64).to_vec(), &[3, 1]).unwrap()),
        ("i64".into(), Tensor::from_vec(vec![i64::MIN, -1, 0, i64::MAX], &[4]).unwrap()),
        ("i32".into(), Tensor::from_vec(vec![i32::MIN, 42, i32::MAX], &[1, 3]).unwrap()),
        ("u8".into(), Tensor::from_vec(vec![0u8, 1, 127, 255, 9], &[5]).unwrap()),
        ("scalar".into(), Tensor::scalar(2.5f32)),
        ("empty".into(), Tensor::from_vec(Vec::<f32>::new(), &[0, 4]).unwrap()),
    ]
}

/// Raw little-endian bytes of a tensor's elements in row-major order.
fn raw_bytes(t: &Tensor) -> Vec<u8> {
    let c = t.contiguous().unwrap();
    let st = c.storage();
    let size = c.dtype().size_in_bytes();
    let r = c.layout().contiguous_range().unwrap();
    st.cpu().unwrap().as_bytes()[r.start * size..r.end * size].to_vec()
}

#[test]
fn round_trip_of_every_dtype_with_metadata() {
    let dir = temp_dir();
    let path = dir.path().join("all.safetensors");
    let tensors = all_dtype_tensors();
    let meta = HashMap::from([("format".to_string(), "pt".to_string()), ("note".to_string(), "ünïcode \"quoted\"".to_string())]);
    save_safetensors(&path, &tensors, Some(meta.clone())).unwrap();
    assert_eq!(dir_entries(dir.path()), ["all.safetensors"], "no temporary file is left behind");

    let file = SafeTensorsFile::open(&path).unwrap();
    assert_eq!(file.metadata(), &meta);
    assert_eq!(file.len(), tensors.len());
    for (name, t) in &tensors {
        let (dtype, shape) = file.info(name).unwrap();
        assert_eq!((dtype, shape), (t.dtype(), t.shape()), "{name}");
        let loaded = file.get(name).unwrap();
        assert_eq!(loaded.shape(), t.shape(), "{name}");
        assert_eq!(raw_bytes(&loaded), raw_bytes(t), "{name}: bytes differ");
    }

    // The header is padded to 8 bytes and the reference implementation reads the file.
    let bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    assert_eq!(n % 8, 0);
    let reference = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    for (name, t) in &tensors {
        assert_eq!(reference.tensor(name).unwrap().data(), raw_bytes(t).as_slice(), "{name}");
    }
}

#[test]
fn saves_non_contiguous_views() {
    let dir = temp_dir();
    let path = dir.path().join("views.safetensors");
    let base = rand_f32(&[3, 5], 1);
    let view = base.t().unwrap().narrow(0, 1, 3).unwrap();
    assert!(!view.is_contiguous());
    let map = HashMap::from([("view".to_string(), view.clone())]);
    save_safetensors(&path, &map, None).unwrap();
    let loaded = SafeTensorsFile::open(&path).unwrap().get("view").unwrap();
    assert_eq!(loaded.shape(), &[3, 3]);
    assert_eq!(loaded.to_vec::<f32>().unwrap(), view.to_vec::<f32>().unwrap());
}

#[test]
fn reads_files_written_by_the_reference_implementation() {
    let dir = temp_dir();
    let path = dir.path().join("reference.safetensors");
    let w = f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let ids: Vec<u8> = [7i64, -8].iter().flat_map(|x| x.to_le_bytes()).collect();
    let views = vec![
        ("layer.weight", safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, 3], &w).unwrap()),
        ("ids", safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![2], &ids).unwrap()),
    ];
    let bytes = safetensors::serialize(views, None).unwrap();
    std::fs::write(&path, bytes).unwrap();

    let file = SafeTensorsFile::open(&path).unwrap();
    assert_eq!(file.get("layer.weight").unwrap().to_vec::<f32>().unwrap(), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert_eq!(file.get("ids").unwrap().to_vec::<i64>().unwrap(), [7, -8]);
}

#[test]
fn mapped_get_is_zero_copy_and_right() {
    let dir = temp_dir();
    let path = dir.path().join("model.safetensors");
    let tensors = all_dtype_tensors();
    save_safetensors(&path, &tensors, None).unwrap();
    let file = SafeTensorsFile::open(&path).unwrap();
    for (name, t) in &tensors {
        let loaded = file.get(name).unwrap();
        assert!(is_mapped(&loaded), "{name}: storage is not the memory map");
        assert_eq!(
            loaded.to_vec_f64().unwrap().iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            t.to_vec_f64().unwrap().iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            "{name}"
        );
    }
    // Ops read mapped storage like any other.
    let w = file.get("f32").unwrap();
    let doubled = w.add(&w).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(doubled[0], 3.0);
    // The map outlives the file handle: tensors stay valid after the file is dropped.
    drop(file);
    assert_eq!(w.to_vec::<f32>().unwrap()[1], -2.25);
}

#[test]
fn misaligned_tensor_is_copied() {
    let dir = temp_dir();
    let path = dir.path().join("odd.safetensors");
    // A one-byte tensor first pushes the f32 tensor to an odd offset.
    let mut data = vec![9u8];
    data.extend(f32_bytes(&[1.25, -3.5]));
    write_raw(
        &path,
        r#"{"flag":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"w":{"dtype":"F32","shape":[2],"data_offsets":[1,9]}}"#,
        &data,
    );
    let file = SafeTensorsFile::open(&path).unwrap();
    let w = file.get("w").unwrap();
    assert!(!is_mapped(&w), "a misaligned region must be copied");
    assert_eq!(w.to_vec::<f32>().unwrap(), [1.25, -3.5]);
    assert!(is_mapped(&file.get("flag").unwrap()));
    assert_eq!(file.names(), ["flag", "w"]);
}

#[test]
fn get_as_converts_floats_on_load() {
    let dir = temp_dir();
    let path = dir.path().join("half.safetensors");
    let values = [0.5, -2.0, 1024.0, 0.099975586];
    let tensors = vec![
        ("w".to_string(), Tensor::from_vec(values.map(f16::from_f64).to_vec(), &[2, 2]).unwrap()),
        ("ids".to_string(), Tensor::from_vec(vec![1i64, 2], &[2]).unwrap()),
    ];
    save_safetensors(&path, &tensors, None).unwrap();
    let file = SafeTensorsFile::open(&path).unwrap();
    for dtype in [DType::F32, DType::F64, DType::BF16, DType::F16] {
        let t = file.get_as("w", dtype).unwrap();
        assert_eq!(t.dtype(), dtype);
        let expected: Vec<f64> =
            values.iter().map(|&v| Tensor::scalar(f16::from_f64(v)).to_dtype(dtype).unwrap().to_scalar_f64().unwrap()).collect();
        assert_eq!(t.to_vec_f64().unwrap(), expected);
    }
    let msg = file.get_as("ids", DType::F32).unwrap_err().to_string();
    assert_mentions(&msg, &["half.safetensors", "\"ids\"", "I64", "F32"]);
}

#[test]
fn get_checked_reports_what_the_model_expected() {
    let dir = temp_dir();
    let path = dir.path().join("model.safetensors");
    let tensors = vec![
        ("conv.weight".to_string(), rand_f32(&[4, 3, 3, 3], 2)),
        ("conv.bias".to_string(), rand_f32(&[4], 3).to_dtype(DType::F16).unwrap()),
        ("position_ids".to_string(), Tensor::from_vec(vec![0i64, 1, 2], &[3]).unwrap()),
    ];
    save_safetensors(&path, &tensors, None).unwrap();
    let file = SafeTensorsFile::open(&path).unwrap();

    let ok = file.get_checked("conv.weight", &[4, 3, 3, 3], DType::F32).unwrap();
    assert!(is_mapped(&ok));
    let bias = file.get_checked("conv.bias", &[4], DType::F32).unwrap();
    assert_eq!(bias.dtype(), DType::F32, "float dtypes convert to what the model computes in");

    let msg = file.get_checked("conv.weight", &[4, 3, 5, 5], DType::F32).unwrap_err().to_string();
    assert_mentions(&msg, &["model.safetensors", "\"conv.weight\"", "[4, 3, 5, 5]", "[4, 3, 3, 3]"]);

    let msg = file.get_checked("position_ids", &[3], DType::F32).unwrap_err().to_string();
    assert_mentions(&msg, &["model.safetensors", "\"position_ids\"", "F32", "I64"]);
}

#[test]
fn missing_tensor_lists_close_names() {
    let dir = temp_dir();
    let path = dir.path().join("model.safetensors");
    let names = ["down.0.conv.weight", "down.0.conv.bias", "mid.attn.to_q.weight", "up.1.norm.weight"];
    let tensors: Vec<(String, Tensor)> = names.iter().map(|n| (n.to_string(), rand_f32(&[2], 4))).collect();
    save_safetensors(&path, &tensors, None).unwrap();
    let file = SafeTensorsFile::open(&path).unwrap();
    let msg = file.get("down.0.conv.weights").unwrap_err().to_string();
    assert_mentions(&msg, &["model.safetensors", "\"down.0.conv.weights\"", "\"down.0.conv.weight\""]);
    let closest = msg.split("closest: ").nth(1).unwrap();
    assert!(closest.starts_with("\"down.0.conv.weight\""), "the closest name comes first: {msg}");
    assert!(file.info("nope").is_err());
}

// ----- corrupt files: one test per kind, each naming the file and the tensor -----

#[test]
fn truncated_file() {
    let dir = temp_dir();
    let path = dir.path().join("model.safetensors");
    let tensors = vec![("a.weight".to_string(), rand_f32(&[8], 5)), ("b.weight".to_string(), rand_f32(&[16], 6))];
    save_safetensors(&path, &tensors, None).unwrap();
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(len - 10).unwrap();
    let msg = open_error(&path);
    assert_mentions(&msg, &["model.safetensors", "truncated", "\"b.weight\"", &format!("should be {len}")]);
}

#[test]
fn header_length_larger_than_file() {
    let dir = temp_dir();
    let path = dir.path().join("model.safetensors");
    let mut bytes = 1000u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{\"a\":{}}");
    std::fs::write(&path, bytes).unwrap();
    let msg = open_error(&path);
    assert_mentions(&msg, &["model.safetensors", "header length 1000", "larger than the file (16 bytes)"]);

    std::fs::write(&path, [1u8, 2, 3]).unwrap();
    assert_mentions(&open_error(&path), &["model.safetensors", "too short"]);
}

#[test]
fn bad_header_json() {
    let dir = temp_dir();
    let path = dir.path().join("model.safetensors");
    write_raw(&path, r#"{"conv.weight":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},,}"#, &[0; 4]);
    let msg = open_error(&path);
    assert_mentions(&msg, &["model.safetensors", "bad header JSON", "near byte"]);

    // Well-formed JSON but a tensor entry of the wrong form names the tensor.
    write_raw(&path, r#"{"conv.weight":{"dtype":"F32","data_offsets":[0,4]}}"#, &[0; 4]);
    assert_mentions(&open_error(&path), &["model.safetensors", "\"conv.weight\"", "shape"]);

    write_raw(&path, r#"{"__metadata__":{"step":3}}"#, &[]);
    assert_mentions(&open_error(&path), &["model.safetensors", "__metadata__"]);
}

#[test]
fn offsets_out_of_range() {
    let dir = temp_dir();
    let path = dir.path().join("model.safetensors");
    write_raw(
        &path,
        r#"{"conv.bias":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"conv.weight":{"dtype":"F32","shape":[2],"data_offsets":[64,72]}}"#,
        &[0; 16],
    );
    let msg = open_error(&path);
    assert_mentions(&msg, &["model.safetensors", "\"conv.weight\"", "64..72", "out of range", "16 bytes"]);

    // An empty tensor owns no bytes, but its offsets must still lie in the file.
    write_raw(&path, r#"{"empty":{"dtype":"F32","shape":[0],"data_offsets":[40,40]}}"#, &[0; 16]);
    assert_mentions(&open_error(&path), &["model.safetensors", "\"empty\"", "40..40", "out of range"]);
}

#[test]
fn inverted_offsets() {
    let dir = temp_dir();
    let path = dir.path().join("model.safetensors");
    write_raw(&path, r#"{"conv.weight":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}"#, &[0; 8]);
    assert_mentions(&open_error(&path), &["model.safetensors", "\"conv.weight\"", "8..0", "inverted"]);
}

#[test]
fn overlapping_offsets() {
    let dir = temp_dir();
    let path = dir.path().join("model.safetensors");
    write_raw(
        &path,
        r#"{"conv.weight":{"dtype":"F32","shape":[40],"data_offsets":[100,260]},"conv.bias":{"dtype":"F32","shape":[6],"data_offsets":[96,120]}}"#,
        &[0; 260],
    );
    let msg = open_error(&path);
    assert!(
        msg.ends_with(
            r#"model.safetensors: tensor "conv.weight": data offsets 100..260 overlap tensor "conv.bias" (96..120) — the header is corrupt"#
        ),
        "{msg}"
    );
}

#[test]
fn byte_length_inconsistent_with_dtype_and_shape() {
    let dir = temp_dir();
    let path = dir.path().join("model.safetensors");
    write_raw(&path, r#"{"conv.weight":{"dtype":"F16","shape":[2,3],"data_offsets":[0,24]}}"#, &[0; 24]);
    let msg = open_error(&path);
    assert_mentions(&msg, &["model.safetensors", "\"conv.weight\"", "hold 24 bytes", "needs 12 bytes", "[2, 3]"]);
}

#[test]
fn unknown_and_unsupported_dtypes() {
    let dir = temp_dir();
    let path = dir.path().join("model.safetensors");
    write_raw(&path, r#"{"conv.weight":{"dtype":"Q7","shape":[1],"data_offsets":[0,1]}}"#, &[0]);
    assert_mentions(&open_error(&path), &["model.safetensors", "\"conv.weight\"", "unknown dtype \"Q7\""]);
    write_raw(&path, r#"{"conv.weight":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}}"#, &[0]);
    assert_mentions(&open_error(&path), &["model.safetensors", "\"conv.weight\"", "F8_E4M3 is not supported"]);
}

// ----- atomic writes -----

#[test]
fn atomic_write_failure_leaves_no_output_and_no_temp_file() {
    let dir = temp_dir();
    let path = dir.path().join("out.bin");
    let result = write_atomic(&path, |w| {
        w.write_bytes(b"partial content")?;
        Err::<(), _>(Error::msg("simulated failure halfway"))
    });
    assert!(result.unwrap_err().to_string().contains("simulated failure"));
    assert!(!path.exists(), "a failed write must not create the target");
    assert!(dir_entries(dir.path()).is_empty(), "temporary file left: {:?}", dir_entries(dir.path()));
}

#[test]
fn atomic_write_failure_keeps_the_old_content() {
    let dir = temp_dir();
    let path = dir.path().join("model.safetensors");
    write_atomic_bytes(&path, b"old content").unwrap();
    let result = write_atomic(&path, |w| {
        w.write_all(&[0u8; 1 << 21]).unwrap(); // past the buffer: bytes reach the temporary file
        Err::<(), _>(Error::msg("disk full (simulated)"))
    });
    assert!(result.is_err());
    assert_eq!(std::fs::read(&path).unwrap(), b"old content");
    // A panicking writer is cleaned up too.
    let panicked = std::panic::catch_unwind(|| {
        write_atomic(&path, |w| -> privdistill::Result<()> {
            w.write_bytes(b"new")?;
            panic!("writer crashed")
        })
    });
    assert!(panicked.is_err());
    assert_eq!(std::fs::read(&path).unwrap(), b"old content");
    assert_eq!(dir_entries(dir.path()), ["model.safetensors"]);

    write_atomic_bytes(&path, b"new content").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"new content");
    assert_eq!(dir_entries(dir.path()), ["model.safetensors"]);
}

#[test]
fn atomic_write_into_a_missing_directory_names_it() {
    let dir = temp_dir();
    let path = dir.path().join("no/such/dir/out.json");
    let msg = write_atomic_bytes(&path, b"{}").unwrap_err().to_string();
    assert_mentions(&msg, &["out.json", "does not exist"]);
}

#[cfg(unix)]
#[test]
fn atomic_output_has_ordinary_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir();
    let path = dir.path().join("report.json");
    privdistill::io::write_atomic_json(&path, &serde_json::json!({"r_reid": 0.01})).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_ne!(mode & 0o044, 0, "output should be readable by others under a usual umask, mode {mode:o}");
    assert!(std::fs::read_to_string(&path).unwrap().ends_with("}\n"));
}

// ----- checkpoints -----

#[test]
fn checkpoint_round_trip_is_bit_exact() {
    let dir = temp_dir();
    let path = dir.path().join("step-100.ckpt.safetensors");
    let params = vec![("conv.weight".to_string(), rand_f32(&[4, 3], 7)), ("conv.bias".to_string(), rand_f32(&[4], 8))];
    // Values that a lossy path would change: NaN payloads, -0, subnormals, extremes.
    let awkward =
        Tensor::from_vec(vec![f32::from_bits(0x7fc0_1234), -0.0, 1.0e-45, f32::MIN_POSITIVE, f32::MAX, f32::NEG_INFINITY], &[6]).unwrap();
    let mut rng = Rng::new(1234);
    rng.normal_vec(17);
    let meta = CheckpointMeta {
        step: 100,
        epoch: 3,
        data_position: 4096,
        rng,
        config: serde_json::json!({"lr": 1e-4, "batch_size": 8, "model": {"channels": [32, 64]}}),
        extra: [("ema_updates".to_string(), serde_json::json!(97))].into(),
        ..CheckpointMeta::default()
    };
    let mut ckpt = Checkpoint::new(meta.clone());
    ckpt.insert_group("param.", &params);
    ckpt.insert_group("optim.exp_avg.", params.iter().map(|(n, t)| (n.clone(), t.mul_scalar(0.1).unwrap())));
    ckpt.insert("awkward", awkward.clone());
    ckpt.save(&path).unwrap();
    assert_eq!(dir_entries(dir.path()), ["step-100.ckpt.safetensors"]);

    let loaded = Checkpoint::load(&path).unwrap();
    assert_eq!(loaded.meta, meta);
    assert_eq!(loaded.tensors.len(), ckpt.tensors.len());
    for (name, t) in &ckpt.tensors {
        let back = loaded.get(name).unwrap();
        assert_eq!(back.shape(), t.shape());
        let bits = |t: &Tensor| t.to_vec::<f32>().unwrap().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(back), bits(t), "{name} is not bit-exact");
    }
    let group: Vec<&str> = loaded.group("param.").map(|(n, _)| n).collect();
    assert_eq!(group, ["conv.bias", "conv.weight"]);
    assert_eq!(loaded.group("optim.exp_avg.").count(), 2);
    assert_eq!(Checkpoint::load_meta(&path).unwrap(), meta);
    assert_mentions(&loaded.get("param.conv.weigth").unwrap_err().to_string(), &["step-100.ckpt.safetensors", "\"param.conv.weight\""]);

    // Resaving over the loaded (still mapped) file replaces it atomically.
    let mut next = loaded.clone();
    next.meta.step = 101;
    next.save(&path).unwrap();
    assert_eq!(Checkpoint::load_meta(&path).unwrap().step, 101);
    assert_eq!(loaded.get("awkward").unwrap().to_vec::<f32>().unwrap()[1].to_bits(), (-0.0f32).to_bits());
}

#[test]
fn plain_safetensors_is_not_a_checkpoint() {
    let dir = temp_dir();
    let path = dir.path().join("weights.safetensors");
    save_safetensors(&path, [("w", rand_f32(&[2], 9))], None).unwrap();
    assert_mentions(&Checkpoint::load(&path).unwrap_err().to_string(), &["weights.safetensors", "not a privdistill checkpoint"]);
}

// ----- multi-GB file: opening reads nothing -----

/// (rchar, minor faults, major faults) of the calling thread.
fn thread_io_counters() -> (u64, u64, u64) {
    let io = std::fs::read_to_string("/proc/thread-self/io").unwrap();
    let rchar = io.lines().find_map(|l| l.strip_prefix("rchar: ")).unwrap().trim().parse().unwrap();
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    // Fields after the parenthesised command name start with field 3 (state);
    // minflt is field 10 and majflt field 12.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    (rchar, fields[7].parse().unwrap(), fields[9].parse().unwrap())
}

#[cfg(target_os = "linux")]
#[test]
fn opening_a_multi_gb_file_reads_no_tensor_data() {
    use std::os::unix::fs::MetadataExt;
    const GIB: usize = 1 << 30;
    let dir = temp_dir();
    let path: PathBuf = dir.path().join("big.safetensors");
    // Three tensors, 4 GiB in all, described by the header; the data section is a hole.
    let specs =
        [("unet.a", "F32", [256usize, 1 << 20], 4usize), ("unet.b", "F32", [384, 1 << 20], 4), ("unet.c", "F16", [768, 1 << 20], 2)];
    let mut entries = Vec::new();
    let mut offset = 0;
    for (name, dtype, shape, size) in specs {
        let len = shape[0] * shape[1] * size;
        entries.push(format!(
            r#""{name}":{{"dtype":"{dtype}","shape":[{},{}],"data_offsets":[{offset},{}]}}"#,
            shape[0],
            shape[1],
            offset + len
        ));
        offset += len;
    }
    assert_eq!(offset, 4 * GIB);
    let header = format!("{{{}}}", entries.join(","));
    let header = format!("{header:<width$}", width = header.len().next_multiple_of(8));
    let data_start = 8 + header.len();
    {
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(&(header.len() as u64).to_le_bytes()).unwrap();
        f.write_all(header.as_bytes()).unwrap();
        f.set_len((data_start + offset) as u64).unwrap();
        // One known value, at element (200, 12345) of unet.b.
        let b_start = data_start + 256 * (1 << 20) * 4;
        f.seek(SeekFrom::Start((b_start + (200 * (1 << 20) + 12345) * 4) as u64)).unwrap();
        f.write_all(&1.75f32.to_le_bytes()).unwrap();
        f.sync_all().unwrap();
    }
    let md = std::fs::metadata(&path).unwrap();
    assert_eq!(md.len() as usize, data_start + 4 * GIB);
    assert!(md.blocks() * 512 < 1 << 20, "the test file should be sparse ({} bytes allocated)", md.blocks() * 512);

    let before = thread_io_counters();
    let started = Instant::now();
    let file = SafeTensorsFile::open(&path).unwrap();
    let open_time = started.elapsed();
    let after = thread_io_counters();
    let (read, faults) = (after.0 - before.0, (after.1 + after.2) - (before.1 + before.2));
    println!(
        "open of a {:.1} GiB safetensors file: {:.3} ms, {read} bytes read, page faults: {faults}",
        md.len() as f64 / GIB as f64,
        open_time.as_secs_f64() * 1e3
    );
    assert!(open_time.as_millis() < 50, "open took {open_time:?}");
    // Reading the data would be 4 GiB through read() or ~1M page faults; the
    // counters include this thread's own reads of /proc (a few hundred bytes).
    assert!(read < 64 * 1024, "open read {read} bytes");
    assert!(faults < 1000, "open faulted {faults} pages");
    assert_eq!(file.names(), ["unet.a", "unet.b", "unet.c"]);

    // A lazy get, then one element read: only that page is touched.
    let before = thread_io_counters();
    let b = file.get("unet.b").unwrap();
    assert!(is_mapped(&b));
    let one = b.narrow(0, 200, 1).unwrap().narrow(1, 12345, 1).unwrap().to_vec::<f32>().unwrap();
    let after = thread_io_counters();
    assert_eq!(one, [1.75]);
    let faults = (after.1 + after.2) - (before.1 + before.2);
    assert!(faults < 1000, "get + one element faulted {faults} pages");
    assert_eq!(file.get("unet.c").unwrap().narrow(0, 767, 1).unwrap().narrow(1, 0, 1).unwrap().to_vec::<f16>().unwrap(), [f16::ZERO]);
}
