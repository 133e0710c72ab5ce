"""Playwright (sync API) driving Debian's chromium against pytest-django's live_server.

`scripts/install_system.sh` installs /usr/bin/chromium; `playwright install` is never used.
A failing test leaves a full-page screenshot in test-artifacts/web/.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Playwright's sync API keeps an event loop in this thread; the test itself still uses the ORM.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

ROOT = Path(__file__).resolve().parents[3]
SHOTS = ROOT / "test-artifacts" / "web"
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "correct horse battery staple"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/web/browser" in str(item.fspath):
            item.add_marker(pytest.mark.browser)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        subprocess.run(["bash", str(ROOT / "scripts" / "install_system.sh")], check=True)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


class Pages:
    """Opens browser contexts for a test and screenshots every open page if the test failed."""

    def __init__(self, browser: Any, base_url: str) -> None:
        self.browser = browser
        self.base_url = base_url
        self.contexts: list[Any] = []
        self.console_errors: list[str] = []

    def new(self, width: int = 1280, height: int = 900) -> Any:
        ctx = self.browser.new_context(
            base_url=self.base_url, viewport={"width": width, "height": height}
        )
        ctx.set_default_timeout(20_000)
        self.contexts.append(ctx)
        page = ctx.new_page()
        page.on(
            "console",
            lambda msg: self.console_errors.append(msg.text) if msg.type == "error" else None,
        )
        page.on("pageerror", lambda exc: self.console_errors.append(str(exc)))
        return page

    def login(self, user: str) -> Any:
        page = self.new()
        page.goto("/login/")
        page.fill("input[name=username]", user)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/")
        return page

    def close(self, failed: bool, name: str) -> None:
        if failed:
            SHOTS.mkdir(parents=True, exist_ok=True)
            for i, ctx in enumerate(self.contexts):
                for j, page in enumerate(ctx.pages):
                    try:
                        page.screenshot(
                            path=str(SHOTS / f"FAILED-{name}-{i}-{j}.png"), full_page=True
                        )
                    except Exception:  # noqa: BLE001 - a dead page must not hide the real failure
                        pass
        for ctx in self.contexts:
            ctx.close()


@pytest.fixture
def pages(browser: Any, live_server: Any, request: pytest.FixtureRequest) -> Iterator[Pages]:
    p = Pages(browser, live_server.url)
    yield p
    rep = getattr(request.node, "rep_call", None)
    p.close(failed=bool(rep and rep.failed), name=request.node.name)


def snap(page: Any, name: str) -> None:
    """Screenshots kept for people to look at the pages (not assertions)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def make_logdir_archive(tmp: Path) -> Path:
    """A .tar.gz of a TensorBoard logdir written by torch's SummaryWriter: two runs with
    scalars and an image tag whose colour changes with the step."""
    import numpy as np
    from torch.utils.tensorboard import SummaryWriter

    logdir = tmp / "logs"
    for name, lr in (("run_a", 0.1), ("run_b", 0.01)):
        w = SummaryWriter(log_dir=str(logdir / name))
        for step in range(50):
            w.add_scalar("train/loss", 1.0 / (1 + step * lr * 10), step)
            w.add_scalar("val/acc", 1 - 1.0 / (2 + step * lr * 10), step)
        for i, step in enumerate((0, 10, 20)):
            img = np.zeros((3, 32, 32), dtype=np.float32)
            img[i % 3] = 1.0  # red, then green, then blue
            w.add_image("samples", img, step)
        w.add_text("notes", f"lr={lr}", 0)
        w.flush()
        w.close()
    archive = tmp / "logs.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for run_dir in sorted(logdir.iterdir()):
            tar.add(run_dir, arcname=run_dir.name)
    shutil.rmtree(logdir)
    return archive
