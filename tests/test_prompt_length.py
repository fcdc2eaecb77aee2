"""train.drop_long_prompts counts tokens as the trainer does (the job's PromptRenderer, equal to
transformers 5's apply_chat_template(tokenize=True, return_dict=False))."""

from grpo_job import chat
from grpo_job.training import train


def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<unk>", "<eos>", "system", "user", "assistant", ":"] + [f"w{i}" for i in range(50)]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", eos_token="<eos>")
    tok.chat_template = (
        "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}assistant :{% endif %}"
    )
    return tok


def test_drop_long_prompts_measures_tokens():
    tok = tiny_tokenizer()
    short = {"prompt": [{"role": "user", "content": "w1 w2"}], "answer": "1"}  # user : w1 w2 assistant : = 6
    long = {"prompt": [{"role": "user", "content": " ".join(f"w{i}" for i in range(20))}], "answer": "2"}  # 24
    render = chat.PromptRenderer(chat.ChatTemplate("tiny", tok.chat_template, {}, tok.backend_tokenizer), "chat")
    assert [render.count(r["prompt"]) for r in (short, long)] == [
        len(tok.apply_chat_template(r["prompt"], add_generation_prompt=True, return_dict=False)) for r in (short, long)]
    assert train.drop_long_prompts([short, long], render, 10) == [short]
    assert train.drop_long_prompts([short, long], render, 24) == [short, long]
