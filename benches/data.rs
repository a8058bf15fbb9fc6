//! Data pipeline throughput: images decoded + preprocessed per second.
//!
//! Uses the shipped real dataset (64×64 PNGs) when this checkout has it
//! (`../shared/data/cxr-real-a` or `assets/cxr-real-a`), else a phantom set
//! of the same size, plus 512×512 phantom PNGs for a larger decode.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use privdistill::data::phantom::{write_phantom, PhantomConfig};
use privdistill::data::{Augment, BatchLoader, Contract, LoaderConfig, Manifest};
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

fn dataset_64(tmp: &Path) -> Manifest {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for candidate in [root.join("../shared/data/cxr-real-a"), root.join("assets/cxr-real-a")] {
        if candidate.join("manifest.jsonl").is_file() {
            return Manifest::load(&candidate).expect("shipped dataset loads");
        }
    }
    write_phantom(&PhantomConfig { patients: 122, images_per_patient: 4, size: 64, seed: 0 }, &tmp.join("p64")).expect("phantom")
}

fn bench_decode_preprocess(c: &mut Criterion) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let m64 = Arc::new(dataset_64(tmp.path()));
    let m512 = Arc::new(
        write_phantom(&PhantomConfig { patients: 16, images_per_patient: 2, size: 512, seed: 0 }, &tmp.path().join("p512"))
            .expect("phantom"),
    );
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);

    let mut g = c.benchmark_group("data");
    g.sample_size(10);
    let cases: Vec<(&str, Arc<Manifest>, Contract, Option<Augment>)> = vec![
        ("png64_ldm64", m64.clone(), Contract::Ldm { size: 64, channels: 1 }, None),
        ("png64_ldm64_augment", m64.clone(), Contract::Ldm { size: 64, channels: 1 }, Some(Augment::chest_xray())),
        ("png64_reid256", m64.clone(), Contract::Reid { size: 256 }, None),
        ("png512_ldm64", m512.clone(), Contract::Ldm { size: 64, channels: 1 }, None),
        ("png512_fid224", m512.clone(), Contract::Fid, None),
    ];
    for (name, m, contract, augment) in cases {
        let n = m.len();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("{name}_1thread"), |b| {
            b.iter(|| {
                for i in 0..n {
                    let mut rng = privdistill::Rng::new(i as u64);
                    let img = m.load_image(i).expect("decodes");
                    let p = match &augment {
                        Some(a) => contract.normalise(&a.apply(&img, contract.size(), &mut rng)),
                        None => contract.apply(&img).expect("contract"),
                    };
                    black_box(p);
                }
            })
        });
        g.bench_function(format!("{name}_loader_{workers}workers"), |b| {
            b.iter(|| {
                let cfg = LoaderConfig { augment, workers, prefetch: 4, ..LoaderConfig::new(32, contract) };
                let loader = BatchLoader::new(m.clone(), (0..n).collect(), cfg).expect("loader");
                for batch in loader {
                    black_box(batch.expect("batch"));
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_decode_preprocess);
criterion_main!(benches);
