/*
 * Recommendation feedback: impressions and clicks of recommendation blocks, sent to the ingest API.
 *
 * Markup (recommendations/block.html): `.rec-block[data-rec-placement][data-rec-id]` holding
 * `.rec-item[data-rec-product][data-rec-rank]` items, each with an `a.rec-link`.
 * An impression per item is recorded once per rendered block, when at least half of the block is on screen;
 * a click when a shopper follows a rec link. Events queue up and leave in batches with navigator.sendBeacon
 * (survives page unload; fetch with keepalive where a beacon is unavailable or refused).
 * The endpoint comes from the script tag: <script src=".../tracker.js" data-endpoint="/api/events/" defer>.
 * Plain ES2017, no dependencies; tracking must never break the page, so every entry point swallows errors.
 */
(function () {
  "use strict";

  var script = document.currentScript;
  var endpoint = script && script.getAttribute("data-endpoint");
  if (!endpoint || window.__recTrackerLoaded) {
    return;
  }
  window.__recTrackerLoaded = true;

  var FLUSH_DELAY_MS = 2000;
  var FLUSH_AT = 20;
  var MAX_PER_REQUEST = 100;
  var MAX_QUEUE = 500; // a page that cannot send keeps at most this many, dropping the oldest
  var BLOCK_SELECTOR = ".rec-block[data-rec-placement][data-rec-id]";
  var ITEM_SELECTOR = ".rec-item[data-rec-product]";

  var queue = [];
  var timer = null;
  var seenBlocks = new WeakSet();
  var observer = null;

  function randomId() {
    var c = window.crypto;
    if (c && typeof c.randomUUID === "function") {
      return c.randomUUID();
    }
    var bytes = new Uint8Array(16);
    if (c && typeof c.getRandomValues === "function") {
      c.getRandomValues(bytes);
    } else {
      for (var i = 0; i < bytes.length; i++) {
        bytes[i] = Math.floor(Math.random() * 256);
      }
    }
    return Array.prototype.map.call(bytes, function (b) {
      return (b + 256).toString(16).slice(1);
    }).join("");
  }

  function eventFor(type, block, item) {
    var rank = parseInt(item.getAttribute("data-rec-rank"), 10);
    return {
      event_id: randomId(),
      event_type: type,
      timestamp: new Date().toISOString(),
      placement: block.getAttribute("data-rec-placement"),
      recommendation_id: block.getAttribute("data-rec-id"),
      product_id: item.getAttribute("data-rec-product"),
      context: { rank: isNaN(rank) ? null : rank },
    };
  }

  function enqueue(event) {
    queue.push(event);
    if (queue.length > MAX_QUEUE) {
      queue.splice(0, queue.length - MAX_QUEUE);
    }
    if (queue.length >= FLUSH_AT) {
      flush();
    } else if (timer === null) {
      timer = setTimeout(flush, FLUSH_DELAY_MS);
    }
  }

  function send(events) {
    var json = JSON.stringify({ events: events });
    try {
      if (navigator.sendBeacon && navigator.sendBeacon(endpoint, new Blob([json], { type: "application/json" }))) {
        return;
      }
    } catch (err) {
      // Some browsers refuse beacons with a JSON body; fetch below does the same job.
    }
    if (typeof fetch === "function") {
      fetch(endpoint, {
        method: "POST",
        body: json,
        headers: { "Content-Type": "application/json" },
        credentials: "same-origin",
        keepalive: true,
      }).catch(function () {});
    }
  }

  function flush() {
    if (timer !== null) {
      clearTimeout(timer);
      timer = null;
    }
    while (queue.length) {
      send(queue.splice(0, MAX_PER_REQUEST));
    }
  }

  function recordImpressions(block) {
    if (seenBlocks.has(block)) {
      return;
    }
    seenBlocks.add(block);
    var items = block.querySelectorAll(ITEM_SELECTOR);
    for (var i = 0; i < items.length; i++) {
      enqueue(eventFor("impression", block, items[i]));
    }
  }

  function watch(block) {
    if (seenBlocks.has(block)) {
      return;
    }
    if (observer) {
      observer.observe(block);
    } else {
      recordImpressions(block); // no IntersectionObserver: count the block as seen when it renders
    }
  }

  function watchWithin(root) {
    if (root.matches && root.matches(BLOCK_SELECTOR)) {
      watch(root);
    }
    if (root.querySelectorAll) {
      var blocks = root.querySelectorAll(BLOCK_SELECTOR);
      for (var i = 0; i < blocks.length; i++) {
        watch(blocks[i]);
      }
    }
  }

  function onClick(event) {
    try {
      if (event.type === "auxclick" && event.button !== 1) {
        return; // only the middle button opens a link
      }
      var target = event.target;
      var link = target && target.closest ? target.closest("a.rec-link") : null;
      if (!link) {
        return;
      }
      var item = link.closest(ITEM_SELECTOR);
      var block = item && item.closest(BLOCK_SELECTOR);
      if (!block) {
        return;
      }
      enqueue(eventFor("click", block, item));
      flush(); // the page is probably about to unload
    } catch (err) {
      // never break navigation
    }
  }

  function start() {
    if (typeof IntersectionObserver === "function") {
      observer = new IntersectionObserver(
        function (entries) {
          for (var i = 0; i < entries.length; i++) {
            var entry = entries[i];
            if (entry.isIntersecting && entry.intersectionRatio >= 0.5) {
              observer.unobserve(entry.target);
              recordImpressions(entry.target);
            }
          }
        },
        { threshold: [0.5] }
      );
    }
    watchWithin(document);
    // Blocks rendered later (infinite scroll, client-side updates) are new elements and get their own impressions.
    if (typeof MutationObserver === "function" && document.body) {
      new MutationObserver(function (mutations) {
        for (var i = 0; i < mutations.length; i++) {
          var added = mutations[i].addedNodes;
          for (var j = 0; j < added.length; j++) {
            if (added[j].nodeType === 1) {
              watchWithin(added[j]);
            }
          }
        }
      }).observe(document.body, { childList: true, subtree: true });
    }
    document.addEventListener("click", onClick, true);
    document.addEventListener("auxclick", onClick, true);
    document.addEventListener("visibilitychange", function () {
      if (document.visibilityState === "hidden") {
        flush();
      }
    });
    window.addEventListener("pagehide", flush);
  }

  try {
    if (document.readyState === "loading") {
      document.addEventListener("DOMContentLoaded", start);
    } else {
      start();
    }
  } catch (err) {
    // never break the page
  }

  window.RecommendationsTracker = { flush: flush, pending: function () { return queue.length; } };
})();
