"""The search page and the API docs in a real browser: Debian's chromium driven by Selenium through
chromium-driver, against a real `newsindex serve` process, with no host but 127.0.0.1 resolvable. `.ci/run` installs both with apt-get and sets
NEWSINDEX_BROWSER_TEST=required, so there a missing browser fails instead of skipping."""

from __future__ import annotations

import os
import shutil
from urllib.parse import parse_qs, urlparse

import pytest

from test_serve import running_server


def _browser_paths() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver") else None)
    if not (chromium and driver):
        message = "needs chromium and chromium-driver (apt-get install -y chromium chromium-driver)"
        if os.environ.get("NEWSINDEX_BROWSER_TEST") == "required":
            pytest.fail(message)
        pytest.skip(message)
    return chromium, driver


@pytest.fixture(scope="module")
def browser():
    chromium, driver_path = _browser_paths()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1200,900"):
        options.add_argument(argument)
    # Offline, as a user without network sees the pages: every host name but the server's fails.
    options.add_argument("--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1")
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def test_type_a_query_see_results_open_the_article_see_the_passage(browser, search_db, subprocess_env):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import Select, WebDriverWait

    wait = WebDriverWait(browser, 30)
    with running_server(search_db, subprocess_env) as base:
        browser.get(base + "/")
        box = wait.until(seen.presence_of_element_located((By.ID, "q")))
        box.send_keys("flash floods in Romania", Keys.ENTER)
        hits = wait.until(seen.presence_of_all_elements_located((By.CSS_SELECTOR, "#results li.hit")))
        assert len(hits) == 10
        first = hits[0]
        assert first.find_element(By.CSS_SELECTOR, "a.title").text == "Flood romania flash"
        meta = first.find_element(By.CSS_SELECTOR, ".meta").text
        assert "score" in meta and "semantic #" in meta and "keyword #" in meta
        terms = [m.text.lower() for m in first.find_elements(By.CSS_SELECTOR, "p.passage mark.term")]
        assert terms and all(t.startswith(("flash", "flood", "romania")) for t in terms), terms

        # The query lives in the URL: empty filters are left out, and the link opens the same page.
        shared = browser.current_url
        assert parse_qs(urlparse(shared).query) == {"q": ["flash floods in Romania"], "mode": ["hybrid"]}
        Select(browser.find_element(By.ID, "mode")).select_by_value("semantic")  # submits by itself
        wait.until(lambda d: "mode=semantic" in d.current_url)
        assert "semantic #1" in browser.find_element(By.CSS_SELECTOR, "#results li.hit .meta").text
        browser.get(shared)
        first = wait.until(seen.presence_of_element_located((By.CSS_SELECTOR, "#results li.hit")))
        link = first.find_element(By.CSS_SELECTOR, "a.title")
        passage_text = first.find_element(By.CSS_SELECTOR, "p.passage").text

        link.click()
        article = wait.until(seen.presence_of_element_located((By.ID, "article")))
        assert article.find_element(By.TAG_NAME, "h1").text == "Flood romania flash"
        passage = browser.find_element(By.ID, "passage")
        assert passage.is_displayed() and passage.value_of_css_property("background-color") != "rgba(0, 0, 0, 0)"
        assert " ".join(passage.text.split()) == " ".join(passage_text.split())
        marked = [m.text.lower() for m in passage.find_elements(By.CSS_SELECTOR, "mark.term")]
        assert marked and all(t.startswith(("flash", "flood", "romania")) for t in marked)
        assert len(browser.find_element(By.ID, "text").text) > len(passage.text)  # the full text around it
        related = browser.find_elements(By.CSS_SELECTOR, "#related li a")
        assert related and related[0].text == "Flood bangladesh monsoon"


def test_api_docs_render_offline_from_the_servers_own_files(browser, search_db, subprocess_env):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait

    with running_server(search_db, subprocess_env) as base:
        browser.get(base + "/docs")
        operations = WebDriverWait(browser, 30).until(seen.presence_of_all_elements_located((By.CSS_SELECTOR, ".opblock")))
        paths = {element.text for element in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
        assert len(operations) >= 6 and {"/api/search", "/api/sql", "/api/stats"} <= paths, paths
        fetched = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert any(url.endswith("/swagger-ui-bundle.js") for url in fetched), fetched
        assert all(url.startswith(base + "/") for url in fetched), fetched
