"""Browser check of the MLflow UI: what researchers open after `dvc repro` compares methods at a glance.

Builds a small store with the project's tracking helpers the way ``cross_validate`` logs it: two heads,
``abmil`` in two configurations (the demo's 20 epochs and a ``dvc exp run -S train.epochs=3``) and
``mean_mlp``, each a parent run named by :func:`run_label` with the headline test metrics and two child
fold runs, and the experiment's runs view (:func:`runs_view`). It serves the store with ``mlflow server``
on 127.0.0.1, opens the runs view in headless Chromium (Debian's ``chromium`` driven by Playwright;
``playwright install`` is never needed) and checks that every parent run's test AUROC and CI are on screen
without choosing columns, that the two abmil configurations have different names, and that a fold run
page shows its name, metric, parent and tags. Screenshots go to the test's tmp folder and, when
``SLIDEMIL_SCREENSHOT_DIR`` is set (e.g. ``reports``), there as ``mlflow_ui.png`` (runs table) and
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

from slidemil.pipeline.tracking import VIEW_KEY, experiment_name, parent_run, run_label, runs_view

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
EXPERIMENT = experiment_name("", "label", ["dense", "sparse"])
SHOWN = {"train.lr": "lr", "train.epochs": "epochs"}
#: (head, epochs) → per-fold test AUROC; exact in binary, so the UI prints them as written
CONFIGS = {("abmil", 20): (0.625, 0.875), ("abmil", 3): (0.5, 0.625), ("mean_mlp", 20): (0.25, 0.5)}


def mean(values) -> float:
    return sum(values) / len(values)


@pytest.fixture(scope="module")
def chromium() -> Path:
    """Path of the Chromium binary; skips the module without it or without Playwright."""
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (dev extras)")
    if not CHROMIUM.is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}: install it with `apt-get install -y chromium`")
    return CHROMIUM


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A SQLite MLflow store laid out as the pipeline writes it; returns its URI, run IDs and run names."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    names, folds = {}, {}
    for (head, epochs), aurocs in CONFIGS.items():
        params = {"train": {"lr": 2e-4, "epochs": epochs}, "head": head}
        names[head, epochs] = run_label(head, params, SHOWN)
        with parent_run("train", head, params, {}, EXPERIMENT, tracking=uri, root=root,
                        run_name=names[head, epochs]) as run:
            run.set_experiment_tags(runs_view(["test/auroc_mean", "test/auroc_ci_low", "test/auroc_ci_high"]))
            for fold, auroc in enumerate(aurocs):
                with run.fold_run(fold, params=params) as child:
                    child.log_metrics({"train/loss": 0.5}, step=1)
                    child.log_metrics({"test/auroc": auroc})
                    folds[head, epochs, fold] = child.run_id
            run.log_metrics({"test/auroc_mean": mean(aurocs), "test/auroc_ci_low": 0.125, "test/auroc_ci_high": 0.9375})
    return {"uri": uri, "root": root, "experiment_id": run.experiment_id, "names": names, "folds": folds}


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


def close_assistant(page) -> None:
    """Close MLflow 3's side panel (it hides columns) if it is open."""
    assistant = page.get_by_role("button", name="Close")
    if assistant.count():
        assistant.first.click()


def test_runs_view_shows_each_method_auroc_and_tells_configurations_apart(chromium: Path, server: str, store: dict,
                                                                          tmp_path: Path):
    from playwright.sync_api import sync_playwright

    experiment = f"{server}/#/experiments/{store['experiment_id']}"
    names = store["names"]
    assert names["abmil", 20] != names["abmil", 3] and names["abmil", 20].startswith("abmil · lr=0.0002 · epochs=20 · ")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 800})
        page.set_default_timeout(UI_TIMEOUT_MS)
        try:
            page.goto(f"{experiment}/runs?viewStateShareKey={VIEW_KEY}")  # the view `make ui` prints
            for name in names.values():
                page.get_by_text(name, exact=True).first.wait_for()
            close_assistant(page)
            page.get_by_text("test/auroc_mean", exact=True).first.wait_for()  # a column without choosing it
            for aurocs in CONFIGS.values():
                page.get_by_text(str(mean(aurocs)), exact=True).first.wait_for()
            page.get_by_text("0.9375", exact=True).first.wait_for()  # the CI bound
            for head, _, fold in store["folds"]:  # fold runs stay hidden until their parent row is expanded
                assert not any(cell.is_visible() for cell in page.get_by_text(f"{head} fold-{fold}", exact=True).all())
            save_screenshot(page, tmp_path, "mlflow_ui.png")

            run_id = store["folds"]["abmil", 20, 0]
            page.goto(f"{experiment}/runs/{run_id}")
            for text in (
                "abmil fold-0",  # the run's name
                "test/auroc",  # its metrics, with the value
                str(CONFIGS["abmil", 20][0]),
                names["abmil", 20],  # the link to its parent run
                "method",  # its tags
                "fold",
                "train.epochs",  # its params
            ):
                page.get_by_text(text, exact=True).first.wait_for()
            save_screenshot(page, tmp_path, "mlflow_ui_run.png")
        except Exception:
            save_screenshot(page, tmp_path, "mlflow_ui_failure.png")
            raise
        finally:
            browser.close()
