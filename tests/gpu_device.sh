#!/usr/bin/env bash
# The GPU acceptance suite on a lent device, one command for every call (the device takes 64 MiB per
# call, so the kit of ../shared/gpu travels as chunk folders; read its README first).
#
# Here, once:   ../shared/gpu/fetch-wheels.sh --model --dir .gpu && ../shared/gpu/fetch-qwen.sh --dir .gpu
#               mkdir -p .gpu/data && cp -r ../shared/data/gsm8k .gpu/data/
# Device, back to back, each call carrying one folder (.gpu/c00 .. .gpu/c09, .gpu/q00 .. .gpu/q08, .gpu/data):
#               bash tests/gpu_device.sh
# Device, then: bash tests/gpu_device.sh [pytest arguments, e.g. -k default_recipe]
#   On a fresh machine run `-k sigterm` before `-k default_recipe`: the machine's first vLLM start compiles
#   kernels (about 70 s more than a warm start), and the acceptance run then needs 430-560 s of its call. A call
#   cut off by its timeout leaves the runs' stores in $GRPO_GPU_RUNS; the same command again resumes the
#   acceptance run where it stopped (the job skips the stages already done), as a Kubernetes Job's retry would.
#
# Each call installs or joins what it carries (/tmp survives while the machine is warm). Once the stack
# and the Qwen GGUF are there it dequantizes the models with the job's own loader (once), then, when
# given arguments, runs `pytest -m gpu` on them with the kit's paths, sampling GPU memory every 0.5 s.
# What comes back under $OUT: pytest.log, gpu-memory.csv and results.tgz (each run's logs, metrics,
# evaluations and stage markers, by test name).
set -uo pipefail
STAGE=${GPU_STAGE:-/tmp/gpu-stage}; SITE=${GPU_SITE:-/tmp/site}; MODELS=${GPU_MODELS:-/tmp/models}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" "$STAGE" "$MODELS"
shopt -s nullglob
for c in .gpu/c[0-9][0-9]; do bash "$c/device-install.sh" "$c" || exit 1; done
for q in .gpu/q[0-9][0-9]; do bash "$q/device-join.sh" "$q" || exit 1; done
[ -d .gpu/data/gsm8k ] && rm -rf "$STAGE/gsm8k" && cp -r .gpu/data/gsm8k "$STAGE/gsm8k" && echo "GSM8K in $STAGE/gsm8k"
# (nullglob: a glob that matches nothing expands to nothing, so no `ls` of the working directory)
ggufs=("$STAGE"/qwen/*.gguf); QWEN_GGUF=${ggufs[0]:-}
smol=("$STAGE"/model/*.gguf); SMOL_GGUF=${smol[0]:-}
WANTED=${GPU_MODELS_WANTED:-qwen05}
# the Qwen parts (q00..q08) only when Qwen is wanted: the unsloth tests need the stack and SmolLM2 alone
if [ ! -f "$SITE/.gpu-installed" ] || { [[ " $WANTED " == *" qwen05 "* ]] && [ -z "$QWEN_GGUF" ]; }; then
  echo "kit not fully staged yet"; exit 0
fi
export PYTHONPATH="$SITE:$PWD" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

# The models, dequantized by the job's own GGUF loader (model.gguf_file), once per machine.
# SmolLM2 (tests/test_gpu.py, the unsloth engine) only when asked for: GPU_MODELS_WANTED="qwen05 smollm2-135m".
for pair in "qwen05:$QWEN_GGUF" "smollm2-135m:$SMOL_GGUF"; do
  name=${pair%%:*}; gguf=${pair#*:}
  [[ " $WANTED " == *" $name "* ]] || continue
  [ -z "$gguf" ] || [ -f "$MODELS/$name/config.json" ] && continue
  t0=$(date +%s)
  dir=$(python3 -c "import sys; from pathlib import Path; from grpo_job import models; from grpo_job.settings import ModelSettings
p = Path(sys.argv[1]); print(models.resolve(ModelSettings(name_or_path=str(p.parent), gguf_file=p.name), Path(sys.argv[2])))" \
    "$gguf" "$STAGE/cache" | tail -1) || exit 1
  ln -sfn "$dir" "$MODELS/$name"; echo "$name: $dir (dequantized in $(( $(date +%s) - t0 )) s)"
done
[ $# -eq 0 ] && exit 0

export GRPO_GPU_QWEN_MODEL="$MODELS/qwen05" GRPO_GPU_TEST_MODEL="$MODELS/smollm2-135m" GRPO_GPU_GSM8K="$STAGE/gsm8k"
export GRPO_GPU_RUNS=/tmp/gpu-runs
nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv,noheader -lms 500 > "$OUT/gpu-memory.csv" &
SMI=$!
python3 -m pytest -m gpu -p no:cacheprovider -rA -s "$@" 2>&1 | tee "$OUT/pytest.log"
rc=${PIPESTATUS[0]}
kill $SMI 2>/dev/null
# the runs' small files (metrics, evaluations, markers, logs) for docs/benchmarks.md, in one archive
# ($OUT takes at most 8 files)
keep=/tmp/gpu-results; rm -rf "$keep"; mkdir -p "$keep"
for run in "$GRPO_GPU_RUNS"/*/; do
  t=$(basename "$run"); mkdir -p "$keep/$t"
  for f in "$run"*.log "$run"*.txt; do cp "$f" "$keep/$t/"; done
  for store in "$run"store/*/; do
    for f in metrics.jsonl eval/base.json eval/trained.json stages/train.json stages/evaluate_base.json \
             stages/evaluate_trained.json stages/reward_preflight.json report/rewards.png report/report.md; do
      [ -f "$store$f" ] && cp "$store$f" "$keep/$t/$(echo "$f" | tr / _)"
    done
  done
done
cp "$OUT/gpu-memory.csv" "$keep/"
tar -C "$keep" -czf "$OUT/results.tgz" . && rm -rf "$GRPO_GPU_RUNS"
exit "$rc"
