/*
 * Recommendation feedback: clicks on recommendation blocks, sent to the ingest API.
 *
 * Impressions are not sent from here: the server records one `impression` event per block when it renders it
 * (tracking.queue_impression), so counting them again in the browser would double them.
 *
 * Markup (recommendations/block.html): `.rec-block[data-rec-placement][data-rec-id]` holding
 * `.rec-item[data-rec-product][data-rec-rank]` items. Any link inside an item counts (its image, title or a "more"
 * link: a shop's own card has several and none need a class); buttons and forms do not.
 * A click is recorded when a shopper follows such a link (left click, or middle click to open a new tab) and leaves
 * at once with navigator.sendBeacon, which survives the page unloading (fetch with keepalive where a beacon is
 * unavailable or refused). Events that no transport accepted stay queued (the newest MAX_QUEUE) and go with the next
 * click or when the page is hidden or unloads; the server ignores a replayed event_id, so a retry never double-counts.
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

  var MAX_PER_REQUEST = 100;
  var MAX_QUEUE = 500; // a page that cannot send keeps at most this many, dropping the oldest
  var BLOCK_SELECTOR = ".rec-block[data-rec-placement][data-rec-id]";
  var ITEM_SELECTOR = ".rec-item[data-rec-product]";
  var LINK_SELECTOR = "a[href]";

  var queue = [];

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

  function clickEvent(block, item) {
    var rank = parseInt(item.getAttribute("data-rec-rank"), 10);
    return {
      event_id: randomId(),
      event_type: "click",
      timestamp: new Date().toISOString(),
      placement: block.getAttribute("data-rec-placement"),
      recommendation_id: block.getAttribute("data-rec-id"),
      product_id: item.getAttribute("data-rec-product"),
      context: { rank: isNaN(rank) ? null : rank },
    };
  }

  function trim() {
    if (queue.length > MAX_QUEUE) {
      queue.splice(0, queue.length - MAX_QUEUE);
    }
  }

  function requeue(events) {
    // A keepalive fetch that failed (offline, over the keepalive quota): retry with the next flush.
    queue.unshift.apply(queue, events);
    trim();
  }

  // Hands `events` to the browser; false when nothing took them, so the caller keeps them queued.
  function send(events) {
    var json = JSON.stringify({ events: events });
    try {
      if (navigator.sendBeacon && navigator.sendBeacon(endpoint, new Blob([json], { type: "application/json" }))) {
        return true;
      }
    } catch (err) {
      // Some browsers refuse beacons with a JSON body; fetch below does the same job.
    }
    if (typeof fetch !== "function") {
      return false;
    }
    try {
      fetch(endpoint, {
        method: "POST",
        body: json,
        headers: { "Content-Type": "application/json" },
        credentials: "same-origin",
        keepalive: true,
      }).catch(function () {
        requeue(events);
      });
      return true;
    } catch (err) {
      return false;
    }
  }

  function flush() {
    try {
      while (queue.length) {
        var batch = queue.slice(0, MAX_PER_REQUEST);
        if (!send(batch)) {
          return; // keep them for the next click or the page hiding
        }
        queue.splice(0, batch.length);
      }
    } catch (err) {
      // never break the page
    }
  }

  function onClick(event) {
    try {
      if (event.type === "auxclick" && event.button !== 1) {
        return; // only the middle button opens a link
      }
      var target = event.target;
      var link = target && target.closest ? target.closest(LINK_SELECTOR) : null;
      if (!link) {
        return;
      }
      var item = link.closest(ITEM_SELECTOR);
      var block = item && item.closest(BLOCK_SELECTOR);
      if (!block) {
        return;
      }
      queue.push(clickEvent(block, item));
      trim();
      flush(); // the page is probably about to unload
    } catch (err) {
      // never break navigation
    }
  }

  try {
    document.addEventListener("click", onClick, true);
    document.addEventListener("auxclick", onClick, true);
    document.addEventListener("visibilitychange", function () {
      if (document.visibilityState === "hidden") {
        flush();
      }
    });
    window.addEventListener("pagehide", flush);
  } catch (err) {
    // never break the page
  }

  window.RecommendationsTracker = { flush: flush, pending: function () { return queue.length; } };
})();
