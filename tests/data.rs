//! Data layer: manifests and the bad-input corpus, image contracts, loader,
//! splits, pairs, importers on fixtures, the phantom generator, and the CLI.

use privdistill::data::import::{folder, mimic, table, ImportOptions, UncertainPolicy};
use privdistill::data::phantom::{generate, phantom_image_with, pixel_reid, Acquisition, PhantomConfig};
use privdistill::data::*;
use privdistill::Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The shipped real dataset, or None (with the reason printed) if this checkout has neither copy.
fn real_dataset() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for candidate in [root.join("../shared/data/cxr-real-a"), root.join("assets/cxr-real-a")] {
        if candidate.join("manifest.jsonl").is_file() {
            return Some(candidate);
        }
    }
    eprintln!("skipped: neither ../shared/data/cxr-real-a nor assets/cxr-real-a exists next to {}", root.display());
    None
}

fn phantom_dataset(dir: &Path, patients: usize, per: usize, size: usize, seed: u64) -> Manifest {
    phantom::write_phantom(&PhantomConfig { patients, images_per_patient: per, size, seed }, dir).unwrap()
}

fn privdistill(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_privdistill")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

// ---------------------------------------------------------------- bad input corpus

fn png_bytes(w: usize, h: usize) -> Vec<u8> {
    Image::grey(w, h, vec![0.5; w * h]).to_png()
}

/// A PNG whose header says 0×0 (valid chunk CRC, so only the size is wrong).
fn zero_size_png() -> Vec<u8> {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0]);
    let mut crc = flate2::Crc::new();
    crc.update(&ihdr);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend_from_slice(&13u32.to_be_bytes());
    out.extend_from_slice(&ihdr);
    out.extend_from_slice(&crc.sum().to_be_bytes());
    out
}

struct BadCase {
    name: &'static str,
    manifest: Vec<u8>,
    files: Vec<(&'static str, Vec<u8>)>,
    /// Pieces the error must contain (besides the manifest's path).
    expect: &'static [&'static str],
}

fn bad_corpus() -> Vec<BadCase> {
    let ok = br#"{"image":"a.png","patient":"p1"}"#.to_vec();
    let line = |extra: &[u8]| [ok.clone(), b"\n".to_vec(), extra.to_vec(), b"\n".to_vec()].concat();
    vec![
        BadCase {
            name: "malformed JSON line",
            manifest: line(br#"{"image":"b.png","patient":"p2""#),
            files: vec![],
            expect: &[":2:", "not valid JSON"],
        },
        BadCase {
            name: "missing image",
            manifest: line(br#"{"patient":"p2","text":"x"}"#),
            files: vec![],
            expect: &[":2:", "`image`", "missing"],
        },
        BadCase {
            name: "image file missing",
            manifest: line(br#"{"image":"nope.png","patient":"p2"}"#),
            files: vec![],
            expect: &[":2:", "`image`", "nope.png", "cannot be read"],
        },
        BadCase {
            name: "corrupt image",
            manifest: line(br#"{"image":"bad.png","patient":"p2"}"#),
            files: vec![("bad.png", b"\x89PNG\r\n\x1a\nthis is not a png stream at all".to_vec())],
            expect: &[":2:", "`image`", "bad.png", "cannot be decoded"],
        },
        BadCase {
            name: "unreadable JPEG",
            manifest: line(br#"{"image":"bad.jpg","patient":"p2"}"#),
            files: vec![("bad.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00garbage".to_vec())],
            expect: &[":2:", "`image`", "bad.jpg", "cannot be decoded as Jpeg"],
        },
        BadCase {
            name: "0x0 image",
            manifest: line(br#"{"image":"empty.png","patient":"p2"}"#),
            files: vec![("empty.png", zero_size_png())],
            expect: &[":2:", "`image`", "empty.png", "zero size"],
        },
        BadCase {
            name: "labels not 0/1",
            manifest: line(br#"{"image":"b.png","patient":"p2","labels":{"Edema":0.5}}"#),
            files: vec![],
            expect: &[":2:", "`labels.Edema`", "0 or 1"],
        },
        BadCase {
            name: "duplicate image path",
            manifest: line(br#"{"image":"a.png","patient":"p9"}"#),
            files: vec![],
            expect: &[":2:", "`image`", "already listed on line 1"],
        },
        BadCase {
            name: "non-UTF-8 text",
            manifest: line(b"{\"image\":\"b.png\",\"patient\":\"p2\",\"text\":\"caf\xe9\"}"),
            files: vec![],
            expect: &[":2:", "`text`", "not valid UTF-8"],
        },
        BadCase { name: "empty manifest", manifest: b"\n  \n".to_vec(), files: vec![], expect: &["no records"] },
    ]
}

#[test]
fn bad_inputs_give_clear_errors_naming_file_line_and_field() {
    for case in bad_corpus() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("manifest.jsonl"), &case.manifest).unwrap();
        std::fs::write(dir.path().join("a.png"), png_bytes(4, 4)).unwrap();
        std::fs::write(dir.path().join("b.png"), png_bytes(4, 4)).unwrap();
        for (name, bytes) in &case.files {
            std::fs::write(dir.path().join(name), bytes).unwrap();
        }
        // Library: load + check images.
        let err = Manifest::load(dir.path()).and_then(|m| m.check_images()).expect_err(case.name).to_string();
        assert!(err.contains("manifest.jsonl"), "{}: {err}", case.name);
        for piece in case.expect {
            assert!(err.contains(piece), "{}: `{piece}` not in: {err}", case.name);
        }
        // CLI: non-zero exit, the same message, no panic.
        let (ok, _, stderr) = privdistill(&["data", "stats", "--check-images", dir.path().to_str().unwrap()]);
        assert!(!ok, "{}: exit status 0", case.name);
        assert!(!stderr.contains("panicked"), "{}: {stderr}", case.name);
        for piece in case.expect {
            assert!(stderr.contains(piece), "{}: `{piece}` not in CLI stderr: {stderr}", case.name);
        }
    }
}

#[test]
fn manifest_rewrite_keeps_unknown_fields_and_provenance() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"{"image":"a.png","patient":7,"prompt_index":3,"seed":42,"model":"ldm-real@abc","source":{"repo":"x"},"s_reid":0.25,"note":"kept"}"#;
    std::fs::write(dir.path().join("manifest.jsonl"), format!("{text}\n")).unwrap();
    let mut m = Manifest::load(dir.path()).unwrap();
    assert_eq!(m.records[0].patient, "7");
    m.records[0].split = Some(Split::Test);
    m.save().unwrap();
    let v: serde_json::Value = serde_json::from_str(std::fs::read_to_string(dir.path().join("manifest.jsonl")).unwrap().trim()).unwrap();
    assert_eq!(v["s_reid"], 0.25);
    assert_eq!(v["note"], "kept");
    assert_eq!(v["split"], "test");
    assert_eq!(v["prompt_index"], 3);
    assert_eq!(v["source"]["repo"], "x");
}

// ---------------------------------------------------------------- images and contracts

#[test]
fn decodes_8_and_16_bit_grey_and_rgb_jpeg() {
    let f = fixtures().join("folder");
    let grey8 = read_image(&f.join("pA/s1/view1.png")).unwrap();
    assert_eq!((grey8.width, grey8.height, grey8.channels), (12, 10, 1));
    assert!((grey8.data[1] - 20.0 / 255.0).abs() < 1e-6);
    let grey16 = read_image(&f.join("pA/s2/view1.png")).unwrap();
    assert_eq!((grey16.width, grey16.height, grey16.channels), (10, 12, 1));
    // 16-bit precision survives: pixel (1, 0) is 6000/65535, not a multiple of 1/255.
    assert!((grey16.data[1] - 6000.0 / 65535.0).abs() < 1e-7);
    let rgb = read_image(&f.join("pB/scan.jpg")).unwrap();
    assert_eq!((rgb.width, rgb.height, rgb.channels), (12, 12, 3));
}

#[test]
fn each_consumer_gets_its_contract() {
    let img = Image::grey(32, 32, (0..1024).map(|i| (i % 32) as f32 / 31.0).collect());
    let range = |t: &privdistill::Tensor| {
        let v = t.to_vec_f32().unwrap();
        (v.iter().cloned().fold(f32::INFINITY, f32::min), v.iter().cloned().fold(f32::NEG_INFINITY, f32::max))
    };
    let ldm = ldm_input(&img, 16, 1).unwrap();
    assert_eq!(ldm.shape(), &[1, 16, 16]);
    let (lo, hi) = range(&ldm);
    assert!(lo >= -1.0 && hi <= 1.0 && lo < -0.8 && hi > 0.8, "{lo} {hi}");
    assert_eq!(ldm_input(&img, 8, 3).unwrap().shape(), &[3, 8, 8]);
    assert!(ldm_input(&img, 8, 2).is_err());

    let reid = reid_input(&img, 32).unwrap();
    assert_eq!(reid.shape(), &[3, 32, 32]);
    let v = reid.to_vec_f32().unwrap();
    // Black maps to -mean/std per channel.
    for c in 0..3 {
        let min = v[c * 1024..(c + 1) * 1024].iter().cloned().fold(f32::INFINITY, f32::min);
        let black = -contract::IMAGENET_MEAN[c] / contract::IMAGENET_STD[c];
        assert!((min - black).abs() < 0.1, "channel {c}: {min} vs {black}");
    }

    let fid = fid_input(&img).unwrap();
    assert_eq!(fid.shape(), &[1, 224, 224]);
    let (lo, hi) = range(&fid);
    assert!(lo >= -1024.0 && hi <= 1024.0 && lo < -900.0 && hi > 900.0, "{lo} {hi}");

    let cls = classifier_input(&img, 64).unwrap();
    assert_eq!(cls.shape(), &[1, 64, 64]);

    let batch = Contract::Ldm { size: 8, channels: 1 }.batch(&[img.clone(), img.to_rgb()]).unwrap();
    assert_eq!(batch.shape(), &[2, 1, 8, 8]);
}

// ---------------------------------------------------------------- loader

#[test]
fn loader_batches_in_order_and_does_not_depend_on_worker_count() {
    let dir = tempfile::tempdir().unwrap();
    let m = Arc::new(phantom_dataset(dir.path(), 5, 3, 24, 9));
    let run = |workers: usize| {
        let cfg = LoaderConfig {
            augment: Some(Augment::chest_xray()),
            shuffle: true,
            seed: 5,
            epoch: 2,
            workers,
            prefetch: 2,
            ..LoaderConfig::new(4, Contract::Ldm { size: 16, channels: 1 })
        };
        let loader = BatchLoader::new(m.clone(), (0..m.len()).collect(), cfg).unwrap();
        assert_eq!(loader.n_batches(), 4);
        loader.map(|b| b.unwrap()).map(|b| (b.indices, b.images.shape().to_vec(), b.images.to_vec_f32().unwrap())).collect::<Vec<_>>()
    };
    let one = run(1);
    let three = run(3);
    assert_eq!(one, three);
    let seen: BTreeSet<usize> = one.iter().flat_map(|(i, _, _)| i.clone()).collect();
    assert_eq!(seen.len(), 15);
    assert_eq!(one[0].1, vec![4, 1, 16, 16]);
    assert_eq!(one[3].1, vec![3, 1, 16, 16]);
    // Dropping a loader mid-epoch stops its workers.
    let mut early = BatchLoader::new(m.clone(), (0..m.len()).collect(), LoaderConfig::new(1, Contract::Fid)).unwrap();
    assert!(early.next().unwrap().is_ok());
    drop(early);
}

#[test]
fn loader_reports_a_bad_image_as_an_error_item() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("manifest.jsonl"),
        "{\"image\":\"a.png\",\"patient\":\"p\"}\n{\"image\":\"gone.png\",\"patient\":\"q\"}\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("a.png"), png_bytes(8, 8)).unwrap();
    let m = Arc::new(Manifest::load(dir.path()).unwrap());
    let items: Vec<_> = BatchLoader::new(m, vec![0, 1], LoaderConfig::new(1, Contract::Reid { size: 8 })).unwrap().collect();
    assert!(items[0].is_ok());
    let e = items[1].as_ref().unwrap_err().to_string();
    assert!(e.contains("manifest.jsonl:2") && e.contains("gone.png"), "{e}");
}

// ---------------------------------------------------------------- splits and pairs

fn assert_no_patient_overlap(m: &Manifest, splits: &[Split]) {
    let mut side: BTreeMap<&str, Split> = BTreeMap::new();
    for (r, &s) in m.records.iter().zip(splits) {
        assert_eq!(*side.entry(r.patient.as_str()).or_insert(s), s, "patient {} is on two sides", r.patient);
    }
}

#[test]
fn split_is_by_patient_deterministic_and_roughly_proportional() {
    let dir = tempfile::tempdir().unwrap();
    let m = phantom_dataset(dir.path(), 60, 2, 8, 1);
    let cfg = SplitConfig { val: 0.15, test: 0.15, seed: 3, stratify: true };
    let (a, report) = assign_splits(&m, &cfg).unwrap();
    let (b, _) = assign_splits(&m, &cfg).unwrap();
    let (c, _) = assign_splits(&m, &SplitConfig { seed: 4, ..cfg }).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_no_patient_overlap(&m, &a);
    let patients: usize = report.counts.values().map(|c| c.patients).sum();
    assert_eq!(patients, 60);
    for (split, want) in [(Split::Train, 42.0), (Split::Val, 9.0), (Split::Test, 9.0)] {
        let got = report.counts[&split].patients as f64;
        assert!((got - want).abs() <= 3.0, "{split}: {got} patients, want about {want}");
    }
    let text = report.to_string();
    assert!(text.contains("train") && text.contains("Cardiomegaly"), "{text}");
}

#[test]
fn split_cli_rewrites_the_manifest_atomically_and_reports_counts() {
    let dir = tempfile::tempdir().unwrap();
    phantom_dataset(dir.path(), 12, 2, 8, 2);
    let (ok, stdout, stderr) = privdistill(&["data", "split", dir.path().to_str().unwrap(), "--seed", "1"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("patients") && stdout.contains("train"), "{stdout}");
    let m = Manifest::load(dir.path()).unwrap();
    let splits: Vec<Split> = m.records.iter().map(|r| r.split.expect("every record has a split")).collect();
    assert_no_patient_overlap(&m, &splits);
    // Nothing but the manifest and images is left behind (no temporary files).
    let names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn split_of_the_real_dataset_has_no_patient_overlap() {
    let Some(real) = real_dataset() else { return };
    let m = Manifest::load(&real).unwrap();
    let (splits, report) = assign_splits(&m, &SplitConfig::default()).unwrap();
    assert_no_patient_overlap(&m, &splits);
    assert_eq!(report.counts.values().map(|c| c.images).sum::<usize>(), 488);
    assert_eq!(report.counts.values().map(|c| c.patients).sum::<usize>(), 292);
    assert!(report.counts[&Split::Val].labels["COVID-19"] > 0 && report.counts[&Split::Test].labels["COVID-19"] > 0);
}

#[test]
fn reid_pairs_are_balanced_and_correct() {
    let dir = tempfile::tempdir().unwrap();
    let m = phantom_dataset(dir.path(), 10, 3, 8, 4);
    let sampler = PairSampler::new(&m, &(0..m.len()).collect::<Vec<_>>()).unwrap();
    assert_eq!(sampler.n_positive_pairs(), 30);
    let pairs = sampler.epoch(100, &mut Rng::new(1));
    assert_eq!(pairs.len(), 200);
    let positives: Vec<&Pair> = pairs.iter().filter(|p| p.same_patient).collect();
    assert_eq!(positives.len(), 100);
    let distinct: BTreeSet<(usize, usize)> = positives.iter().map(|p| (p.a.min(p.b), p.a.max(p.b))).collect();
    assert_eq!(distinct.len(), 30, "oversampling cycles through every positive pair");
    for p in &pairs {
        assert_ne!(p.a, p.b);
        assert_eq!(m.records[p.a].patient == m.records[p.b].patient, p.same_patient);
    }
    assert_eq!(pairs, sampler.epoch(100, &mut Rng::new(1)));
    let singles = Manifest::new("m.jsonl", vec![Record::new("a", "p"), Record::new("b", "q")]);
    assert!(PairSampler::new(&singles, &[0, 1]).is_err());
}

// ---------------------------------------------------------------- importers

#[test]
fn mimic_importer_on_the_fixture_tree() {
    let out = tempfile::tempdir().unwrap();
    let opts = ImportOptions::new(out.path());
    let report = mimic::import_mimic(&mimic::MimicOptions::new(fixtures().join("mimic")), &opts).unwrap();
    assert_eq!((report.images, report.patients), (3, 2), "{report}");
    assert_eq!(report.skipped["view not kept (LATERAL)"], 1);
    assert_eq!(report.skipped["image file not found"], 1);
    assert_eq!(report.skipped["impression longer than 76 tokens"], 1);
    assert_eq!(report.skipped["report missing or without an IMPRESSION section"], 1);

    let m = Manifest::load(out.path()).unwrap();
    let by_dicom: BTreeMap<String, &Record> =
        m.records.iter().map(|r| (r.meta.as_ref().unwrap()["dicom_id"].as_str().unwrap().to_string(), r)).collect();
    let normal = by_dicom["02aa804e-bde0afdd-112c0b34-7bc16630-4e384014"];
    assert_eq!(normal.patient, "10000032");
    assert_eq!(normal.text.as_deref(), Some("No acute cardiopulmonary process."));
    assert_eq!(normal.view.as_deref(), Some("PA"));
    assert_eq!(normal.split, Some(Split::Train));
    assert!(normal.labels.as_ref().unwrap().values().all(|&v| v == 0));
    assert_eq!(normal.labels.as_ref().unwrap().len(), 5);
    let edema = by_dicom["2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab"];
    assert_eq!(edema.text.as_deref(), Some("Mild pulmonary edema. Small bilateral pleural effusions."));
    assert!(edema.has_label("Edema") && edema.has_label("Pleural Effusion") && !edema.has_label("Cardiomegaly"));
    assert_eq!(edema.view.as_deref(), Some("AP"));
    let uncertain = by_dicom["096052b7-d256dc40-453a102b-fa7d01c6-1b22c6b4"];
    assert_eq!(uncertain.split, Some(Split::Val));
    assert!(!uncertain.has_label("Atelectasis") && !uncertain.has_label("Consolidation"), "uncertain → 0 by default");
    // Image paths resolve from the output folder.
    m.check_images().unwrap();

    // Uncertain → 1, and → drop.
    let out_one = tempfile::tempdir().unwrap();
    let mut one = ImportOptions::new(out_one.path());
    one.uncertain = UncertainPolicy::One;
    mimic::import_mimic(&mimic::MimicOptions::new(fixtures().join("mimic")), &one).unwrap();
    let m = Manifest::load(out_one.path()).unwrap();
    assert!(m.records.iter().any(|r| r.has_label("Atelectasis") && r.has_label("Consolidation")));
    let out_drop = tempfile::tempdir().unwrap();
    let mut drop = ImportOptions::new(out_drop.path());
    drop.uncertain = UncertainPolicy::Drop;
    drop.resize = Some(8);
    let report = mimic::import_mimic(&mimic::MimicOptions::new(fixtures().join("mimic")), &drop).unwrap();
    assert_eq!(report.images, 2);
    let m = Manifest::load(out_drop.path()).unwrap();
    let img = m.load_image(0).unwrap();
    assert_eq!((img.width, img.height, img.channels), (8, 8, 1));
    assert!(m.records[0].image.starts_with("images/"));
}

#[test]
fn mimic_token_limit_takes_any_counter() {
    let out = tempfile::tempdir().unwrap();
    let mut opts = ImportOptions::new(out.path());
    // A tokenizer that thinks every text is long drops everything, with a clear error.
    opts.tokens = Box::new(|_: &str| 1000usize);
    let e = mimic::import_mimic(&mimic::MimicOptions::new(fixtures().join("mimic")), &opts).unwrap_err().to_string();
    assert!(e.contains("nothing to import") && e.contains("longer than 76 tokens"), "{e}");
    opts.token_limit = None;
    assert_eq!(mimic::import_mimic(&mimic::MimicOptions::new(fixtures().join("mimic")), &opts).unwrap().images, 4);
}

#[test]
fn csv_importer_on_the_fixture_table() {
    let out = tempfile::tempdir().unwrap();
    let t = table::TableOptions {
        table: fixtures().join("table.csv"),
        image_column: "path".into(),
        patient_column: "subject".into(),
        text_column: Some("report".into()),
        view_column: Some("ViewPosition".into()),
        split_column: None,
        label_columns: vec!["Edema".into(), "Cardiomegaly".into()],
        image_root: None,
    };
    let report = table::import_table(&t, &ImportOptions::new(out.path())).unwrap();
    assert_eq!((report.images, report.patients), (3, 2));
    let m = Manifest::load(out.path()).unwrap();
    assert_eq!(m.records[0].text.as_deref(), Some("Small left pleural effusion, stable."));
    assert!(m.records[0].has_label("Cardiomegaly") && !m.records[0].has_label("Edema"));
    assert!(m.records[1].has_label("Edema") && !m.records[1].has_label("Cardiomegaly"));
    assert_eq!(m.records[2].text, None);
    assert_eq!(m.records[2].view.as_deref(), Some("PA"));
    m.check_images().unwrap();

    let bad = table::TableOptions { label_columns: vec!["Nope".into()], ..t };
    let e = table::import_table(&bad, &ImportOptions::new(out.path())).unwrap_err().to_string();
    assert!(e.contains("table.csv:1") && e.contains("`Nope`") && e.contains("columns: path, subject"), "{e}");
}

#[test]
fn folder_importer_on_the_fixture_tree() {
    let out = tempfile::tempdir().unwrap();
    let report = folder::import_folder(&fixtures().join("folder"), &ImportOptions::new(out.path())).unwrap();
    assert_eq!((report.images, report.patients), (3, 2));
    assert_eq!(report.skipped["image not inside a patient folder"], 1);
    let m = Manifest::load(out.path()).unwrap();
    let patients: Vec<&str> = m.records.iter().map(|r| r.patient.as_str()).collect();
    assert_eq!(patients, ["pA", "pA", "pB"]);
    assert_eq!(m.records[0].text.as_deref(), Some("Small left pleural effusion."));
    m.check_images().unwrap();
}

#[test]
fn import_cli_runs_each_importer() {
    let out = tempfile::tempdir().unwrap();
    let root = fixtures();
    let o = |name: &str| out.path().join(name).to_string_lossy().into_owned();
    let (ok, stdout, stderr) =
        privdistill(&["data", "import", "mimic", "--root", root.join("mimic").to_str().unwrap(), "--out", &o("m"), "--size", "16"]);
    assert!(ok && stdout.contains("3 images, 2 patients"), "{stdout}{stderr}");
    let (ok, stdout, stderr) = privdistill(&[
        "data",
        "import",
        "csv",
        "--table",
        root.join("table.csv").to_str().unwrap(),
        "--image-column",
        "path",
        "--patient-column",
        "subject",
        "--label-column",
        "Edema",
        "--out",
        &o("c"),
    ]);
    assert!(ok && stdout.contains("3 images"), "{stdout}{stderr}");
    let (ok, stdout, stderr) = privdistill(&["data", "import", "folder", root.join("folder").to_str().unwrap(), "--out", &o("f")]);
    assert!(ok && stdout.contains("3 images, 2 patients"), "{stdout}{stderr}");
    let (ok, _, stderr) = privdistill(&["data", "import", "mimic", "--root", "/nonexistent", "--out", &o("x")]);
    assert!(!ok && stderr.contains("mimic-cxr-2.0.0-metadata.csv"), "{stderr}");
}

// ---------------------------------------------------------------- phantom

#[test]
fn phantom_is_deterministic_per_seed() {
    let cfg = PhantomConfig { patients: 3, images_per_patient: 2, size: 32, seed: 11 };
    let a = generate(&cfg);
    let b = generate(&cfg);
    let c = generate(&PhantomConfig { seed: 12, ..cfg.clone() });
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.image, y.image);
        assert_eq!(x.record, y.record);
    }
    assert_ne!(a[0].image, c[0].image);
    // Written files are byte-identical too.
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    phantom_dataset(d1.path(), 2, 2, 16, 5);
    phantom_dataset(d2.path(), 2, 2, 16, 5);
    for name in ["manifest.jsonl", "images/p00001_001.png"] {
        assert_eq!(std::fs::read(d1.path().join(name)).unwrap(), std::fs::read(d2.path().join(name)).unwrap());
    }
}

#[test]
fn phantom_labels_match_report_and_every_pathology_occurs() {
    let ph = generate(&PhantomConfig { patients: 40, images_per_patient: 3, size: 8, seed: 0 });
    let mut positives: BTreeMap<String, usize> = BTreeMap::new();
    for p in &ph {
        let text = p.record.text.as_deref().unwrap().to_lowercase();
        let labels = p.record.labels.as_ref().unwrap();
        for (name, &v) in labels {
            *positives.entry(name.clone()).or_default() += v as usize;
        }
        let mentions = |words: &[&str]| words.iter().any(|w| text.contains(w));
        assert_eq!(labels["Cardiomegaly"] == 1, mentions(&["cardiomegaly", "heart is enlarged", "enlargement of the cardiac"]), "{text}");
        assert_eq!(labels["Pleural Effusion"] == 1, mentions(&["effusion."]) || mentions(&["effusions."]), "{text}");
        assert_eq!(labels["Edema"] == 1, mentions(&["edema"]), "{text}");
        assert_eq!(labels["Consolidation"] == 1, mentions(&["consolidation"]), "{text}");
        assert_eq!(labels["Atelectasis"] == 1, mentions(&["atelectasis"]), "{text}");
        assert!(WordPieceEstimate.count_tokens(&text) <= 76, "{text}");
    }
    for name in mimic::PATHOLOGIES {
        assert!(positives[name] >= 5, "{name}: {positives:?}");
    }
}

/// The measure: top-1 of pixel-space nearest-neighbour re-identification
/// (standardised pixels, L2) over 40 patients × 4 images at 64×64.
/// - learnable: identity is there — with a neutral acquisition (findings still
///   vary) top-1 is ≥ 0.9, and even raw top-1 is ≥ 4× chance;
/// - not trivial: raw top-1 ≤ 0.5 and the median same-patient distance is at
///   least 0.8 of the median different-patient distance (no near-copies).
///
/// For reference the shipped real data (cxr-real-a) score top-1 0.23, ratio 0.80.
#[test]
fn phantom_reidentification_is_learnable_but_not_trivial() {
    let cfg = PhantomConfig { patients: 40, images_per_patient: 4, size: 64, seed: 0 };
    let ph = generate(&cfg);
    let images: Vec<Image> = ph.iter().map(|p| p.image.clone()).collect();
    let patients: Vec<String> = ph.iter().map(|p| p.record.patient.clone()).collect();
    let raw = pixel_reid(&images, &patients).unwrap();
    eprintln!("phantom pixel re-identification: {raw:?}");
    assert!(raw.top1 <= 0.5, "same-patient images are near-copies: {raw:?}");
    assert!(raw.distance_ratio >= 0.8, "{raw:?}");
    assert!(raw.top1 >= 4.0 * raw.chance, "no identity signal: {raw:?}");
    let neutral = Acquisition::neutral();
    let aligned: Vec<Image> = (0..ph.len()).map(|i| phantom_image_with(&cfg, i / 4, i % 4, Some(&neutral)).image).collect();
    let oracle = pixel_reid(&aligned, &patients).unwrap();
    eprintln!("with a neutral acquisition: {oracle:?}");
    assert!(oracle.top1 >= 0.9, "{oracle:?}");
}

// ---------------------------------------------------------------- stats

#[test]
fn stats_of_the_real_dataset() {
    let Some(real) = real_dataset() else { return };
    let m = Manifest::load(&real).unwrap();
    let s = stats::dataset_stats(&m, &WordPieceEstimate, 76);
    assert_eq!((s.images, s.patients, s.patients_with_2_or_more), (488, 292, 109));
    assert_eq!(s.labels["COVID-19"], 393);
    assert_eq!(s.views["PA"], 277);
    assert_eq!(s.text_nonempty, 377);
    let (ok, stdout, stderr) = privdistill(&["data", "stats", real.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("images: 488") && stdout.contains("patients: 292"), "{stdout}");
}
