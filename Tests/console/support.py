"""What the console's browser tests and benchmark share: the corrald that
scripts/test-console.sh started (its URL, tokens and state come in the environment), the
API as a tenant calls it, and a headless Chromium that stays on loopback."""

import json
import os
import re
import socket
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

URL = os.environ["CONSOLE_URL"]
STATE = os.environ["CONSOLE_STATE"]
LOG = os.environ["CONSOLE_LOG"]
CORRAL = os.environ["CONSOLE_CORRAL"]
TOKENS = {
    "acme": os.environ["CONSOLE_TOKEN_ACME"],
    "globex": os.environ["CONSOLE_TOKEN_GLOBEX"],
    "initech": os.environ["CONSOLE_TOKEN_INITECH"],
    "operator": os.environ["CONSOLE_OPERATOR_TOKEN"],
}
SCREENSHOTS = os.environ["CONSOLE_SCREENSHOTS"]
os.makedirs(SCREENSHOTS, exist_ok=True)


# MARK: The API, as a tenant's program calls it

def api(method, path, token=None, body=None, headers=None, timeout=60):
    """(status, parsed JSON or text, response headers) of one request to corrald over TCP."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(URL + path, data=data, method=method)
    if token:
        request.add_header("Authorization", "Bearer " + token)
    if body is not None and not isinstance(body, bytes):
        request.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status, decode(response.read()), response.headers
    except urllib.error.HTTPError as error:
        return error.code, decode(error.read()), error.headers


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def decode(raw):
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


def corral(*args):
    """The corral command line on this corrald's state directory (through its unix socket)."""
    return subprocess.run([CORRAL, *args], check=True, capture_output=True, text=True,
                          env={**os.environ, "CORRAL_STATE_DIR": STATE}).stdout.strip()


def start_agent(token, task, max_turns=12):
    status, body, _ = api("POST", "/v1/agents", token, {"task": task, "brain": "anthropic", "maxTurns": max_turns})
    assert status == 202, "POST /v1/agents answered %s: %s" % (status, body)
    return body["session"]


def wait_for(condition, timeout=60, interval=0.2, what="the condition"):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = condition()
            if last:
                return last
        except Exception as error:  # a page mid-update; try again
            last = error
        time.sleep(interval)
    raise AssertionError("timed out after %ss waiting for %s (last: %r)" % (timeout, what, last))


# MARK: The browser

def browser(javascript=True, width=1366, height=900):
    """A headless Chromium whose traffic stays on loopback: every other host goes to a proxy
    on a closed loopback port, and the browser's own background traffic is turned off."""
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("CONSOLE_CHROMIUM", "/usr/bin/chromium")
    for argument in [
        "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
        "--window-size=%d,%d" % (width, height), "--no-first-run", "--no-default-browser-check",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-default-apps", "--disable-extensions", "--disable-features=Translate,MediaRouter",
        # Loopback is never proxied; anything else meets a closed port.
        "--proxy-server=http://127.0.0.1:9",
    ]:
        options.add_argument(argument)
    if not javascript:
        options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(os.environ.get("CONSOLE_CHROMEDRIVER", "/usr/bin/chromedriver"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(60)
    return Browser(driver)


class Browser:
    def __init__(self, driver):
        self.driver = driver
        self.visited = []
        self.errors = []

    def get(self, path):
        self.driver.get(URL + path)
        self.visited.append(self.driver.current_url)

    def login(self, who, expect_ok=True):
        self.get("/console/login")
        field = self.driver.find_element(By.ID, "token")
        field.clear()
        field.send_keys(TOKENS.get(who, who))
        field.submit()
        if expect_ok:
            wait_for(lambda: "/console/login" not in self.driver.current_url, 20, what="the login to go through")
        self.visited.append(self.driver.current_url)

    def logout(self):
        self.driver.delete_all_cookies()

    def find(self, css):
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css):
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def js(self, script, *args):
        return self.driver.execute_script(script, *args)

    def text(self, css="main"):
        return self.find(css).text

    def screenshot(self, name):
        self.driver.save_screenshot(os.path.join(SCREENSHOTS, name + ".png"))

    def console_messages(self):
        """The browser console's errors since the last call, as (level, message)."""
        entries = self.driver.get_log("browser")
        found = [(e["level"], e["message"]) for e in entries if e["level"] in ("SEVERE", "ERROR")]
        self.errors.extend(found)
        return found

    def quit(self):
        try:
            self.driver.quit()
        except Exception:
            pass


# MARK: Running tests

def run(tests):
    """Runs each test in order, prints a line for each, and exits non-zero if any failed."""
    failures = []
    started = time.time()
    for test in tests:
        name = test.__name__
        doc = (test.__doc__ or name).strip().splitlines()[0]
        began = time.time()
        try:
            test()
            print("ok    %-44s %5.1fs  %s" % (name, time.time() - began, doc), flush=True)
        except Exception as error:
            failures.append(name)
            print("FAIL  %-44s %5.1fs  %s" % (name, time.time() - began, doc), flush=True)
            traceback.print_exception(type(error), error, error.__traceback__, file=sys.stdout)
    print("%d tests, %d failed, %.0fs; screenshots in %s" % (
        len(tests), len(failures), time.time() - started, SCREENSHOTS), flush=True)
    if failures:
        print("failed: " + ", ".join(failures))
        sys.exit(1)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tokens_in(text):
    return [who for who, token in TOKENS.items() if token in text]


def seqs(browser):
    return [int(s) for s in browser.js(
        "return Array.prototype.map.call(document.querySelectorAll('#timeline > li'), e => e.dataset.seq)")]


__all__ = [name for name in dir() if not name.startswith("_")] + ["re", "By", "WebDriverWait"]
