"""Per-token log-probs for GRPO without a GPU: from the logits with torch, not through TRL's Triton head.

TRL 1.15's GRPOTrainer scores the completion tokens (their log-probs, and entropies when asked) through
a fused LM head that projects tiles of hidden states and reduces each tile with a Triton kernel
(`trl/kernels/chunked_logprob.py`, reached through `model(..., fused_lm_head=True)`), whatever the
device. TRL's other log-prob helpers fall back to torch off CUDA/XPU (`trl.trainer.utils.
_supports_trl_loss_kernel`); that head does not. On a CPU, Triton can only run it in its interpreter
(TRITON_INTERPRET=1), in Python, so one training step of the smoke run spent most of its minutes
there. docs/benchmarks.md ("CPU log-probs in torch") has the measurement.

`trainer_class(device)` gives, for a CPU (or any device TRL's kernels do not cover), a GRPOTrainer whose
`_get_per_token_logps_and_entropies` asks the model for the logits of the completion positions
(`logits_to_keep`, as TRL did before the fused head) and reduces them with TRL's own
`selective_log_softmax_and_entropy`: the same quantity (tests/test_logprobs.py compares the two), the
same shapes and float32, zeros where the attention mask is 0, as the fused head gives. On CUDA and XPU, and for
inputs it does not cover (images, MoE auxiliary loss), TRL's own method runs.
"""

from __future__ import annotations

from typing import Any

import torch
from trl import GRPOTrainer
from trl.extras.profiling import profiling_decorator
from trl.trainer.utils import selective_log_softmax, selective_log_softmax_and_entropy

# the devices TRL's Triton kernels are built for (trl.trainer.utils._supports_trl_loss_kernel)
KERNEL_DEVICES = ("cuda", "xpu")


class TorchLogProbsGRPOTrainer(GRPOTrainer):
    """TRL's GRPOTrainer with the completion log-probs computed from the logits in torch (see the module)."""

    @profiling_decorator  # timed under TRL's name, as the method it replaces
    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None,
                                           compute_entropy=False, compute_aux_loss=False, **multimodal: Any):
        """(log-probs `(B, logits_to_keep)` float, entropies of the same shape or None, None): TRL's
        return value. `input_ids`/`attention_mask`: `(B, prompt + completion)`; the last `logits_to_keep`
        positions are the completion's. `batch_size`: rows per forward pass (memory)."""
        if (compute_aux_loss or input_ids.device.type in KERNEL_DEVICES
                or any(v is not None for v in multimodal.values())):
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size,
                compute_entropy=compute_entropy, compute_aux_loss=compute_aux_loss, **multimodal)
        batch_size = batch_size or input_ids.size(0)
        all_logps, all_entropies = [], []
        for start in range(0, input_ids.size(0), batch_size):
            ids = input_ids[start:start + batch_size]
            mask = attention_mask[start:start + batch_size]
            with self.accelerator.autocast():
                # position t's logits predict token t+1: keep one more and drop the last
                logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=logits_to_keep + 1).logits[:, :-1]
            logits = logits.float()  # reduced in float32, as TRL's head does (its outputs are float32)
            index, row_mask = ids[:, -logits_to_keep:], mask[:, -logits_to_keep:]
            if compute_entropy:
                # GRPO reads entropies for its token mask and metrics only: no gradient through them
                logps, entropy = selective_log_softmax_and_entropy(logits, index, entropy_requires_grad=False,
                                                                   temperature=self.temperature, row_mask=row_mask)
                all_entropies.append(entropy)
            else:
                logps = selective_log_softmax(logits, index, temperature=self.temperature, row_mask=row_mask)
            all_logps.append(logps)
        return torch.cat(all_logps), torch.cat(all_entropies) if compute_entropy else None, None


def trainer_class(device_type: str) -> type[GRPOTrainer]:
    """The trainer for a training device (`"cpu"`, `"cuda"`, ...): TRL's own on a device its kernels
    cover (looked up now: the unsloth engine replaces `trl.GRPOTrainer` when it is imported),
    `TorchLogProbsGRPOTrainer` elsewhere."""
    import trl

    return trl.GRPOTrainer if device_type in KERNEL_DEVICES else TorchLogProbsGRPOTrainer
