"""``sdk serve`` under hostile requests: every client mistake is answered in that request's ``error``
output (or Triton's 400), never a 500, and the requests batched with it still succeed.

The first part drives the model callable (:class:`sdk.serve.server.SegmenterModel`, a real Segmenter
on the checked-in tiny bundle, no torch) with every class of malformed request; the second sends the
same classes to a real server on loopback, concurrently with good requests that it batches with them.
"""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
from PIL import Image

from tests.hostile_bytes import GOOD, bad_images, good_images
from tests.sdk_helpers import tiny_bundle

PNG = good_images()["png"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return tiny_bundle(tmp_path_factory)


@pytest.fixture(scope="module")
def model(bundle):
    from sdk import Segmenter
    from sdk.serve.server import SegmenterModel

    return SegmenterModel(
        Segmenter(bundle, backend="onnxruntime", mode="proposal", min_size=None, threads=1, cache_dir=False)
    )


def request(image=PNG, vocabulary=None, rows: int = 1):
    data = {}
    if image is not None:
        data["image"] = np.array([[image]] * rows, dtype=object)
    if vocabulary is not None:
        data["vocabulary"] = np.array([vocabulary] * rows, dtype=object)
    return data


def error_of(answer) -> str:
    errors = [e.decode("utf-8") for e in answer["error"].ravel()]
    assert len(set(errors)) == 1
    return errors[0]


def assert_refused(answer, kind: str, rows: int = 1) -> str:
    message = error_of(answer)
    assert message.startswith(kind + ": "), message
    assert "\n" not in message and "Traceback" not in message
    assert answer["label_map"].shape == (rows, 1, 1) and (answer["label_map"] == -1).all()
    assert answer["error"].shape == answer["segments"].shape == answer["class_names"].shape == (rows, 1)
    return message


def assert_answered(answer, rows: int = 1) -> None:
    assert error_of(answer) == ""
    assert answer["label_map"].shape[0] == rows and answer["label_map"].dtype == np.int32
    assert (answer["label_map"] >= 0).all()


# ---------------------------------------------------------------------------------------- the callable
@pytest.mark.parametrize("name", sorted(bad_images()))
def test_bad_image_bytes_are_answered_as_image_errors(model, name):
    answer = model([request(bad_images()[name])])[0]
    assert_refused(answer, "ImageError")


@pytest.mark.parametrize("name", sorted(good_images()))
def test_good_image_bytes_are_segmented(model, name):
    answer = model([request(good_images()[name])])[0]
    assert_answered(answer)
    assert answer["label_map"].shape == (1, *GOOD.shape[:2])


BAD_VOCABULARIES = {
    "empty_name": [b""],
    "blank_name": [b"   "],
    "not_utf8": [b"\xff\xfe"],
    "utf8_surrogate": [b"a\xed\xa0\x80"],
    "overlong_utf8": [b"\xc0\xaf"],
    "too_many": [b"n%d" % i for i in range(10_001)],
    "too_long": [b"x" * 1001],
    "one_good_one_empty": [b"cat", b""],
}


@pytest.mark.parametrize("name", sorted(BAD_VOCABULARIES))
def test_bad_vocabularies_are_answered_as_vocabulary_errors(model, name):
    answer = model([request(vocabulary=BAD_VOCABULARIES[name])])[0]
    assert_refused(answer, "VocabularyError")


@pytest.mark.parametrize(
    "data",
    [
        {"vocabulary": np.array([[b"cat"]], object)},  # no image
        {"image": np.array([PNG], object)},  # 1-D
        {"image": np.array([[PNG, PNG]], object)},  # two columns
        {"image": np.empty((0, 1), object)},  # no rows
        {"image": np.array([[PNG]], object), "vocabulary": np.array([b"cat"], object)},  # 1-D names
        {"image": np.array([[PNG]], object), "vocabulary": np.array([[b"a"], [b"b"]], object)},  # 2 rows for 1
    ],
    ids=["no_image", "image_1d", "image_2_columns", "image_no_rows", "vocabulary_1d", "vocabulary_rows"],
)
def test_malformed_request_shapes_are_request_errors(model, data):
    answer = model([data])[0]
    message = error_of(answer)
    assert message.startswith("RequestError: "), message
    assert "image" in message or "vocabulary" in message


@pytest.mark.parametrize("value", [3, None, "text", np.float32(1.0)], ids=["int", "none", "str", "float"])
def test_non_bytes_images_are_image_errors(model, value):
    answer = model([{"image": np.array([[value]], dtype=object)}])[0]
    assert_refused(answer, "ImageError")


def test_one_bad_request_does_not_fail_its_batch(model):
    batch = [
        request(),
        request(bad_images()["bomb_png_1bit"]),
        request(vocabulary=[b""]),
        {"vocabulary": np.array([[b"cat"]], object)},
        request(vocabulary=[b"sky", b"road"]),
        request(rows=2),
    ]
    answers = model(batch)
    assert_answered(answers[0])
    assert_refused(answers[1], "ImageError")
    assert_refused(answers[2], "VocabularyError")
    assert error_of(answers[3]).startswith("RequestError")
    assert_answered(answers[4])
    assert [n.decode() for n in answers[4]["class_names"][0]] == ["sky", "road"]
    assert_answered(answers[5], rows=2)
    assert np.array_equal(answers[0]["label_map"][0], answers[5]["label_map"][1])


def test_a_bad_row_fails_only_its_own_request_rows(model):
    data = {"image": np.array([[PNG], [b"junk"]], dtype=object)}
    assert_refused(model([data])[0], "ImageError", rows=2)


def test_server_options_are_checked_before_anything_starts():
    from sdk import OptionError
    from sdk.serve.server import ServerOptions

    for bad in [
        dict(http_port=0),
        dict(grpc_port=70000),
        dict(instances=0),
        dict(max_batch_size=-1),
        dict(max_queue_delay_us=-5),
        dict(http_port=8000, grpc_port=8000),
        dict(host=""),
        dict(host="a b"),
        dict(model_name="../x"),
        dict(instances=2.5),
        dict(http_port=True),
    ]:
        with pytest.raises(OptionError):
            ServerOptions(**bad)
    assert ServerOptions().max_batch_size == 8


# ---------------------------------------------------------------------------------------- the client
def test_the_client_refuses_what_the_server_would(tmp_path):
    pytest.importorskip("tritonclient.http", reason="pip install 'tritonclient[http]'")
    from sdk import ImageError, VocabularyError
    from sdk.serve.client import encode_image, vocabulary_names

    (tmp_path / "folder").mkdir()
    (tmp_path / "not_an_image.png").write_bytes(b"<html></html>")
    for image in [
        b"",
        b"junk",
        bad_images()["bomb_png_1bit"],
        tmp_path / "missing.png",
        tmp_path / "folder",
        tmp_path / "not_an_image.png",
        np.zeros((4, 4, 2), np.uint8),
        np.full((4, 4, 3), 300.0),
        42,
        None,
    ]:
        with pytest.raises(ImageError):
            encode_image(image)
    for vocabulary in [[], [""], ["a", 3], "cat", ";", ["x" * 1001], [f"n{i}" for i in range(10_001)]]:
        with pytest.raises(VocabularyError):
            vocabulary_names(vocabulary)
    assert vocabulary_names("cat;sky , blue sky") == ["cat", "sky, blue sky"]
    assert encode_image(PNG) == PNG
    decoded = np.asarray(Image.open(io.BytesIO(encode_image(GOOD))))
    assert np.array_equal(decoded, GOOD)


# ---------------------------------------------------------------------------------------- a real server
@pytest.fixture(scope="module")
def server(bundle, tmp_path_factory):
    """One instance, batches of up to 8 gathered for 300 ms: concurrent requests share batches."""
    from tests.test_serve import running_server

    with running_server(
        bundle,
        tmp_path_factory.mktemp("hostile_serve"),
        "--mode",
        "proposal",
        "--max-batch-size",
        "8",
        "--max-queue-delay-us",
        "300000",
    ) as s:
        yield s


def raw_infer(url: str, inputs):
    """``(status, outputs)`` of one raw request: 200 with the output arrays, or the HTTP error status."""
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    client = httpclient.InferenceServerClient(url, network_timeout=120)
    tensors = []
    for name, array in inputs.items():
        tensor = httpclient.InferInput(name, list(array.shape), "BYTES")
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    try:
        response = client.infer("zegformer", tensors)
        return 200, {n: response.as_numpy(n) for n in ("label_map", "class_names", "segments", "error")}
    except InferenceServerException as e:
        return int(e.status() or 0), str(e)
    finally:
        client.close()


def test_real_server_answers_hostile_requests_among_good_ones(server, bundle):
    from sdk import Segmenter
    from sdk.preprocess import decode_image

    local = Segmenter(bundle, backend="onnxruntime", mode="proposal", min_size=None, threads=1, cache_dir=False)
    expected = local(decode_image(PNG)).label_map
    vocabulary = [b"sky", b"grass", b"road"]
    expected_vocab = local(decode_image(PNG), vocabulary=["sky", "grass", "road"]).label_map
    bad = bad_images()
    hostile = {
        "bomb": (request(bad["bomb_png_1bit"]), "ImageError"),
        "declares_100k": (request(bad["png_declares_100k"]), "ImageError"),
        "jpeg_declares_65k": (request(bad["jpeg_declares_65k"]), "ImageError"),
        "truncated": (request(bad["png_cut_0.5"]), "ImageError"),
        "empty_image": (request(b""), "ImageError"),
        "float_range": (request(bad["float_tiff_fraction_above_1"]), "ImageError"),
        "empty_name": (request(vocabulary=[b"", b"grass", b"road"]), "VocabularyError"),
        "not_utf8": (request(vocabulary=[b"\xff", b"grass", b"road"]), "VocabularyError"),
        "no_image": ({"vocabulary": np.array([vocabulary], object)}, "RequestError"),
    }
    good = [(request(), expected), (request(vocabulary=vocabulary), expected_vocab)] * 4
    results, threads = {}, []

    def send(key, data):
        results[key] = raw_infer(server["url"], data)

    for name, (data, _) in hostile.items():
        threads.append(threading.Thread(target=send, args=(name, data)))
    for i, (data, _) in enumerate(good):
        threads.append(threading.Thread(target=send, args=(f"good{i}", data)))
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    for name, (_, kind) in hostile.items():
        status, out = results[name]
        assert status == 200, (name, status, out)
        assert [e.decode() for e in out["error"].ravel()][0].startswith(kind + ": "), (name, out["error"])
    for i, (_, want) in enumerate(good):
        status, out = results[f"good{i}"]
        assert status == 200 and out["error"].ravel()[0] == b"", (i, status, out)
        assert np.array_equal(out["label_map"][0], want)
    log = server["log"].read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]


def test_real_server_rejects_malformed_requests_with_400(server):
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    client = httpclient.InferenceServerClient(server["url"])
    for inputs in (
        [],
        [("image", np.zeros((1, 1), np.float32), "FP32")],
        [("image", np.array([[PNG, PNG]], object), "BYTES")],
        [("image", np.array([PNG], object), "BYTES")],
    ):
        tensors = []
        for name, array, dtype in inputs:
            tensor = httpclient.InferInput(name, list(array.shape), dtype)
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        with pytest.raises(InferenceServerException) as info:
            client.infer("zegformer", tensors)
        assert info.value.status() == "400", str(info.value)
    client.close()


def test_an_empty_vocabulary_tensor_fails_alone_and_the_client_refuses_it(server):
    """PyTriton 0.7 cannot pass a zero-length tensor to the model (its stub fails before our code runs):
    such a request fails on its own — Triton batches only requests of equal shapes, so the good
    requests sent with it succeed — and :class:`SegmenterClient` refuses an empty vocabulary before
    sending."""
    from sdk import VocabularyError
    from sdk.serve.client import SegmenterClient

    results = {}
    threads = [
        threading.Thread(
            target=lambda: results.__setitem__(
                "empty",
                raw_infer(server["url"], {"image": np.array([[PNG]], object), "vocabulary": np.empty((1, 0), object)}),
            )
        )
    ]
    threads += [
        threading.Thread(target=lambda i=i: results.__setitem__(i, raw_infer(server["url"], request())))
        for i in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    assert results["empty"][0] != 200 or results["empty"][1]["error"].ravel()[0] != b""
    assert all(results[i][0] == 200 and results[i][1]["error"].ravel()[0] == b"" for i in range(4))
    with SegmenterClient(server["url"]) as client:
        with pytest.raises(VocabularyError):
            client.segment(PNG, vocabulary=[])
        assert client.segment(PNG).label_map.shape == GOOD.shape[:2]
        assert client.is_ready()
    time.sleep(0.1)


@pytest.mark.parametrize(
    "args,says",
    [
        (["--instances", "0"], "instances"),
        (["--http-port", "70000"], "http-port"),
        (["--max-batch-size", "0"], "batch"),
        (["--http-port", "9000", "--grpc-port", "9000"], "ports"),
        (["--max-queue-delay-us", "-1"], "delay"),
        (["--host", ""], "host"),
        (["--model-name", "a/b"], "model name"),
        (["--threads", "-2"], "threads"),
        (["--vocab", ";"], "vocabulary"),
        (["--precision", "int9"], "int9"),
        (["--device", "tpu"], "device"),
    ],
    ids=[
        "instances",
        "port",
        "batch",
        "same_ports",
        "delay",
        "host",
        "model_name",
        "threads",
        "vocab",
        "precision",
        "device",
    ],
)
def test_serve_mistakes_are_one_line_before_triton_starts(bundle, capsys, args, says):
    from sdk.cli import main

    rc = main(["serve", "--bundle", str(bundle), *args])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert says in err and "PyTriton" not in err, err
