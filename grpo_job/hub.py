"""What the Hugging Face Hub says about the repos a run will read, asked before the first GPU minute.

A model or dataset named by a Hub id is downloaded by the run's first stages. A typo, a private repo the
token cannot read, a gated model whose conditions were not accepted or a revision that does not exist
then fails after the image was pulled and a GPU was allocated, as exit 1 (which Kubernetes retries).
`read_problem` asks the Hub first (`HfApi.auth_check`, `HfApi.repo_info` for a revision), with a time
limit, and words a problem for `check` and `run` (exit 2). When the Hub cannot be asked (offline,
unreachable, slow) it returns a note instead, unless the run could not load the model either: offline
with the model not in the local Hub cache.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

ASK_TIMEOUT = 15  # seconds: `check` never waits longer on one question to the Hub


def ask(question: Callable[[], Any], name: str, timeout: float = ASK_TIMEOUT) -> tuple[Any, BaseException | None, bool]:
    """(answer, error, timed_out) of `question()` run in a daemon thread for at most `timeout` s: the Hub
    client's own timeouts do not bound DNS or a silently dropped connection."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["answer"] = question()
        except Exception as e:  # returned to the caller, which words it as a problem or a note
            out["error"] = e

    worker = threading.Thread(target=run, name=name, daemon=True)
    worker.start()
    worker.join(timeout)
    return out.get("answer"), out.get("error"), worker.is_alive()


def _cached_model(repo_id: str, revision: str | None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json", revision=revision), str)


def read_problem(repo_id: str, repo_type: str, revision: str | None, token: str | None,
                 setting: str, revision_setting: str) -> tuple[str | None, str | None]:
    """(problem, note) for reading `repo_id` (`repo_type` model or dataset) at `revision` with `token` (None:
    huggingface_hub's own, e.g. HF_TOKEN). `setting` / `revision_setting` name the settings in the message
    (`model.name_or_path`, `model.revision`). A problem when the repo does not exist or the token may not
    read it, is gated without access, the revision does not exist, the token is refused, or (offline) a
    model is not in the local Hub cache; a note when the Hub cannot be asked."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    from grpo_job.settings.provenance import env_var_name

    env = env_var_name(tuple(setting.split(".")))
    if repo_type == "model" and _cached_model(repo_id, revision):
        return None, None  # the run loads it from the local cache whatever the Hub says
    if constants.HF_HUB_OFFLINE:
        if repo_type == "model":
            return (f"{setting}={repo_id}: HF_HUB_OFFLINE is set and the model is not in the local Hub cache "
                    f"({constants.HF_HUB_CACHE}), so the run could not load it; download it there first "
                    f"(`hf download {repo_id}`), unset HF_HUB_OFFLINE, or set {env} to a local folder"), None
        return None, f"{setting}={repo_id} not checked on the Hub: HF_HUB_OFFLINE is set"
    api = HfApi(token=token)

    def question() -> None:
        api.auth_check(repo_id, repo_type=repo_type)
        if revision is not None:
            api.repo_info(repo_id, repo_type=repo_type, revision=revision)

    _, error, timed_out = ask(question, f"hub-read-{repo_type}")
    where = f"the Hub ({constants.ENDPOINT})"
    if timed_out:
        return None, f"{setting}={repo_id} not checked on the Hub: {constants.ENDPOINT} did not answer in {ASK_TIMEOUT} s"
    if isinstance(error, GatedRepoError):
        return (f"{setting}={repo_id} is a gated {repo_type} and the token has no access to it yet: accept its "
                f"conditions at {constants.ENDPOINT}/{'datasets/' if repo_type == 'dataset' else ''}{repo_id} with "
                "the account of HF_TOKEN, and set HF_TOKEN (a read token of that account)"), None
    if isinstance(error, RepositoryNotFoundError):
        return (f"{setting}={repo_id}: no such {repo_type} on {where}, or it is private and the token cannot read "
                f"it; check the name (namespace/name) and set {env}, or set HF_TOKEN to a token that can read it"), None
    if isinstance(error, RevisionNotFoundError):
        return (f"{revision_setting}={revision}: {repo_id} has no such revision (branch, tag or commit) on {where}; "
                f"set {env_var_name(tuple(revision_setting.split('.')))} to one it has, or to null for main"), None
    if isinstance(error, HfHubHTTPError) and error.response is not None and error.response.status_code == 401:
        return ("the Hub does not accept HF_TOKEN (HTTP 401, invalid or expired token), so "
                f"{setting}={repo_id} cannot be downloaded; set HF_TOKEN to a valid token, or unset it for a public "
                f"{repo_type}"), None
    if error is not None:
        return None, (f"{setting}={repo_id} not checked on the Hub: cannot ask {constants.ENDPOINT} "
                      f"({type(error).__name__}: {str(error)[:160]})")
    return None, None
