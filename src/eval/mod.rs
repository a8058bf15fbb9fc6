//! Evaluation: metrics (AUC, bootstrap intervals, retrieval), and — built on
//! them — FID, KID, precision/recall, MS-SSIM diversity, the downstream
//! classifier (cross-entropy then AUC-M + PESG), Grad-CAM++, plots and the report.

pub mod aucm;
pub mod classifier;
pub mod features;
pub mod fid;
pub mod gradcam;
pub mod metrics;
pub mod msssim;
pub mod plots;
pub mod prdc;
pub mod report;
