"""corral's code interpreter server: what e2b-code-interpreter's `run_code` talks to on port 49999.

Python only, from the standard library (Debian's python3): each context is a namespace of its
own, code runs in it as in a notebook cell (the value of a last expression is the cell's main
result), and its output streams back as NDJSON lines while it runs. One cell runs at a time, as
in a kernel. It runs as the sandbox's user, inside the sandbox, and listens on loopback only;
corrald reaches it through the sandbox's port relay (docs/e2b.md).
"""

import ast
import contextlib
import io
import json
import os
import sys
import threading
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = 49999
HOME = "/home/user" if os.path.isdir("/home/user") else os.getcwd()

contexts = {}
default_context = {"id": "default", "language": "python", "cwd": HOME, "namespace": {"__name__": "__main__"}}
executions = 0
cell_lock = threading.Lock()
contexts_lock = threading.Lock()


def new_context(cwd):
    return {"id": uuid.uuid4().hex, "language": "python", "cwd": cwd or HOME, "namespace": {"__name__": "__main__"}}


def public(context):
    return {"id": context["id"], "language": context["language"], "cwd": context["cwd"]}


class Stream(io.TextIOBase):
    """A stdout or stderr that sends its text a line at a time as lines of the answer, as a
    kernel does (one `print` is one message, newline included), and what is left on flush."""

    def __init__(self, send, kind):
        self.send = send
        self.kind = kind
        self.pending = ""

    def writable(self):
        return True

    def write(self, text):
        self.pending += text
        while "\n" in self.pending:
            line, self.pending = self.pending.split("\n", 1)
            self.emit(line + "\n")
        return len(text)

    def flush(self):
        if self.pending:
            text, self.pending = self.pending, ""
            self.emit(text)

    def emit(self, text):
        self.send({"type": self.kind, "text": text, "timestamp": time.time_ns()})


def run_cell(code, context, env_vars, send):
    global executions
    namespace = context["namespace"]
    saved_env = dict(os.environ)
    saved_cwd = os.getcwd()
    os.environ.update({str(k): str(v) for k, v in (env_vars or {}).items()})
    try:
        os.chdir(context["cwd"])
    except OSError:
        pass
    executions += 1
    stdout, stderr = Stream(send, "stdout"), Stream(send, "stderr")
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            tree = ast.parse(code, mode="exec")
            last = None
            if tree.body and isinstance(tree.body[-1], ast.Expr):
                last = ast.Expression(tree.body.pop().value)
            exec(compile(tree, "<cell>", "exec"), namespace)
            if last is not None:
                value = eval(compile(last, "<cell>", "eval"), namespace)
                if value is not None:
                    send({"type": "result", "text": repr(value), "is_main_result": True})
    except BaseException as error:  # a cell's SystemExit or KeyboardInterrupt is its own error
        send(
            {
                "type": "error",
                "name": type(error).__name__,
                "value": str(error),
                "traceback": "".join(traceback.format_exception(error)),
            }
        )
    finally:
        stdout.flush()
        stderr.flush()
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    send({"type": "number_of_executions", "execution_count": executions})
    send({"type": "end_of_execution"})


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, *args):
        pass

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        length = int(self.headers.get("Content-Length") or 0)
        if not length:
            return {}
        try:
            data = json.loads(self.rfile.read(length))
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def do_GET(self):
        if self.path == "/health":
            return self.answer(200, "OK")
        if self.path == "/contexts":
            with contexts_lock:
                return self.answer(200, [public(c) for c in contexts.values()])
        self.answer(404, {"message": "no such route"})

    def do_DELETE(self):
        parts = self.path.strip("/").split("/")
        if len(parts) == 2 and parts[0] == "contexts":
            with contexts_lock:
                if contexts.pop(parts[1], None) is None:
                    return self.answer(404, {"message": f"context {parts[1]} not found"})
            return self.answer(200, {})
        self.answer(404, {"message": "no such route"})

    def do_POST(self):
        body = self.body()
        if body is None:
            return self.answer(400, {"message": "the body must be a JSON object"})
        parts = self.path.strip("/").split("/")
        if parts == ["contexts"]:
            if body.get("language") not in (None, "python"):
                return self.answer(400, {"message": "only python is supported"})
            context = new_context(body.get("cwd"))
            with contexts_lock:
                contexts[context["id"]] = context
            return self.answer(201, public(context))
        if len(parts) == 3 and parts[0] == "contexts" and parts[2] == "restart":
            with contexts_lock:
                context = contexts.get(parts[1])
                if context is None:
                    return self.answer(404, {"message": f"context {parts[1]} not found"})
                context["namespace"] = {"__name__": "__main__"}
            return self.answer(200, {})
        if parts == ["execute"]:
            return self.execute(body)
        self.answer(404, {"message": "no such route"})

    def execute(self, body):
        code = body.get("code")
        if not isinstance(code, str):
            return self.answer(400, {"message": "code must be a string"})
        if body.get("language") not in (None, "python"):
            return self.answer(400, {"message": "only python is supported"})
        context = default_context
        if body.get("context_id"):
            with contexts_lock:
                context = contexts.get(body["context_id"])
            if context is None:
                return self.answer(404, {"message": f"context {body['context_id']} not found"})
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.end_headers()

        def send(event):
            self.wfile.write(json.dumps(event).encode() + b"\n")
            self.wfile.flush()

        with cell_lock:
            run_cell(code, context, body.get("env_vars"), send)


def wait_until_listening(seconds=10.0):
    """`kernel.py --wait`: exits 0 once the server accepts, 1 after `seconds`. The template's
    setup runs it after starting the server, so that a member is idle only with its kernel up."""
    import socket

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", PORT), timeout=1).close()
            return 0
        except OSError:
            time.sleep(0.05)
    print(f"corral's kernel server did not listen on {PORT} within {seconds:.0f} s", file=sys.stderr)
    return 1


if __name__ == "__main__":
    if sys.argv[1:] == ["--wait"]:
        sys.exit(wait_until_listening())
    sys.setrecursionlimit(10_000)
    ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
