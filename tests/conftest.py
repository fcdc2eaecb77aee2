"""Fixtures shared by several test modules."""

import pytest

from grpo_job.training import engines

# as the job's process does first thing: Triton reads this at its first import, which any test importing
# torch (or TRL's GRPOConfig) can cause; TRL's CPU kernels in a later training test depend on it
engines.use_triton_interpreter_without_gpu()


@pytest.fixture(scope="session")
def chat_models(tmp_path_factory):
    """Tokenizer-only model folders (see tests/chat_models.py), built once per session."""
    from tests import chat_models

    return chat_models.build(tmp_path_factory.mktemp("chat-models"))
