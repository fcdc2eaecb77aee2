"""Settings: sources and their precedence, validation messages, shipped examples, secrets."""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from grpo_job.errors import EXIT_INVALID, SettingsError
from grpo_job.settings import JobSettings, environment, load_settings
from grpo_job.settings.provenance import where_set

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for k in list(os.environ):
        if k.startswith("GRPO_") or k == "HF_TOKEN":
            monkeypatch.delenv(k)


def test_defaults_are_the_measured_recipe():
    """The seed's task and rewards, with the LoRA recipe measured on the H200 (docs/benchmarks.md)."""
    s = JobSettings()
    assert s.model.name_or_path == "Qwen/Qwen2.5-3B-Instruct" and not s.model.load_in_4bit
    assert s.model.gpu_memory_utilization == 0.6
    assert s.data.path == "openai/gsm8k" and s.data.task == "gsm8k"
    assert s.rewards == {"format": 0.5, "correctness": 2.0}
    assert s.lora.r == s.lora.lora_alpha == 32
    assert set(s.lora.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    t = s.train
    assert (t.learning_rate, t.lr_scheduler_type, t.warmup_steps, t.optim) == (1e-4, "cosine", 0.05, "adamw_8bit")
    assert (t.num_generations, t.per_device_train_batch_size, t.gradient_accumulation_steps) == (8, 64, 1)
    assert (t.max_completion_length, t.max_steps, t.save_steps, t.steps_per_generation) == (384, 100, 25, "auto")
    assert s.warnings() == []


def test_seed_recipe_example_keeps_the_seed_values():
    s = load_settings(config=str(ROOT / "examples/seed-recipe.yaml"))
    t = s.train
    assert (t.learning_rate, t.warmup_steps, t.per_device_train_batch_size, t.max_completion_length) == \
        (5e-6, 0.1, 8, 512)
    assert (t.max_steps, t.save_steps, t.steps_per_generation) == (250, 100, 1)
    assert any("full-fine-tuning rate" in w for w in s.warnings())


def test_precedence_cli_over_env_over_yaml(tmp_path, monkeypatch):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  max_steps: 10\n  save_steps: 5\n  learning_rate: 2.0e-6\nmodel:\n  engine: trl\n")
    s = load_settings(cfg)
    assert (s.train.max_steps, s.train.save_steps, s.model.engine) == (10, 5, "trl")
    monkeypatch.setenv("GRPO_TRAIN__MAX_STEPS", "20")
    monkeypatch.setenv("GRPO_CONFIG", str(cfg))
    s = load_settings()
    assert (s.train.max_steps, s.train.save_steps, s.train.learning_rate) == (20, 5, 2e-6)  # env beats YAML, rest kept
    s = load_settings(cfg, ["--train.max_steps=30", "--model.engine", "unsloth"])
    assert (s.train.max_steps, s.train.save_steps, s.model.engine) == (30, 5, "unsloth")  # CLI beats env


def test_env_nesting_lists_and_dicts(monkeypatch):
    monkeypatch.setenv("GRPO_LORA__TARGET_MODULES", '["q_proj","v_proj"]')
    monkeypatch.setenv("GRPO_REWARDS", '{"partial_format": 1.0, "correctness": 2.0}')
    monkeypatch.setenv("GRPO_STORE__URI", "s3://my-bucket/runs")
    monkeypatch.setenv("GRPO_RUN_ID", "exp-1")
    s = load_settings()
    assert s.lora.target_modules == ["q_proj", "v_proj"]
    assert s.rewards == {"partial_format": 1.0, "correctness": 2.0}
    assert s.store.uri == "s3://my-bucket/runs" and s.resolved_run_id() == "exp-1"


def test_every_bad_field_reported_at_once(monkeypatch):
    monkeypatch.setenv("GRPO_TRAIN__MAX_STEPS", "-1")
    monkeypatch.setenv("GRPO_MODEL__ENGINE", "nope")
    monkeypatch.setenv("GRPO_TRAIN__NUM_GENERATIONS", "1")
    monkeypatch.setenv("GRPO_STORE__URI", "s3://")
    monkeypatch.setenv("GRPO_REWARDS", '{"corectness": 1.0}')
    monkeypatch.setenv("GRPO_TRIAN__SEED", "1")
    with pytest.raises(SettingsError) as e:
        load_settings()
    msg = str(e.value)
    for var in ("GRPO_TRAIN__MAX_STEPS", "GRPO_MODEL__ENGINE", "GRPO_TRAIN__NUM_GENERATIONS", "GRPO_STORE__URI", "GRPO_REWARDS",
                "GRPO_TRIAN__SEED"):
        assert var in msg, var
    assert "6 problems" in msg and "no bucket" in msg and "did you mean 'correctness'" in msg


def test_cross_field_rules_mirror_trl():
    with pytest.raises(SettingsError, match="must be divisible by num_generations"):
        load_settings(overrides=["--train.per_device_train_batch_size=6", "--train.num_generations=4"])
    load_settings(overrides=["--train.per_device_train_batch_size=4", "--train.gradient_accumulation_steps=2",
                             "--train.num_generations=8"])
    with pytest.raises(SettingsError, match="exceeds model.max_seq_length"):
        load_settings(overrides=["--model.max_seq_length=512", "--train.max_completion_length=512"])


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("--hub.repo_id=not a repo", "not a Hub repo id"),
        ("--store.uri=s3://Bad_Bucket/x", "not a valid S3 bucket name"),
        ("--store.uri=gs://bucket", "unsupported store scheme"),
        # a slash missing made a local folder `./s3:/bucket/x`: checkpoints quietly off S3 (new-user trial)
        ("--store.uri=s3:/bucket/x", "starts like a URI \\(s3:/\\).*write s3://bucket/x"),
        ("--store.uri=file:/data/runs", "write file:///data/runs"),
        ("--data.path=S3:/bucket/train.jsonl", "data.path.*write s3://bucket/train.jsonl"),
        ("--store.uri=s3:my-bucket/runs", "starts like a URI \\(s3:\\).*write s3://my-bucket/runs"),
        ("--data.path=builtin:nope", "unknown built-in dataset"),
        ("--train.learning_rate=0", "greater than 0"),
        ("--train.max_step=5", "--train.max_step names no setting; did you mean '--train.max_steps'"),  # typo
        ("--confg=c.yaml", "--confg names no setting; did you mean '--config'"),
        ("--train.extra={\"learning_rate\": 1e-5}", "set train.learning_rate"),
        ("--train.extra={\"use_vllm\": false}", "the job sets itself from model.engine"),
        ("--data.eval_fraction=150%", "data.eval_fraction.*less than 1 \\(got 1.5\\)"),
        # one comparison for training and the reported accuracy (new-user trial: they differed silently)
        ('--rewards={"correctness": {"weight": 2, "answer_type": "exact"}}',
         "rewards.correctness.answer_type='exact' differs from data.answer_type='auto'.*GRPO_DATA__ANSWER_TYPE=exact"),
        ("--data.eval_fraction=ten%", "valid number"),
        # a number that is not one: YAML's .inf, a float's 1e400, nan (trial: epsilon_high 1e400 ran as inf)
        ("--train.warmup_steps=inf", "train.warmup_steps.*finite number"),
        # a code or structured-output task is task plain with its reward (trial: GRPO_DATA__TASK=code)
        ("--data.task=code", "a code task is task plain scored by the 'code' reward \\(rewards.code"),
        ("--data.task=JSON", "a structured-output task is task plain scored by the 'json_schema' reward"),
        # a boolean is no weight: YAML's `format: yes` became 1 where the environment's `on` was refused (trial)
        ('--rewards={"format": true}', "rewards.format.*its weight \\(a number\\).*\\(got True\\)"),
        ('--rewards={"format": {"weight": false}}', "rewards.format.*a weight is a number, not a boolean"),
        # numpy's seed range: -1 passed `check`, then crashed the train stage with exit 1 (trial)
        ("--train.seed=-1", "train.seed.*greater than or equal to 0"),
        ("--data.seed=99999999999999999999", "data.seed.*less than or equal to 4294967295"),
        ("--train.max_grad_norm=nan", "train.max_grad_norm.*finite number"),
        # a dict setting given what is no mapping (trial: Python's "not enough values to unpack")
        ("--train.extra=null", "--train.extra takes a mapping \\(got 'null'\\).*--train.extra='\\{\\}' for none"),
        ("--rewards=[1]", "--rewards takes a mapping \\(got '\\[1\\]'\\): JSON.*other=1$"),  # no '{}': a run needs one
    ],
)
def test_bad_values_say_what_is_wrong(override, fragment):
    with pytest.raises(SettingsError, match=fragment):
        load_settings(overrides=[override])


@pytest.mark.parametrize("typo", [["--train.max_stepz=5"], ["--train.max_stepz", "5"]])
def test_a_misspelt_flag_is_listed_with_the_other_problems(typo):
    """pydantic-settings' CLI stops at an unknown flag before any value is read (new-user trial: one problem
    per `check`)."""
    with pytest.raises(SettingsError) as e:
        load_settings(overrides=[*typo, "--lora.r=abc", "--train.learning_rate=-1"])
    msg = str(e.value)
    assert msg.startswith("invalid settings (3 problems)")
    assert "--train.max_stepz names no setting; did you mean '--train.max_steps'" in msg
    assert "lora.r [--lora.r on the command line]" in msg and "train.learning_rate" in msg


def test_a_misnamed_key_of_a_few_shot_example_is_answered_with_the_example_fields(tmp_path):
    """`answer:` in a few_shot example was told "did you mean 'data.few_shot'?" (new-user trial)."""
    config = tmp_path / "c.yaml"
    config.write_text("data:\n  few_shot:\n    - question: What is 2 + 3?\n      answer: '5'\n")
    with pytest.raises(SettingsError) as e:
        load_settings(config)
    msg = str(e.value)
    assert ("data.few_shot.0.answer [config file" in msg and "no such field: an item of data.few_shot has prompt and "
            "completion (TRL's name for 'answer' is 'completion')" in msg)
    assert "TRL's name for 'question' is 'prompt'" in msg and "did you mean" not in msg
    assert "Field required" not in msg and msg.startswith("invalid settings (2 problems)")  # no line repeating them
    with pytest.raises(SettingsError, match="an item of data.few_shot has prompt and completion$"):
        load_settings(overrides=['--data.few_shot=[{"prompt": "2 + 3?", "completion": "5", "note": "x"}]'])


def test_a_share_may_be_written_as_a_percentage(monkeypatch):
    """`GRPO_DATA__EVAL_FRACTION=10%` was "not a valid number" (new-user trial)."""
    monkeypatch.setenv("GRPO_DATA__EVAL_FRACTION", "10%")
    s = load_settings(overrides=["--model.gpu_memory_utilization=45 %", "--lora.lora_dropout=0.05"])
    assert (s.data.eval_fraction, s.model.gpu_memory_utilization, s.lora.lora_dropout) == (0.1, 0.45, 0.05)
    assert load_settings(overrides=["--train.warmup_steps=5%"]).train.warmup_steps == 0.05  # the README's "5% warm-up"


def test_known_traps_warn_but_pass():
    s = load_settings(overrides=["--train.learning_rate=1e-3", "--train.num_generations=2",
                                 "--train.per_device_train_batch_size=2", "--model.gpu_memory_utilization=0.95"])
    text = " ".join(s.warnings())
    assert "high even for a LoRA" in text and "small group" in text and "out-of-memory" in text
    assert "full-fine-tuning rate" in " ".join(load_settings(overrides=["--train.learning_rate=5e-6"]).warnings())
    assert load_settings(overrides=["--train.learning_rate=2e-4"]).warnings() == []
    # warm-up as long as the run: the peak rate is never reached (trial: 100 warm-up steps of 4)
    assert "the learning rate never reaches train.learning_rate=0.0001" in " ".join(load_settings(
        overrides=["--train.warmup_steps=100", "--train.max_steps=4"]).warnings())
    assert "never reaches" not in " ".join(load_settings(overrides=["--train.warmup_steps=3", "--train.max_steps=4"]).warnings())


def test_secret_never_dumped(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_supersecretvalue123")
    s = load_settings()
    assert s.hf_token.get_secret_value() == "hf_supersecretvalue123"
    assert "supersecret" not in json.dumps(s.redacted()) and "supersecret" not in repr(s)


def test_a_secret_in_the_config_file_or_on_the_command_line_is_refused_unechoed(tmp_path):
    """README: secrets come from their variables only; a token in a YAML file or an argument was taken
    silently (new-user trial)."""
    config = tmp_path / "c.yaml"
    config.write_text("hf_token: hf_supersecretvalue123\n")
    with pytest.raises(SettingsError, match="hf_token in config file .*set HF_TOKEN") as in_file:
        load_settings(config=config)
    with pytest.raises(SettingsError, match="--hf_token on the command line.*set HF_TOKEN") as on_line:
        load_settings(overrides=["--hf_token=hf_supersecretvalue123"])
    assert "supersecret" not in str(in_file.value) + str(on_line.value)
    # nor quoted by the messages around it: the other argument form, a mapping, a YAML error on its line
    with pytest.raises(SettingsError, match="--hf_token on the command line") as spaced:
        load_settings(overrides=["--hf_token", "hf_supersecretvalue123", "--train.max_steps=2"])
    config.write_text("hf_token: {value: hf_supersecretvalue123}\n")
    with pytest.raises(SettingsError, match="hf_token in config file") as mapping:
        load_settings(config=config)
    config.write_text('train:\n  max_steps: 3\nhf_token: "hf_supersecretvalue123\n')
    with pytest.raises(SettingsError, match="(?s)not valid YAML.*line 3") as broken:
        load_settings(config=config)
    assert "supersecret" not in str(spaced.value) + str(mapping.value) + str(broken.value)
    assert len(str(spaced.value).splitlines()) == 2  # one problem: the value was not read as a stray argument


@pytest.mark.parametrize("override", ["--hf-token=x", "--hub.token=x"])
def test_a_misspelt_token_setting_points_at_the_variable_not_a_refused_setting(override):
    """It suggested `hf_token`, which is then refused outside its variable (new-user trial)."""
    with pytest.raises(SettingsError, match="names no setting; a token comes from the HF_TOKEN environment variable"):
        load_settings(overrides=[override])


def test_a_local_name_with_a_colon_is_a_path_not_a_uri():
    assert load_settings(overrides=["--store.uri=runs:2"]).store.uri == "runs:2"


def test_run_id_is_stable_and_tracks_settings():
    a, b = load_settings(), load_settings()
    assert a.resolved_run_id() == b.resolved_run_id()
    assert load_settings(overrides=["--train.max_steps=7"]).resolved_run_id() != a.resolved_run_id()
    assert load_settings(overrides=["--store.uri=/tmp/elsewhere"]).resolved_run_id() == a.resolved_run_id()
    # where files are kept is not the recipe: the same run id, so a run resumes wherever its cache is
    assert load_settings(overrides=["--cache_dir=/tmp/c", "--work_dir=/tmp/w"]).resolved_run_id() == a.resolved_run_id()


def test_cache_dir_defaults_to_the_work_dir_and_can_live_apart(monkeypatch):
    assert load_settings(overrides=["--work_dir=/scratch"]).resolved_cache_dir() == Path("/scratch/cache")
    monkeypatch.setenv("GRPO_CACHE_DIR", "/cache/shared")
    s = load_settings(overrides=["--work_dir=/scratch"])
    assert s.resolved_cache_dir() == Path("/cache/shared") and s.work_dir == Path("/scratch")


@pytest.mark.parametrize("example", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_examples_parse(example):
    load_settings(example)


def test_check_cli_exits_2_with_every_bad_field_and_no_traceback(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "GRPO_TRAIN__MAX_STEPS": "-1", "GRPO_MODEL__ENGINE": "nope",
           "GRPO_TRAIN__NUM_GENERATIONS": "1", "GRPO_STORE__URI": "s3://", "GRPO_REWARDS": '{"formatt": 1}'}
    r = subprocess.run([sys.executable, str(ROOT / "entrypoint.py"), "check"], env=env, capture_output=True,
                       text=True, cwd=tmp_path, timeout=60)
    assert r.returncode == EXIT_INVALID
    assert "Traceback" not in r.stderr
    for var in ("GRPO_TRAIN__MAX_STEPS", "GRPO_MODEL__ENGINE", "GRPO_TRAIN__NUM_GENERATIONS", "GRPO_STORE__URI", "GRPO_REWARDS"):
        assert var in r.stderr


@pytest.mark.parametrize(("settings", "named"), [
    ([], "math-verify cannot be imported"),                                         # answer_type auto
    (["--data.answer_type=exact", '--rewards={"accuracy_reward": 1.0}'], "rewards accuracy_reward"),
])
def test_check_exits_2_naming_math_verify_when_it_cannot_be_imported(tmp_path, settings, named):
    """A broken install stops the job before a GPU minute (exit 2, the package and how to install it), instead
    of scoring every answer outside the plain-number fast path 0 for the whole run."""
    (tmp_path / "shadow").mkdir()
    (tmp_path / "shadow/math_verify.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'math_verify'\", name='math_verify')\n")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path / "shadow"), "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, str(ROOT / "entrypoint.py"), "check", "--config",
                        str(ROOT / "examples/smoke.yaml"), f"--store.uri={tmp_path / 'runs'}", *settings],
                       env=env, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == EXIT_INVALID, r.stderr[-2000:]
    assert named in r.stderr and "pip install math-verify==0.9.0" in r.stderr and "Traceback" not in r.stderr
    # and with exact string answers and no math reward, math-verify is not needed
    ok = subprocess.run([sys.executable, str(ROOT / "entrypoint.py"), "check", "--config",
                         str(ROOT / "examples/smoke.yaml"), f"--store.uri={tmp_path / 'runs'}",
                         "--data.answer_type=exact"], env=env, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert "math-verify" not in ok.stderr, ok.stderr[-2000:]


def test_check_imports_no_ml_library(tmp_path):
    code = (
        # the first import of a heavy module prints who made it (stderr), so a failure names the culprit
        "import sys, traceback\n"
        "class Who:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name in ('torch', 'trl', 'datasets', 'unsloth', 'vllm') and name not in sys.modules:\n"
        "            print('FIRST IMPORT OF', name, ''.join(traceback.format_stack(limit=30)), file=sys.stderr)\n"
        "sys.meta_path.insert(0, Who())\n"
        "from grpo_job.cli import main; rc = main(['check', '--config', {!r}]); "
        # transformers' jinja chat-template renderer (grpo_job.chat) is allowed; its models and torch are not
        "heavy = [m for m in ('torch', 'transformers.modeling_utils', 'trl', 'datasets', 'unsloth', 'vllm') "
        "if m in sys.modules]; "
        "print('HEAVY', heavy); sys.exit(rc)"
    ).format(str(ROOT / "examples" / "smoke.yaml"))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60,
                       env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "GRPO_STORE__URI": str(tmp_path / "runs")})
    assert r.returncode == 0, r.stderr
    assert "HEAVY []" in r.stdout, r.stderr[r.stderr.find("FIRST IMPORT OF"):][:6000]


# ---------------------------------------------------------------- issue 12: settings a Kubernetes Job can express
def test_env_null_means_none(monkeypatch):
    monkeypatch.setenv("GRPO_DATA__EVAL_SPLIT", "null")
    monkeypatch.setenv("GRPO_HUB__REPO_ID", "null")
    s = load_settings()
    assert s.data.eval_split is None and s.hub.repo_id is None
    assert load_settings(overrides=["--data.eval_split=null"]).data.eval_split is None


def test_dict_settings_replace_across_sources(tmp_path, monkeypatch):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("rewards:\n  format: 0.5\n  partial_format: 0.5\n  correctness: 2.0\ntrain:\n  max_steps: 9\n"
                   "  extra:\n    top_p: 0.9\n    epsilon_high: 0.28\n")
    # CLI: the rewards named there are the rewards, not the YAML's three plus these
    s = load_settings(cfg, ['--rewards={"correctness": 1.0}'])
    assert s.rewards == {"correctness": 1.0}
    assert s.train.max_steps == 9 and s.train.extra == {"top_p": 0.9, "epsilon_high": 0.28}  # the rest of train kept
    # environment, as a Kubernetes ConfigMap passes it
    monkeypatch.setenv("GRPO_REWARDS", '{"format": 1.0}')
    monkeypatch.setenv("GRPO_TRAIN__EXTRA", '{"top_p": 0.8}')
    s = load_settings(cfg)
    assert s.rewards == {"format": 1.0} and s.train.extra == {"top_p": 0.8} and s.train.max_steps == 9
    # lists replace as well
    monkeypatch.setenv("GRPO_LORA__TARGET_MODULES", '["q_proj"]')
    assert load_settings(cfg).lora.target_modules == ["q_proj"]


@pytest.mark.parametrize("name, value, said", [
    # an env-only user is answered with variables (trial: `did you mean 'data.prompt_column'`)
    ("GRPO_DATA__PROMPT_COLUMNS", "x", "environment variable GRPO_DATA__PROMPT_COLUMNS names no setting; did you mean "
                                       "'GRPO_DATA__PROMPT_COLUMN'?"),
    ("GRPO_EXPORT__QUANTIZATIONS", "", "a list is JSON: '[]' for none"),  # an empty variable (trial)
])
def test_a_variable_s_problem_is_said_in_variables(monkeypatch, name, value, said):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as e:
        load_settings()
    assert said in str(e.value) and (f"[{name}]: " in str(e.value) or said.startswith(f"environment variable {name}"))


@pytest.mark.parametrize("name, value, where", [
    ("GRPO_REWARDS", '{"correctness": 2', "line 1 column 18"),
    ("GRPO_TRAIN__EXTRA", '{"top_p":', "line 1 column 10"),  # nested: the variable, not its section
    ("GRPO_LORA__TARGET_MODULES", "[q_proj, v_proj]", "line 1 column 2"),
])
def test_invalid_json_in_an_environment_variable_names_the_variable(monkeypatch, name, value, where):
    monkeypatch.setenv("GRPO_TRAIN__MAX_STEPS", "5")  # another variable of the same section is not blamed
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as e:
        load_settings()
    msg = str(e.value)
    assert f"environment variable {name} holds invalid JSON" in msg and where in msg and repr(value) in msg, msg
    assert "command line" not in msg and "EnvSettingsSource" not in msg


@pytest.mark.parametrize("wrong, meant", [
    ("GRPO_DATA_PATH", "GRPO_DATA__PATH"),  # trial Y: told GRPO_EVALUATION__DATA_PATH, the same leaf name
    ("GRPO_REWARD__CODE", "GRPO_REWARDS__CODE"),  # trial Y: told GRPO_REWARDS, the key dropped
    ("GRPO_REWARDS_CODE", "GRPO_REWARDS__CODE"),
    ("GRPO_TRAIN__EXTRA_TOP_P", "GRPO_TRAIN__EXTRA__TOP_P"),
    ("GRPO_TRAIN__EXTRAS__TOP_P", "GRPO_TRAIN__EXTRA__TOP_P"),
    ("GRPO_TRAIN__MAX_STEP", "GRPO_TRAIN__MAX_STEPS"),  # no dict setting's key when a field is close
    ("GRPO_RUNID", "GRPO_RUN_ID"),
    ("GRPO_CONFIGS", "GRPO_CONFIG"),  # trial Z: told GRPO_RUN_ID
])
def test_an_unknown_variable_is_told_the_name_it_was_meant_as(wrong, meant, monkeypatch):
    from grpo_job.settings.loading import unknown_env_names

    assert unknown_env_names({wrong: "1"}) == [f"environment variable {wrong} names no setting; did you mean {meant!r}?"]
    # and that is the message a load gives, not pydantic's (trial Z: GRPO_TRAIN__EXTRA_TOP_P was told
    # GRPO_TRAIN__EXTRA, the train section's field)
    for k in [k for k in os.environ if k.startswith("GRPO_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv(wrong, "1")
    with pytest.raises(SettingsError) as e:
        load_settings()
    assert str(e.value) == f"invalid settings (1 problem):\n  - environment variable {wrong} names no setting; did " \
                           f"you mean {meant!r}?"


def test_the_config_variable_is_read_in_any_case_as_every_grpo_name(monkeypatch, tmp_path):
    """Trial Z: `GRPO_Config=code.yaml` was ignored without a word, where `GRPO_Train__Max_Steps` is read."""
    for k in [k for k in os.environ if k.startswith("GRPO_")]:
        monkeypatch.delenv(k)
    config = tmp_path / "c.yaml"
    config.write_text("train:\n  max_steps: 7\n")
    monkeypatch.setenv("GRPO_Config", str(config))
    assert load_settings().train.max_steps == 7


def test_unknown_env_names_are_errors_with_a_suggestion(monkeypatch):
    monkeypatch.setenv("GRPO_TRIAN__MAX_STEPS", "5")
    monkeypatch.setenv("GRPO_MAX_STEPS", "5")
    with pytest.raises(SettingsError) as e:
        load_settings()
    msg = str(e.value)
    assert "GRPO_TRIAN__MAX_STEPS names no setting; did you mean 'GRPO_TRAIN__MAX_STEPS'" in msg
    assert "GRPO_MAX_STEPS names no setting" in msg and "2 problems" in msg
    monkeypatch.delenv("GRPO_TRIAN__MAX_STEPS")
    monkeypatch.delenv("GRPO_MAX_STEPS")
    # a misspelt field of a section is one problem, not two (new-user trial)
    monkeypatch.setenv("GRPO_DATA__ANSWER_COLUM", "x")
    with pytest.raises(SettingsError) as e:
        load_settings()
    assert "(1 problem)" in str(e.value) and "did you mean 'GRPO_DATA__ANSWER_COLUMN'" in str(e.value)
    monkeypatch.delenv("GRPO_DATA__ANSWER_COLUM")
    # keys inside dict settings and the variables the job reads itself are fine
    monkeypatch.setenv("GRPO_TRAIN__EXTRA__TOP_P", "0.95")
    monkeypatch.setenv("GRPO_TRAIN__EXTRA__MASK_TRUNCATED_COMPLETIONS", "true")
    monkeypatch.setenv("GRPO_REWARDS__FORMAT", "1.0")
    monkeypatch.setenv("GRPO_EXIT_CODE_DIR", "/tmp/x")
    s = load_settings()
    # a variable's text, taken by each argument's type
    assert environment.grpo_config_extra(s.train.extra) == {"top_p": 0.95, "mask_truncated_completions": True}
    assert s.rewards["format"] == 1.0


def test_unknown_yaml_key_suggests_the_setting(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("trian:\n  max_steps: 5\ntrain:\n  max_stepz: 5\n")
    with pytest.raises(SettingsError) as e:
        load_settings(cfg)
    msg = str(e.value)
    # the source named is the config file the keys are in (issue 23 item 12), not an environment variable
    assert f"trian [config file {str(cfg)!r}]: no such setting; did you mean 'train" in msg
    assert f"train.max_stepz [config file {str(cfg)!r}]: no such setting; did you mean 'train.max_steps'" in msg


def test_yaml_slips_a_user_makes_are_explained(tmp_path):
    """(trial) A key moved out of the middle of its section breaks the next line, where PyYAML notices it; a
    nested column written as a YAML mapping is named by its dotted path."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  seed: 1\nmax_steps: 3\n  save_steps: 2\n")
    with pytest.raises(SettingsError, match=r"(?s)line 4.*indented under a key that already has a value"):
        load_settings(cfg)
    cfg.write_text("data:\n  prompt_column: {item: statement}\n  answer_column: {ref: {final: value}}\n")
    with pytest.raises(SettingsError) as e:
        load_settings(cfg)
    assert "named by its dotted path, 'item.statement'" in str(e.value)
    assert "named by its dotted path, 'ref.final.value'" in str(e.value)


def test_a_setting_written_outside_its_section_is_named_in_it(tmp_path, monkeypatch):
    """`save_steps` at the top of the YAML (trial), `GRPO_SAVE_STEPS`, `--save_steps`: the one setting of that name
    is named in its section, from each source."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("save_steps: 5\ntrain:\n  max_steps: 5\n")
    with pytest.raises(SettingsError, match=r"save_steps \[config file .*\]: no such setting; did you mean "
                                            r"'train.save_steps'\?"):
        load_settings(cfg)
    with pytest.raises(SettingsError, match=r"--save_steps names no setting; did you mean '--train.save_steps'\?"):
        load_settings(None, ["--save_steps=5"])
    monkeypatch.setenv("GRPO_SAVE_STEPS", "5")
    with pytest.raises(SettingsError, match=r"GRPO_SAVE_STEPS names no setting; did you mean 'GRPO_TRAIN__SAVE_STEPS'\?"):
        load_settings()


@pytest.mark.parametrize("text, key, lines", [
    ("rewards:\n  format: 0.5\n  correctness: 2.0\n  format: 0\n", "'format'", "lines 2 and 4"),
    ("train:\n  max_steps: 5\nmodel:\n  engine: trl\ntrain:\n  seed: 1\n", "'train'", "lines 1 and 5"),
])
def test_duplicate_yaml_keys_are_errors(tmp_path, text, key, lines):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(SettingsError, match=f"key {key} appears twice \\({lines}\\)"):
        load_settings(cfg)


def test_cli_forms(tmp_path):
    s = load_settings(overrides=["--train.max_steps", "7", "--export.quantizations=[q8_0,q4_k_m]",
                                 "--lora.target_modules=q_proj,v_proj", "--export.merge=false",
                                 '--train.extra={"scale_rewards": "batch", "num_iterations": 2}'])
    assert s.train.max_steps == 7 and s.export.quantizations == ["q8_0", "q4_k_m"] and not s.export.merge
    assert s.lora.target_modules == ["q_proj", "v_proj"]
    assert s.train.extra == {"scale_rewards": "batch", "num_iterations": 2}
    with pytest.raises(SettingsError, match="invalid command line"):
        load_settings(overrides=["positional"])


def test_steps_per_generation_enters_the_batch_rule():
    ok = ["--train.per_device_train_batch_size=4", "--train.num_generations=8"]
    with pytest.raises(SettingsError, match="must be divisible by num_generations"):
        load_settings(overrides=ok)
    s = load_settings(overrides=[*ok, "--train.steps_per_generation=2"])
    assert s.train.steps_per_generation == 2
    with pytest.raises(SettingsError, match="set train.steps_per_generation"):
        load_settings(overrides=['--train.extra={"steps_per_generation": 2}'])
    with pytest.raises(SettingsError, match="alternatives"):
        load_settings(overrides=["--train.steps_per_generation=2", '--train.extra={"generation_batch_size": 128}'])
    for written in ("10", "10.0", "1e1"):  # 1e1 and 10.0 passed `check`; GRPOConfig got 10 (second trial)
        with pytest.raises(SettingsError, match=r"generation_batch_size \(10\) must be a multiple"):
            load_settings(overrides=[f'--train.extra={{"generation_batch_size": "{written}"}}'])
    # auto defers to generation_batch_size
    assert load_settings(overrides=['--train.extra={"generation_batch_size": 128}']).train.steps_per_generation == "auto"
    with pytest.raises(SettingsError, match="steps_per_generation"):
        load_settings(overrides=["--train.steps_per_generation=0"])


def test_loss_types_of_trl_are_accepted():
    for loss in ("cispo", "sapo", "luspo", "vespo", "dr_grpo"):
        assert load_settings(overrides=[f"--train.loss_type={loss}"]).train.loss_type == loss


def test_schema_reads_values_only_environment_reads_the_machine(tmp_path):
    # valid anywhere: a data file on a volume this machine lacks, a reward module it cannot import
    s = load_settings(overrides=["--data.path=/mnt/data/train.jsonl", '--rewards={"my_rewards:brevity": 1.0}',
                                 "--evaluation.data_path=/mnt/data/test.jsonl", "--report.report_to=[wandb]"])
    found = environment.problems(s)
    text = "\n".join(found)
    assert "GRPO_DATA__PATH" in text and "/mnt/data/train.jsonl" in text and "does not exist on this machine" in text
    assert "GRPO_EVALUATION__DATA_PATH" in text and "my_rewards" in text
    assert ("wandb" in text) == (importlib.util.find_spec("wandb") is None)


def test_extra_names_checked_against_the_installed_grpo_config():
    s = load_settings(overrides=['--train.extra={"epsilon_high": 0.28, "top_p": 0.9, "mask_truncated_completion": true}'])
    found = environment.problems(s)
    assert len(found) == 1 and "'mask_truncated_completion' is not a GRPOConfig argument" in found[0]
    assert "did you mean 'mask_truncated_completions'" in found[0]
    assert set(s.train.extra) - {"mask_truncated_completion"} <= environment.grpo_config_fields()


def test_extra_reaches_grpo_config(tmp_path):
    from trl import GRPOConfig

    from grpo_job.training.train import grpo_config_kwargs

    s = load_settings(ROOT / "examples" / "smoke.yaml",
                      ['--train.extra={"epsilon_high": 0.28, "top_p": 0.9, "scale_rewards": "batch"}'])
    args = GRPOConfig(**grpo_config_kwargs(s, tmp_path), use_cpu=True)
    assert (args.epsilon_high, args.top_p, args.scale_rewards) == (0.28, 0.9, "batch")


def test_builtin_reward_names_match_the_registry():
    from grpo_job import rewards
    from grpo_job.settings.rewards import BUILTIN_REWARDS

    assert set(BUILTIN_REWARDS) == set(rewards.REGISTRY) | set(rewards.TRL_REWARDS) | set(rewards.ALIASES)


def test_every_grpo_variable_the_code_reads_is_a_setting_or_reserved():
    """A GRPO_* variable read by the job, the launcher, a test or a bench (and passed on to the job in its
    environment) must not be taken for a misspelt setting."""
    import re

    from grpo_job.settings.loading import RESERVED_ENV, unknown_env_names

    read = set()
    for folder in ("grpo_job", "tests", "bench"):
        for f in (ROOT / folder).rglob("*.py"):
            read |= set(re.findall(r"environ(?:\.get\(|\[)\s*[\"'](GRPO_[A-Z0-9_]+)", f.read_text()))
    assert read, "the scan found no reads at all"
    assert unknown_env_names({name: "x" for name in read}) == [], read - RESERVED_ENV


def test_extra_values_checked_against_grpo_config_annotations():
    """Found by a new user: GRPO_TRAIN__EXTRA__TOP_P=abc passed `check` and would only fail inside vLLM."""
    s = load_settings(overrides=['--train.extra={"top_p": "abc", "num_iterations": 2, "epsilon_high": null}'])
    found = environment.problems(s)
    assert len(found) == 1 and "top_p='abc' does not fit GRPOConfig's top_p (float)" in found[0], found


@pytest.mark.parametrize("value, fits", [("false", True), ("true", True), ('"none"', True), ('"batch"', True),
                                         ("3", False), ('"bogus"', False), ('"Batch"', False)])
def test_extra_values_may_take_what_trl_documents_beyond_its_annotation(value, fits):
    """`scale_rewards: false` (TRL: "`str` or `bool`"; annotated `str`) was refused, and "bogus" passed, to
    fail at the first training step (new-user trials)."""
    s = load_settings(overrides=[f'--train.extra={{"scale_rewards": {value}}}'])
    assert (environment.problems(s) == []) is fits


def test_errors_after_loading_say_where_this_run_set_the_variables_they_name(tmp_path, monkeypatch):
    # the machine checks word their problems with GRPO_* variables; a run set up by a file or flags never set them
    config = tmp_path / "c.yaml"
    config.write_text("data:\n  path: /nope/train.jsonl\n")
    message = ("data.path [GRPO_DATA__PATH]: no such file; set GRPO_MODEL__NAME_OR_PATH, GRPO_TRAIN__OPTIM and "
               "GRPO_GPU_RUNS")
    monkeypatch.setenv("GRPO_TRAIN__OPTIM", "adamw_torch")
    monkeypatch.delenv("GRPO_CONFIG", raising=False)
    told = where_set(message, config, ["--model.name_or_path=/nope/model"])
    first, last = told.split("\n")
    assert first == message
    assert "GRPO_DATA__PATH is data.path, which this run sets by config file" in last and "c.yaml" in last
    assert "GRPO_MODEL__NAME_OR_PATH is model.name_or_path, which this run sets by --model.name_or_path on the command line" in last
    assert "GRPO_TRAIN__OPTIM" not in last and "GRPO_GPU_RUNS" not in last  # set as the variable; not a setting
    assert where_set(message, None, []) == message  # nothing set outside the environment: nothing to add
    # the environment wins over the file (its precedence): then the variable is what the user set; a variable the
    # run leaves at its default is named as the setting the file would set (trial: "raise GRPO_TRAIN__..." in YAML)
    monkeypatch.setenv("GRPO_DATA__PATH", "/other.jsonl")
    assert where_set(message, config, []) == f"{message}\n(where: GRPO_MODEL__NAME_OR_PATH is model.name_or_path)"


def test_check_names_the_config_file_behind_a_machine_problem(tmp_path, monkeypatch, capsys):
    from grpo_job import cli

    for k in [k for k in os.environ if k.startswith("GRPO_")]:
        monkeypatch.delenv(k)
    config = tmp_path / "c.yaml"
    config.write_text(f"data:\n  path: {tmp_path / 'not-mounted' / 'train.jsonl'}\nstore:\n  uri: {tmp_path / 'runs'}\n")
    assert cli.main(["check", "--config", str(config), "--log_format=text"]) == EXIT_INVALID
    err = capsys.readouterr().err
    assert "does not exist on this machine" in err
    assert f"GRPO_DATA__PATH is data.path, which this run sets by config file {str(config)!r}" in err


def test_a_warning_says_which_setting_the_variable_it_names_is(tmp_path, monkeypatch, capsys):
    """Warnings name settings by their GRPO_* variables, as errors do; a run set up by a file gets the same
    `(where: ...)` line (trial: only errors had it)."""
    from grpo_job import cli

    for k in [k for k in os.environ if k.startswith("GRPO_")]:
        monkeypatch.delenv(k)
    config = tmp_path / "w.yaml"
    config.write_text(f"train:\n  max_steps: 4\n  warmup_steps: 8\nstore:\n  uri: {tmp_path / 'runs'}\n"
                      f"data:\n  path: {tmp_path / 'none.jsonl'}\n")
    cli.main(["check", "--config", str(config), "--log_format=json"])
    warned = [json.loads(x)["msg"] for x in capsys.readouterr().err.splitlines() if "never reaches" in x]
    assert len(warned) == 1 and warned[0].endswith(
        "(GRPO_TRAIN__WARMUP_STEPS)\n(where: GRPO_TRAIN__WARMUP_STEPS is train.warmup_steps, which this run sets "
        f"by config file {str(config)!r})"), warned
    monkeypatch.setenv("GRPO_TRAIN__WARMUP_STEPS", "8")  # set as the variable: the user knows it, no note
    monkeypatch.setenv("GRPO_TRAIN__MAX_STEPS", "4")
    cli.main(["check", "--store.uri", str(tmp_path / "runs"), "--data.path", str(tmp_path / "none.jsonl"),
              "--log_format=text"])
    assert "(where: GRPO_TRAIN__WARMUP_STEPS" not in capsys.readouterr().err


def test_a_cross_field_rule_says_where_this_run_set_the_variable_it_names(tmp_path, monkeypatch):
    for k in [k for k in os.environ if k.startswith("GRPO_")]:
        monkeypatch.delenv(k)
    config = tmp_path / "xf.yaml"
    config.write_text("train:\n  num_generations: 4\n  per_device_train_batch_size: 6\n")
    with pytest.raises(SettingsError) as e:
        load_settings(config)
    assert (f"(where: GRPO_TRAIN__PER_DEVICE_TRAIN_BATCH_SIZE is train.per_device_train_batch_size, which this run "
            f"sets by config file {str(config)!r})") in str(e.value)


def test_another_field_of_the_section_in_the_environment_is_not_blamed(tmp_path, monkeypatch):
    """`GRPO_TRAIN__MAX_STEPS` was named as the source of a bad train.learning_rate from the config file (second
    trial): only the field's own variable, its keys' (a dict setting) or the whole section's count."""
    for k in [k for k in os.environ if k.startswith("GRPO_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("GRPO_TRAIN__MAX_STEPS", "5")
    config = tmp_path / "bad.yaml"
    config.write_text("train:\n  learning_rate: fast\n")
    with pytest.raises(SettingsError) as e:
        load_settings(config)
    assert f"train.learning_rate [config file {str(config)!r}]" in str(e.value)
    monkeypatch.setenv("GRPO_REWARDS__FORMAT", "lots")
    with pytest.raises(SettingsError, match=r"\[GRPO_REWARDS__FORMAT\]"):
        load_settings()


@pytest.mark.parametrize("kwargs, names", [
    ('{"temperature": 0.7}', ["'temperature'", "GRPO_TRAIN__TEMPERATURE", "policy ratio"]),
    ('{"n": 4}', ["'n'", "GRPO_TRAIN__NUM_GENERATIONS"]),
    ('{"max_new_tokens": 64}', ["'max_new_tokens'", "GRPO_TRAIN__MAX_COMPLETION_LENGTH"]),
    ('{"logprobs": null}', ["logprobs=null", "importance-sampling"]),
    ('{"min_p": 2}', ["'min_p'", "GRPO_TRAIN__EXTRA__MIN_P"]),  # second trial: passed check, failed mid-run
    ('{"top_p": -0.5}', ["'top_p'", "GRPO_TRAIN__EXTRA__TOP_P"]),
    ('{"do_sample": false}', ["do_sample=false", "no group has reward variance"]),
])
def test_generation_kwargs_that_trl_sets_itself_are_refused(kwargs, names):
    """TRL puts `generation_kwargs` over its own sampling arguments: a temperature there trains on log-probs of
    another distribution than the one sampled, `n` breaks the batch, `logprobs: null` fails TRL 1.15's vLLM path
    at the first generation step (trl/trainer/grpo_trainer.py `_generate_single_turn`)."""
    with pytest.raises(SettingsError) as e:
        load_settings(overrides=[f'--train.extra={{"generation_kwargs": {kwargs}}}'])
    assert all(n in str(e.value) for n in names), str(e.value)


def test_generation_kwargs_of_vllm_alone_pass_to_grpo_config(tmp_path):
    from trl import GRPOConfig

    from grpo_job.training.train import grpo_config_kwargs

    s = load_settings(ROOT / "examples" / "smoke.yaml",
                      ['--train.extra={"generation_kwargs": {"detokenize": false, "logprobs": 0}}'])
    args = GRPOConfig(**grpo_config_kwargs(s, tmp_path), use_cpu=True)
    assert args.generation_kwargs == {"detokenize": False, "logprobs": 0}


def test_a_dict_setting_set_key_by_key_names_every_key_s_variable(monkeypatch):
    """`(where: GRPO_REWARDS is rewards, which this run sets by GRPO_REWARDS__JSON_SCHEMA__WEIGHT)` blamed one
    key's variable for another key's problem (new-user trial)."""
    for k in [k for k in os.environ if k.startswith("GRPO_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("GRPO_REWARDS__JSON_SCHEMA__WEIGHT", "1")
    monkeypatch.setenv("GRPO_REWARDS__MyRewards:brevity", "1")
    told = where_set("rewards [GRPO_REWARDS]: reward 'myrewards:brevity': cannot import module 'myrewards'", None, [])
    assert told.endswith("(where: GRPO_REWARDS is rewards, which this run sets key by key: "
                         "GRPO_REWARDS__JSON_SCHEMA__WEIGHT, GRPO_REWARDS__MyRewards:brevity)"), told


def test_extra_values_reach_grpo_config_as_their_type(monkeypatch, tmp_path):
    """`GRPO_TRAIN__EXTRA__EPSILON_HIGH=3e-1` stayed the text '3e-1' (YAML 1.1 reads no exponent without a dot):
    `check` passed it and TRL added it to a number at the first loss step; `"false"` reached
    mask_truncated_completions as a true string; a key of a key stayed text (new-user trial)."""
    from trl import GRPOConfig

    from grpo_job.training.train import grpo_config_kwargs

    for k in [k for k in os.environ if k.startswith("GRPO_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("GRPO_TRAIN__EXTRA__EPSILON_HIGH", "3e-1")
    monkeypatch.setenv("GRPO_TRAIN__EXTRA__GENERATION_KWARGS__MIN_TOKENS", "4")
    monkeypatch.setenv("GRPO_TRAIN__EXTRA__CHAT_TEMPLATE_KWARGS__ENABLE_THINKING", "false")
    s = load_settings(ROOT / "examples" / "smoke.yaml")
    assert environment.grpo_config_extra(s.train.extra) == {"epsilon_high": 0.3, "generation_kwargs": {"min_tokens": 4},
                             "chat_template_kwargs": {"enable_thinking": False}}
    assert environment.problems(s) == []
    args = GRPOConfig(**grpo_config_kwargs(s, tmp_path), use_cpu=True)
    assert args.epsilon_high == 0.3 and args.chat_template_kwargs == {"enable_thinking": False}
    # a JSON document's text value (no environment variable involved): converted to the argument's type
    monkeypatch.delenv("GRPO_TRAIN__EXTRA__EPSILON_HIGH")
    s = load_settings(ROOT / "examples" / "smoke.yaml", ['--train.extra={"mask_truncated_completions": "false"}'])
    assert GRPOConfig(**grpo_config_kwargs(s, tmp_path), use_cpu=True).mask_truncated_completions is False


def test_an_argument_s_own_no_takes_its_type_and_a_variable_s_text_stays_text(monkeypatch, tmp_path):
    """`GRPO_TRAIN__EXTRA__LOGGING_STRATEGY=no` was read as YAML 1.1's false and refused ("Input should be 'no',
    'steps' or 'epoch'"); `stop: "###"` from a file or JSON was read as YAML again (a comment: null), `Question:` as a
    mapping, `2024` refused for a text argument (new-user trials). A variable's text is read as a YAML scalar, an
    argument's own yes/no/on/off converted by its type; a file's and JSON's values stay as written."""
    from trl import GRPOConfig

    from grpo_job.training.train import grpo_config_kwargs

    def clear():
        for k in [k for k in os.environ if k.startswith("GRPO_")]:
            monkeypatch.delenv(k)

    clear()
    for name, text in {"RUN_NAME": "no", "MASK_TRUNCATED_COMPLETIONS": "Off", "USE_LIGER_KERNEL": "false",
                       "EVAL_STRATEGY": "no", "HUB_MODEL_ID": "2024",
                       # a key of a key has no type to convert by: YAML's reading stays (skip_special_tokens gets False)
                       "GENERATION_KWARGS__SKIP_SPECIAL_TOKENS": "no", "GENERATION_KWARGS__STOP": "###",
                       "GENERATION_KWARGS__MIN_TOKENS": "4", "CHAT_TEMPLATE_KWARGS": "{enable_thinking: false}"}.items():
        monkeypatch.setenv(f"GRPO_TRAIN__EXTRA__{name}", text)
    s = load_settings(ROOT / "examples" / "smoke.yaml")
    # an argument's own text stays as written until its type takes it
    assert {k: s.train.extra[k] for k in ("use_liger_kernel", "hub_model_id")} == {"use_liger_kernel": "false",
                                                                                  "hub_model_id": "2024"}
    assert environment.grpo_config_extra(s.train.extra) == {
                             "run_name": "no", "mask_truncated_completions": False, "use_liger_kernel": False,
                             "eval_strategy": "no", "hub_model_id": "2024",
                             "generation_kwargs": {"skip_special_tokens": False, "stop": "###", "min_tokens": 4},
                             "chat_template_kwargs": {"enable_thinking": False}}
    assert environment.problems(s) == []
    args = GRPOConfig(**grpo_config_kwargs(s, tmp_path), use_cpu=True)
    assert (args.run_name, args.mask_truncated_completions, args.hub_model_id) == ("no", False, "2024")
    clear()
    config = tmp_path / "job.yaml"
    config.write_text('train:\n  extra:\n    run_name: "2024"\n    generation_kwargs: {stop: "###", seed: "7"}\n'
                      "    chat_template_kwargs: {enable_thinking: false}\n")
    s = load_settings(config)
    assert s.train.extra["run_name"] == "2024" and s.train.extra["generation_kwargs"] == {"stop": "###", "seed": "7"}
    s = load_settings(overrides=['--train.extra={"generation_kwargs": {"stop": "Question:"}, "run_name": "#exp"}'])
    assert s.train.extra == {"generation_kwargs": {"stop": "Question:"}, "run_name": "#exp"}
    # a YAML file has made an unquoted no a boolean before the job sees it: told to quote it
    config.write_text("train:\n  extra:\n    run_name: no\n")
    told = environment.problems(load_settings(config))
    assert any("run_name=False does not fit" in m and 'quote it in the file (run_name: \"no\")' in m
               for m in told), told


@pytest.mark.parametrize(("text", "top", "nested"), [
    ("0.95", "0.95", 0.95), ("3e-1", "3e-1", 0.3), ("4", "4", 4), ("null", "null", None),
    ("no", "no", False), ("True", "True", True),
    # YAML 1.1 would change these (second trial): octal, base 60, hex, digit groups, a comment, a date, a mapping
    ("010", "010", "010"), ("12:30", "12:30", "12:30"), ("0x1F", "0x1F", "0x1F"), ("1_000", "1_000", "1_000"),
    ("run #3", "run #3", "run #3"), ("###", "###", "###"), ("2024-01-01", "2024-01-01", "2024-01-01"),
    ("Question:", "Question:", "Question:"), ("1.10", "1.10", 1.1),
    ("[a, b]", ["a", "b"], ["a", "b"]), ('{"k": "#v"}', {"k": "#v"}, {"k": "#v"}),
])
def test_a_variable_s_text_is_read_as_a_scalar_only_where_it_is_one(text, top, nested):
    from grpo_job.settings.sources import read_env_text

    assert read_env_text(text, typed=True) == top and read_env_text(text, typed=False) == nested


def test_stop_strings_stay_text_and_generation_kwargs_types_are_checked(monkeypatch, tmp_path):
    for k in [k for k in os.environ if k.startswith("GRPO_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("GRPO_TRAIN__EXTRA__GENERATION_KWARGS__STOP", "no")  # the stop string "no", not false
    monkeypatch.setenv("GRPO_TRAIN__EXTRA__RUN_NAME", "010")
    s = load_settings(ROOT / "examples" / "smoke.yaml")
    assert environment.grpo_config_extra(s.train.extra) == {"generation_kwargs": {"stop": "no"}, "run_name": "010"}
    monkeypatch.setenv("GRPO_TRAIN__EXTRA__GENERATION_KWARGS__MIN_TOKENS", "-3")
    told = environment.problems(load_settings(ROOT / "examples" / "smoke.yaml"))
    assert any("generation_kwargs.min_tokens=-3 does not fit vLLM's min_tokens" in m for m in told), told
    for k in [k for k in os.environ if k.startswith("GRPO_")]:
        monkeypatch.delenv(k)
    config = tmp_path / "job.yaml"
    config.write_text("train:\n  extra:\n    generation_kwargs: {stop: [User:, no], skip_special_tokens: off}\n")
    told = environment.problems(load_settings(config))
    assert any("generation_kwargs.stop=[{'User': None}, False] does not fit vLLM's stop" in m for m in told), told


def test_generation_kwargs_transformers_ignores_are_said_and_chat_template_flags_are_checked(monkeypatch):
    """Under transformers' generate (no vLLM) `min_tokens`, `seed`, `stop` did nothing in silence, and
    `enable_thinking: flase` reached the chat template as true text (third trial)."""
    for k in [k for k in os.environ if k.startswith("GRPO_")]:
        monkeypatch.delenv(k)
    s = load_settings(ROOT / "examples" / "smoke.yaml", ['--train.extra={"generation_kwargs": {"min_tokens": 4, '
                                                         '"stop": ["</answer>"], "min_new_tokens": 4}}'])
    problems, notes = environment.generation_kwargs_names(s, vllm=False)
    assert problems == [] and len(notes) == 1 and "'min_tokens', 'stop' do nothing here" in notes[0], notes
    assert "min_new_tokens" not in notes[0].split("do nothing")[0]
    monkeypatch.setenv("GRPO_TRAIN__EXTRA__CHAT_TEMPLATE_KWARGS__ENABLE_THINKING", "flase")
    told = environment.problems(load_settings(ROOT / "examples" / "smoke.yaml"))
    assert any("chat_template_kwargs.enable_thinking='flase' does not fit the chat template's enable_thinking" in m
               for m in told), told
    monkeypatch.setenv("GRPO_TRAIN__EXTRA__CHAT_TEMPLATE_KWARGS__ENABLE_THINKING", "no")
    s = load_settings(ROOT / "examples" / "smoke.yaml")
    assert environment.grpo_config_extra(s.train.extra) == {"chat_template_kwargs": {"enable_thinking": False}}


@pytest.mark.parametrize("extra, says", [
    ('{"eval_strategy": "steps"}', "the job evaluates in stages of its own"),
    ('{"logging_strategy": "no"}', "read TRL's per-step logs"),
    ('{"generation_kwargs": {"stop": ["###"], "detokenize": "no"}}', "vLLM matches stop strings on the text"),
    ('{"generation_kwargs": {"do_sample": 0}}', "do_sample=false"),
])
def test_extra_values_the_job_cannot_work_with_are_refused(extra, says):
    with pytest.raises(SettingsError, match=says):
        load_settings(overrides=[f"--train.extra={extra}"])


@pytest.mark.parametrize("extra, says", [
    ('{"importance_sampling_level": "seq"}', "importance_sampling_level='seq' does not fit GRPOConfig's "
                                             "importance_sampling_level ('token' or 'sequence')"),
    ('{"multi_objective_aggregation": "mean"}', "'sum_then_normalize' or 'normalize_then_sum'"),
    ('{"top_p": 1.5}', "top_p=1.5 does not fit GRPOConfig's top_p (float): Input should be less than or equal to 1"),
    ('{"min_p": 2}', "min_p=2"),
    ('{"repetition_penalty": 0}', "repetition_penalty=0"),
    ('{"num_iterations": 0}', "num_iterations=0"),
    ('{"importance_sampling_level": "sequence", "top_p": 0.95, "min_p": null, "num_iterations": 2}', None),
])
def test_extra_values_trl_documents_a_set_or_range_for_are_checked(extra, says):
    """Each passed `check` and failed mid-run (TRL at the first loss step, after 6 minutes; transformers'
    GenerationConfig or vLLM's SamplingParams), new-user trial."""
    found = environment.problems(load_settings(overrides=[f"--train.extra={extra}"]))
    assert (found == []) if says is None else (len(found) == 1 and says in found[0]), found


def test_a_dict_setting_a_higher_source_replaces_says_which_file_keys_are_dropped(monkeypatch, tmp_path):
    """`GRPO_TRAIN__EXTRA__TOP_P=0.9` beside a config file's train.extra dropped its epsilon_high and num_iterations
    in silence; documented, but nothing said so at the run (recipe trial)."""
    for k in [k for k in os.environ if k.startswith("GRPO_")]:
        monkeypatch.delenv(k)
    config = tmp_path / "c.yaml"
    config.write_text("train:\n  extra:\n    epsilon_high: 0.28\n    num_iterations: 2\n"
                      "rewards:\n  format: 0.5\n  correctness: 2.0\n")
    monkeypatch.setenv("GRPO_TRAIN__EXTRA", '{"top_p": 0.9}')
    s = load_settings(config, ['--rewards={"correctness": 2.0}'])
    assert environment.grpo_config_extra(s.train.extra) == {"top_p": 0.9}
    notes = [w for w in s.warnings() if "replaces the config file's" in w]
    assert len(notes) == 2, s.warnings()
    assert notes[1].startswith("train.extra set by GRPO_TRAIN__EXTRA replaces the config file's train.extra "
                               "whole, so the file's epsilon_high, num_iterations are not used"), notes[1]
    assert notes[0].startswith("rewards set by --rewards on the command line replaces the config file's rewards whole, "
                               "so the file's format is not used"), notes[0]
    monkeypatch.delenv("GRPO_TRAIN__EXTRA")
    assert not any("replaces" in w for w in load_settings(config).warnings())
    # keys given one by one change the file's dict key by key (trials X and Z: one weight's variable dropped every
    # other reward and argument of the file)
    monkeypatch.setenv("GRPO_TRAIN__EXTRA__TOP_P", "0.9")
    monkeypatch.setenv("GRPO_REWARDS__CORRECTNESS", "3")
    s = load_settings(config)
    assert environment.grpo_config_extra(s.train.extra) == {"epsilon_high": 0.28, "num_iterations": 2, "top_p": 0.9}
    assert s.rewards == {"format": 0.5, "correctness": 3.0}
    assert not any("replaces" in w for w in s.warnings()), s.warnings()


@pytest.mark.parametrize("env", [{"GRPO_REWARDS__FORMAT": "0.5", "GRPO_REWARDS__CORRECTNESS": "2"},
                                 {"GRPO_REWARDS": '{"format": 0.5, "correctness": 2.0}'}], ids=["keys", "whole"])
def test_a_command_line_dict_that_replaces_the_environments_says_which_keys_are_dropped(monkeypatch, env):
    """A Job's GRPO_REWARDS__FORMAT with `--rewards` on the command line: the format reward was dropped in silence
    (documented: a dict setting is taken whole from the highest source)."""
    for k in [k for k in os.environ if k.startswith("GRPO_")]:
        monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s = load_settings(overrides=['--rewards={"correctness": 3.0}'])
    assert s.rewards == {"correctness": 3.0}
    notes = [w for w in s.warnings() if "replaces the environment's" in w]
    # every variable of it, also one for a reward the flag lists too (trial AA: its value was lost without a word)
    assert len(notes) == 1 and notes[0].startswith(
        f"rewards set by --rewards on the command line replaces the environment's rewards whole, so "
        f"{', '.join(sorted(env))} {'are' if len(env) > 1 else 'is'} not used"), s.warnings()


def test_a_dict_setting_from_a_whole_variable_and_its_keys_at_once_is_refused(monkeypatch):
    """GRPO_TRAIN__EXTRA='{"top_p": 0.95}' beside GRPO_TRAIN__EXTRA__EPSILON_HIGH=0.28 dropped the key in silence
    (second trial)."""
    for k in [k for k in os.environ if k.startswith("GRPO_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("GRPO_TRAIN__EXTRA", '{"top_p": 0.95}')
    monkeypatch.setenv("GRPO_TRAIN__EXTRA__EPSILON_HIGH", "0.28")
    with pytest.raises(SettingsError, match="GRPO_TRAIN__EXTRA and GRPO_TRAIN__EXTRA__EPSILON_HIGH both set"):
        load_settings()
    monkeypatch.delenv("GRPO_TRAIN__EXTRA")
    assert environment.grpo_config_extra(load_settings().train.extra) == {"epsilon_high": 0.28}
    # a level down: a key holding a dict of its own, whole and key by key (trial: min_tokens dropped in silence)
    monkeypatch.setenv("GRPO_TRAIN__EXTRA__GENERATION_KWARGS", '{"stop": ["x"]}')
    monkeypatch.setenv("GRPO_TRAIN__EXTRA__GENERATION_KWARGS__MIN_TOKENS", "3")
    with pytest.raises(SettingsError, match="GRPO_TRAIN__EXTRA__GENERATION_KWARGS and "
                                            "GRPO_TRAIN__EXTRA__GENERATION_KWARGS__MIN_TOKENS both set"):
        load_settings()


@pytest.mark.parametrize("text, value", [("010", 10), ("+010", 10), ("0o10", 8), ("0x10", 16), ("1:30", "1:30"),
                                         ("'010'", "010"), ("[010, 2]", [10, 2])])
def test_a_yaml_file_reads_integers_as_yaml_1_2_and_the_environment_do(tmp_path, text, value):
    """PyYAML reads YAML 1.1: `max_steps: 010` ran 8 steps and `1:30` was 90 (trial), where the environment's 010 is
    ten."""
    from grpo_job.settings.sources import read_yaml

    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"train:\n  extra: {{v: {text}}}\n")
    assert read_yaml(str(cfg)) == {"train": {"extra": {"v": value}}}


def test_a_blank_or_non_utf8_config_file_setting_is_an_error_not_the_defaults(tmp_path, monkeypatch):
    """An empty GRPO_CONFIG (a manifest's unfilled template) ran on every default without a word; a UTF-16 file
    crashed with a traceback (trial)."""
    monkeypatch.setenv("GRPO_CONFIG", "")
    with pytest.raises(SettingsError, match="GRPO_CONFIG is set but empty: name a settings file, or unset it"):
        load_settings()
    with pytest.raises(SettingsError, match="--config is set but empty: name a settings file, or leave it out"):
        load_settings(" ")
    monkeypatch.delenv("GRPO_CONFIG")
    cfg = tmp_path / "u16.yaml"
    cfg.write_text("train:\n  max_steps: 3\n", encoding="utf-16")
    with pytest.raises(SettingsError, match="config file .*u16.yaml' is not UTF-8 text .*: save it as UTF-8"):
        load_settings(cfg)
    with pytest.raises(SettingsError, match="config file .* is a folder, not a file"):
        load_settings(tmp_path)
    cfg.write_text("run_id: 010\n")  # a number for text: quote it (trial: "valid string (got 10)" alone)
    with pytest.raises(SettingsError, match=r"run_id \[config file .*: Input should be a valid string; YAML and JSON "
                                            r"read an unquoted number, yes or no as one: quote the text .* \(got 10\)"):
        load_settings(cfg)
    for text in ("", "# only a comment\n", "~\n"):  # a file that names no setting ran on every default (trial)
        cfg.write_text(text)
        with pytest.raises(SettingsError, match="u16.yaml' holds no settings"):
            load_settings(cfg)


def test_log_completions_in_extra_is_told_it_stays_off():
    """It said "change log_format instead", but no log_format turns it on (second trial)."""
    with pytest.raises(SettingsError, match="'log_completions', which the job keeps off"):
        load_settings(overrides=['--train.extra={"log_completions": true}'])
    with pytest.raises(SettingsError, match="'output_dir', which the job sets itself from work_dir"):
        load_settings(overrides=['--train.extra={"output_dir": "/x"}'])


def test_a_flag_for_a_key_of_a_dict_setting_is_told_the_json_form():
    """`--train.extra.num_iterations=2` was answered "did you mean --train.num_generations" (second trial)."""
    with pytest.raises(SettingsError) as e:
        load_settings(overrides=["--train.extra.num_iterations=2"])
    assert """--train.extra='{"num_iterations": 2}'""" in str(e.value) and "GRPO_TRAIN__EXTRA__NUM_ITERATIONS" in str(e.value)
    # a value with a space: the hint was cut at it (`{"min_tokens":}`, third trial)
    with pytest.raises(SettingsError) as e:
        load_settings(overrides=['--train.extra.generation_kwargs={"min_tokens": 4}'])
    assert """--train.extra='{"generation_kwargs": {"min_tokens": 4}}'""" in str(e.value), str(e.value)
    with pytest.raises(SettingsError, match="did you mean '--train.max_steps'"):
        load_settings(overrides=["--train.max_stepz=2"])


def test_sampling_params_fields_are_read_from_vllm_s_source():
    # vLLM 0.26's SamplingParams is a msgspec struct: its fields are the annotated class attributes
    source = '''
class RequestOutputKind:
    pass


class SamplingParams(PydanticMsgspecMixin, msgspec.Struct, omit_defaults=True):
    """doc"""
    n: int = 1
    stop: str | list[str] | None = None
    _eos_token_id: int | None = None
    min_tokens: int = 0

    def clone(self) -> "SamplingParams":
        x: int = 1
        return self
'''
    assert environment.sampling_params_fields(source) == {"n", "stop", "min_tokens"}
    assert environment.sampling_params_fields("x = 1\n") == set()


@pytest.mark.parametrize("rewards_yaml, said", [
    # a section indented under rewards: read as a reward named like it (trial U)
    ("  format: 0.5\n  evaluation:\n    enabled: false\n",
     "unknown reward 'evaluation': 'evaluation' is a section of the settings, not a reward: in a YAML file, is it "
     "indented under rewards?"),
    # module.function for module:function (trial T)
    ("  mcq_reward.letter_reward: 1.0\n", "unknown reward 'mcq_reward.letter_reward': did you mean "
                                          "mcq_reward:letter_reward?"),
    ("  corectness: 2.0\n", "unknown reward 'corectness': did you mean 'correctness'?"),
    # one `_` where the entry's key or the name's own `_` was meant (trial Z: variables with `_` for `__` and back)
    ("  code_weight: 2\n", "unknown reward 'code_weight': did you mean code: {weight: ...}?"),
    ("  partial: {format: 1}\n", "unknown reward 'partial': did you mean 'partial_format'?"),
    # a reward's argument one level too high (trial Y)
    ("  code: 1.0\n  seconds_per_case: 2\n", "unknown reward 'seconds_per_case': 'seconds_per_case' is an argument of "
                                             'the code reward, not a reward: it goes in that reward\'s entry, {"code": '
                                             '{"weight": 1.0, "seconds_per_case": 2.0}}'),
    ("  code: 1.0\n  tests_column: checks\n", "'tests_column' is an argument of the code reward, not a reward: it goes "
                                              'in that reward\'s entry, {"code": {"weight": 1.0, "tests_column": '
                                              '"checks"}}'),
    # a built-in reward's key written into its name (trial X)
    ('  "json_schema.weight": 2\n', "unknown reward 'json_schema.weight': did you mean json_schema: {weight: ...}? "
                                    "(a reward's weight and arguments are keys of its own entry"),
])
def test_an_unknown_reward_name_says_what_it_likely_meant(tmp_path, rewards_yaml, said):
    config = tmp_path / "c.yaml"
    config.write_text("rewards:\n" + rewards_yaml)
    with pytest.raises(SettingsError) as e:
        load_settings(config)
    assert said in str(e.value), str(e.value)


def test_a_key_of_a_rewards_entry_from_a_higher_source_keeps_or_names_the_files_arguments(monkeypatch, tmp_path):
    """Trial X: `--rewards.json_schema.weight=2` was told to use `--rewards='{"json_schema.weight": 2}'` (an unknown
    reward) or GRPO_REWARDS__JSON_SCHEMA__WEIGHT, which dropped the file's schema argument with nothing said; the run
    then failed on a column it had never named."""
    for k in [k for k in os.environ if k.startswith("GRPO_")]:
        monkeypatch.delenv(k)
    config = tmp_path / "c.yaml"
    config.write_text("rewards:\n  json_schema: {weight: 1.0, json_schema: ./person.schema.json}\n  format: 0.5\n")
    with pytest.raises(SettingsError) as e:
        load_settings(config, ["--rewards.json_schema.weight=2"])
    hint = """--rewards='{"json_schema": {"weight": 2, "json_schema": "./person.schema.json"}, "format": 0.5}'"""
    assert hint in str(e.value) and "keeps the rewards of the config file and the environment" in str(e.value)
    assert "or the variable GRPO_REWARDS__JSON_SCHEMA__WEIGHT=2, which changes that key alone" in str(e.value)
    # the suggested flag is one the command line takes, and it gives what was asked for
    s = load_settings(config, [hint.replace("'", "")])
    assert s.rewards["json_schema"].weight == 2 and s.rewards["json_schema"].kwargs == {
        "json_schema": "./person.schema.json"}
    assert not any("replaces" in w for w in s.warnings())
    # a dict for a reward's whole entry merges into the file's (trial Z: the file's arguments were lost)
    with pytest.raises(SettingsError) as e:
        load_settings(config, ['--rewards.json_schema={"weight": 2}'])
    assert hint in str(e.value), str(e.value)
    # without a file the key stands alone, and its variable is the other way
    with pytest.raises(SettingsError, match=re.escape("""--rewards='{"format": {"weight": 2}}' (or the variable """
                                                      "GRPO_REWARDS__FORMAT__WEIGHT)")):
        load_settings(overrides=["--rewards.format.weight=2"])
    # the environment's keys are in the JSON too, which replaces them as well (trial AA: a weight's variable was lost)
    monkeypatch.setenv("GRPO_REWARDS__CODE__WEIGHT", "5")
    with pytest.raises(SettingsError) as e:
        load_settings(config, ["--rewards.format.weight=2"])
    assert ("""--rewards='{"json_schema": {"weight": 1.0, "json_schema": "./person.schema.json"}, "format": {"weight": """
            """2}, "code": {"weight": 5}}'""") in str(e.value), str(e.value)
    monkeypatch.delenv("GRPO_REWARDS__CODE__WEIGHT")
    # the variable changes that key alone (trial Z: it replaced the file's rewards whole)
    monkeypatch.setenv("GRPO_REWARDS__JSON_SCHEMA__WEIGHT", "2")
    s = load_settings(config)
    assert s.rewards["json_schema"].weight == 2 and s.rewards["json_schema"].kwargs == {
        "json_schema": "./person.schema.json"} and s.rewards["format"] == 0.5
    assert not any("replaces" in w for w in s.warnings()), s.warnings()
    # a whole variable still replaces, and says what of the file it drops
    monkeypatch.delenv("GRPO_REWARDS__JSON_SCHEMA__WEIGHT")
    monkeypatch.setenv("GRPO_REWARDS", '{"json_schema": {"weight": 2}, "format": 0.5}')
    notes = [w for w in load_settings(config).warnings() if "replaces the config file's" in w]
    assert any(n.startswith("rewards.json_schema set by GRPO_REWARDS replaces the config file's rewards.json_schema "
                            "whole, so the file's json_schema is not used") for n in notes), notes


@pytest.mark.parametrize("rewards_json, entry", [
    ('{"code": 2.0, "tests_column": "checks"}', '{"code": {"weight": 2.0, "tests_column": "checks"}}'),
    ('{"code": {"weight": 3, "all_or_nothing": true}, "seconds_per_case": 2}',
     '{"code": {"weight": 3.0, "all_or_nothing": true, "seconds_per_case": 2.0}}'),
])
def test_a_misplaced_reward_argument_is_answered_with_the_entry_it_keeps(monkeypatch, rewards_json, entry):
    """Trial Z: the suggested entry said `"weight": 1.0` whatever the reward's weight was, and dropped its arguments."""
    for k in [k for k in os.environ if k.startswith("GRPO_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("GRPO_REWARDS", rewards_json)
    with pytest.raises(SettingsError) as e:
        load_settings()
    assert f"not a reward: it goes in that reward's entry, {entry}" in str(e.value), str(e.value)


def test_a_misplaced_reward_argument_from_a_variable_of_its_own_is_told_the_variable_to_set(monkeypatch):
    for k in [k for k in os.environ if k.startswith("GRPO_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("GRPO_REWARDS__CODE", "2")
    monkeypatch.setenv("GRPO_REWARDS__TESTS_COLUMN", "checks")
    with pytest.raises(SettingsError, match="'tests_column' is an argument of the code reward, not a reward: set "
                                            "GRPO_REWARDS__CODE__TESTS_COLUMN instead"):
        load_settings()


def test_each_variable_of_a_dict_changes_its_own_key_of_the_files_dict(monkeypatch, tmp_path):
    """Trial AA: a reward's weight by its variable dropped the file's arguments of it; `null` set None where a key
    should go; a key's own JSON merged into the file's instead of replacing it; notes blamed the wrong variable."""
    for k in [k for k in os.environ if k.startswith("GRPO_")]:
        monkeypatch.delenv(k)
    config = tmp_path / "c.yaml"
    config.write_text("rewards:\n  format: 0.5\n  correctness: 1.0\n  code: {weight: 2, tests_column: unit_tests}\n"
                      "train:\n  extra:\n    top_p: 0.9\n    generation_kwargs: {min_tokens: 2, stop: ['###']}\n")
    monkeypatch.setenv("GRPO_REWARDS__CODE", "3")  # a number for an entry with arguments: its weight
    monkeypatch.setenv("GRPO_REWARDS__FORMAT", "null")  # removed
    monkeypatch.setenv("GRPO_TRAIN__EXTRA__TOP_P", "null")
    monkeypatch.setenv("GRPO_TRAIN__EXTRA__GENERATION_KWARGS", '{"min_tokens": 9}')  # replaces what the file has there
    s = load_settings(config)
    assert list(s.rewards) == ["correctness", "code"] and s.rewards["code"].weight == 3
    assert s.rewards["code"].kwargs == {"tests_column": "unit_tests"}
    assert environment.grpo_config_extra(s.train.extra) == {"generation_kwargs": {"min_tokens": 9}}
    notes = [w for w in s.warnings() if "replaces" in w]
    assert len(notes) == 1 and notes[0].startswith(
        "train.extra.generation_kwargs set by GRPO_TRAIN__EXTRA__GENERATION_KWARGS replaces the config file's "
        "train.extra.generation_kwargs whole, so the file's stop is not used"), notes
