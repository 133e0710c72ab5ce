"""End-to-end: upload a logdir in the browser, charts, image slider, runs table, compare,
share links. Real server (live_server), real Postgres, real S3 (moto), real chromium."""

from __future__ import annotations

import re
from typing import Any

import pytest

from .conftest import make_logdir_archive, snap

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

# Counts canvas pixels that are not background (transparent or white) in the first uPlot
# canvas of a chart figure: proof that lines were drawn, not just an empty frame.
INK = """(fig) => {
  const c = fig.querySelector('.uplot canvas');
  if (!c) return 0;
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) {
    if (d[i + 3] > 0 && !(d[i] > 245 && d[i + 1] > 245 && d[i + 2] > 245)) n++;
  }
  return n;
}"""

IMAGE_LOADED = """(img) => img.complete && img.naturalWidth > 0"""


def runs_in_table(page: Any) -> list[str]:
    return page.locator("#runs-table tbody td.name a").all_inner_texts()


def test_upload_charts_images_table_compare_share(pages, tenants, tmp_path):
    archive = make_logdir_archive(tmp_path)
    page = pages.login("alice")

    # --- upload with progress and live job status
    page.goto("/acme/vision/")
    snap(page, "01-project-empty")
    page.set_input_files("#upload-file", str(archive))
    page.click("#upload-form button[type=submit]")
    page.wait_for_selector("#upload-form[data-job-state=succeeded]", timeout=90_000)
    assert "Done: 2 runs" in page.inner_text("#upload-phase")
    snap(page, "02-upload-done")

    # --- runs table: filter, sort (htmx partial updates, state in the URL)
    page.goto("/acme/vision/")
    assert sorted(runs_in_table(page)) == ["run_a", "run_b"]
    page.fill("#filter-input", 'name = "run_b"')
    page.press("#filter-input", "Enter")
    page.wait_for_url(re.compile(r".*filter=name.*run_b.*"))
    page.wait_for_function("document.querySelectorAll('#runs-table tbody td.name').length === 1")
    assert runs_in_table(page) == ["run_b"]
    page.goto("/acme/vision/")
    page.click("#runs-table thead a:text('Name')")
    page.wait_for_url(re.compile(r".*sort=-name.*"))
    page.wait_for_function(
        "document.querySelector('#runs-table tbody td.name a').textContent === 'run_b'"
    )
    page.click("#runs-table thead a:text('Name')")
    page.wait_for_url(re.compile(r".*sort=name.*"))
    page.wait_for_function(
        "document.querySelector('#runs-table tbody td.name a').textContent === 'run_a'"
    )
    assert runs_in_table(page) == ["run_a", "run_b"]
    # columns chooser: add the last value of val/acc
    page.click(".colpick-wrap summary")
    page.check("input[name=cols][value='metrics.val/acc.last']")
    page.wait_for_url(re.compile(r".*cols=metrics.val.*acc.last.*"))
    page.wait_for_selector("#runs-table th:has-text('val/acc (last)')")
    snap(page, "03-runs-table")

    # --- run page: a chart is really drawn
    page.click("#runs-table td.name a:text('run_a')")
    page.wait_for_selector("figure.chart[data-key='train/loss'][data-state=drawn]")
    fig = page.query_selector("figure.chart[data-key='train/loss']")
    assert page.evaluate(INK, fig) > 200
    # smoothing, log scale and x axis re-draw without errors
    page.fill("input[name=smoothing]", "0.9")
    page.check("input[name=logy]")
    page.select_option("select[name=xaxis]", "relative")
    page.wait_for_selector("figure.chart[data-key='train/loss'][data-state=drawn]")
    snap(page, "04-run-charts")

    # --- images: the step slider changes the image
    page.click("#tab-images")
    page.wait_for_selector("figure.imgtag input.stepslider")
    img = page.query_selector("figure.imgtag img")
    page.wait_for_function(IMAGE_LOADED, arg=img)
    last_src = img.get_attribute("src")
    assert page.inner_text("figure.imgtag .imgstep") == "20"
    slider = page.query_selector("figure.imgtag input.stepslider")
    slider.focus()
    page.keyboard.press("Home")
    page.wait_for_function(f"(img) => img.getAttribute('src') !== {last_src!r}", arg=img)
    page.wait_for_function(IMAGE_LOADED, arg=img)
    assert page.inner_text("figure.imgtag .imgstep") == "0"
    first_src = img.get_attribute("src")
    assert first_src != last_src
    resp = page.request.get(first_src)
    assert resp.headers["content-type"] == "image/png"
    assert resp.headers["x-content-type-options"] == "nosniff"
    snap(page, "05-run-images")

    # --- the run's upload log names the job that imported it
    page.click("#tab-logs")
    page.wait_for_selector("#tab-body h3:has-text('Job #')")
    assert "succeeded" in page.inner_text("#tab-body")

    # --- compare two runs
    page.goto("/acme/vision/")
    page.check("#runs-table input[name=runs] >> nth=0")
    page.check("#runs-table input[name=runs] >> nth=1")
    page.click("#compare-button")
    page.wait_for_url(re.compile(r".*/compare\?runs=.*"))
    page.wait_for_selector("figure.chart[data-key='val/acc'][data-state=drawn]")
    assert page.evaluate(INK, page.query_selector("figure.chart[data-key='val/acc']")) > 200
    assert page.locator(".runchips .chip").count() == 2
    page.wait_for_selector(".parcoords[data-state=drawn]")
    snap(page, "06-compare")

    # --- share link: read-only view without login, then revoked
    page.goto("/acme/vision/settings")
    page.fill("#create-link-form input[name=label]", "for reviewers")
    page.click("#create-link-form button[type=submit]")
    link = page.input_value("#new-link-url")
    assert "/s/shr_" in link
    snap(page, "07-settings")
    anon = pages.new(width=420, height=900)  # fresh context: no cookies; phone-sized
    anon.goto(link)
    assert sorted(runs_in_table(anon)) == ["run_a", "run_b"]
    assert anon.locator(".badge.shared").count() == 1
    assert anon.locator("#upload-form").count() == 0
    assert anon.locator("#settings-link").count() == 0
    anon.click("#runs-table td.name a:text('run_b')")
    assert "/s/shr_" in anon.url
    anon.wait_for_selector("figure.chart[data-key='train/loss'][data-state=drawn]")
    snap(anon, "08-shared-run-mobile")
    page.goto("/acme/vision/settings")
    page.click("#links-table tr:has-text('for reviewers') button:text('Revoke')")
    page.wait_for_selector("#notice:has-text('revoked')")
    anon.goto(link)
    assert anon.locator("#not-found").count() == 1
    assert not [e for e in pages.console_errors if "Content Security Policy" in e], (
        pages.console_errors
    )


def test_histograms_monitoring_and_nan_gaps(pages, filled):
    t = filled
    page = pages.login("carol")
    base = f"/acme/vision/runs/{t.run1.pk}/"
    # loss holds a NaN at step 2: the chart still draws, the NaN is a gap (null), not a zero
    page.goto(base)
    page.wait_for_selector("figure.chart[data-key='loss'][data-state=drawn]")
    assert page.evaluate(INK, page.query_selector("figure.chart[data-key='loss']")) > 100
    # series filter hides the other charts
    page.fill("input[name=serieskey]", "^val/")
    assert page.locator("figure.chart[data-key='loss']").is_hidden()
    assert page.locator("figure.chart[data-key='val/acc']").is_visible()
    # histograms: overlaid, then as a distribution over steps
    page.goto(base + "?tab=histograms")
    page.wait_for_selector("figure.hist[data-state=drawn]")
    page.select_option("select[name=histmode]", "distribution")
    page.wait_for_selector("figure.hist[data-state=drawn]")
    snap(page, "09-histograms")
    # monitoring: sys/ telemetry against wall time
    page.goto(base + "?tab=monitoring")
    page.wait_for_selector("figure.chart[data-key='sys/cpu_percent'][data-state=drawn]")
    assert page.input_value("select[name=xaxis]") == "wall"
    snap(page, "10-monitoring")
    # text is shown as text
    page.goto(base + "?tab=text")
    assert "<script>x()</script>" in page.inner_text("#tab-body")
    assert not pages.console_errors, pages.console_errors
