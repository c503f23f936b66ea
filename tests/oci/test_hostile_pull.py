"""Attack tests of a pull against hostile registries (real HTTP servers on 127.0.0.1):
credentials kept from hosts that are not the registry, token answers, layer counts and
totals, trickled blobs and tags lists bounded, malformed JSON refused with the module's
own errors (never a traceback)."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from stockade.errors import ModuleError, StockadeError
from stockade.oci.errors import BlobTooLarge, RegistryAuthError, RegistryUnavailable
from stockade.oci.reference import parse_reference
from stockade.oci.registry import RegistryClient
from stockade.oci.store import Store
from stockade.oci.transfer import MAX_LAYERS, pull
from stockade.trust.imagesig import check_bundle, check_payload

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
TAR = "application/vnd.oci.image.layer.v1.tar"
TGZ = "application/vnd.oci.image.layer.v1.tar+gzip"
WASM = bytes.fromhex("0061736d01000000")
DEEP = b"[" * 100_000 + b"]" * 100_000

Handler = Callable[[BaseHTTPRequestHandler], None]
Route = tuple[int, dict[str, str], bytes] | Handler


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Server:
    """A registry answering from `routes` (path without query, or "*"); `seen` logs
    (method, path, Authorization header) of every request."""

    host: str
    routes: dict[str, Route]
    seen: list[tuple[str, str, str | None]] = field(default_factory=list)

    def gets(self, part: str) -> int:
        return sum(1 for method, path, _ in self.seen if method == "GET" and part in path)


def _handler(server: Server) -> type[BaseHTTPRequestHandler]:
    class Routes(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            server.seen.append((self.command, self.path, self.headers.get("Authorization")))
            route = server.routes.get(self.path.split("?")[0]) or server.routes.get("*")
            if route is None:
                route = (404, {}, b"")
            if callable(route):
                route(self)
                return
            status, headers, body = route
            self.send_response(status)
            for name, value in {"Content-Length": str(len(body)), **headers}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            """Quiet."""

    return Routes


@pytest.fixture
def serve() -> Iterator[Callable[[], Server]]:
    servers: list[ThreadingHTTPServer] = []

    def start() -> Server:
        state = Server("", {})
        http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
        http.daemon_threads = True
        threading.Thread(target=http.serve_forever, daemon=True).start()
        servers.append(http)
        state.host = f"127.0.0.1:{http.server_address[1]}"
        state.routes["/v2/"] = (200, {}, b"{}")
        return state

    yield start
    for http in servers:
        http.shutdown()
        http.server_close()


def tar_layer(name: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def document(body: bytes, kind: str = MANIFEST) -> Route:
    return (200, {"Content-Type": kind, "Docker-Content-Digest": sha(body)}, body)


def image(server: Server, repo: str, layers: list[bytes], *, listed: list[object] | None = None,
          config: dict[str, object] | None = None) -> None:
    """A Docker+Wasm image under `repo:1`; `listed` replaces the layer descriptors,
    `config` is merged into the config."""
    settings: dict[str, object] = {
        "architecture": "wasm", "os": "wasip1", "config": {"Entrypoint": ["/app.wasm"]},
        "rootfs": {"type": "layers", "diff_ids": [sha(b) for b in layers]}, **(config or {})}
    raw = json.dumps(settings).encode()
    server.routes[f"/v2/{repo}/blobs/{sha(raw)}"] = (200, {}, raw)
    descriptors: list[object] = []
    for blob in layers:
        server.routes[f"/v2/{repo}/blobs/{sha(blob)}"] = (200, {}, blob)
        descriptors.append({"mediaType": TAR, "digest": sha(blob), "size": len(blob)})
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST,
        "config": {"mediaType": CONFIG, "digest": sha(raw), "size": len(raw)},
        "layers": descriptors if listed is None else listed}).encode()
    server.routes[f"/v2/{repo}/manifests/1"] = document(manifest)


def pull_from(server: Server, repo: str, tmp_path: Path, **kwargs: int) -> None:
    pull(parse_reference(f"{server.host}/{repo}:1"), Store(tmp_path / "store"),
         frozenset({server.host}), **kwargs)


# -- credentials ----------------------------------------------------------------------


@pytest.fixture
def credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    def configure(host: str) -> None:
        auth = tmp_path / "auth.json"
        pair = base64.b64encode(b"alice:secret-for-the-registry").decode()
        auth.write_text(json.dumps({"auths": {host: {"auth": pair}}}))
        monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth))
    return configure


def _challenge(realm: str) -> Handler:
    def answer(request: BaseHTTPRequestHandler) -> None:
        request.send_response(401)
        request.send_header("WWW-Authenticate", f'Bearer realm="{realm}",service="x"')
        request.send_header("Content-Length", "0")
        request.end_headers()
    return answer


def test_credentials_are_not_sent_to_a_host_the_registry_redirected_to(
        serve: Callable[[], Server], credentials: Callable[[str], None],
        tmp_path: Path) -> None:
    registry, other = serve(), serve()
    credentials(registry.host)
    layer = tar_layer("app.wasm", WASM)
    image(registry, "app", [layer])
    registry.routes[f"/v2/app/blobs/{sha(layer)}"] = (
        307, {"Location": f"http://{other.host}/cdn/{sha(layer)}"}, b"")
    other.routes["*"] = _challenge(f"http://{other.host}/token")
    with pytest.raises(RegistryAuthError, match=f"{other.host}.*redirected"):
        pull_from(registry, "app", tmp_path)
    assert other.gets("/token") == 0
    assert all(auth is None for _, _, auth in other.seen)


def test_credentials_go_to_a_realm_the_registry_names(
        serve: Callable[[], Server], credentials: Callable[[str], None],
        tmp_path: Path) -> None:
    # the ordinary flow (Docker Hub's realm is another host) still works
    registry, tokens = serve(), serve()
    credentials(registry.host)
    tokens.routes["/token"] = (200, {"Content-Type": "application/json"}, b'{"token":"t"}')
    layer = tar_layer("app.wasm", WASM)
    image(registry, "app", [layer])
    blob = registry.routes[f"/v2/app/blobs/{sha(layer)}"]

    def guarded(request: BaseHTTPRequestHandler) -> None:
        if request.headers.get("Authorization") != "Bearer t":
            _challenge(f"http://{tokens.host}/token")(request)
            return
        assert not callable(blob)
        request.send_response(200)
        request.send_header("Content-Length", str(len(blob[2])))
        request.end_headers()
        request.wfile.write(blob[2])

    registry.routes[f"/v2/app/blobs/{sha(layer)}"] = guarded
    pull_from(registry, "app", tmp_path)
    assert [auth for _, path, auth in tokens.seen if path.startswith("/token")] == [
        "Basic " + base64.b64encode(b"alice:secret-for-the-registry").decode()]


def test_no_credentials_for_a_plain_http_realm_of_an_https_registry() -> None:
    from stockade.oci.registry import realm_may_get_credentials

    assert realm_may_get_credentials("https", "https://auth.example/token")
    assert realm_may_get_credentials("http", "http://127.0.0.1:5000/token")
    assert not realm_may_get_credentials("https", "http://auth.example/token")
    assert not realm_may_get_credentials("https", "file:///etc/passwd")


def _endless(start: bytes, fill: bytes) -> Callable[[BaseHTTPRequestHandler], None]:
    """A route answering 200 with `start` and then 16 MiB of `fill` (JSON never closed)."""

    def answer(request: BaseHTTPRequestHandler) -> None:
        request.send_response(200)
        request.send_header("Content-Type", "application/json")
        request.end_headers()
        try:
            request.wfile.write(start)
            for _ in range(256):
                request.wfile.write(fill * (1 << 16))
        except OSError:
            return

    return answer


def test_a_huge_token_answer_is_refused(serve: Callable[[], Server], tmp_path: Path) -> None:
    registry = serve()

    # 16 MiB stands for an endless answer (unbounded, it was read whole: 3 GiB RSS)
    registry.routes["/token"] = _endless(b"", b"A")
    registry.routes["*"] = _challenge(f"http://{registry.host}/token")
    begun = time.monotonic()
    with pytest.raises(RegistryAuthError, match="token service answered more than"):
        pull_from(registry, "app", tmp_path)
    assert time.monotonic() - begun < 20


# -- layers -----------------------------------------------------------------------------


def test_too_many_layers_are_refused_before_any_is_fetched(serve: Callable[[], Server],
                                                           tmp_path: Path) -> None:
    registry = serve()
    layer = tar_layer("app.wasm", WASM)
    descriptor = {"mediaType": TAR, "digest": sha(layer), "size": len(layer)}
    image(registry, "many", [layer], listed=[descriptor] * (MAX_LAYERS + 1),
          config={"rootfs": {"type": "layers", "diff_ids": [sha(layer)] * (MAX_LAYERS + 1)}})
    with pytest.raises(StockadeError, match=f"at most {MAX_LAYERS}"):
        pull_from(registry, "many", tmp_path)
    assert registry.gets(sha(layer)) == 0


def test_diff_ids_not_matching_the_layers_are_refused_before_fetching(
        serve: Callable[[], Server], tmp_path: Path) -> None:
    registry = serve()
    layer = tar_layer("app.wasm", WASM)
    descriptor = {"mediaType": TAR, "digest": sha(layer), "size": len(layer)}
    image(registry, "repeat", [layer], listed=[descriptor] * 5)
    with pytest.raises(StockadeError, match="diff_ids"):
        pull_from(registry, "repeat", tmp_path)
    assert registry.gets(sha(layer)) == 0


def test_the_total_of_a_pull_is_bounded(serve: Callable[[], Server], tmp_path: Path) -> None:
    registry = serve()
    layers = [tar_layer(f"pad{n}", bytes(30_000)) for n in range(3)]
    layers.append(tar_layer("app.wasm", WASM))
    image(registry, "big", layers)
    with pytest.raises(BlobTooLarge, match="in all"):
        pull_from(registry, "big", tmp_path, max_total=80_000)
    pull_from(registry, "big", tmp_path / "again", max_total=200_000)


# -- trickles and floods ------------------------------------------------------------------


def _trickle(request: BaseHTTPRequestHandler) -> None:
    request.send_response(200)
    request.send_header("Content-Length", "100")
    request.end_headers()
    try:
        for _ in range(100):
            request.wfile.write(b"x")
            request.wfile.flush()
            time.sleep(0.2)
    except OSError:
        return


def test_a_trickled_layer_is_refused_at_the_deadline(serve: Callable[[], Server],
                                                     tmp_path: Path) -> None:
    registry = serve()
    digest = sha(b"x" * 100)
    registry.routes[f"/v2/app/blobs/{digest}"] = _trickle
    ref = parse_reference(f"{registry.host}/app:1")
    begun = time.monotonic()
    with RegistryClient(ref, frozenset({registry.host}), timeout=1.0, deadline=2.0) as client:
        with pytest.raises(RegistryUnavailable, match="did not send it within"):
            client.fetch_blob("app", {"digest": digest, "size": 100}, Store(tmp_path), 1 << 30,
                              "layer")
    assert time.monotonic() - begun < 15


def test_a_huge_tags_list_is_refused(serve: Callable[[], Server]) -> None:
    registry = serve()

    # 16 MiB stands for an endless list (unbounded, it was read whole)
    registry.routes["/v2/app/tags/list"] = _endless(b'{"tags":["', b"a")
    ref = parse_reference(f"{registry.host}/app:1")
    with RegistryClient(ref, frozenset({registry.host}), timeout=5.0) as client:
        with pytest.raises(BlobTooLarge, match="tags"):
            client.tags("app")


# -- malformed JSON --------------------------------------------------------------------------


def _malformed(server: Server, name: str) -> None:
    layer = tar_layer("app.wasm", WASM)
    good = {"mediaType": TAR, "digest": sha(layer), "size": len(layer)}
    if name == "deep manifest":
        server.routes["/v2/bad/manifests/1"] = document(DEEP)
    elif name == "platform a string":
        index = json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": [
            {"digest": sha(b"x"), "platform": "wasi/wasm"}]}).encode()
        server.routes["/v2/bad/manifests/1"] = document(index, INDEX)
    elif name == "layer a string":
        image(server, "bad", [layer], listed=["junk", good])
    elif name == "config.config a list":
        image(server, "bad", [layer], config={"config": ["a"]})
    elif name == "Entrypoint a number":
        image(server, "bad", [layer], config={"config": {"Entrypoint": 5}})
    elif name == "rootfs a string":
        image(server, "bad", [layer], config={"rootfs": "x"})
    elif name == "deep config":
        image(server, "bad", [layer], config={"a": 1})
        raw = b'{"a":' + DEEP + b"}"
        server.routes[f"/v2/bad/blobs/{sha(raw)}"] = (200, {}, raw)
        manifest = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST,
                               "config": {"mediaType": CONFIG, "digest": sha(raw),
                                          "size": len(raw)}, "layers": [good]}).encode()
        server.routes["/v2/bad/manifests/1"] = document(manifest)
    else:
        raise AssertionError(name)


@pytest.mark.parametrize("name", ["deep manifest", "platform a string", "layer a string",
                                  "config.config a list", "Entrypoint a number",
                                  "rootfs a string", "deep config"])
def test_malformed_json_is_the_modules_own_error(name: str, serve: Callable[[], Server],
                                                 tmp_path: Path) -> None:
    registry = serve()
    _malformed(registry, name)
    with pytest.raises(StockadeError) as caught:
        pull_from(registry, "bad", tmp_path)
    assert "\n" not in caught.value.message


def test_deeply_nested_signatures_are_refused_not_raised() -> None:
    deep = b'{"critical":' + b"[" * 5000 + b"]" * 5000 + b"}"
    digest = "sha256:" + "0" * 64
    assert check_payload(deep, "AAAA", digest, [])[0] is None
    assert check_bundle(deep, digest, [])[0] is None


# -- review 2: realms, bombs, sizes, deadlines -------------------------------------------------


@pytest.mark.parametrize("realm", ["http://a:notaport/t", "http://[::1", "http://a:99999/t", "",
                                   "ftp://a/t", "/token"])
@pytest.mark.parametrize("with_credentials", [False, True])
def test_an_unparsable_token_realm_is_an_auth_error(
        realm: str, with_credentials: bool, serve: Callable[[], Server],
        credentials: Callable[[str], None], tmp_path: Path) -> None:
    registry = serve()
    if with_credentials:
        credentials(registry.host)
    registry.routes["*"] = _challenge(realm)
    with pytest.raises(RegistryAuthError, match="is not a URL") as caught:
        pull_from(registry, "app", tmp_path)
    assert "\n" not in caught.value.message


def test_an_unparsable_token_realm_is_one_line_from_the_cli(serve: Callable[[], Server],
                                                            tmp_path: Path) -> None:
    from .fixtures import cli, stockade_env

    registry = serve()
    registry.routes["*"] = _challenge("http://a:notaport/t")
    env = stockade_env(tmp_path / "cache", tmp_path / "state")
    env.update(HOME=str(tmp_path), STOCKADE_INSECURE_REGISTRIES=registry.host)
    for args in (["oci", "pull"], ["oci", "inspect"]):
        done = cli(env, *args, f"{registry.host}/app:1")
        assert done.returncode == 77, done.stderr
        assert "Traceback" not in done.stderr
        assert done.stderr.count("\n") == 1 and "is not a URL" in done.stderr


def _bomb(unpacked: int) -> bytes:
    """A tar+gzip layer of one file of `unpacked` zero bytes (a few hundred KiB packed)."""
    return gzip.compress(tar_layer("pad", bytes(unpacked)), compresslevel=6, mtime=0)


def _bomb_image(server: Server, bomb: bytes, listed: int) -> None:
    """The module in the bottom layer under `listed` listings of one bomb: extraction
    walks every bomb listing before it finds the module."""
    module = tar_layer("app.wasm", WASM)
    image(server, "bomb", [module])
    server.routes[f"/v2/bomb/blobs/{sha(bomb)}"] = (200, {}, bomb)
    unpacked = sha(gzip.decompress(bomb))
    settings = {"architecture": "wasm", "os": "wasip1", "config": {"Entrypoint": ["/app.wasm"]},
                "rootfs": {"type": "layers", "diff_ids": [sha(module)] + [unpacked] * listed}}
    raw = json.dumps(settings).encode()
    server.routes[f"/v2/bomb/blobs/{sha(raw)}"] = (200, {}, raw)
    layers = [{"mediaType": TAR, "digest": sha(module), "size": len(module)}] + [
        {"mediaType": TGZ, "digest": sha(bomb), "size": len(bomb)}] * listed
    manifest = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST,
                           "config": {"mediaType": CONFIG, "digest": sha(raw), "size": len(raw)},
                           "layers": layers}).encode()
    server.routes["/v2/bomb/manifests/1"] = document(manifest)


def test_a_layer_listed_many_times_is_unpacked_once(serve: Callable[[], Server], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import stockade.oci.image as image_module
    import stockade.oci.transfer as transfer_module

    registry = serve()
    bomb = _bomb(64 * 1024**2)
    _bomb_image(registry, bomb, 40)
    opened: list[str] = []
    real = image_module.open_layer

    def counting(descriptor: dict[str, object], path: Path) -> object:
        opened.append(str(descriptor["digest"]))
        return real(descriptor, path)  # type: ignore[arg-type]

    monkeypatch.setattr(image_module, "open_layer", counting)
    monkeypatch.setattr(transfer_module, "open_layer", counting)
    pull_from(registry, "bomb", tmp_path, max_total=200 * 1024**2)
    assert opened.count(sha(bomb)) <= 2  # once for diff_ids, once looking for the module


def test_unpacked_bytes_count_against_the_pull(serve: Callable[[], Server],
                                               tmp_path: Path) -> None:
    # 64 MiB unpacked, listed 40 times: 5 GiB unpacked twice before the fix
    registry = serve()
    _bomb_image(registry, _bomb(64 * 1024**2), 40)
    begun = time.monotonic()
    with pytest.raises(BlobTooLarge, match="unpack"):
        pull_from(registry, "bomb", tmp_path, max_total=100 * 1024**2)
    assert time.monotonic() - begun < 30


def _drop(key: str, value: object = None) -> Callable[[dict[str, object]], None]:
    def change(descriptor: dict[str, object]) -> None:
        if value is None:
            descriptor.pop(key)
        else:
            descriptor[key] = value
    return change


@pytest.mark.parametrize("where", ["layer", "config"])
@pytest.mark.parametrize("size", [None, True, -1, 1.5, "10", 10**40 * 1.0])
def test_a_descriptor_without_an_integer_size_is_refused_before_fetching(
        where: str, size: object, serve: Callable[[], Server], tmp_path: Path) -> None:
    registry = serve()
    layer = tar_layer("app.wasm", WASM)
    image(registry, "sizes", [layer])
    manifest = json.loads(registry.routes["/v2/sizes/manifests/1"][2])  # type: ignore[index]
    descriptor = manifest["layers"][0] if where == "layer" else manifest["config"]
    _drop("size", size)(descriptor)
    registry.routes["/v2/sizes/manifests/1"] = document(json.dumps(manifest).encode())
    with pytest.raises(ModuleError, match="size") as caught:
        pull_from(registry, "sizes", tmp_path)
    assert "\n" not in caught.value.message
    assert registry.gets("/blobs/") == 0


def _slow(blob: bytes, seconds: float) -> Handler:
    """A route sending `blob` in five pieces over `seconds`."""
    def answer(request: BaseHTTPRequestHandler) -> None:
        request.send_response(200)
        request.send_header("Content-Length", str(len(blob)))
        request.end_headers()
        step = -(-len(blob) // 5)
        try:
            for start in range(0, len(blob), step):
                request.wfile.write(blob[start:start + step])
                request.wfile.flush()
                time.sleep(seconds / 5)
        except OSError:
            return
    return answer


def test_a_pull_of_many_trickled_layers_has_one_deadline(
        serve: Callable[[], Server], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import stockade.oci.transfer as transfer_module

    # each layer well within its own deadline, the pull not within its own
    monkeypatch.setattr(transfer_module, "PULL_GRACE", 1.0)
    monkeypatch.setattr(transfer_module, "BLOB_GRACE", 0.1)
    registry = serve()
    layers = [tar_layer(f"pad{n}", b"") for n in range(5)] + [tar_layer("app.wasm", WASM)]
    image(registry, "slow", layers)
    for blob in layers:
        registry.routes[f"/v2/slow/blobs/{sha(blob)}"] = _slow(blob, 1.0)
    begun = time.monotonic()
    with pytest.raises(RegistryUnavailable, match="the pull"):
        pull_from(registry, "slow", tmp_path)
    assert time.monotonic() - begun < 4


# -- inspect's text output ---------------------------------------------------------------------


def _inspect_text(server: Server, repo: str, tmp_path: Path) -> str:
    from .fixtures import cli, stockade_env

    env = stockade_env(tmp_path / "cache", tmp_path / "state")
    env.update(HOME=str(tmp_path), STOCKADE_INSECURE_REGISTRIES=server.host)
    done = cli(env, "oci", "inspect", f"{server.host}/{repo}:1")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout


def test_inspect_shows_a_config_descriptor_without_a_media_type(
        serve: Callable[[], Server], tmp_path: Path) -> None:
    registry = serve()
    image(registry, "bare", [tar_layer("app.wasm", WASM)])
    manifest = json.loads(registry.routes["/v2/bare/manifests/1"][2])  # type: ignore[index]
    del manifest["config"]["mediaType"]
    registry.routes["/v2/bare/manifests/1"] = document(json.dumps(manifest).encode())
    assert "config      ? sha256:" in _inspect_text(registry, "bare", tmp_path)


def test_inspect_escapes_what_the_registry_chose(serve: Callable[[], Server],
                                                 tmp_path: Path) -> None:
    registry = serve()
    image(registry, "esc", [tar_layer("app.wasm", WASM)],
          config={"config": {"Entrypoint": ["/app.wasm", "\x1b[31mRED\x1b]0;T\x07"]}})
    manifest = json.loads(registry.routes["/v2/esc/manifests/1"][2])  # type: ignore[index]
    manifest["config"]["mediaType"] = "\x1b]0;PWNED\x07\x1b[2J\u202e"
    registry.routes["/v2/esc/manifests/1"] = document(json.dumps(manifest).encode())
    shown = _inspect_text(registry, "esc", tmp_path)
    assert "\x1b" not in shown and "\x07" not in shown and "\u202e" not in shown
    assert "\\x1b]0;PWNED" in shown and "\\x1b[31mRED" in shown


def test_inspect_text_of_a_stored_report_missing_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    import stockade.oci.inspect as inspect_module
    from stockade.cli.oci import oci

    report = {"ref": "r/app:1", "digest": sha(b"m"), "layout": "image", "platform": "wasi/wasm",
              "config": {"digest": sha(b"c")}, "layers": [{"digest": sha(b"l")}, "junk"],
              "module_digest": sha(b"w"), "entrypoint": ["/app.wasm"], "cmd": [],
              "signatures": []}
    monkeypatch.setattr(inspect_module, "inspect_image", lambda ref, insecure: report)
    result = CliRunner().invoke(oci, ["inspect", "r/app:1"])
    assert result.exit_code == 0, result.output
    assert f"layer 0     ? {sha(b'l')} ? B" in result.output


def test_messages_quote_hostile_values_short() -> None:
    from stockade.oci.image import manifest_kind, validate_wasm_config
    from stockade.oci.media import SHOWN_CHARS

    deep = json.loads("[" * 900 + "]" * 900)
    with pytest.raises(ModuleError) as caught:
        manifest_kind({"mediaType": "\x1b[2J" + "x" * 100_000}, None)
    assert "\x1b" not in caught.value.message
    assert len(caught.value.message) < SHOWN_CHARS + 100
    config = {"created": deep, "architecture": "wasm", "os": "wasip1", "layerDigests": []}
    with pytest.raises(ModuleError) as caught:
        validate_wasm_config(config, [])
    assert "list" in caught.value.message and len(caught.value.message) < SHOWN_CHARS + 100
    with pytest.raises(StockadeError) as caught:
        validate_wasm_config({**config, "created": "2024-01-01T00:00:00Z", "os": deep}, [])
    assert len(caught.value.message) < SHOWN_CHARS + 100
