"""The JS tracker's logic in node with a tiny fake DOM: what it queues, when it flushes, what it sends.

A real-browser test comes later; this one pins the contract with the ingest API (field names, batching, beacon
first and fetch as the fallback) and is skipped where node is not installed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TRACKER = ROOT / "recommendations" / "static" / "recommendations" / "tracker.js"

HARNESS = r"""
const fs = require("fs");
const vm = require("vm");

// --- a DOM just big enough for the tracker ---------------------------------------------------------------------
function parseSelector(sel) {
  const m = sel.match(/^([a-z]*)((?:\.[\w-]+)*)((?:\[[\w-]+\])*)$/);
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

const listeners = {};
const body = new El("body");
const document = {
  readyState: "complete", visibilityState: "visible", body,
  currentScript: new El("script", { "data-endpoint": "/api/events/" }),
  addEventListener: (type, fn) => { (listeners[type] = listeners[type] || []).push(fn); },
  querySelectorAll: (sel) => body.querySelectorAll(sel),
};
const fire = (type, event = {}) => (listeners[type] || []).forEach((fn) => fn({ type, ...event }));

const observers = [];
class IntersectionObserver {
  constructor(callback, options) {
    this.callback = callback; this.options = options; this.targets = new Set(); observers.push(this);
  }
  observe(t) { this.targets.add(t); }
  unobserve(t) { this.targets.delete(t); }
}
const intersect = (target, ratio) => observers.forEach((o) => {
  if (o.targets.has(target)) o.callback([{ target, isIntersecting: ratio > 0, intersectionRatio: ratio }]);
});

const timers = [];
const sent = [];
let beaconAnswer = true;
const navigator = {
  sendBeacon: (url, blob) => { sent.push({ via: "beacon", url, blob }); return beaconAnswer; },
};
const fetchCalls = [];
const fetch = (url, init) => { fetchCalls.push({ url, init }); return Promise.resolve({ ok: true }); };

const page = block("for_you", "rec-1", ["p1", "p2", "p3"]);
const big = block("similar", "rec-2", Array.from({ length: 20 }, (_, i) => "s" + i));
body.append(page); body.append(big);

const window = {
  crypto: globalThis.crypto,
  addEventListener: (type, fn) => { (listeners["window:" + type] = listeners["window:" + type] || []).push(fn); },
};
const sandbox = {
  window, document, navigator, fetch, Blob, IntersectionObserver, JSON, Date, Math, Array, Uint8Array, WeakSet,
  parseInt, isNaN, setTimeout: (fn, ms) => { timers.push({ fn, ms }); return timers.length; }, clearTimeout: () => {},
};
vm.createContext(sandbox);
vm.runInContext(fs.readFileSync(process.argv[2], "utf8"), sandbox);

(async () => {
  const decode = async (call) => JSON.parse(await call.blob.text());
  const report = {};
  report.observed = observers.length === 1 && observers[0].targets.has(page) && observers[0].targets.has(big);
  report.threshold = observers[0].options.threshold;

  intersect(page, 0.3);
  report.pendingAfterGlimpse = window.RecommendationsTracker.pending();
  intersect(page, 0.6);
  intersect(page, 1.0);  // no second impression for the same render
  report.pendingAfterView = window.RecommendationsTracker.pending();
  report.timerDelays = timers.map((t) => t.ms);
  report.sentBeforeTimer = sent.length;
  timers[0].fn();
  report.firstBatch = await decode(sent[0]);
  report.firstBatchType = sent[0].blob.type;
  report.firstBatchUrl = sent[0].url;

  intersect(big, 0.9);  // 20 impressions: flushed at once, no timer needed
  report.bigBatchSize = sent.length === 2 ? (await decode(sent[1])).events.length : null;

  const span = page.children[0].children[0].children[0].children[0];  // ul > li(p1) > a > span
  fire("click", { target: span, button: 0 });
  report.click = (await decode(sent[2])).events;

  beaconAnswer = false;
  fire("auxclick", { target: span, button: 2 });  // right button: not a click on the link
  fire("auxclick", { target: span, button: 1 });  // middle button opens the link in a new tab
  report.fetchCalls = fetchCalls.map((c) => ({ url: c.url, init: { ...c.init, body: JSON.parse(c.init.body) } }));

  beaconAnswer = true;
  const late = block("trending", "rec-3", ["t1"]);
  body.append(late);
  observers[0].observe(late);
  intersect(late, 0.5);
  document.visibilityState = "hidden";
  fire("visibilitychange");
  report.onHidden = (await decode(sent[sent.length - 1])).events.map((e) => e.product_id);
  report.pendingAtEnd = window.RecommendationsTracker.pending();
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


def test_blocks_are_watched_at_half_visibility(report):
    assert report["observed"] is True
    assert report["threshold"] == [0.5]
    assert report["pendingAfterGlimpse"] == 0


def test_impressions_once_per_block_then_sent_on_the_timer(report):
    assert report["pendingAfterView"] == 3
    assert report["timerDelays"] == [2000]
    assert report["sentBeforeTimer"] == 0
    assert report["firstBatchType"] == "application/json"
    assert report["firstBatchUrl"] == "/api/events/"
    events = report["firstBatch"]["events"]
    assert [(e["event_type"], e["product_id"], e["context"]) for e in events] == [
        ("impression", "p1", {"rank": 1}),
        ("impression", "p2", {"rank": 2}),
        ("impression", "p3", {"rank": 3}),
    ]
    assert {(e["placement"], e["recommendation_id"]) for e in events} == {("for_you", "rec-1")}
    assert len({e["event_id"] for e in events}) == 3
    assert all(0 < len(e["event_id"]) <= 64 and e["timestamp"].endswith("Z") for e in events)


def test_twenty_queued_events_flush_at_once(report):
    assert report["bigBatchSize"] == 20


def test_click_is_sent_immediately(report):
    [click] = report["click"]
    assert (click["event_type"], click["product_id"], click["placement"], click["recommendation_id"]) == (
        "click",
        "p1",
        "for_you",
        "rec-1",
    )
    assert click["context"] == {"rank": 1}


def test_refused_beacon_falls_back_to_keepalive_fetch(report):
    [call] = report["fetchCalls"]
    assert call["url"] == "/api/events/"
    init = call["init"]
    assert (init["method"], init["keepalive"], init["credentials"]) == ("POST", True, "same-origin")
    assert init["headers"] == {"Content-Type": "application/json"}
    assert [e["event_type"] for e in init["body"]["events"]] == ["click"]


def test_hiding_the_page_flushes(report):
    assert report["onHidden"] == ["t1"]
    assert report["pendingAtEnd"] == 0
