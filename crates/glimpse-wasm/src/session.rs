//! [`Session`]: one CLIP and one GPT-2 on one device, and the calls the npm package makes.

use std::rc::Rc;
use std::sync::Arc;

use burn::prelude::*;
use glimpse_align::grounding::{FindOptions, Moment, check_queries, find_moments};
use glimpse_align::guided::{self, GuidanceOptions, IMAGE_PROMPT, Step, Targets};
use glimpse_align::zerota::{EmbeddedVideo, Event, FrameEmbedder, VIDEO_PROMPT, ZeroTaConfig, dense_caption};
use glimpse_media::subtitles::{Cue, to_chapters, to_srt, to_vtt};
use glimpse_media::to_rgb;
use glimpse_media::untrusted::settings_from_json;
use glimpse_media::video::{MAX_FRAMES, check_fps, sampled_duration};
use glimpse_models::tensor::read;
use glimpse_models::weights::ReadAt;
use glimpse_models::{ClipBundle, Gpt2Bundle, ModelFiles, Weights, l2_normalize, max_json_bytes};
use image::{DynamicImage, RgbImage, RgbaImage};
use js_sys::{Function, Promise, Uint8Array};
use serde_json::json;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::device::{self, DeviceReport};
use crate::errors::{self, MODEL_LOAD, js_error, with_causes};

/// The largest frame side accepted; the page scales frames down to a few times CLIP's input, and
/// to this, first (protocol.js's MAX_FRAME_SIDE).
const MAX_SIDE: u32 = 4096;

/// A CLIP and a GPT-2 loaded on one device.
#[wasm_bindgen]
pub struct Session {
    models: Rc<Models>,
}

struct Models {
    /// Shared with the videos being received.
    clip: Rc<ClipBundle>,
    lm: Gpt2Bundle,
    device: DeviceReport,
}

#[wasm_bindgen]
impl Session {
    /// Loads a CLIP and a GPT-2 on `device` (`"webgpu"` or `"cpu"`). `clip` and `lm` are objects
    /// of `Uint8Array`s named after their Hugging Face files: `config`, `weights`
    /// (`model.safetensors`, also a `Blob`), `tokenizer`, and for CLIP optionally `preprocessor`.
    pub async fn load(device: String, clip: JsValue, lm: JsValue) -> Result<Session, JsValue> {
        let clip_files = model_files("CLIP", &clip)?;
        let lm_files = model_files("GPT-2", &lm)?;
        let (device, report) = device::select(&device).await?;
        let load_error = |e: glimpse_models::ModelError| js_error(MODEL_LOAD, with_causes(&e));
        let clip = Rc::new(ClipBundle::load(&clip_files, &device).map_err(load_error)?);
        // A turn of the event loop between the models gives the browser a chance to collect the
        // buffers that reading CLIP's weights left behind (as many bytes as the file, and a small
        // file's whole copy) before GPT-2's come; measured, it lowers the peak by about CLIP's size.
        drop(clip_files);
        next_turn().await;
        let lm = Gpt2Bundle::load(&lm_files, &device).map_err(load_error)?;
        Ok(Session { models: Rc::new(Models { clip, lm, device: report }) })
    }

    /// The device in use, as JSON: `{kind, description, maxStorageBinding?}`.
    pub fn device(&self) -> String {
        serde_json::to_string(&self.models.device).unwrap_or_default()
    }

    /// CLIP's input side in pixels; frames larger than a few times this can be scaled down
    /// before they are sent.
    #[wasm_bindgen(js_name = imageSize)]
    pub fn image_size(&self) -> u32 {
        self.models.clip.config.vision_config.image_size as u32
    }

    /// Unit-norm CLIP embedding of an RGBA image: a `Promise<Float32Array>`.
    #[wasm_bindgen(js_name = embedImage)]
    pub fn embed_image(&self, rgba: Vec<u8>, width: u32, height: u32) -> Promise {
        let models = self.models.clone();
        future_to_promise(async move {
            let image = one_image(&rgba, width, height)?;
            let embedding = models.clip.encode_images(&[image]).map_err(errors::model)?;
            vector(l2_normalize(embedding)).await
        })
    }

    /// Unit-norm CLIP embedding of a text: a `Promise<Float32Array>`.
    #[wasm_bindgen(js_name = embedText)]
    pub fn embed_text(&self, text: String) -> Promise {
        let models = self.models.clone();
        future_to_promise(async move {
            let embedding = models.clip.encode_texts(&[text.as_str()]).map_err(errors::model)?;
            vector(l2_normalize(embedding)).await
        })
    }

    /// CLIP-guided zero-shot caption of an RGBA image (`options`: JSON of [`GuidanceOptions`]);
    /// `on_step` receives every optimiser step as JSON. A `Promise<string>` of
    /// `{"caption", "score"}`.
    #[wasm_bindgen(js_name = captionImage)]
    pub fn caption_image(&self, rgba: Vec<u8>, width: u32, height: u32, options: String, on_step: Function) -> Promise {
        let models = self.models.clone();
        future_to_promise(async move {
            let config = guidance_options(&options)?.config(IMAGE_PROMPT);
            guided::check_fits(&models.lm, &config, &option_name).map_err(errors::align)?;
            let image = one_image(&rgba, width, height)?;
            let targets = l2_normalize(models.clip.encode_images(&[image]).map_err(errors::model)?);
            let outcome = guided::caption(
                &models.clip,
                &models.lm,
                Targets::Fixed(targets),
                &config,
                report_step(&on_step, 0.0, 1.0),
            )
            .await
            .map_err(errors::align)?;
            let caption = &outcome.captions[0];
            Ok(json!({ "caption": caption.text, "score": caption.score }).to_string().into())
        })
    }

    /// An empty video sampled at `fps`, lasting `length` seconds where the page knows (a
    /// `<video>`'s duration; not for an array of frames): its frames arrive in chunks
    /// ([`Video::push`]) and are embedded as they come, so a long video never sits in memory as
    /// pixels.
    /// `start`: where on the `<video>`'s clock its first picture is (a file whose timestamps
    /// begin later); the results' times are on that clock.
    #[wasm_bindgen(js_name = startVideo)]
    pub fn start_video(&self, fps: f64, length: Option<f64>, start: Option<f64>) -> Result<Video, JsValue> {
        check_fps(fps).map_err(errors::input)?;
        if let Some(length) = length.filter(|length| !(length.is_finite() && *length > 0.0)) {
            return Err(errors::input(format!("the video's length {length} s must be a positive number")));
        }
        let start = start.unwrap_or(0.0);
        if !(start.is_finite() && start >= 0.0) {
            return Err(errors::input(format!("the video's start {start} s must be a number of seconds from 0 on")));
        }
        Ok(Video { fps, length, start, frames: Frames::Arriving(FrameEmbedder::new(self.models.clip.clone())) })
    }

    /// Refuses the settings [`Session::dense_caption`] would refuse only once a video's frames are
    /// in, so that the page can check a call before it reads a single frame.
    #[wasm_bindgen(js_name = checkDenseCaption)]
    pub fn check_dense_caption(
        &self,
        events: Option<usize>,
        max_events: usize,
        options: String,
    ) -> Result<(), JsValue> {
        let config = dense_config(events, max_events, 0, &options)?;
        config.validate(&option_name).map_err(errors::align)?;
        guided::check_fits(&self.models.lm, &config.guidance, &option_name).map_err(errors::align)
    }

    /// As [`Session::check_dense_caption`], for [`Session::find_moments`].
    #[wasm_bindgen(js_name = checkFindMoments)]
    pub fn check_find_moments(&self, queries: String, options: String) -> Result<(), JsValue> {
        let (queries, options) = find_inputs(&queries, &options)?;
        options.config().validate(&option_name).map_err(errors::align)?;
        check_queries(&queries.iter().map(String::as_str).collect::<Vec<_>>()).map_err(errors::align)
    }

    /// Zero-shot dense captioning (ZeroTA) of `video` with `events` events (`undefined`: one per
    /// scene the video has that is not blank, at most `max_events`). `options` is JSON of
    /// [`GuidanceOptions`]; every step goes to `on_step` as JSON with the masks' current spans in
    /// seconds. A `Promise<string>` of
    /// `{"start", "duration", "events": [{"start", "end", "caption", "score"}], "srt", "vtt", "chapters"}`
    /// (`chapters` null, and `chaptersError` saying why, where the events make no valid chapters),
    /// times on the video's clock (from its `start`), but YouTube's chapters from 00:00.
    /// The video's frames are complete from here on, and stay embedded for further calls.
    #[wasm_bindgen(js_name = denseCaption)]
    pub fn dense_caption(
        &self,
        video: &mut Video,
        events: Option<usize>,
        max_events: usize,
        seed: u64,
        options: String,
        on_step: Function,
    ) -> Promise {
        let models = self.models.clone();
        let embedded = video.embedded();
        let (start, duration) = (video.start, video.duration());
        future_to_promise(async move {
            let config = dense_config(events, max_events, seed, &options)?;
            let embeddings = embedded?;
            let found = dense_caption(
                &models.clip,
                &models.lm,
                &embeddings,
                duration,
                &config,
                report_step(&on_step, start, duration),
            )
            .await
            .map_err(errors::align)?;
            let (chapters, chapters_error) =
                match to_chapters(&found.iter().map(Event::cue).collect::<Vec<_>>(), duration) {
                    Ok(text) => (Some(text), None),
                    Err(why) => (None, Some(why)),
                };
            let found: Vec<Event> = found
                .into_iter()
                .map(|event| Event { start: start + event.start, end: start + event.end, ..event })
                .collect();
            let cues: Vec<Cue> = found.iter().map(Event::cue).collect();
            let result = json!({
                "start": start,
                "duration": duration,
                "events": found,
                "srt": to_srt(&cues),
                "vtt": to_vtt(&cues),
                "chapters": chapters,
                "chaptersError": chapters_error,
            });
            Ok(result.to_string().into())
        })
    }

    /// Where in `video` each of `queries` (JSON array of strings) happens, zero-shot; `options` is
    /// JSON of [`FindOptions`]. A `Promise<string>` of
    /// `[{"query", "moments": [{"start", "end", "score"}]}]`, moments best first, on the video's
    /// clock. The video's frames are embedded once for every call on it.
    #[wasm_bindgen(js_name = findMoments)]
    pub fn find_moments(&self, video: &mut Video, queries: String, options: String) -> Promise {
        let models = self.models.clone();
        let embedded = video.embedded();
        let (start, duration) = (video.start, video.duration());
        future_to_promise(async move {
            let (queries, options) = find_inputs(&queries, &options)?;
            let refs: Vec<&str> = queries.iter().map(String::as_str).collect();
            let found = find_moments(&models.clip, &embedded?, duration, &refs, &options.config())
                .await
                .map_err(errors::align)?;
            let answers: Vec<_> = queries
                .iter()
                .zip(found)
                .map(|(query, moments)| {
                    let moments: Vec<Moment> = moments
                        .into_iter()
                        .map(|moment| Moment { start: start + moment.start, end: start + moment.end, ..moment })
                        .collect();
                    json!({ "query": query, "moments": moments })
                })
                .collect();
            Ok(serde_json::Value::from(answers).to_string().into())
        })
    }
}

/// A video: its frames embedded as they arrive, then, once a call has used it, complete.
#[wasm_bindgen]
pub struct Video {
    fps: f64,
    length: Option<f64>,
    /// Where its first picture is on the `<video>`'s clock.
    start: f64,
    frames: Frames,
}

enum Frames {
    Arriving(FrameEmbedder<Rc<ClipBundle>>),
    // Boxed: its tensor handles take ~450 bytes, the other variants a pointer or nothing.
    Complete(Box<EmbeddedVideo>),
    /// Left only by a failed completion (a video without frames), which the call reports.
    Failed,
}

impl Video {
    fn frame_count(&self) -> usize {
        match &self.frames {
            Frames::Arriving(embedder) => embedder.frames(),
            Frames::Complete(video) => video.frames(),
            Frames::Failed => 0,
        }
    }

    fn duration(&self) -> f64 {
        sampled_duration(self.frame_count(), self.fps, self.length)
    }

    /// The frames, completing the video on first use.
    fn embedded(&mut self) -> Result<EmbeddedVideo, JsValue> {
        // A failed completion leaves `Failed` behind: the video had no frames.
        self.frames = match std::mem::replace(&mut self.frames, Frames::Failed) {
            Frames::Arriving(embedder) => Frames::Complete(Box::new(embedder.finish().map_err(errors::align)?)),
            done => done,
        };
        match &self.frames {
            Frames::Complete(video) => Ok(EmbeddedVideo::clone(video)),
            _ => Err(errors::input("the video has no frames")),
        }
    }
}

#[wasm_bindgen]
impl Video {
    /// Appends RGBA frames of `width` x `height`, one after another; returns the frame count so
    /// far. Up to `MAX_FRAMES` frames in all, each preprocessing to the same size as the first.
    pub fn push(&mut self, rgba: Vec<u8>, width: u32, height: u32) -> Result<usize, JsValue> {
        let count = frame_count(&rgba, width, height)?;
        let Frames::Arriving(embedder) = &mut self.frames else {
            return Err(errors::input("the video is complete (a call has used it); start a new one"));
        };
        if embedder.frames() + count > MAX_FRAMES {
            return Err(errors::input(format!("more than {MAX_FRAMES} frames; lower fps or caption a shorter part")));
        }
        // One frame converted at a time: the chunk's pixels are never held twice.
        for frame in rgb_frames(&rgba, width, height) {
            embedder.push(&frame).map_err(errors::align)?;
        }
        Ok(embedder.frames())
    }
}

/// The page's guidance options, JSON of [`GuidanceOptions`].
fn guidance_options(json: &str) -> Result<GuidanceOptions, JsValue> {
    settings_from_json(json.as_bytes()).map_err(|e| errors::input(format!("options: {e}")))
}

/// `denseCaption`'s settings: `options` is JSON of [`GuidanceOptions`].
fn dense_config(events: Option<usize>, max_events: usize, seed: u64, options: &str) -> Result<ZeroTaConfig, JsValue> {
    let guidance = guidance_options(options)?.config(VIDEO_PROMPT);
    Ok(ZeroTaConfig { events, max_events, seed, guidance, ..ZeroTaConfig::default() })
}

/// A setting's name as the package's options spell it, for messages: `steps_per_token` ->
/// `stepsPerToken`.
fn option_name(field: &str) -> String {
    let mut words = field.split('_');
    let first = words.next().unwrap_or_default().to_string();
    words.fold(first, |mut name, word| {
        let mut letters = word.chars();
        name.extend(letters.next().into_iter().flat_map(char::to_uppercase));
        name.push_str(letters.as_str());
        name
    })
}

/// `findMoments`' queries (a JSON array of strings) and options (JSON of [`FindOptions`]).
fn find_inputs(queries: &str, options: &str) -> Result<(Vec<String>, FindOptions), JsValue> {
    let queries = serde_json::from_str(queries).map_err(|e| errors::input(format!("queries: {e}")))?;
    let options = settings_from_json(options.as_bytes()).map_err(|e| errors::input(format!("options: {e}")))?;
    Ok((queries, options))
}

/// Resolves on a later turn of the worker's event loop.
async fn next_turn() {
    let timer = Promise::new(&mut |resolve, _| {
        let global: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
        if global.set_timeout_with_callback(&resolve).is_err() {
            let _ = resolve.call0(&JsValue::NULL);
        }
    });
    let _ = wasm_bindgen_futures::JsFuture::from(timer).await;
}

/// A model's files from a JavaScript object of `Uint8Array`s; `weights` may also be a `Blob`.
/// The weights stay outside the module's memory, in JavaScript's buffer or in the Blob (which the
/// browser keeps on disk for a cached download or a picked file), and are copied in tensor by
/// tensor as the model is built, so the module's memory never holds the file beside the tensors.
fn model_files(what: &str, files: &JsValue) -> Result<ModelFiles, JsValue> {
    let field = |name: &str| -> Result<Option<JsValue>, JsValue> {
        let value = js_sys::Reflect::get(files, &name.into())
            .map_err(|_| js_error(MODEL_LOAD, format!("{what}: the files are not an object")))?;
        Ok((!value.is_undefined() && !value.is_null()).then_some(value))
    };
    let bytes = |name: &str, file: &str, value: JsValue| {
        let array = value
            .dyn_into::<Uint8Array>()
            .map_err(|_| js_error(MODEL_LOAD, format!("{what}: `{name}` is not a Uint8Array")))?;
        let limit = max_json_bytes(file);
        if u64::from(array.length()) > limit {
            return Err(js_error(
                MODEL_LOAD,
                format!(
                    "{what}: {file} has {} bytes, more than the {limit} glimpse reads for it; is it the model's {file}?",
                    array.length()
                ),
            ));
        }
        Ok(array.to_vec())
    };
    let required = |name: &str, file: &str| {
        field(name)?.ok_or_else(|| js_error(MODEL_LOAD, format!("{what}: `{name}` ({file}) is missing")))
    };
    let weights = required("weights", "model.safetensors")?;
    let weights = match weights.dyn_into::<web_sys::Blob>() {
        Ok(blob) => {
            JsFile::from_blob(blob).map_err(|e| js_error(MODEL_LOAD, format!("{what}: model.safetensors: {e:?}")))?
        }
        Err(other) => JsFile::new(JsBytes::Array(
            other
                .dyn_into::<Uint8Array>()
                .map_err(|_| js_error(MODEL_LOAD, format!("{what}: `weights` is neither a Uint8Array nor a Blob")))?,
        )),
    };
    Ok(ModelFiles {
        source: what.to_string(),
        config: bytes("config", "config.json", required("config", "config.json")?)?,
        weights: Weights::Reader(Arc::new(weights), format!("{what} model.safetensors")),
        tokenizer: bytes("tokenizer", "tokenizer.json", required("tokenizer", "tokenizer.json")?)?,
        preprocessor: field("preprocessor")?
            .map(|value| bytes("preprocessor", "preprocessor_config.json", value))
            .transpose()?,
        processor: field("processor")?.map(|value| bytes("processor", "processor_config.json", value)).transpose()?,
    })
}

/// A file's bytes outside the module's memory, read on the thread that made it.
struct JsFile {
    bytes: JsBytes,
    size: u64,
    made_on: std::thread::ThreadId,
}

enum JsBytes {
    Array(Uint8Array),
    /// Read with the worker's synchronous reader (workers only): range by range, or whole on the
    /// first read when small (then kept until the file is dropped).
    Blob {
        blob: web_sys::Blob,
        reader: web_sys::FileReaderSync,
        whole: std::cell::OnceCell<Uint8Array>,
    },
}

/// Blobs up to this size are read whole, at once: each read of a Blob is a round trip to the
/// browser's blob store, and a small model read tensor by tensor paid it for each of its hundred
/// tensors (a third of the demo's load). Larger ones are read range by range, so that a 1 GB
/// checkpoint is never copied whole.
const WHOLE_BLOB_BYTES: u64 = 64 << 20;

impl JsFile {
    fn from_blob(blob: web_sys::Blob) -> Result<Self, JsValue> {
        let reader = web_sys::FileReaderSync::new()?;
        Ok(Self::new(JsBytes::Blob { reader, blob, whole: std::cell::OnceCell::new() }))
    }

    fn new(bytes: JsBytes) -> Self {
        let size = match &bytes {
            JsBytes::Array(array) => array.length().into(),
            // A Blob's size is a whole number of bytes below 2^53.
            JsBytes::Blob { blob, .. } => blob.size() as u64,
        };
        Self { bytes, size, made_on: std::thread::current().id() }
    }
}

// SAFETY: a JavaScript object can only be used on the thread that made it: the engine's worker.
// The single-threaded engine has no other thread; in the threaded one, rayon's threads run tensor
// arithmetic only, the loader reads a file on the thread that called it (a read from any other is
// refused below), and the models holding the file are dropped where the session lives.
unsafe impl Send for JsFile {}
unsafe impl Sync for JsFile {}

impl ReadAt for JsFile {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        if std::thread::current().id() != self.made_on {
            return Err(std::io::Error::other("a JavaScript file was read off the engine's thread"));
        }
        let Some(end) = offset.checked_add(buf.len() as u64).filter(|&end| end <= self.size()) else {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        };
        let mut copy = |range: Uint8Array| {
            if range.length() as usize != buf.len() {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
            }
            range.copy_to(buf);
            Ok(())
        };
        let failed = |e: JsValue| std::io::Error::other(format!("reading the Blob failed: {e:?}"));
        match &self.bytes {
            JsBytes::Array(bytes) => {
                let (Ok(start), Ok(end)) = (u32::try_from(offset), u32::try_from(end)) else {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                };
                copy(bytes.subarray(start, end))
            }
            JsBytes::Blob { blob, reader, whole } if self.size <= WHOLE_BLOB_BYTES => {
                let bytes = match whole.get() {
                    Some(bytes) => bytes,
                    None => {
                        let read = reader.read_as_array_buffer(blob).map_err(failed)?;
                        whole.get_or_init(|| Uint8Array::new(&read))
                    }
                };
                // Within the length checked above, which a small Blob's fits in u32.
                copy(bytes.subarray(offset as u32, end as u32))
            }
            JsBytes::Blob { blob, reader, .. } => {
                let read = blob
                    .slice_with_f64_and_f64(offset as f64, end as f64)
                    .and_then(|range| reader.read_as_array_buffer(&range))
                    .map_err(failed)?;
                copy(Uint8Array::new(&read))
            }
        }
    }
}

/// The number of `width` x `height` RGBA frames in `rgba`, one after another; refuses sides out
/// of range and a partial frame.
fn frame_count(rgba: &[u8], width: u32, height: u32) -> Result<usize, JsValue> {
    if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
        return Err(errors::input(format!("a {width} x {height} frame: each side must be in 1..={MAX_SIDE}")));
    }
    let frame_bytes = width as usize * height as usize * 4;
    if rgba.is_empty() || !rgba.len().is_multiple_of(frame_bytes) {
        return Err(errors::input(format!(
            "{} bytes are not a whole number of {width} x {height} RGBA frames",
            rgba.len()
        )));
    }
    Ok(rgba.len() / frame_bytes)
}

/// The RGB images of frames [`frame_count`] has checked, transparency composited over white as
/// for image files.
fn rgb_frames(rgba: &[u8], width: u32, height: u32) -> impl Iterator<Item = RgbImage> + '_ {
    rgba.chunks_exact(width as usize * height as usize * 4).map(move |frame| {
        let rgba = RgbaImage::from_raw(width, height, frame.to_vec()).expect("the size was checked");
        to_rgb(DynamicImage::ImageRgba8(rgba))
    })
}

fn one_image(rgba: &[u8], width: u32, height: u32) -> Result<RgbImage, JsValue> {
    match frame_count(rgba, width, height)? {
        1 => Ok(rgb_frames(rgba, width, height).next().expect("one frame was counted")),
        n => Err(errors::input(format!("{n} images where one was expected"))),
    }
}

/// A `[1, dim]` tensor read back as a `Float32Array`.
async fn vector(tensor: Tensor<2>) -> Result<JsValue, JsValue> {
    let values: Vec<f32> = read::<2, Float, f32>(tensor).await.map_err(errors::engine)?;
    Ok(js_sys::Float32Array::from(values.as_slice()).into())
}

/// Sends each step to `on_step` as JSON, spans in seconds on the video's clock (`start` on, for
/// `duration`).
fn report_step(on_step: &Function, start: f64, duration: f64) -> impl FnMut(&Step) + use<> {
    let on_step = on_step.clone();
    move |step: &Step| {
        let spans = step
            .spans
            .as_ref()
            .map(|spans| spans.iter().map(|(s, e)| [start + s * duration, start + e * duration]).collect::<Vec<_>>());
        let report = json!({
            "token": step.token,
            "step": step.step,
            "totalSteps": step.total_steps,
            "clipLoss": step.clip_loss,
            "fluencyLoss": step.fluency_loss,
            "maskLoss": step.mask_loss,
            "spans": spans,
            "captions": step.captions,
        });
        // A callback that throws must not stop the captioning; the page sees its own exception.
        let _ = on_step.call1(&JsValue::NULL, &report.to_string().into());
    }
}
