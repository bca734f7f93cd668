"""The web console in a real headless Chromium against a real apiaryd with real agent processes:
sign in; a pipeline hive's stages and drones; a session run from the console and watched to its
end; a failing agent's dead letter replayed from the console after a fix; an approval granted
from the console; logs followed live; a viewer token that gets no write buttons and whose writes
the API refuses anyway; and the overview's load time with 1,000 hives (reported, not asserted).

One apiaryd and one browser for the module. Screenshots: build/ui-screenshots/.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips (or fails under APIARY_REQUIRE_SERVICES=1)
    expect = None  # type: ignore[assignment]

from e2e.cluster import REPO, Apiaryd, is_ready, wait_drones
from e2e.cluster import wait_for as until

pytestmark = pytest.mark.slow
Obj = dict[str, Any]
CELL = "console"
LOGGING_ECHO = [
    "/bin/sh",
    "-c",
    'while IFS= read -r line; do echo "saw $line" >&2; echo "Echo: $line"; done',
]
BROKEN = [sys.executable, "-c", """
import json, sys
for line in sys.stdin:
    json.loads(line)
    print(json.dumps({"type": "error", "payload": {"message": "upstream model unavailable"}}),
          flush=True)
"""]  # fmt: skip
FIXED = ["/bin/sh", "-c", 'while IFS= read -r line; do echo "Done: $line"; done']
TRACES = "http://traces.example/trace/{traceId}"
RETRY = {"maxRetries": 1, "initialDelaySeconds": 0.05, "maxDelaySeconds": 0.1}


def agentspec(name: str, command: list[str], fmt: str = "text") -> Obj:
    return {"apiVersion": "apiary.io/v1", "kind": "AgentSpec",
            "metadata": {"name": name, "namespace": CELL},
            "spec": {"runtime": {"command": command}, "interface": {"type": "stdin", "format": fmt},
                     "resources": {"requests": {"cpu": 10, "memory": 8_000_000}}}}  # fmt: skip


def pipeline(name: str, stages: list[Obj]) -> Obj:
    meta = {"name": name, "namespace": CELL}
    spec = {"pattern": "pipeline", "stages": stages, "routing": {"retryPolicy": RETRY}}
    return {"apiVersion": "apiary.io/v1", "kind": "Hive", "metadata": meta, "spec": spec}


class Console:
    def __init__(self, server: Apiaryd, viewer: str) -> None:
        self.server = server
        self.url = f"{server.url}/ui/"
        self.viewer = viewer
        self.http = httpx.Client(base_url=server.url, headers=self.auth(server.token), timeout=10)

    @staticmethod
    def auth(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def api(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        headers = self.auth(token) if token else None
        r = self.http.request(method, path, json=body, headers=headers)
        assert r.status_code < 300, (method, path, r.status_code, r.text)
        return r.json()

    def start(self, name: str, hive: str, text: str) -> None:
        """A session of ``hive`` whose first input is ``text`` (sent by the server)."""
        body = {"metadata": {"name": name}, "spec": {"hiveRef": hive, "input": text}}
        self.api("POST", f"/api/v1/cells/{CELL}/sessions", body)

    def session(self, name: str) -> Obj:
        return dict(self.api("GET", f"/api/v1/cells/{CELL}/sessions/{name}"))


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    server = Apiaryd(tmp_path_factory.mktemp("console") / "data").start()
    try:
        with server.client(CELL) as c:
            c.create({"apiVersion": "apiary.io/v1", "kind": "Cell", "metadata": {"name": CELL}})
            for spec in (agentspec("echo", LOGGING_ECHO), agentspec("work", BROKEN, "waggle")):
                c.create(spec)
            c.create(pipeline("pipe", [{"name": "prep", "agentRef": "echo"},
                                       {"name": "shout", "agentRef": "echo"}]))  # fmt: skip
            c.create(pipeline("flaky", [{"name": "work", "agentRef": "work"}]))
            c.create(pipeline("gated", [{"name": "prep", "agentRef": "echo"},
                                        {"name": "review", "agentRef": "echo",
                                         "approval": "required"}]))  # fmt: skip
            wait_drones(c, CELL, lambda ds: len(ds) == 5 and all(map(is_ready, ds)), 30,
                        "the console cell's drones Ready")  # fmt: skip
        time.sleep(0.2)  # a Ready drone's worker subscribes right after its status is written
        token = httpx.post(f"{server.url}/api/v1/tokens", headers=Console.auth(server.token),
                           json={"metadata": {"name": "ui-viewer"},
                                 "spec": {"role": "viewer", "cell": CELL}}).json()  # fmt: skip
        console = Console(server, token["status"]["token"])
        yield console
        console.http.close()
    finally:
        server.stop()


@pytest.fixture
def tabs(console: Console) -> Iterator[Callable[[Any], Any]]:
    """Opens tabs in a context; at the end, none may have raised a script error or asked for
    anything but the console's files and the public API (it acts only through them)."""
    errors: list[str] = []
    asked: list[str] = []

    def open_tab(context: Any) -> Any:
        tab = context.new_page()
        tab.on("pageerror", lambda e: errors.append(str(e)))
        tab.on("request", lambda r: asked.append(r.url))
        return tab

    yield open_tab
    assert errors == [], errors
    origin = console.server.url
    elsewhere = [u for u in asked if u != "about:blank" and not u.startswith(
        (f"{origin}/ui/", f"{origin}/api/v1/", f"{origin}/metrics"))]  # fmt: skip
    assert elsewhere == []


@pytest.fixture
def page(browser: Any, console: Console, tabs: Callable[[Any], Any]) -> Iterator[Any]:
    """A tab signed in as the admin (the token put in sessionStorage before the page runs)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.add_init_script(  # not on about:blank, which has no storage
        f"if (location.protocol === 'http:') {{"
        f"sessionStorage.setItem('apiary.token', {json.dumps(console.server.token)});"
        f"sessionStorage.setItem('apiary.traceUrl', {json.dumps(TRACES)}); }}"
    )
    yield tabs(context)
    context.close()


def ready(tab: Any) -> None:
    """The page has rendered its data, and style.css is applied: layout-dependent reads (an
    element's ``inner_text`` takes its line breaks from the CSS) come after both. Under CI load
    the module can render before the stylesheet lands (a box read "prepecho", not "prep\necho")."""
    tab.wait_for_selector("main[data-ready='true']", timeout=10_000)
    tab.wait_for_function(
        "() => getComputedStyle(document.documentElement).getPropertyValue('--accent') !== ''",
        timeout=10_000,
    )


def assert_accessible(tab: Any) -> None:
    """Every form control has a label, every button a name, every table a caption."""
    problems = tab.evaluate(
        """() => [
          ...[...document.querySelectorAll("input, textarea, select")]
            .filter((e) => !e.labels.length && !e.getAttribute("aria-label"))
            .map((e) => "unlabelled " + (e.id || e.outerHTML)),
          ...[...document.querySelectorAll("button")]
            .filter((b) => !b.textContent.trim() && !b.getAttribute("aria-label"))
            .map((b) => "nameless button " + b.outerHTML),
          ...[...document.querySelectorAll("main table")]
            .filter((t) => !t.caption || !t.caption.textContent.trim())
            .map((t) => "table without caption " + t.id),
        ]"""
    )
    assert problems == []
    low = tab.evaluate(CONTRAST)
    assert low == [], f"text under WCAG AA contrast (4.5:1): {low}"


CONTRAST = """() => {
  const rgb = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const f = (v) => ((v /= 255) <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4);
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = rgb(getComputedStyle(e).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const low = [];
  for (const el of document.querySelectorAll("body *")) {
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own || !el.getClientRects().length || el.closest("#toast")) continue;
    const fg = lum(rgb(getComputedStyle(el).color).slice(0, 3));
    const bg = lum(background(el));
    const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
    const text = el.textContent.trim().slice(0, 30);
    if (ratio < 4.5) low.push(`${el.tagName}.${el.className} "${text}" ${ratio.toFixed(2)}`);
  }
  return low;
}"""


def test_sign_in_shows_the_overview(
    browser: Any, tabs: Callable[[Any], Any], console: Console, shots: Path
) -> None:
    context = browser.new_context()
    tab = tabs(context)
    tab.goto(console.url)
    tab.get_by_label("Bearer token").fill("apiary_nobody_wrong")
    tab.get_by_role("button", name="Sign in").click()
    expect(tab.locator("#signin-error")).to_contain_text("Sign-in failed: 401")
    tab.get_by_label("Bearer token").fill(console.server.token)
    tab.keyboard.press("Enter")  # the form works from the keyboard
    ready(tab)
    expect(tab.locator("#who")).to_have_text("admin · cluster-admin")
    pipe = tab.locator("tr[data-hive='console/pipe']")
    until(lambda: pipe.count() == 2 and "1/1" in pipe.nth(1).inner_text(), 10,
          "pipe's two stages with their drones ready")  # fmt: skip
    assert [pipe.nth(i).get_attribute("data-stage") for i in range(2)] == ["prep", "shout"]
    assert tab.locator("#nodes").inner_text().count("Ready") >= 1
    assert "console" in tab.locator("#cells").inner_text()
    assert_accessible(tab)
    tab.screenshot(path=str(shots / "overview.png"), full_page=True)
    # The token is in this tab's sessionStorage only, never in a cookie or localStorage.
    assert tab.evaluate("sessionStorage.getItem('apiary.token')") == console.server.token
    assert tab.evaluate("localStorage.length") == 0 and context.cookies() == []
    tab.get_by_role("button", name="Sign out").click()
    expect(tab.get_by_label("Bearer token")).to_be_focused()
    assert tab.evaluate("sessionStorage.getItem('apiary.token')") is None
    context.close()


def test_hive_page_shows_the_pipeline_its_drones_and_scales_a_stage(
    page: Any, console: Console, shots: Path
) -> None:
    page.goto(console.url + "#/overview")
    ready(page)
    page.get_by_role("link", name="pipe", exact=True).click()
    ready(page)
    expect(page.locator("h1")).to_have_text("Hive pipe")
    graph = page.locator("#graph")
    expect(graph).to_have_text("input→prepecho→shoutecho→output")  # boxes in order, arrows
    assert graph.get_by_role("listitem").all_inner_texts() == ["prep\necho", "shout\necho"]
    drones = page.locator("#drones tbody tr")
    expect(drones).to_have_count(2)
    for row in drones.all():
        expect(row).to_contain_text("Running")
        expect(row).to_contain_text("ready")
    expect(page.locator("#stages tr[data-stage='shout']")).to_contain_text("1/1")
    page.get_by_label("Replicas for stage shout").fill("2")
    page.locator("#stages tr[data-stage='shout']").get_by_role("button", name="Scale").click()
    expect(page.locator("#toast")).to_contain_text("stage shout scaled to 2")
    expect(page.locator("#stages tr[data-stage='shout']")).to_contain_text("2/2", timeout=20_000)
    expect(drones).to_have_count(3)
    assert_accessible(page)
    page.screenshot(path=str(shots / "hive.png"), full_page=True)
    hive = console.api("GET", f"/api/v1/cells/{CELL}/hives/pipe")
    assert [s.get("replicas") for s in hive["spec"]["stages"]] == [1, 2]
    # Back to 1 from the keyboard alone: Tab to the field, type, Tab to its button, Enter.
    page.locator("h1").focus()
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "replicas-shout":
            break
    page.keyboard.press("Control+A")
    page.keyboard.type("1")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    expect(page.locator("#toast")).to_contain_text("stage shout scaled to 1")
    expect(drones).to_have_count(2, timeout=20_000)  # the watch shows the drone going away


def test_drones_say_why_they_do_not_run(page: Any, console: Console, shots: Path) -> None:
    """One drone keeps crashing (CrashLoopBackOff), one asks for more CPU than any node has."""
    crash = agentspec("crash", ["/bin/sh", "-c", "echo dying >&2; exit 3"])
    huge = agentspec("huge", LOGGING_ECHO)
    huge["spec"]["resources"]["requests"]["cpu"] = 1_000_000
    for spec in (crash, huge):
        console.api("POST", f"/api/v1/cells/{CELL}/agentspecs", spec)
    stages = [{"name": "fall", "agentRef": "crash"}, {"name": "wait", "agentRef": "huge"}]
    console.api("POST", f"/api/v1/cells/{CELL}/hives", pipeline("broken", stages))
    page.goto(console.url + f"#/hive/{CELL}/broken")
    ready(page)
    rows = page.locator("#drones tbody tr")
    fall = rows.filter(has_text="broken-fall-")
    expect(fall).to_contain_text("CrashLoopBackOff", timeout=15_000)
    expect(fall).to_contain_text("Failed")
    wait = rows.filter(has_text="broken-wait-")
    expect(wait).to_contain_text("Pending")
    expect(wait).to_contain_text("cpu")  # the scheduler's reason names what is short
    expect(page.locator("#stages tr[data-stage='fall']")).to_contain_text("0/1")
    assert_accessible(page)
    page.screenshot(path=str(shots / "hive-broken.png"), full_page=True)
    console.api("DELETE", f"/api/v1/cells/{CELL}/hives/broken")


def test_a_session_run_from_the_console_completes_in_the_session_view(
    page: Any, console: Console, shots: Path
) -> None:
    page.goto(console.url + f"#/hive/{CELL}/pipe")
    ready(page)
    page.get_by_label("Input (text, or JSON)").fill("hello bees")
    page.get_by_role("button", name="Run session").click()
    expect(page).to_have_url(re.compile(r"#/session/console/pipe-\w+$"))
    ready(page)
    expect(page.locator("#output")).to_have_text("Echo: Echo: hello bees", timeout=20_000)
    expect(page.locator("#input")).to_have_text("hello bees")
    timeline = page.locator("#timeline")
    expect(timeline.locator(".entry[data-kind='final']")).to_have_count(1)
    # The causal tree: input → dispatch(prep) → output(prep) → dispatch(shout) → … → final.
    dispatches = timeline.locator(".entry[data-kind='dispatch']")
    expect(dispatches).to_have_count(2)
    assert "prep" in dispatches.nth(0).inner_text() and "shout" in dispatches.nth(1).inner_text()
    nested = timeline.locator("li li li .entry[data-kind='output']")
    assert nested.count() >= 1 and "pipe-prep-" in nested.first.inner_text()  # its drone
    expect(page.locator("#phase")).to_contain_text("Running")
    name = page.url.rsplit("/", 1)[1]
    assert console.session(name)["status"]["output"] == "Echo: Echo: hello bees"
    console.api("PUT", f"/api/v1/cells/{CELL}/sessions/{name}/comb/notes", {"value": "bees!"})
    assert page.locator("#traces").count() == 0  # tracing is off: no input has a trace yet
    trace = "0af7651916cd43dd8448eb211c80319c"
    message = {"payload": "traced", "traceparent": f"00-{trace}-b7ad6b7169203331-01"}
    console.api("POST", f"/api/v1/cells/{CELL}/sessions/{name}/messages", message)
    expect(page.locator(".entry[data-kind='final']")).to_have_count(2)  # live, no reload
    link = page.locator("#traces a")
    expect(link).to_have_attribute("href", TRACES.replace("{traceId}", trace))
    page.reload()
    ready(page)
    expect(page.locator("#comb")).to_contain_text("1 keys")
    expect(page.locator("#comb tr", has_text="notes")).to_contain_text("bees!")
    assert_accessible(page)
    page.screenshot(path=str(shots / "session.png"), full_page=True)


def test_the_overview_shows_answers_per_second_between_two_metric_reads(
    browser: Any, tabs: Callable[[Any], Any], console: Console
) -> None:
    context = browser.new_context()
    context.add_init_script(
        f"sessionStorage.setItem('apiary.token', {json.dumps(console.server.token)});"
        "sessionStorage.setItem('apiary.metricsSeconds', '1');"
    )
    tab = tabs(context)
    tab.goto(console.url + "#/overview")
    ready(tab)
    for i in range(3):
        console.start(f"burst{i}", "pipe", f"bee {i}")
    rate = tab.locator("tr[data-hive='console/pipe'][data-stage='prep'] td").nth(-5)

    def answering() -> bool:
        text = rate.inner_text()
        return text not in ("—", "0.0") and float(text) > 0

    until(answering, 10, "pipe's prep stage to show answers per second")
    expect(tab.locator("#metrics-note")).to_contain_text("Answers/s over the last 1 s")
    context.close()


def test_a_dead_letter_is_replayed_from_the_console_after_the_agent_is_fixed(
    page: Any, tabs: Callable[[Any], Any], console: Console, shots: Path
) -> None:
    console.start("job1", "flaky", "hi")
    until(lambda: console.session("job1").get("status", {}).get("reason") == "DeadLettered", 20,
          "job1 dead-lettered")  # fmt: skip
    page.goto(console.url + f"#/dlq/{CELL}/flaky")
    ready(page)
    letter = page.locator("#letters tbody tr[data-letter]")
    expect(letter).to_have_count(1)
    expect(letter).to_contain_text("job1")
    expect(letter).to_contain_text("AgentError")
    letter.get_by_role("button", name="Show").click()
    expect(page.locator("#letters tr.details")).to_contain_text("upstream model unavailable")
    # The session shows both failed attempts; the overview counts them and the open letter.
    page.get_by_role("link", name="job1").click()
    failed = page.locator("#timeline .entry.failed")
    expect(failed).to_have_count(2)
    expect(failed.first).to_contain_text("failed attempt 1")
    expect(page.locator("#phase")).to_contain_text("Failed DeadLettered")
    page.goto(console.url + "#/overview")
    flaky = page.locator("tr[data-hive='console/flaky'] td")

    def counted() -> bool:  # /metrics counts dead letters from a snapshot at most 5 s old
        page.reload()
        ready(page)
        page.wait_for_timeout(300)  # the first /metrics reading
        return flaky.last.inner_text() == "1"

    until(counted, 15, "the overview to count flaky's open dead letter")
    expect(flaky.nth(-2)).to_have_text("2")  # failed attempts of stage work
    prep = page.locator("tr[data-hive='console/pipe'][data-stage='prep'] td")
    assert prep.nth(-4).inner_text().endswith("ms")  # p50 hop latency of an answered stage
    page.goto(console.url + f"#/dlq/{CELL}/flaky")
    ready(page)
    # Fix the agent; once its new drone is Ready, replay from the console.
    spec = console.api("GET", f"/api/v1/cells/{CELL}/agentspecs/work")
    spec["spec"]["runtime"]["command"] = FIXED
    spec["spec"]["interface"]["format"] = "text"
    console.api("PUT", f"/api/v1/cells/{CELL}/agentspecs/work", spec)

    def fixed(ds: list[Obj]) -> bool:
        work = [d for d in ds if d["spec"].get("agentSpec") == "work"]
        return (
            len(work) == 1 and is_ready(work[0]) and work[0]["spec"]["runtime"]["command"] == FIXED
        )

    with console.server.client(CELL) as c:
        wait_drones(c, CELL, fixed, 30, "the fixed drone Ready")
    time.sleep(0.2)
    watching = tabs(page.context)  # the dead session stays open in a second tab
    watching.goto(console.url + f"#/session/{CELL}/job1")
    ready(watching)
    expect(watching.locator("#output")).to_have_text("(none yet)")
    letter.get_by_role("button", name="Replay").click()
    expect(page.locator("#toast")).to_contain_text("replayed")
    until(lambda: console.session("job1")["status"].get("output") == "Done: hi", 20,
          "job1's final after the replay")  # fmt: skip
    expect(watching.locator("#output")).to_have_text("Done: hi")  # its stream came back by itself
    expect(watching.locator("#phase")).to_contain_text("Running")
    watching.close()
    expect(page.locator("#letters")).to_contain_text("No dead letters.", timeout=10_000)
    page.get_by_label("Show resolved letters too").check()
    expect(letter).to_contain_text("Resolved", timeout=10_000)
    assert_accessible(page)
    page.screenshot(path=str(shots / "dead-letters.png"), full_page=True)


def test_a_dead_letter_is_purged_from_the_console(page: Any, console: Console) -> None:
    console.api("POST", f"/api/v1/cells/{CELL}/agentspecs", agentspec("broke", BROKEN, "waggle"))
    console.api("POST", f"/api/v1/cells/{CELL}/hives",
                pipeline("doomed", [{"name": "work", "agentRef": "broke"}]))  # fmt: skip

    def doomed_ready(ds: list[Obj]) -> bool:
        return any(d["spec"].get("agentSpec") == "broke" and is_ready(d) for d in ds)

    with console.server.client(CELL) as c:
        wait_drones(c, CELL, doomed_ready, 30, "doomed's drone Ready")
    time.sleep(0.2)
    console.start("lost", "doomed", "never")
    until(lambda: console.session("lost").get("status", {}).get("reason") == "DeadLettered", 20,
          "lost dead-lettered")  # fmt: skip
    page.goto(console.url + f"#/dlq/{CELL}/doomed")
    ready(page)
    page.on("dialog", lambda d: d.accept())  # "Purge …? Its flow fails for good."
    page.locator("#letters tr[data-letter]").get_by_role("button", name="Purge").click()
    expect(page.locator("#toast")).to_contain_text("purged")
    expect(page.locator("#letters")).to_contain_text("No dead letters.")
    assert console.api("GET", f"/api/v1/cells/{CELL}/hives/doomed/dlq")["items"] == []
    page.goto(console.url + f"#/session/{CELL}/lost")
    expect(page.locator("#timeline .entry[data-kind='error']")).to_contain_text("DeadLetterPurged")
    console.api("DELETE", f"/api/v1/cells/{CELL}/hives/doomed")


def test_an_approval_granted_from_the_console_lets_the_session_finish(
    page: Any, console: Console, shots: Path
) -> None:
    page.goto(console.url + f"#/dlq/{CELL}/gated")
    ready(page)
    console.start("ship", "gated", "ship it")
    console.start("drop", "gated", "drop tables")
    row = page.locator("#approvals tr[data-session='ship']")
    expect(row).to_contain_text("review", timeout=20_000)  # the watch brings it in
    expect(page.locator("#approvals tr[data-session='drop']")).to_be_visible(timeout=20_000)
    assert_accessible(page)
    page.screenshot(path=str(shots / "approvals.png"), full_page=True)
    row.get_by_role("button", name="Approve").click()
    expect(page.locator("#toast")).to_contain_text("approved: 1 released")
    drop = page.locator("#approvals tr[data-session='drop']")
    drop.get_by_label("Reason").fill("too risky")
    drop.get_by_role("button", name="Reject").click()
    expect(page.locator("#toast")).to_contain_text("rejected: 1")
    expect(page.locator("#approvals")).to_contain_text("Nothing waits for approval.")
    status = until(lambda: (s := console.session("drop")["status"]).get("reason") and s, 10,
                   "drop rejected")  # fmt: skip
    assert status["reason"] == "Rejected" and "too risky" in status["message"]
    page.goto(console.url + f"#/session/{CELL}/ship")
    expect(page.locator("#output")).to_have_text("Echo: Echo: ship it", timeout=20_000)


def test_logs_of_a_hive_follow_live(page: Any, console: Console, shots: Path) -> None:
    page.goto(console.url + f"#/logs/{CELL}/hive/pipe")
    ready(page)
    log = page.locator("#log")
    expect(log).to_contain_text("saw hello bees")  # the earlier session's line
    console.start("later", "pipe", "late bee")
    expect(log).to_contain_text("saw Echo: late bee", timeout=15_000)  # followed, not reloaded
    assert_accessible(page)
    page.screenshot(path=str(shots / "logs.png"), full_page=True)
    page.goto(console.url + f"#/hive/{CELL}/pipe")
    ready(page)
    expect(page.locator("#sessions tr", has_text="later")).to_contain_text("Running")
    page.get_by_role("link", name=re.compile(r"^logs of pipe-prep-")).click()  # one drone's
    expect(log).to_contain_text("saw late bee")
    assert "Echo: late bee" not in log.inner_text()  # the shout stage's line is not this drone's


def test_the_hive_page_draws_each_pattern(page: Any, console: Console, shots: Path) -> None:
    """The seeds' hierarchical, swarm, event-driven and composed hives (no AgentSpec, no drone)."""
    for seed in (
        "06-hive-hierarchical",
        "07-hive-swarm",
        "08-hive-event-driven",
        "09-hive-composed",
    ):
        hive = yaml.safe_load((REPO / "examples" / "seeds" / f"{seed}.yaml").read_text())
        hive["metadata"]["namespace"] = "shapes"
        console.api("POST", "/api/v1/cells/shapes/hives", hive)
    graph = page.locator("#graph")
    page.goto(console.url + "#/hive/shapes/hierarchical-hive")
    ready(page)
    expect(graph.locator(".stage.supervisor")).to_contain_text("supervisor")
    workers = graph.get_by_role("list", name="workers").get_by_role("listitem")
    assert [w.split()[0] for w in workers.all_inner_texts()] == ["worker1", "worker2"]
    page.goto(console.url + "#/hive/shapes/swarm-hive")
    ready(page)
    fan = graph.get_by_role("list", name="every stage gets the input").get_by_role("listitem")
    expect(fan).to_have_count(3)
    expect(graph).to_contain_text("all")  # the aggregation
    page.goto(console.url + "#/hive/shapes/event-driven-hive")
    ready(page)
    subscribers = graph.get_by_role("list", name="subscribers").get_by_role("listitem")
    expect(subscribers).to_have_count(2)
    expect(subscribers.first).to_contain_text("filter: all events")
    page.goto(console.url + "#/hive/shapes/composed-hive")
    ready(page)
    expect(graph.locator(".segment")).to_have_count(3)
    expect(graph).to_contain_text("→ events/output →")
    expect(graph).to_contain_text("→ pipeline/output →")
    expect(graph.locator(".segment").nth(1)).to_contain_text("pipeline-stage-stage1")
    expect(page.locator("#stages")).to_contain_text("event-stage-subscriber1")
    assert_accessible(page)
    page.screenshot(path=str(shots / "hive-composed.png"), full_page=True)


def test_a_viewer_sees_no_write_buttons_and_the_api_refuses_them_anyway(
    browser: Any, tabs: Callable[[Any], Any], page: Any, console: Console, shots: Path
) -> None:
    context = browser.new_context()
    tab = tabs(context)
    tab.goto(console.url)
    tab.get_by_label("Bearer token").fill(console.viewer)
    tab.get_by_role("button", name="Sign in").click()
    ready(tab)
    expect(tab.locator("#who")).to_have_text(f"token:ui-viewer · viewer in {CELL}")
    expect(tab.locator("tr[data-hive='console/pipe']").first).to_be_visible()
    expect(tab.locator("#metrics-note")).to_contain_text("need the metrics-reader right (403")
    tab.goto(console.url + f"#/hive/{CELL}/pipe")
    ready(tab)
    expect(tab.locator("#drones tbody tr")).to_have_count(2)
    assert tab.get_by_role("button", name="Scale").count() == 0
    assert tab.get_by_role("button", name="Run session").count() == 0
    console.start("wait2", "gated", "x")
    tab.goto(console.url + f"#/dlq/{CELL}/gated")
    ready(tab)
    expect(tab.locator("#approvals tr[data-session='wait2']")).to_contain_text("—", timeout=20_000)
    for name in ("Approve", "Reject", "Replay", "Purge", "Replay all pending"):
        assert tab.get_by_role("button", name=name).count() == 0, name
    tab.goto(console.url + f"#/dlq/{CELL}/flaky")
    ready(tab)
    tab.get_by_label("Show resolved letters too").check()
    letter = tab.locator("#letters tbody tr[data-letter]")
    expect(letter).to_contain_text("job1")  # the viewer reads the dead letter...
    assert letter.get_by_role("button").all_inner_texts() == ["Show"]  # ...and may only look
    assert_accessible(tab)
    tab.screenshot(path=str(shots / "viewer.png"), full_page=True)
    # The buttons are only hidden: the API itself refuses the viewer, called from the page.
    calls = {
        "scale": (
            "PUT",
            f"/api/v1/cells/{CELL}/hives/pipe/scale",
            {"replicas": 3, "stage": "shout"},
        ),
        "replay": ("POST", f"/api/v1/cells/{CELL}/hives/flaky/dlq/replay", {}),
        "approve": ("POST", f"/api/v1/cells/{CELL}/sessions/wait2/approve", {}),
        "reject": ("POST", f"/api/v1/cells/{CELL}/sessions/wait2/reject", {}),
    }
    for what, (method, path, body) in calls.items():
        status = tab.evaluate(
            """async ([method, path, body]) => (await fetch(path, {
                method, body: JSON.stringify(body),
                headers: {"Authorization": "Bearer " + sessionStorage.getItem("apiary.token"),
                          "Content-Type": "application/json"}})).status""",
            [method, path, body],
        )
        assert status == 403, (what, status)
    assert console.session("wait2")["status"]["phase"] == "WaitingForApproval"
    # A token revoked while signed in: the next answer is a 401 and the console signs out.
    console.api("DELETE", "/api/v1/tokens/ui-viewer")
    tab.goto(console.url + f"#/hive/{CELL}/gated")
    expect(tab.locator("#signin-error")).to_contain_text("Signed out")
    context.close()
    # What the viewer could not do, an admin does from the session page itself.
    page.goto(console.url + f"#/session/{CELL}/wait2")
    ready(page)
    page.get_by_role("group", name="approval of session wait2").get_by_role(
        "button", name="Approve"
    ).click()
    expect(page.locator("#output")).to_have_text("Echo: Echo: x", timeout=20_000)
    expect(page.locator("#approval")).to_be_empty()


def test_the_sessions_page_reads_a_cells_sessions_a_page_at_a_time(
    page: Any, console: Console, shots: Path
) -> None:
    console.api("POST", "/api/v1/cells", {"metadata": {"name": "talk"}})
    for i in range(150):  # plain sessions, no input: the objects only
        body = {"metadata": {"name": f"s{i:03d}"}, "spec": {"hiveRef": "pipe"}}
        console.api("POST", "/api/v1/cells/talk/sessions", body)
    page.goto(console.url + "#/overview")
    ready(page)
    page.get_by_role("link", name="sessions of talk").click()
    ready(page)
    rows = page.locator("#session-list tbody tr")
    expect(rows).to_have_count(100)
    page.locator(".pager a[rel=next]").click()
    expect(page.locator(".pager")).to_contain_text(re.compile(r"sessions 101\D150"))
    expect(rows).to_have_count(50)
    assert page.locator(".pager a[rel=next]").count() == 0  # the last page
    console.api("POST", "/api/v1/cells/talk/sessions/s120/close")
    expect(page.locator("tr[data-session='s120']")).to_contain_text("Closed")  # live
    console.api("POST", "/api/v1/cells/talk/sessions", {"metadata": {"name": "s999"},
                "spec": {"hiveRef": "pipe"}})  # fmt: skip
    expect(page.locator("#new-sessions")).to_contain_text("1 sessions created since")
    assert_accessible(page)
    page.screenshot(path=str(shots / "sessions.png"), full_page=True)


def test_overview_load_time_with_1000_hives(page: Any, console: Console, shots: Path) -> None:
    """Reported, not asserted: build/ui-screenshots/overview-1000-hives.json."""
    many = "many"
    console.api("POST", "/api/v1/cells", {"metadata": {"name": many}})
    stages = [{"name": "a", "agentRef": "none"}, {"name": "b", "agentRef": "none"}]

    def create(i: int) -> None:  # no AgentSpec behind them: no drones, only the objects
        body = {
            "metadata": {"name": f"h{i:04d}"},
            "spec": {"pattern": "pipeline", "stages": stages},
        }
        console.api("POST", f"/api/v1/cells/{many}/hives", body)

    for i in range(1000):
        create(i)
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        page.goto(console.url + "#/overview")
        ready(page)
        timings.append(
            {
                "wallMs": round((time.perf_counter() - started) * 1000),
                "pageMs": int(page.locator("main").get_attribute("data-load-ms")),
            }
        )
        page.goto("about:blank")
    page.goto(console.url + "#/overview")
    ready(page)
    expect(page.locator("#hives tbody th[scope=row]")).to_have_count(100)  # one page of hives
    # Live through watches, not polling: an idle overview makes no request for seconds on end.
    page.wait_for_timeout(500)  # its watches are open
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url))
    page.wait_for_timeout(2000)
    assert asked == []
    started = time.perf_counter()
    page.locator("#next-page").click()
    expect(page.locator(".pager")).to_contain_text(re.compile(r"hives 101\D200"))
    next_ms = round((time.perf_counter() - started) * 1000)
    expect(page.locator("#hives tbody th[scope=row]").first).to_have_text("h0097")
    page.locator(".pager a[rel=prev]").click()
    expect(page.locator(".pager")).to_contain_text(re.compile(r"Page 1: hives 1\D100"))
    page.locator(".pager a[rel=next]").click()
    expect(page.locator("#hives tbody th[scope=row]").first).to_have_text("h0097")
    page.screenshot(path=str(shots / "overview-1000-hives.png"))
    report = {"hives": 1000 + 3, "pageSize": 100, "loads": timings, "nextPageMs": next_ms}
    (shots / "overview-1000-hives.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\noverview with 1,003 hives: {report}")
