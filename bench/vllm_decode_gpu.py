"""vLLM generation alone, as TRL's colocated engine runs it: how the time of one generation batch grows
with the number of completions (64, 128, 256) at a fixed completion length.

    # device (kit staged by tests/gpu_device.sh)
    python3 bench/vllm_decode_gpu.py --model /tmp/models/qwen05 --gsm8k /tmp/gpu-stage/gsm8k --json $OUT/decode.json

The engine is built with TRL 1.15's colocate arguments (trl/generation/vllm_generation.py): the given
`gpu_memory_utilization`, `max_num_seqs` 256, `max_num_batched_tokens` 4096, `logprobs_mode`
processed_logprobs. Prompts: GSM8K train questions through the model's chat template, each repeated 8
times (8 generations per prompt, as GRPO samples). Every completion runs to `--tokens` (`ignore_eos`),
temperature 1.0. Each case runs `--repeats` times after one warm-up; the table gives the median wall
seconds and completion tokens/s for four output modes: what TRL asks for (per-token log-probs, `logprobs=0`,
for its importance-sampling correction; text detokenized step by step, vLLM's default), the same without
detokenizing (`detokenize=False`: TRL decodes the token ids itself), the job's (no text, log-probs in vLLM's
flat lists: `flat_logprobs=True`, grpo_job.training.engines.LEAN_VLLM_OUTPUTS), and neither. `extract s` is
TRL's own `extract_logprobs` on the batch's outputs (where flat log-probs become per-position dicts again):
part of what the trainer pays, after `generate`. A 0.5B model's decode
step is short enough that vLLM's per-sequence work on the CPU (scheduling, detokenizing, log-prob objects)
can set its pace: this is what the three modes separate.

`--launcher trl` builds the engine as TRL's colocate mode does: vLLM's engine core in the calling process
(`VLLM_ENABLE_V1_MULTIPROCESSING=0`) behind the `external_launcher` executor, so scheduling, output
processing and the model's launches share one Python thread. `--launcher default` is vLLM's own offline
default (the engine core in a second process, overlapping with output processing).

The process leaves with `os._exit` whatever happens (an exception inside vLLM's offline API left the
engine core's threads running, and the 2026-12-05 device call waited 6 minutes for its time limit).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--gsm8k", type=Path, required=True)
    p.add_argument("--tokens", type=int, default=384)
    p.add_argument("--sizes", default="64,128,256")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.3)
    p.add_argument("--max-num-batched-tokens", type=int, default=4096)
    p.add_argument("--max-model-len", type=int, default=1024, help="the job's engine: prompt + completion lengths (640)")
    p.add_argument("--launcher", choices=("trl", "default"), default="trl")
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    engine_kwargs = {}
    if a.launcher == "trl":  # trl/generation/vllm_generation.py, colocate
        os.environ.update(VLLM_ENABLE_V1_MULTIPROCESSING="0", RANK="0", LOCAL_RANK="0", WORLD_SIZE="1",
                          MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ.get("MASTER_PORT", "29533"))
        engine_kwargs["distributed_executor_backend"] = "external_launcher"

    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams

    sizes = [int(x) for x in a.sizes.split(",")]
    tok = AutoTokenizer.from_pretrained(a.model)
    questions = [json.loads(line)["question"] for line in (a.gsm8k / "train.jsonl").read_text().splitlines()[:64]]
    # text first, then ids: transformers 5 returns a BatchEncoding (not a dict) from tokenize=True
    texts = [tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False)
             for q in questions]
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    t0 = time.monotonic()
    llm = LLM(model=a.model, gpu_memory_utilization=a.gpu_memory_utilization, max_model_len=a.max_model_len,
              max_num_seqs=max(sizes), max_num_batched_tokens=a.max_num_batched_tokens,
              logprobs_mode="processed_logprobs", seed=0, **engine_kwargs)
    start_s = time.monotonic() - t0
    rows = []
    from trl.generation.vllm_generation import extract_logprobs

    print("| completions | logprobs | detokenize | flat_logprobs | tokens each | wall s | extract s | completion tokens/s |\n"
          "| --- | --- | --- | --- | --- | --- | --- | --- |")
    for logprobs, detokenize, flat in ((0, True, False), (0, False, False), (0, False, True), (None, False, False)):
        params = SamplingParams(n=1, temperature=1.0, max_tokens=a.tokens, ignore_eos=True, logprobs=logprobs,
                                detokenize=detokenize, flat_logprobs=flat)
        for n in sizes:
            batch = [{"prompt_token_ids": prompts[i // 8 % len(prompts)]} for i in range(n)]
            llm.generate(batch, sampling_params=params, use_tqdm=False)  # warm-up
            walls = []
            for _ in range(a.repeats):
                t = time.monotonic()
                outs = llm.generate(batch, sampling_params=params, use_tqdm=False)
                walls.append(time.monotonic() - t)
            t = time.monotonic()
            extracted, _ = extract_logprobs(outs)
            extract_s = time.monotonic() - t
            assert (extracted is None) == (logprobs is None)
            toks = sum(len(o.outputs[0].token_ids) for o in outs)
            wall = statistics.median(walls)
            rows.append({"completions": n, "logprobs": logprobs, "detokenize": detokenize, "flat_logprobs": flat,
                         "tokens_each": toks // n, "wall_s": round(wall, 3), "extract_s": round(extract_s, 3),
                         "completion_tokens_per_s": round(toks / wall), "walls": [round(w, 3) for w in walls]})
            print(f"| {n} | {logprobs} | {detokenize} | {flat} | {toks // n} | {wall:.3f} | {extract_s:.3f} | "
                  f"{toks / wall:.0f} |", flush=True)
    print(f"engine start {start_s:.1f} s")
    if a.json:
        a.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "argv": sys.argv, "launcher": a.launcher,
                                      "engine_start_s": start_s,
                                      "results": rows}, indent=1))
    return 0


if __name__ == "__main__":
    try:
        code = main()
    except BaseException:  # noqa: BLE001 - printed, then the process leaves without vLLM's teardown
        import traceback

        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
