"""python -m reports.serve: the index of studies, reports built on request, nothing else served."""

import html
import http.client
import os
import threading
import time
import urllib.parse

import pytest
from reports_synth import EVIL, nanohead_rows, write_study

from reports.serve import main, make_server


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
    for path in (
        f"/{plain.name}/trials.parquet",
        f"/{plain.name}/trials/p0_s0/config.json",
        "/../../etc/passwd",
        "/%2e%2e/etc/passwd",
        f"/{plain.name}/..%2F..%2Fetc%2Fpasswd",
        "/not_a_study/report.html",
        "/nothing/report.html",
    ):
        assert get(srv, path)[0] == 404, path


def test_cli_missing_results_dir(tmp_path, capsys):
    assert main([str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


# ----------------------------------------------------------------------------- nothing from outside the results folder
# Its real path (symlinks resolved) decides: not a study folder linked in from elsewhere, not a report file that links
# out. Real links, real HTTP.

SECRET = b"secret outside the results folder"


@pytest.fixture(scope="module")
def linked_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("serve_paths")
    root, outside = base / "results", base / "outside"
    root.mkdir()
    elsewhere = write_study(outside, "elsewhere", nanohead_rows(failed=False, evil=False), baseline="p0")
    (outside / "secret.json").write_bytes(SECRET)
    (outside / "secret.png").write_bytes(SECRET)
    (root / "linked").symlink_to(elsewhere, target_is_directory=True)  # a whole study folder from outside
    plain = write_study(root, "plain", nanohead_rows(failed=False, evil=False), baseline="p0")
    (plain / "results.json").symlink_to(outside / "secret.json")
    (plain / "leak.png").symlink_to(outside / "secret.png")
    (plain / "real.png").write_bytes(b"\x89PNG inside")
    (plain / "alias.png").symlink_to(plain / "real.png")  # a link that stays inside is fine
    srv = make_server(root, "127.0.0.1", 0, quiet=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv, elsewhere
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize(
    "path",
    ["/plain/results.json", "/plain/leak.png", "/linked/study.json", "/linked/trials.csv", "/linked/report.html"],
)
def test_a_file_linked_from_outside_is_not_served(linked_server, path):
    srv, elsewhere = linked_server
    status, _, body = get(srv, path)
    assert status in (403, 404) and SECRET not in body and b"Study elsewhere" not in body
    assert not (elsewhere / "report.html").exists()  # no report was built into the folder outside


def test_files_inside_are_served(linked_server):
    srv, _ = linked_server
    assert get(srv, "/plain/real.png")[::2] == (200, b"\x89PNG inside")
    assert get(srv, "/plain/alias.png")[::2] == (200, b"\x89PNG inside")
    status, _, body = get(srv, "/plain/study.json")
    assert status == 200 and b'"study": "plain"' in body
