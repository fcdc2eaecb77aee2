#!/usr/bin/env bash
# `entrypoint.py launch` on the GPUs of one machine: torchrun (NCCL) + TRL engine + vLLM colocated, a
# SIGTERM to the launcher once the first checkpoint is in the store (expect exit 75 and one new
# checkpoint), then a restart that resumes from it (expect exit 0). Writes $OUT/launch_gpu.json.
# Usage (device, after the GPU kit is staged): bash bench/launch_gpu.sh MODEL_DIR [extra settings...]
set -uo pipefail
MODEL=${1:?model folder}; shift
RUN=launch-gpu-$(date +%s)
STORE=/tmp/grpo-runs
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
ARGS=(--model.engine=trl "--model.name_or_path=$MODEL" --model.load_in_4bit=false --model.max_seq_length=384
      --model.gpu_memory_utilization=0.3 --data.path=builtin:arithmetic --data.max_samples=64 --data.eval_samples=8
      '--rewards={"partial_format": 0.5, "correctness": 2.0, "tests.reward_fixtures:length_reward": 1.0}'
      --train.num_generations=8 --train.per_device_train_batch_size=8 --train.max_prompt_length=192
      --train.max_completion_length=96 --train.max_steps=8 --train.save_steps=2 --train.optim=adamw_torch
      --export.merge=false '--export.quantizations=[]' --evaluation.enabled=false --report.enabled=false
      "--run_id=$RUN" "--store.uri=$STORE" --work_dir=/tmp/grpo-job --log_format=text "$@")
t0=$(date +%s)
python3 entrypoint.py launch "${ARGS[@]}" > "$OUT/first.log" 2>&1 &
PID=$!
until ls "$STORE/$RUN"/checkpoints/checkpoint-*/manifest.json >/dev/null 2>&1; do
  if ! kill -0 $PID 2>/dev/null; then echo "launcher ended before a checkpoint"; break; fi
  sleep 1
done
kill -TERM $PID; t_sig=$(date +%s)
wait $PID; first_rc=$?; t1=$(date +%s)
python3 entrypoint.py launch "${ARGS[@]}" > "$OUT/second.log" 2>&1; second_rc=$?; t2=$(date +%s)
grep -v 'it/s\]' "$OUT/first.log" | grep -E "launch:|stop:|checkpoint-|exit codes|error|Error" | tail -15
grep -v 'it/s\]' "$OUT/second.log" | grep -E "launch:|resumed|stage train: done|exit codes|error|Error" | tail -15
python3 - "$STORE/$RUN" "$first_rc" "$second_rc" "$((t_sig - t0))" "$((t1 - t_sig))" "$((t2 - t1))" > "$OUT/launch_gpu.json" <<'PY'
import json, sys, pathlib
run = pathlib.Path(sys.argv[1])
train = json.loads((run / "stages/train.json").read_text()) if (run / "stages/train.json").exists() else None
print(json.dumps({"first_rc": int(sys.argv[2]), "second_rc": int(sys.argv[3]), "first_until_sigterm_s": int(sys.argv[4]),
                  "sigterm_to_exit_s": int(sys.argv[5]), "second_s": int(sys.argv[6]), "train": train}, indent=1))
PY
cat "$OUT/launch_gpu.json"
