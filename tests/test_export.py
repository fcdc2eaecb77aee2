"""Merge, GGUF export and the llama.cpp check on the real SmolLM2-135M-Instruct with a real (random) LoRA:
llama.cpp's own converter and llama-quantize (built once into the cache when missing), files read back
by llama.cpp (llama-cpp-python). Plus the tokenizer trap, and `check` without tools."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from artifact_run import OVERRIDES_BASE, QUANTS, ROOT, exported_run

from grpo_job.artifacts import export, llamacpp

# A prompt with what a SentencePiece-style vocab lacks (accents, emoji, CJK, digits, runs of spaces).
TRICKY = "Héllo wörld 🦙 我想 12+7=19   tabs\tand\nnewlines <|im_start|>"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return exported_run(tmp_path_factory.getbasetemp() / "artifact-run")


@pytest.mark.slow
def test_merged_model_matches_base_plus_adapter(run):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from grpo_job import models

    settings, ctx = run
    merged_dir = export.fetch_dir(ctx.store, "merged", ctx.work_dir / "merged-check")
    tok = AutoTokenizer.from_pretrained(merged_dir)
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    base_path = models.resolve(settings.model, ctx.cache_dir)
    ids = torch.tensor([tok(t, add_special_tokens=False).input_ids[:10] for t in
                        ["The quick brown fox jumps over the lazy dog, then", "Question: what is 17 + 25? Answer:"]])
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32)(ids).logits
        base_model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
        base = base_model(ids).logits
        lora = PeftModel.from_pretrained(base_model, str(ctx.work_dir / "adapter"))(ids).logits
    adapter_effect = (lora - base).abs().max().item()
    merge_error = (merged - lora).abs().max().item()
    # the adapter moves the logits a lot; the merge reproduces base+adapter up to 16-bit rounding of the weights
    assert adapter_effect > 2.0
    assert merge_error < 0.15 * adapter_effect
    # the top token can only change where base+adapter's best two are closer than that rounding error
    top2 = lora.topk(2, dim=-1).values
    flipped = merged.argmax(-1) != lora.argmax(-1)
    assert flipped.float().mean().item() <= 0.1
    assert bool((top2[..., 0] - top2[..., 1])[flipped].lt(2 * merge_error).all())
    summary = ctx.stage_summary("merge")
    assert summary["dtype"] == "bfloat16" and summary["argmax_agreement"] >= 0.9


@pytest.mark.slow
def test_gguf_files_have_the_byte_level_vocab_and_quant_types(run):
    from gguf import GGUFReader

    _, ctx = run
    marker = ctx.stage_summary("export_gguf")
    assert set(marker["files"]) == set(QUANTS) and "0.3.36" in marker["llama_cpp"]
    file_types = {"q8_0": 7, "q4_k_m": 15}  # llama_ftype: LLAMA_FTYPE_MOSTLY_Q8_0, LLAMA_FTYPE_MOSTLY_Q4_K_M
    for q in QUANTS:
        path = ctx.work_dir / "gguf" / f"model-{q}.gguf"
        assert path.stat().st_size == ctx.store.size(ctx.keys.gguf_file(q)) == marker["files"][q]["size"]
        fields = GGUFReader(path).fields
        assert fields["general.file_type"].contents() == file_types[q]
        assert fields["tokenizer.ggml.model"].contents() == "gpt2"  # not "llama": the trap
        assert fields["tokenizer.ggml.pre"].contents() == "smollm"
        assert fields["tokenizer.ggml.eos_token_id"].contents() == 2
    sizes = {q: marker["files"][q]["size"] for q in QUANTS}
    assert sizes["q4_k_m"] < sizes["q8_0"]


@pytest.mark.slow
def test_gguf_load_generate_and_q8_0_follows_the_merged_model(run):
    _, ctx = run
    report = json.loads(ctx.store.read_text("gguf/verify.json"))
    assert report["passed"] and set(report["files"]) == set(QUANTS)
    for q in QUANTS:
        res = report["files"][q]
        assert res["passed"] and res["tokens_generated"] >= len(export.VERIFY_PROMPTS)
        assert all(r["tokenization_match"] and r["text"].strip() for r in res["results"])
    q8 = report["files"]["q8_0"]
    assert q8["greedy_match"] in ("exact", "near-tie")
    assert q8["forced_agreement"] >= 0.8
    # where they differ at all, they differ only where the merged model hesitated
    for ref, row in zip(report["reference"], q8["results"], strict=True):
        k = row["first_difference"]
        assert k is None or ref["margins"][k] < export.TIE_MARGIN["q8_0"]
        if k is None:
            assert row["tokens"] == ref["tokens"]


@pytest.mark.slow
def test_llama_cpp_tokenizes_tricky_text_like_transformers(run):
    from transformers import AutoTokenizer

    _, ctx = run
    tok = AutoTokenizer.from_pretrained(ctx.work_dir / "merged")
    want = tok(TRICKY, add_special_tokens=False).input_ids
    ref = [{"prompt_text": TRICKY, "prompt_ids": want, "tokens": []}]
    for q in QUANTS:
        got = export.probe(ctx.work_dir / "gguf" / f"model-{q}.gguf", ref, new_tokens=4)
        assert "error" not in got, got
        assert got["results"][0]["prompt_ids"] == want
        assert len(got["results"][0]["tokens"]) > 0


def _vocab_only_tokenize(gguf: Path, text: str) -> subprocess.CompletedProcess:
    code = ("import json, sys; from llama_cpp import Llama; "
            "llm = Llama(model_path=sys.argv[1], vocab_only=True, verbose=False); "
            "print(json.dumps(llm.tokenize(sys.argv[2].encode(), add_bos=False, special=True)))")
    return subprocess.run([sys.executable, "-c", code, str(gguf), text], capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_tokenizer_trap_transformers_rebuild_crashes_llama_cpp_and_the_fix_does_not(run, tmp_path):
    """The cause, shown: the tokenizer transformers rebuilds from the GGUF converts to a SentencePiece
    ("llama") vocab over byte-level tokens, and llama.cpp aborts tokenizing (byte_to_token out_of_range).
    The folder grpo_job.models saves converts to a "gpt2" vocab that tokenizes as transformers does."""
    import shutil

    from transformers import AutoTokenizer

    from grpo_job import models

    settings, ctx = run
    tools = llamacpp.ensure()
    fixed = Path(models.resolve(settings.model, ctx.cache_dir))
    gguf = Path(models.source_dir(settings.model)) / settings.model.gguf_file
    raw = tmp_path / "raw"
    raw.mkdir()
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(raw)  # what transformers makes
    for name in ("config.json", "model.safetensors"):
        shutil.copy(fixed / name, raw / name)
    raw_spec = json.loads((raw / "tokenizer.json").read_text())
    assert raw_spec["model"]["byte_fallback"] is True  # the SentencePiece-style rebuild

    results = {}
    for name, folder in (("raw", raw), ("fixed", fixed)):
        out = tmp_path / f"{name}-vocab.gguf"
        conv = subprocess.run([sys.executable, str(tools.converter), str(folder), "--vocab-only", "--outfile", str(out)],
                              capture_output=True, text=True, timeout=300)
        assert conv.returncode == 0, conv.stderr[-2000:]
        results[name] = (out, _vocab_only_tokenize(out, TRICKY))

    from gguf import GGUFReader

    raw_gguf, raw_run = results["raw"]
    assert GGUFReader(raw_gguf).fields["tokenizer.ggml.model"].contents() == "llama"
    assert raw_run.returncode != 0 and "out_of_range" in raw_run.stderr

    fixed_gguf, fixed_run = results["fixed"]
    assert GGUFReader(fixed_gguf).fields["tokenizer.ggml.model"].contents() == "gpt2"
    assert fixed_run.returncode == 0, fixed_run.stderr[-2000:]
    want = AutoTokenizer.from_pretrained(fixed)(TRICKY, add_special_tokens=False).input_ids
    assert json.loads(fixed_run.stdout.splitlines()[-1]) == want


def test_compare_rules_fail_on_a_confident_miss_and_a_crash():
    reference = [{"prompt": "p", "prompt_ids": [1, 2], "tokens": [5, 6, 7], "margins": [3.0, 0.1, 4.0], "text": "x"}]

    def got(tokens, forced, prompt_ids=(1, 2)):
        return {"results": [{"prompt_ids": list(prompt_ids), "tokens": tokens, "forced_argmax": forced, "text": "y"}]}

    assert export.compare("q8_0", got([5, 6, 7], [5, 6, 7]), reference)["greedy_match"] == "exact"
    near = export.compare("q8_0", got([5, 9, 9], [5, 9, 7]), reference)  # flips only at the 0.1 near-tie
    assert near["passed"] and near["greedy_match"] == "near-tie"
    miss = export.compare("q8_0", got([9, 9, 9], [5, 6, 7]), reference)  # first token differs, margin 3.0
    assert not miss["passed"] and miss["greedy_match"] == "no"
    forced_miss = export.compare("q8_0", got([5, 6, 7], [5, 6, 8]), reference)  # teacher forcing: margin 4.0
    assert not forced_miss["passed"]
    assert export.compare("q4_k_m", got([9, 9, 9], [8, 8, 8]), reference)["passed"]  # q4 only has to generate
    assert not export.compare("q4_k_m", got([9], [5, 6, 7], prompt_ids=(1, 3)), reference)["passed"]  # tokenizer
    crash = export.compare("q8_0", {"error": "llama.cpp failed on m.gguf (signal 6)"}, reference)
    assert not crash["passed"] and "signal 6" in crash["problems"][0]


def _check(tmp_path, env_extra, *extra):
    env = {"HOME": str(tmp_path), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), **env_extra}
    # a list setting given twice on the command line is appended to (pydantic-settings' CLI): give it once
    given = {o.split("=")[0] for o in extra}
    base = [o for o in OVERRIDES_BASE if not o.startswith("--hub.") and o.split("=")[0] not in given]
    cmd = [sys.executable, str(ROOT / "entrypoint.py"), "check", f"--store.uri={tmp_path / 'runs'}",
           f"--work_dir={tmp_path / 'work'}", *base, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


def test_check_fails_early_when_gguf_tools_are_missing_and_cannot_be_built(tmp_path):
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()  # a PATH with no cmake, no compiler
    r = _check(tmp_path, {"PATH": str(empty_bin), "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert r.returncode == 2, r.stdout + r.stderr
    assert "cmake is not installed" in r.stderr and "GRPO_EXPORT__QUANTIZATIONS=[]" in r.stderr
    assert "Traceback" not in r.stderr

    r = _check(tmp_path, {"PATH": str(empty_bin), "LLAMA_CPP_DIR": str(tmp_path / "nothing-here")})
    assert r.returncode == 2 and "LLAMA_CPP_DIR" in r.stderr and "bin/llama-quantize" in r.stderr

    r = _check(tmp_path, {"PATH": str(empty_bin), "XDG_CACHE_HOME": str(tmp_path / "cache")},
               "--export.quantizations=[]")
    assert r.returncode == 0, r.stderr
    assert "disabled" in r.stdout and "export_gguf" in r.stdout


def test_tools_are_found_in_llama_cpp_dir(tmp_path, monkeypatch):
    root = tmp_path / "opt-llama.cpp"
    for rel in llamacpp._REQUIRED:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("")
    (root / "VERSION").write_text("llama-cpp-python==0.3.36 test\n")
    monkeypatch.setenv("LLAMA_CPP_DIR", str(root))
    tools = llamacpp.find()
    assert tools is not None and tools.quantize == root / "bin" / "llama-quantize" and llamacpp.check() == []
    assert llamacpp.ensure().root == root
    (root / "bin" / "llama-quantize").unlink()
    assert llamacpp.find() is None
    with pytest.raises(llamacpp.ToolsUnavailable, match="bin/llama-quantize"):
        llamacpp.ensure()  # never builds over a directory the user pointed at


def test_cached_build_is_used_without_rebuilding(tmp_path, monkeypatch):
    monkeypatch.delenv("LLAMA_CPP_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cache = llamacpp.cache_dir()
    assert cache == tmp_path / "grpo-job" / f"llama.cpp-{llamacpp.LLAMA_CPP_PYTHON_VERSION}"
    for rel in llamacpp._REQUIRED:
        (cache / rel).parent.mkdir(parents=True, exist_ok=True)
        (cache / rel).write_text("")
    monkeypatch.setattr(llamacpp, "build", lambda *a, **k: pytest.fail("rebuilt although the cache is complete"))
    assert llamacpp.ensure().root == cache
    assert os.environ.get("LLAMA_CPP_DIR") is None
