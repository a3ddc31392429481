"""``sdk serve`` for real: Triton (PyTriton) on loopback in its own numpy<2 environment, 8 clients.

The server runs under the interpreter named by ``ZEGFORMER_SERVE_PYTHON`` (``.ci/run`` creates that
venv: PyTriton pins numpy<2); the clients and the in-process reference run here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.sdk_helpers import block_image, shared_bundle
from tests.test_formats import decode_rle_string

pytest.importorskip("torch")  # the bundle is exported with torch
REPO = Path(__file__).resolve().parents[1]
VOCABS = (None, ["sky", "grass, lawn", "road"])
CLIENTS, PER_CLIENT = 8, 25  # 200 requests
DEADLINE_S = 240


def serve_python() -> str:
    """The interpreter with PyTriton: $ZEGFORMER_SERVE_PYTHON, else this one if it has PyTriton."""
    candidate = os.environ.get("ZEGFORMER_SERVE_PYTHON")
    if candidate and Path(candidate).is_file():
        return candidate
    try:
        import pytriton  # noqa: F401

        return sys.executable
    except ImportError:
        pass
    msg = "no PyTriton environment: set ZEGFORMER_SERVE_PYTHON to a venv's python with 'zegformer-sdk[serve]'"
    if os.environ.get("CI") == "true":
        pytest.fail(msg + " (.ci/run creates it)")
    pytest.skip(msg)


def free_ports(n: int):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return shared_bundle(tmp_path_factory)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve_images")
    paths = []
    for i in range(10):
        path = folder / f"im{i}.{'png' if i % 3 else 'jpg'}"
        Image.fromarray(block_image(40 + 6 * i, 56 + 4 * i, seed=200 + i)).save(path)
        paths.append(path)
    return paths


@contextlib.contextmanager
def running_server(bundle: Path, folder: Path, *options: str):
    """``python -m sdk serve`` on loopback (free ports, the PyTriton interpreter, ONNX Runtime, 1 thread,
    ``options`` added); yields ``{process, url, http, log}``; killed at the end if still running."""
    pytest.importorskip("tritonclient.http", reason="pip install 'tritonclient[http]'")
    python = serve_python()
    from sdk.serve.client import SegmenterClient

    log = folder / "server.log"
    http, grpc, metrics = free_ports(3)
    env = {**os.environ, "PYTHONPATH": str(REPO), "ZEGFORMER_CACHE": str(folder / "cache")}
    cmd = [
        python,
        "-m",
        "sdk",
        "serve",
        "--bundle",
        str(bundle),
        "--backend",
        "onnxruntime",
        "--min-size",
        "none",
        "--threads",
        "1",
        *options,
        "--http-port",
        str(http),
        "--grpc-port",
        str(grpc),
        "--metrics-port",
        str(metrics),
    ]
    with open(log, "wb") as sink:
        process = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT)
    url = f"127.0.0.1:{http}"
    try:
        with SegmenterClient(url, timeout=60) as client:
            client.wait_ready(timeout=120)
        yield {"process": process, "url": url, "http": http, "log": log}
    except Exception:
        print(log.read_text(errors="replace")[-5000:])
        raise
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)


@pytest.fixture(scope="module")
def server(bundle, tmp_path_factory):
    """A running server (2 instances, dynamic batching) and its process; stopped by the test at the end."""
    with running_server(bundle, tmp_path_factory.mktemp("serve"), "--instances", "2", "--max-batch-size", "4") as s:
        yield s


def reference(bundle, images):
    from sdk import Segmenter
    from sdk.preprocess import load_image

    seg = Segmenter(bundle, backend="onnxruntime", min_size=None, threads=1)
    return {(i, v): seg(load_image(p), vocabulary=VOCABS[v]) for i, p in enumerate(images) for v in range(len(VOCABS))}


def same(remote, local) -> None:
    assert remote.class_names == local.class_names
    assert remote.label_map.dtype == np.int32 and np.array_equal(remote.label_map, local.label_map)
    assert [s["index"] for s in remote.segments] == [s.index for s in local.segments]
    for s, ls in zip(remote.segments, local.segments):
        assert s["area"] == ls.area and s["score"] == pytest.approx(ls.score, abs=1e-5)
        assert np.array_equal(decode_rle_string(s["rle"]), local.label_map == s["index"])


def test_serve_many_clients_errors_and_stop(server, bundle, images):
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    from sdk.serve.client import SegmenterClient, ServeError

    expected = reference(bundle, images)
    data = [p.read_bytes() for p in images]
    start = time.monotonic()
    failures, done, bad_answers = [], [0] * CLIENTS, []

    def client_loop(k: int):
        with SegmenterClient(server["url"], timeout=60) as client:
            for j in range(PER_CLIENT):
                if time.monotonic() - start > DEADLINE_S:
                    failures.append(f"client {k}: deadline")
                    return
                i, v = (k * 7 + j) % len(images), (k + j) % len(VOCABS)
                try:
                    same(client.segment(data[i], VOCABS[v]), expected[(i, v)])
                    done[k] += 1
                except Exception as e:  # noqa: BLE001 — collected, asserted below
                    failures.append(f"client {k} request {j} (image {i}, vocab {v}): {type(e).__name__}: {e}")

    def malformed_loop():
        """Undecodable images sent among the others (raw: the client would refuse them before sending):
        each gets its own error, the rest still succeed."""
        from sdk.serve.client import parse_response

        client = httpclient.InferenceServerClient(server["url"], network_timeout=60)
        for j in range(10):
            image = httpclient.InferInput("image", [1, 1], "BYTES")
            image.set_data_from_numpy(np.array([[b"\x89PNG not really" * (j + 1)]], dtype=object))
            response = client.infer("zegformer", [image])
            try:
                parse_response({n: response.as_numpy(n) for n in ("label_map", "class_names", "segments", "error")})
                bad_answers.append("no error")
            except ServeError as e:
                bad_answers.append(str(e))
            time.sleep(0.05)
        client.close()

    threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(CLIENTS)]
    threads.append(threading.Thread(target=malformed_loop))
    for t in threads:
        t.start()
    for t in threads:
        t.join(DEADLINE_S + 60)
    elapsed = time.monotonic() - start
    assert not failures, failures[:5]
    assert sum(done) == CLIENTS * PER_CLIENT
    assert len(bad_answers) == 10 and all(a.startswith("ImageError") for a in bad_answers), bad_answers[:3]
    print(f"{sum(done)} requests from {CLIENTS} clients in {elapsed:.1f} s")

    # requests Triton itself rejects, then the server still answers
    raw = httpclient.InferenceServerClient(server["url"])
    wrong_type = httpclient.InferInput("image", [1, 1], "FP32")
    wrong_type.set_data_from_numpy(np.zeros((1, 1), np.float32))
    with pytest.raises(InferenceServerException, match="BYTES"):
        raw.infer("zegformer", [wrong_type])
    with pytest.raises(InferenceServerException, match="image"):
        raw.infer("zegformer", [])
    from sdk import VocabularyError

    with pytest.raises(VocabularyError, match="empty"):  # refused by the client before sending
        SegmenterClient(server["url"]).segment(data[0], vocabulary=[""])
    empty_name = httpclient.InferInput("vocabulary", [1, 1], "BYTES")
    empty_name.set_data_from_numpy(np.array([[b""]], dtype=object))
    image = httpclient.InferInput("image", [1, 1], "BYTES")
    image.set_data_from_numpy(np.array([[data[0]]], dtype=object))
    answer = raw.infer("zegformer", [image, empty_name])  # and by the server, in the request's error output
    assert answer.as_numpy("error")[0, 0].decode().startswith("VocabularyError")
    assert raw.is_server_live() and raw.is_server_ready() and raw.is_model_ready("zegformer")
    same(SegmenterClient(server["url"]).segment(images[1], VOCABS[1]), expected[(1, 1)])
    raw.close()

    # a clean stop on SIGTERM: exit code 0, Triton's processes gone, the port closed
    import psutil

    process = server["process"]
    children = psutil.Process(process.pid).children(recursive=True)
    assert any("tritonserver" in " ".join(c.cmdline()) for c in children)
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 0, server["log"].read_text(errors="replace")[-3000:]
    gone, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, [c.cmdline() for c in alive]
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", server["http"])) != 0


def test_serve_without_pytriton_says_what_to_do(bundle):
    try:
        import pytriton  # noqa: F401

        pytest.skip("PyTriton is installed in this environment")
    except ImportError:
        pass
    run = subprocess.run(
        [sys.executable, "-m", "sdk", "serve", "--bundle", str(bundle)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and "numpy<2" in run.stderr and "venv" in run.stderr, run.stderr
