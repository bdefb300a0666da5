"""A small stand-in for the Hugging Face Hub, on 127.0.0.1, for tests of downloads and uploads.

It answers the requests the real ``huggingface_hub`` client (2.x, httpx based) makes when it is pointed at
it with ``HF_ENDPOINT`` / ``endpoint=``:

- ``HEAD`` / ``GET /{owner}/{name}/resolve/{revision}/{path}``: small files are served directly with an
  ``ETag`` (git-blob-like sha1), ``X-Repo-Commit`` and ``Content-Length``. Weights files (``*.safetensors``,
  ``*.bin``, ``*.pt``) are "LFS" files: the Hub answers ``302`` with ``Location`` on a *second* origin (the
  "CDN", another port, so the client stops following redirects there exactly as it does for the real CDN) and
  carries the metadata on the redirect itself: ``X-Linked-Etag`` (the sha256), ``X-Linked-Size``,
  ``X-Repo-Commit``. Errors carry ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``)
  the way the client classifies them.
- ``GET /blobs/{sha256}`` on the CDN origin, honouring ``Range`` (``206`` + ``Content-Range``), which the
  client uses to resume after a dropped connection.
- ``GET /api/models/{owner}/{name}/tree/{revision}``: the file listing (one page).
- Uploads: ``POST /api/repos/create``, ``/api/validate-yaml``, ``/api/models/{repo}/preupload/{revision}``
  (every file is declared a "regular" upload, so it travels base64 inside the commit; the LFS and Xet
  upload protocols are not emulated) and ``/api/models/{repo}/commit/{revision}`` (ndjson), guarded by a
  bearer token when one is configured.

Failure modes, per file name (:meth:`FakeHub.fail`): ``"404"`` (the file is reported missing),
``"500"`` (every request for it fails), ``"drop"`` (the CDN closes the connection half way through the body,
and never sends the bytes past that point, so resuming cannot finish), ``"drop_once"`` (only the first
transfer is cut; a resumed ``Range`` request then succeeds), ``"corrupt"`` (the CDN sends other bytes than
the advertised sha256). Every request is logged; a request budget bounds any client retry loop.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
FAILURE_MODES = ("404", "500", "drop", "drop_once", "corrupt")


@dataclass
class Commit:
    """One commit of a fake repository: its id and the full file tree at that commit."""

    oid: str
    files: dict[str, bytes]


@dataclass
class Repo:
    """A fake repository: commits in order and branch heads."""

    commits: list[Commit] = field(default_factory=list)
    branches: dict[str, str] = field(default_factory=dict)

    def at(self, revision: str) -> Commit | None:
        oid = self.branches.get(revision, revision)
        return next((c for c in self.commits if c.oid == oid), None)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    """The shared state of the fake Hub and its CDN, and the two servers that expose it.

    Use as a context manager (``with FakeHub() as hub:``) or call :meth:`start` / :meth:`stop`.
    """

    def __init__(self, *, token: str | None = None, max_requests: int = 300) -> None:
        self.token = token
        self.max_requests = max_requests
        self.repos: dict[str, Repo] = {}
        self.failures: dict[str, tuple[str, int | None]] = {}
        self.requests: list[tuple[str, str, str]] = []  # (origin role, method, path)
        self._lock = threading.Lock()
        self._servers: list[ThreadingHTTPServer] = []
        self._threads: list[threading.Thread] = []
        self._ports: list[int] = []

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> FakeHub:
        for role in ("hub", "cdn"):
            server = _Server(("127.0.0.1", 0), _Handler)
            server.hub = self
            server.role = role
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            thread.start()
            self._servers.append(server)
            self._threads.append(thread)
        self._ports = [int(server.server_address[1]) for server in self._servers]
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers.clear()
        self._threads.clear()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        """The Hub origin, for ``HF_ENDPOINT`` (still known after :meth:`stop`)."""
        return f"http://127.0.0.1:{self._ports[0]}"

    @property
    def cdn(self) -> str:
        """The CDN origin that LFS files redirect to."""
        return f"http://127.0.0.1:{self._ports[1]}"

    # -- content ---------------------------------------------------------------------------------------
    def commit(
        self, repo_id: str, files: dict[str, bytes], *, branch: str = "main", delete: tuple = ()
    ) -> str:
        """Add a commit on ``branch`` (creating the repository) that adds/replaces ``files``; its id."""
        with self._lock:
            repo = self.repos.setdefault(repo_id, Repo())
            parent = repo.at(branch)
            tree = dict(parent.files) if parent else {}
            tree.update(files)
            for path in delete:
                tree.pop(path, None)
            seed = (parent.oid if parent else repo_id) + json.dumps(
                sorted((k, _sha256(v)) for k, v in tree.items())
            )
            oid = hashlib.sha1(f"{seed}{len(repo.commits)}".encode()).hexdigest()
            repo.commits.append(Commit(oid, tree))
            repo.branches[branch] = oid
            return oid

    def file_at(self, repo_id: str, revision: str, path: str) -> bytes | None:
        repo = self.repos.get(repo_id)
        commit = repo.at(revision) if repo else None
        return commit.files.get(path) if commit else None

    def fail(self, filename: str, mode: str, *, times: int | None = None) -> None:
        """Make requests for ``filename`` fail with ``mode`` (all of them, or the next ``times``)."""
        if mode not in FAILURE_MODES:
            raise ValueError(f"unknown failure mode {mode!r}")
        self.failures[filename] = (mode, times)

    def heal(self, filename: str | None = None) -> None:
        """Stop failing requests for ``filename`` (every file when None)."""
        if filename is None:
            self.failures.clear()
        else:
            self.failures.pop(filename, None)

    def count(self, *, method: str | None = None, contains: str = "") -> int:
        """How many requests matched ``method`` (any when None) and had ``contains`` in their path."""
        with self._lock:
            return sum(1 for _, m, p in self.requests if (method is None or m == method) and contains in p)

    def _failure_for(self, filename: str, modes: tuple[str, ...]) -> str | None:
        """The failure mode to apply to this request for ``filename`` among ``modes`` (consumes one use)."""
        with self._lock:
            entry = self.failures.get(filename)
            if entry is None or entry[0] not in modes:
                return None
            mode, times = entry
            if times is not None:
                if times <= 0:
                    return None
                self.failures[filename] = (mode, times - 1)
            return mode

    def _blob(self, sha256: str) -> bytes | None:
        for repo in self.repos.values():
            for c in repo.commits:
                for data in c.files.values():
                    if _sha256(data) == sha256:
                        return data
        return None

    def _name_of_blob(self, sha256: str) -> str | None:
        for repo in self.repos.values():
            for c in repo.commits:
                for name, data in c.files.items():
                    if _sha256(data) == sha256:
                        return name
        return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    hub: FakeHub
    role: str


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10  # an idle keep-alive connection ends its thread after this long
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # keep test output clean; requests are recorded in FakeHub.requests

    # -- plumbing --------------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(
            status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})}
        )

    def _error(self, status: int, code: str | None = None, extra: dict[str, str] | None = None) -> None:
        headers = dict(extra or {})
        if code:
            headers["X-Error-Code"] = code
        self._json(status, {"error": code or f"HTTP {status}"}, headers)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _authorized(self) -> bool:
        token = self.server.hub.token
        return token is None or self.headers.get("authorization") == f"Bearer {token}"

    def _dispatch(self) -> None:
        hub = self.server.hub
        split = urlsplit(self.path)
        with hub._lock:
            hub.requests.append((self.server.role, self.command, split.path))
            over_budget = len(hub.requests) > hub.max_requests
        if over_budget:
            self.close_connection = True
            self._error(503, None)
            return
        parts = [unquote(p) for p in split.path.split("/")[1:]]
        if self.server.role == "cdn":
            if len(parts) == 2 and parts[0] == "blobs" and self.command in ("GET", "HEAD"):
                self._cdn(parts[1])
            else:
                self._error(404)
            return
        if parts[:1] == ["api"]:
            self._api(parts[1:], parse_qs(split.query))
        elif len(parts) >= 5 and parts[2] == "resolve" and self.command in ("GET", "HEAD"):
            self._resolve("/".join(parts[:2]), parts[3], "/".join(parts[4:]))
        else:
            self._error(404)

    do_GET = do_HEAD = do_POST = _dispatch  # noqa: N815 - http.server naming

    # -- downloads -------------------------------------------------------------------------------------
    def _resolve(self, repo_id: str, revision: str, path: str) -> None:
        hub = self.server.hub
        repo = hub.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound")
            return
        commit = repo.at(revision)
        if commit is None:
            self._error(404, "RevisionNotFound")
            return
        mode = hub._failure_for(path, ("404", "500"))
        if mode == "500":
            self._error(500)
            return
        data = commit.files.get(path)
        if data is None or mode == "404":
            self._error(404, "EntryNotFound", {"X-Repo-Commit": commit.oid})
            return
        if path.endswith(LFS_SUFFIXES):
            digest = _sha256(data)
            self._send(
                302,
                b"",
                {
                    "Location": f"{hub.cdn}/blobs/{digest}?name={quote(path)}",
                    "X-Repo-Commit": commit.oid,
                    "X-Linked-Etag": f'"{digest}"',
                    "X-Linked-Size": str(len(data)),
                    "ETag": f'"{_git_sha1(data)}"',
                },
            )
            return
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{_git_sha1(data)}"', "Accept-Ranges": "bytes"}
        self._send(200, data, headers)

    def _cdn(self, digest: str) -> None:
        hub = self.server.hub
        data = hub._blob(digest)
        if data is None:
            self._error(404)
            return
        name = hub._name_of_blob(digest) or ""
        mode = (
            hub._failure_for(name, ("500", "drop", "drop_once", "corrupt")) if self.command == "GET" else None
        )
        if mode == "500":
            self._error(500)
            return
        if mode == "corrupt":
            data = bytes(b ^ 0xFF for b in data[:16]) + data[16:]
        start = 0
        range_header = self.headers.get("Range", "")
        if range_header.startswith("bytes="):
            start = int(range_header[len("bytes=") :].split("-")[0] or 0)
        if start >= len(data) and data:
            self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
            return
        body = data[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{digest}"')
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if self.command == "HEAD":
            return
        if mode in ("drop", "drop_once"):
            cut = max(len(data) // 2 - start, 0)  # never past the middle of the file (absolute offset)
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    # -- API -------------------------------------------------------------------------------------------
    def _api(self, parts: list[str], query: dict[str, list[str]]) -> None:
        hub = self.server.hub
        if parts == ["repos", "create"] and self.command == "POST":
            self._create_repo()
            return
        if parts == ["validate-yaml"] and self.command == "POST":
            self._body()
            self._json(200, {"errors": [], "warnings": []})
            return
        if len(parts) >= 5 and parts[0] == "models":
            repo_id, action, revision = "/".join(parts[1:3]), parts[3], parts[4]
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._body()
                self._error(404, "RepoNotFound")
                return
            if action == "tree" and self.command == "GET":
                commit = repo.at(revision)
                if commit is None:
                    self._error(404, "RevisionNotFound")
                    return
                listing = [
                    {"type": "file", "path": p, "size": len(d), "oid": _git_sha1(d)}
                    for p, d in commit.files.items()
                ]
                self._json(200, listing)
                return
            if action in ("preupload", "commit") and self.command == "POST":
                body = self._body()
                if not self._authorized():
                    self._error(401, None, {"X-Error-Message": "Invalid credentials in Authorization header"})
                    return
                if action == "preupload":
                    files = json.loads(body)["files"]
                    modes = [
                        {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files
                    ]
                    self._json(200, {"files": modes})
                else:
                    self._commit(repo_id, revision, body)
                return
        self._body()
        self._error(404)

    def _create_repo(self) -> None:
        hub = self.server.hub
        payload = json.loads(self._body() or b"{}")
        if not self._authorized():
            self._error(401, None, {"X-Error-Message": "Invalid credentials in Authorization header"})
            return
        repo_id = f"{payload.get('organization')}/{payload['name']}"
        url = f"{hub.endpoint}/{repo_id}"
        if repo_id in hub.repos:
            self._json(409, {"error": "You already created this model repo", "url": url})
            return
        hub.commit(repo_id, {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"})
        self._json(200, {"url": url, "name": repo_id, "id": hashlib.sha1(repo_id.encode()).hexdigest()[:24]})

    def _commit(self, repo_id: str, revision: str, body: bytes) -> None:
        hub = self.server.hub
        added: dict[str, bytes] = {}
        deleted: list[str] = []
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            value = item.get("value", {})
            if item.get("key") == "file":
                added[value["path"]] = base64.b64decode(value["content"])
            elif item.get("key") == "deletedFile":
                deleted.append(value["path"])
            elif item.get("key") not in ("header",):
                self._error(400, None, {"X-Error-Message": f"unsupported commit entry {item.get('key')}"})
                return
        oid = hub.commit(repo_id, added, branch=revision, delete=tuple(deleted))
        self._json(200, {"commitUrl": f"{hub.endpoint}/{repo_id}/commit/{oid}", "commitOid": oid})
