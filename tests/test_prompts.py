"""Issue 23 items 1, 2, 3 and 9: one prompt renderer for every stage (with the trainer's
chat_template_kwargs), the generation prompt held against the rewards, the lengths held against the
model's context, and plain-text prompts for base models (no chat template), with resume of runs saved
before `data.prompt_format` existed."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from grpo_job import chat, models, preflight, resume
from grpo_job.errors import EXIT_INVALID, SettingsError
from grpo_job.settings import load_settings
from grpo_job.stages import stages as all_stages
from grpo_job.training import train
from tests.job_env import job_env

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "examples" / "smoke.yaml"
MESSAGES = [{"role": "system", "content": "Answer in <answer> tags."}, {"role": "user", "content": "What is 12 + 7?"}]


@pytest.fixture(scope="module")
def templates(chat_models, tmp_path_factory):
    from tests import chat_models as cm

    return {**chat_models, **cm.with_templates(chat_models["smollm2"], tmp_path_factory.mktemp("templates"))}


def settings(tmp_path, *overrides):
    return load_settings(SMOKE, [f"--store.uri={tmp_path / 'runs'}", f"--work_dir={tmp_path / 'work'}", *overrides])


def check(tmp_path, *overrides):
    cmd = [sys.executable, str(ROOT / "entrypoint.py"), "check", "--config", str(SMOKE), "--log_format=text",
           f"--store.uri={tmp_path / 'runs'}", f"--work_dir={tmp_path / 'work'}", *overrides]
    env = job_env(tmp_path)
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


# ---------------------------------------------------------------- item 2: one renderer, the trainer's arguments
@pytest.mark.parametrize("name", ["smollm2", "r1_distill", "qwen3_style", "thinking_toggle"])
@pytest.mark.parametrize("kwargs", [{}, {"enable_thinking": False}, {"enable_thinking": True}])
def test_every_stage_renders_what_trl_renders(templates, tmp_path, name, kwargs):
    """TRL's own rendering (trl.data_utils.apply_chat_template with GRPOConfig.chat_template_kwargs, and
    the token ids of its `_tokenize_prompts` call) against the job's renderer, and the counts the
    stages report: check/prepare_data's prompt_tokens_max, the train stage's long-prompt filter."""
    from transformers import AutoTokenizer
    from trl.data_utils import apply_chat_template

    tok = AutoTokenizer.from_pretrained(templates[name])
    extra = json.dumps({"chat_template_kwargs": kwargs}) if kwargs else "{}"
    s = settings(tmp_path, f"--model.name_or_path={templates[name]}", "--model.gguf_file=null",
                 f"--train.extra={extra}", '--rewards={"correctness": 1.0}')
    render = chat.renderer(s, chat.from_folder(templates[name]))
    assert render.template_kwargs == kwargs and render.format == "chat"
    want_text = apply_chat_template({"prompt": MESSAGES}, tok, **kwargs)["prompt"]
    want_ids = tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True, return_dict=False, **kwargs)
    assert render.text(MESSAGES) == want_text and render.token_ids(MESSAGES) == want_ids

    rows, _, summary = preflight.load_and_check_data(s, tmp_path / "cache", lambda: chat.from_folder(templates[name]))
    trl_counts = [len(tok.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=True,
                                              return_dict=False, **kwargs)) for r in rows]
    assert summary["prompt_tokens_max"] == max(trl_counts) and summary["prompt_format"] == "chat"
    assert train.drop_long_prompts(rows, render, min(trl_counts)) == [r for r, n in zip(rows, trl_counts, strict=True)
                                                                      if n == min(trl_counts)]
    assert render.for_trainer(rows) is rows  # chat rows go to TRL as messages: it renders them with the same kwargs


def test_enable_thinking_false_changes_what_every_stage_counts(templates, tmp_path):
    """The issue's case: with enable_thinking=false the counts are the trainer's, not the template's default."""
    counts = {}
    for kwargs in ({}, {"enable_thinking": False}):
        s = settings(tmp_path, f"--model.name_or_path={templates['qwen3_style']}", "--model.gguf_file=null",
                     f"--train.extra={json.dumps({'chat_template_kwargs': kwargs})}", '--rewards={"correctness": 1}')
        summary = preflight.load_and_check_data(s, tmp_path / "cache", lambda: chat.from_folder(templates["qwen3_style"]))[2]
        counts[bool(kwargs)] = summary["prompt_tokens_max"]
    assert counts[True] > counts[False]  # the empty <think></think> block TRL renders is counted


def test_the_vllm_child_gets_the_renderers_token_ids_not_its_own_template_call():
    """The evaluation child renders nothing: it generates from the token ids in its job file."""
    import inspect

    from grpo_job import evaluate

    child = inspect.getsource(evaluate._vllm_child)
    assert "apply_chat_template" not in child and 'llm.generate(job["prompts"]' in child
    sources = [ROOT / "grpo_job" / p for p in ("evaluate.py", "pipeline.py", "preflight.py", "training/health.py",
                                                "training/train.py", "cli.py", "rewards/calls.py")]
    sources += sorted((ROOT / "grpo_job" / "data").glob("*.py"))
    assert not [p for p in sources if ".apply_chat_template(" in p.read_text()]


# ---------------------------------------------------------------- item 1: the generation prompt against the rewards
@pytest.mark.parametrize("name, kwargs, rewards, fails_with", [
    ("smollm2", {}, {"format": 1, "think_format_reward": 1}, None),
    ("r1_distill", {}, {"think_format_reward": 1}, ["<think>", "'think_format_reward'", "does not expect"]),
    ("r1_distill", {}, {"format": 0.5, "correctness": 2}, ["<think>", "'format'", "<reasoning>"]),
    ("r1_distill", {}, {"correctness": 2, "partial_format": 0.5}, None),  # none expects a tag at the start
    ("r1_distill", {"enable_thinking": False}, {"think_format_reward": 1}, ["<think>", "does not read enable_thinking"]),
    ("thinking_toggle", {}, {"think_format_reward": 1}, ["<think>", "{\"enable_thinking\": false}"]),
    ("thinking_toggle", {"enable_thinking": False}, {"think_format_reward": 1}, None),
    ("qwen3_style", {}, {"think_format_reward": 1}, None),
    ("qwen3_style", {"enable_thinking": False}, {"think_format_reward": 1, "format": 1}, None),  # ends </think>
    ("reasoning_open", {}, {"format": 1}, ["<reasoning>", "'format'"]),
])
def test_a_generation_prompt_that_opens_a_tag_a_reward_expects_stops(templates, tmp_path, name, kwargs, rewards,
                                                                      fails_with):
    s = settings(tmp_path, f"--model.name_or_path={templates[name]}", "--model.gguf_file=null",
                 f"--train.extra={json.dumps({'chat_template_kwargs': kwargs})}", f"--rewards={json.dumps(rewards)}")
    run = lambda: preflight.load_and_check_data(s, tmp_path / "cache", lambda: chat.from_folder(templates[name]))  # noqa: E731
    if fails_with is None:
        run()
        return
    with pytest.raises(SettingsError) as e:
        run()
    assert all(w in str(e.value) for w in fails_with), str(e.value)


def test_check_exits_2_on_a_think_template_and_plain_prompts_are_not_held_against_it(templates, tmp_path):
    r = check(tmp_path, f"--model.name_or_path={templates['r1_distill']}", "--model.gguf_file=null",
              '--rewards={"think_format_reward": 1.0}')
    assert r.returncode == EXIT_INVALID and "opening <think> tag" in r.stderr and "Traceback" not in r.stderr, r.stderr
    s = settings(tmp_path, f"--model.name_or_path={templates['r1_distill']}", "--model.gguf_file=null",
                 "--data.prompt_format=plain", '--rewards={"format": 1.0}')
    assert preflight.load_and_check_data(s, tmp_path / "c", lambda: chat.from_folder(templates["r1_distill"]))[2][
        "prompt_format"] == "plain"


# ---------------------------------------------------------------- item 3: lengths against the model's context
def _model_folder(root: Path, positions: int | None, text_config: bool = False) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    cfg = {"model_type": "llama"}
    if positions is not None:
        cfg.update({"text_config": {"max_position_embeddings": positions}} if text_config
                   else {"max_position_embeddings": positions})
    (root / "config.json").write_text(json.dumps(cfg))
    return root


@pytest.mark.parametrize("positions, text_config, overrides, fails_with", [
    (2048, False, [], None),  # smoke: 192 + 48, max_seq_length 320
    (256, False, [], ["model.max_seq_length=320", "256 tokens"]),  # 240 fits, the smoke's 320 does not
    (200, False, [], ["192 + 48 = 240", "200 tokens", "GRPO_TRAIN__MAX_COMPLETION_LENGTH"]),
    (200, True, [], ["= 240", "200 tokens"]),  # a multimodal config's text_config
    (256, False, ["--model.max_seq_length=240"], None),
    (256, False, ["--model.max_seq_length=1024"], ["model.max_seq_length=1024", "256 tokens", "GRPO_MODEL__MAX_SEQ_LENGTH"]),
    (None, False, ["--model.max_seq_length=131072"], None),  # the model does not say: nothing to hold it against
])
def test_lengths_are_held_against_the_models_context(tmp_path, positions, text_config, overrides, fails_with):
    folder = _model_folder(tmp_path / "m", positions, text_config)
    s = settings(tmp_path, f"--model.name_or_path={folder}", "--model.gguf_file=null", *overrides)
    if fails_with is None:
        chat.check_context(s, tmp_path / "cache")
        return
    with pytest.raises(SettingsError) as e:
        chat.check_context(s, tmp_path / "cache")
    assert all(w in str(e.value) for w in fails_with), str(e.value)


def test_a_gguf_models_context_comes_from_its_metadata_and_check_exits_2(tmp_path):
    from gguf import GGUFReader

    s = settings(tmp_path)
    src = Path(models.source_dir(s.model)) / s.model.gguf_file
    fields = GGUFReader(src).fields
    arch = fields["general.architecture"].contents()
    assert models.context_length(s.model, tmp_path / "cache") == (fields[f"{arch}.context_length"].contents(),
                                                                   f"the metadata of {src.name}")
    n = models.gguf_context_length(src)
    r = check(tmp_path, f"--model.max_seq_length={n + 256}", f"--train.max_completion_length={n}")
    assert r.returncode == EXIT_INVALID and f"context length of {n} tokens" in r.stderr, r.stderr


# ---------------------------------------------------------------- item 9: plain prompts for base models
def test_a_tokenizer_without_template_gives_plain_prompts_as_trl_tokenizes_them(templates, tmp_path):
    from transformers import AutoTokenizer

    bare = chat.from_folder(templates["no_template"])
    assert chat.resolve_format("auto", bare) == "plain" and chat.resolve_format("plain", chat.from_folder(
        templates["smollm2"])) == "plain" and chat.resolve_format("auto", chat.from_folder(templates["smollm2"])) == "chat"
    with pytest.raises(SettingsError, match="GRPO_DATA__PROMPT_FORMAT=plain"):
        chat.resolve_format("chat", bare)
    s = settings(tmp_path, f"--model.name_or_path={templates['no_template']}", "--model.gguf_file=null",
                 "--data.prompt_template=Question: {prompt}\nAnswer:", "--data.system_prompt=",
                 '--rewards={"correctness": 1.0}')
    rows, _, summary = preflight.load_and_check_data(s, tmp_path / "cache", lambda: bare)
    assert summary["prompt_format"] == "plain" and "plain-text prompts" in summary["chat_template"]
    render = chat.renderer(s, bare)
    trl_rows = render.for_trainer(rows)
    assert all(isinstance(r["prompt"], str) and r["prompt"].startswith("Question: ") and r["prompt"].endswith("Answer:")
               for r in trl_rows)
    tok = AutoTokenizer.from_pretrained(templates["no_template"])
    assert not tok.chat_template
    # TRL's non-conversational path: processing_class(text=prompts)["input_ids"]
    assert [render.token_ids(r["prompt"]) for r in rows] == tok(text=[r["prompt"] for r in trl_rows])["input_ids"]
    assert summary["prompt_tokens_max"] == max(len(i) for i in tok(text=[r["prompt"] for r in trl_rows])["input_ids"])


def test_plain_text_joins_system_few_shot_and_prompt():
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "1+1?"},
            {"role": "assistant", "content": "2"}, {"role": "user", "content": "2+2?"}]
    assert chat.plain_text(msgs) == "S\n\n1+1?\n\n2\n\n2+2?"


def test_check_takes_the_plain_path_for_a_model_without_template(templates, tmp_path):
    r = check(tmp_path, f"--model.name_or_path={templates['no_template']}", "--model.gguf_file=null")
    assert r.returncode == 0, r.stderr
    assert "chat template: not used: plain-text prompts (data.prompt_format=auto); prompt format: plain" in r.stdout


# ---------------------------------------------------------------- resume: runs saved before data.prompt_format
def test_settings_saved_without_prompt_format_resume_as_its_default(tmp_path):
    new = settings(tmp_path).model_dump(mode="json")
    old = json.loads(json.dumps(new))
    del old["data"]["prompt_format"]
    args = {"stage_names": [st.name for st in all_stages()], "done": {"train": {"steps": 2}},
            "checkpoint_steps": [2], "run_id": "r"}
    assert resume.plan(old, new, **args).changes == {}
    plain = json.loads(json.dumps(new))
    plain["data"]["prompt_format"] = "plain"
    refused = resume.plan(old, plain, **args)
    assert refused.changes == {"data.prompt_format": ("auto", "plain")} and "data.prompt_format" in refused.refused[0]


# ---------------------------------------------------------------- item 9: a real CPU run on a base model (slow)
def log_prompts(prompts, completions, **kwargs):
    """A reward (called by TRL and the preflight) that records the prompts it is given; scores by length."""
    with open(os.environ["TEST_PROMPT_LOG"], "a") as f:
        f.write(json.dumps(prompts) + "\n")
    return [len(c if isinstance(c, str) else c[-1]["content"]) / 100 for c in completions]


@pytest.mark.slow
def test_a_base_model_trains_preflights_and_evaluates_on_plain_prompts(tmp_path, tmp_path_factory):
    """The embedded SmolLM2-135M weights with its tokenizer's chat template removed (a base model's
    tokenizer): one GRPO step, the preflight and both evaluations, all on plain-text prompts."""
    from tests import chat_models as cm

    work = tmp_path_factory.getbasetemp() / "grpo-work"  # the dequantized model, shared with other modules
    s = load_settings(SMOKE, [f"--work_dir={work}"])
    base = cm.base_model(Path(models.resolve(s.model, work / "cache")), tmp_path)
    log = tmp_path / "prompts.jsonl"
    cmd = [sys.executable, str(ROOT / "entrypoint.py"), "run", "--config", str(SMOKE), "--log_format=json",
           f"--store.uri={tmp_path / 'runs'}", f"--work_dir={tmp_path / 'work'}", "--run_id=base",
           f"--model.name_or_path={base}", "--model.gguf_file=null", "--data.system_prompt=",
           "--data.prompt_template=Q: {prompt}\nA:", "--data.max_samples=8", "--data.eval_samples=2",
           "--train.max_steps=1", "--train.save_steps=1", "--train.num_generations=2",
           "--train.per_device_train_batch_size=2", "--train.max_completion_length=16",
           "--health.preflight_samples=2", "--evaluation.max_samples=2", "--evaluation.max_new_tokens=8",
           "--report.enabled=false", "--export.merge=false",
           '--rewards={"tests.test_prompts:log_prompts": 1.0, "correctness": 1.0}']
    env = job_env(tmp_path, TEST_PROMPT_LOG=str(log))
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    store = tmp_path / "runs" / "base"
    prepared = json.loads((store / "stages" / "prepare_data.json").read_text())
    assert "plain" in json.dumps(prepared)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    # the data check's dry call, the preflight, then training: every prompt a plain text, no chat markup
    assert len(calls) >= 3 and all(isinstance(p, str) and p.startswith("Q: ") and p.endswith("\nA:") and
                                   "<|im_start|>" not in p for c in calls for p in c)
    for which in ("base", "trained"):
        ev = json.loads((store / "eval" / f"{which}.json").read_text())
        assert ev["n"] == 2 and all(smp["completion"] is not None for smp in ev["samples"])
    assert (store / "stages" / "train.json").is_file() and (store / "stages" / "reward_preflight.json").is_file()
