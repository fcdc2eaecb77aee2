"""The train stage: the engines (TRL / Unsloth) that build the GRPO trainer, the stage itself, and
the health preflight and guards that stop a run which cannot learn."""
