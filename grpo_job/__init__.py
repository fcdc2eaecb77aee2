"""grpo-job: GRPO fine-tuning of a LoRA as a restartable batch job."""
