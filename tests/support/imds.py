"""A local stand-in for EC2's instance metadata service (IMDSv2), for spot notices.

Serves ``PUT /latest/api/token`` and ``GET /latest/meta-data/spot/instance-action`` as
EC2 does (401 without a token from the first; 404 until a notice is set), under a path
prefix per node (``/<node>/latest/...``), so several nodes on one host each read their
own. ``url`` is the template a scheduler config names (``{node_id}`` in it).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN = "test-imds-token"


class FakeImds:
    def __init__(self) -> None:
        self.notices: dict[str, dict] = {}
        self.reads: dict[str, int] = {}
        imds = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def _node_and_path(self) -> tuple[str, str]:
                _, node, path = self.path.split("/", 2)
                return node, "/" + path

            def do_PUT(self) -> None:  # noqa: N802 - http.server's naming
                _, path = self._node_and_path()
                if path != "/latest/api/token" or not self.headers.get(
                        "X-aws-ec2-metadata-token-ttl-seconds"):
                    self._send(400, b"")
                    return
                self._send(200, TOKEN.encode())

            def do_GET(self) -> None:  # noqa: N802
                node, path = self._node_and_path()
                if self.headers.get("X-aws-ec2-metadata-token") != TOKEN:
                    self._send(401, b"")
                    return
                if path != "/latest/meta-data/spot/instance-action":
                    self._send(404, b"")
                    return
                imds.reads[node] = imds.reads.get(node, 0) + 1
                notice = imds.notices.get(node)
                if notice is None:
                    self._send(404, b"")
                else:
                    self._send(200, json.dumps(notice).encode())

            def _send(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/{{node_id}}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def notify(self, node: str, action: str = "terminate") -> None:
        self.notices[node] = {"action": action, "time": "2026-12-03T08:22:00Z"}

    def __enter__(self) -> FakeImds:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
