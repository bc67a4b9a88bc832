"""A Git LFS server on 127.0.0.1 for the tests: the batch API (basic transfer, downloads) of
https://github.com/git-lfs/git-lfs/blob/main/docs/api/batch.md, and the objects themselves."""

import hashlib
import json
from http.server import BaseHTTPRequestHandler

from .gitservers import _Threaded

LFS_JSON = "application/vnd.git-lfs+json"


def pointer(content: bytes) -> str:
    """The pointer file git keeps in place of `content` (the LFS spec's, as `git lfs` writes it)."""
    oid = hashlib.sha256(content).hexdigest()
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(content)}\n"


class LFSServer(_Threaded):
    """Serves the objects it is given. The batch answer's download links point at `href_base`
    (this server by default, written as `host` names it), as a server whose objects live on
    another host's storage would; a request for an object it lacks gets the batch API's 404."""

    def __init__(self, host_name: str = "127.0.0.1", href_base: str = ""):
        self.objects: dict[str, bytes] = {}
        self.requests: list[str] = []
        self.authorizations: list[str] = []  # every Authorization header it was sent
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                server.requests.append(f"POST {self.path}")
                server.authorizations += self.headers.get_all("Authorization", [])
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                base = server.href_base or f"http://{host_name}:{server.port}"
                answer = {
                    "transfer": "basic",
                    "objects": [server.answer(item, base) for item in request["objects"]],
                }
                self.reply(200, json.dumps(answer).encode(), LFS_JSON)

            def do_GET(self) -> None:
                server.requests.append(f"GET {self.path}")
                server.authorizations += self.headers.get_all("Authorization", [])
                oid = self.path.rsplit("/", 1)[-1]
                content = server.objects.get(oid)
                if content is None:
                    return self.reply(404, b"{}", LFS_JSON)
                self.reply(200, content, "application/octet-stream")

            def reply(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format, *args) -> None:
                pass

        self.host_name = host_name
        self.href_base = href_base
        super().__init__(Handler)

    def add(self, content: bytes) -> str:
        """Keep `content`; its pointer file."""
        self.objects[hashlib.sha256(content).hexdigest()] = content
        return pointer(content)

    def answer(self, item: dict, base: str) -> dict:
        if item["oid"] not in self.objects:
            error = {"code": 404, "message": "Object does not exist"}
            return {"oid": item["oid"], "size": item["size"], "error": error}
        href = f"{base}/objects/{item['oid']}"
        return {**item, "authenticated": True, "actions": {"download": {"href": href}}}

    def url(self, repository: str) -> str:
        """The LFS endpoint a repository's .lfsconfig names (`lfs.url`)."""
        return f"http://{self.host_name}:{self.port}/{repository}/info/lfs"
