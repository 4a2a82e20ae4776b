"""Browser check of the MLflow UI: what researchers open after `dvc repro` shows the runs the pipeline logs.

Builds a small store with the project's tracking helpers (a parent run with two child fold runs tagged
``fold`` and carrying ``test/auroc``), serves it with ``mlflow server`` on 127.0.0.1, opens it in
headless Chromium (Debian's ``chromium`` driven by Playwright; ``playwright install`` is never needed)
and checks that the parent run, its fold runs and the metric are on screen. Screenshots go to the test's
tmp folder and, when ``SLIDEMIL_SCREENSHOT_DIR`` is set, there as ``mlflow_ui.png`` (runs table) and
``mlflow_ui_run.png`` (a fold's run page).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from slidemil.pipeline.tracking import parent_run

pytestmark = [pytest.mark.browser, pytest.mark.timeout(420)]

CHROMIUM = Path(os.environ.get("SLIDEMIL_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SERVER_START_S = 150  # mlflow server takes 15-35 s to come up on a busy 2-core machine
UI_TIMEOUT_MS = 120_000
EXPERIMENT = "demo-label"
FOLD_AUROC = {0: 0.625, 1: 0.875}  # exact in binary, so the UI prints them as written


@pytest.fixture(scope="module")
def chromium() -> Path:
    """Path of the Chromium binary; skips the module without it or without Playwright."""
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (dev extras)")
    if not CHROMIUM.is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}: install it with `apt-get install -y chromium`")
    return CHROMIUM


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A SQLite MLflow store holding ``train@abmil`` with fold runs 0 and 1; returns its URI and run IDs."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    fold_ids = {}
    with parent_run("train", "abmil", {"train": {"lr": 1e-4}}, {}, EXPERIMENT, tracking=uri, root=root) as run:
        for fold, auroc in FOLD_AUROC.items():
            with run.fold_run(fold) as child:
                child.log_metrics({"train/loss": 0.5}, step=1)
                child.log_metrics({"test/auroc": auroc})
                fold_ids[fold] = child.run_id
        run.log_metrics({"test/auroc_mean": sum(FOLD_AUROC.values()) / len(FOLD_AUROC)})
    return {"uri": uri, "root": root, "experiment_id": run.experiment_id, "parent": run.run_id, "folds": fold_ids}


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(chromium: Path, store: dict) -> Iterator[str]:
    """Run ``mlflow server`` on the store; yield its base URL; kill its process group afterwards."""
    port = free_port()
    log_path = store["root"] / "server.log"
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", store["uri"],
        "--default-artifact-root", (store["root"] / "mlartifacts").as_uri(),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(url, process, log_path)
        yield url
    finally:
        stop(process)


def wait_for_health(url: str, process: subprocess.Popen, log_path: Path) -> None:
    """Poll ``/health`` until it answers; fail with the server log if it exits or takes too long."""
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"mlflow server exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
                if reply.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    pytest.fail(f"mlflow server not up within {SERVER_START_S} s:\n{log_path.read_text()[-3000:]}")


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the server's process group (it forks workers), then SIGKILL after 20 s."""
    for sig, wait_s in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def save_screenshot(page, tmp_path: Path, name: str) -> Path:
    """Screenshot ``page`` to ``tmp_path/name`` and copy it to ``$SLIDEMIL_SCREENSHOT_DIR`` when set."""
    path = tmp_path / name
    page.screenshot(path=str(path))
    if os.environ.get("SLIDEMIL_SCREENSHOT_DIR"):
        folder = Path(os.environ["SLIDEMIL_SCREENSHOT_DIR"])
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, folder / name)
    return path


def show_metric_column(page, metric: str) -> None:
    """Add ``metric`` to the runs table through the "Columns" menu."""
    page.get_by_role("button", name="Columns").first.click()
    page.get_by_text(metric, exact=True).first.click()
    page.keyboard.press("Escape")


def test_ui_shows_parent_run_fold_runs_and_metrics(chromium: Path, server: str, store: dict, tmp_path: Path):
    from playwright.sync_api import sync_playwright

    experiment = f"{server}/#/experiments/{store['experiment_id']}"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 800})
        page.set_default_timeout(UI_TIMEOUT_MS)
        try:
            page.goto(f"{experiment}/runs")
            page.get_by_text("train@abmil", exact=True).first.wait_for()
            assistant = page.get_by_role("button", name="Close")  # MLflow 3's side panel hides columns
            if assistant.count():
                assistant.first.click()
            for fold in FOLD_AUROC:  # child runs stay hidden until their parent row is expanded
                assert not page.get_by_text(f"fold-{fold}", exact=True).is_visible()
            page.locator('button[data-component-id*="runnamecellrenderer"]').first.click()
            for fold in FOLD_AUROC:
                page.get_by_text(f"fold-{fold}", exact=True).first.wait_for()
            show_metric_column(page, "test/auroc")
            for auroc in FOLD_AUROC.values():
                page.get_by_text(str(auroc), exact=True).first.wait_for()
            save_screenshot(page, tmp_path, "mlflow_ui.png")

            page.goto(f"{experiment}/runs/{store['folds'][0]}")
            for text in (
                "fold-0",  # the run's name
                "test/auroc",  # its metrics, with the value
                str(FOLD_AUROC[0]),
                "train@abmil",  # the link to its parent run
                "fold",  # its fold tag
            ):
                page.get_by_text(text, exact=True).first.wait_for()
            save_screenshot(page, tmp_path, "mlflow_ui_run.png")
        except Exception:
            save_screenshot(page, tmp_path, "mlflow_ui_failure.png")
            raise
        finally:
            browser.close()
