/* Tracker page behaviour that every page may need: copy buttons, the compare button,
 * the image step sliders and the logdir archive upload. No inline scripts (CSP). */
(function () {
  "use strict";

  function onReady(fn) {
    if (document.readyState !== "loading") fn();
    else document.addEventListener("DOMContentLoaded", fn);
  }

  // --- copy-to-clipboard for secrets shown once ---------------------------------------------
  function initCopy(root) {
    root.querySelectorAll("button.copy[data-copy]").forEach(function (btn) {
      btn.addEventListener("click", function () {
        var input = document.querySelector(btn.dataset.copy);
        if (!input) return;
        input.select();
        if (navigator.clipboard) navigator.clipboard.writeText(input.value).catch(function () {});
        btn.textContent = "Copied";
      });
    });
  }

  // --- compare: enabled once two runs are ticked ------------------------------------------------
  function initCompare(root) {
    var button = root.querySelector("#compare-button");
    if (!button) return;
    var boxes = root.querySelectorAll("input[name=runs][form=compare-form]");
    function update() {
      var n = 0;
      boxes.forEach(function (b) { if (b.checked) n++; });
      button.disabled = n < 2;
      button.textContent = n ? "Compare " + n + " selected" : "Compare selected";
    }
    boxes.forEach(function (b) { b.addEventListener("change", update); });
    update();
  }

  // --- image tags: a slider over every logged step ----------------------------------------------
  function initImages(root) {
    root.querySelectorAll("figure.imgtag").forEach(function (fig) {
      var slider = fig.querySelector("input.stepslider");
      if (!slider) return;
      var srcs = JSON.parse(fig.dataset.srcs);
      var steps = JSON.parse(fig.dataset.steps);
      var captions = JSON.parse(fig.dataset.captions || "[]");
      var img = fig.querySelector("img");
      var link = fig.querySelector("a.imglink");
      var label = fig.querySelector(".imgstep");
      var caption = fig.querySelector(".caption");
      function show() {
        var i = parseInt(slider.value, 10);
        img.src = srcs[i];
        img.alt = fig.querySelector("strong").textContent + " at step " + steps[i];
        link.href = srcs[i];
        label.textContent = steps[i];
        caption.textContent = captions[i] || "";
        fig.dataset.step = steps[i];
      }
      slider.addEventListener("input", show);
      fig.addEventListener("keydown", function (e) {
        if (e.target === slider) return;
        if (e.key === "ArrowLeft" && slider.value > 0) { slider.value--; show(); }
        if (e.key === "ArrowRight" && +slider.value < +slider.max) { slider.value++; show(); }
      });
    });
    root.querySelectorAll("figure.imgtag img").forEach(function (img) {
      img.addEventListener("click", function (e) {
        // First click toggles an in-page full-size view; the link opens the original.
        if (!img.classList.contains("full")) { e.preventDefault(); img.classList.add("full"); }
      });
    });
  }

  // --- logdir archive upload with progress and live job status ------------------------------------
  function initUpload(root) {
    var form = root.querySelector("#upload-form");
    if (!form) return;
    var box = form.querySelector(".upload-status");
    var bar = form.querySelector("#upload-progress");
    var phase = form.querySelector("#upload-phase");
    var problems = form.querySelector("#upload-problems");
    var done = form.querySelector("#upload-done");
    var csrf = form.querySelector("input[name=csrfmiddlewaretoken]").value;

    function setPhase(text, cls) {
      phase.textContent = text;
      phase.className = cls || "";
    }
    function errorMessage(xhrOrBody) {
      try {
        var body = typeof xhrOrBody === "string" ? JSON.parse(xhrOrBody) : xhrOrBody;
        return body.error.message;
      } catch (e) { return "Upload failed."; }
    }
    function poll(jobId) {
      fetch(form.dataset.jobBase + jobId + "/", { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { return r.json().then(function (b) { return { ok: r.ok, body: b }; }); })
        .then(function (res) {
          if (!res.ok) { setPhase(errorMessage(res.body), "error"); return; }
          var job = res.body;
          form.dataset.jobState = job.state;
          bar.value = Math.round(100 * (job.progress || 0));
          if (job.state === "succeeded") {
            var s = job.summary || {};
            setPhase("Done: " + (s.runs || 0) + " runs, " + (s.points || 0) + " points, " + (s.images || 0) + " images.", "ok");
            bar.value = 100;
            done.hidden = false;
          } else if (job.state === "failed") {
            setPhase("Failed: " + (job.error || "unknown error"), "error");
          } else {
            setPhase("Processing (" + job.state + ")… " + bar.value + " %");
            setTimeout(function () { poll(jobId); }, 1000);
          }
          problems.textContent = "";
          (job.problems || []).slice(0, 50).forEach(function (p) {
            var li = document.createElement("li");
            li.textContent = p.file + " @" + p.offset + ": " + p.message;
            problems.appendChild(li);
          });
        })
        .catch(function () { setTimeout(function () { poll(jobId); }, 2000); });
    }
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      var input = form.querySelector("input[type=file]");
      if (!input.files.length) return;
      var data = new FormData();
      data.append("file", input.files[0]);
      var xhr = new XMLHttpRequest();
      xhr.open("POST", form.dataset.endpoint);
      xhr.setRequestHeader("X-CSRFToken", csrf);
      xhr.setRequestHeader("Accept", "application/json");
      box.hidden = false;
      done.hidden = true;
      form.dataset.jobState = "uploading";
      setPhase("Uploading…");
      xhr.upload.addEventListener("progress", function (ev) {
        if (ev.lengthComputable) {
          bar.value = Math.round((100 * ev.loaded) / ev.total);
          setPhase("Uploading… " + bar.value + " %");
        }
      });
      xhr.addEventListener("load", function () {
        if (xhr.status >= 200 && xhr.status < 300) {
          var job = JSON.parse(xhr.responseText);
          bar.value = 0;
          setPhase("Uploaded; waiting for the job…");
          poll(job.id);
        } else {
          form.dataset.jobState = "failed";
          setPhase(errorMessage(xhr.responseText), "error");
        }
      });
      xhr.addEventListener("error", function () { setPhase("Network error during upload.", "error"); });
      xhr.send(data);
    });
  }

  function init(root) {
    initCopy(root);
    initCompare(root);
    initImages(root);
    initUpload(root);
  }

  onReady(function () {
    init(document);
    // Partial updates of the runs table come from htmx: re-bind what they replaced.
    document.body.addEventListener("htmx:afterSwap", function (e) { initCompare(e.detail.target); });
  });
})();
