"""The explorer in a real headless Chromium (Debian's `chromium` and `chromium-driver`,
installed by `make system-deps`, driven by Selenium): the pages load, the head updates
live, a block's page links to its transactions and a transaction's to its block, the
proof downloads and verifies offline against the genesis, and a hostile path shows an
error page. A screenshot of each page is saved under the test's tmp_path, and also in
$MEDLEDGER_SCREENSHOTS when set. Skips, saying why, where Chromium or its driver is
missing or cannot start."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from medledger.client import LedgerClient
from medledger.client.tx_proof import leaf_hash_of, verify_tx_proof
from medledger.config import Home
from medledger.genesis import Genesis
from medledger.keys import load_key
from medledger.run.homes import init_home
from medledger.run.launcher import NodeProcess, start_node
from medledger.transport.credentials import ClientTls
from medledger.tx import TxBuilder

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
common = pytest.importorskip("selenium.common")
by = pytest.importorskip("selenium.webdriver.common.by")
chrome_service = pytest.importorskip("selenium.webdriver.chrome.service")

CHAIN = "explorer-browser-1"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> tuple[str, str]:
    browser = next((p for n in CHROMIUM_NAMES if (p := shutil.which(n))), None)
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip(
            "headless Chromium not found: install Debian's chromium and chromium-driver "
            "(`make system-deps` does, as root)"
        )
    return browser, driver


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    binary, driver_path = find_chromium()
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in a container has no user namespace for the sandbox
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,900",
    ):
        options.add_argument(argument)
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    try:
        driver = webdriver.Chrome(service=chrome_service.Service(driver_path), options=options)
    except common.WebDriverException as error:
        pytest.skip(f"headless Chromium did not start: {error.msg or error}")
    driver.execute_cdp_cmd(
        "Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    driver.downloads = downloads
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[Home, NodeProcess]]:
    home = Home(tmp_path / "node")
    init_home(home, CHAIN, listen="127.0.0.1:0")
    process = start_node(home.root)
    try:
        yield home, process
    finally:
        process.stop()


def wait_for(condition: Callable[[], Any], what: str, timeout_s: float = 15) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_explorer_in_headless_chromium(
    browser: Any, node: tuple[Home, NodeProcess], tmp_path: Path
) -> None:
    home, process = node
    key = load_key(home.keys_dir / "client.json")
    builder = TxBuilder(key, CHAIN)
    tls = ClientTls.from_file(home.consortium_ca)
    with LedgerClient(process.address, tls=tls) as client:
        expiry = client.status().height + 100
        txs = [
            builder.transfer(to=key.public_key, amount_micros=1, expiry_height=expiry)
            for _ in range(3)
        ]
        (receipts,) = client.submit_batches([txs])
    base = f"http://{process.ops_address}"
    shots = tmp_path / "screenshots"
    shots.mkdir()
    keep = os.environ.get("MEDLEDGER_SCREENSHOTS")

    def screenshot(name: str) -> None:
        path = shots / f"{name}.png"
        assert browser.save_screenshot(str(path)), name
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(keep) / path.name)

    def find(selector: str) -> Any:
        return browser.find_element(by.By.CSS_SELECTOR, selector)

    # Latest blocks, with the head filled in by the polling script.
    browser.get(f"{base}/explorer/")
    assert "latest blocks" in browser.title
    head = wait_for(lambda: find("#head").text.startswith("#") and find("#head").text, "head")
    assert int(head[1:]) >= receipts[0].height
    rows = browser.find_elements(by.By.CSS_SELECTOR, "#blocks tbody tr")
    assert rows
    screenshot("01-latest-blocks")

    # The head moves on without a reload when a block is committed.
    with LedgerClient(process.address, tls=tls) as client:
        client.submit(
            builder.transfer(to=key.public_key, amount_micros=1, expiry_height=expiry), wait=True
        )
    wait_for(lambda: int(find("#head").text[1:]) > int(head[1:]), "the head to update live")
    wait_for(lambda: find("#new-blocks").is_displayed(), "the new-blocks notice")

    # From the latest blocks to the block of the first transfer, then to a transaction.
    height = receipts[0].height
    link = browser.find_element(by.By.LINK_TEXT, str(height))
    link.click()
    wait_for(lambda: browser.current_url.endswith(f"/explorer/blocks/{height}"), "block page")
    assert find("h1").text == f"Block {height}"
    tx_links = browser.find_elements(by.By.CSS_SELECTOR, "a.tx-link")
    assert {a.text for a in tx_links} >= {r.tx_id.hex() for r in receipts if r.height == height}
    screenshot("02-block")
    target = receipts[0].tx_id.hex()
    browser.find_element(by.By.LINK_TEXT, target).click()
    wait_for(lambda: browser.current_url.endswith(f"/explorer/tx/{target}"), "transaction page")
    assert find("#code").text == "OK"
    assert find("#block-link").get_attribute("href").endswith(f"/explorer/blocks/{height}")
    screenshot("03-transaction")

    # The proof downloads and verifies against the genesis alone.
    find("#proof-link").click()
    downloaded = browser.downloads / f"tx-{target}.proof.json"
    wait_for(downloaded.exists, "the proof download")
    document = json.loads(downloaded.read_text())
    proven = verify_tx_proof(document, Genesis.load(home.genesis))
    assert proven.height == height
    assert proven.leaf_hash == leaf_hash_of(txs[0])

    # Back from the transaction to its block.
    find("#block-link").click()
    wait_for(lambda: browser.current_url.endswith(f"/explorer/blocks/{height}"), "back to block")

    browser.get(f"{base}/explorer/validators")
    assert Genesis.load(home.genesis).validators[0].public_key.hex() in find("#validators").text
    screenshot("04-validators")

    browser.get(f"{base}/explorer/accounts/{key.public_key.hex()}")
    assert "micro-units" in find("#balance").text
    screenshot("05-account")

    browser.get(f"{base}/explorer/blocks/not-a-height")
    assert "not a number" in find("#error").text
    screenshot("06-error")

    assert len(list(shots.glob("*.png"))) == 6
