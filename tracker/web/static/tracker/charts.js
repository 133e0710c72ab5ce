/* Scalar charts (uPlot) for the run, monitoring and compare pages, and histogram drawings.
 *
 * Data comes from the page's own JSON endpoint (data-src): at most `max_points` points per
 * series, min/max-downsampled on the server. Smoothing (TensorBoard's debiased EMA) and log
 * scale are done here; zooming re-queries the selected step range at full resolution.
 * Non-finite values ("NaN", "Infinity") become nulls, which uPlot draws as gaps. */
(function () {
  "use strict";
  var PALETTE = ["#2b6cb0", "#dd6b20", "#38a169", "#d53f8c", "#805ad5", "#c53030", "#319795", "#b7791f", "#4a5568", "#00a3c4"];
  var MAX_POINTS = 1000;
  var BATCH = 8;

  function num(v) {
    return typeof v === "number" && isFinite(v) ? v : null;
  }

  function ema(values, weight) {
    if (!weight) return values;
    var out = new Array(values.length), last = 0, n = 0;
    for (var i = 0; i < values.length; i++) {
      var v = values[i];
      if (v === null || v === undefined) { out[i] = v; continue; }
      last = last * weight + (1 - weight) * v;
      n++;
      out[i] = last / (1 - Math.pow(weight, n));
    }
    return out;
  }

  function fmtX(mode) {
    if (mode === "relative") {
      return function (u, v) {
        if (v == null) return "—";
        if (Math.abs(v) < 10) return (Math.round(v * 100) / 100) + "s";
        var s = Math.round(v), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
        return h ? h + "h" + String(m).padStart(2, "0") + "m" : m ? m + "m" + String(s % 60).padStart(2, "0") + "s" : s + "s";
      };
    }
    return null;
  }

  function initCharts(root) {
    var controls = document.querySelector("[data-chart-controls]");
    var runIds = root.dataset.runs.split(",").filter(Boolean);
    var names = JSON.parse(root.dataset.runNames || "{}");
    var state = { smooth: 0.6, log: false, x: "step" };
    var charts = {};

    if (controls) {
      var slider = controls.querySelector("input[name=smoothing]");
      var output = controls.querySelector("output");
      var logy = controls.querySelector("input[name=logy]");
      var xsel = controls.querySelector("select[name=xaxis]");
      state.smooth = parseFloat(slider.value);
      state.x = xsel.value;
      slider.addEventListener("input", function () {
        state.smooth = parseFloat(slider.value);
        output.textContent = slider.value;
        redrawAll();
      });
      logy.addEventListener("change", function () { state.log = logy.checked; redrawAll(); });
      var keyFilter = controls.querySelector("input[name=serieskey]");
      if (keyFilter) {
        // Choose the series to show (and so to fetch: hidden charts are never loaded).
        keyFilter.addEventListener("input", function () {
          var re = null;
          try { re = new RegExp(keyFilter.value, "i"); } catch (e) { return; }
          root.querySelectorAll("figure.chart[data-key]").forEach(function (fig) {
            fig.hidden = !re.test(fig.dataset.key);
          });
          root.querySelectorAll("details.chart-group").forEach(function (group) {
            group.hidden = !group.querySelector("figure.chart:not([hidden])");
          });
        });
      }
      xsel.addEventListener("change", function () {
        state.x = xsel.value;
        Object.keys(charts).forEach(function (k) { charts[k].zoom = null; charts[k].data = null; });
        loadVisible(Object.keys(charts));
      });
    }

    function url(keys, zoom) {
      var q = new URLSearchParams({ runs: runIds.join(","), keys: keys.join(","), x: state.x, max_points: String(MAX_POINTS) });
      if (zoom) { q.set("start", String(zoom[0])); q.set("end", String(zoom[1])); }
      return root.dataset.src + "?" + q.toString();
    }

    function fetchKeys(keys, zoom) {
      return fetch(url(keys, zoom), { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
        .then(function (body) {
          var byKey = {};
          body.series.forEach(function (s) { (byKey[s.key] = byKey[s.key] || []).push(s); });
          return byKey;
        });
    }

    function build(chart) {
      var el = chart.el.querySelector(".plot");
      var rows = chart.data || [];
      if (chart.plot) { chart.plot.destroy(); chart.plot = null; }
      el.textContent = "";
      if (!rows.length) { el.innerHTML = '<span class="muted">No points.</span>'; return; }
      var tables = [], series = [{ label: state.x === "step" ? "step" : state.x === "wall" ? "time" : "elapsed", value: fmtX(state.x) || undefined }];
      var multi = runIds.length > 1;
      rows.forEach(function (s) {
        var idx = runIds.indexOf(String(s.run));
        var color = PALETTE[(idx < 0 ? 0 : idx) % PALETTE.length];
        var ys = s.value.map(function (v) {
          var n = num(v);
          return state.log && n !== null && n <= 0 ? null : n;
        });
        var label = multi ? (names[s.run] || "run " + s.run) : s.key;
        // A line needs two points: short series (an hparam metric is often one) get dots.
        var dots = { show: ys.length <= 30, size: 6 };
        if (state.smooth > 0) {
          tables.push([s.x, ys]);
          series.push({ label: label + " (raw)", stroke: color + "44", width: 1, spanGaps: false, points: { show: false } });
          tables.push([s.x, ema(ys, state.smooth)]);
          series.push({ label: label, stroke: color, width: 1.6, spanGaps: false, points: dots });
        } else {
          tables.push([s.x, ys]);
          series.push({ label: label, stroke: color, width: 1.4, spanGaps: false, points: dots });
        }
      });
      var data = tables.length === 1 ? tables[0] : uPlot.join(tables);
      var width = Math.max(260, el.clientWidth || 400);
      var opts = {
        width: width,
        height: 220,
        series: series,
        scales: { x: { time: state.x === "wall" }, y: state.log ? { distr: 3 } : {} },
        axes: [{ values: state.x === "relative" ? function (u, vals) { return vals.map(function (v) { return fmtX("relative")(u, v); }); } : undefined }, { size: 60 }],
        cursor: { drag: { x: true, y: false, setScale: false } },
        legend: { live: true },
        hooks: {
          setSelect: [function (u) {
            if (u.select.width < 4) return;
            var x0 = u.posToVal(u.select.left, "x"), x1 = u.posToVal(u.select.left + u.select.width, "x");
            u.setSelect({ left: 0, width: 0, top: 0, height: 0 }, false);
            zoomTo(chart, x0, x1);
          }],
        },
      };
      chart.plot = new uPlot(opts, data, el);
      chart.el.dataset.state = "drawn";
      chart.el.dataset.points = String(rows.reduce(function (a, s) { return a + s.value.length; }, 0));
      chart.el.dataset.zoomed = chart.zoom ? "1" : "";
    }

    // Zoom re-queries the selected x range (steps, wall seconds or elapsed seconds) at full
    // resolution: the server reads only the chunks in range and downsamples them afresh.
    function zoomTo(chart, x0, x1) {
      if (!(x1 > x0)) return;
      chart.zoom = [x0, x1];
      chart.el.dataset.state = "loading";
      fetchKeys([chart.key], chart.zoom).then(function (byKey) {
        chart.data = byKey[chart.key] || [];
        build(chart);
      });
    }

    function redrawAll() {
      Object.keys(charts).forEach(function (k) { if (charts[k].data) build(charts[k]); });
    }

    function loadVisible(keys) {
      for (var i = 0; i < keys.length; i += BATCH) {
        (function (batch) {
          batch.forEach(function (k) { charts[k].el.dataset.state = "loading"; });
          fetchKeys(batch, null).then(function (byKey) {
            batch.forEach(function (k) { charts[k].data = byKey[k] || []; build(charts[k]); });
          }).catch(function (err) {
            batch.forEach(function (k) { charts[k].el.querySelector(".plot").textContent = "Could not load: " + err.message; });
          });
        })(keys.slice(i, i + BATCH));
      }
    }

    var pending = [];
    var flush = null;
    var observer = new IntersectionObserver(function (entries) {
      entries.forEach(function (e) {
        if (!e.isIntersecting) return;
        var key = e.target.dataset.key;
        observer.unobserve(e.target);
        pending.push(key);
      });
      if (pending.length && !flush) {
        flush = setTimeout(function () { var keys = pending; pending = []; flush = null; loadVisible(keys); }, 30);
      }
    }, { rootMargin: "200px" });

    root.querySelectorAll("figure.chart[data-key]").forEach(function (fig) {
      var chart = { key: fig.dataset.key, el: fig, plot: null, data: null, zoom: null };
      charts[chart.key] = chart;
      fig.addEventListener("dblclick", function () {
        if (!chart.zoom) return;
        chart.zoom = null;
        loadVisible([chart.key]);
      });
      observer.observe(fig);
    });

    var resizeTimer = null;
    window.addEventListener("resize", function () {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(redrawAll, 150);
    });
  }

  // --- histograms -------------------------------------------------------------------------------
  function centers(h) {
    // bucket i spans (limits[i-1], limits[i]]; the first starts at the histogram's min.
    var out = [], lim = h.bucket_limits;
    for (var i = 0; i < lim.length; i++) {
      var lo = i === 0 ? (h.min !== null ? h.min : lim[0]) : lim[i - 1];
      var hi = lim[i] === null ? (h.max !== null ? h.max : lo) : lim[i];
      if (lo === null) lo = hi;
      out.push({ lo: lo, hi: Math.min(hi, h.max !== null ? h.max : hi), c: h.bucket_counts[i] });
    }
    return out;
  }

  // Writers use very uneven buckets (TensorFlow's default edges grow by 1.1x away from zero,
  // so buckets near zero are tiny): drawn as they are, one sample in a tiny bucket makes a
  // spike. Like TensorBoard, redistribute counts into uniform bins, in proportion to overlap.
  function rebin(h, xmin, xmax, n) {
    var out = new Array(n).fill(0), w = (xmax - xmin) / n;
    centers(h).forEach(function (b) {
      if (!(b.c > 0)) return;
      var width = b.hi - b.lo;
      if (!(width > 0)) {
        out[Math.min(n - 1, Math.max(0, Math.floor((b.lo - xmin) / w)))] += b.c;
        return;
      }
      var first = Math.max(0, Math.floor((b.lo - xmin) / w));
      var last = Math.min(n - 1, Math.floor((b.hi - xmin) / w));
      for (var k = first; k <= last; k++) {
        var lo = Math.max(b.lo, xmin + k * w), hi = Math.min(b.hi, xmin + (k + 1) * w);
        if (hi > lo) out[k] += (b.c * (hi - lo)) / width;
      }
    });
    return out;
  }

  var BINS = 40;

  function drawOverlay(canvas, steps) {
    var ctx = canvas.getContext("2d"), W = canvas.width, H = canvas.height, pad = 36;
    ctx.clearRect(0, 0, W, H);
    var sample = steps.length > 12 ? steps.filter(function (_, i) { return i % Math.ceil(steps.length / 12) === 0 || i === steps.length - 1; }) : steps;
    var xmin = Infinity, xmax = -Infinity, cmax = 0;
    sample.forEach(function (h) {
      centers(h).forEach(function (b) {
        if (b.c > 0) { xmin = Math.min(xmin, b.lo); xmax = Math.max(xmax, b.hi); }
      });
    });
    if (!isFinite(xmin)) { xmin = 0; }
    if (!(xmax > xmin)) { xmax = xmin + 1; }
    var binned = sample.map(function (h) { return rebin(h, xmin, xmax, BINS); });
    binned.forEach(function (bins) { bins.forEach(function (c) { cmax = Math.max(cmax, c); }); });
    var rowH = (H - pad) / (sample.length + 2), bw = (W - 2 * pad) / BINS;
    sample.forEach(function (h, j) {
      var base = pad / 2 + (j + 3) * rowH;
      var t = sample.length > 1 ? j / (sample.length - 1) : 1;
      ctx.beginPath();
      ctx.moveTo(pad, base);
      binned[j].forEach(function (c, k) {
        ctx.lineTo(pad + (k + 0.5) * bw, base - (c / (cmax || 1)) * rowH * 3);
      });
      ctx.lineTo(W - pad, base);
      ctx.fillStyle = "rgba(221,107,32," + (0.15 + 0.5 * t) + ")";
      ctx.strokeStyle = "rgba(156,66,33," + (0.4 + 0.6 * t) + ")";
      ctx.fill();
      ctx.stroke();
      ctx.fillStyle = "#5b6572";
      ctx.font = "11px sans-serif";
      ctx.fillText(String(h.step), W - pad + 4, base);
    });
    ctx.fillStyle = "#5b6572";
    ctx.fillText(xmin.toPrecision(3), pad, H - 4);
    ctx.fillText(xmax.toPrecision(3), W - pad - 30, H - 4);
  }

  var PCTS = [0, 0.0668, 0.1587, 0.3085, 0.5, 0.6915, 0.8413, 0.9332, 1];

  function percentiles(h) {
    var bs = centers(h), total = 0;
    bs.forEach(function (b) { total += b.c; });
    return PCTS.map(function (p) {
      var target = p * total, acc = 0;
      for (var i = 0; i < bs.length; i++) {
        if (acc + bs[i].c >= target && bs[i].c > 0) {
          var f = (target - acc) / bs[i].c;
          return bs[i].lo + f * (bs[i].hi - bs[i].lo);
        }
        acc += bs[i].c;
      }
      return bs.length ? bs[bs.length - 1].hi : 0;
    });
  }

  function drawDistribution(canvas, steps) {
    var ctx = canvas.getContext("2d"), W = canvas.width, H = canvas.height, pad = 40;
    ctx.clearRect(0, 0, W, H);
    // A single step still gets a visible band: spread it across the width.
    if (steps.length === 1) steps = [steps[0], Object.assign({}, steps[0], { step: steps[0].step + 1 })];
    var ps = steps.map(percentiles);
    var ymin = Infinity, ymax = -Infinity;
    ps.forEach(function (p) { ymin = Math.min(ymin, p[0]); ymax = Math.max(ymax, p[8]); });
    if (!(ymax > ymin)) { ymax = ymin + 1; }
    var s0 = steps[0].step, s1 = steps[steps.length - 1].step || s0 + 1;
    function X(s) { return pad + ((s - s0) / Math.max(s1 - s0, 1)) * (W - 2 * pad); }
    function Y(v) { return H - pad / 2 - ((v - ymin) / (ymax - ymin)) * (H - pad); }
    for (var band = 0; band < 4; band++) {
      ctx.beginPath();
      steps.forEach(function (h, i) { var x = X(h.step), y = Y(ps[i][band]); if (i) ctx.lineTo(x, y); else ctx.moveTo(x, y); });
      for (var i = steps.length - 1; i >= 0; i--) ctx.lineTo(X(steps[i].step), Y(ps[i][8 - band]));
      ctx.closePath();
      ctx.fillStyle = "rgba(43,108,176," + (0.15 + band * 0.15) + ")";
      ctx.fill();
    }
    ctx.beginPath();
    steps.forEach(function (h, i) { var x = X(h.step), y = Y(ps[i][4]); if (i) ctx.lineTo(x, y); else ctx.moveTo(x, y); });
    ctx.strokeStyle = "#1a365d";
    ctx.stroke();
    ctx.fillStyle = "#5b6572";
    ctx.font = "11px sans-serif";
    ctx.fillText(ymax.toPrecision(3), 2, pad / 2 + 4);
    ctx.fillText(ymin.toPrecision(3), 2, H - pad / 2);
    ctx.fillText("step " + s0, pad, H - 2);
    ctx.fillText("step " + s1, W - pad - 50, H - 2);
  }

  function initHistograms() {
    var figs = document.querySelectorAll("figure.hist[data-src]");
    if (!figs.length) return;
    var modeSel = document.querySelector("select[name=histmode]");
    var cache = [];
    function draw() {
      cache.forEach(function (item) {
        if (!item.steps || !item.steps.length) return;
        var canvas = item.fig.querySelector("canvas");
        canvas.width = Math.max(320, item.fig.clientWidth - 4);
        (modeSel && modeSel.value === "distribution" ? drawDistribution : drawOverlay)(canvas, item.steps);
        item.fig.dataset.state = "drawn";
      });
    }
    figs.forEach(function (fig) {
      var item = { fig: fig, steps: null };
      cache.push(item);
      fetch(fig.dataset.src, { credentials: "same-origin" })
        .then(function (r) { return r.json(); })
        .then(function (body) { item.steps = body.steps; draw(); });
    });
    if (modeSel) modeSel.addEventListener("change", draw);
  }

  function start() {
    document.querySelectorAll("[data-charts]").forEach(initCharts);
    initHistograms();
  }
  if (document.readyState !== "loading") start();
  else document.addEventListener("DOMContentLoaded", start);
})();
