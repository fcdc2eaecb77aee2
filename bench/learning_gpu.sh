#!/usr/bin/env bash
# The learning run of docs/benchmarks.md, one call's share at a time: examples/gsm8k-qwen-h200.yaml
# through the job (evaluate_base, train, evaluate_trained, report), stopped by its own deadline
# (stop.max_runtime_seconds = $1) with exit 75 and resumed by the next call (same store in /tmp).
# Copies metrics.jsonl, the eval JSONs and the report's plots to $OUT/learn/.
# Usage (device, kit staged, from the source root): bash bench/learning_gpu.sh SECONDS [settings...]
set -uo pipefail
SECS=${1:?seconds}; shift
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT/learn"
STORE=/tmp/grpo-learn
GSM8K=${GSM8K:-.gpu/data/gsm8k}
t0=$(date +%s)
python3 entrypoint.py run --config examples/gsm8k-qwen-h200.yaml "--store.uri=$STORE" --work_dir=/tmp/grpo-job \
  "--stop.max_runtime_seconds=$SECS" "--data.path=$GSM8K/train.jsonl" \
  "--evaluation.data_path=$GSM8K/test.jsonl" --log_format=text "$@" >> "$OUT/learn/job.log" 2>&1
rc=$?
echo "job exit $rc after $(( $(date +%s) - t0 )) s"
RUN=$STORE/gsm8k-qwen05-h200
for f in metrics.jsonl eval/base.json eval/trained.json report/rewards.png report/completion_length.png \
         report/report.md stages/train.json stages/evaluate_base.json stages/evaluate_trained.json; do
  [ -f "$RUN/$f" ] && cp "$RUN/$f" "$OUT/learn/$(echo "$f" | tr / _)"
done
grep -E "engine:|evaluate |resumed|stop:|stage .*: done|Error|error" "$OUT/learn/job.log" | grep -v "it/s\]" | tail -25
tail -n 2 "$RUN/metrics.jsonl" 2>/dev/null
exit 0
