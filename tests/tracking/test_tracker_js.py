"""The JS tracker's logic in node with a tiny fake DOM: which clicks it sends, how, and that it sends nothing else.

Impressions are recorded server-side when a block renders, so the tracker must never send one; a click leaves at
once (beacon first, keepalive fetch as the fallback), and what no transport took is kept and sent when the page hides.
The browser test in tests/e2e covers the real thing; this one pins the contract with the ingest API and is skipped
where node is not installed. Every scenario runs in a fresh sandbox.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TRACKER = ROOT / "recommendations" / "static" / "recommendations" / "tracker.js"

HARNESS = r"""
const fs = require("fs");
const vm = require("vm");
const SOURCE = fs.readFileSync(process.argv[2], "utf8");

// --- a DOM just big enough for the tracker ---------------------------------------------------------------------
function parseSelector(sel) {
  const m = sel.match(/^([a-z]*)((?:\.[\w-]+)*)((?:\[[\w-]+\])*)$/);
  if (!m) throw new Error("selector the fake DOM does not know: " + sel);
  return {
    tag: m[1] || null,
    classes: (m[2].match(/[\w-]+/g) || []),
    attrs: (m[3].match(/[\w-]+/g) || []),
  };
}
class El {
  constructor(tag, attrs = {}, children = []) {
    this.tagName = tag.toUpperCase(); this.nodeType = 1; this.attrs = attrs; this.children = []; this.parentNode = null;
    children.forEach((c) => this.append(c));
  }
  append(child) { child.parentNode = this; this.children.push(child); return child; }
  getAttribute(name) { return name in this.attrs ? String(this.attrs[name]) : null; }
  matches(sel) {
    return sel.split(",").some((one) => {
      const s = parseSelector(one.trim());
      const classes = (this.attrs.class || "").split(/\s+/);
      return (!s.tag || s.tag.toUpperCase() === this.tagName) && s.classes.every((c) => classes.includes(c)) &&
        s.attrs.every((a) => a in this.attrs);
    });
  }
  closest(sel) { for (let n = this; n && n.matches; n = n.parentNode) if (n.matches(sel)) return n; return null; }
  querySelectorAll(sel) {
    const out = [];
    const walk = (n) => n.children.forEach((c) => { if (c.matches(sel)) out.push(c); walk(c); });
    walk(this);
    return out;
  }
}
function block(placement, recId, productIds) {
  return new El("section", { class: "rec-block", "data-rec-placement": placement, "data-rec-id": recId },
    [new El("ul", { class: "rec-items" }, productIds.map((pid, i) =>
      new El("li", { class: "rec-item", "data-rec-product": pid, "data-rec-rank": i + 1 },
        [new El("a", { class: "rec-link", href: "/p/" + pid }, [new El("span", { class: "rec-name" })])])))]);
}
// The span inside the link of the item at `index` (ul > li > a > span).
const spanOf = (b, index) => b.children[0].children[index].children[0].children[0];

// --- one page with the tracker loaded: its listeners, what it sent, and knobs for the transports ------------------
function loadPage({ endpoint = "/api/events/", fetchMode = "ok", loads = 1 } = {}) {
  const listeners = {};
  const on = (key) => (type, fn) => { (listeners[key + type] = listeners[key + type] || []).push(fn); };
  const body = new El("body");
  const scriptAttrs = endpoint === null ? {} : { "data-endpoint": endpoint };
  const document = {
    readyState: "complete", visibilityState: "visible", body,
    currentScript: new El("script", scriptAttrs),
    addEventListener: on(""),
    querySelectorAll: (sel) => body.querySelectorAll(sel),
    querySelector: (sel) => body.querySelectorAll(sel)[0] || null,
  };
  const window = { crypto: globalThis.crypto, addEventListener: on("window:") };
  const page = {
    body, document, window, listeners, beacons: [], fetches: [], timers: [], observersMade: 0, observed: 0,
    beaconAnswer: true, beaconThrows: false, fetchMode,
  };
  page.fire = (type, event = {}) => (listeners[type] || []).forEach((fn) => fn({ type, ...event }));
  page.fireWindow = (type, event = {}) => (listeners["window:" + type] || []).forEach((fn) => fn({ type, ...event }));
  page.click = (target, button = 0) => page.fire("click", { target, button });
  page.pending = () => window.RecommendationsTracker.pending();
  page.decode = async (blob) => JSON.parse(await blob.text());
  page.sentEvents = async () => {
    const out = [];
    for (const b of page.beacons) out.push(...(await page.decode(b.blob)).events);
    for (const f of page.fetches) out.push(...JSON.parse(f.init.body).events);
    return out;
  };

  const navigator = {
    sendBeacon: (url, blob) => {
      if (page.beaconThrows) throw new TypeError("beacon refused");
      if (page.beaconAnswer) page.beacons.push({ url, blob });
      return page.beaconAnswer;
    },
  };
  const fetch = (url, init) => {
    if (page.fetchMode === "throws") throw new TypeError("fetch refused");
    page.fetches.push({ url, init });
    return page.fetchMode === "rejects" ? Promise.reject(new TypeError("offline")) : Promise.resolve({ ok: true });
  };
  // Observers that would see every block at once: if the tracker used them, impressions would follow.
  class IntersectionObserver {
    constructor(callback) { page.observersMade++; this.callback = callback; }
    observe(target) {
      page.observed++;
      this.callback([{ target, isIntersecting: true, intersectionRatio: 1 }], this);
    }
    unobserve() {}
    disconnect() {}
  }
  class MutationObserver {
    constructor(callback) { page.observersMade++; this.callback = callback; }
    observe(target) {
      page.observed++;
      const later = block("trending", "rec-late", ["t1", "t2"]);
      body.append(later);
      this.callback([{ addedNodes: [later] }], this);
    }
    disconnect() {}
  }
  const sandbox = {
    window, document, navigator, Blob, IntersectionObserver, MutationObserver, JSON, Date, Math, Array,
    Uint8Array, WeakSet, parseInt, isNaN, Promise, TypeError,
    setTimeout: (fn, ms) => { page.timers.push({ fn, ms }); return page.timers.length; }, clearTimeout: () => {},
    setInterval: (fn, ms) => { page.timers.push({ fn, ms }); return page.timers.length; }, clearInterval: () => {},
    requestAnimationFrame: (fn) => { page.timers.push({ fn, ms: 0 }); return page.timers.length; },
  };
  if (fetchMode !== "absent") sandbox.fetch = fetch;
  page.sandbox = sandbox;

  page.forYou = body.append(block("for_you", "rec-1", ["p1", "p2", "p3"]));
  page.similar = body.append(block("similar", "rec-2", ["s1", "s2"]));
  page.other = body.append(new El("a", { class: "rec-link", href: "/elsewhere" }, [new El("span")]));
  page.plain = page.forYou.children[0].children[0].append(new El("a", { class: "more", href: "/p/p1#reviews" }));
  // A shop's own card inside an item: the title link carries no rec class, the form's button is no link.
  const card = page.similar.children[0].children[1].append(new El("article", { class: "card" }));
  const titleLink = new El("a", { href: "/p/s2" }, [new El("span")]);
  page.cardTitle = card.append(new El("h3", { class: "card-title" }, [titleLink]));
  page.button = card.append(new El("form", {}, [new El("button", { type: "submit" })])).children[0];
  // Half-built markup: a block with no recommendation id, an item with no product id.
  page.noRecId = body.append(new El("section", { class: "rec-block", "data-rec-placement": "for_you" },
    [new El("div", { class: "rec-item", "data-rec-product": "n1" }, [new El("a", { class: "rec-link" })])]));
  page.noProduct = body.append(new El("section",
    { class: "rec-block", "data-rec-placement": "for_you", "data-rec-id": "r" },
    [new El("div", { class: "rec-item" }, [new El("a", { class: "rec-link" })])]));
  vm.createContext(sandbox);
  for (let i = 0; i < loads; i++) vm.runInContext(SOURCE, sandbox);
  return page;
}
const settle = () => new Promise((resolve) => setImmediate(resolve));

const scenarios = {
  async click_is_sent_at_once() {
    const page = loadPage();
    page.click(spanOf(page.similar, 1));
    const sentAtOnce = page.beacons.length;
    return {
      sentAtOnce, pending: page.pending(), url: page.beacons[0].url, type: page.beacons[0].blob.type,
      events: (await page.decode(page.beacons[0].blob)).events, fetches: page.fetches.length,
    };
  },
  async two_clicks_get_distinct_ids() {
    const page = loadPage();
    page.click(spanOf(page.forYou, 0));
    page.click(spanOf(page.forYou, 2));
    return { events: await page.sentEvents() };
  },
  async aux_buttons() {
    const page = loadPage();
    page.fire("auxclick", { target: spanOf(page.forYou, 1), button: 2 });  // right button: a context menu
    const afterRight = (await page.sentEvents()).length + page.pending();
    page.fire("auxclick", { target: spanOf(page.forYou, 1), button: 1 });  // middle: opens the link in a new tab
    return { afterRight, events: await page.sentEvents() };
  },
  async refused_beacon_falls_back_to_fetch() {
    const page = loadPage();
    page.beaconAnswer = false;
    page.click(spanOf(page.forYou, 0));
    page.beaconAnswer = true;
    page.beaconThrows = true;  // a browser that refuses a JSON Blob by throwing
    page.click(spanOf(page.forYou, 1));
    await settle();
    return {
      beacons: page.beacons.length, pending: page.pending(),
      fetches: page.fetches.map((c) => ({ url: c.url, init: { ...c.init, body: JSON.parse(c.init.body) } })),
    };
  },
  async clicks_outside_rec_links() {
    const page = loadPage();
    page.click(page.other.children[0]);  // a rec-link outside any block
    page.click(page.button);  // a button (a card's "add to cart" form) inside a rec item
    page.click(page.forYou);  // the block itself
    page.click(page.noRecId.children[0].children[0]);
    page.click(page.noProduct.children[0].children[0]);
    page.click(page.body);
    page.click(null);
    page.click({ nodeType: 3 });  // a text node: no closest()
    return { sent: (await page.sentEvents()).length, pending: page.pending() };
  },
  async any_link_inside_an_item_counts() {
    const page = loadPage();
    page.click(page.plain);  // a second link of the first for_you item
    page.click(page.cardTitle.children[0].children[0]);  // the span inside a card's title link, second similar item
    return { events: await page.sentEvents(), pending: page.pending() };
  },
  async without_an_endpoint() {
    const page = loadPage({ endpoint: null });
    const listenerTypes = Object.keys(page.listeners);
    page.click(spanOf(page.forYou, 0));
    page.document.visibilityState = "hidden";
    page.fire("visibilitychange");
    page.fireWindow("pagehide");
    return {
      listenerTypes, api: typeof page.window.RecommendationsTracker, loaded: page.window.__recTrackerLoaded === true,
      beacons: page.beacons.length, fetches: page.fetches.length,
    };
  },
  async loaded_twice_counts_a_click_once() {
    const page = loadPage({ loads: 2 });
    page.click(spanOf(page.forYou, 0));
    return { sent: (await page.sentEvents()).length, clickListeners: (page.listeners.click || []).length };
  },
  async no_impressions() {
    const page = loadPage();
    for (const t of page.timers.splice(0)) t.fn();
    page.body.append(block("bought_together", "rec-9", ["b1"]));  // a block added after load
    page.fire("scroll"); page.fireWindow("scroll"); page.fireWindow("load");
    for (const t of page.timers.splice(0)) t.fn();
    const pendingBeforeHide = page.pending();
    page.document.visibilityState = "hidden";
    page.fire("visibilitychange");
    page.fireWindow("pagehide");
    await settle();
    const quiet = {
      observersMade: page.observersMade, observed: page.observed, pendingBeforeHide,
      sent: (await page.sentEvents()).length,
    };
    page.document.visibilityState = "visible";
    page.click(spanOf(page.forYou, 0));
    page.document.visibilityState = "hidden";
    page.fire("visibilitychange");
    await settle();
    return { ...quiet, typesAfterAClick: (await page.sentEvents()).map((e) => e.event_type) };
  },
  async kept_clicks_go_when_the_page_hides() {
    const page = loadPage({ fetchMode: "absent" });
    page.beaconAnswer = false;  // e.g. the beacon quota is full, and no fetch
    page.click(spanOf(page.forYou, 0));
    page.click(spanOf(page.similar, 0));
    const keptAfterClicks = page.pending();
    page.beaconAnswer = true;
    page.fire("visibilitychange");  // still visible: nothing to do
    const pendingWhileVisible = page.pending();
    const beaconsWhileVisible = page.beacons.length;
    page.document.visibilityState = "hidden";
    page.fire("visibilitychange");
    return {
      keptAfterClicks, pendingWhileVisible, beaconsWhileVisible, beacons: page.beacons.length,
      products: (await page.sentEvents()).map((e) => e.product_id), pending: page.pending(),
    };
  },
  async failed_fetch_is_retried_on_pagehide() {
    const page = loadPage({ fetchMode: "rejects" });
    page.beaconAnswer = false;
    page.click(spanOf(page.forYou, 2));
    const pendingRightAfter = page.pending();
    await settle();
    const pendingAfterFailure = page.pending();
    const firstTry = JSON.parse(page.fetches[0].init.body).events[0];
    page.beaconAnswer = true;
    page.fireWindow("pagehide");
    const retried = page.beacons.length ? (await page.decode(page.beacons[0].blob)).events : [];
    return { pendingRightAfter, pendingAfterFailure, firstTry, retried, pending: page.pending() };
  },
  async throwing_transports_keep_the_click() {
    const page = loadPage({ fetchMode: "throws" });
    page.beaconThrows = true;
    page.click(spanOf(page.forYou, 1));
    const kept = page.pending();
    page.beaconThrows = false;
    page.window.RecommendationsTracker.flush();
    return { kept, products: (await page.sentEvents()).map((e) => e.product_id), pending: page.pending() };
  },
  async queue_is_capped_and_sent_in_batches() {
    const page = loadPage({ fetchMode: "absent" });
    page.beaconAnswer = false;
    const items = [page.forYou, page.similar].flatMap((b) => b.querySelectorAll(".rec-item"));
    for (let i = 0; i < 501; i++) page.click(items[i % items.length].children[0]);
    const kept = page.pending();
    page.beaconAnswer = true;
    page.document.visibilityState = "hidden";
    page.fire("visibilitychange");
    const batches = [];
    for (const b of page.beacons) batches.push((await page.decode(b.blob)).events.length);
    const first = (await page.decode(page.beacons[0].blob)).events[0].product_id;
    return { kept, batches, first, pending: page.pending() };
  },
};

(async () => {
  const report = {};
  for (const [name, run] of Object.entries(scenarios)) {
    try {
      report[name] = await run();
    } catch (err) {
      report[name] = { error: String(err && err.stack || err) };
    }
  }
  process.stdout.write(JSON.stringify(report));
})();
"""


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    harness = tmp_path_factory.mktemp("tracker") / "harness.js"
    harness.write_text(HARNESS)
    result = subprocess.run([node, str(harness), str(TRACKER)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def scenario(report: dict, name: str) -> dict:
    """One scenario's result; a scenario that threw fails its test with the node stack."""
    result = report[name]
    assert "error" not in result, result.get("error")
    return result


def test_click_is_sent_at_once_with_the_blocks_fields(report):
    r = scenario(report, "click_is_sent_at_once")
    assert (r["sentAtOnce"], r["pending"], r["fetches"]) == (1, 0, 0)
    assert (r["url"], r["type"]) == ("/api/events/", "application/json")
    [click] = r["events"]
    assert set(click) == {
        "event_id",
        "event_type",
        "timestamp",
        "placement",
        "recommendation_id",
        "product_id",
        "context",
    }
    assert (click["event_type"], click["placement"], click["recommendation_id"], click["product_id"]) == (
        "click",
        "similar",
        "rec-2",
        "s2",
    )
    assert click["context"] == {"rank": 2}
    assert 0 < len(click["event_id"]) <= 64
    assert click["timestamp"].endswith("Z") and "T" in click["timestamp"]


def test_each_click_has_its_own_event_id(report):
    events = scenario(report, "two_clicks_get_distinct_ids")["events"]
    assert [(e["product_id"], e["context"]["rank"]) for e in events] == [("p1", 1), ("p3", 3)]
    assert len({e["event_id"] for e in events}) == 2


def test_only_the_middle_button_auxclick_counts(report):
    r = scenario(report, "aux_buttons")
    assert r["afterRight"] == 0
    assert [(e["event_type"], e["product_id"], e["context"]) for e in r["events"]] == [("click", "p2", {"rank": 2})]


def test_refused_or_throwing_beacon_falls_back_to_keepalive_fetch(report):
    r = scenario(report, "refused_beacon_falls_back_to_fetch")
    assert (r["beacons"], r["pending"]) == (0, 0)
    assert len(r["fetches"]) == 2
    for call, product in zip(r["fetches"], ["p1", "p2"], strict=True):
        assert call["url"] == "/api/events/"
        init = call["init"]
        assert (init["method"], init["keepalive"], init["credentials"]) == ("POST", True, "same-origin")
        assert init["headers"] == {"Content-Type": "application/json"}
        assert [(e["event_type"], e["product_id"]) for e in init["body"]["events"]] == [("click", product)]


def test_clicks_outside_a_rec_link_in_a_block_send_nothing(report):
    assert scenario(report, "clicks_outside_rec_links") == {"sent": 0, "pending": 0}


def test_any_link_inside_an_item_counts_not_only_a_rec_link(report):
    r = scenario(report, "any_link_inside_an_item_counts")
    assert r["pending"] == 0
    assert [(e["placement"], e["product_id"], e["context"]["rank"]) for e in r["events"]] == [
        ("for_you", "p1", 1),
        ("similar", "s2", 2),
    ]


def test_without_a_data_endpoint_the_tracker_does_nothing(report):
    r = scenario(report, "without_an_endpoint")
    assert r == {"listenerTypes": [], "api": "undefined", "loaded": False, "beacons": 0, "fetches": 0}


def test_a_second_copy_of_the_script_does_not_double_clicks(report):
    assert scenario(report, "loaded_twice_counts_a_click_once") == {"sent": 1, "clickListeners": 1}


def test_no_impression_is_ever_sent(report):
    r = scenario(report, "no_impressions")
    # The harness's observers report every block fully visible and a block added later: using them would queue
    # impressions, so they must not be used at all.
    assert (r["observersMade"], r["observed"]) == (0, 0)
    assert (r["pendingBeforeHide"], r["sent"]) == (0, 0)
    assert r["typesAfterAClick"] == ["click"]


def test_clicks_no_transport_took_are_kept_and_sent_when_the_page_hides(report):
    r = scenario(report, "kept_clicks_go_when_the_page_hides")
    assert r["keptAfterClicks"] == 2
    assert (r["pendingWhileVisible"], r["beaconsWhileVisible"]) == (2, 0)
    assert (r["beacons"], r["products"], r["pending"]) == (1, ["p1", "s1"], 0)


def test_a_failed_fetch_is_retried_on_pagehide_with_the_same_event_id(report):
    r = scenario(report, "failed_fetch_is_retried_on_pagehide")
    assert (r["pendingRightAfter"], r["pendingAfterFailure"]) == (0, 1)
    [retry] = r["retried"]
    assert retry == r["firstTry"]  # same event_id: the server ignores it if the first try did arrive
    assert r["pending"] == 0


def test_a_click_survives_transports_that_throw(report):
    assert scenario(report, "throwing_transports_keep_the_click") == {"kept": 1, "products": ["p2"], "pending": 0}


def test_the_queue_keeps_the_newest_500_and_sends_them_in_batches_of_100(report):
    r = scenario(report, "queue_is_capped_and_sent_in_batches")
    assert r["kept"] == 500
    assert r["batches"] == [100] * 5
    assert r["first"] == "p2"  # the first of 501 clicks (p1) was dropped
    assert r["pending"] == 0
