"""The Dagster UI as a user meets it (`make test-ui`, not part of `make test`): `dg dev` on a small
demo world, driven by headless Chromium. Screenshots go to data/reports/ui/."""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pytest

from rsloc_assets.defs import defs
from rsloc_assets.defs.automation import QUERY_ASSETS, register_queries
from rsloc_assets.defs.resources import RslocResource
from rsloc_assets.layout import Layout
from rsloc_assets.synthetic.demo import init_demo
from tests.gallery_runs import refresh_gallery

webdriver = pytest.importorskip("selenium.webdriver", reason="make test-ui installs selenium")
from selenium.webdriver import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

pytestmark = pytest.mark.ui

REPO = Path(__file__).resolve().parents[1]
SHOTS = REPO / "data" / "reports" / "ui"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
# The evaluation sensor ticks every 60 s; a query run takes ~20 s on this machine.
RUN_TIMEOUT_S, EVALUATION_TIMEOUT_S = 300, 240


def _wait(what: str, timeout_s: float, probe: Callable[[], object]) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Layout, Path]:
    """A small demo world, its gallery embedded and its two queries localized and evaluated,
    recorded in an instance configured as the project's."""
    tmp = tmp_path_factory.mktemp("ui")
    layout, home = Layout(tmp / "data"), tmp / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    init_demo(layout, "small")
    for extra in layout.query_names()[2:]:
        layout.query_file(extra).unlink()
    rsloc, assets = RslocResource(data_dir=str(layout.root)), list(defs.assets)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        run = dict(resources={"rsloc": rsloc}, instance=instance)
        assert refresh_gallery(rsloc, instance).passed
        register_queries(instance, layout)
        for name in layout.query_names():
            assert dg.materialize(assets, selection=QUERY_ASSETS, partition_key=name, **run).success
        assert dg.materialize(assets, selection=["evaluation"], **run).success
    return layout, home


@pytest.fixture(scope="module")
def server(world) -> Iterator[str]:
    """`dg dev` on 127.0.0.1 for the world; every process it started is stopped afterwards."""
    layout, home = world
    port = _free_port()
    env = os.environ | {"DAGSTER_HOME": str(home), "RSLOC_DATA_DIR": str(layout.root)}
    dg_cli = Path(sys.executable).with_name("dg")
    log = open(home / "dg_dev.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [str(dg_cli), "dev", "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=2) as response:
                return response.status == 200
        except OSError:
            return proc.poll() is not None and pytest.fail("dg dev exited; see dg_dev.log")

    try:
        _wait("dg dev to serve", 180, up)
        yield url
    finally:
        # Ctrl-C for `dg dev`; its code servers outlive it unless killed (seen here).
        os.killpg(proc.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=20)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
        _wait("every process dg dev started to end", 30, lambda: not _session_alive(proc.pid))


def _session_alive(sid: int) -> bool:
    try:
        os.killpg(sid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("Chromium and ChromeDriver are missing: make test-ui installs them")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tmp_path_factory.mktemp("chromium")
    # The flags keep Chromium off the network this machine does not have.
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1600,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(str(CHROMEDRIVER)), options=options)
    driver.implicitly_wait(0)
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


def _open(driver, url: str, text: str, timeout_s: float = 60) -> None:
    """Load `url` and wait until `text` shows; dismiss Dagster's first-visit newsletter dialog."""
    driver.get(url)
    _wait(f"{text!r} on {url}", timeout_s, lambda: text in _page_text(driver))
    for button in _buttons(driver, "Skip"):
        button.click()


def _page_text(driver) -> str:
    return driver.find_element(By.TAG_NAME, "body").text


def _buttons(driver, text: str) -> list:
    return [b for b in driver.find_elements(By.TAG_NAME, "button") if b.text.strip() == text]


def _click(driver, element) -> None:
    ActionChains(driver).move_to_element(element).click().perform()


def _show_markdown(driver, field: str, alt: str) -> None:
    """Open a Markdown metadata value (the UI's "[Show Markdown]") and find its loaded image."""
    link = f"//*[text()='{field}']/ancestor::tr//*[text()='[Show Markdown]']"
    _click(
        driver,
        _wait(f"{field}'s Markdown link", 30, lambda: driver.find_elements(By.XPATH, link))[0],
    )
    _wait(
        f"the {alt} image",
        30,
        lambda: [
            img
            for img in driver.find_elements(By.CSS_SELECTOR, f"img[alt='{alt}']")
            if img.get_attribute("src").startswith("data:image/png")
            and int(img.get_attribute("naturalWidth") or 0) > 100
        ],
    )


def _latest(home: Path, key: str, partition: str | None = None):
    """The newest materialization record of `key` (of one partition), or None."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(
                asset_key=dg.AssetKey(key), asset_partitions=[partition] if partition else None
            ),
            limit=1,
        ).records
    return records[0] if records else None


def test_a_user_localizes_a_query_from_the_ui_and_sees_where_it_is(world, server, browser):
    layout, home = world
    driver, name = browser, layout.query_names()[0]
    before_query = _latest(home, "verified_localization", name).timestamp
    before_evaluation = _latest(home, "evaluation").timestamp

    # The lineage of the queries group, down from the gallery.
    _open(driver, f"{server}/locations/rsloc/asset-groups/queries", "query_patches")
    driver.save_screenshot(str(SHOTS / "1_lineage.png"))

    # One query partition launched from its job's page.
    _open(driver, f"{server}/locations/rsloc/jobs/localize_query", "Materialize all")
    _click(driver, _buttons(driver, "Materialize all…")[0])
    picker = _wait(
        "the partition picker",
        30,
        lambda: driver.find_elements(By.XPATH, "//*[text()='Select a partition or create one']"),
    )
    _click(driver, picker[0])
    option = _wait(
        "the partition list", 30, lambda: driver.find_elements(By.XPATH, f"//span[text()='{name}']")
    )
    _click(driver, option[0])
    driver.save_screenshot(str(SHOTS / "2_launch.png"))
    _click(driver, _wait("the launch button", 30, lambda: _buttons(driver, "Launch 1 run"))[0])

    record = _wait(
        f"{name}'s run to succeed",
        RUN_TIMEOUT_S,
        lambda: (
            (r := _latest(home, "verified_localization", name)) and r.timestamp > before_query and r
        ),
    )
    _open(driver, f"{server}/runs/{record.run_id}", "Success", timeout_s=60)
    driver.save_screenshot(str(SHOTS / "3_run.png"))

    # The answer on the asset page: the preview picture and the rounded footprint.
    metadata = record.asset_materialization.metadata
    centre = metadata["centre_lonlat"].value
    assert all(round(v, 6) == v for v in json.loads(centre))
    _open(driver, f"{server}/assets/verified_localization?view=events&partition={name}", centre)
    assert metadata["corners_lonlat"].value in _page_text(driver)
    _show_markdown(driver, "preview", name)
    driver.save_screenshot(str(SHOTS / "4_verified_localization.png"))

    # Evaluation updates itself after the run, and shows its map.
    evaluation = _wait(
        "evaluation to update by itself",
        EVALUATION_TIMEOUT_S,
        lambda: (e := _latest(home, "evaluation")) and e.timestamp > before_evaluation and e,
    )
    assert evaluation.timestamp > record.timestamp
    _open(driver, f"{server}/assets/evaluation?view=events", "within 1 tile")
    _show_markdown(driver, "map", "evaluation map")
    driver.save_screenshot(str(SHOTS / "5_evaluation.png"))
