"""E2B's own SDK (pinned in scripts/test-e2b.sh) against a live corrald.

scripts/test-e2b.sh starts corrald with an `e2b` template (corral's base image with /home/user),
makes two tenants and exports E2B_API_URL, E2B_SANDBOX_URL, E2B_API_KEY (tenant acme) and
E2B_OTHER_API_KEY (tenant globex). Every test uses the SDK as E2B's users do; none speaks the
wire protocol itself except where the SDK would refuse to send bad input.
"""

import asyncio
import json
import os
import time
import urllib.request
import urllib.error

import pytest
from e2b import AsyncSandbox, CommandExitException, Sandbox
from e2b.exceptions import (
    AuthenticationException,
    FileNotFoundException,
    InvalidArgumentException,
    NotFoundException,
    SandboxException,
    TimeoutException,
)
from e2b.sandbox.commands.command_handle import PtySize

API = os.environ["E2B_API_URL"]
OTHER_KEY = os.environ["E2B_OTHER_API_KEY"]


@pytest.fixture(scope="module")
def sandbox():
    sbx = Sandbox.create(metadata={"suite": "e2b", "kind": "shared"}, envs={"GREETING": "hello"})
    yield sbx
    sbx.kill()


# --- control plane -----------------------------------------------------------


def test_create_with_metadata_and_envs(sandbox):
    info = sandbox.get_info()
    assert info.metadata == {"suite": "e2b", "kind": "shared"}
    assert info.template_id == "base"
    assert sandbox.commands.run("echo $GREETING").stdout == "hello\n"


def test_create_claims_from_the_e2b_templates_warm_pool(sandbox):
    request = urllib.request.Request(f"{API}/v1/sandboxes/{sandbox.sandbox_id}")
    request.add_header("Authorization", f"Bearer {os.environ['E2B_API_KEY']}")
    with urllib.request.urlopen(request, timeout=30) as response:
        info = json.load(response)
    assert info["template"] == "e2b"
    assert info["path"] == "warm"


def test_list_filters_by_metadata(sandbox):
    other = Sandbox.create(metadata={"suite": "e2b", "kind": "other"})
    try:
        paginator = Sandbox.list(query=__import__("e2b").SandboxQuery(metadata={"kind": "shared"}))
        ids = [s.sandbox_id for s in paginator.next_items()]
        assert sandbox.sandbox_id in ids and other.sandbox_id not in ids
        paged = Sandbox.list(limit=1)
        first = paged.next_items()
        assert len(first) == 1 and paged.has_next
    finally:
        other.kill()


def test_connect_reaches_the_same_sandbox(sandbox):
    sandbox.files.write("/home/user/connect.txt", "same")
    again = Sandbox.connect(sandbox.sandbox_id)
    assert again.files.read("/home/user/connect.txt") == "same"


def test_kill_ends_the_sandbox():
    sbx = Sandbox.create()
    assert sbx.kill() is True
    assert not sbx.is_running()
    assert Sandbox.kill(sbx.sandbox_id) is False


def test_set_timeout_expiry():
    sbx = Sandbox.create(timeout=300)
    sbx.set_timeout(2)
    time.sleep(3)
    assert not sbx.is_running()
    with pytest.raises(NotFoundException):
        sbx.get_info()


def test_unknown_template_is_refused():
    with pytest.raises(SandboxException) as raised:
        Sandbox.create(template="no-such-template")
    assert "404" in str(raised.value) and "not found" in str(raised.value)


def test_wrong_api_key_is_refused():
    with pytest.raises(AuthenticationException):
        Sandbox.create(api_key="corral_not-a-real-token")


def test_another_tenants_sandbox_is_not_found(sandbox):
    with pytest.raises(NotFoundException):
        Sandbox.get_info(sandbox.sandbox_id, api_key=OTHER_KEY)
    assert Sandbox.kill(sandbox.sandbox_id, api_key=OTHER_KEY) is False
    assert sandbox.is_running()


# --- commands ----------------------------------------------------------------


def test_run_gives_stdout_stderr_and_exit_code(sandbox):
    result = sandbox.commands.run("echo out; echo err >&2; pwd")
    assert result.stdout == "out\n/home/user\n"
    assert result.stderr == "err\n"
    assert result.exit_code == 0


def test_nonzero_exit_raises_command_exit_exception(sandbox):
    with pytest.raises(CommandExitException) as raised:
        sandbox.commands.run("echo partial; exit 3")
    assert raised.value.exit_code == 3
    assert raised.value.stdout == "partial\n"


def test_on_stdout_streams_while_the_command_runs(sandbox):
    seen = []
    sandbox.commands.run(
        "for i in 1 2 3; do echo line$i; sleep 0.3; done",
        on_stdout=lambda line: seen.append((time.monotonic(), line)),
    )
    assert "".join(line for _, line in seen) == "line1\nline2\nline3\n"
    assert seen[-1][0] - seen[0][0] > 0.3, "output arrived all at once, not as it was printed"


def test_background_connect_send_stdin_and_kill(sandbox):
    handle = sandbox.commands.run("read line; echo got:$line; sleep 600", background=True, stdin=True)
    assert handle.pid in [p.pid for p in sandbox.commands.list()]
    again = sandbox.commands.connect(handle.pid)
    sandbox.commands.send_stdin(handle.pid, "ping\n")
    for stdout, _, _ in again:
        if stdout and "got:ping" in stdout:
            break
    assert sandbox.commands.kill(handle.pid) is True
    with pytest.raises(CommandExitException):
        handle.wait()
    assert handle.pid not in [p.pid for p in sandbox.commands.list()]


def test_a_command_timeout_stops_the_command(sandbox):
    with pytest.raises(TimeoutException):
        sandbox.commands.run("sleep 30 # timeout-test", timeout=1)
    deadline = time.monotonic() + 15
    while any("timeout-test" in " ".join(p.args) for p in sandbox.commands.list()):
        assert time.monotonic() < deadline, "the command outlived its timeout"
        time.sleep(0.2)


def test_close_stdin_ends_input(sandbox):
    handle = sandbox.commands.run("wc -c", background=True, stdin=True)
    sandbox.commands.send_stdin(handle.pid, "12345")
    sandbox.commands.close_stdin(handle.pid)
    assert handle.wait().stdout.strip() == "5"


def test_pty_create_send_input_and_resize(sandbox):
    chunks = []
    terminal = sandbox.pty.create(PtySize(rows=24, cols=80))
    sandbox.pty.resize(terminal.pid, PtySize(rows=40, cols=100))
    sandbox.pty.send_stdin(terminal.pid, b"stty size; tty; exit\n")
    terminal.wait(on_pty=lambda data: chunks.append(bytes(data)))
    output = b"".join(chunks)
    assert b"40 100" in output and b"/dev/pts/" in output


# --- files -------------------------------------------------------------------


def test_write_and_read_text_bytes_and_streams(sandbox):
    sandbox.files.write("/home/user/text.txt", "héllo")
    assert sandbox.files.read("/home/user/text.txt") == "héllo"
    payload = bytes(range(256)) * 1024
    sandbox.files.write("/home/user/data.bin", payload)
    assert bytes(sandbox.files.read("/home/user/data.bin", format="bytes")) == payload
    streamed = b"".join(sandbox.files.read("/home/user/data.bin", format="stream"))
    assert streamed == payload
    sandbox.files.write("/home/user/from-stream.bin", iter([b"ab", b"cd"]))
    assert sandbox.files.read("/home/user/from-stream.bin") == "abcd"
    info = sandbox.files.write_files(
        [{"path": "/home/user/multi/a.txt", "data": "A"}, {"path": "/home/user/multi/b.txt", "data": "B"}]
    )
    assert [i.path for i in info] == ["/home/user/multi/a.txt", "/home/user/multi/b.txt"]
    assert sandbox.commands.run("cat /home/user/multi/a.txt /home/user/multi/b.txt").stdout == "AB"


def test_list_exists_make_dir_rename_remove(sandbox):
    assert sandbox.files.make_dir("/home/user/tree/sub") is True
    assert sandbox.files.make_dir("/home/user/tree/sub") is False
    sandbox.files.write("/home/user/tree/sub/leaf.txt", "x")
    shallow = {e.path for e in sandbox.files.list("/home/user/tree")}
    assert shallow == {"/home/user/tree/sub"}
    deep = {e.path for e in sandbox.files.list("/home/user/tree", depth=2)}
    assert deep == {"/home/user/tree/sub", "/home/user/tree/sub/leaf.txt"}
    moved = sandbox.files.rename("/home/user/tree/sub/leaf.txt", "/home/user/tree/leaf.txt")
    assert moved.path == "/home/user/tree/leaf.txt"
    assert sandbox.files.exists("/home/user/tree/leaf.txt")
    assert not sandbox.files.exists("/home/user/tree/sub/leaf.txt")
    sandbox.files.remove("/home/user/tree")
    assert not sandbox.files.exists("/home/user/tree")


def test_get_info_of_a_file(sandbox):
    sandbox.files.write("/home/user/info.txt", "12345")
    info = sandbox.files.get_info("/home/user/info.txt")
    assert info.name == "info.txt" and info.size == 5 and info.type.value == "file"
    assert info.permissions == "-rw-r--r--"
    assert abs(info.modified_time.timestamp() - time.time()) < 120


def test_reading_a_missing_file_or_a_directory_fails(sandbox):
    with pytest.raises(FileNotFoundException):
        sandbox.files.read("/home/user/does-not-exist")
    with pytest.raises(InvalidArgumentException):
        sandbox.files.read("/home/user")


def test_writing_outside_what_the_user_may_write_fails(sandbox):
    with pytest.raises(SandboxException) as raised:
        sandbox.files.write("/etc/corral-e2b-test", "no")
    assert str(raised.value).startswith("403:")
    with pytest.raises(SandboxException):
        sandbox.files.make_dir("/usr/corral-e2b-test")
    with pytest.raises(SandboxException):
        sandbox.commands.run("touch /usr/bin/nope")


def test_watch_dir_reports_creates_writes_and_removes(sandbox):
    sandbox.files.make_dir("/home/user/watched/inner")
    handle = sandbox.files.watch_dir("/home/user/watched", recursive=True)
    sandbox.files.write("/home/user/watched/new.txt", "content")
    sandbox.files.write("/home/user/watched/inner/deep.txt", "x")
    events = {(e.name, e.type.value) for e in handle.get_new_events()}
    assert ("new.txt", "create") in events and ("new.txt", "write") in events
    assert ("inner/deep.txt", "create") in events
    sandbox.files.remove("/home/user/watched/new.txt")
    assert [(e.name, e.type.value) for e in handle.get_new_events()] == [("new.txt", "remove")]
    handle.stop()
    with pytest.raises(SandboxException):
        handle.get_new_events()


# --- the data plane's own checks ---------------------------------------------


def _envd(sandbox_id, path, token=None, method="GET"):
    request = urllib.request.Request(API + path, method=method)
    request.add_header("E2b-Sandbox-Id", sandbox_id)
    request.add_header("E2b-Sandbox-Port", "49983")
    if token is not None:
        request.add_header("X-Access-Token", token)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_missing_or_wrong_access_token_is_refused(sandbox):
    sandbox.files.write("/home/user/secret.txt", "s")
    path = "/files?path=/home/user/secret.txt"
    assert _envd(sandbox.sandbox_id, path) == 401
    assert _envd(sandbox.sandbox_id, path, token="0" * 64) == 401
    assert _envd(sandbox.sandbox_id, path, token=sandbox._envd_access_token) == 200


def test_malformed_connect_frames_are_refused(sandbox):
    request = urllib.request.Request(API + "/process.Process/Start", method="POST", data=b"\x00\x00\x00\x00\x09{bad")
    request.add_header("E2b-Sandbox-Id", sandbox.sandbox_id)
    request.add_header("X-Access-Token", sandbox._envd_access_token)
    request.add_header("Content-Type", "application/connect+json")
    with urllib.request.urlopen(request, timeout=30) as response:
        body = response.read()
    assert body[0] == 2 and b"invalid_argument" in body
    assert sandbox.commands.run("true").exit_code == 0


# --- the async client --------------------------------------------------------


def test_async_client_end_to_end():
    async def scenario():
        sbx = await AsyncSandbox.create(metadata={"suite": "e2b-async"}, envs={"WHO": "async"})
        try:
            result = await sbx.commands.run("echo $WHO; echo oops >&2")
            assert result.stdout == "async\n" and result.stderr == "oops\n"
            with pytest.raises(CommandExitException):
                await sbx.commands.run("exit 7")
            seen = []
            await sbx.commands.run("echo a; sleep 0.2; echo b", on_stdout=seen.append)
            assert "".join(seen) == "a\nb\n"
            handle = await sbx.commands.run("cat", background=True, stdin=True)
            await sbx.commands.send_stdin(handle.pid, "echoed\n")
            await sbx.commands.close_stdin(handle.pid)
            assert (await handle.wait()).stdout == "echoed\n"
            await sbx.files.write("/home/user/async.txt", b"bytes")
            assert await sbx.files.read("/home/user/async.txt", format="bytes") == bytearray(b"bytes")
            assert [e.name for e in await sbx.files.list("/home/user")] == ["async.txt"]
            seen = []
            watcher = await sbx.files.watch_dir("/home/user", on_event=seen.append)
            await sbx.files.write("/home/user/watched-async.txt", "w")
            deadline = time.monotonic() + 10
            while not any(e.name == "watched-async.txt" for e in seen):
                assert time.monotonic() < deadline, "no watch event within 10 s"
                await asyncio.sleep(0.1)
            await watcher.stop()
            await sbx.files.remove("/home/user/watched-async.txt")
            info = await sbx.get_info()
            assert info.metadata == {"suite": "e2b-async"}
            again = await AsyncSandbox.connect(sbx.sandbox_id)
            assert (await again.commands.run("cat /home/user/async.txt")).stdout == "bytes"
        finally:
            await sbx.kill()
        assert not await sbx.is_running()

    asyncio.run(scenario())


def test_user_root_still_runs_as_the_sandbox_user(sandbox):
    assert sandbox.commands.run("id -u", user="root").stdout.strip() != "0"


# --- ports -------------------------------------------------------------------


def _port_request(host_or_headers, path="/", data=None):
    request = urllib.request.Request(API + path, data=data, method="POST" if data is not None else "GET")
    for name, value in host_or_headers.items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_a_server_in_the_sandbox_is_reached_through_get_host(sandbox):
    sandbox.files.write("/home/user/site/hello.txt", "served from inside")
    server = sandbox.commands.run(
        "cd /home/user/site && exec python3 -m http.server 8000 --bind 127.0.0.1", background=True, timeout=0
    )
    try:
        token = sandbox.traffic_access_token
        assert token
        deadline = time.monotonic() + 20
        while True:
            status, body = _port_request(
                {"Host": sandbox.get_host(8000), "e2b-traffic-access-token": token}, "/hello.txt"
            )
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert (status, body) == (200, b"served from inside")
        by_header = {"E2b-Sandbox-Id": sandbox.sandbox_id, "E2b-Sandbox-Port": "8000", "X-Access-Token": token}
        assert _port_request(by_header, "/hello.txt") == (200, b"served from inside")
        assert _port_request(by_header, "/missing")[0] == 404
        assert _port_request({"Host": sandbox.get_host(8000)}, "/hello.txt")[0] == 401
        wrong = dict(by_header, **{"X-Access-Token": "0" * 64})
        assert _port_request(wrong, "/hello.txt")[0] == 401
        closed = dict(by_header, **{"E2b-Sandbox-Port": "8001"})
        status, body = _port_request(closed, "/")
        assert status == 502 and b"port is not open" in body
    finally:
        server.kill()
