"""Render and check the training Job that .github/workflows/train.yml applies.

    render_job.py write --overlay k8s/overlays/example --image ghcr.io/o/grpo-job:v1 --job-name grpo-42 \
        --out DIR [--set GRPO_TRAIN__MAX_STEPS=100 ...]
    kubectl kustomize DIR > job.yaml
    render_job.py check job.yaml

`write` makes a kustomize overlay on top of an existing one: it renames the Job (the name is the run id),
sets the container image and merges GRPO_* settings into the ConfigMap. Values reach kustomize only
through a YAML dump, never through a shell or a template, so a workflow input cannot inject anything.
`check` reads the rendered manifests and loads the train container's settings exactly as the pod
will see them (ConfigMap + env, GRPO_RUN_ID = the Job name) through grpo_job.settings.load_settings, so
a typo or a bad value fails here with the job's own message and exit code 2, before the cluster is
touched. Needs only pydantic, pydantic-settings and pyyaml.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CONTAINER = "train"
# A Job name becomes the pods' job-name label value: a DNS label of at most 63 characters.
_JOB_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_IMAGE = re.compile(r"^[a-z0-9][a-z0-9._\-/:]*[a-z0-9](:[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127})?(@sha256:[a-f0-9]{64})?$")
_SETTING = re.compile(r"^GRPO_[A-Z0-9_]+$")


def fail(msg: str, code: int = 2) -> None:
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(code)


def write(overlay: Path, image: str, job_name: str, out: Path, sets: list[str]) -> Path:
    """Write out/kustomization.yaml; return its path."""
    if not (overlay / "kustomization.yaml").is_file():
        fail(f"{overlay} has no kustomization.yaml: pass --overlay k8s/overlays/<name>")
    if not _JOB_NAME.match(job_name):
        fail(f"job name {job_name!r} is not a DNS label (lowercase letters, digits, '-', at most 63 characters)")
    if not _IMAGE.match(image):
        fail(f"image {image!r} is not an image reference like ghcr.io/owner/grpo-job:TAG")
    literals = []
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not _SETTING.match(key):
            # the value is not shown: a secret pasted in the wrong place must not reach the log
            fail(f"--set {key!r}: write GRPO_SECTION__FIELD=value (secrets go in the grpo-job-secrets Secret)")
        if value == "":
            continue  # an empty workflow input keeps the overlay's value
        if "\n" in value:
            fail(f"--set {key}: the value has a line break")
        literals.append(f"{key}={value}")
    out.mkdir(parents=True, exist_ok=True)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(overlay.resolve(), out.resolve())],
        "patches": [
            {
                "target": {"group": "batch", "version": "v1", "kind": "Job"},
                "patch": yaml.safe_dump(
                    [
                        {"op": "replace", "path": "/metadata/name", "value": job_name},
                        {"op": "test", "path": "/spec/template/spec/containers/0/name", "value": CONTAINER},
                        {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": image},
                    ]
                ),
            }
        ],
    }
    if literals:
        kustomization["configMapGenerator"] = [{"name": "grpo-job-settings", "behavior": "merge", "literals": literals}]
    path = out / "kustomization.yaml"
    path.write_text(yaml.safe_dump(kustomization, sort_keys=False))
    return path


def pod_env(docs: list[dict]) -> tuple[dict, dict[str, str]]:
    """The rendered Job and the non-secret environment its train container gets."""
    jobs = [d for d in docs if d.get("kind") == "Job"]
    if len(jobs) != 1:
        fail(f"expected exactly one Job in the rendered manifests, found {len(jobs)}")
    job = jobs[0]
    containers = {c["name"]: c for c in job["spec"]["template"]["spec"]["containers"]}
    if CONTAINER not in containers:
        fail(f"the Job has no container named {CONTAINER!r} (the podFailurePolicy refers to it)")
    container = containers[CONTAINER]
    config_maps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d.get("kind") == "ConfigMap"}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        if ref:
            if ref["name"] not in config_maps:
                fail(f"envFrom names ConfigMap {ref['name']!r}, which is not in the rendered manifests")
            env.update({k: str(v) for k, v in config_maps[ref["name"]].items()})
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
        elif var.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == (
            "metadata.labels['batch.kubernetes.io/job-name']"
        ):
            env[var["name"]] = job["metadata"]["name"]
    return job, env


def check(rendered: Path) -> dict:
    """Load the train container's settings as the pod will; exit 2 with the job's message if invalid."""
    docs = [d for d in yaml.safe_load_all(rendered.read_text()) if d]
    job, env = pod_env(docs)
    name = job["metadata"]["name"]
    if not _JOB_NAME.match(name):
        fail(f"job name {name!r} is not a DNS label of at most 63 characters")
    if env.get("GRPO_RUN_ID") != name:
        fail("GRPO_RUN_ID must come from the Job's name (the batch.kubernetes.io/job-name label)")
    sys.path.insert(0, str(ROOT))
    from grpo_job.errors import SettingsError
    from grpo_job.settings import load_settings

    saved = dict(os.environ)
    try:
        for k in [k for k in os.environ if k.startswith("GRPO_")]:
            del os.environ[k]
        os.environ.update(env)
        settings = load_settings()
    except SettingsError as e:
        fail(f"the rendered Job's settings are invalid:\n{e}")
    finally:
        os.environ.clear()
        os.environ.update(saved)
    image = {c["name"]: c for c in job["spec"]["template"]["spec"]["containers"]}[CONTAINER]["image"]
    summary = {
        "job": name,
        "image": image,
        "run_id": settings.resolved_run_id(),
        "settings": {k: v for k, v in sorted(env.items()) if k.startswith("GRPO_")},
    }
    print(yaml.safe_dump(summary, sort_keys=False), end="")
    if os.environ.get("GITHUB_OUTPUT"):
        with open(os.environ["GITHUB_OUTPUT"], "a") as f:
            f.write(f"job_name={name}\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write", help="write a kustomize overlay for one run")
    w.add_argument("--overlay", type=Path, required=True)
    w.add_argument("--image", required=True)
    w.add_argument("--job-name", required=True)
    w.add_argument("--out", type=Path, required=True)
    w.add_argument("--set", action="append", default=[], dest="sets", metavar="GRPO_KEY=VALUE")
    c = sub.add_parser("check", help="check the rendered manifests (kubectl kustomize output)")
    c.add_argument("rendered", type=Path)
    args = p.parse_args(argv)
    if args.command == "write":
        print(write(args.overlay, args.image, args.job_name, args.out, args.sets))
    else:
        check(args.rendered)
    return 0


if __name__ == "__main__":
    sys.exit(main())
