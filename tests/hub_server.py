"""A small Hugging Face Hub-compatible HTTP server for tests (127.0.0.1 only, in memory).

It implements only what ``huggingface_hub`` 2.x calls to create a repo, make a branch,
commit files (regular upload mode: files travel base64 in the commit's ndjson, so no
LFS or Xet is needed) and download them (repo info, tree listing, HEAD/GET ``resolve``):

    POST /api/repos/create                               create a model repo (409 if it exists)
    GET  /api/models/ORG/NAME[/revision/REV]             repo info: sha + siblings
    GET  /api/models/ORG/NAME/tree/REV[/PATH]            file listing (one page)
    POST /api/models/ORG/NAME/branch/BRANCH              create a branch (409 if it exists)
    POST /api/models/ORG/NAME/preupload/REV              upload mode per file: always "regular"
    POST /api/models/ORG/NAME/commit/REV                 ndjson commit (header + base64 files)
    HEAD/GET /ORG/NAME/resolve/REV/PATH                  file bytes, ETag, X-Repo-Commit
    POST /api/validate-yaml                              the card's YAML front matter must parse
    GET  /api/agent-harnesses                            an empty registry (the client asks once)

Errors carry the ``X-Error-Code`` header the client maps to its exceptions
(``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``). Writes need a bearer token.
Fault injection: ``server.hub.interrupt`` names files whose download is cut off midway
(the connection is closed after half the bytes); ``server.hub.broken_repos`` names repositories
whose creation answers HTTP 500; ``server.hub.requests`` logs every call.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


def git_blob_sha1(data: bytes) -> str:
    """The oid git gives a file's content (what the Hub reports for regular files)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, commit: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.commit = status, message, code, commit


@dataclass
class Repo:
    repo_id: str
    private: bool = False
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # oid -> full file tree
    branches: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> str:
        if revision in self.branches:
            return self.branches[revision]
        if COMMIT_RE.match(revision) and revision in self.commits:
            return revision
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")


class HubState:
    """The server's repositories plus test knobs."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.interrupt: set[str] = set()  # file paths whose GET is cut off halfway
        self.broken_repos: set[str] = set()  # repo ids whose creation fails (a Hub outage mid-way)
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self._counter = itertools.count()

    def new_commit(self, repo: Repo, parent: str | None, files: dict[str, bytes], message: str) -> str:
        seed = f"{repo.repo_id}|{parent}|{message}|{next(self._counter)}".encode()
        oid = hashlib.sha1(seed + b"".join(git_blob_sha1(v).encode() for v in files.values())).hexdigest()
        repo.commits[oid] = files
        return oid

    def repo(self, repo_id: str, authorized: bool) -> Repo:
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and not authorized):
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    # -- direct manipulation, for tests that fake a tampered or broken Hub ---------------
    def replace_file(self, repo_id: str, path: str, data: bytes | None, branch: str = "main") -> str:
        """Commit a changed (or, with ``data=None``, deleted) file as if someone pushed it."""
        with self.lock:
            repo = self.repos[repo_id]
            files = dict(repo.commits[repo.branches[branch]])
            if data is None:
                files.pop(path, None)
            else:
                files[path] = data
            oid = self.new_commit(repo, repo.branches[branch], files, f"replace {path}")
            repo.branches[branch] = oid
            return oid


class HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "HubServer"

    def log_message(self, format, *args):  # keep pytest output clean
        pass

    # -- plumbing ------------------------------------------------------------------------
    @property
    def hub(self) -> HubState:
        return self.server.hub

    @property
    def authorized(self) -> bool:
        return self.headers.get("Authorization", "").startswith("Bearer ")

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json", head: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, status: int, obj, head: bool = False) -> None:
        self._send(status, json.dumps(obj).encode(), head=head)

    def _error(self, err: HubError, head: bool = False) -> None:
        headers = {"X-Error-Message": err.message}
        if err.code:
            headers["X-Error-Code"] = err.code
        if err.commit:
            headers["X-Repo-Commit"] = err.commit
        self._send(err.status, json.dumps({"error": err.message}).encode(), headers, head=head)

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.split("/")[1:]]
        query = parse_qs(url.query)
        self.hub.requests.append((method, url.path))
        body = self._body() if method == "POST" else b""
        try:
            with self.hub.lock:
                self._route(method, parts, query, body)
        except HubError as err:
            self._error(err, head=method == "HEAD")

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    # -- routes --------------------------------------------------------------------------
    def _route(self, method: str, parts: list[str], query: dict, body: bytes) -> None:
        head = method == "HEAD"
        if parts[:2] == ["api", "agent-harnesses"]:
            return self._json(200, {"standardEnvVars": [], "harnesses": {}})
        if parts[:2] == ["api", "validate-yaml"] and method == "POST":
            return self._validate_yaml(json.loads(body))
        if parts[:3] == ["api", "repos", "create"] and method == "POST":
            return self._create_repo(json.loads(body))
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            repo_id, rest = f"{parts[2]}/{parts[3]}", parts[4:]
            if method == "GET" and not rest:
                return self._info(repo_id, "main")
            if method == "GET" and rest[0] == "revision" and len(rest) == 2:
                return self._info(repo_id, rest[1])
            if method == "GET" and rest[0] == "tree" and len(rest) >= 2:
                return self._tree(repo_id, rest[1], "/".join(rest[2:]))
            if method == "POST" and rest[0] == "branch" and len(rest) == 2:
                return self._create_branch(repo_id, rest[1], json.loads(body or b"{}"))
            if method == "POST" and rest[0] == "preupload" and len(rest) == 2:
                return self._preupload(repo_id, rest[1], json.loads(body))
            if method == "POST" and rest[0] == "commit" and len(rest) == 2:
                return self._commit(repo_id, rest[1], body)
        if len(parts) >= 5 and parts[2] == "resolve" and method in ("GET", "HEAD"):
            return self._resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]), head)
        raise HubError(404, f"no route for {method} {self.path}")

    def _validate_yaml(self, payload: dict) -> None:
        match = re.match(r"^---\s*\n(.*?)\n---\s*\n", payload.get("content", ""), re.DOTALL)
        try:
            meta = yaml.safe_load(match.group(1)) if match else {}
        except yaml.YAMLError as exc:
            return self._json(400, {"errors": [{"message": f"invalid YAML: {exc}"}], "warnings": []})
        if not isinstance(meta, dict):
            return self._json(400, {"errors": [{"message": "metadata must be a mapping"}], "warnings": []})
        return self._json(200, {"errors": [], "warnings": []})

    def _create_repo(self, payload: dict) -> None:
        if not self.authorized:
            raise HubError(401, "Invalid credentials in Authorization header")
        repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        if repo_id in self.hub.broken_repos:
            raise HubError(500, "Internal Error - We're working hard to fix this as soon as possible!")
        base = f"http://{self.headers['Host']}"
        if repo_id in self.hub.repos:  # the Hub's 409 still carries the url; exist_ok relies on it
            return self._send(409, json.dumps({"error": "You already created this model repo",
                                               "url": f"{base}/{repo_id}"}).encode(),
                              {"X-Error-Message": "You already created this model repo"})
        repo = Repo(repo_id, private=payload.get("visibility") == "private" or bool(payload.get("private")))
        # Like the Hub: a new repo has one commit holding .gitattributes.
        repo.branches["main"] = self.hub.new_commit(repo, None, {".gitattributes": b"*.safetensors filter=lfs\n"},
                                                    "initial commit")
        self.hub.repos[repo_id] = repo
        self._json(200, {"url": f"{base}/{repo_id}", "name": repo_id, "id": repo_id})

    def _info(self, repo_id: str, revision: str) -> None:
        repo = self.hub.repo(repo_id, self.authorized)
        oid = repo.resolve(revision)
        files = repo.commits[oid]
        self._json(200, {"id": repo_id, "modelId": repo_id, "sha": oid, "private": repo.private,
                         "tags": [], "siblings": [{"rfilename": p, "size": len(d), "blobId": git_blob_sha1(d)}
                                                  for p, d in sorted(files.items())]})

    def _tree(self, repo_id: str, revision: str, prefix: str) -> None:
        repo = self.hub.repo(repo_id, self.authorized)
        files = repo.commits[repo.resolve(revision)]
        prefix = prefix.strip("/")
        listed = {p: d for p, d in files.items() if not prefix or p.startswith(prefix + "/")}
        folders = sorted({"/".join(p.split("/")[:i]) for p in listed for i in range(1, p.count("/") + 1)})
        entries = [{"type": "directory", "oid": hashlib.sha1(f.encode()).hexdigest(), "size": 0, "path": f}
                   for f in folders if not prefix or f.startswith(prefix + "/")]
        entries += [{"type": "file", "oid": git_blob_sha1(d), "size": len(d), "path": p}
                    for p, d in sorted(listed.items())]
        self._json(200, entries)

    def _create_branch(self, repo_id: str, branch: str, payload: dict) -> None:
        if not self.authorized:
            raise HubError(401, "Invalid credentials in Authorization header")
        repo = self.hub.repo(repo_id, True)
        if branch in repo.branches:
            raise HubError(409, f"Reference {branch} already exists")
        repo.branches[branch] = repo.resolve(payload.get("startingPoint") or "main")
        self._json(200, {})

    def _preupload(self, repo_id: str, revision: str, payload: dict) -> None:
        if not self.authorized:
            raise HubError(401, "Invalid credentials in Authorization header")
        repo = self.hub.repo(repo_id, True)
        current = repo.commits[repo.resolve(revision)]
        self._json(200, {"files": [
            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
             "oid": git_blob_sha1(current[f["path"]]) if f["path"] in current else None}
            for f in payload["files"]]})

    def _commit(self, repo_id: str, revision: str, body: bytes) -> None:
        if not self.authorized:
            raise HubError(401, "Invalid credentials in Authorization header")
        repo = self.hub.repo(repo_id, True)
        if revision not in repo.branches:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        files = dict(repo.commits[repo.branches[revision]])
        message = ""
        for line in body.splitlines():
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                message = value.get("summary", "")
            elif key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                files.pop(value["path"], None)
            else:  # lfsFile, copies, folder deletions: never asked for, since preupload says "regular"
                raise HubError(400, f"unsupported commit operation {key!r}")
        oid = self.hub.new_commit(repo, repo.branches[revision], files, message)
        repo.branches[revision] = oid
        base = f"http://{self.headers['Host']}"
        self._json(200, {"commitUrl": f"{base}/{repo_id}/commit/{oid}", "commitOid": oid,
                         "pullRequestUrl": None})

    def _resolve(self, repo_id: str, revision: str, path: str, head: bool) -> None:
        repo = self.hub.repo(repo_id, self.authorized)
        oid = repo.resolve(revision)
        files = repo.commits[oid]
        if path not in files:
            raise HubError(404, "Entry not found", "EntryNotFound", commit=oid)
        data = files[path]
        headers = {"ETag": f'"{git_blob_sha1(data)}"', "X-Repo-Commit": oid, "Accept-Ranges": "bytes"}
        if head or path not in self.hub.interrupt:
            return self._send(200, data, headers, content_type="application/octet-stream", head=head)
        # A dropped connection: the full length is promised, half is sent, then the socket closes.
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        self.close_connection = True


class HubServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), HubHandler)
        self.hub = HubState()
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "HubServer":
        self._thread = threading.Thread(target=self.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
