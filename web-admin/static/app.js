// The seeder's admin pages: live numbers over server-sent events, and the claim page's wait
// for the board's button. Everything works without this file; it only keeps pages current.
(function () {
  "use strict";
  function live() {
    if (!document.body.hasAttribute("data-live") || !window.EventSource) return;
    var source = new EventSource("/events");
    source.addEventListener("status", function (e) {
      var d;
      try { d = JSON.parse(e.data); } catch (err) { return; }
      var els = document.querySelectorAll("[data-live]");
      for (var i = 0; i < els.length; i++) {
        var key = els[i].getAttribute("data-live");
        if (key && Object.prototype.hasOwnProperty.call(d.values, key)) {
          els[i].textContent = d.values[key];
        }
      }
      var rx = document.getElementById("graph-rx");
      var tx = document.getElementById("graph-tx");
      if (rx && d.graph) rx.setAttribute("points", d.graph.rx);
      if (tx && d.graph) tx.setAttribute("points", d.graph.tx);
    });
  }
  function button() {
    var state = document.getElementById("button-state");
    if (!state) return;
    var polls = 0;
    function poll() {
      fetch("/claim/button", { credentials: "same-origin" })
        .then(function (r) { return r.json(); })
        .then(function (d) {
          var text = { waiting: "Waiting for the button…", pressed: "Button pressed. Set the password and claim.",
            expired: "The wait is over; start again.", idle: "" }[d.state];
          state.textContent = text || "";
          if (d.state === "waiting" && polls++ < 150) setTimeout(poll, 1000);
        })
        .catch(function () {});
    }
    poll();
  }
  document.addEventListener("DOMContentLoaded", function () { live(); button(); });
})();
