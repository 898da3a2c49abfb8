//! BERT's encoder (the architecture of all-MiniLM-L6-v2) on candle's CPU tensors, read from the
//! model's safetensors and `config.json`, with mean pooling over the attention mask.

use std::path::Path;

use anyhow::Context as _;
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{embedding, layer_norm, linear, Embedding, LayerNorm, Linear, VarBuilder};
use serde::Deserialize;

pub const CLS: u32 = 101;
pub const SEP: u32 = 102;
const PAD: u32 = 0;

#[derive(Debug, Deserialize)]
struct BertConfig {
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    max_position_embeddings: usize,
    type_vocab_size: usize,
    layer_norm_eps: f64,
    hidden_act: String,
}

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_output: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

pub struct Bert {
    words: Embedding,
    positions: Embedding,
    token_types: Embedding,
    embeddings_norm: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    head_size: usize,
    max_positions: usize,
    device: Device,
}

impl Bert {
    pub fn load(weights: &Path, config: &Path) -> anyhow::Result<Self> {
        let config: BertConfig = serde_json::from_slice(&std::fs::read(config).context("reading config.json")?).context("config.json")?;
        anyhow::ensure!(config.hidden_act == "gelu", "unsupported activation `{}`", config.hidden_act);
        anyhow::ensure!(config.hidden_size.is_multiple_of(config.num_attention_heads), "hidden size not divisible by the heads");
        let device = Device::Cpu;
        let bytes = std::fs::read(weights).context("reading model.safetensors")?;
        let root = VarBuilder::from_buffered_safetensors(bytes, DType::F32, &device).context("model.safetensors")?;
        let hidden = config.hidden_size;
        let norm = |size, builder: VarBuilder| layer_norm(size, config.layer_norm_eps, builder);
        let vb = root.pp("embeddings");
        let words = embedding(config.vocab_size, hidden, vb.pp("word_embeddings"))?;
        let positions = embedding(config.max_position_embeddings, hidden, vb.pp("position_embeddings"))?;
        let token_types = embedding(config.type_vocab_size, hidden, vb.pp("token_type_embeddings"))?;
        let embeddings_norm = norm(hidden, vb.pp("LayerNorm"))?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for index in 0..config.num_hidden_layers {
            let vb = root.pp(format!("encoder.layer.{index}"));
            let attention = vb.pp("attention");
            layers.push(Layer {
                query: linear(hidden, hidden, attention.pp("self.query"))?,
                key: linear(hidden, hidden, attention.pp("self.key"))?,
                value: linear(hidden, hidden, attention.pp("self.value"))?,
                attention_output: linear(hidden, hidden, attention.pp("output.dense"))?,
                attention_norm: norm(hidden, attention.pp("output.LayerNorm"))?,
                intermediate: linear(hidden, config.intermediate_size, vb.pp("intermediate.dense"))?,
                output: linear(config.intermediate_size, hidden, vb.pp("output.dense"))?,
                output_norm: norm(hidden, vb.pp("output.LayerNorm"))?,
            });
        }
        Ok(Self {
            words,
            positions,
            token_types,
            embeddings_norm,
            layers,
            heads: config.num_attention_heads,
            head_size: hidden / config.num_attention_heads,
            max_positions: config.max_position_embeddings,
            device,
        })
    }

    /// The mean of the last hidden states over each input's tokens (special tokens included, as
    /// sentence-transformers pools), one vector per input. Inputs are padded to the longest.
    pub fn mean_pooled(&self, inputs: &[Vec<u32>]) -> anyhow::Result<Vec<Vec<f32>>> {
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        let length = inputs.iter().map(Vec::len).max().unwrap_or(0).max(1);
        anyhow::ensure!(length <= self.max_positions, "an input of {length} tokens is longer than the model reads");
        let batch = inputs.len();
        let mut ids = Vec::with_capacity(batch * length);
        let mut mask = Vec::with_capacity(batch * length);
        for input in inputs {
            ids.extend(input.iter().copied().chain(std::iter::repeat(PAD)).take(length));
            mask.extend((0..length).map(|position| if position < input.len() { 1f32 } else { 0f32 }));
        }
        let ids = Tensor::from_vec(ids, (batch, length), &self.device)?;
        let mask = Tensor::from_vec(mask, (batch, length), &self.device)?;
        let positions = Tensor::arange(0u32, length as u32, &self.device)?.unsqueeze(0)?.broadcast_as((batch, length))?.contiguous()?;
        let types = ids.zeros_like()?;
        let embedded = self.words.forward(&ids)?.add(&self.positions.forward(&positions)?)?.add(&self.token_types.forward(&types)?)?;
        let mut hidden = self.embeddings_norm.forward(&embedded)?;
        // Padding gets a large negative score before the softmax, so no token attends to it.
        let additive = mask.ones_like()?.sub(&mask)?.affine(-10_000.0, 0.0)?.reshape((batch, 1, 1, length))?;
        for layer in &self.layers {
            hidden = self.layer(layer, &hidden, &additive)?;
        }
        let weights = mask.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&weights)?.sum(1)?;
        let counts = weights.sum(1)?.clamp(1e-9, f64::MAX)?;
        let pooled = summed.broadcast_div(&counts)?;
        Ok(pooled.to_vec2::<f32>()?)
    }

    fn layer(&self, layer: &Layer, hidden: &Tensor, additive: &Tensor) -> anyhow::Result<Tensor> {
        let (batch, length, width) = hidden.dims3()?;
        let heads = |projection: &Linear| -> anyhow::Result<Tensor> {
            Ok(projection.forward(hidden)?.reshape((batch, length, self.heads, self.head_size))?.transpose(1, 2)?.contiguous()?)
        };
        let (query, key, value) = (heads(&layer.query)?, heads(&layer.key)?, heads(&layer.value)?);
        let scores = (query.matmul(&key.t()?.contiguous()?)? / (self.head_size as f64).sqrt())?.broadcast_add(additive)?;
        let attention = candle_nn::ops::softmax_last_dim(&scores)?;
        let context = attention.matmul(&value)?.transpose(1, 2)?.contiguous()?.reshape((batch, length, width))?;
        let attended = layer.attention_norm.forward(&layer.attention_output.forward(&context)?.add(hidden)?)?;
        let intermediate = layer.intermediate.forward(&attended)?.gelu_erf()?;
        let output = layer.output.forward(&intermediate)?.add(&attended)?;
        Ok(layer.output_norm.forward(&output)?)
    }
}
