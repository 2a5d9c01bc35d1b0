"""e2b-code-interpreter's `run_code` (pinned in scripts/test-e2b.sh) against corral's own kernel
server in the `code-interpreter-v1` template (Tests/e2b/code-interpreter), reached through the
sandbox's port relay on E2B's port 49999."""

import time

import pytest
from e2b_code_interpreter import Sandbox


@pytest.fixture(scope="module")
def interpreter():
    sbx = Sandbox.create()
    yield sbx
    sbx.kill()


def test_run_code_gives_logs_and_the_cells_value(interpreter):
    execution = interpreter.run_code("x = 20\nprint('hello')\nx + 22")
    assert execution.logs.stdout == ["hello\n"]
    assert execution.text == "42"
    assert execution.error is None


def test_state_carries_over_and_contexts_keep_their_own(interpreter):
    interpreter.run_code("shared = 'default'")
    context = interpreter.create_code_context()
    interpreter.run_code("shared = 'mine'", context=context)
    assert interpreter.run_code("shared").text == "'default'"
    assert interpreter.run_code("shared", context=context).text == "'mine'"


def test_errors_come_back_as_execution_errors(interpreter):
    execution = interpreter.run_code("1 / 0")
    assert execution.error.name == "ZeroDivisionError"
    assert "division by zero" in execution.error.value


def test_output_streams_while_the_cell_runs(interpreter):
    seen = []
    interpreter.run_code(
        "import time\nfor i in range(3):\n    print(i, flush=True)\n    time.sleep(0.3)",
        on_stdout=lambda message: seen.append((time.monotonic(), message.line)),
    )
    assert "".join(line for _, line in seen) == "0\n1\n2\n"
    assert seen[-1][0] - seen[0][0] > 0.3, "output arrived all at once"


def test_the_cell_runs_as_the_sandbox_user_in_its_home(interpreter):
    execution = interpreter.run_code("import os\n(os.getcwd(), os.getuid() != 0)")
    assert execution.text == "('/workspace', True)"
