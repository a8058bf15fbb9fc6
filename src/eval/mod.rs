//! Evaluation: metrics (AUC, bootstrap intervals, retrieval), and — built on
//! them — FID, the downstream classifier, Grad-CAM++, and the report.

pub mod metrics;
