"""The downloader against local HTTP servers on 127.0.0.1: good, corrupt, truncated and missing files."""
import gzip
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from digitnet import data
from digitnet.errors import DigitnetError
from test_data import fake_spec, write_fake_dataset  # noqa: F401 (fixture)


def serve(files: dict[str, bytes], mode: str = "good"):
    """A server for one mirror. mode: good, corrupt (a flipped byte), truncated (short body), 404."""
    requests = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            name = self.path.rsplit("/", 1)[-1]
            if mode == "404" or name not in files:
                self.send_error(404)
                return
            body = files[name]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if mode == "corrupt":  # a well-formed file with one wrong pixel: only the checksum sees it
                raw = bytearray(gzip.decompress(body))
                raw[-1] ^= 0x01
                self.wfile.write(gzip.compress(bytes(raw)).ljust(len(body), b"\0")[:len(body)])
            elif mode == "truncated":
                self.wfile.write(body[: len(body) // 2])  # then close: fewer bytes than promised
            else:
                self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/mnist/", requests


@pytest.fixture
def mirrors(fake_spec):
    spec, arrays, tmp = fake_spec
    files = {p.name: p.read_bytes() for p in (tmp / "src").iterdir()}
    servers = {}
    for mode in ("good", "corrupt", "truncated", "404"):
        servers[mode] = serve(files, mode)
    yield servers, arrays, tmp
    for server, _, _ in servers.values():
        server.shutdown()
        server.server_close()


def test_good_mirror(mirrors):
    servers, arrays, tmp = mirrors
    dest = data.download("fake", tmp / "dl", [servers["good"][1]], progress=False)
    x, y = data.load_split("fake", "train", dest)
    np.testing.assert_array_equal(x, arrays["train-images-idx3-ubyte"])
    assert not list(dest.glob("*.tmp"))


@pytest.mark.parametrize("bad", ["404", "corrupt", "truncated"])
def test_failing_mirror_falls_through_to_the_next(mirrors, bad):
    servers, arrays, tmp = mirrors
    dest = data.download("fake", tmp / "dl", [servers[bad][1], servers["good"][1]], progress=False)
    assert len(servers[bad][2]) == 4 and len(servers["good"][2]) == 4  # every file tried on both
    assert data.verify("fake", dest)
    assert not list(dest.glob(".*tmp"))


def test_all_mirrors_failing_leaves_nothing_behind(mirrors):
    servers, arrays, tmp = mirrors
    urls = [servers[m][1] for m in ("404", "corrupt", "truncated")]
    with pytest.raises(DigitnetError) as err:
        data.download("fake", tmp / "dl", urls, progress=False)
    message = str(err.value)
    assert "HTTP 404" in message and "SHA-256" in message and "truncated" in message
    assert list((tmp / "dl").iterdir()) == []  # no partial or unverified file is kept


def test_default_lookup_finds_the_cache_after_download(mirrors):
    servers, arrays, tmp = mirrors
    data.download("fake", mirrors=[servers["good"][1]], progress=False)  # into $XDG_CACHE_HOME
    assert data.locate("fake") == tmp / "cache" / "digitnet" / "fake"


def test_unreachable_mirror(fake_spec):
    spec, arrays, tmp = fake_spec
    with pytest.raises(DigitnetError, match="network error"):
        data.download("fake", tmp / "dl", ["http://127.0.0.1:9/"], progress=False, timeout=2)


def test_bad_cached_copy_is_replaced(mirrors):
    servers, arrays, tmp = mirrors
    dest = tmp / "dl"
    write_fake_dataset(dest, corrupt="train-images-idx3-ubyte")
    data.download("fake", dest, [servers["good"][1]], progress=False)
    assert servers["good"][2] == ["/mnist/train-images-idx3-ubyte.gz"]  # only the bad file refetched
    assert data.verify("fake", dest)
