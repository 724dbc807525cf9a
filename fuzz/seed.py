#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target (fuzz/corpus/<target>/) from the test fixtures.

Two-part inputs start with the length of their first part (two bytes, little-endian; `split` in
tests/fuzz_targets.rs). Besides the fixture models as they are, `weights` gets tiny variants of
them (a few hundred parameters, stored as F32, F16 and BF16): small inputs let the fuzzer try far
more mutations a second. Needs only the standard library and ffmpeg (with libwebp).
"""

import json
import shutil
import struct
import subprocess
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
FIXTURES = FUZZ.parent / "tests" / "fixtures"
CORPUS = FUZZ / "corpus"


def two_parts(first: bytes, second: bytes) -> bytes:
    assert len(first) < 1 << 16, "the first part must fit a two-byte length"
    return struct.pack("<H", len(first)) + first + second


def safetensors(shapes: dict, dtype: str) -> bytes:
    """A safetensors file of the tensors `shapes` (name -> shape), filled with small values."""
    pack = {"F32": lambda v: struct.pack("<f", v), "F16": lambda v: struct.pack("<e", v),
            "BF16": lambda v: struct.pack("<f", v)[2:]}[dtype]
    header, data = {"__metadata__": {"format": "pt"}}, b""
    for name, shape in shapes.items():
        count = 1
        for side in shape:
            count *= side
        values = b"".join(pack((i % 7 - 3) / 64) for i in range(count))
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(values)]}
        data += values
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def tiny_gpt2(config: dict) -> dict:
    config.update(vocab_size=6, n_positions=4, n_embd=4, n_head=2, n_layer=1, n_inner=8, bos_token_id=5,
                  eos_token_id=5)
    d, inner = 4, 8
    shapes = {"transformer.wte.weight": [6, d], "transformer.wpe.weight": [4, d]}
    for norm in ["h.0.ln_1", "h.0.ln_2", "ln_f"]:
        shapes |= {f"transformer.{norm}.weight": [d], f"transformer.{norm}.bias": [d]}
    for name, (i, o) in {"attn.c_attn": (d, 3 * d), "attn.c_proj": (d, d), "mlp.c_fc": (d, inner),
                         "mlp.c_proj": (inner, d)}.items():
        shapes |= {f"transformer.h.0.{name}.weight": [i, o], f"transformer.h.0.{name}.bias": [o]}
    return shapes


def encoder_layer(prefix: str, d: int, inner: int) -> dict:
    shapes = {}
    for norm in ["layer_norm1", "layer_norm2"]:
        shapes |= {f"{prefix}.{norm}.weight": [d], f"{prefix}.{norm}.bias": [d]}
    for name, (o, i) in {"self_attn.q_proj": (d, d), "self_attn.k_proj": (d, d), "self_attn.v_proj": (d, d),
                         "self_attn.out_proj": (d, d), "mlp.fc1": (inner, d), "mlp.fc2": (d, inner)}.items():
        shapes |= {f"{prefix}.{name}.weight": [o, i], f"{prefix}.{name}.bias": [o]}
    return shapes


def tiny_clip(config: dict) -> dict:
    config["projection_dim"] = 2
    config["text_config"].update(vocab_size=6, hidden_size=4, intermediate_size=4, num_attention_heads=2,
                                 num_hidden_layers=1, max_position_embeddings=4, bos_token_id=4, eos_token_id=5)
    config["vision_config"].update(hidden_size=4, intermediate_size=4, num_attention_heads=1, num_hidden_layers=1,
                                   num_channels=3, image_size=2, patch_size=1)
    d = 4
    shapes = {
        "logit_scale": [],
        "text_model.embeddings.token_embedding.weight": [6, d],
        "text_model.embeddings.position_embedding.weight": [4, d],
        "text_model.final_layer_norm.weight": [d],
        "text_model.final_layer_norm.bias": [d],
        "text_projection.weight": [2, d],
        "vision_model.embeddings.class_embedding": [d],
        "vision_model.embeddings.patch_embedding.weight": [d, 3, 1, 1],
        "vision_model.embeddings.position_embedding.weight": [5, d],
        "vision_model.pre_layrnorm.weight": [d],
        "vision_model.pre_layrnorm.bias": [d],
        "vision_model.post_layernorm.weight": [d],
        "vision_model.post_layernorm.bias": [d],
        "visual_projection.weight": [2, d],
    }
    shapes |= encoder_layer("text_model.encoder.layers.0", d, 4)
    shapes |= encoder_layer("vision_model.encoder.layers.0", d, 4)
    return shapes


def weights(out: Path):
    for model in ["gpt2-lmhead", "gpt2-base", "clip-a", "clip-b"]:
        config = (FIXTURES / model / "config.json").read_bytes()
        (out / model).write_bytes(two_parts(config, (FIXTURES / model / "model.safetensors").read_bytes()))
    for model, shrink in [("gpt2-lmhead", tiny_gpt2), ("clip-a", tiny_clip)]:
        config = json.loads((FIXTURES / model / "config.json").read_text())
        shapes = shrink(config)
        config = json.dumps(config, separators=(",", ":")).encode()
        for dtype in ["F32", "F16", "BF16"]:
            (out / f"{model}-tiny-{dtype.lower()}").write_bytes(two_parts(config, safetensors(shapes, dtype)))


def tokenizers(out: Path):
    text = "A photo of two cats, 3 dogs and a café.".encode()
    for model in ["gpt2-lmhead", "gpt2-base", "clip-a", "clip-b"]:
        (out / model).write_bytes(two_parts(text, (FIXTURES / model / "tokenizer.json").read_bytes()))


def ffmpeg(*args):
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *map(str, args)], check=True)


def images(out: Path):
    images = FIXTURES / "images"
    for png in images.glob("*.png"):
        shutil.copy(png, out / png.name)
    ffmpeg("-i", images / "rgb_45x38.png", out / "rgb_45x38.jpg")
    ffmpeg("-i", images / "rgba_30x61.png", "-c:v", "libwebp", "-lossless", "1", out / "rgba_30x61.webp")
    # Three moving 16x12 frames at 4 fps, as an animated GIF, WebP and PNG.
    frames = ["-loop", "1", "-framerate", "4", "-i", images / "rgba_30x61.png", "-vf", "crop=16:12:t*20:t*20",
              "-frames:v", "3"]
    ffmpeg(*frames, "-loop", "0", out / "animation.gif")
    ffmpeg(*frames, "-loop", "0", "-c:v", "libwebp_anim", "-lossless", "1", out / "animation.webp")
    ffmpeg(*frames, "-plays", "0", "-f", "apng", out / "animation.png")


def preprocessors(out: Path):
    # clip-a's file is for 30-pixel images; the target reads configs for a 224-pixel model.
    config = json.loads((FIXTURES / "clip-a" / "preprocessor_config.json").read_text())
    config.update(crop_size={"height": 224, "width": 224}, size={"shortest_edge": 256})
    seeds = {
        "clip-a": config,
        "defaults": {},
        "untouched": {"do_resize": False, "do_center_crop": False, "do_normalize": False},
        "exact": {"size": {"height": 224, "width": 224}, "do_center_crop": False, "resample": 2},
    }
    for name, seed in seeds.items():
        (out / name).write_text(json.dumps(seed, indent=2) + "\n")


def main():
    shutil.rmtree(CORPUS, ignore_errors=True)
    for target, write in [("weights", weights), ("tokenizer", tokenizers), ("image", images),
                          ("preprocessor", preprocessors)]:
        (CORPUS / target).mkdir(parents=True)
        write(CORPUS / target)
    total = sum(f.stat().st_size for f in CORPUS.rglob("*") if f.is_file())
    print(f"{CORPUS}: {total // 1024} KiB")


main()
