/* Parallel coordinates on a canvas: one vertical axis per numeric param or metric, one
 * polyline per run, colored like the run's chip. Data comes from the data-pc attribute. */
(function () {
  "use strict";
  var PALETTE = ["#2b6cb0", "#dd6b20", "#38a169", "#d53f8c", "#805ad5", "#c53030", "#319795", "#b7791f", "#4a5568", "#00a3c4"];

  function draw(box) {
    var pc = JSON.parse(box.dataset.pc);
    var canvas = box.querySelector("canvas");
    var axes = pc.axes;
    if (!axes.length) { box.textContent = "No numeric params or metrics to plot."; return; }
    canvas.width = Math.max(400, box.clientWidth - 4);
    var W = canvas.width, H = canvas.height, top = 36, bottom = 24, left = 50, right = 50;
    var ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, W, H);
    var ranges = axes.map(function (_, j) {
      var lo = Infinity, hi = -Infinity;
      pc.runs.forEach(function (r) { var v = r.values[j]; if (v !== null) { lo = Math.min(lo, v); hi = Math.max(hi, v); } });
      if (!isFinite(lo)) { lo = 0; hi = 1; }
      if (hi === lo) { lo -= 0.5; hi += 0.5; }
      return [lo, hi];
    });
    function X(j) { return axes.length === 1 ? W / 2 : left + (j / (axes.length - 1)) * (W - left - right); }
    function Y(j, v) { return top + (1 - (v - ranges[j][0]) / (ranges[j][1] - ranges[j][0])) * (H - top - bottom); }
    ctx.font = "11px sans-serif";
    ctx.textAlign = "center";
    axes.forEach(function (name, j) {
      ctx.strokeStyle = "#a0aec0";
      ctx.beginPath(); ctx.moveTo(X(j), top); ctx.lineTo(X(j), H - bottom); ctx.stroke();
      ctx.fillStyle = pc.kinds[j] === "params" ? "#1d232a" : "#2f855a";
      ctx.fillText(name.length > 18 ? name.slice(0, 17) + "…" : name, X(j), 14);
      ctx.fillStyle = "#5b6572";
      ctx.fillText(ranges[j][1].toPrecision(3), X(j), top - 6);
      ctx.fillText(ranges[j][0].toPrecision(3), X(j), H - 8);
    });
    pc.runs.forEach(function (run, i) {
      ctx.strokeStyle = PALETTE[i % PALETTE.length];
      ctx.lineWidth = 2;
      ctx.beginPath();
      var started = false;
      run.values.forEach(function (v, j) {
        if (v === null) { started = false; return; }
        if (started) ctx.lineTo(X(j), Y(j, v)); else ctx.moveTo(X(j), Y(j, v));
        started = true;
      });
      ctx.stroke();
    });
    box.dataset.state = "drawn";
  }

  function start() {
    document.querySelectorAll(".parcoords[data-pc]").forEach(function (box) {
      draw(box);
      window.addEventListener("resize", function () { draw(box); });
    });
  }
  if (document.readyState !== "loading") start();
  else document.addEventListener("DOMContentLoaded", start);
})();
