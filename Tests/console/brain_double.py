"""A stand-in for Anthropic's Messages API on loopback, for the console's browser tests.

corrald's harness calls it as it would call api.anthropic.com (ANTHROPIC_BASE_URL points
here). Every request is checked against the shape Anthropic documents for POST /v1/messages
(headers, top-level fields, tools, alternating roles, every tool call answered exactly once
by the next message), the same checks as Tests/CorralHarnessTests/Support/RequestShapes.swift;
a request with a problem is answered 400 and the problem kept, and the tests fail on any.

The answers follow the script whose name the task starts with (see SCRIPTS): turn N of the
conversation gets line N. Each answer waits `pace` seconds first, so a browser can watch a
timeline grow while the run goes on.
"""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

API_KEY = "sk-console-test-not-a-key"
TOP_LEVEL = {
    "model", "max_tokens", "messages", "system", "tools", "tool_choice", "temperature",
    "stop_sequences", "metadata", "stream", "top_p", "top_k",
}
BUILTIN_TOOLS = {"bash_20250124": "bash", "text_editor_20250728": "str_replace_based_edit_tool"}

# What the agent "writes": HTML, a script tag, an event handler, control characters, a
# terminal escape, a right-to-left override and a very long line. The console must show all of
# it as text and run none of it.
HOSTILE = (
    "<script>window.__pwned = 1; document.title = 'pwned'</script>"
    "<img src=x onerror=\"window.__pwned = 2\"><b>bold?</b> &amp; \"quotes\" 'single'"
)
CONTROL = "bell\x07 escape\x1b[31mred\x1b[0m nul-free rlo\u202eevil\u202c end"

SCRIPTS = {
    # The live test: a few turns that write hostile output from the sandbox.
    "console-live": [
        {"text": "I will look around first. " + HOSTILE,
         "calls": [("bash", {"command": "printf '%s\\n' '<script>window.__pwned=3</script>' '<b>not bold</b>'"})]},
        {"text": "Now some control characters and a long line.",
         "calls": [("bash", {"command": "printf 'bell\\a esc\\033[31mred\\033[0m\\n'; "
                                        "python3 -c \"print('x' * 200000)\""})]},
        {"text": "A file, through the editor.",
         "calls": [("str_replace_based_edit_tool",
                    {"command": "create", "path": "/workspace/evil.html", "file_text": HOSTILE + "\n"})]},
        {"text": "Reading it back, and failing on purpose.",
         "calls": [("bash", {"command": "cat /workspace/evil.html; exit 3"})]},
        {"text": "Done. " + CONTROL, "calls": []},
    ],
    # Slow steady turns, for a timeline that keeps growing for a while.
    "console-steady": [
        {"text": "Step %d." % n, "calls": [("bash", {"command": "echo step %d" % n})]} for n in range(1, 13)
    ] + [{"text": "Finished.", "calls": []}],
}


def problems_of(headers, path, body_bytes):
    """Every way the request differs from Anthropic's documented shape."""
    problems = []

    def header(name):
        for key, value in headers.items():
            if key.lower() == name:
                return value
        return None

    if path != "/v1/messages":
        problems.append("path %s, not /v1/messages" % path)
    if header("x-api-key") != API_KEY:
        problems.append("x-api-key is missing or wrong")
    if header("anthropic-version") != "2023-06-01":
        problems.append("anthropic-version is %s" % header("anthropic-version"))
    if not (header("content-type") or "").startswith("application/json"):
        problems.append("content-type is not application/json")
    if header("authorization") is not None:
        problems.append("an Authorization header was sent to Anthropic")
    try:
        body = json.loads(body_bytes)
    except ValueError:
        return problems + ["the body is not JSON"]
    if not isinstance(body, dict):
        return problems + ["the body is not a JSON object"]
    for key in sorted(body):
        if key not in TOP_LEVEL:
            problems.append("unknown field '%s'" % key)
    if not isinstance(body.get("model"), str) or not body["model"]:
        problems.append("model is missing")
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
        problems.append("max_tokens is missing or not positive")
    system = body.get("system")
    if system is not None and not isinstance(system, str):
        if not (isinstance(system, list) and all(
                isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str) for b in system)):
            problems.append("system must be a string or text blocks")
    names = set()
    for index, tool in enumerate(body.get("tools") or []):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            problems.append("tool %d has no name" % index)
            continue
        name = tool["name"]
        if name in names:
            problems.append("tool name '%s' declared twice" % name)
        names.add(name)
        kind = tool.get("type")
        if kind is not None and kind != "custom":
            expected = BUILTIN_TOOLS.get(kind)
            if expected is None:
                problems.append("tool '%s' has an unknown type '%s'" % (name, kind))
            elif expected != name:
                problems.append("built-in tool %s must be named %s" % (kind, expected))
        else:
            schema = tool.get("input_schema")
            if not isinstance(schema, dict) or schema.get("type") != "object":
                problems.append("custom tool '%s' has no input_schema of type object" % name)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return problems + ["messages is missing or empty"]
    expected_results = None
    for index, message in enumerate(messages):
        at = "messages[%d]" % index
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            problems.append("%s has no valid role" % at)
            continue
        role = message["role"]
        if index == 0 and role != "user":
            problems.append("the first message must be the user's")
        if index > 0 and isinstance(messages[index - 1], dict) and messages[index - 1].get("role") == role:
            problems.append("%s: two %s messages in a row" % (at, role))
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list) or not blocks:
            problems.append("%s has no content" % at)
            blocks = []
        if expected_results is not None:
            leading = []
            for block in blocks:
                if isinstance(block, dict) and block.get("type") == "tool_result":
                    leading.append(block.get("tool_use_id"))
                else:
                    break
            if role != "user" or sorted(leading) != sorted(expected_results):
                problems.append("%s: tool results %s do not answer the calls %s" % (at, leading, expected_results))
            expected_results = None
        uses = []
        for block in blocks:
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "text":
                if not block.get("text"):
                    problems.append("%s: empty text block" % at)
            elif kind == "tool_use":
                if role != "assistant":
                    problems.append("%s: tool_use in a user message" % at)
                if not block.get("id") or not block.get("name") or not isinstance(block.get("input"), dict):
                    problems.append("%s: tool_use without id, name or object input" % at)
                uses.append(block.get("id"))
            elif kind == "tool_result":
                if role != "user":
                    problems.append("%s: tool_result in an assistant message" % at)
                if not isinstance(block.get("content"), (str, list)):
                    problems.append("%s: tool_result content must be a string or blocks" % at)
            else:
                problems.append("%s: unexpected block type %s" % (at, kind))
        if uses:
            expected_results = uses
    if expected_results is not None:
        problems.append("tool calls %s of the last message are never answered" % expected_results)
    if messages[-1].get("role") != "user":
        problems.append("the last message is not the user's")
    return problems


class BrainDouble:
    """The server: start(), then .base_url for ANTHROPIC_BASE_URL; .problems afterwards."""

    def __init__(self, pace=1.0):
        self.pace = pace
        self.problems = []
        self.requests = 0
        self.lock = threading.Lock()
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                found = problems_of(dict(self.headers.items()), self.path, raw)
                with double.lock:
                    double.requests += 1
                    double.problems.extend(found)
                if found:
                    return self.answer(400, {"type": "error", "error": {
                        "type": "invalid_request_error", "message": "; ".join(found)}})
                time.sleep(double.pace)
                self.answer(200, double.reply(json.loads(raw)))

            def answer(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self):
        return "http://127.0.0.1:%d" % self.server.server_address[1]

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def reply(self, body):
        messages = body["messages"]
        first = messages[0]["content"]
        task = first if isinstance(first, str) else " ".join(
            b.get("text", "") for b in first if isinstance(b, dict))
        script = next((lines for name, lines in SCRIPTS.items() if task.startswith(name)), [])
        turn = sum(1 for m in messages if m.get("role") == "assistant")
        if body.get("tool_choice", {}).get("type") == "none":
            step = {"text": "Summary: the work so far.", "calls": []}
        elif turn < len(script):
            step = script[turn]
        else:
            step = {"text": "Nothing more to do.", "calls": []}
        content = []
        if step["text"]:
            content.append({"type": "text", "text": step["text"]})
        for index, (name, tool_input) in enumerate(step["calls"]):
            content.append({"type": "tool_use", "id": "toolu_c%d_%d" % (turn + 1, index + 1), "name": name,
                            "input": tool_input})
        return {
            "id": "msg_console_%d" % (turn + 1), "type": "message", "role": "assistant", "model": body["model"],
            "content": content, "stop_reason": "tool_use" if step["calls"] else "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 1000 + 250 * turn, "output_tokens": 40 + 5 * turn},
        }


def main():
    import argparse
    import os
    import signal

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port-file", required=True, help="where to write the port once listening")
    parser.add_argument("--problems-file", required=True, help="where every shape problem is appended")
    parser.add_argument("--pace", type=float, default=1.0, help="seconds before each answer")
    options = parser.parse_args()
    double = BrainDouble(pace=options.pace)
    open(options.problems_file, "w").close()
    original = double.problems

    class Recorder(list):
        def extend(self, items):
            items = list(items)
            super().extend(items)
            if items:
                with open(options.problems_file, "a") as out:
                    for item in items:
                        out.write(item + "\n")

    double.problems = Recorder(original)
    double.start()
    temporary = options.port_file + ".tmp"
    with open(temporary, "w") as out:
        out.write(str(double.server.server_address[1]))
    os.replace(temporary, options.port_file)
    signal.signal(signal.SIGTERM, lambda *_: (double.stop(), os._exit(0)))
    double.thread.join()


if __name__ == "__main__":
    main()
