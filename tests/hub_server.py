"""A stand-in for the Hugging Face Hub on 127.0.0.1 that stores what the real `huggingface_hub` client sends.

It speaks the part of the Hub's HTTP API that creating a repo, committing (preupload, LFS batch + basic
PUT transfer, ndjson commit), listing (repo info, tree, commits) and downloading (resolve) use, with
the client's Xet path turned off (HF_HUB_DISABLE_XET=1). Git itself is not emulated: a commit is a
parent id plus a map of path -> blob; blob ids are git's SHA-1 of the blob (of the LFS pointer for
LFS files), so the client's "file unchanged" checks see what they would on the Hub.

Faults for restart tests: `fail_lfs_uploads_after=N` answers the (N+1)-th and later LFS uploads with
403 (the client does not retry 4xx), `fail_commits=N` answers the next N commits with 500.
Who the token is: `whoami` is what `/api/whoami-v2` answers (the Hub's shape: name, orgs with
`roleInOrg`, auth.accessToken.role `read`/`write`/`fineGrained` with `fineGrained.scoped` permissions);
with `read_only` the Hub refuses every write (create repo, preupload, commit) with 403, as it does a
read token.
Every request must carry `Authorization: Bearer <token>`, except LFS uploads, which go to the signed URL
the batch endpoint hands out (as the Hub's S3 URLs). The server stops itself after `lifetime` s.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

LFS_SUFFIXES = (".safetensors", ".gguf", ".bin", ".pt", ".pth", ".model")
LFS_MIN_SIZE = 10 * 1024 * 1024
GITATTRIBUTES = "".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n" for s in LFS_SUFFIXES).encode()


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass
class Blob:
    size: int
    blob_id: str  # git SHA-1 of the content, or of the LFS pointer for LFS files
    sha256: str | None = None  # LFS files only
    content: bytes | None = None  # regular files only


@dataclass
class Commit:
    id: str
    parent: str | None
    title: str
    message: str
    date: str
    files: dict[str, Blob]


@dataclass
class Repo:
    private: bool
    gated: bool = False  # gated and the token's account has not accepted the conditions: reads answer 403
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)


class HubState:
    def __init__(self, root: Path, token: str):
        self.root = Path(root)
        (self.root / "lfs").mkdir(parents=True, exist_ok=True)
        self.token = token
        self.signature = uuid.uuid4().hex
        self.repos: dict[str, Repo] = {}
        self.lock = threading.Lock()
        self.fail_lfs_uploads_after: int | None = None
        self.fail_commits = 0
        self.lfs_uploads = 0
        self.requests: list[str] = []
        self.whoami: dict = {"type": "user", "name": "tester", "orgs": [],
                             "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}}}
        self.read_only = False

    def lfs_path(self, oid: str) -> Path:
        return self.root / "lfs" / oid

    def resolve(self, repo: Repo, rev: str) -> Commit | None:
        cid = repo.branches.get(rev, rev)
        return repo.commits.get(cid)

    def add_commit(self, repo: Repo, branch: str, title: str, message: str, files: dict[str, Blob]) -> Commit:
        parent = repo.branches.get(branch)
        commit = Commit(id=hashlib.sha1(uuid.uuid4().bytes).hexdigest(), parent=parent, title=title, message=message,
                        date=time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()), files=files)
        repo.commits[commit.id] = commit
        repo.branches[branch] = commit.id
        return commit

    def history(self, repo: Repo, rev: str) -> list[Commit]:
        out, commit = [], self.resolve(repo, rev)
        while commit is not None:
            out.append(commit)
            commit = repo.commits.get(commit.parent) if commit.parent else None
        return out


_REPO = r"(?P<repo>[^/]+/[^/]+)"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: HubState  # set on the subclass made by HubServer
    base_url: str

    def log_message(self, format, *args):  # quiet: the test output stays readable
        pass

    # ------------------------------------------------------------ plumbing
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, payload: object = None, headers: dict[str, str] | None = None,
              raw: bytes | None = None, head: bool = False) -> None:
        body = raw if raw is not None else (json.dumps(payload).encode() if payload is not None else b"")
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if raw is None else "application/octet-stream")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _error(self, status: int, message: str, code: str | None = None) -> None:
        # X-Error-Code is what huggingface_hub reads to raise RepositoryNotFoundError, RevisionNotFoundError...
        headers = {"X-Error-Message": message, **({"X-Error-Code": code} if code else {})}
        self._send(status, {"error": message}, headers=headers)

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") == f"Bearer {self.state.token}":
            return True
        self._error(401, "Invalid credentials in Authorization header")
        return False

    def _route(self, method: str) -> None:
        url = urlsplit(self.path)
        self.state.requests.append(f"{method} {url.path}")
        query = parse_qs(url.query)
        body = self._body() if method in ("POST", "PUT") else b""
        # LFS uploads go to the pre-signed URL the batch answer gave (as S3's are): no token, a signature
        if url.path.startswith("/lfs-upload/"):
            if query.get("sig", [""])[0] != self.state.signature:
                return self._error(403, "bad upload signature")
        elif not self._authorized():
            return
        if self.state.read_only and method == "POST" and url.path != "/api/validate-yaml":
            return self._error(403, "You don't have the rights to create a model under this namespace")
        for m, pattern, fn in ROUTES:
            if m == method or (m == "GET" and method == "HEAD"):
                match = re.fullmatch(pattern, url.path)
                if match:
                    args = {k: unquote(v) if v is not None else None for k, v in match.groupdict().items()}
                    with self.state.lock:
                        return fn(self, body=body, query=query, head=method == "HEAD", **args)
        self._error(404, f"no route for {method} {url.path}")

    def do_GET(self):
        self._route("GET")

    def do_HEAD(self):
        self._route("HEAD")

    def do_POST(self):
        self._route("POST")

    def do_PUT(self):
        self._route("PUT")

    def _repo(self, repo: str) -> Repo | None:
        r = self.state.repos.get(repo)
        if r is None:
            self._error(404, f"Repository not found: {repo}", "RepoNotFound")
        return r

    def _commit(self, repo: Repo, rev: str) -> Commit | None:
        c = self.state.resolve(repo, rev)
        if c is None:
            self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return c

    # ------------------------------------------------------------ endpoints
    def whoami(self, head=False, **_):
        self._send(200, self.state.whoami, head=head)

    def create_repo(self, body, **_):
        req = json.loads(body)
        repo_id = f"{req['organization']}/{req['name']}"
        if repo_id in self.state.repos:
            # the Hub's 409 carries the repo's url, which create_repo(exist_ok=True) returns
            return self._send(409, {"error": "You already created this model repo", "url": f"{self.base_url}/{repo_id}"},
                              headers={"X-Error-Message": "You already created this model repo"})
        repo = Repo(private=req.get("visibility", "public") != "public" or bool(req.get("private")))
        self.state.repos[repo_id] = repo
        attrs = Blob(size=len(GITATTRIBUTES), blob_id=git_blob_id(GITATTRIBUTES), content=GITATTRIBUTES)
        self.state.add_commit(repo, "main", "initial commit", "", {".gitattributes": attrs})
        self._send(200, {"url": f"{self.base_url}/{repo_id}", "name": repo_id})

    def repo_info(self, repo, rev=None, head=False, **_):
        r = self._repo(repo)
        c = r and self._commit(r, rev or "main")
        if c:
            self._send(200, {"id": repo, "sha": c.id, "private": r.private, "lastModified": c.date,
                             "siblings": [{"rfilename": p} for p in sorted(c.files)]}, head=head)

    def dataset_info(self, repo, rev=None, head=False, **_):
        self.repo_info(f"datasets/{repo}", rev, head)

    def auth_check(self, kind, repo, head=False, **_):
        r = self._repo(repo if kind == "models" else f"datasets/{repo}")
        if r is not None and r.gated:
            return self._error(403, f"Access to {repo} is restricted: you must accept its conditions", "GatedRepo")
        if r is not None:
            self._send(200, {}, head=head)

    def validate_yaml(self, body, **_):
        content = json.loads(body)["content"]
        if content.startswith("---\n"):
            try:
                yaml.safe_load(content[4:content.index("\n---", 4)])
            except (ValueError, yaml.YAMLError) as e:
                return self._error(400, f"invalid model card metadata: {e}")
        self._send(200, {"warnings": []})

    def preupload(self, body, repo, rev, **_):
        r = self._repo(repo)
        c = r and self._commit(r, rev)
        if not c:
            return
        files = []
        for f in json.loads(body)["files"]:
            lfs = f["path"].endswith(LFS_SUFFIXES) or f["size"] >= LFS_MIN_SIZE
            existing = c.files.get(f["path"])
            oid = None if existing is None else (existing.sha256 if existing.sha256 else existing.blob_id)
            files.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                          "oid": oid})
        self._send(200, {"files": files})

    def lfs_batch(self, body, repo, **_):
        if not self._repo(repo):
            return
        objects = []
        for obj in json.loads(body)["objects"]:
            stored = self.state.lfs_path(obj["oid"])
            entry = {"oid": obj["oid"], "size": obj["size"]}
            if not (stored.is_file() and stored.stat().st_size == obj["size"]):  # already there: nothing to do
                href = f"{self.base_url}/lfs-upload/{obj['oid']}/{obj['size']}?sig={self.state.signature}"
                entry["actions"] = {"upload": {"href": href}}
            objects.append(entry)
        self._send(200, {"transfer": "basic", "objects": objects})

    def lfs_upload(self, body, oid, size, **_):
        st = self.state
        if st.fail_lfs_uploads_after is not None and st.lfs_uploads >= st.fail_lfs_uploads_after:
            return self._error(403, "upload refused (fault injected by the test)")
        if len(body) != int(size) or hashlib.sha256(body).hexdigest() != oid:
            return self._error(400, "uploaded content does not match the announced oid/size")
        tmp = st.lfs_path(oid).with_suffix(".partial")
        tmp.write_bytes(body)
        tmp.replace(st.lfs_path(oid))
        st.lfs_uploads += 1
        self._send(200, {})

    def commit(self, body, repo, rev, **_):
        r = self._repo(repo)
        c = r and self._commit(r, rev)
        if not c:
            return
        if self.state.fail_commits > 0:
            self.state.fail_commits -= 1
            return self._error(500, "commit failed (fault injected by the test)")
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        header = next(x["value"] for x in lines if x["key"] == "header")
        if header.get("parentCommit") and header["parentCommit"] != c.id:
            return self._error(412, "parent commit is not the head of the branch")
        files = dict(c.files)
        for item in lines:
            v = item["value"]
            if item["key"] == "file":
                data = base64.b64decode(v["content"])
                files[v["path"]] = Blob(size=len(data), blob_id=git_blob_id(data), content=data)
            elif item["key"] == "lfsFile":
                stored = self.state.lfs_path(v["oid"])
                if not stored.is_file() or stored.stat().st_size != v["size"]:
                    return self._error(422, f"LFS object {v['oid']} of {v['path']} was never uploaded")
                files[v["path"]] = Blob(size=v["size"], blob_id=git_blob_id(lfs_pointer(v["oid"], v["size"])),
                                        sha256=v["oid"])
            elif item["key"] == "deletedFile":
                files.pop(v["path"], None)
        new = self.state.add_commit(r, rev, header["summary"], header.get("description", ""), files)
        self._send(200, {"commitUrl": f"{self.base_url}/{repo}/commit/{new.id}", "commitOid": new.id,
                         "success": True})

    def create_branch(self, body, repo, branch, **_):
        r = self._repo(repo)
        if not r:
            return
        if branch in r.branches:
            return self._error(409, f"Reference already exists: {branch}")
        r.branches[branch] = r.branches["main"]
        self._send(200, {})

    def tree(self, repo, rev, path=None, query=None, head=False, **_):
        r = self._repo(repo)
        c = r and self._commit(r, rev)
        if not c:
            return
        prefix = (path.strip("/") + "/") if path else ""
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        entries, folders = [], set()
        for p, blob in sorted(c.files.items()):
            if not p.startswith(prefix):
                continue
            rest = p[len(prefix):]
            if "/" in rest:
                parts = rest.split("/")
                for depth in range(1, len(parts) if recursive else 2):
                    folders.add(prefix + "/".join(parts[:depth]))
                if not recursive:
                    continue
            entry = {"type": "file", "oid": blob.blob_id, "size": blob.size, "path": p}
            if blob.sha256:
                entry["lfs"] = {"oid": blob.sha256, "size": blob.size,
                                "pointerSize": len(lfs_pointer(blob.sha256, blob.size))}
            entries.append(entry)
        entries += [{"type": "directory", "oid": hashlib.sha1(f.encode()).hexdigest(), "size": 0, "path": f}
                    for f in sorted(folders)]
        self._send(200, entries, head=head)

    def commits(self, repo, rev, head=False, **_):
        r = self._repo(repo)
        if r and self._commit(r, rev):
            self._send(200, [{"id": c.id, "title": c.title, "message": c.message, "date": c.date,
                              "authors": [{"user": "grpo-job-test"}]} for c in self.state.history(r, rev)],
                       head=head)

    def resolve_file(self, repo, rev, path, head=False, **_):
        r = self._repo(repo)
        c = r and self._commit(r, rev)
        if not c:
            return
        blob = c.files.get(path)
        if blob is None:
            return self._send(404, {"error": "Entry not found"}, headers={"X-Error-Code": "EntryNotFound",
                                                                          "X-Repo-Commit": c.id})
        data = blob.content if blob.content is not None else (b"" if head else
                                                              self.state.lfs_path(blob.sha256).read_bytes())
        headers = {"X-Repo-Commit": c.id, "ETag": f'"{blob.sha256 or blob.blob_id}"'}
        if head:  # the size without reading a large file
            headers["X-Linked-Size"] = str(blob.size)
        self._send(200, headers=headers, raw=data, head=head)


ROUTES = [
    ("GET", r"/api/whoami-v2", Handler.whoami),
    ("POST", r"/api/repos/create", Handler.create_repo),
    ("POST", r"/api/validate-yaml", Handler.validate_yaml),
    ("GET", rf"/api/models/{_REPO}(?:/revision/(?P<rev>[^/]+))?", Handler.repo_info),
    ("GET", rf"/api/datasets/{_REPO}(?:/revision/(?P<rev>[^/]+))?", Handler.dataset_info),
    ("GET", rf"/api/(?P<kind>models|datasets)/{_REPO}/auth-check", Handler.auth_check),
    ("POST", rf"/api/models/{_REPO}/preupload/(?P<rev>[^/]+)", Handler.preupload),
    ("POST", rf"/api/models/{_REPO}/commit/(?P<rev>[^/]+)", Handler.commit),
    ("POST", rf"/api/models/{_REPO}/branch/(?P<branch>[^/]+)", Handler.create_branch),
    ("GET", rf"/api/models/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?", Handler.tree),
    ("GET", rf"/api/models/{_REPO}/commits/(?P<rev>[^/]+)", Handler.commits),
    ("POST", rf"/{_REPO}\.git/info/lfs/objects/batch", Handler.lfs_batch),
    ("PUT", r"/lfs-upload/(?P<oid>[0-9a-f]{64})/(?P<size>\d+)", Handler.lfs_upload),
    ("GET", rf"/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", Handler.resolve_file),
]


class HubServer:
    """`with HubServer(tmp_path, token) as hub:` serves on hub.url until the block ends (or `lifetime`)."""

    def __init__(self, root: Path, token: str, lifetime: float = 900.0):
        self.state = HubState(root, token)
        handler = type("BoundHandler", (Handler,), {"state": self.state})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        handler.base_url = self.url
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._timer = threading.Timer(lifetime, self.httpd.shutdown)
        self._timer.daemon = True

    def __enter__(self) -> HubServer:
        self._thread.start()
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=10)

    def add_repo(self, repo_id: str, repo_type: str = "model", gated: bool = False) -> None:
        """A repo with one commit on main (datasets are kept under `datasets/<id>`, apart from models)."""
        repo = Repo(private=False, gated=gated)
        self.state.repos[repo_id if repo_type == "model" else f"datasets/{repo_id}"] = repo
        self.state.add_commit(repo, "main", "initial commit", "", {})

    def commit_titles(self, repo_id: str, branch: str = "main") -> list[str]:
        repo = self.state.repos[repo_id]
        return [c.title for c in self.state.history(repo, branch)]
