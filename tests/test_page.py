"""The web page at ``/``, driven in a real headless Chromium through Selenium.

Needs Debian's ``chromium`` and ``chromium-driver`` (``make sysdeps`` installs
them when run as root); the browser tests skip, saying so, when either is
missing. Selenium is pointed at the system ``chromedriver``, so Selenium
Manager never downloads anything.

``MEMORY_AGENT_SCREENSHOT=docs/img/service.png .venv/bin/python -m pytest -q
tests/test_page.py`` also writes a 1280x900 screenshot of the page with data.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import httpx
import pytest

from conftest import start_service

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
XSS = "<img src=x onerror=alert(1)>"
KEY_SLOT = "memory-agent.api-key"

needs_browser = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs Debian's chromium and chromium-driver (make sysdeps, as root, installs them)",
)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A served store with data: two users, three jobs, one memory edited by hand (so it has history)."""
    s = start_service(tmp_path_factory.mktemp("page") / "svc", page=True)
    headers = s.headers("web")

    def ingest(user, turns, timestamp):
        r = httpx.post(f"{s.url}/v1/users/{user}/turns?wait=true", headers=headers,
                       json={"turns": turns, "timestamp": timestamp}, timeout=30)
        assert r.status_code == 200 and r.json()["status"] == "done", r.text
        return r.json()

    ingest("alice", [
        {"speaker": "alice", "text": "I adopted a dog named Biscuit.", "dia_id": "D1:1"},
        {"speaker": "bob", "text": "I play chess at the park on Sundays.", "dia_id": "D1:2"},
        {"speaker": "alice", "text": "My sister Ana lives in Lisbon.", "dia_id": "D1:3"},
    ], "2024-05-08T13:56")
    ingest("alice", [
        {"speaker": "alice", "text": "I started learning the cello in March.", "dia_id": "D2:1"},
        {"speaker": "alice", "text": XSS, "dia_id": "D2:2"},
    ], "2024-06-02T09:10")
    ingest("bob", [{"speaker": "bob", "text": "I work night shifts at the hospital.", "dia_id": "D1:1"}],
           "2024-05-09T20:00")
    memories = httpx.get(f"{s.url}/v1/users/alice/memories", headers=headers).json()
    dog = next(m for m in memories if "Biscuit" in m["text"])
    r = httpx.patch(f"{s.url}/v1/users/alice/memories/{dog['id']}", headers=headers,
                    json={"text": "I adopted a corgi named Biscuit."})
    assert r.status_code == 200, r.text
    s.edited = dog
    yield s
    s.stop()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,900", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(20)
    yield driver
    driver.quit()


def _wait(driver, condition, timeout=10):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def _by_testid(driver, testid, within=None):
    from selenium.webdriver.common.by import By

    return (within or driver).find_elements(By.CSS_SELECTOR, f'[data-testid="{testid}"]')


def _connect(driver, url, key, user):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver.get(url + "/")
    driver.execute_script("sessionStorage.clear()")
    driver.get(url + "/")
    field = driver.find_element(By.ID, "api-key")
    field.clear()
    field.send_keys(key)
    driver.find_element(By.ID, "connect").click()
    _wait(driver, lambda d: d.find_element(By.ID, "user-select").is_enabled()
          and d.find_elements(By.CSS_SELECTOR, f'#user-select option[value="{user}"]'))
    Select(driver.find_element(By.ID, "user-select")).select_by_value(user)


def test_page_assets_and_headers(site):
    """The page and its two assets are served with a strict CSP; nothing else under /static is."""
    r = httpx.get(site.url + "/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
    assert 'src="/static/app.js"' in r.text and "<script>" not in r.text  # no inline script
    for name, kind in (("app.js", "javascript"), ("app.css", "css")):
        a = httpx.get(f"{site.url}/static/{name}")
        assert a.status_code == 200 and kind in a.headers["content-type"]
    js = httpx.get(f"{site.url}/static/app.js").text
    assert not re.search(r"\.(inner|outer)HTML\s*=|insertAdjacentHTML|document\.write", js)  # text nodes only
    for bad in ("index.html", "..%2Fpage.py", "nope.js"):
        assert httpx.get(f"{site.url}/static/{bad}").status_code == 404
    from memory_agent.service.page import STATIC

    assert {"index.html", "app.js", "app.css"} <= {p.name for p in STATIC.iterdir()}


@needs_browser
def test_page_end_to_end(site, browser):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    d, key, edited = browser, site.key("web"), site.edited
    _connect(d, site.url, key, "alice")
    assert d.execute_script(f"return sessionStorage.getItem('{KEY_SLOT}')") == key

    # memories: text, source turn and speaker, time
    _wait(d, lambda d: len(_by_testid(d, "memory")) == 5)
    rows = {r.get_attribute("data-id"): r for r in _by_testid(d, "memory")}
    texts = [_by_testid(d, "memory-text", r)[0].text for r in rows.values()]
    assert "I adopted a corgi named Biscuit." in texts and "My sister Ana lives in Lisbon" in texts
    chess = next(r for r in rows.values() if "chess" in r.text)
    assert _by_testid(d, "memory-source", chess)[0].text == "D1:2 · bob"
    assert "2024-05-08 13:56" in _by_testid(d, "memory-time", chess)[0].text
    assert not any("night shifts" in t for t in texts)  # bob's memory is not alice's

    # untrusted text is shown as text: no element injected, no script run
    assert XSS in texts
    assert d.find_elements(By.TAG_NAME, "img") == []
    assert d.find_elements(By.CSS_SELECTOR, "[onerror]") == []
    with pytest.raises(NoAlertPresentException):
        d.switch_to.alert.text

    # search
    q = d.find_element(By.ID, "search-query")
    q.send_keys("corgi Biscuit")
    d.find_element(By.ID, "search-button").click()
    _wait(d, lambda d: _by_testid(d, "hit"))
    top = _by_testid(d, "hit")[0]
    assert top.get_attribute("data-id") == str(edited["id"])
    assert _by_testid(d, "hit-text", top)[0].text == "I adopted a corgi named Biscuit."

    # history of the edited memory: ADD by the agent, then UPDATE by the user with old and new text
    rows[str(edited["id"])].find_element(By.CSS_SELECTOR, '[data-testid="history-button"]').click()
    _wait(d, lambda d: len(_by_testid(d, "history-entry")) == 2)
    entries = _by_testid(d, "history-entry")
    assert [e.get_attribute("data-event") for e in entries] == ["ADD", "UPDATE"]
    add, upd = entries
    assert _by_testid(d, "history-new", add)[0].text == "I adopted a dog named Biscuit"
    assert _by_testid(d, "history-old", add) == []
    assert _by_testid(d, "history-actor", add)[0].text == "agent"
    assert _by_testid(d, "history-old", upd)[0].text == "I adopted a dog named Biscuit"
    assert _by_testid(d, "history-new", upd)[0].text == "I adopted a corgi named Biscuit."
    assert _by_testid(d, "history-actor", upd)[0].text == "user"
    assert d.find_element(By.ID, "history-title").text == f"History of memory #{edited['id']}"

    # jobs: alice's two, both done, with progress and counts
    _wait(d, lambda d: len(_by_testid(d, "job")) == 2)
    jobs = _by_testid(d, "job")
    assert [j.get_attribute("data-status") for j in jobs] == ["done", "done"]
    assert [_by_testid(d, "job-status", j)[0].text for j in jobs] == ["done", "done"]
    assert sorted(_by_testid(d, "job-progress", j)[0].text for j in jobs) == ["2/2 turns", "3/3 turns"]
    assert sorted(_by_testid(d, "job-counts", j)[0].text for j in jobs) == ["2 add", "3 add"]

    # still nothing injected after every panel rendered the untrusted text; no script errors
    assert d.find_elements(By.TAG_NAME, "img") == []
    errors = [e for e in d.get_log("browser") if e["level"] == "SEVERE" and "favicon" not in e["message"]]
    assert errors == []

    shot = os.environ.get("MEMORY_AGENT_SCREENSHOT")
    if shot:
        d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                          {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False})
        d.execute_script("document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0)")
        Path(shot).parent.mkdir(parents=True, exist_ok=True)
        assert d.save_screenshot(str(shot))
        d.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

    # the key survives a reload of the tab (sessionStorage) and reconnects
    d.refresh()
    _wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, '#user-select option[value="bob"]'))
    assert d.find_element(By.ID, "api-key").get_attribute("value") == key


@needs_browser
def test_page_other_user_and_bad_key(site, browser):
    from selenium.webdriver.common.by import By

    d = browser
    _connect(d, site.url, site.key("web"), "bob")
    _wait(d, lambda d: len(_by_testid(d, "memory")) == 1)
    assert _by_testid(d, "memory-text")[0].text == "I work night shifts at the hospital"
    _wait(d, lambda d: len(_by_testid(d, "job")) == 1)

    # another tenant's key sees none of these users
    other = site.key("other")
    field = d.find_element(By.ID, "api-key")
    field.clear()
    field.send_keys(other)
    d.find_element(By.ID, "connect").click()
    _wait(d, lambda d: "0 users" in d.find_element(By.ID, "status").text)
    assert d.find_elements(By.CSS_SELECTOR, '#user-select option[value="alice"]') == []

    # a wrong key is refused, said plainly
    field.clear()
    field.send_keys("ma_not_a_real_key")
    d.find_element(By.ID, "connect").click()
    _wait(d, lambda d: "refused" in d.find_element(By.ID, "status").text)
    assert "error" in d.find_element(By.ID, "status").get_attribute("class")
    assert _by_testid(d, "memory") == [] and not d.find_element(By.ID, "user-select").is_enabled()
    assert d.execute_script(f"return sessionStorage.getItem('{KEY_SLOT}')") is None  # a refused key is not kept

    # "Forget key" drops a good key from the tab
    field.clear()
    field.send_keys(site.key("web"))
    d.find_element(By.ID, "connect").click()
    _wait(d, lambda d: "2 users" in d.find_element(By.ID, "status").text)
    assert d.execute_script(f"return sessionStorage.getItem('{KEY_SLOT}')") == site.key("web")
    d.find_element(By.ID, "forget").click()
    assert d.execute_script(f"return sessionStorage.getItem('{KEY_SLOT}')") is None
    assert field.get_attribute("value") == "" and _by_testid(d, "memory") == []
