//! Scoring synthetic images: s_reid against the real image of the prompt that
//! produced them (or, for unconditional samples, the real images a retrieval
//! network finds nearest), and s_align against the prompt.
//!
//! The networks are behind small traits so the rule can be tested with
//! hand-made scorers and any trained network can be plugged in.

use crate::data::Image;
use crate::Result;

/// A patient re-identification network: the probability that two images show
/// the same patient. Embeddings are separate so a real image is embedded once.
pub trait ReidModel {
    /// Embed a batch of images (any size; the model applies its own input contract).
    fn embed_images(&self, images: &[Image]) -> Result<crate::Tensor>;
    /// Same-patient probabilities of row-aligned embedding pairs.
    fn pair_scores(&self, a: &crate::Tensor, b: &crate::Tensor) -> Result<Vec<f32>>;
}

/// An image–text alignment model: cosine similarity of the two embeddings.
pub trait AlignModel {
    /// s_align of each (image, text) pair.
    fn align_scores(&self, images: &[Image], texts: &[&str]) -> Result<Vec<f32>>;
}

/// Finds the real images nearest to a query (for samples without a prompt).
pub trait NearestReal {
    /// For each query, the `k` nearest gallery indices with their distances, nearest first.
    fn nearest_real(&self, queries: &[Image], k: usize) -> Result<Vec<Vec<(usize, f32)>>>;
}

impl ReidModel for super::reid::ReidScorer {
    fn embed_images(&self, images: &[Image]) -> Result<crate::Tensor> {
        self.embed(images)
    }
    fn pair_scores(&self, a: &crate::Tensor, b: &crate::Tensor) -> Result<Vec<f32>> {
        self.score_embeddings(a, b)
    }
}

impl AlignModel for super::align::AlignScorer {
    fn align_scores(&self, images: &[Image], texts: &[&str]) -> Result<Vec<f32>> {
        self.score(images, texts)
    }
}

impl NearestReal for super::retrieval::RetrievalIndex {
    fn nearest_real(&self, queries: &[Image], k: usize) -> Result<Vec<Vec<(usize, f32)>>> {
        self.nearest(queries, k)
    }
}
