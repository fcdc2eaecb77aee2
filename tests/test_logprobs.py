"""The CPU trainer's completion log-probs (grpo_job.training.logprobs) equal TRL's own fused-head ones
(its Triton kernels, run here in Triton's interpreter), padding, temperature and gradients included."""

import pytest

from grpo_job import machine
from grpo_job.training import logprobs


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    machine.use_triton_interpreter_without_gpu()  # TRL's own head (the reference) runs Triton kernels
    import torch
    from datasets import Dataset
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import GRPOConfig

    from tests.test_prompt_length import tiny_tokenizer

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    args = GRPOConfig(output_dir=str(tmp_path_factory.mktemp("trainer")), per_device_train_batch_size=2,
                      num_generations=2, max_completion_length=4, temperature=0.7, report_to="none", use_cpu=True,
                      bf16=False)  # as the job on a CPU (engines.TrlEngine): float32
    return logprobs.trainer_class("cpu")(
        model=LlamaForCausalLM(cfg), processing_class=tiny_tokenizer(), args=args,
        reward_funcs=[lambda completions, **kw: [0.0] * len(completions)],
        train_dataset=Dataset.from_list([{"prompt": "w1 w2"}] * 4))


def test_trainer_class_by_device():
    import trl

    assert logprobs.trainer_class("cuda") is trl.GRPOTrainer
    assert logprobs.trainer_class("xpu") is trl.GRPOTrainer
    assert logprobs.trainer_class("cpu") is logprobs.TorchLogProbsGRPOTrainer
    assert logprobs.trainer_class("mps") is logprobs.TorchLogProbsGRPOTrainer
    assert issubclass(logprobs.TorchLogProbsGRPOTrainer, trl.GRPOTrainer)


@pytest.mark.parametrize("compute_entropy", [True, False])
def test_matches_trls_fused_head(trainer, compute_entropy):
    import torch
    from trl import GRPOTrainer

    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 64, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[0, :2] = 0   # left padding of the prompt
    mask[1, -2:] = 0  # a completion that ended early: its last two positions are padding
    ours = trainer._get_per_token_logps_and_entropies(trainer.model, ids, mask, 4, batch_size=2,
                                                      compute_entropy=compute_entropy)
    trls = GRPOTrainer._get_per_token_logps_and_entropies(trainer, trainer.model, ids, mask, 4, batch_size=2,
                                                          compute_entropy=compute_entropy)
    assert ours[0].shape == trls[0].shape == (3, 4)
    torch.testing.assert_close(ours[0], trls[0], rtol=1e-4, atol=1e-5)
    assert (ours[0][1, -2:] == 0).all() and (ours[0][0] != 0).all()
    if compute_entropy:
        torch.testing.assert_close(ours[1], trls[1], rtol=1e-4, atol=1e-5)
        assert (ours[1] > 0).sum() == 10  # 12 positions, 2 of them padding
    else:
        assert ours[1] is None and trls[1] is None
    assert ours[2] is None and trls[2] is None


def test_gradients_match_trls_fused_head(trainer):
    import torch
    from trl import GRPOTrainer

    ids = torch.randint(3, 64, (2, 7), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    grads = []
    for method in (trainer._get_per_token_logps_and_entropies,
                   lambda *a, **k: GRPOTrainer._get_per_token_logps_and_entropies(trainer, *a, **k)):
        trainer.model.zero_grad()
        logps = method(trainer.model, ids, mask, 3)[0]
        logps.sum().backward()
        grads.append([p.grad.clone() for p in trainer.model.parameters() if p.requires_grad])
    assert len(grads[0]) == len(grads[1]) > 0
    for ours, trls in zip(*grads, strict=True):
        torch.testing.assert_close(ours, trls, rtol=1e-4, atol=1e-6)
