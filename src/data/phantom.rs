//! Phantom chest X-rays: synthetic patients with a persistent anatomy, imaged
//! several times with per-acquisition variation, with the five pathologies
//! rendered visibly and a report written from the findings.
//!
//! A patient ([`Anatomy`]) fixes: body habitus and soft tissue, lung fields
//! (apices, lateral borders, hemidiaphragm heights and domes), the heart
//! (cardiothoracic ratio, position, shape) and aortic knob, ribs (count,
//! spacing, slope, curvature, thickness, per-rib irregularity), clavicles,
//! the spine (width, scoliosis, vertebral height), the pulmonary vessel tree,
//! incidental marks (calcified granulomas, an old rib callus) and devices
//! (pacemaker, sternotomy wires, chest port), and a disease tendency.
//!
//! An acquisition ([`Acquisition`]) varies: rotation, shift and scale of the
//! patient in the field, inspiration depth (diaphragm level, heart width),
//! AP or PA projection (AP magnifies the heart, raises the clavicles and
//! leaves the scapulae over the lungs), exposure (penetration, gamma,
//! contrast), quantum noise, ECG electrodes and the side marker's position.
//!
//! Findings ([`Findings`]) are drawn per image from the patient's tendency:
//! cardiomegaly (a larger heart), pleural effusion (a dependent opacity with a
//! meniscus that blunts the costophrenic angle), edema (perihilar haze, hazy
//! vessels, Kerley B lines), consolidation (a dense patchy lobar opacity with
//! air bronchograms) and atelectasis (a plate-like basal band with volume
//! loss: the hemidiaphragm rises). The report's impression names them.
//!
//! Everything is a pure function of (seed, patient index, image index), so a
//! dataset is reproducible and images can be rendered in parallel.
//!
//! Re-identification difficulty is measured by [`pixel_reid`]: how often an
//! image's nearest neighbour in standardised pixel space is another image of
//! the same patient. Identity must be present (well above chance) yet not a
//! matter of near-copies (well below 1), so a network has something to learn.

use super::error::{DataError, DataResult};
use super::imaging::Image;
use super::import::mimic::PATHOLOGIES;
use super::manifest::{Manifest, Record, MANIFEST_FILE};
use crate::Rng;
use rayon::prelude::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::f64::consts::PI;
use std::path::Path;

/// What to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct PhantomConfig {
    pub patients: usize,
    pub images_per_patient: usize,
    pub size: usize,
    pub seed: u64,
}

fn uniform(rng: &mut Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.uniform()
}

fn chance(rng: &mut Rng, p: f64) -> bool {
    rng.uniform() < p
}

/// A smooth 0→1 step across a boundary: `d` is a signed distance (positive
/// inside), `w` the transition width.
#[inline]
fn inside(d: f64, w: f64) -> f64 {
    (0.5 + d / w).clamp(0.0, 1.0)
}

/// Distance from point p to segment a–b, and the position t ∈ [0, 1] along it.
#[inline]
fn segment_distance(p: (f64, f64), a: (f64, f64), b: (f64, f64)) -> (f64, f64) {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len2 = dx * dx + dy * dy;
    let t = if len2 > 0.0 { (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / len2).clamp(0.0, 1.0) } else { 0.0 };
    let (qx, qy) = (a.0 + t * dx - p.0, a.1 + t * dy - p.1);
    ((qx * qx + qy * qy).sqrt(), t)
}

/// One vessel segment: end points and thickness at each end.
#[derive(Clone, Copy, Debug)]
struct Vessel {
    a: (f64, f64),
    b: (f64, f64),
    r0: f64,
    r1: f64,
}

/// A patient's persistent anatomy. Coordinates: x ∈ [-1, 1] across the image
/// (patient's right on the image's left, as radiographs are read), y ∈ [-1, 1]
/// downwards.
#[derive(Clone, Debug)]
pub struct Anatomy {
    body_half_width: f64,
    soft_density: f64,
    thorax_half_width: f64,
    apex_y: [f64; 2],
    diaphragm_y: [f64; 2],
    dome: f64,
    mediastinum: f64,
    lung_depth: f64,
    ctr: f64,
    heart_x: f64,
    heart_y: f64,
    heart_height: f64,
    heart_tilt: f64,
    knob_radius: f64,
    rib_first_y: f64,
    rib_spacing: f64,
    rib_growth: f64,
    rib_curve: f64,
    rib_slope: f64,
    rib_thickness: f64,
    rib_jitter: Vec<[f64; 2]>,
    clavicle_y: f64,
    clavicle_angle: f64,
    spine_width: f64,
    scoliosis: f64,
    vertebra_height: f64,
    vertebra_phase: f64,
    vessels: Vec<Vessel>,
    /// Lung parenchyma texture: Gaussian bumps (x, y, width, amplitude).
    texture: Vec<(f64, f64, f64, f64)>,
    trachea_width: f64,
    carina_y: f64,
    granulomas: Vec<(f64, f64, f64)>,
    rib_callus: Option<(usize, usize, f64)>,
    pacemaker: Option<(f64, f64)>,
    sternal_wires: usize,
    port: bool,
    gastric_bubble: (f64, f64, f64),
    /// Chronic cardiomegaly: the heart is large in most of this patient's images.
    cardiomegaly_trait: bool,
    /// How sick the patient tends to be (raises the odds of every finding).
    sickness: f64,
}

impl Anatomy {
    /// Draws a patient.
    pub fn draw(rng: &mut Rng) -> Anatomy {
        let thorax_half_width = uniform(rng, 0.62, 0.78);
        let body_half_width = thorax_half_width + uniform(rng, 0.07, 0.2);
        let right_diaphragm = uniform(rng, 0.32, 0.52);
        let apex = uniform(rng, -0.74, -0.6);
        let mediastinum = uniform(rng, 0.09, 0.15);
        let cardiomegaly_trait = chance(rng, 0.2);
        let heart_height = uniform(rng, 0.2, 0.28);
        let n_ribs = 10;
        let rib_jitter = (0..n_ribs).map(|_| [uniform(rng, -0.025, 0.025), uniform(rng, -0.025, 0.025)]).collect();

        let hilum_y = uniform(rng, -0.12, 0.02);
        let mut vessels = Vec::new();
        for side in [-1.0, 1.0] {
            let hilum = (side * (mediastinum + uniform(rng, 0.06, 0.11)), hilum_y + uniform(rng, -0.03, 0.03));
            let n = 5 + rng.below(4);
            for k in 0..n {
                // A fan from the hilum: upward, lateral and downward branches.
                let base = -0.5 * PI + PI * (k as f64 + 0.5) / n as f64;
                let angle = base + uniform(rng, -0.2, 0.2);
                let len = uniform(rng, 0.22, 0.42);
                let dir = (side * angle.cos(), angle.sin());
                let mid = (hilum.0 + dir.0 * len * 0.55, hilum.1 + dir.1 * len * 0.55);
                let r0 = uniform(rng, 0.014, 0.022);
                vessels.push(Vessel { a: hilum, b: mid, r0, r1: r0 * 0.7 });
                for fork in [-1.0, 1.0] {
                    let a2 = angle + fork * uniform(rng, 0.2, 0.5);
                    let l2 = len * uniform(rng, 0.4, 0.7);
                    let end = (mid.0 + side * a2.cos() * l2, mid.1 + a2.sin() * l2);
                    vessels.push(Vessel { a: mid, b: end, r0: r0 * 0.6, r1: r0 * 0.25 });
                }
            }
        }
        let texture = (0..40)
            .map(|_| {
                let side = if chance(rng, 0.5) { -1.0 } else { 1.0 };
                (
                    side * uniform(rng, mediastinum, thorax_half_width),
                    uniform(rng, apex, right_diaphragm),
                    uniform(rng, 0.04, 0.12),
                    uniform(rng, -1.0, 1.0),
                )
            })
            .collect();
        let mut granulomas = Vec::new();
        while granulomas.len() < 3 && chance(rng, if granulomas.is_empty() { 0.4 } else { 0.3 }) {
            let side = if chance(rng, 0.5) { -1.0 } else { 1.0 };
            granulomas.push((
                side * uniform(rng, mediastinum + 0.12, thorax_half_width - 0.12),
                uniform(rng, apex + 0.15, right_diaphragm - 0.12),
                uniform(rng, 0.012, 0.022),
            ));
        }
        let rib_callus = chance(rng, 0.15).then(|| (2 + rng.below(6), rng.below(2), uniform(rng, 0.35, 0.85)));
        let pacemaker = chance(rng, 0.08).then(|| (uniform(rng, 0.35, 0.55), uniform(rng, -0.62, -0.48)));
        let sternal_wires = if chance(rng, 0.08) { 4 + rng.below(3) } else { 0 };
        let port = chance(rng, 0.05);
        Anatomy {
            body_half_width,
            soft_density: uniform(rng, 0.3, 0.5),
            thorax_half_width,
            apex_y: [apex + uniform(rng, -0.03, 0.03), apex + uniform(rng, -0.03, 0.03)],
            diaphragm_y: [right_diaphragm, right_diaphragm + uniform(rng, 0.0, 0.08)],
            dome: uniform(rng, 0.06, 0.14),
            mediastinum,
            lung_depth: uniform(rng, 0.55, 0.75),
            ctr: if cardiomegaly_trait { uniform(rng, 0.5, 0.56) } else { uniform(rng, 0.38, 0.5) },
            heart_x: uniform(rng, 0.04, 0.13),
            heart_y: right_diaphragm - heart_height * uniform(rng, 0.5, 0.75),
            heart_height,
            heart_tilt: uniform(rng, -0.35, 0.05),
            knob_radius: uniform(rng, 0.045, 0.075),
            rib_first_y: apex + uniform(rng, 0.02, 0.08),
            rib_spacing: uniform(rng, 0.1, 0.13),
            rib_growth: uniform(rng, 1.0, 1.05),
            rib_curve: uniform(rng, 0.3, 0.55),
            rib_slope: uniform(rng, -0.08, 0.02),
            rib_thickness: uniform(rng, 0.022, 0.034),
            rib_jitter,
            clavicle_y: apex + uniform(rng, 0.05, 0.14),
            clavicle_angle: uniform(rng, -0.3, 0.05),
            spine_width: uniform(rng, 0.085, 0.12),
            scoliosis: uniform(rng, -0.05, 0.05),
            vertebra_height: uniform(rng, 0.09, 0.12),
            vertebra_phase: rng.uniform(),
            vessels,
            texture,
            trachea_width: uniform(rng, 0.04, 0.06),
            carina_y: hilum_y - uniform(rng, 0.06, 0.12),
            granulomas,
            rib_callus,
            pacemaker,
            sternal_wires,
            port,
            gastric_bubble: (uniform(rng, 0.2, 0.45), uniform(rng, 0.05, 0.12), uniform(rng, 0.04, 0.08)),
            cardiomegaly_trait,
            sickness: rng.uniform().powi(2),
        }
    }

    /// The devices and incidental marks, as report sentences.
    fn device_sentences(&self) -> Vec<&'static str> {
        let mut s = Vec::new();
        if self.pacemaker.is_some() {
            s.push("Left-sided pacemaker with lead terminating in the right ventricle.");
        }
        if self.sternal_wires > 0 {
            s.push("Median sternotomy wires are intact.");
        }
        if self.port {
            s.push("Right chest wall port with catheter tip in the low SVC.");
        }
        s
    }
}

/// Projection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    Pa,
    Ap,
}

impl View {
    fn as_str(self) -> &'static str {
        match self {
            View::Pa => "PA",
            View::Ap => "AP",
        }
    }
}

/// One acquisition's conditions.
#[derive(Clone, Debug)]
pub struct Acquisition {
    rotation: f64,
    shift: (f64, f64),
    scale: f64,
    inspiration: f64,
    view: View,
    penetration: f64,
    gamma: f64,
    contrast: f64,
    brightness: f64,
    noise: f64,
    electrodes: Vec<(f64, f64)>,
    marker: (f64, f64),
}

impl Acquisition {
    /// Draws acquisition conditions.
    pub fn draw(rng: &mut Rng) -> Acquisition {
        let view = if chance(rng, 0.6) { View::Pa } else { View::Ap };
        let n_electrodes = if chance(rng, 0.3) { 2 + rng.below(3) } else { 0 };
        Acquisition {
            rotation: (rng.normal() * 3.5).clamp(-8.0, 8.0).to_radians(),
            shift: ((rng.normal() * 0.05).clamp(-0.12, 0.12), (rng.normal() * 0.05).clamp(-0.12, 0.12)),
            scale: uniform(rng, 0.9, 1.08),
            inspiration: (rng.normal() * 0.05).clamp(-0.12, 0.12),
            view,
            penetration: uniform(rng, 1.6, 2.6),
            gamma: uniform(rng, 0.75, 1.3),
            contrast: uniform(rng, 0.85, 1.15),
            brightness: uniform(rng, -0.06, 0.06),
            noise: uniform(rng, 0.01, 0.04),
            electrodes: (0..n_electrodes).map(|_| (uniform(rng, -0.7, 0.7), uniform(rng, -0.7, 0.3))).collect(),
            marker: (if chance(rng, 0.8) { 1.0 } else { -1.0 } * uniform(rng, 0.68, 0.85), uniform(rng, -0.88, -0.7)),
        }
    }
}

impl Acquisition {
    /// A reference acquisition: PA, centred, upright, mid inspiration, standard
    /// exposure, no electrodes. Rendering every image of a patient with it shows
    /// how much identity the anatomy alone carries.
    pub fn neutral() -> Acquisition {
        Acquisition {
            rotation: 0.0,
            shift: (0.0, 0.0),
            scale: 1.0,
            inspiration: 0.0,
            view: View::Pa,
            penetration: 2.1,
            gamma: 1.0,
            contrast: 1.0,
            brightness: 0.0,
            noise: 0.02,
            electrodes: Vec::new(),
            marker: (0.75, -0.8),
        }
    }
}

/// The pathologies of one image, with where and how much.
#[derive(Clone, Debug, Default)]
pub struct Findings {
    pub cardiomegaly: bool,
    /// Effusion height per side (0 = none); index 0 is the patient's right.
    pub effusion: [f64; 2],
    /// Edema severity (0 = none).
    pub edema: f64,
    /// Consolidation: side, centre, extent.
    pub consolidation: Option<(usize, (f64, f64), f64)>,
    /// Atelectasis: side and the band's height above the diaphragm.
    pub atelectasis: Option<(usize, f64)>,
    blobs: Vec<(f64, f64, f64)>,
    bronchi: Vec<((f64, f64), (f64, f64))>,
    kerley: Vec<(usize, f64, f64)>,
}

impl Findings {
    /// Draws findings for one image of `anatomy`.
    pub fn draw(anatomy: &Anatomy, rng: &mut Rng) -> Findings {
        let s = anatomy.sickness;
        let mut f =
            Findings { cardiomegaly: if anatomy.cardiomegaly_trait { chance(rng, 0.9) } else { chance(rng, 0.03) }, ..Findings::default() };
        if chance(rng, 0.08 + 0.3 * s + if f.cardiomegaly { 0.1 } else { 0.0 }) {
            let h = uniform(rng, 0.08, 0.3);
            match rng.below(3) {
                0 => f.effusion[0] = h,
                1 => f.effusion[1] = h,
                _ => f.effusion = [h, h * uniform(rng, 0.6, 1.2)],
            }
        }
        if chance(rng, 0.05 + 0.2 * s + if f.cardiomegaly { 0.15 } else { 0.0 }) {
            f.edema = uniform(rng, 0.4, 1.0);
            for _ in 0..6 {
                f.kerley.push((rng.below(2), uniform(rng, 0.0, 0.18), uniform(rng, 0.8, 1.0)));
            }
        }
        if chance(rng, 0.08 + 0.2 * s) {
            let side = rng.below(2);
            let centre = (uniform(rng, 0.3, 0.75), uniform(rng, -0.4, 0.85));
            let extent = uniform(rng, 0.12, 0.22);
            f.consolidation = Some((side, centre, extent));
            for _ in 0..5 {
                f.blobs.push((uniform(rng, -1.0, 1.0), uniform(rng, -1.0, 1.0), uniform(rng, 0.5, 1.0)));
            }
            for _ in 0..3 {
                let a = (uniform(rng, -0.5, 0.5), uniform(rng, -0.5, 0.5));
                let ang = uniform(rng, 0.0, 2.0 * PI);
                f.bronchi.push((a, (a.0 + 0.6 * ang.cos(), a.1 + 0.6 * ang.sin())));
            }
        }
        if chance(rng, 0.08 + 0.15 * s) {
            f.atelectasis = Some((rng.below(2), uniform(rng, 0.08, 0.2)));
        }
        f
    }

    /// The five labels by CheXpert name.
    pub fn labels(&self) -> BTreeMap<String, u8> {
        let values = [
            self.atelectasis.is_some(),
            self.cardiomegaly,
            self.consolidation.is_some(),
            self.edema > 0.0,
            self.effusion.iter().any(|&h| h > 0.0),
        ];
        PATHOLOGIES.iter().zip(values).map(|(n, v)| (n.to_string(), v as u8)).collect()
    }

    /// The report's impression (one sentence per finding, then devices).
    pub fn impression(&self, anatomy: &Anatomy, rng: &mut Rng) -> String {
        let side_name = |s: usize| if s == 0 { "right" } else { "left" };
        let pick = |rng: &mut Rng, options: &[&str]| options[rng.below(options.len())].to_string();
        let mut sentences: Vec<String> = Vec::new();
        if self.cardiomegaly {
            sentences.push(pick(rng, &["Cardiomegaly.", "The heart is enlarged.", "Moderate enlargement of the cardiac silhouette."]));
        }
        let [r, l] = self.effusion;
        if r > 0.0 || l > 0.0 {
            let size = |h: f64| {
                if h < 0.14 {
                    "Small"
                } else if h < 0.22 {
                    "Moderate"
                } else {
                    "Large"
                }
            };
            sentences.push(match (r > 0.0, l > 0.0) {
                (true, true) => format!("{} bilateral pleural effusions.", size(r.max(l))),
                (true, false) => format!("{} right pleural effusion.", size(r)),
                _ => format!("{} left pleural effusion.", size(l)),
            });
        }
        if self.edema > 0.0 {
            let grade = if self.edema < 0.7 { "Mild" } else { "Moderate" };
            sentences.push(format!(
                "{grade} {}",
                pick(rng, &["pulmonary edema.", "interstitial edema.", "pulmonary vascular congestion and edema."])
            ));
        }
        if let Some((side, (_, y), _)) = self.consolidation {
            let zone = if y < 0.2 { "upper" } else { "lower" };
            sentences.push(pick(
                rng,
                &[
                    &format!("Consolidation in the {} {zone} lobe, concerning for pneumonia.", side_name(side)),
                    &format!("Focal {} {zone} lobe consolidation.", side_name(side)),
                ],
            ));
        }
        if let Some((side, _)) = self.atelectasis {
            sentences.push(pick(
                rng,
                &[
                    &format!("{} basilar atelectasis.", capitalise(side_name(side))),
                    &format!("Plate-like atelectasis at the {} lung base.", side_name(side)),
                ],
            ));
        }
        if sentences.is_empty() {
            sentences.push(pick(
                rng,
                &[
                    "No acute cardiopulmonary process.",
                    "No acute intrathoracic abnormality.",
                    "Lungs are clear. No pleural effusion or pneumothorax.",
                ],
            ));
        }
        sentences.extend(anatomy.device_sentences().into_iter().map(String::from));
        sentences.join(" ")
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

/// A glyph of the side marker, 3 wide × 5 high.
const MARKER_L: [&str; 5] = ["#..", "#..", "#..", "#..", "###"];
const MARKER_R: [&str; 5] = ["##.", "#.#", "##.", "#.#", "#.#"];

/// Renders one image.
pub fn render(anatomy: &Anatomy, acq: &Acquisition, findings: &Findings, size: usize, rng: &mut Rng) -> Image {
    let a = anatomy;
    let px = 2.0 / size as f64;
    let edge = 1.5 * px;
    let ap = acq.view == View::Ap;
    let (cos, sin) = (acq.rotation.cos(), acq.rotation.sin());

    // Per-image derived geometry.
    let mut diaphragm = [a.diaphragm_y[0] + acq.inspiration, a.diaphragm_y[1] + acq.inspiration];
    let mut mediastinal_shift = 0.0;
    if let Some((side, _)) = findings.atelectasis {
        diaphragm[side] -= 0.06;
        mediastinal_shift += if side == 0 { -0.02 } else { 0.02 };
    }
    let ctr = if findings.cardiomegaly { a.ctr.max(0.58) + 0.04 * (a.sickness) } else { a.ctr.min(0.5) };
    let magnify = if ap { 1.12 } else { 1.0 };
    let heart_half_width = ctr * a.thorax_half_width * magnify * (1.0 + 0.8 * (-acq.inspiration).max(0.0));
    let heart_centre = (a.heart_x + mediastinal_shift + 0.25 * heart_half_width - 0.06, a.heart_y + 0.6 * acq.inspiration);
    let heart_height = a.heart_height * magnify;
    let clavicle_y = a.clavicle_y - if ap { 0.06 } else { 0.0 };
    let clavicle_angle = if ap { a.clavicle_angle * 0.4 } else { a.clavicle_angle };
    let (hcos, hsin) = (a.heart_tilt.cos(), a.heart_tilt.sin());

    let mut data = vec![0f32; size * size];
    for py in 0..size {
        for pxi in 0..size {
            // Image coordinates → patient coordinates (undo rotation, shift, scale).
            let (ix, iy) = ((pxi as f64 + 0.5) * px - 1.0 - acq.shift.0, (py as f64 + 0.5) * px - 1.0 - acq.shift.1);
            let x = (cos * ix + sin * iy) / acq.scale;
            let y = (-sin * ix + cos * iy) / acq.scale;
            let side = if x < 0.0 { 0 } else { 1 };
            let ax = x.abs();

            // Soft tissue: an elliptic cylinder, narrowing into the neck above the shoulders.
            let shoulder = ((y - (a.clavicle_y - 0.4)) / 0.35).clamp(0.0, 1.0);
            let neck = 0.26 + (a.body_half_width - 0.26) * shoulder.sqrt();
            let body = inside(neck - ax, edge);
            let thickness = (1.0 - (x / neck.max(1e-3)).powi(2)).max(0.0).sqrt();
            let mut att = body * a.soft_density * (0.6 + 0.6 * thickness);

            // Lungs: air that lowers attenuation, bounded by apex, lateral wall, mediastinum, diaphragm.
            // u: 0 at the mediastinum, 1 at the lateral chest wall (which widens downwards).
            let top = a.apex_y[side];
            let outer = a.thorax_half_width + 0.08 * (y - top).max(0.0) - 0.1;
            let u = (ax - a.mediastinum) / (outer - a.mediastinum);
            let dome = diaphragm[side] + 0.1 * u - a.dome * (1.0 - ((u - 0.4) / 0.6).powi(2)).max(0.0);
            let apex_round = top + 0.55 * (u - 0.35).powi(2);
            let lung = inside(ax - a.mediastinum, edge) * inside(outer - ax, edge) * inside(y - apex_round, edge) * inside(dome - y, edge);
            // Heart and aortic knob displace lung.
            let (hx, hy) = (x - heart_centre.0, y - heart_centre.1);
            let (rx, ry) = (hcos * hx + hsin * hy, -hsin * hx + hcos * hy);
            let heart_r = ((rx / heart_half_width).powi(2) + (ry / heart_height).powi(2)).sqrt();
            let heart = inside(1.0 - heart_r, edge / heart_half_width.min(heart_height));
            let (kx, ky) = (x - (a.mediastinum + 0.02), y - (a.apex_y[1] + 0.35));
            let knob = inside(a.knob_radius - (kx * kx + ky * ky).sqrt(), edge);
            let air = lung * (1.0 - heart) * (1.0 - knob);
            let mut parenchyma = 0.0;
            for &(tx, ty, tw, amp) in &a.texture {
                parenchyma += amp * (-((x - tx).powi(2) + (y - ty).powi(2)) / (tw * tw)).exp();
            }
            att -= air * a.lung_depth * a.soft_density * (1.4 + 0.12 * parenchyma.clamp(-1.5, 1.5));
            // Trachea and main bronchi: an air column down the upper mediastinum.
            let tx = x - 0.2 * a.scoliosis;
            let trachea = if y < a.carina_y {
                inside(a.trachea_width * 0.5 - tx.abs(), edge)
            } else {
                let (d, _) = segment_distance((tx.abs(), y), (0.0, a.carina_y), (a.mediastinum + 0.05, a.carina_y + 0.12));
                inside(a.trachea_width * 0.4 - d, edge)
            };
            att -= 0.35 * a.soft_density * trachea * inside(y - (a.apex_y[0] - 0.35), 0.1);

            // Pulmonary vessels, hazier with edema.
            let mut vessels = 0.0;
            for v in &a.vessels {
                let (d, t) = segment_distance((x, y), v.a, v.b);
                let r = v.r0 + (v.r1 - v.r0) * t + findings.edema * 0.008;
                vessels += 0.5 * inside(r - d, edge + findings.edema * 0.02);
            }
            att += air * vessels.min(1.0) * 0.09;

            // Pathology: opacities fill the air space.
            let mut opacity: f64 = 0.0;
            for s in 0..2 {
                let h = findings.effusion[s];
                if h > 0.0 && side == s {
                    let lateral = ((ax - a.mediastinum) / (outer - a.mediastinum)).clamp(0.0, 1.0);
                    let level = dome - h * (0.55 + 0.7 * lateral * lateral);
                    opacity = opacity.max(0.9 * inside(y - level, 0.05));
                }
            }
            if findings.edema > 0.0 {
                let hilum_d = ((ax - a.mediastinum - 0.12).powi(2) / 0.05 + (y + 0.02).powi(2) / 0.06).sqrt();
                opacity = opacity.max(findings.edema * 0.45 * (-hilum_d * hilum_d).exp());
                for &(s, dy, len) in &findings.kerley {
                    if s == side {
                        let ly = dome - 0.05 - dy;
                        let (d, _) = segment_distance((ax, y), (outer - 0.08 * len, ly), (outer, ly));
                        opacity = opacity.max(findings.edema * 0.6 * inside(0.006 - d, edge));
                    }
                }
            }
            if let Some((s, (cx, cy), ext)) = findings.consolidation {
                if s == side {
                    let cx = a.mediastinum + cx * (a.thorax_half_width - a.mediastinum);
                    let cy = top + (cy + 0.5) / 1.5 * (diaphragm[s] - top);
                    let (u, v) = ((ax - cx) / ext, (y - cy) / ext);
                    let mut field = (-(u * u + v * v)).exp();
                    for &(bx, by, w) in &findings.blobs {
                        field += 0.6 * w * (-((u - bx).powi(2) + (v - by).powi(2)) * 1.5).exp();
                    }
                    let mut c = 0.85 * inside(field - 0.55, 0.25);
                    for &(p0, p1) in &findings.bronchi {
                        let (d, _) = segment_distance((u, v), p0, p1);
                        c *= 1.0 - 0.5 * inside(0.07 - d, 0.05);
                    }
                    opacity = opacity.max(c);
                }
            }
            if let Some((s, height)) = findings.atelectasis {
                if s == side {
                    let band_y = dome - height + 0.12 * (ax - a.mediastinum);
                    opacity = opacity.max(0.7 * (-((y - band_y) / 0.022).powi(2)).exp() * inside(outer - 0.05 - ax, 0.05));
                }
            }
            att += air * opacity * a.lung_depth * a.soft_density * 1.3;

            // Gastric bubble under the left hemidiaphragm.
            let (gx, gy, gr) = a.gastric_bubble;
            let gd = ((x - gx) / (gr * 1.4)).powi(2) + ((y - diaphragm[1] - gy) / gr).powi(2);
            att -= 0.25 * a.soft_density * inside(1.0 - gd, 0.3);

            // Bones: spine with vertebral end plates, ribs (posterior and anterior), clavicles, scapulae in AP.
            let spine_x = a.scoliosis * (PI * (y + 1.0) / 2.0).sin();
            let plate = 0.85 + 0.15 * (2.0 * PI * (y / a.vertebra_height + a.vertebra_phase)).cos();
            let mut bone = 0.2 * plate * inside(a.spine_width * 0.5 - (x - spine_x).abs(), edge) * inside(0.95 - y, edge);
            let rib_span = (ax - a.spine_width * 0.5).max(0.0) / a.thorax_half_width;
            if ax > a.spine_width * 0.4 && ax < a.body_half_width {
                let mut ry = a.rib_first_y;
                let mut spacing = a.rib_spacing;
                for (i, j) in a.rib_jitter.iter().enumerate() {
                    let centre = ry + j[side] + a.rib_slope * rib_span + a.rib_curve * rib_span * rib_span;
                    let d = (y - centre).abs() / a.rib_thickness;
                    if d < 1.5 {
                        let cortex = 0.7 + 0.3 * d * d;
                        let mut v = 0.11 * cortex * inside(1.0 - d, edge / a.rib_thickness);
                        if let Some((ci, cs, cx)) = a.rib_callus {
                            if ci == i && cs == side {
                                v += 0.15 * (-((rib_span - cx) / 0.05).powi(2) - (d / 1.2).powi(2)).exp();
                            }
                        }
                        bone += v;
                    }
                    // Anterior rib: fainter, running down towards the midline.
                    let ant = ry + 0.25 + 0.35 * (1.0 - rib_span).max(0.0);
                    if rib_span > 0.25 {
                        bone += 0.035 * inside(1.0 - (y - ant).abs() / (a.rib_thickness * 0.8), edge / a.rib_thickness);
                    }
                    ry += spacing;
                    spacing *= a.rib_growth;
                }
            }
            let clav_y = clavicle_y + clavicle_angle * ax + 0.05 * (ax * PI / 0.55).sin();
            if ax > 0.04 && ax < 0.6 {
                bone += 0.22 * inside(1.0 - (y - clav_y).abs() / 0.03, edge / 0.03);
            }
            if ap {
                let sx = (ax - (a.thorax_half_width - 0.12)) / 0.16;
                let sy = (y - (a.apex_y[side] + 0.35)) / 0.3;
                bone += 0.06 * inside(1.0 - (sx * sx + sy * sy).sqrt(), 0.2);
            }
            // Ribs fade over the abdomen, where soft tissue swamps them.
            att += body * bone * (1.0 - 0.6 * inside(y - dome - 0.1, 0.1));

            // Incidental marks and devices (radio-opaque: very bright).
            let mut metal: f64 = 0.0;
            for &(gx, gy, r) in &a.granulomas {
                let d = ((x - gx).powi(2) + (y - gy).powi(2)).sqrt();
                metal = metal.max(0.45 * inside(r - d, edge));
            }
            if let Some((dx, dy)) = a.pacemaker {
                let box_d = ((x - dx).abs() - 0.07).max((y - dy).abs() - 0.05);
                metal = metal.max(1.2 * inside(-box_d, edge));
                // Lead: device → superior vena cava → right ventricle.
                let path = [(dx, dy), (0.05, -0.45), (-0.06, -0.1), (heart_centre.0 + 0.05, heart_centre.1 + 0.05)];
                for w in path.windows(2) {
                    let (d, _) = segment_distance((x, y), w[0], w[1]);
                    metal = metal.max(0.9 * inside(0.008 - d, edge));
                }
            }
            for k in 0..a.sternal_wires {
                let wy = -0.35 + 0.12 * k as f64;
                let r = ((x / 0.03).powi(2) + ((y - wy) / 0.02).powi(2)).sqrt();
                metal = metal.max(0.9 * inside(0.35 - (r - 1.0).abs(), 0.3));
            }
            if a.port {
                let d = ((x + 0.42).powi(2) + (y + 0.5).powi(2)).sqrt();
                metal = metal.max(0.8 * inside(0.04 - d, edge));
                let (d, _) = segment_distance((x, y), (-0.42, -0.5), (-0.08, -0.2));
                metal = metal.max(0.5 * inside(0.006 - d, edge));
            }
            for &(ex, ey) in &acq.electrodes {
                // Electrodes stick to the skin, so they move with the patient; where they sit changes per acquisition.
                let d = ((x - ex).powi(2) + (y - ey).powi(2)).sqrt();
                metal = metal.max(0.7 * inside(0.025 - d, edge) * (1.0 - 0.6 * inside(0.012 - d, edge)));
            }
            att += metal;
            data[py * size + pxi] = att as f32;
        }
    }

    // Side marker, in image space (it lies on the detector, not on the patient).
    let glyph = if acq.marker.0 > 0.0 { MARKER_L } else { MARKER_R };
    let cell = (0.022 / px).max(1.0);
    let (mx, my) = (((acq.marker.0 + 1.0) / px) as isize, ((acq.marker.1 + 1.0) / px) as isize);
    for (gy, row) in glyph.iter().enumerate() {
        for (gx, ch) in row.chars().enumerate() {
            if ch != '#' {
                continue;
            }
            let (x0, y0) = (mx + (gx as f64 * cell) as isize, my + (gy as f64 * cell) as isize);
            for yy in y0..y0 + cell.ceil() as isize {
                for xx in x0..x0 + cell.ceil() as isize {
                    if (0..size as isize).contains(&xx) && (0..size as isize).contains(&yy) {
                        data[yy as usize * size + xx as usize] = 2.0;
                    }
                }
            }
        }
    }

    // Exposure: Beer–Lambert to film density, then gamma, contrast, brightness, quantum noise.
    let noise = super::noise::PixelNoise::from_rng(rng).normals(size * size);
    for (v, z) in data.iter_mut().zip(noise) {
        let film = 1.0 - (-acq.penetration * (*v as f64).max(0.0)).exp();
        let shaped = film.powf(acq.gamma);
        let out = (shaped - 0.5) * acq.contrast + 0.5 + acq.brightness + z * acq.noise;
        *v = out.clamp(0.0, 1.0) as f32;
    }
    Image::grey(size, size, data)
}

/// One generated image with its record.
pub struct PhantomImage {
    pub image: Image,
    pub record: Record,
}

/// Generates image `k` of patient `p` (a pure function of the config's seed, `p` and `k`).
pub fn phantom_image(cfg: &PhantomConfig, p: usize, k: usize) -> PhantomImage {
    phantom_image_with(cfg, p, k, None)
}

/// As [`phantom_image`], optionally with a fixed acquisition instead of the drawn one
/// (findings, text and noise are drawn as usual).
pub fn phantom_image_with(cfg: &PhantomConfig, p: usize, k: usize, acquisition: Option<&Acquisition>) -> PhantomImage {
    let patient_rng = Rng::new(cfg.seed).fork(p as u64);
    let anatomy = Anatomy::draw(&mut patient_rng.fork(0));
    let mut rng = patient_rng.fork(1 + k as u64);
    let drawn = Acquisition::draw(&mut rng);
    let acq = acquisition.unwrap_or(&drawn);
    let findings = Findings::draw(&anatomy, &mut rng);
    let text = findings.impression(&anatomy, &mut rng);
    let image = render(&anatomy, acq, &findings, cfg.size, &mut rng);
    let mut record = Record::new(format!("images/p{p:05}_{k:03}.png"), format!("phantom-{p:05}"));
    record.text = Some(text);
    record.labels = Some(findings.labels());
    record.view = Some(acq.view.as_str().to_string());
    record.meta = Some(json!({
        "phantom": { "seed": cfg.seed, "patient_index": p, "image_index": k },
        "rotation_deg": (acq.rotation.to_degrees() * 100.0).round() / 100.0,
        "inspiration": (acq.inspiration * 1000.0).round() / 1000.0,
        "devices": anatomy.device_sentences(),
    }));
    record.source = Some(json!("phantom"));
    record.seed = Some(cfg.seed);
    PhantomImage { image, record }
}

/// Generates the whole dataset in memory (in parallel; the result does not depend on the thread count).
pub fn generate(cfg: &PhantomConfig) -> Vec<PhantomImage> {
    (0..cfg.patients * cfg.images_per_patient)
        .into_par_iter()
        .map(|i| phantom_image(cfg, i / cfg.images_per_patient, i % cfg.images_per_patient))
        .collect()
}

/// Writes a phantom dataset (PNGs under `images/` and `manifest.jsonl`) into `out`.
pub fn write_phantom(cfg: &PhantomConfig, out: &Path) -> DataResult<Manifest> {
    if cfg.patients == 0 || cfg.images_per_patient == 0 || cfg.size < 8 {
        return Err(DataError::Invalid(format!(
            "phantom: need at least 1 patient, 1 image per patient and a size of at least 8 (got {}, {}, {})",
            cfg.patients, cfg.images_per_patient, cfg.size
        )));
    }
    let records = (0..cfg.patients * cfg.images_per_patient)
        .into_par_iter()
        .map(|i| {
            let ph = phantom_image(cfg, i / cfg.images_per_patient, i % cfg.images_per_patient);
            ph.image.save_png(&out.join(&ph.record.image))?;
            Ok(ph.record)
        })
        .collect::<DataResult<Vec<_>>>()?;
    let manifest = Manifest::new(out.join(MANIFEST_FILE), records);
    manifest.save()?;
    Ok(manifest)
}

/// How identifiable patients are from raw pixels.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PixelReid {
    /// Query images (those whose patient has another image).
    pub queries: usize,
    /// Fraction of queries whose nearest other image (standardised pixels, L2) is the same patient's.
    pub top1: f64,
    /// The expected top-1 of a random guess.
    pub chance: f64,
    /// Median same-patient distance over median different-patient distance.
    pub distance_ratio: f64,
}

/// Pixel-space nearest-neighbour re-identification over images of one size
/// (each standardised to zero mean and unit variance first).
pub fn pixel_reid(images: &[Image], patients: &[String]) -> DataResult<PixelReid> {
    if images.len() != patients.len() || images.len() < 2 {
        return Err(DataError::Invalid("pixel_reid needs at least 2 images, one patient id each".into()));
    }
    let n_pixels = images[0].data.len();
    if images.iter().any(|i| i.data.len() != n_pixels) {
        return Err(DataError::Invalid("pixel_reid needs images of one size (resize them first)".into()));
    }
    let standard: Vec<Vec<f32>> = images
        .iter()
        .map(|img| {
            let mean = img.data.iter().sum::<f32>() / n_pixels as f32;
            let var = img.data.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / n_pixels as f32;
            let inv = 1.0 / var.sqrt().max(1e-6);
            img.data.iter().map(|v| (v - mean) * inv).collect()
        })
        .collect();
    let n = images.len();
    let rows: Vec<Vec<f32>> = (0..n)
        .into_par_iter()
        .map(|i| {
            (0..n)
                .map(|j| {
                    if i == j {
                        f32::INFINITY
                    } else {
                        standard[i].iter().zip(&standard[j]).map(|(a, b)| (a - b) * (a - b)).sum::<f32>().sqrt()
                    }
                })
                .collect()
        })
        .collect();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for p in patients {
        *counts.entry(p.as_str()).or_default() += 1;
    }
    let (mut queries, mut hits, mut chance) = (0usize, 0usize, 0.0);
    let (mut same, mut diff) = (Vec::new(), Vec::new());
    for i in 0..n {
        for j in i + 1..n {
            if patients[i] == patients[j] {
                same.push(rows[i][j])
            } else {
                diff.push(rows[i][j])
            }
        }
        let c = counts[patients[i].as_str()];
        if c < 2 {
            continue;
        }
        queries += 1;
        chance += (c - 1) as f64 / (n - 1) as f64;
        let nearest = (0..n).min_by(|&a, &b| rows[i][a].total_cmp(&rows[i][b])).expect("n ≥ 2");
        hits += (patients[nearest] == patients[i]) as usize;
    }
    if queries == 0 || diff.is_empty() {
        return Err(DataError::Invalid("pixel_reid needs a patient with 2 images and at least 2 patients".into()));
    }
    let median = |v: &mut Vec<f32>| {
        v.sort_by(f32::total_cmp);
        v[v.len() / 2] as f64
    };
    Ok(PixelReid {
        queries,
        top1: hits as f64 / queries as f64,
        chance: chance / queries as f64,
        distance_ratio: median(&mut same) / median(&mut diff),
    })
}
