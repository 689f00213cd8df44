"""`newsindex serve` as a user runs it: a real `newsindex serve` process on a free port, over a real
warehouse, asked through HTTP. Also the Python API (newsindex.Index) in-process, and an ingest run
by another process while the server is up."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from conftest import doc_id_of, free_port, write

NEWSINDEX = Path(sys.executable).with_name("newsindex")


@contextmanager
def running_server(db: Path, env: dict, *extra: str, timeout: float = 120.0):
    """A `newsindex serve` process on a free port; yields its base URL once /api/stats answers."""
    port = free_port()
    process = subprocess.Popen(
        [str(NEWSINDEX), "serve", "--db", str(db), "--port", str(port), *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise AssertionError(f"newsindex serve exited with {process.returncode}: {process.stdout.read()}")
            try:
                if httpx.get(f"{base}/api/stats", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "newsindex serve did not answer in time"
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _stopped(pid: int) -> bool:
    """The process is stopped by a signal (state T in /proc/PID/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2] in "Tt"


@pytest.fixture(scope="module")
def served(search_db, subprocess_env):
    with running_server(search_db, subprocess_env) as base:
        with httpx.Client(base_url=base, timeout=30) as client:
            yield client


def test_search_returns_hits_with_both_ranks_and_highlights(served):
    response = served.get("/api/search", params={"q": "flood rescue boats", "k": 3})
    assert response.status_code == 200
    body = response.json()
    assert body["query"] == "flood rescue boats" and body["mode"] == "hybrid" and body["took_ms"] > 0
    assert len(body["results"]) == 3
    fields = {"doc_id", "chunk_id", "title", "published", "source_path", "url", "text", "score",
              "semantic_rank", "keyword_rank", "highlights"}  # fmt: skip
    for hit in body["results"]:
        assert fields <= hit.keys()
        assert hit["semantic_rank"] or hit["keyword_rank"]
        # The passage shown is the article's best fused one: it may be found by meaning alone and
        # hold none of the query's words, so not every hit has highlights.
        for start, end in hit["highlights"]:
            assert hit["text"][start:end].lower()[:4] in {"floo", "resc", "boat"}
    assert "flood" in body["results"][0]["title"].lower() and body["results"][0]["highlights"]
    assert body["snapshot"]["current"] is True and body["snapshot"]["documents"] == 15


def test_answers_equal_the_cli_search_on_the_file(served, search_db):
    """The snapshot answers exactly what `newsindex search` answers from the file, in every mode."""
    from newsindex.queries.search import Filters, search

    for mode in ("semantic", "keyword", "hybrid"):
        for since in (None, dt.date(2024, 6, 1)):
            params = {"q": "interest rates central bank", "k": 8, "mode": mode}
            if since:
                params["since"] = since.isoformat()
            got = [h["chunk_id"] for h in served.get("/api/search", params=params).json()["results"]]
            expected = [h.chunk_id for h in search(search_db, params["q"], k=8, mode=mode, filters=Filters(since=since)).hits]
            assert got == expected, (mode, since)


def test_filters_offset_and_per_doc(served):
    everything = served.get("/api/search", params={"q": "flood", "k": 10, "mode": "semantic"}).json()["results"]
    page = served.get("/api/search", params={"q": "flood", "k": 4, "offset": 3, "mode": "semantic"}).json()["results"]
    assert [h["chunk_id"] for h in page] == [h["chunk_id"] for h in everything[3:7]]
    dated = served.get("/api/search", params={"q": "flood", "k": 20, "since": "2025-01-01"}).json()["results"]
    assert dated and all(h["published"] >= "2025-01-01" for h in dated)
    seeds = served.get("/api/search", params={"q": "warning", "k": 20, "source": "seeds/*.txt"}).json()["results"]
    assert seeds and all("/seeds/" in h["source_path"] for h in seeds)
    per_doc = served.get("/api/search", params={"q": "flood", "k": 5, "per_doc": "true"}).json()["results"]
    assert len({h["doc_id"] for h in per_doc}) == len(per_doc) == 5


def test_document_related_stats_and_runs(served, search_db):
    doc_id = doc_id_of(search_db, "rate-cut-chile")
    document = served.get(f"/api/documents/{doc_id}").json()
    assert document["doc_id"] == doc_id and document["title"] == "Rate cut chile"
    assert [p["ordinal"] for p in document["passages"]] == list(range(len(document["passages"])))
    for passage in document["passages"]:
        assert document["text"][passage["char_start"] : passage["char_end"]] == passage["text"]
    related = served.get(f"/api/related/{doc_id}", params={"k": 3}).json()["results"]
    assert len(related) == 3 and doc_id not in {r["doc_id"] for r in related}
    assert related[0]["title"] == "Rate hike norway"
    stats = served.get("/api/stats").json()
    assert stats["documents"] == 15 and stats["chunks"] > 15
    runs = served.get("/api/runs").json()
    assert runs["runs"][0]["status"] == "completed" and runs["writing"] is None


def test_sql_is_read_only_with_row_cap_and_time_limit(served):
    ok = served.post("/api/sql", json={"sql": "SELECT title FROM articles WHERE published < ? ORDER BY title", "params": ["2024-05-01"]})
    assert ok.status_code == 200 and ok.json()["rows"] and ok.json()["truncated"] is False
    named = served.post("/api/sql", json={"sql": "SELECT $n + 1 AS m", "params": {"n": 41}}).json()
    assert named["columns"] == ["m"] and named["rows"] == [[42]]
    capped = served.post("/api/sql", json={"sql": "SELECT * FROM range(5000)"}).json()
    assert capped["row_count"] == 1000 and capped["truncated"] is True
    assert served.post("/api/sql", json={"sql": "SELECT * FROM range(50)", "max_rows": 10}).json()["row_count"] == 10
    embedded = served.post("/api/sql", json={"sql": "SELECT title FROM passages ORDER BY array_cosine_similarity(embedding, embed('flash floods in Romania')) DESC LIMIT 1"})
    assert embedded.json()["rows"] == [["Flood romania flash"]]
    started = time.monotonic()
    slow = served.post("/api/sql", json={"sql": "SELECT count(*) FROM range(1000000000000)", "seconds": 0.5})
    assert slow.status_code == 408 and "limit" in slow.json()["error"]
    assert time.monotonic() - started < 10
    refused = {
        "DELETE FROM chunks": 403,
        "ATTACH '/tmp/other.duckdb' AS o": 403,
        "SELECT * FROM read_csv('/etc/passwd')": 403,
        "SELECT * FROM '/etc/passwd'": 400,  # not a table here: the sandbox never looks for the file
        "COPY chunks TO '/tmp/stolen.csv'": 403,
        "SET enable_external_access = true": 403,
        "SELEC 1": 400,
        "SELECT 1; SELECT 2": 400,
        "": 400,
    }
    for statement, status in refused.items():
        response = served.post("/api/sql", json={"sql": statement})
        assert response.status_code == status, (statement, response.text)
        assert "\n" not in response.json()["error"]
    assert not Path("/tmp/stolen.csv").exists()
    assert served.get("/api/stats").json()["documents"] == 15


def test_bad_requests_get_one_line_json_errors(served):
    cases = [
        ("/api/search", {"q": "x", "k": 1001}, 422, "k"),
        ("/api/search", {"q": "x", "k": 0}, 422, "k"),
        ("/api/search", {"q": "x" * 1001}, 422, "q"),
        ("/api/search", {}, 422, "q"),
        ("/api/search", {"q": "x", "mode": "fuzzy"}, 422, "mode"),
        ("/api/search", {"q": "x", "since": "2024/01/01"}, 422, "since"),
        ("/api/search", {"q": "x", "offset": 995, "k": 10}, 400, "offset"),
        ("/api/search", {"q": "   "}, 400, "empty"),
        ("/api/documents/no-such-doc", {}, 404, "no-such-doc"),
        ("/api/related/no-such-doc", {}, 404, "no-such-doc"),
        ("/api/nothing", {}, 404, "Not Found"),
    ]
    for path, params, status, word in cases:
        response = served.get(path, params=params)
        assert response.status_code == status, (path, params, response.text)
        error = response.json()["error"]
        assert word in error and "\n" not in error, error
    big = served.post("/api/sql", content=b'{"sql": "' + b"x" * 100_000 + b'"}', headers={"content-type": "application/json"})
    assert big.status_code == 413
    streamed = served.post("/api/sql", content=iter([b'{"sql": "', b"x" * 100_000, b'"}']), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    long_sql = served.post("/api/sql", json={"sql": "SELECT " + "1 + " * 6000 + "1"})
    assert long_sql.status_code == 422 and "sql" in long_sql.json()["error"]


def test_no_file_is_reachable_through_a_path(served):
    for path in ["/static/../pyproject.toml", "/static/%2e%2e/app.py", "/static/%2e%2e%2f%2e%2e%2fpyproject.toml",
                 "/static//etc/passwd", "/api/documents/../../etc/passwd", "/api/documents/%2Fetc%2Fpasswd",
                 "/documents/..%2F..%2Fpyproject.toml"]:  # fmt: skip
        response = served.get(path)
        assert response.status_code == 404, path
        assert "root:" not in response.text and "[project]" not in response.text and "import" not in response.text
    assert served.get("/static/app.js").status_code == 200


def test_safe_defaults_localhost_and_no_cors(served):
    port = int(str(served.base_url).rsplit(":", 1)[1].strip("/"))
    listening = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
    local = {fields[1] for fields in listening if fields[3] == "0A"}  # state LISTEN
    assert f"0100007F:{port:04X}" in local  # 127.0.0.1 only
    assert not any(addr.endswith(f":{port:04X}") and not addr.startswith("0100007F") for addr in local)
    response = served.get("/api/stats", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in response.headers
    preflight = served.options("/api/sql", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers


def test_openapi_docs(served):
    spec = served.get("/openapi.json").json()
    assert {"/api/search", "/api/sql", "/api/stats", "/api/runs", "/api/documents/{doc_id}", "/api/related/{doc_id}"} <= spec["paths"].keys()
    assert served.get("/docs").status_code == 200


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_api_docs_load_nothing_from_another_host(served, page):
    import re

    html = served.get(page)
    assert html.status_code == 200 and "text/html" in html.headers["content-type"]
    # Every script, stylesheet and icon the page names is a path on this server, and it is served.
    assets = re.findall(r'(?:src|href)=["\']([^"\']+)["\']', html.text)
    assert len(assets) >= 2, html.text
    assert not re.search(r'["\'(]\s*(?:https?:)?//', html.text), html.text
    kinds = {".js": "javascript", ".css": "text/css", ".png": "image/png"}
    for url in assets:
        assert url.startswith("/"), url
        response = served.get(url)
        assert response.status_code == 200 and len(response.content) > 1000, url
        assert kinds[Path(url).suffix] in response.headers["content-type"], (url, response.headers["content-type"])


def test_search_page_and_article_page(served, search_db):
    page = served.get("/", params={"q": "flash floods Romania", "mode": "semantic", "since": "2024-01-01"})
    assert page.status_code == 200
    html = page.text
    assert "Flood romania flash" in html and '<mark class="term">' in html and 'value="flash floods Romania"' in html
    assert "semantic #1" in html and 'selected>semantic' in html.replace('"semantic" ', '')
    doc_id = doc_id_of(search_db, "flood-romania-flash")
    article = served.get(f"/documents/{doc_id}", params={"q": "floods", "chunk": f"{doc_id}#1"})
    assert article.status_code == 200
    assert '<mark class="passage" id="passage">' in article.text and "Related articles" in article.text
    assert "Flood bangladesh monsoon" in article.text  # its closest relative
    assert served.get("/", params={"q": "x", "since": "yesterday"}).status_code == 400
    escaped = served.get("/", params={"q": "<script>alert(1)</script>"}).text
    assert "<script>alert(1)</script>" not in escaped and "&lt;script&gt;" in escaped


def test_twenty_clients_for_three_seconds(served):
    """A short version of bench/serve.py: 20 concurrent clients, no errors; prints p50/p95."""
    queries = ["flood", "interest rates", "who warned Russia", "museum theft", "election recount", "wildfire evacuation"]
    latencies: list[float] = []
    errors: list[str] = []
    stop = time.monotonic() + 3

    def client(number: int) -> None:
        with httpx.Client(base_url=served.base_url, timeout=60) as http:
            i = number
            while True:  # at least one request each, however late the thread starts on a busy machine
                started = time.perf_counter()
                response = http.get("/api/search", params={"q": queries[i % len(queries)], "k": 10})
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200 or not response.json()["results"]:
                    errors.append(f"{response.status_code} {response.text[:200]}")
                i += 1
                if time.monotonic() >= stop:
                    break

    threads = [threading.Thread(target=client, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[:3]
    assert len(latencies) >= 20
    ordered = sorted(latencies)
    print(f"{len(ordered)} requests: p50 {statistics.median(ordered) * 1000:.0f} ms, p95 {ordered[int(0.95 * len(ordered)) - 1] * 1000:.0f} ms")


def test_ingest_while_serving_completes_and_is_then_found(search_db, subprocess_env, tmp_path):
    """An ingest by another process while the server is up: both sides work throughout, the server
    says a writer is at work while it is, and the new article is found within seconds of the run."""
    db = tmp_path / "served.duckdb"
    shutil.copy(search_db, db)
    news = write(tmp_path / "news" / "glacier-lake-outburst.txt",
                 "date 2025-08-02\nA glacier lake burst its moraine dam above the Zorbanek valley, sending a "
                 "wall of meltwater through three villages.\n\nResidents had been warned by sirens installed "
                 "after a similar outburst flood a decade ago.\n")  # fmt: skip
    with running_server(db, subprocess_env) as base, httpx.Client(base_url=base, timeout=30) as client:
        # Stopped after its batch is embedded, lock held and nothing written (the fault point's
        # SIGSTOP), so the server is asked while the run is sure to be going, however fast it is.
        ingest = subprocess.Popen([str(NEWSINDEX), "ingest", str(news.parent), "--db", str(db), "--json"],
                                  env={**subprocess_env, "NEWSINDEX_FAULT": "embed", "NEWSINDEX_FAULT_SIGNAL": "STOP"},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        statuses, resumed, writer_while_stopped = [], False, None
        try:
            deadline = time.monotonic() + 240
            while ingest.poll() is None:
                response = client.get("/api/search", params={"q": "flood", "k": 3})
                statuses.append(response.status_code)
                if not resumed and _stopped(ingest.pid):
                    writer_while_stopped = client.get("/api/search", params={"q": "flood", "k": 3}).json()["snapshot"]["writer"]
                    os.kill(ingest.pid, signal.SIGCONT)
                    resumed = True
                assert resumed or time.monotonic() < deadline, "the ingest never reached its embedded batch"
                time.sleep(0.1)
        finally:
            if ingest.poll() is None:
                os.kill(ingest.pid, signal.SIGCONT)
        out, err = ingest.communicate(timeout=600)
        assert ingest.returncode == 0, err
        assert '"added": 1' in out
        assert statuses and set(statuses) == {200}
        assert writer_while_stopped and f"ingest run (pid {ingest.pid}" in writer_while_stopped, (
            f"the server did not say the stopped ingest was writing: {writer_while_stopped!r}"
        )
        deadline = time.monotonic() + 30
        while True:
            found = client.get("/api/search", params={"q": "Zorbanek glacier", "k": 1, "mode": "keyword"}).json()
            if found["results"] and found["results"][0]["title"] == "Glacier lake outburst":
                break
            assert time.monotonic() < deadline, f"the new article was not found within 30 s: {found}"
            time.sleep(0.2)
        assert found["snapshot"]["documents"] == 16 and found["snapshot"]["current"] is True
        assert client.get("/api/runs").json()["runs"][0]["added"] == 1
    # and the server let go of the file: a writer opens it at once
    import duckdb

    duckdb.connect(str(db)).close()


def test_python_api(search_db, tmp_path):
    from newsindex import Index
    from newsindex.api import BadRequest, NotFound, SqlRefused, SqlTimeout

    db = tmp_path / "copy.duckdb"
    shutil.copy(search_db, db)
    with Index(db) as index:
        hits = index.search("flash floods Romania", k=3, mode="semantic", since="2024-01-01")
        assert len(hits) == 3 and hits.mode == "semantic" and hits[0].title == "Flood romania flash"
        assert hits[0].semantic_rank == 1 and hits[0].highlights
        assert hits.freshness.current and hits.freshness.documents == 15
        doc = index.document(hits[0].doc_id)
        assert doc.text[doc.passages[0].char_start : doc.passages[0].char_end] == doc.passages[0].text
        assert index.related(hits[0].doc_id, 1)[0]["title"] == "Flood bangladesh monsoon"
        assert index.sql("SELECT count(*) FROM documents WHERE published >= ?", ["2025-01-01"]).rows[0][0] > 0
        assert index.stats()["documents"] == 15
        with pytest.raises(SqlRefused):
            index.sql("DROP TABLE chunks")
        with pytest.raises(SqlTimeout):
            index.sql("SELECT count(*) FROM range(1000000000000)", seconds=0.3)
        with pytest.raises(BadRequest):
            index.search("x", k=1001)
        with pytest.raises(NotFound):
            index.document("nope")
        # A notebook's Index sees another process's writes on its next call, holding nothing between.
        subprocess.run([sys.executable, "-c", f"import duckdb; c = duckdb.connect({str(db)!r});"
                        "c.execute(\"UPDATE documents SET title = 'Renamed' WHERE title = 'Flood romania flash'\")"],
                       check=True)  # fmt: skip
        deadline = time.monotonic() + 10
        while index.search("flash floods Romania", k=1, mode="semantic")[0].title != "Renamed":
            assert time.monotonic() < deadline
            time.sleep(0.2)


def test_serve_refuses_bad_options(search_db, subprocess_env):
    result = subprocess.run([str(NEWSINDEX), "serve", "--db", str(search_db), "--port", "70000"],
                            env=subprocess_env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2 and "70000" in result.stderr and "Traceback" not in result.stderr


def test_python_api_ingest_runs_the_flow_and_sees_its_work(search_db, prefect_server, tmp_path):
    from newsindex import Index

    db = tmp_path / "copy.duckdb"
    shutil.copy(search_db, db)
    article = write(tmp_path / "news" / "tram-strike.md", "---\ntitle: Tram drivers strike in Quillmore\ndate: 2025-03-03\n"
                    "url: javascript:alert(1)\n---\n"
                    "Tram drivers in Quillmore walked out for a day over rosters, stranding commuters.\n")  # fmt: skip
    with Index(db) as index:
        assert index.stats()["documents"] == 15
        summary = index.ingest([article.parent])
        assert summary["added"] == 1 and summary["failed"] == 0
        hits = index.search("Quillmore tram", k=1, mode="keyword")  # no wait: ingest reloads
        assert hits[0].title == "Tram drivers strike in Quillmore" and hits.freshness.documents == 16
        # The article page links only http(s) URLs: a stored `javascript:` URL is shown as text.
        from fastapi.testclient import TestClient

        from newsindex.web.app import create_app

        page = TestClient(create_app(index)).get(f"/documents/{hits[0].doc_id}")
        assert page.status_code == 200 and "javascript:alert(1)" in page.text and 'href="javascript' not in page.text


def test_serve_without_a_warehouse_yet_says_so(subprocess_env, tmp_path):
    missing = tmp_path / "none.duckdb"
    port = free_port()
    process = subprocess.Popen([str(NEWSINDEX), "serve", "--db", str(missing), "--port", str(port)], env=subprocess_env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/api/search", params={"q": "x"}, timeout=10)
                break
            except httpx.TransportError:
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
        assert response.status_code == 503
        assert "no warehouse here yet" in response.json()["error"]
        assert not missing.exists()  # serving never creates one
    finally:
        process.terminate()
        process.wait(timeout=15)


def test_sql_values_of_every_kind_come_back_as_json(served):
    body = served.post("/api/sql", json={"sql": "SELECT 170141183460469231731687303715884105727::HUGEINT AS big, DATE '2024-01-02' AS d,"
                                                " 1.5::DECIMAL(4,2) AS dec, [1, 2] AS list, {'a': 1} AS s, 'x'::BLOB AS b, NULL AS n,"
                                                " 'nan'::DOUBLE AS nan"}).json()  # fmt: skip
    assert body["rows"] == [["170141183460469231731687303715884105727", "2024-01-02", 1.5, [1, 2], {"a": 1}, "78", None, None]]
