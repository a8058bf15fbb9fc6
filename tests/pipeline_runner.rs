//! The stage runner: finished stages are skipped on rerun, a changed input,
//! config or output makes a stage run again, and `force` overrides.

use privdistill::pipeline::workdir::{StageOutput, StageRunner, WorkDir};
use std::cell::Cell;

fn run_chain(root: &std::path::Path, knob: u32, force: &[&str], ran: &Cell<u32>) -> Vec<bool> {
    let mut runner = StageRunner::open(WorkDir::new(root), force.iter().map(|s| s.to_string()), false).unwrap();
    let input = root.join("input.txt");
    let a = root.join("a.txt");
    let b = root.join("b");
    runner
        .stage("first", &knob, &[("input", &input)], &[("a", &a)], || {
            ran.set(ran.get() + 1);
            let text = std::fs::read_to_string(&input).unwrap();
            privdistill::io::write_atomic_bytes(&a, format!("{text}+{knob}").as_bytes())?;
            StageOutput::summary(serde_json::json!({"len": text.len()}))
        })
        .unwrap();
    runner
        .stage("second", &(), &[("a", &a)], &[("b", &b)], || {
            ran.set(ran.get() + 10);
            std::fs::create_dir_all(&b).unwrap();
            privdistill::io::write_atomic_bytes(b.join("x"), std::fs::read(&a).unwrap().as_slice())?;
            StageOutput::summary("ok")
        })
        .unwrap();
    runner.timings().stages.iter().map(|t| t.skipped).collect()
}

#[test]
fn finished_stages_are_skipped_and_changes_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join("input.txt"), "hello").unwrap();
    let ran = Cell::new(0);
    assert_eq!(run_chain(root, 1, &[], &ran), vec![false, false]);
    assert_eq!(ran.get(), 11);
    assert_eq!(run_chain(root, 1, &[], &ran), vec![true, true]);
    assert_eq!(ran.get(), 11, "nothing reruns");
    // A new config value reruns the first stage; its output changes, so the second reruns too.
    assert_eq!(run_chain(root, 2, &[], &ran), vec![false, false]);
    assert_eq!(ran.get(), 22);
    // A deleted output reruns only its stage (the first stage's output is the same bytes again).
    std::fs::remove_dir_all(root.join("b")).unwrap();
    assert_eq!(run_chain(root, 2, &[], &ran), vec![true, false]);
    assert_eq!(ran.get(), 32);
    // A changed input file reruns the chain.
    std::fs::write(root.join("input.txt"), "hello again").unwrap();
    assert_eq!(run_chain(root, 2, &[], &ran), vec![false, false]);
    // Forcing a stage reruns it even when unchanged.
    assert_eq!(run_chain(root, 2, &["second"], &ran), vec![true, false]);
    let timings: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(root.join("timings.json")).unwrap()).unwrap();
    assert_eq!(timings["stages"].as_array().unwrap().len(), 2);
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(root.join("summaries/first.json")).unwrap()).unwrap();
    assert_eq!(summary["len"], 11);
}

#[test]
fn a_missing_input_or_output_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut runner = StageRunner::open(WorkDir::new(dir.path()), Vec::new(), false).unwrap();
    let missing = dir.path().join("nope");
    let err = runner.stage("s", &(), &[("data", &missing)], &[], || StageOutput::summary(1)).unwrap_err().to_string();
    assert!(err.contains("nope") && err.contains("input `data` of stage s"), "{err}");
    let err = runner.stage("s", &(), &[], &[("out", &missing)], || StageOutput::summary(1)).unwrap_err().to_string();
    assert!(err.contains("without writing its output `out`"), "{err}");
}

#[test]
fn the_example_pipeline_config_parses_and_typos_are_named() {
    use privdistill::pipeline::run::{customise, PipelineConfig};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let cfg = PipelineConfig::load(&root.join("configs/pipeline.example.toml"), &[]).unwrap();
    assert_eq!(cfg.filter.delta, 0.5);
    let cfg = PipelineConfig::load(&root.join("configs/pipeline.example.toml"), &["filter.delta=0.3".into()]).unwrap();
    assert_eq!(cfg.filter.delta, 0.3);
    let sample = privdistill::pipeline::sample::SampleConfig::default();
    let tuned = customise(sample, "sample", cfg.stages.get("sample")).unwrap();
    assert_eq!(tuned.per_prompt, 4);

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("p.toml");
    std::fs::write(&bad, "data = \"d\"\nwork = \"w\"\ndeltaa = 0.5\n").unwrap();
    let err = PipelineConfig::load(&bad, &[]).unwrap_err().to_string();
    assert!(err.contains("p.toml") && err.contains("deltaa"), "{err}");
    let mut overrides = toml::Table::new();
    overrides.insert("per_promt".into(), toml::Value::Integer(3));
    let err = customise(privdistill::pipeline::sample::SampleConfig::default(), "sample", Some(&overrides)).unwrap_err().to_string();
    assert!(err.contains("[stages.sample]") && err.contains("per_promt"), "{err}");

    // Checked before any stage runs: δ outside [0, 1], a stage that does not exist.
    let mut cfg = PipelineConfig::demo(&root.join("assets/cxr-real-a"), &dir.path().join("work"));
    cfg.filter.delta = 1.5;
    let err = privdistill::pipeline::run::run_pipeline(&cfg, &[]).unwrap_err().to_string();
    assert!(err.contains("delta"), "{err}");
    cfg.filter.delta = 0.5;
    cfg.stages.insert("trian-ldm".into(), toml::Table::new());
    let err = privdistill::pipeline::run::run_pipeline(&cfg, &[]).unwrap_err().to_string();
    assert!(err.contains("[stages.trian-ldm] is not a stage"), "{err}");
    assert!(!dir.path().join("work").exists(), "nothing is written before the config is checked");
}
