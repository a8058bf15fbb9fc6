//! The networks of the pipeline, on the runtime, with the reference
//! implementations' parameter names and configs: diffusers' UNet and VAE,
//! transformers' CLIP text encoder and BERT, torchvision's ResNet-50 and
//! DenseNet-121, and the siamese re-identification network.

pub mod align;
pub mod bert;
pub mod blocks;
pub mod clip_text;
pub mod densenet;
pub mod resnet;
pub mod siamese;
pub mod tokenizer;
pub mod unet;
pub mod vae;
pub mod zoo;
