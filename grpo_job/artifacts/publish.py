"""The publish stage: the run's artifacts on the Hugging Face Hub in one commit, then checked file by file.

Repo layout (one model repo, `hub.repo_id`, branch `hub.revision`):

    README.md                      model card: base model, data, rewards, settings, steps, metrics, usage
    config.json, model.safetensors, tokenizer.json, chat_template.jinja, ...   the merged 16-bit model
    <name>-<TYPE>.gguf             one per export.quantizations (e.g. grpo-smollm2-Q4_K_M.gguf)
    adapter/                       the LoRA adapter (hub.include_adapter)

huggingface_hub creates the repo if needed (private unless `hub.private=false`) and makes the commit
(`create_commit`: LFS files go up before the commit exists, so a push killed half way leaves no commit).
Pushing again is idempotent: the client asks the Hub for each path's current hash (preupload), skips
files already there and makes no commit at all when nothing changed, so a restart never duplicates a
commit. After the push the stage lists the repo and checks every file's size and hash; a mismatch
fails the stage. The token (`HF_TOKEN`) is passed to the client and never logged.

The push mirrors the run: files on the branch that this push does not carry (a single-file
`model.safetensors` of an earlier push beside new shards, old GGUF files) are deleted in the same
commit (`CommitOperationDelete`), except `.gitattributes` and paths matching `hub.keep_files`. The
model card's metadata is huggingface_hub's `ModelCardData`, with the trained model's evaluation as
`EvalResult`s (the model-index) and the before/after table in the card's text.
"""

from __future__ import annotations

import fnmatch
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grpo_job import rewards
from grpo_job.artifacts.export import fetch_dir, sha256_file
from grpo_job.errors import JobError, SettingsError

if TYPE_CHECKING:
    from grpo_job.context import RunContext
    from grpo_job.settings import JobSettings

log = logging.getLogger(__name__)


class PublishFailed(JobError):
    """The Hub does not hold what was pushed."""


def publish(ctx: RunContext) -> dict[str, Any]:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    s = ctx.settings
    repo_id, branch = s.hub.repo_id, s.hub.revision
    if not (s.hf_token and s.hf_token.get_secret_value()):
        raise SettingsError(f"hub.repo_id={repo_id} needs a Hugging Face token with write access: set HF_TOKEN")
    files = collect_files(ctx)
    from grpo_job import logs

    if logs.resolve_format(s.log_format) == "json":  # keep the log one JSON object per line
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    api = HfApi(token=s.hf_token.get_secret_value())
    try:
        repo_url = api.create_repo(repo_id, private=s.hub.private, exist_ok=True, repo_type="model")
        if branch != "main":
            api.create_branch(repo_id, branch=branch, exist_ok=True)
        total = sum(p.stat().st_size for p in files.values())
        stale = stale_files(remote_files(api, repo_id, branch), files, s.hub.keep_files)
        log.info("pushing %d files (%.1f MB) to %s@%s%s", len(files), total / 1e6, repo_id, branch,
                 f"; deleting {len(stale)} files this push does not carry: {', '.join(stale)}" if stale else "")
        info = api.create_commit(
            repo_id,
            operations=[CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(p)) for name, p in files.items()]
            + [CommitOperationDelete(path_in_repo=name) for name in stale],
            commit_message=f"grpo-job run {ctx.run_id}",
            commit_description="Merged model, GGUF files, LoRA adapter and model card written by grpo-job.",
            revision=branch,
        )
    except Exception as e:
        if (refused := refused_by_hub(e)) is None:
            raise
        raise SettingsError(
            f"the Hub refused to let this token write to {repo_id} ({refused}): HF_TOKEN has no write access there. "
            f"The trained model stays in the run store ({ctx.store.uri}: merged/, adapter/, gguf/); "
            f"set HF_TOKEN to a token that may write to {repo_id.split('/')[0]} (or change GRPO_HUB__REPO_ID) and run "
            "the job again: only the publish stage runs") from None
    check_remote(api, repo_id, branch, files)
    left = stale_files(remote_files(api, repo_id, branch), files, s.hub.keep_files)
    if left:
        raise PublishFailed(f"the push to {repo_id}@{branch} left files it should have deleted: {', '.join(left)}")
    return {"repo_id": repo_id, "revision": branch, "url": str(repo_url), "commit": info.oid,
            "files": sorted(files), "deleted": stale, "bytes": total}


def refused_by_hub(error: BaseException) -> str | None:
    """`HTTP 401/403: <the Hub's message>` when `error` is the Hub API refusing the token (invalid, read-only,
    or without rights to the namespace); None for anything else, including a 403 from a pre-signed LFS
    upload URL (storage, not the token: a retry may succeed)."""
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError

    if not isinstance(error, HfHubHTTPError) or error.response is None:
        return None
    status = error.response.status_code
    url = str(getattr(error.response, "url", "") or getattr(getattr(error.response, "request", None), "url", ""))
    if status not in (401, 403) or not url.startswith(constants.ENDPOINT) or "/lfs-upload/" in url:
        return None
    said = error.response.headers.get("X-Error-Message") or str(error).splitlines()[0]
    return f"HTTP {status}: {said[:200]}"


def hub_write_problem(repo_id: str, token: str) -> tuple[str | None, str | None]:
    """(problem, note): ask the Hub who the token is (`HfApi.whoami`) and whether it may write `repo_id`.
    A problem when the token is invalid (401), read-only, fine-grained without `repo.write` on the
    repo's namespace (or the repo), or of a user outside that organisation or with a read role in it.
    A note (and no problem) when the Hub cannot be asked: offline (HF_HUB_OFFLINE), unreachable, slow,
    or an answer without the token's details."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError

    from grpo_job import hub

    if constants.HF_HUB_OFFLINE:
        return None, "Hub write access not checked: HF_HUB_OFFLINE is set"
    who, error, timed_out = hub.ask(lambda: HfApi(token=token).whoami(), "hub-whoami")
    if timed_out:
        return None, f"Hub write access not checked: {constants.ENDPOINT} did not answer in {hub.ASK_TIMEOUT} s"
    if isinstance(error, HfHubHTTPError) and error.response is not None and error.response.status_code == 401:
        return (f"hub.repo_id={repo_id}: the Hub does not accept HF_TOKEN (HTTP 401, invalid or expired token); set "
                "HF_TOKEN to a token with write access (https://huggingface.co/settings/tokens)"), None
    if error is not None:
        return None, f"Hub write access not checked: cannot ask {constants.ENDPOINT} ({type(error).__name__}: {str(error)[:160]})"
    return token_write_problem(who, repo_id)


def token_write_problem(who: dict[str, Any], repo_id: str) -> tuple[str | None, str | None]:
    """(problem, note) from the Hub's `whoami-v2` answer: may this token write to `repo_id`?"""
    namespace = repo_id.split("/")[0]
    user = who.get("name")
    access = (who.get("auth") or {}).get("accessToken") or {}
    role = access.get("role")
    label = f"HF_TOKEN ({user}, {role or 'unknown'} token{', ' + repr(access['displayName']) if access.get('displayName') else ''})"
    fix = (f"set HF_TOKEN to a token that may write to {namespace} (https://huggingface.co/settings/tokens), or "
           "GRPO_HUB__REPO_ID to a repo in a namespace it may write")
    if role is None:
        return None, f"Hub write access not fully checked: the Hub did not say what {user}'s token may do"
    if role == "read":
        return f"hub.repo_id={repo_id}: {label} is read-only, so the publish stage would fail after training; {fix}", None
    if role == "fineGrained":
        grants = (access.get("fineGrained") or {})
        allowed = set(grants.get("global") or [])
        for scope in grants.get("scoped") or []:
            entity = scope.get("entity") or {}
            if entity.get("name") in (namespace, repo_id) or (entity.get("type") == "user" and entity.get("name") == user
                                                              and namespace == user):
                allowed |= set(scope.get("permissions") or [])
        if "repo.write" not in allowed:
            return (f"hub.repo_id={repo_id}: {label} is fine-grained without the permission repo.write on {namespace} "
                    f"(it has {sorted(allowed) or 'none there'}), so the publish stage would fail after training; give "
                    f"the token \"Write access to contents/settings of all repos\" under {namespace}, or {fix}"), None
    if namespace != user:
        orgs = {o.get("name"): o.get("roleInOrg") for o in who.get("orgs") or []}
        if namespace not in orgs:
            return (f"hub.repo_id={repo_id}: {label} belongs to {user}, who is not a member of {namespace!r}, so the "
                    f"publish stage would fail after training; {fix}"), None
        if orgs[namespace] == "read":
            return (f"hub.repo_id={repo_id}: {user} has the read role in {namespace!r}, so the publish stage would fail "
                    f"after training; ask an admin of {namespace} for the write role, or {fix}"), None
    return None, None


def remote_files(api: Any, repo_id: str, branch: str) -> list[str]:
    """Paths of the files on `branch` of the model repo."""
    from huggingface_hub import RepoFile

    return sorted(f.path for f in api.list_repo_tree(repo_id, recursive=True, revision=branch)
                  if isinstance(f, RepoFile))


def stale_files(remote: list[str], pushed: dict[str, Path], keep: list[str]) -> list[str]:
    """The paths in `remote` to delete so the repo holds what `pushed` holds: all but the pushed ones,
    `.gitattributes` (the Hub's LFS rules) and those matching a `keep` glob pattern."""
    return [p for p in remote if p not in pushed and p != ".gitattributes"
            and not any(fnmatch.fnmatch(p, pattern) for pattern in keep)]


def collect_files(ctx: RunContext) -> dict[str, Path]:
    """path in the repo -> local file, with everything fetched from the run store into the work dir."""
    s = ctx.settings
    files: dict[str, Path] = {}
    if s.export.merge:
        merged = fetch_dir(ctx.store, ctx.keys.MERGED, ctx.work_dir / "merged")
        files.update({p.relative_to(merged).as_posix(): p for p in sorted(merged.rglob("*")) if p.is_file()})
    if s.hub.include_adapter:
        adapter = fetch_dir(ctx.store, ctx.keys.ADAPTER, ctx.work_dir / "adapter")
        files.update({f"adapter/{p.relative_to(adapter).as_posix()}": p
                      for p in sorted(adapter.rglob("*")) if p.is_file()})
    for q in s.export.quantizations:
        local = ctx.work_dir / "gguf" / f"model-{q}.gguf"
        if not (local.is_file() and local.stat().st_size == ctx.store.size(ctx.keys.gguf_file(q))):
            ctx.store.get_file(ctx.keys.gguf_file(q), local)
        files[gguf_filename(s, q)] = local
    card = ctx.work_dir / "publish" / "README.md"
    card.parent.mkdir(parents=True, exist_ok=True)
    card.write_text(model_card(ctx, sorted(files)))
    files["README.md"] = card
    return files


def gguf_filename(s: JobSettings, quant: str) -> str:
    return f"{s.hub.repo_id.split('/')[1]}-{quant.upper()}.gguf"


def check_remote(api: Any, repo_id: str, branch: str, files: dict[str, Path]) -> None:
    """Every pushed file is on the branch with the local size and hash (LFS: sha256; others: git blob id)."""
    from huggingface_hub import RepoFile
    from huggingface_hub.utils.sha import git_hash

    remote = {f.path: f for f in api.list_repo_tree(repo_id, recursive=True, revision=branch)
              if isinstance(f, RepoFile)}
    problems = []
    for name, local in files.items():
        got = remote.get(name)
        size = local.stat().st_size
        if got is None:
            problems.append(f"{name} is missing")
        elif got.size != size:
            problems.append(f"{name} has {got.size} bytes on the Hub, {size} here")
        elif got.lfs is not None and got.lfs.sha256 != sha256_file(local):
            problems.append(f"{name}: sha256 differs from the local file")
        elif got.lfs is None and got.blob_id != git_hash(local.read_bytes()):
            problems.append(f"{name}: content differs from the local file")
    if problems:
        raise PublishFailed(f"the push to {repo_id}@{branch} is incomplete: " + "; ".join(problems))
    log.info("checked %d files on %s@%s: all present with the right size and hash", len(files), repo_id, branch)


# ---------------------------------------------------------------- model card
def _hub_id(value: str) -> bool:
    return "/" in value and not value.startswith(("/", ".", "package:", "s3://", "file:", "builtin:"))


def final_metrics(ctx: RunContext) -> dict[str, float]:
    """The last logged step's reward metrics (metrics.jsonl), else what the train stage's marker recorded."""
    if ctx.store.exists(ctx.keys.METRICS):
        rows = [json.loads(line) for line in ctx.store.read_text(ctx.keys.METRICS).splitlines() if line.strip()]
        rows = [r for r in rows if "reward" in r]
        if rows:
            return {k: v for k, v in rows[-1].items() if k == "step" or k.startswith("reward")}
    train = ctx.stage_summary("train") or {}
    out = dict(train.get("final_metrics") or {})
    if train.get("final_reward") is not None:
        out["reward"] = train["final_reward"]
    return out


# the evaluation numbers on the card; the <answer> ones only where the run measured them (its rewards read it)
EVAL_METRICS = {"reward": "reward (weighted total)", "accuracy": "accuracy", "format_rate": "format rate",
                "mean_length": "mean length (tokens)"}


def card_metadata(s: JobSettings, tags: list[str], trained: dict[str, Any] | None) -> Any:
    """The card's YAML header as huggingface_hub's ModelCardData; `trained` (the evaluate_trained
    stage's summary) becomes the model-index eval results."""
    from huggingface_hub import EvalResult, ModelCardData

    m, d = s.model, s.data
    results = []
    if trained and trained.get("n"):
        dataset = d.path if _hub_id(d.path) else d.path.replace(":", "-")
        results = [EvalResult(task_type="text-generation", dataset_type=dataset, dataset_name=f"{d.path} (held out)",
                              dataset_split="eval", metric_type=key, metric_name=f"{name}, greedy, {trained['n']} prompts",
                              metric_value=trained[key])
                   for key, name in EVAL_METRICS.items() if trained.get(key) is not None]
    return ModelCardData(
        model_name=s.hub.repo_id.split("/")[1], library_name="transformers", tags=tags,
        base_model=m.name_or_path if _hub_id(m.name_or_path) else None,
        datasets=[d.path] if _hub_id(d.path) else None, eval_results=results or None,
    )


def evaluation_table(evals: dict[str, dict[str, Any] | None]) -> list[str]:
    """Markdown lines: the before/after evaluation (evaluate_base / evaluate_trained summaries)."""
    if not any(e and e.get("n") for e in evals.values()):
        return ["", "### Evaluation", "", "No evaluation was run (evaluation.enabled=false)."]
    base, trained = evals.get("base") or {}, evals.get("trained") or {}
    n = trained.get("n") or base.get("n")
    lines = ["", "### Evaluation", "", f"Greedy decoding on {n} held-out prompts, before and after training:", "",
             "| metric | base model | trained |", "|---|---|---|"]
    for key, name in EVAL_METRICS.items():
        if base.get(key) is not None or trained.get(key) is not None:
            lines.append(f"| {name} | {base.get(key, 'n/a')} | {trained.get(key, 'n/a')} |")
    return lines


def model_card(ctx: RunContext, repo_files: list[str]) -> str:
    s = ctx.settings
    m, d, t, lora = s.model, s.data, s.train, s.lora
    train = ctx.stage_summary("train") or {}
    verify = ctx.store.read_json(ctx.keys.GGUF_VERIFY) if ctx.store.exists(ctx.keys.GGUF_VERIFY) else None
    tags = ["grpo", "trl", "lora", "reasoning", "grpo-job"] + (["gguf"] if s.export.quantizations else [])
    evals = {w: ctx.stage_summary(f"evaluate_{w}") for w in ("base", "trained")}
    card_data = card_metadata(s, tags, evals.get("trained"))
    base = m.name_or_path + (f" (file `{m.gguf_file}`)" if m.gguf_file else "") + (f" @ `{m.revision}`" if m.revision else "")
    data = f"`{d.path}`" + (f" config `{d.name}`" if d.name and _hub_id(d.path) else "") + f", split `{d.split}`"
    data += f", revision `{d.revision}`" if d.revision else ", revision not pinned"
    metrics = final_metrics(ctx)
    lines = [
        "---", card_data.to_yaml(), "---", "",
        f"# {s.hub.repo_id.split('/')[1]}", "",
        f"A LoRA fine-tuned with GRPO (reinforcement learning with group-relative advantages) by "
        f"[grpo-job](https://github.com/) run `{ctx.run_id}`, merged into its base model, with GGUF files for llama.cpp.",
        "", "## Training", "",
        "| | |", "|---|---|",
        f"| base model | {base} |",
        f"| dataset | {data} (task `{d.task}`{f', {d.max_samples} rows' if d.max_samples else ''}) |",
        "| rewards (weight) | " + ", ".join(f"`{k}` ({rewards.weight(v):g})" for k, v in s.rewards.items()) + " |",
        f"| engine | {train.get('engine', m.engine)} |",
        f"| training steps | {train.get('steps', 'n/a')} of max_steps {t.max_steps} |",
        f"| LoRA | r={lora.r}, alpha={lora.lora_alpha}, dropout={lora.lora_dropout}, "
        f"targets {', '.join(lora.target_modules)} |",
        f"| optimizer | {t.optim}, lr {t.learning_rate:g} ({t.lr_scheduler_type}, warmup {t.warmup_steps:g}), "
        f"weight decay {t.weight_decay:g}, max grad norm {t.max_grad_norm:g} |",
        f"| GRPO | {t.num_generations} generations per prompt, batch {t.per_device_train_batch_size}"
        f"x{t.gradient_accumulation_steps}, loss `{t.loss_type}`, beta {t.beta:g}, temperature {t.temperature:g}, "
        f"prompt <= {t.max_prompt_length} / completion <= {t.max_completion_length} tokens |",
        f"| seed | {t.seed} |",
        "", "### Final reward metrics", "",
    ]
    if metrics:
        lines += ["| metric | value |", "|---|---|"] + [f"| `{k}` | {v:.4g} |" for k, v in metrics.items()]
    else:
        lines.append("No reward metrics were recorded.")
    lines += evaluation_table(evals)
    ggufs = [f for f in repo_files if f.endswith(".gguf")]
    lines += ["", "## Files", "",
              "- merged 16-bit model (safetensors) with tokenizer and chat template at the repo root" if s.export.merge
              else "- no merged model (export.merge=false)"]
    if s.hub.include_adapter:
        lines.append("- `adapter/`: the LoRA adapter alone, for the base model with peft")
    for f in ggufs:
        lines.append(f"- `{f}`")
    if verify is not None:
        lines += ["", "### GGUF check", "",
                  f"Each GGUF was loaded by llama.cpp (llama-cpp-python) and continued {len(verify['prompts'])} fixed "
                  f"prompts greedily for up to {verify['new_tokens']} tokens:", "",
                  "| file | tokenizer matches transformers | greedy output equals the merged model's |",
                  "|---|---|---|"]
        for q, res in verify["files"].items():
            tok_ok = all(r["tokenization_match"] for r in res.get("results", [])) and bool(res.get("results"))
            greedy = {"exact": "yes, identical", "near-tie": "yes, up to near-ties (top-2 logits within "
                      f"{verify.get('tie_margins', {}).get(q, '?')})", "no": "no",
                      None: "not required for this type"}.get(res.get("greedy_match"), "n/a")
            lines.append(f"| `{gguf_filename(s, q)}` | {'yes' if tok_ok else 'no'} | {greedy} |")
    lines += ["", "## Use", "", "With transformers (merged model):", "", "```python",
              "from transformers import AutoModelForCausalLM, AutoTokenizer",
              f'tok = AutoTokenizer.from_pretrained("{s.hub.repo_id}")',
              f'model = AutoModelForCausalLM.from_pretrained("{s.hub.repo_id}")', "```"]
    if ggufs:
        g = ggufs[0]
        quant = g.rsplit("-", 1)[1].removesuffix(".gguf")
        lines += ["", "With llama.cpp:", "", "```bash",
                  f"llama-cli -hf {s.hub.repo_id}:{quant}    # or: huggingface-cli download {s.hub.repo_id} {g}",
                  f"llama-cli -m {g} -cnv" + (f' -p "{sp.splitlines()[0]}"' if (sp := s.data.system_prompt) else ""),
                  "```", "", "With Ollama: `ollama run hf.co/" + f"{s.hub.repo_id}:{quant}`"]
        if sp:
            lines += ["", "The model was trained with this system prompt; use it for the trained answer format:", "",
                      "```", sp, "```"]
    return "\n".join(lines) + "\n"
