"""The console in a real browser: headless Chromium against the corrald that
scripts/test-console.sh started. Each test saves screenshots under .build/console-screenshots/.

Run through scripts/test-console.sh (which `make test` runs), never on its own."""

import json
import os
import re
import time
import urllib.parse

from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.keys import Keys

from support import (
    LOG, STATE, TOKENS, URL, api, browser, corral, run, seqs, start_agent, tokens_in, wait_for,
)

shared = {}
every_browser = []


def open_browser(**options):
    instance = browser(**options)
    every_browser.append(instance)
    return instance


def no_console_errors(page, allowed=()):
    found = [m for m in page.console_messages() if not any(a in m[1] for a in allowed)]
    assert not found, "the browser console has errors: %s" % found


def test_unknown_token_is_refused_with_a_message():
    """An unknown token leaves the browser on the login page, saying so."""
    page = open_browser()
    page.get("/console/sessions")
    assert "/console/login" in page.driver.current_url, page.driver.current_url
    page.login("corral_not-a-real-token-at-all", expect_ok=False)
    wait_for(lambda: "not valid" in page.text(), 10, what="the refusal")
    assert "/console/login" in page.driver.current_url
    assert page.driver.get_cookie("corral_console") is None
    page.screenshot("01-login-refused")
    # The refusal is a 401 document: the browser reports it, nothing else may be there.
    no_console_errors(page, allowed=["401"])
    page.quit()


def test_tenant_watches_its_agent_session_live():
    """A tenant logs in, starts an agent, and watches its timeline grow with no reload."""
    page = open_browser()
    shared["acme"] = page
    page.login("acme")
    session = start_agent(TOKENS["acme"], "console-live: write hostile output and watch it shown as text")
    shared["session"] = session
    page.get("/console/sessions/" + session)
    assert "Session" in page.driver.title, page.driver.title
    page.js("window.__marker = 'no reload'")
    first = len(seqs(page))
    page.screenshot("02-session-start")
    # The run takes several paced brain turns: rows must arrive while it goes on.
    counts = [first]
    deadline = time.time() + 120
    while time.time() < deadline:
        rows = seqs(page)
        if len(rows) != counts[-1]:
            counts.append(len(rows))
            if len(counts) == 3:
                page.screenshot("03-session-growing")
        if page.find_all("#timeline li.t-session-ended"):
            break
        time.sleep(0.2)
    assert page.find_all("#timeline li.t-session-ended"), "the run never ended in the page: %s" % counts
    assert len(counts) >= 3, "the timeline grew in fewer than two steps: %s" % counts
    assert page.js("return window.__marker") == "no reload", "the page was reloaded"
    assert page.js("return performance.getEntriesByType('navigation').length") == 1
    rows = seqs(page)
    assert rows == list(range(rows[0], rows[0] + len(rows))), "rows missing or out of order: %s" % rows
    assert page.js("return document.getElementById('timeline').dataset.gaps || '0'") == "0"
    head = api("GET", "/v1/sessions/" + session, TOKENS["acme"])[1]["head"]
    assert rows[-1] == head, "the page shows up to %s, the session has %s" % (rows[-1], head)
    wait_for(lambda: "ended" in page.text("#summary"), 10, what="the summary to say ended")
    page.screenshot("04-session-ended")

    # Open the first tool result: its output is the agent's hostile text, shown as text.
    result = page.find("#timeline li.t-tool-result summary")
    result.click()
    output = page.find("#timeline li.t-tool-result details[open] pre.output")
    assert "<script>window.__pwned=3</script>" in output.text, output.text
    assert "<b>not bold</b>" in output.text
    page.js("arguments[0].scrollIntoView({block: 'center'})", output)
    page.screenshot("05-tool-result-open")
    assert page.js("return window.__pwned") is None, "a script from an event ran"
    assert page.driver.title.startswith("Session"), page.driver.title
    assert page.js("return document.querySelectorAll('main script, main img').length") == 0, "markup from an event"
    assert page.js("return Array.from(document.querySelectorAll('main b')).every(b => !/bold/.test(b.textContent))")
    text = page.js("return document.body.textContent")
    assert "\u241b" in text and "\u2407" in text, "control characters are not shown as symbols"
    assert "\u27e8U+202E\u27e9" in page.js("return document.body.textContent"), "a bidi override was not shown"
    assert "characters cut" in page.js("return document.body.textContent"), "the 200,000-character line was not cut"
    failed = page.find_all("#timeline li.t-tool-result[data-status=error]")
    assert failed and "exit 3" in failed[-1].text, "the failing call is not marked"
    # The event opens as JSON, and its whole JSON is a link away.
    link = page.find("#timeline li.t-tool-result details[open] a").get_attribute("href")
    status, event, headers = api("GET", urllib.parse.urlparse(link).path, headers={
        "Cookie": "corral_console=" + page.driver.get_cookie("corral_console")["value"]})
    assert status == 200 and event["type"] == "tool.result", (status, event)
    assert headers["Content-Type"].startswith("application/json")
    no_console_errors(page)


def test_list_pages_sandbox_pages_and_pool_charts_render_with_data():
    """Sessions, sandboxes, a sandbox with its commands, and the pools' charts, as a tenant."""
    page = shared["acme"]
    session = shared["session"]
    page.get("/console/sessions")
    assert session in page.text(), "the session is not listed"
    row = [r for r in page.find_all("tbody tr") if session in r.text][0]
    assert "ended" in row.text and "anthropic" in row.text, row.text
    assert re.search(r"\d[\d,]* / \d", row.text), "no token counts: " + row.text
    page.screenshot("06-sessions")
    page.get("/console/sessions?status=running")
    assert session not in page.text(), "the status filter let an ended session through"
    page.get("/console/sessions?q=" + session[-6:])
    assert session in page.text(), "the search did not find the session"

    page.get("/console/sandboxes")
    links = [a.get_attribute("href") for a in page.find_all("tbody a[href*='/console/sandboxes/sb-']")]
    assert links, "no sandboxes listed: " + page.text()
    assert "local" in page.text() and ("cold" in page.text() or "warm" in page.text())
    page.screenshot("07-sandboxes")
    page.driver.get(links[0])
    wait_for(lambda: "Recent commands" in page.text(), 10, what="the sandbox page")
    commands = page.find_all("main ol.timeline li")
    assert commands, "no commands on the sandbox page"
    assert "<script>window.__pwned=3</script>" in page.js("return document.querySelector('main').textContent")
    page.find("main ol.timeline li summary").click()
    page.screenshot("08-sandbox")

    page.get("/console/pools")
    wait_for(lambda: page.find_all("#pools-live svg polyline, #pools-live svg circle"), 30,
             what="a pool chart with samples")
    assert "base" in page.text() and "idle" in page.text().lower()
    assert "Workers" not in page.text(), "a tenant sees the workers"
    assert "Claim latency" not in page.text(), "a tenant sees every tenant's claim latencies"
    page.screenshot("09-pools-tenant")
    page.get("/console/tenants")
    assert page.driver.title.startswith("Not for tenants"), page.driver.title
    no_console_errors(page, allowed=["403"])


def test_another_tenants_session_is_not_found():
    """globex sees none of acme's things: a session, its events, its stream, its sandbox."""
    page = open_browser()
    page.login("globex")
    session = shared["session"]
    page.get("/console/sessions")
    assert session not in page.text(), "another tenant's session is listed"
    page.get("/console/sessions/" + session)
    assert page.find("h1").text == "Not found", page.find("h1").text
    theirs = page.text()
    page.screenshot("10-other-tenant-not-found")
    page.get("/console/sessions/se-doesnotexist00")
    assert page.find("h1").text == "Not found"
    assert page.text().replace("se-doesnotexist00", session) == theirs, "missing and foreign differ"
    statuses = page.js("""
        const urls = arguments[0];
        return Promise.all(urls.map(u => fetch(u).then(r => r.status)));
    """, ["/console/sessions/%s/events/1" % session, "/console/sessions/%s/stream" % session])
    assert statuses == [404, 404], statuses
    sandboxes = api("GET", "/v1/sandboxes", TOKENS["acme"])[1]
    if sandboxes:
        page.get("/console/sandboxes/" + sandboxes[0]["id"])
        assert page.find("h1").text == "Not found"
    no_console_errors(page, allowed=["404"])
    page.quit()


def test_operator_sees_every_tenant_and_the_workers():
    """The operator's console token shows every tenant's sessions, the tenants and the workers."""
    page = open_browser()
    page.login("operator")
    page.get("/console/sessions")
    assert shared["session"] in page.text(), "the operator does not see acme's session"
    assert "acme" in page.text()
    page.get("/console/sessions/" + shared["session"])
    assert page.find("h1").text.startswith("Session")
    page.get("/console/tenants")
    text = page.text()
    assert "acme" in text and "globex" in text and "/ 20" in text, text
    page.screenshot("11-tenants")
    page.get("/console/pools")
    wait_for(lambda: "healthy" in page.text(), 30, what="the worker's heartbeat")
    assert "Workers" in page.text() and "Claim latency" in page.text()
    # The worker that dialled in (scripts/test-console.sh starts one), with its group, its state
    # and its pool of `base` (no target: 0 ready of 0), refreshed in place.
    worker = os.environ["CONSOLE_WORKER"]
    wait_for(lambda: worker in page.text() and "connected" in page.text(), 60, what="the worker that dialled in")
    assert "group console" in page.text(), page.text()
    assert page.find_all("#chart-claims svg"), "no claim latency chart"
    page.screenshot("12-pools-operator")
    # initech is bound to the worker's group: its sandbox runs there, and the operator's list
    # of sandboxes shows it with the worker's name (acme's list does not).
    status, created, _ = api("POST", "/v1/sandboxes", token=TOKENS["initech"], body={"template": "base"}, timeout=180)
    assert status == 201, (status, created)
    try:
        assert created.get("worker") == worker or created.get("worker") is None, created
        def listed():
            page.get("/console/sandboxes")
            return [r.text for r in page.find_all("tbody tr") if created["id"] in r.text]
        row = wait_for(listed, 30, interval=1, what="initech's sandbox on the worker in the list")
        assert worker in row[0] and "initech" in row[0], (created["id"], row, page.text())
        page.screenshot("13-sandboxes-with-a-worker")
        # Its page, from the worker's own answer through the link: the worker named, no engine
        # facts of this host's. acme gets the same not-found as for a sandbox that is not there.
        links = [a.get_attribute("href") for a in page.find_all("tbody a[href$='/console/sandboxes/%s']" % created["id"])]
        assert links, ("the worker's sandbox has no link", page.text())
        page.get("/console/sandboxes/" + created["id"])
        details = page.text()
        assert "Sandbox " + created["id"] in details and worker in details, details
        assert "group console" in details and "initech" in details and "running" in details, details
        assert "local (this service's engine)" not in details, details
        # Its limits come from the worker's engine, in the worker's answer.
        assert "Resources" in details and "memory" in details and "processes" in details, details
        page.screenshot("13b-sandbox-on-a-worker")
        # The tenants page counts it against initech's quota, as the API's quota does.
        page.get("/console/tenants")
        tenant_row = [r.text for r in page.find_all("tbody tr") if r.text.startswith("initech")]
        assert tenant_row and "1 / 20" in tenant_row[0], tenant_row
        acme = open_browser()
        acme.login("acme")
        acme.get("/console/sandboxes")
        assert created["id"] not in acme.text(), "acme sees initech's sandbox on the worker"
        acme.get("/console/sandboxes/" + created["id"])
        assert acme.find("h1").text == "Not found", acme.text("body")
        assert "initech" not in acme.text("body") and worker not in acme.text("body"), acme.text("body")
        acme.console_messages()  # the 404 just asked for
        acme.quit()
    finally:
        status, body, _ = api("DELETE", "/v1/sandboxes/" + created["id"], token=TOKENS["initech"])
        assert status in (200, 204), (status, body)
    no_console_errors(page)
    page.quit()


def test_a_removed_tenants_login_ends_with_a_message():
    """When a tenant's token stops working, its browser lands on the login page, told why."""
    token = corral("tenant", "add", "temp")
    TOKENS["temp"] = token
    page = open_browser()
    page.login("temp")
    page.get("/console/sessions")
    corral("tenant", "rm", "temp", "--purge")
    page.get("/console/sandboxes")
    assert "/console/login" in page.driver.current_url, page.driver.current_url
    assert "no longer works" in page.text(), page.text()
    page.screenshot("13-login-ended")
    no_console_errors(page)
    page.quit()


def test_usable_from_the_keyboard():
    """Tab reaches the skip link and the navigation; Enter opens an event."""
    page = shared["acme"]
    page.get("/console/sessions/" + shared["session"])
    body = page.find("body")
    body.send_keys(Keys.TAB)
    assert page.js("return document.activeElement.className") == "skip"
    ActionChains(page.driver).send_keys(Keys.ENTER).perform()
    assert page.js("return document.activeElement.id") == "main"
    # From the timeline's first event: Enter opens it, Enter again closes it.
    page.js("document.querySelector('#timeline summary').focus()")
    ActionChains(page.driver).send_keys(Keys.ENTER).perform()
    assert page.js("return document.querySelector('#timeline details').open") is True
    page.screenshot("14-keyboard")
    page.get("/console/sessions")
    page.find("body").send_keys(Keys.TAB)
    for _ in range(3):
        ActionChains(page.driver).send_keys(Keys.TAB).perform()
    assert page.js("return document.activeElement.tagName") == "A"
    no_console_errors(page)


def test_readable_without_javascript():
    """With scripting off, logging in, the lists and a session's timeline all work."""
    page = open_browser(javascript=False)
    page.login("acme")
    page.get("/console/sessions")
    assert shared["session"] in page.text()
    page.get("/console/sessions/" + shared["session"])
    assert len(page.find_all("#timeline > li")) > 5
    page.find("#timeline li.t-tool-result summary").click()
    assert page.find_all("#timeline li.t-tool-result details[open]")
    page.screenshot("15-no-javascript")
    page.quit()


def test_cookies_and_cross_site_posts():
    """The login cookie is HttpOnly and SameSite=Strict; a POST from elsewhere is refused."""
    page = shared["acme"]
    assert "corral_console" not in page.js("return document.cookie"), "the login cookie is readable by scripts"
    cookie = page.driver.get_cookie("corral_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/console", cookie
    jar = "corral_console=" + cookie["value"]
    status, _, _ = api("POST", "/console/logout", body=b"csrf=wrong", headers={
        "Cookie": jar, "Content-Type": "application/x-www-form-urlencoded"})
    assert status == 403, "a logout without the form's token was taken: %s" % status
    csrf = page.find("form[action='/console/logout'] input[name=csrf]").get_attribute("value")
    status, _, _ = api("POST", "/console/logout", body=("csrf=" + csrf).encode(), headers={
        "Cookie": jar, "Content-Type": "application/x-www-form-urlencoded", "Origin": "http://evil.example",
        "Sec-Fetch-Site": "cross-site"})
    assert status == 403, "a cross-site logout was taken: %s" % status
    # A login posted from elsewhere (no form token of this console) is refused too.
    status, _, _ = api("POST", "/console/login", body=("token=" + TOKENS["acme"]).encode(), headers={
        "Content-Type": "application/x-www-form-urlencoded"})
    assert status == 403, status
    # The login still works after those attempts; then the page's own form logs out.
    page.get("/console/sessions")
    assert "/console/login" not in page.driver.current_url
    page.find("form[action='/console/logout'] button").click()
    wait_for(lambda: "logged out" in page.text(), 10, what="the logged-out page")
    page.get("/console/sessions")
    assert "/console/login" in page.driver.current_url
    page.screenshot("16-logged-out")


def test_tokens_appear_in_no_url_and_no_log():
    """No token was ever in a URL the browsers visited or loaded, or in corrald's log."""
    for page in every_browser:
        for url in page.visited:
            assert not tokens_in(url), "a token in a URL: %s" % url
        try:
            loaded = page.js("return performance.getEntriesByType('resource').map(e => e.name)")
        except Exception:
            loaded = []
        for url in loaded:
            assert not tokens_in(url), "a token in a loaded URL: %s" % url
    with open(LOG, errors="replace") as handle:
        log = handle.read()
    assert not tokens_in(log), "tokens in corrald's log: %s" % tokens_in(log)
    assert "console login" in log, "the log does not show the logins at all (is it the right log?)"


def test_the_brain_double_saw_only_well_formed_requests():
    """Every request corrald's harness sent matched Anthropic's documented shape."""
    with open(os.environ["CONSOLE_BRAIN_PROBLEMS"]) as handle:
        problems = [line for line in handle.read().splitlines() if line]
    assert not problems, "requests the API would refuse: %s" % problems


if __name__ == "__main__":
    try:
        run([
            test_unknown_token_is_refused_with_a_message,
            test_tenant_watches_its_agent_session_live,
            test_list_pages_sandbox_pages_and_pool_charts_render_with_data,
            test_another_tenants_session_is_not_found,
            test_operator_sees_every_tenant_and_the_workers,
            test_a_removed_tenants_login_ends_with_a_message,
            test_usable_from_the_keyboard,
            test_readable_without_javascript,
            test_cookies_and_cross_site_posts,
            test_tokens_appear_in_no_url_and_no_log,
            test_the_brain_double_saw_only_well_formed_requests,
        ])
    finally:
        for instance in every_browser:
            instance.quit()
