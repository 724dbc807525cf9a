#!/usr/bin/env python3
"""PyTorch reference for `glimpse bench`: the same five figures, measured with transformers'
GPT-2 small and CLIP ViT-B/32 built from their default configs with random weights (nothing is
downloaded), on the CPU or (--device cuda) on a CUDA GPU.

    python3 bench/reference.py --metric prefix_step_ms [--runs 5] [--budget 60] [--device cpu|cuda]
    python3 bench/reference.py --check [--device cuda]   # versions, or an error when torch/transformers
                                                         # (or, with cuda, a GPU) are missing

Prints one JSON line per figure, in the format of `glimpse bench --measure`; on CUDA its peak memory
is PyTorch's peak GPU allocation (the host's peak RSS goes in the detail). Random inputs are drawn
on the CPU and then moved, so both devices see the same ones. The guided-captioning
loop below is the one of `crates/glimpse-align/src/guided.rs` (ZeroCap-style prefix steps; with
moment masks for ZeroTA), written the way a PyTorch user would: the frozen LM's distribution is
extended one token at a time from its KV cache, candidates are scored by CLIP in one batch.
Two differences that cost nothing measurable: texts are made of ids directly (glimpse goes through
its word-level tokenizers), and ZeroTA's masks start evenly spread (glimpse starts them at scene
cuts, one extra readback).
"""

import argparse
import json
import math
import resource
import statistics
import sys
import time

METRICS = ["gpt2_decode_tok_s", "clip_image_img_s", "clip_text_txt_s", "prefix_step_ms", "zerota_video_s"]
UNITS = {"gpt2_decode_tok_s": "tok/s", "clip_image_img_s": "img/s", "clip_text_txt_s": "txt/s",
         "prefix_step_ms": "ms", "zerota_video_s": "s"}


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def peak_gpu_mib(torch):
    return torch.cuda.max_memory_allocated() / 2**20


def timed(runs, budget, work, device):
    """One warm-up run (`work(0)`), then up to `runs` timed runs with their own inputs."""
    work(0)
    times, started = [], time.perf_counter()
    for run in range(1, runs + 1):
        times.append(seconds(work, run, device))
        if time.perf_counter() - started > budget:
            break
    return times


def seconds(work, run, device):
    """Time of `work(run)`; on CUDA between two events, from an idle GPU to the end of its queued work
    (the host clock would stop when the last kernel is queued, not when it ends)."""
    if device.type != "cuda":
        t = time.perf_counter()
        work(run)
        return time.perf_counter() - t
    import torch
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    work(run)
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1000  # milliseconds


def gpt2_decode(torch, tf, runs, budget, device):
    config = tf.GPT2Config()
    model = tf.GPT2LMHeadModel(config).eval().to(device)

    def work(run):
        g = torch.Generator().manual_seed(run)
        ids = torch.randint(0, config.vocab_size, (1, 8), generator=g).to(device)
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=64, min_new_tokens=64,
                                 do_sample=False, pad_token_id=config.eos_token_id)
        assert out.shape[1] == 72, out.shape

    times = timed(runs, budget, work, device)
    return 64 / statistics.median(times), times, {"prompt_tokens": 8, "new_tokens": 64}


def clip_image(torch, tf, runs, budget, device):
    model = tf.CLIPVisionModelWithProjection(tf.CLIPVisionConfig()).eval().to(device)

    def work(run):
        g = torch.Generator().manual_seed(run)
        with torch.inference_mode():
            out = model(pixel_values=torch.randn(8, 3, 224, 224, generator=g).to(device)).image_embeds
        assert out.shape == (8, 512)

    times = timed(runs, budget, work, device)
    return 8 / statistics.median(times), times, {"batch": 8, "size": 224}


def clip_text(torch, tf, runs, budget, device):
    config = tf.CLIPTextConfig()
    model = tf.CLIPTextModelWithProjection(config).eval().to(device)

    def work(run):
        g = torch.Generator().manual_seed(run)
        middle = torch.randint(0, config.vocab_size - 2, (64, 14), generator=g)
        ids = torch.cat([torch.full((64, 1), config.vocab_size - 2), middle, torch.full((64, 1), config.vocab_size - 1)], 1)
        with torch.inference_mode():
            out = model(input_ids=ids.to(device)).text_embeds
        assert out.shape == (64, 512)

    times = timed(runs, budget, work, device)
    return 64 / statistics.median(times), times, {"batch": 64, "tokens": 16}


class Guided:
    """CLIP-guided captioning of a batch of targets (glimpse-align's `guided::caption`)."""

    def __init__(self, torch, tf, device):
        self.torch, self.tf, self.device = torch, tf, device
        self.lm = tf.GPT2LMHeadModel(tf.GPT2Config()).eval().requires_grad_(False).to(device)
        self.clip = tf.CLIPTextModelWithProjection(tf.CLIPTextConfig()).eval().requires_grad_(False).to(device)
        self.eos = self.lm.config.eos_token_id
        # The word-level vocabulary of glimpse's bench: ids 2.. are words, then the same words
        # after a space; CLIP's vocabulary holds the words after its three specials.
        self.words = (self.lm.config.vocab_size - 2) // 2

    def clip_ids(self, tokens):
        words = [(t - 2) % self.words for t in tokens if t != self.eos]
        return [0] + [3 + w % (self.clip.config.vocab_size - 3) for w in words] + [1]

    def encode(self, rows):
        torch = self.torch
        width = max(len(r) for r in rows)
        ids = torch.tensor([r + [r[-1]] * (width - len(r)) for r in rows], device=self.device)
        with torch.no_grad():
            return torch.nn.functional.normalize(self.clip(input_ids=ids).text_embeds, dim=-1)

    def guarded(self, logits, generated, penalty, ngram):
        logits = logits.clone()
        for t in generated:
            logits[t] = logits[t] / penalty if logits[t] > 0 else logits[t] * penalty
        if ngram > 0 and len(generated) >= ngram:
            tail = generated[len(generated) - (ngram - 1):]
            for i in range(len(generated) - ngram + 1):
                if generated[i:i + ngram - 1] == tail:
                    logits[generated[i + ngram - 1]] = float("-inf")
        return logits

    def caption(self, prompt_words, batch, targets, max_tokens, top_k, steps_per_token, mask_params=(),
                prefix_lr=0.02, mask_lr=0.003, temperature=0.01, fluency_weight=0.2, penalty=1.5, ngram=3):
        """`targets(step, total)` -> (`[batch, dim]` unit targets, own loss or None). Returns steps taken."""
        torch, F = self.torch, self.torch.nn.functional
        ids = [self.eos] + [2 + w for w in prompt_words]
        dummy, first = ids[:-1], ids[-1]
        with torch.no_grad():
            base = self.lm(torch.tensor([dummy] * batch, device=self.device), use_cache=True).past_key_values
        base_kv = [(layer.keys, layer.values) for layer in base.layers]
        offsets = [torch.zeros_like(t, requires_grad=True) for kv in base_kv for t in kv]
        prefix_optim = torch.optim.AdamW(offsets, lr=prefix_lr, weight_decay=0.0)
        mask_optim = torch.optim.AdamW(mask_params, lr=mask_lr, weight_decay=0.0) if mask_params else None
        frozen_cache = self.tf.DynamicCache()
        for layer, (k, v) in enumerate(base_kv):
            frozen_cache.update(k.clone(), v.clone(), layer)

        def prefixed(context):
            cache = self.tf.DynamicCache()
            for layer, (k, v) in enumerate(base_kv):
                cache.update(k + offsets[2 * layer], v + offsets[2 * layer + 1], layer)
            return self.lm(torch.tensor(context, device=self.device), past_key_values=cache).logits[:, -1]

        fed = [[] for _ in range(batch)]
        done = [False] * batch
        total, steps = max_tokens * steps_per_token, 0
        for token in range(max_tokens):
            context = [[first] + f for f in fed]
            newest = [[c[-1]] for c in context]
            with torch.no_grad():
                newest_ids = torch.tensor(newest, device=self.device)
                frozen = F.log_softmax(self.lm(newest_ids, past_key_values=frozen_cache).logits[:, -1], -1)
            logits = prefixed(context)
            detached = logits.detach()
            candidates = [torch.topk(self.guarded(detached[b], fed[b], penalty, ngram), top_k).indices.tolist()
                          for b in range(batch)]
            embeds = self.encode([self.clip_ids(fed[b] + [c]) for b in range(batch) for c in candidates[b]])
            embeds = embeds.reshape(batch, top_k, -1)
            candidate_ids = torch.tensor(candidates, device=self.device)
            for step in range(steps_per_token):
                target, own = targets(token * steps_per_token + step, total)
                q = F.softmax((embeds @ target.unsqueeze(-1)).squeeze(-1) / temperature, -1)
                logp = F.log_softmax(logits if step == 0 else prefixed(context), -1)
                clip_loss = -(q * logp.gather(1, candidate_ids)).sum(1).mean()
                fluency = (frozen.exp() * (frozen - logp)).sum(1).mean()
                loss = clip_loss + fluency_weight * fluency + (own if own is not None else 0.0)
                prefix_optim.zero_grad()
                if mask_optim:
                    mask_optim.zero_grad()
                loss.backward()
                prefix_optim.step()
                if mask_optim:
                    mask_optim.step()
                clip_loss.item(), fluency.item()  # the progress report glimpse reads back every step
                steps += 1
            target, _ = targets((token + 1) * steps_per_token, total)
            with torch.no_grad():
                q_log = F.softmax((embeds @ target.unsqueeze(-1)).squeeze(-1) / temperature, -1).clamp_min(1e-12).log()
                logits = prefixed(context)
            for b in range(batch):
                if done[b]:
                    fed[b].append(self.eos)
                    continue
                logp = F.log_softmax(self.guarded(logits[b], fed[b], penalty, ngram), -1)
                scores = logp[candidate_ids[b]] + q_log[b]
                chosen = candidates[b][int(torch.argmax(scores))]
                done[b] = chosen == self.eos
                fed[b].append(chosen)
            if all(done):
                break
        final, _ = targets(total, total)
        with torch.no_grad():
            (self.encode([self.clip_ids(f) for f in fed]) * final.detach()).sum(1).tolist()
        return steps


def prefix_step(torch, tf, runs, budget, device):
    guided = Guided(torch, tf, device)
    taken = []

    def work(run):
        g = torch.Generator().manual_seed(run)
        target = torch.nn.functional.normalize(torch.randn(1, 512, generator=g), dim=-1).to(device)
        tokens = 2 if run == 0 else 12
        steps = guided.caption([1, 2, 3, 4, 5], 1, lambda s, t: (target, None), tokens, 64, 1)
        if run > 0:
            assert steps == 12, steps
            taken.append(steps)

    times = timed(runs, budget, work, device)
    per_step = [t * 1000 / 12 for t in times]
    return statistics.median(per_step), times, {"prefix_tokens": 5, "context_tokens": "1..12", "candidates": 64,
                                                "steps": sum(taken)}


def synthetic_video(np):
    """glimpse bench's 60 s at 2 fps: three scenes of colour gradients with a little noise, 320x240."""
    frames = []
    y, x = np.mgrid[0:240, 0:320].astype(np.int64)
    for i in range(120):
        scene = i * 3 // 120
        noise = (x * 7 + y * 13 + i * 31) % 9
        rgb = np.stack([(scene * 90 + x // 4) % 256, (y + scene * 60) % 256, (200 - scene * 70 + noise) % 256], -1)
        frames.append(rgb.astype(np.uint8))
    return frames


def zerota_video(torch, tf, runs, budget, device):
    import numpy as np
    F = torch.nn.functional
    guided = Guided(torch, tf, device)
    vision = tf.CLIPVisionModelWithProjection(tf.CLIPVisionConfig()).eval().requires_grad_(False).to(device)
    processor = tf.CLIPImageProcessor()
    video = synthetic_video(np)
    taken = []

    def dense_caption(frames, max_tokens, k=3, min_width=0.05, tiou_weight=1.0, contrast_weight=0.5):
        with torch.no_grad():
            chunks = [vision(**processor(images=frames[i:i + 16], return_tensors="pt").to(device)).image_embeds
                      for i in range(0, len(frames), 16)]
        embeds = F.normalize(torch.cat(chunks), dim=-1)
        n = embeds.shape[0]
        times = (torch.arange(n, dtype=torch.float32, device=device) + 0.5) / n

        def logit(p):
            p = min(max(p, 1e-4), 1 - 1e-4)
            return math.log(p / (1 - p))

        width0 = 0.8 / k
        width_raw = torch.tensor([logit((width0 - min_width) / (1 - min_width))] * k, device=device,
                                 requires_grad=True)
        centre_raw = torch.tensor([logit(((i + 0.5) / k - width0 / 2) / (1 - width0)) for i in range(k)],
                                  device=device, requires_grad=True)

        def pool(m):
            return F.normalize((m / m.sum(1, keepdim=True).clamp_min(1e-6)) @ embeds, dim=-1)

        def targets(step, total):
            tau = 0.05 * (0.01 / 0.05) ** min(step / max(total - 1, 1), 1.0)
            width = torch.sigmoid(width_raw) * (1 - min_width) + min_width
            centre = width / 2 + (1 - width) * torch.sigmoid(centre_raw)
            start, end = (centre - width / 2)[:, None], (centre + width / 2)[:, None]
            edge = lambda z: torch.sigmoid((z / tau).clamp(-30, 30))
            m = edge(times[None] - start) * edge(end - times[None])
            inter = torch.minimum(m[:, None], m[None]).sum(-1)
            union = torch.maximum(m[:, None], m[None]).sum(-1).clamp_min(1e-6)
            tiou = ((inter / union) * torch.triu(torch.ones(k, k, device=device), 1)).sum() / (k * (k - 1) / 2)
            inside, outside = pool(m), pool(1 - m)
            own = tiou_weight * tiou + contrast_weight * (inside * outside).sum(1).mean()
            own.item()  # glimpse reads the mask loss back for its progress report
            return inside, own

        return guided.caption([1, 2], k, targets, max_tokens, 16, 3, mask_params=[centre_raw, width_raw])

    def work(run):
        if run == 0:
            dense_caption(video[:24], 1)
        else:
            taken.append(dense_caption(video, 12))

    times = timed(1, budget, work, device)
    return statistics.median(times), times, {"frames": 120, "fps": 2, "events": 3, "tokens": 12,
                                             "steps_per_token": 3, "steps": sum(taken)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--metric", choices=METRICS)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--budget", type=float, default=60.0)
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = parser.parse_args()
    import warnings
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers renames `past_key_values`
    import torch
    import transformers as tf
    tf.logging.set_verbosity_error()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit(f"--device cuda: PyTorch {torch.__version__} sees no CUDA GPU (torch.cuda.is_available() is false)")
    on = "CPU" if device.type == "cpu" else f"CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}"
    if args.check:
        print(f"PyTorch {torch.__version__} ({on}, {torch.get_num_threads()} threads), transformers {tf.__version__}")
        return
    if not args.metric:
        parser.error("give --metric or --check")
    torch.manual_seed(0)
    measure = {"gpt2_decode_tok_s": gpt2_decode, "clip_image_img_s": clip_image, "clip_text_txt_s": clip_text,
               "prefix_step_ms": prefix_step, "zerota_video_s": zerota_video}[args.metric]
    value, runs, detail = measure(torch, tf, args.runs, args.budget, device)
    peak_mib = peak_rss_mib()
    if device.type == "cuda":
        detail["peak_host_rss_mib"], peak_mib = peak_mib, peak_gpu_mib(torch)
    print(json.dumps({"metric": args.metric, "backend": f"pytorch-{device.type}",
                      "device": f"PyTorch {torch.__version__} {on}, {torch.get_num_threads()} threads",
                      "value": value, "unit": UNITS[args.metric], "runs": runs, "peak_rss_mib": peak_mib,
                      "detail": detail}))


if __name__ == "__main__":
    sys.exit(main())
