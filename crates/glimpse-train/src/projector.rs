//! Training pairs for a projector (`glimpse_align::projector`) on the world: the frozen CLIP's
//! unit-norm embeddings of rendered scenes and their canonical captions.

use glimpse_align::projector::Example;
use glimpse_hub::{ClipBundle, Gpt2Bundle};
use glimpse_models::l2_normalize;
use glimpse_models::tensor::read;
use glimpse_world::render::{RenderConfig, Scene};
use glimpse_world::rng::{Rng, derive_seed};
use glimpse_world::scene::{Attributes, canonical_caption};

use crate::TrainError;

/// Scenes encoded per CLIP call.
const CHUNK: usize = 64;

/// `n` examples; each caption is the canonical one with a full stop, then the end-of-text token,
/// so decoding learns where to stop.
pub async fn world_examples(
    clip: &ClipBundle,
    lm: &Gpt2Bundle,
    n: usize,
    seed: u64,
) -> Result<Vec<Example>, TrainError> {
    let eos = lm.config.eos_token_id.ok_or_else(|| TrainError::Config("the LM has no eos_token_id".into()))?;
    let mut rng = Rng::new(derive_seed(seed, 0x9e37));
    let mut examples = Vec::with_capacity(n);
    while examples.len() < n {
        let count = CHUNK.min(n - examples.len());
        let mut images = Vec::with_capacity(count);
        let mut captions = Vec::with_capacity(count);
        for _ in 0..count {
            let attributes = Attributes::sample(&mut rng);
            images.push(Scene::sample(Some(attributes), &mut rng).render(&RenderConfig::default(), &mut rng));
            let ids = lm.tokenizer.encode(&format!("{}.", canonical_caption(&attributes)))?;
            captions.push([ids, vec![eos]].concat());
        }
        let embeds = l2_normalize(clip.encode_images(&images)?);
        let dim = embeds.dims()[1];
        let values = read::<2, burn::tensor::Float, f32>(embeds).await?;
        for (embedding, caption) in values.chunks(dim).zip(captions) {
            examples.push(Example { embedding: embedding.to_vec(), caption });
        }
    }
    Ok(examples)
}
