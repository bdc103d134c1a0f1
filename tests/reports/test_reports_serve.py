"""python -m reports.serve: the index of studies, reports built on request, nothing else served."""
import html
import http.client
import os
import threading
import time
import urllib.parse

import pytest

from reports.serve import main, make_server
from reports_synth import EVIL, nanohead_rows, write_study


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    evil = write_study(root, f"nano{EVIL}", nanohead_rows(), baseline="p0")
    plain = write_study(root, "plain", nanohead_rows(failed=False, evil=False), baseline="p0")
    (root / "not_a_study").mkdir()
    srv = make_server(root, "127.0.0.1", 0, quiet=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv, root, evil, plain
    srv.shutdown()
    srv.server_close()


def get(srv, path):
    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=60)
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, r.getheader("Content-Type"), body


def test_binds_to_localhost(server):
    srv = server[0]
    assert srv.server_address[0] == "127.0.0.1" and srv.server_address[1] > 0


def test_index_lists_studies_escaped_with_links(server):
    srv, root, evil, plain = server
    status, ctype, body = get(srv, "/")
    page = body.decode()
    assert status == 200 and ctype.startswith("text/html")
    assert EVIL not in page and html.escape(EVIL) in page
    assert "not_a_study" not in page
    for d in (evil, plain):
        assert html.escape(urllib.parse.quote(d.name) + "/report.html") in page
    assert "<td>15</td>" in page  # plain: 15 done


def test_report_is_built_on_request_and_rebuilt_when_stale(server):
    srv, root, evil, plain = server
    assert not (plain / "report.html").exists()
    status, ctype, body = get(srv, f"/{urllib.parse.quote(plain.name)}/report.html")
    assert status == 200 and b"Study plain" in body and (plain / "report.html").exists()
    built = (plain / "report.html").stat().st_mtime
    later = time.time() + 5
    os.utime(plain / "trials.parquet", (later, later))  # the study moved on
    assert get(srv, f"/{plain.name}/report.html")[0] == 200
    assert (plain / "report.html").stat().st_mtime > built
    status, ctype, body = get(srv, f"/{urllib.parse.quote(evil.name)}/report.html")
    assert status == 200 and EVIL.encode() not in body
    assert get(srv, f"/{plain.name}")[0] == 302


def test_serves_report_files_only(server):
    srv, root, evil, plain = server
    assert get(srv, f"/{plain.name}/results.json")[1].startswith("application/json")
    for path in (f"/{plain.name}/trials.parquet", f"/{plain.name}/trials/p0_s0/config.json",
                 "/../../etc/passwd", "/%2e%2e/etc/passwd", f"/{plain.name}/..%2F..%2Fetc%2Fpasswd",
                 "/not_a_study/report.html", "/nothing/report.html"):
        assert get(srv, path)[0] == 404, path


def test_cli_missing_results_dir(tmp_path, capsys):
    assert main([str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
