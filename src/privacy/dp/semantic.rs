//! PrivImage's semantic query (Li et al., USENIX Security 2024): which public
//! images to pretrain on, chosen by a differentially private summary of what
//! the sensitive images show.
//!
//! 1. A *semantic classifier* is trained on the public data only
//!    ([`train_semantic_classifier`]): a multi-label DenseNet (the downstream
//!    classifier of [`crate::eval::classifier`], reused) over the semantic
//!    classes — the public manifest's label names and, where records carry a
//!    `view`, one class per view (`view:PA`, `view:AP`, …).
//! 2. The *query*: every sensitive image adds 1 to each of the `k` classes its
//!    classifier scores rank highest ([`semantic_histogram`]). By default a
//!    class's score is its log-odds lift over the class's public prevalence
//!    ([`Ranking::Lift`]): raw multi-label probabilities would rank the common
//!    classes (a view held by 60% of images) first in nearly every image, so
//!    every image would vote for the same classes and the query would say
//!    nothing. Adding or
//!    removing one image changes `k` distinct bins by 1, so the histogram's L2
//!    sensitivity is √k ([`l2_sensitivity`]; under replace-one adjacency it
//!    would be √(2k)). Gaussian noise of standard deviation σ_q·√k per bin
//!    makes it the Gaussian mechanism with noise multiplier σ_q
//!    ([`noisy_counts`]); its privacy cost is what the RDP accountant's
//!    `compose_gaussian(σ_q)` adds, composed with DP-SGD's. Clamping at zero
//!    and normalising ([`noisy_histogram`]) are post-processing and cost
//!    nothing.
//! 3. The *selection*: public images are drawn so that their semantic
//!    distribution matches the noisy one ([`select_public`]) — per class, a
//!    quota proportional to its noisy frequency, filled with public images
//!    whose top-1 class it is first, then those that have it at rank 2, …, k.
//!
//! The raw histogram is private: only the noisy distribution may be written
//! to disk ([`SemanticQuery`] holds nothing else derived from the sensitive
//! data).

use crate::data::{Manifest, Split};
use crate::eval::classifier::{Classifier, ClassifierConfig, LabelledSet, TrainingLog};
use crate::io::write_atomic_json;
use crate::{Error, Result, Rng};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// Prefix of the semantic classes made from a record's `view` (`view:PA`).
pub const VIEW_PREFIX: &str = "view:";

/// The file beside a semantic classifier's weights holding its classes, priors and ranking.
pub const SEMANTIC_FILE: &str = "semantic.json";

/// How an image's classes are ranked for its top-k.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ranking {
    /// logit(p_c) − logit(π_c), π_c the class's prevalence in the public training set: the classes
    /// this image shows more than a typical image does.
    Lift,
    /// The classifier's probability p_c (right when classes are about equally common).
    Probability,
}

/// How the semantic query is made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SemanticConfig {
    /// The semantic classes. Empty picks them from the public manifest: every label name, then
    /// `view:<v>` for every view, keeping those with at least one positive and one negative record.
    /// A name `view:<v>` means "the record's `view` is `<v>`".
    pub labels: Vec<String>,
    /// Classes each sensitive image votes for (the L2 sensitivity of the query is √top_k).
    pub top_k: usize,
    /// How classes are ranked for the top-k (`"lift"` or `"probability"`); fixed into the semantic
    /// classifier (its `semantic.json`) when it is trained.
    pub ranking: Ranking,
    /// σ_q: the query noise's standard deviation relative to the L2 sensitivity (noise std per bin
    /// = σ_q·√top_k). The query is the Gaussian mechanism with this noise multiplier.
    pub query_noise_multiplier: f64,
    /// The semantic classifier; `labels` must stay unset (the classes come from `labels` above).
    /// No AUC-M stage by default: top-k compares scores across classes, which wants the calibrated
    /// probabilities of cross-entropy rather than AUC-M's per-class ranking scores.
    pub classifier: ClassifierConfig,
    /// Seed of the query noise and of the public selection (the classifier has its own `classifier.seed`).
    pub seed: u64,
}

impl Default for SemanticConfig {
    /// Paper-size classifier (DenseNet-121 at 224×224), top-2 votes, σ_q = 20: at δ = 1e-5 the query
    /// alone costs ε ≈ 0.25, a modest share of ε = 1, while a class with a few hundred votes still
    /// stands well above the noise (std ≈ 28).
    fn default() -> Self {
        SemanticConfig {
            labels: Vec::new(),
            top_k: 2,
            ranking: Ranking::Lift,
            query_noise_multiplier: 20.0,
            classifier: ClassifierConfig { aucm_epochs: 0, ..ClassifierConfig::default() },
            seed: 0,
        }
    }
}

impl SemanticConfig {
    /// The offline demo: the small 64×64 DenseNet of [`ClassifierConfig::demo`], cross-entropy only.
    pub fn demo() -> Self {
        SemanticConfig { classifier: ClassifierConfig { aucm_epochs: 0, ..ClassifierConfig::demo() }, ..SemanticConfig::default() }
    }

    /// Checks the fields that do not depend on the data.
    pub fn validate(&self) -> Result<()> {
        if self.top_k == 0 {
            return Err(Error::msg("semantic: field `top_k` must be at least 1"));
        }
        check_noise_multiplier(self.query_noise_multiplier)?;
        if self.classifier.labels.is_some() {
            return Err(Error::msg("semantic: set the semantic classes in `labels`, not in `classifier.labels`"));
        }
        Ok(())
    }
}

/// The L2 sensitivity of the top-k histogram under add/remove-one adjacency: √k.
pub fn l2_sensitivity(top_k: usize) -> f64 {
    (top_k as f64).sqrt()
}

/// The query noise's standard deviation per bin: σ_q·√k.
pub fn noise_std(query_noise_multiplier: f64, top_k: usize) -> f64 {
    query_noise_multiplier * l2_sensitivity(top_k)
}

/// Whether record `record` of a manifest belongs to semantic class `class`.
fn has_class(record: &crate::data::Record, class: &str) -> bool {
    match class.strip_prefix(VIEW_PREFIX) {
        Some(view) => record.view.as_deref() == Some(view),
        None => record.has_label(class),
    }
}

/// The semantic classes of a public manifest: its label names, then `view:<v>` per view, each kept
/// only if some records have it and some do not (a class every image has, or none, tells nothing).
pub fn default_classes(public: &Manifest) -> Vec<String> {
    let mut views: Vec<String> = public.records.iter().filter_map(|r| r.view.as_ref()).map(|v| format!("{VIEW_PREFIX}{v}")).collect();
    views.sort();
    views.dedup();
    let informative = |c: &String| {
        let p = public.records.iter().filter(|r| has_class(r, c)).count();
        p > 0 && p < public.len()
    };
    public.label_names().into_iter().chain(views).filter(informative).collect()
}

/// A classifier of semantic classes trained on public data.
pub struct SemanticClassifier {
    /// The multi-label DenseNet; its card's labels are the semantic classes, in score order.
    pub classifier: Classifier,
    /// What [`SemanticClassifier::scores`] ranks by.
    pub card: SemanticCard,
}

/// `semantic.json` of a semantic classifier folder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SemanticCard {
    /// The semantic classes, in score order (the classifier's labels).
    pub classes: Vec<String>,
    /// Each class's prevalence in the public training set, in (0, 1).
    pub priors: Vec<f64>,
    /// How scores rank the classes.
    pub ranking: Ranking,
}

/// What training the semantic classifier did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SemanticTraining {
    /// The semantic classes, in score order.
    pub classes: Vec<String>,
    /// Public records with each class.
    pub positives: Vec<usize>,
    /// Public training images.
    pub images: usize,
    /// Losses and time.
    pub log: TrainingLog,
}

impl SemanticClassifier {
    /// The semantic classes, in score order.
    pub fn classes(&self) -> &[String] {
        &self.classifier.card.labels
    }

    /// Class probabilities `[records][classes]` of `indices` of `manifest`, in that order.
    pub fn probabilities(&self, manifest: &Arc<Manifest>, indices: &[usize], batch_size: usize, workers: usize) -> Result<Vec<Vec<f64>>> {
        self.classifier.predict(manifest, indices, batch_size, workers)
    }

    /// The ranking scores `[records][classes]` (see [`Ranking`]) of `indices` of `manifest`: what
    /// the top-k of the query and of the selection compare.
    pub fn scores(&self, manifest: &Arc<Manifest>, indices: &[usize], batch_size: usize, workers: usize) -> Result<Vec<Vec<f64>>> {
        let p = self.probabilities(manifest, indices, batch_size, workers)?;
        Ok(ranking_scores(p, &self.card.priors, self.card.ranking))
    }

    /// Writes the classifier folder (`config.json`, `model.safetensors`, `semantic.json`).
    pub fn save(&self, folder: &Path) -> Result<()> {
        self.classifier.save(folder)?;
        write_atomic_json(folder.join(SEMANTIC_FILE), &self.card)
    }

    /// Loads a classifier folder written by [`SemanticClassifier::save`].
    pub fn load(folder: &Path) -> Result<SemanticClassifier> {
        let classifier = Classifier::load(folder)?;
        let path = folder.join(SEMANTIC_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let card: SemanticCard = serde_json::from_str(&text).map_err(|e| Error::file(&path, e.to_string()))?;
        if card.classes != classifier.card.labels || card.priors.len() != card.classes.len() {
            return Err(Error::file(&path, "field `classes`/`priors` does not match the classifier's labels in config.json"));
        }
        if let Some(p) = card.priors.iter().find(|p| !(**p > 0.0 && **p < 1.0)) {
            return Err(Error::file(&path, format!("field `priors`: {p} is not in (0, 1)")));
        }
        Ok(SemanticClassifier { classifier, card })
    }
}

/// Probabilities `[records][classes]` turned into ranking scores: unchanged for
/// [`Ranking::Probability`], logit(p_c) − logit(π_c) for [`Ranking::Lift`] with `priors` π.
pub fn ranking_scores(mut probabilities: Vec<Vec<f64>>, priors: &[f64], ranking: Ranking) -> Vec<Vec<f64>> {
    if ranking == Ranking::Lift {
        for row in &mut probabilities {
            for (v, &prior) in row.iter_mut().zip(priors) {
                *v = logit(*v) - logit(prior);
            }
        }
    }
    probabilities
}

/// log(p / (1 − p)), with p kept off 0 and 1 so a saturated sigmoid stays finite.
fn logit(p: f64) -> f64 {
    let p = p.clamp(1e-7, 1.0 - 1e-7);
    (p / (1.0 - p)).ln()
}

/// Trains the semantic classifier on every record of `public` (public data needs no held-out split).
/// Records lacking a label count as negatives for it. `bar` shows progress (the caller finishes it).
pub fn train_semantic_classifier(
    cfg: &SemanticConfig,
    public: &Manifest,
    bar: &indicatif::ProgressBar,
) -> Result<(SemanticClassifier, SemanticTraining)> {
    cfg.validate()?;
    let classes = if cfg.labels.is_empty() {
        let found = default_classes(public);
        if found.is_empty() {
            return Err(Error::file(&public.path, "no semantic class: no label or view is present in some records and absent in others"));
        }
        found
    } else {
        cfg.labels.clone()
    };
    let positives: Vec<usize> = classes.iter().map(|c| public.records.iter().filter(|r| has_class(r, c)).count()).collect();
    for (c, &p) in classes.iter().zip(&positives) {
        if p == 0 || p == public.len() {
            let what = if p == 0 { "no record has it" } else { "every record has it" };
            return Err(Error::file(&public.path, format!("field `labels`: semantic class `{c}` cannot be learnt: {what}")));
        }
    }
    if cfg.top_k > classes.len() {
        return Err(Error::msg(format!("semantic: field `top_k` = {} exceeds the {} semantic classes", cfg.top_k, classes.len())));
    }
    // The classifier reads 0/1 targets from `labels`; give it a copy whose labels are exactly the
    // semantic classes (view classes included). Same path, so image paths resolve as before.
    let mut records = public.records.clone();
    for r in &mut records {
        let labels: BTreeMap<String, u8> = classes.iter().map(|c| (c.clone(), u8::from(has_class(r, c)))).collect();
        r.labels = Some(labels);
    }
    let targets = Arc::new(Manifest { path: public.path.clone(), records, lines: public.lines.clone() });
    let set = LabelledSet::new(targets, (0..public.len()).collect(), &classes, None)?;
    let mut classifier = Classifier::new(&cfg.classifier, classes.clone())?;
    let log = classifier.train(&cfg.classifier, &set, bar)?;
    let priors = positives.iter().map(|&p| p as f64 / public.len() as f64).collect();
    let card = SemanticCard { classes: classes.clone(), priors, ranking: cfg.ranking };
    let training = SemanticTraining { classes, positives, images: public.len(), log };
    Ok((SemanticClassifier { classifier, card }, training))
}

/// The `k` classes of one score row, highest first (ties: lower class index first).
pub fn top_k_classes(scores: &[f64], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    order.truncate(k);
    order
}

fn check_scores(scores: &[Vec<f64>], k: usize, what: &str) -> Result<usize> {
    let classes = scores.first().map_or(0, Vec::len);
    if k == 0 || k > classes {
        return Err(Error::msg(format!("semantic: top_k = {k} must be between 1 and the number of classes ({classes})")));
    }
    for (i, row) in scores.iter().enumerate() {
        if row.len() != classes {
            return Err(Error::msg(format!("semantic: {what} row {i} has {} scores, row 0 has {classes}", row.len())));
        }
        if let Some(v) = row.iter().find(|v| !v.is_finite()) {
            return Err(Error::msg(format!("semantic: {what} row {i} has a non-finite score ({v})")));
        }
    }
    Ok(classes)
}

/// The top-k histogram of score rows: each row adds 1 to each of its `k` highest classes.
/// Its L2 sensitivity to adding or removing one row is √k.
pub fn histogram_from_scores(scores: &[Vec<f64>], k: usize) -> Result<Vec<f64>> {
    if scores.is_empty() {
        return Err(Error::msg("semantic: the histogram needs at least one sensitive image"));
    }
    let classes = check_scores(scores, k, "sensitive score")?;
    let mut h = vec![0.0; classes];
    for row in scores {
        for c in top_k_classes(row, k) {
            h[c] += 1.0;
        }
    }
    Ok(h)
}

/// The (private, noiseless) semantic histogram of records `indices` of the sensitive dataset.
pub fn semantic_histogram(classifier: &SemanticClassifier, sensitive: &Arc<Manifest>, indices: &[usize], k: usize) -> Result<Vec<f64>> {
    if indices.is_empty() {
        return Err(Error::file(&sensitive.path, "the semantic query needs at least one sensitive record"));
    }
    let scores = classifier.scores(sensitive, indices, 32, 2)?;
    histogram_from_scores(&scores, k)
}

fn check_noise_multiplier(sigma: f64) -> Result<()> {
    if !(sigma.is_finite() && sigma >= 0.0) {
        return Err(Error::msg(format!("semantic: field `query_noise_multiplier` must be finite and ≥ 0, found {sigma}")));
    }
    Ok(())
}

/// The Gaussian mechanism's output: `h` plus N(0, (σ_q·√k)²) per bin, unclamped.
pub fn noisy_counts(h: &[f64], query_noise_multiplier: f64, k: usize, rng: &mut Rng) -> Result<Vec<f64>> {
    check_noise_multiplier(query_noise_multiplier)?;
    if k == 0 {
        return Err(Error::msg("semantic: top_k must be at least 1"));
    }
    let std = noise_std(query_noise_multiplier, k);
    Ok(h.iter().zip(rng.normal_vec(h.len())).map(|(&v, z)| v + std * z).collect())
}

/// The released semantic distribution: [`noisy_counts`] clamped at 0 and normalised to sum 1.
/// When every noisy count is ≤ 0 the result is uniform (a data-independent answer, so still private).
pub fn noisy_histogram(h: &[f64], query_noise_multiplier: f64, k: usize, rng: &mut Rng) -> Result<Vec<f64>> {
    if h.is_empty() {
        return Err(Error::msg("semantic: the histogram has no classes"));
    }
    let clamped: Vec<f64> = noisy_counts(h, query_noise_multiplier, k, rng)?.into_iter().map(|v| v.max(0.0)).collect();
    let total: f64 = clamped.iter().sum();
    if total > 0.0 {
        Ok(clamped.into_iter().map(|v| v / total).collect())
    } else {
        Ok(vec![1.0 / h.len() as f64; h.len()])
    }
}

/// Splits `n` into integer shares proportional to `weights` (largest remainder; ties to the lower index).
fn proportional_quotas(weights: &[f64], n: usize) -> Vec<usize> {
    let total: f64 = weights.iter().sum();
    if total <= 0.0 {
        return vec![0; weights.len()];
    }
    let exact: Vec<f64> = weights.iter().map(|w| w / total * n as f64).collect();
    let mut quotas: Vec<usize> = exact.iter().map(|e| e.floor() as usize).collect();
    let left = n.saturating_sub(quotas.iter().sum());
    let mut by_remainder: Vec<usize> = (0..weights.len()).filter(|&c| weights[c] > 0.0).collect();
    by_remainder.sort_by(|&a, &b| (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())).then(a.cmp(&b)));
    for &c in by_remainder.iter().cycle().take(left) {
        quotas[c] += 1;
    }
    quotas
}

/// The public images chosen to match a semantic distribution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PublicSelection {
    /// Indices into the public score rows (= public records), ascending.
    pub indices: Vec<usize>,
    /// Each class's share of `n`, proportional to the target distribution.
    pub quotas: Vec<usize>,
    /// Images taken for each class (more than its quota when it absorbed another class's shortfall).
    pub taken: Vec<usize>,
    /// How many of the `n` requested could not be filled: too few public images have a class of
    /// non-zero target frequency among their top-k.
    pub shortfall: usize,
}

/// Draws `n` public images whose semantic distribution matches `distribution` (one weight per
/// class, any positive scale). Class `c` gets a quota ∝ its weight, filled first with public images
/// whose top-1 class is `c`, then with those ranking it 2nd, … k-th, each in a seeded random order; an
/// image is taken once. A class that runs out passes its shortfall on to the classes that still have
/// candidates, in proportion to their weights. Images whose top-k holds only zero-weight classes are
/// never taken. Deterministic given `seed`.
pub fn select_public(public_scores: &[Vec<f64>], distribution: &[f64], n: usize, k: usize, seed: u64) -> Result<PublicSelection> {
    if public_scores.is_empty() {
        return Err(Error::msg("semantic: the public set is empty"));
    }
    let classes = check_scores(public_scores, k, "public score")?;
    if distribution.len() != classes {
        return Err(Error::msg(format!("semantic: the distribution has {} classes, the scores {classes}", distribution.len())));
    }
    if let Some(w) = distribution.iter().find(|w| !(w.is_finite() && **w >= 0.0)) {
        return Err(Error::msg(format!("semantic: distribution weights must be finite and ≥ 0, found {w}")));
    }
    if distribution.iter().sum::<f64>() <= 0.0 {
        return Err(Error::msg("semantic: the distribution is all zero"));
    }
    if n == 0 {
        return Err(Error::msg("semantic: select at least one public image"));
    }
    // candidates[c][r]: the images ranking class c at position r, in one seeded order.
    let mut order: Vec<usize> = (0..public_scores.len()).collect();
    Rng::new(seed).shuffle(&mut order);
    let mut candidates: Vec<Vec<Vec<usize>>> = vec![vec![Vec::new(); k]; classes];
    for &i in &order {
        for (r, c) in top_k_classes(&public_scores[i], k).into_iter().enumerate() {
            candidates[c][r].push(i);
        }
    }
    let quotas = proportional_quotas(distribution, n);
    let mut taken = vec![0usize; classes];
    let mut chosen = vec![false; public_scores.len()];
    // Cursor per (class, rank) into its candidate list; everything before it is taken or skipped.
    let mut cursor = vec![vec![0usize; k]; classes];
    // Classes with the larger quota claim contested (rank ≥ 2) images first.
    let mut by_quota: Vec<usize> = (0..classes).collect();
    by_quota.sort_by(|&a, &b| quotas[b].cmp(&quotas[a]).then(a.cmp(&b)));
    let mut target = quotas.clone();
    loop {
        for r in 0..k {
            for &c in &by_quota {
                let want = target[c].saturating_sub(taken[c]);
                taken[c] += take_unchosen(&candidates[c][r], &mut cursor[c][r], want, &mut chosen);
            }
        }
        let deficit: usize = (0..classes).map(|c| target[c].saturating_sub(taken[c])).sum();
        if deficit == 0 {
            break;
        }
        // A class still short has exhausted its candidates: hand its deficit to classes with some left.
        let open: Vec<f64> = (0..classes)
            .map(|c| {
                let left = (0..k).any(|r| candidates[c][r][cursor[c][r]..].iter().any(|&i| !chosen[i]));
                if left && distribution[c] > 0.0 {
                    distribution[c]
                } else {
                    0.0
                }
            })
            .collect();
        if open.iter().all(|&w| w == 0.0) {
            break;
        }
        for c in 0..classes {
            target[c] = target[c].min(taken[c]);
        }
        for (c, extra) in proportional_quotas(&open, deficit).into_iter().enumerate() {
            target[c] += extra;
        }
    }
    let indices: Vec<usize> = (0..public_scores.len()).filter(|&i| chosen[i]).collect();
    let shortfall = n - indices.len();
    Ok(PublicSelection { indices, quotas, taken, shortfall })
}

/// Takes up to `want` not yet chosen images from `list`, starting at `cursor`; returns how many.
fn take_unchosen(list: &[usize], cursor: &mut usize, want: usize, chosen: &mut [bool]) -> usize {
    let mut got = 0;
    while got < want && *cursor < list.len() {
        let i = list[*cursor];
        *cursor += 1;
        if !chosen[i] {
            chosen[i] = true;
            got += 1;
        }
    }
    got
}

/// Each class's share of the top-1 classes of the rows `indices` (the selection's achieved distribution).
pub fn top1_distribution(scores: &[Vec<f64>], indices: &[usize]) -> Vec<f64> {
    let classes = scores.first().map_or(0, Vec::len);
    let mut h = vec![0.0; classes];
    for &i in indices {
        if let Some(&c) = top_k_classes(&scores[i], 1).first() {
            h[c] += 1.0;
        }
    }
    let total = indices.len().max(1) as f64;
    h.into_iter().map(|v| v / total).collect()
}

/// The released outcome of one semantic query and selection: safe to write to disk (it holds only
/// the noisy distribution, never the raw histogram).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SemanticQuery {
    /// The semantic classes, in order.
    pub classes: Vec<String>,
    /// Classes each sensitive image voted for.
    pub top_k: usize,
    /// What the top-k ranked by.
    pub ranking: Ranking,
    /// σ_q (noise std relative to the L2 sensitivity √k); feed it to the accountant's `compose_gaussian`.
    pub query_noise_multiplier: f64,
    /// The noise's standard deviation per bin, σ_q·√k.
    pub noise_std: f64,
    /// Sensitive records queried.
    pub sensitive_records: usize,
    /// The released distribution (clamped, normalised noisy histogram).
    pub noisy_distribution: Vec<f64>,
    /// The public images selected.
    pub selection: PublicSelection,
    /// The selection's top-1 class distribution, to compare with `noisy_distribution`.
    pub selected_top1: Vec<f64>,
}

/// The whole query: the sensitive records `sensitive_indices` (e.g. the train split) vote, noise is
/// added, and `n` records of `public` are selected to match. The noise draws from
/// `Rng::new(cfg.seed).fork(0)`, the selection's order from `Rng::new(cfg.seed)`.
pub fn semantic_query(
    cfg: &SemanticConfig,
    classifier: &SemanticClassifier,
    sensitive: &Arc<Manifest>,
    sensitive_indices: &[usize],
    public: &Arc<Manifest>,
    n: usize,
) -> Result<SemanticQuery> {
    cfg.validate()?;
    let workers = cfg.classifier.workers.max(1);
    let batch = cfg.classifier.batch_size.max(1);
    let h = semantic_histogram(classifier, sensitive, sensitive_indices, cfg.top_k)?;
    let noisy_distribution = noisy_histogram(&h, cfg.query_noise_multiplier, cfg.top_k, &mut Rng::new(cfg.seed).fork(0))?;
    let all: Vec<usize> = (0..public.len()).collect();
    let public_scores = classifier.scores(public, &all, batch, workers)?;
    let selection = select_public(&public_scores, &noisy_distribution, n, cfg.top_k, cfg.seed)?;
    let selected_top1 = top1_distribution(&public_scores, &selection.indices);
    Ok(SemanticQuery {
        classes: classifier.classes().to_vec(),
        top_k: cfg.top_k,
        ranking: classifier.card.ranking,
        query_noise_multiplier: cfg.query_noise_multiplier,
        noise_std: noise_std(cfg.query_noise_multiplier, cfg.top_k),
        sensitive_records: sensitive_indices.len(),
        noisy_distribution,
        selection,
        selected_top1,
    })
}

/// The records of `manifest` in `split`, or all of them when the manifest has no splits
/// (the sensitive records a query should cover: those the DP model trains on).
pub fn records_in(manifest: &Manifest, split: Split) -> Vec<usize> {
    let in_split = manifest.indices_in(split);
    if in_split.is_empty() && manifest.records.iter().all(|r| r.split.is_none()) {
        (0..manifest.len()).collect()
    } else {
        in_split
    }
}

/// The records of a selection as a new manifest at `path` (image paths made absolute, so it can live
/// anywhere, e.g. `work/privimage/public/manifest.jsonl`).
pub fn selected_manifest(public: &Manifest, selection: &PublicSelection, path: &Path) -> Manifest {
    let records = selection
        .indices
        .iter()
        .map(|&i| {
            let mut r = public.records[i].clone();
            r.image = public.image_path(i).to_string_lossy().into_owned();
            r
        })
        .collect();
    Manifest::new(path, records)
}
