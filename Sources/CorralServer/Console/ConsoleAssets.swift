import Crypto
import Foundation

/// The console's style sheet, script and icon, compiled into corrald: nothing is fetched from
/// anywhere else, and nothing is built. Pages name them with `?v=` and a hash of their text,
/// so a browser caches them for good and still sees a new version at once.
enum ConsoleAssets {
    static let version: String = {
        let digest = SHA256.hash(data: Data((css + javascript + icon).utf8))
        return digest.prefix(6).map { String(format: "%02x", $0) }.joined()
    }()

    static let icon = """
        <svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="6" \
        fill="#2b5fd9"/><path d="M8 9h16M8 16h16M8 23h16M10 7v18M22 7v18" stroke="#fff" stroke-width="2.5" \
        fill="none"/></svg>
        """

    static let css = """
        :root {
          color-scheme: light dark;
          --bg: #fbfbfa; --fg: #1d1f23; --muted: #5d636e; --line: #d9dce1; --panel: #ffffff;
          --accent: #2b5fd9; --ok: #18794e; --error: #c62a2f; --unknown: #9a4dcc; --running: #2b5fd9;
          --idle: #a35c00; --code: #f3f4f6; --focus: #ffbf47;
          --brain: #2b5fd9; --tools: #18794e; --provision: #d08700; --other: #9aa1ad;
        }
        @media (prefers-color-scheme: dark) {
          :root {
            --bg: #15171a; --fg: #e6e8eb; --muted: #a0a6b1; --line: #32363d; --panel: #1c1f23;
            --accent: #7aa2ff; --ok: #4cc38a; --error: #ff6b6b; --unknown: #c58af9; --running: #7aa2ff;
            --idle: #f0a34a; --code: #23272d; --brain: #7aa2ff; --tools: #4cc38a; --provision: #f0b84a;
            --other: #6b7280;
          }
        }
        * { box-sizing: border-box; }
        html { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
        body { margin: 0; background: var(--bg); color: var(--fg); }
        a { color: var(--accent); }
        :focus-visible { outline: 3px solid var(--focus); outline-offset: 2px; }
        .skip { position: absolute; left: -9999px; top: 0; background: var(--panel); padding: .5em 1em; }
        .skip:focus { left: 1em; z-index: 10; }
        header.top { display: flex; flex-wrap: wrap; align-items: center; gap: 1.5em; padding: .6em 1.5em;
          border-bottom: 1px solid var(--line); background: var(--panel); }
        .brand { font-weight: 700; font-size: 1.15em; text-decoration: none; color: var(--fg); }
        nav a { margin-right: 1em; text-decoration: none; padding: .2em 0; }
        nav a[aria-current="page"] { font-weight: 600; border-bottom: 2px solid var(--accent); }
        .who { margin-left: auto; color: var(--muted); display: flex; gap: .8em; align-items: center; }
        .who form { display: inline; margin: 0; }
        main { padding: 1em 1.5em 3em; max-width: 1400px; }
        main:focus { outline: none; }
        h1 { font-size: 1.4em; margin: .3em 0 .6em; word-break: break-all; }
        h2 { font-size: 1.1em; margin: 1.6em 0 .5em; }
        button, input, select { font: inherit; }
        button { padding: .25em .8em; border: 1px solid var(--line); border-radius: 4px; background: var(--panel);
          color: var(--fg); cursor: pointer; }
        input, select { padding: .25em .4em; border: 1px solid var(--line); border-radius: 4px;
          background: var(--panel); color: var(--fg); }
        form.filters { display: flex; flex-wrap: wrap; gap: .8em; align-items: end; margin: .5em 0 1em; }
        form.filters label { display: flex; flex-direction: column; font-size: .85em; color: var(--muted); }
        table { border-collapse: collapse; width: 100%; background: var(--panel); }
        th, td { text-align: left; padding: .35em .6em; border-bottom: 1px solid var(--line); vertical-align: top; }
        th { font-size: .8em; text-transform: uppercase; letter-spacing: .03em; color: var(--muted); }
        td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
        td .sub { display: block; color: var(--muted); font-size: .85em; overflow-wrap: anywhere; }
        .mono, code, pre, .seq, time { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
        .badge { display: inline-block; padding: 0 .5em; border-radius: 999px; font-size: .8em; font-weight: 600;
          border: 1px solid currentColor; white-space: nowrap; }
        .s-running, .s-preparing, .s-starting { color: var(--running); }
        .s-ok, .s-ended, .s-ready, .s-warm, .s-healthy, .s-connected { color: var(--ok); }
        .s-error, .s-failed, .s-degraded, .s-unhealthy, .s-damaged, .s-lost { color: var(--error); }
        .s-unknown, .s-unreachable { color: var(--unknown); border-style: dashed; }
        .s-idle, .s-stopped, .s-cold, .s-exited { color: var(--idle); }
        .notice { padding: .6em .9em; border-left: 4px solid var(--accent); background: var(--panel); margin: .8em 0; }
        .notice.error { border-color: var(--error); }
        dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .2em 1.2em; margin: 0 0 1em; }
        dl.facts dt { color: var(--muted); }
        dl.facts dd { margin: 0; overflow-wrap: anywhere; }
        .pager { display: flex; gap: 1em; margin: .8em 0; align-items: center; flex-wrap: wrap; }
        .pager .gone { color: var(--muted); }
        ol.timeline { list-style: none; padding: 0; margin: 0; border-top: 1px solid var(--line); }
        ol.timeline > li { border-bottom: 1px solid var(--line); background: var(--panel); }
        ol.timeline summary { padding: .3em .6em; cursor: pointer; display: flex; gap: .7em; align-items: baseline;
          flex-wrap: wrap; }
        ol.timeline summary .seq { color: var(--muted); min-width: 3.5em; text-align: right; }
        ol.timeline summary time { color: var(--muted); font-size: .85em; }
        ol.timeline summary .type { font-weight: 600; min-width: 9em; }
        ol.timeline summary .snip { color: var(--muted); overflow-wrap: anywhere; flex: 1 1 20em; }
        .t-brain-response .type { color: var(--brain); }
        .t-tool-intent .type, .t-tool-result .type { color: var(--tools); }
        .t-sandbox-provisioned .type, .t-sandbox-lost .type { color: var(--provision); }
        .t-context-compacted, .t-harness-woke { background: var(--code) !important; }
        .detail { padding: .3em 1em 1em 4.8em; }
        pre { background: var(--code); padding: .6em .8em; border-radius: 4px; overflow: auto; max-height: 32em;
          white-space: pre-wrap; overflow-wrap: anywhere; margin: .4em 0; font-size: .88em; }
        .text { white-space: pre-wrap; overflow-wrap: anywhere; }
        .cut { color: var(--error); font-style: italic; }
        figure.strip { margin: 1em 0; }
        figure.strip figcaption { font-weight: 600; margin-bottom: .3em; }
        figure.strip svg { width: 100%; height: 26px; display: block; border-radius: 4px; }
        .legend { list-style: none; padding: 0; margin: .4em 0; display: flex; flex-wrap: wrap; gap: .4em 1.4em;
          font-size: .9em; }
        .key { display: inline-block; width: .9em; height: .9em; border-radius: 2px; margin-right: .35em;
          vertical-align: -.1em; }
        .seg-brain { fill: var(--brain); background: var(--brain); }
        .seg-tools { fill: var(--tools); background: var(--tools); }
        .seg-provision { fill: var(--provision); background: var(--provision); }
        .seg-other { fill: var(--other); background: var(--other); }
        .charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(420px, 1fr)); gap: 1em; }
        .chart { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: .6em .8em;
          margin: 0; }
        .chart figcaption { font-weight: 600; }
        .chart svg { width: 100%; height: auto; display: block; }
        .chart .axis { stroke: var(--line); stroke-width: 1; }
        .chart text { fill: var(--muted); font-size: 15px; font-family: system-ui, sans-serif; }
        .chart polyline { fill: none; stroke-width: 2; vector-effect: non-scaling-stroke; }
        .chart circle { stroke: none; }
        .line-1 { stroke: var(--ok); fill: var(--ok); background: var(--ok); }
        .line-2 { stroke: var(--running); fill: var(--running); background: var(--running); }
        .line-3 { stroke: var(--provision); fill: var(--provision); background: var(--provision); }
        .line-4 { stroke: var(--unknown); fill: var(--unknown); background: var(--unknown); }
        .chart polyline.line-1, .chart polyline.line-2, .chart polyline.line-3, .chart polyline.line-4 { fill: none; }
        .login { max-width: 28em; margin: 3em auto; background: var(--panel); padding: 1.5em 2em;
          border: 1px solid var(--line); border-radius: 8px; }
        .login label { display: block; margin: 1em 0 .3em; }
        .login input { width: 100%; }
        .login button { margin-top: 1em; }
        .muted { color: var(--muted); }
        #live-status { color: var(--muted); font-size: .9em; }
        """

    static let javascript = #"""
        // corral console: live updates for pages the server has already rendered. Without this
        // script every page still reads; it only adds new timeline events as they come (over
        // the session's event stream) and refreshes lists now and then. It never builds markup
        // from event data itself: rows arrive rendered and escaped by the server.
        (function () {
          'use strict';

          function toLogin() {
            var next = location.pathname + location.search;
            location.assign('/console/login?reason=ended&next=' + encodeURIComponent(next));
          }

          // Whether the login still works; if not, off to the login page, which says why.
          function checkLogin() {
            return fetch('/console/check', { credentials: 'same-origin', cache: 'no-store' }).then(function (r) {
              if (r.status === 401) { toLogin(); return false; }
              return true;
            }, function () { return true; });
          }

          function nearBottom() {
            return window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 80;
          }

          function startTimeline(list) {
            var last = Number(list.dataset.head) || 0;
            var status = document.getElementById('live-status');
            var source = null;
            var received = 0;
            var gaps = 0;
            var keep = Number(list.dataset.keep) || 2000;
            var retry = null;

            function say(text) { if (status) { status.textContent = text; } }

            function settle(row) {
              var use = row.dataset.resultFor;
              if (!use) { return; }
              var rows = list.querySelectorAll('li[data-intent]');
              for (var i = rows.length - 1; i >= 0; i--) {
                if (rows[i].dataset.intent === use) {
                  rows[i].classList.remove('open');
                  var badge = rows[i].querySelector('.badge');
                  if (badge) {
                    badge.textContent = row.dataset.status || 'done';
                    badge.className = 'badge s-' + (row.dataset.status || 'ok');
                  }
                  return;
                }
              }
            }

            function addRows(html) {
              var follow = nearBottom();
              var template = document.createElement('template');
              template.innerHTML = html;
              var rows = Array.prototype.slice.call(template.content.children);
              var batch = document.createDocumentFragment();
              for (var i = 0; i < rows.length; i++) {
                var row = rows[i];
                var seq = Number(row.dataset.seq);
                if (!(seq > last)) { continue; }
                if (seq !== last + 1) { gaps += seq - last - 1; }
                last = seq;
                received += 1;
                settle(row);
                batch.appendChild(row);
              }
              list.appendChild(batch);
              while (list.children.length > keep) { list.removeChild(list.firstElementChild); }
              list.dataset.head = String(last);
              list.dataset.received = String(received);
              list.dataset.gaps = String(gaps);
              ['event-count', 'event-last'].forEach(function (id) {
                var element = document.getElementById(id);
                if (element) { element.textContent = String(last); }
              });
              if (follow) { window.scrollTo(0, document.documentElement.scrollHeight); }
            }

            // Messages that come faster than frames are drawn wait for the next frame and go
            // in together: one layout a frame, however fast the session is written.
            var pending = [];
            var flushing = false;

            function flush() {
              flushing = false;
              var html = pending.join('');
              pending = [];
              addRows(html);
            }

            function queueRows(html) {
              pending.push(html);
              if (flushing) { return; }
              flushing = true;
              if (window.requestAnimationFrame && !document.hidden) {
                window.requestAnimationFrame(flush);
              } else {
                setTimeout(flush, 16);
              }
            }

            function open() {
              if (source || document.hidden) { return; }
              source = new EventSource(list.dataset.stream + '?from=' + (last + 1));
              source.addEventListener('open', function () { say('Live: new events appear as they are written.'); });
              source.addEventListener('rows', function (event) { queueRows(event.data); });
              source.addEventListener('summary', function (event) {
                var summary = document.getElementById('summary');
                if (summary) { summary.innerHTML = event.data; }
              });
              source.addEventListener('error', function () {
                if (source && source.readyState === EventSource.CLOSED) {
                  source = null;
                  say('The live view stopped; trying again.');
                  checkLogin().then(function (ok) {
                    if (ok && !retry) { retry = setTimeout(function () { retry = null; open(); }, 3000); }
                  });
                } else {
                  say('Reconnecting…');
                }
              });
            }

            function close() {
              if (source) { source.close(); source = null; }
              say('Paused while this tab is hidden.');
            }

            // A browser keeps at most six connections to one server: hidden tabs give theirs
            // back, and pick up where they left off when shown again.
            document.addEventListener('visibilitychange', function () {
              if (document.hidden) { close(); } else { open(); }
            });
            open();
          }

          function startRefresh(region) {
            var every = Number(region.dataset.refresh) || 5000;
            var timer = null;

            function schedule() {
              if (!timer && !document.hidden) { timer = setTimeout(tick, every); }
            }

            function tick() {
              timer = null;
              if (document.hidden) { return; }
              fetch(location.href, {
                credentials: 'same-origin', cache: 'no-store', headers: { 'X-Console-Fragment': region.id }
              }).then(function (r) {
                if (r.status === 401) { toLogin(); return null; }
                return r.ok ? r.text() : null;
              }).then(function (html) {
                // Not while a keyboard user is inside it: the focus would be lost.
                if (html !== null && html !== undefined && !region.contains(document.activeElement)) {
                  var opened = Array.prototype.map.call(region.querySelectorAll('details[open][id]'),
                    function (d) { return d.id; });
                  region.innerHTML = html;
                  opened.forEach(function (id) {
                    var d = document.getElementById(id);
                    if (d) { d.open = true; }
                  });
                }
                schedule();
              }, function () { schedule(); });
            }

            document.addEventListener('visibilitychange', function () {
              if (document.hidden) { clearTimeout(timer); timer = null; } else { schedule(); }
            });
            schedule();
          }

          document.addEventListener('DOMContentLoaded', function () {
            var list = document.getElementById('timeline');
            if (list && list.dataset.stream) { startTimeline(list); }
            Array.prototype.forEach.call(document.querySelectorAll('[data-refresh]'), startRefresh);
          });
        })();
        """#
}
