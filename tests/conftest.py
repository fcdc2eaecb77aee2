"""Fixtures shared by several test modules."""

import pytest


@pytest.fixture(scope="session")
def chat_models(tmp_path_factory):
    """Tokenizer-only model folders (see tests/chat_models.py), built once per session."""
    from tests import chat_models

    return chat_models.build(tmp_path_factory.mktemp("chat-models"))
