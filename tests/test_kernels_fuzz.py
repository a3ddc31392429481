"""Malformed inputs to the compiled kernels: every one must raise a Python exception, in this
process (a crash would take the whole test run down)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from sdk import _kernels as K

RNG = np.random.default_rng(0)
IMG = RNG.standard_normal((1, 3, 32, 40)).astype(np.float32)
LOGITS = RNG.standard_normal((1, 4, 8, 10)).astype(np.float32)
PROBS = RNG.random((1, 4, 6)).astype(np.float32)
FEATS = RNG.standard_normal((1, 5, 6, 7)).astype(np.float32)


class FakeCuda:
    """An object that claims to be a CUDA array (it is not)."""

    def __init__(self, **fields):
        base = {"shape": (1, 4, 8, 10), "typestr": "<f4", "data": (0x7F0000000000, False), "version": 3}
        base.update(fields)
        self.__cuda_array_interface__ = {k: v for k, v in base.items() if v is not ...}


class RaisingCuda:
    @property
    def __cuda_array_interface__(self):
        raise RuntimeError("boom")


def unaligned(shape):
    buf = np.zeros(int(np.prod(shape)) * 4 + 1, np.uint8)
    return np.frombuffer(buf.data, np.float32, int(np.prod(shape)), offset=1).reshape(shape)


def with_value(a, value, index=(0, 0, 1, 1)):
    a = a.copy()
    a[index] = value
    return a


def crops(image=IMG, logits=LOGITS, **kw):
    return lambda: K.masked_crops(image, logits, **kw)


def sem(logits=LOGITS, probs=PROBS, image_size=(30, 40), out_size=(30, 40), **kw):
    return lambda: K.semantic_inference(logits, probs, image_size, out_size, **kw)


def pool(feats=FEATS, logits=LOGITS, **kw):
    return lambda: K.mask_pool(feats, logits, **kw)


def bad_arrays(a):
    """Malformed stand-ins for the 4-D float32 array `a`."""
    shape = a.shape
    return {
        "none": None,
        "list": a.tolist(),
        "str": "array",
        "float": 1.0,
        "dict": {"shape": shape},
        "torch_cpu": torch.from_numpy(a),
        "float64": a.astype(np.float64),
        "float16": a.astype(np.float16),
        "int32": a.astype(np.int32),
        "bool": a > 0,
        "complex": a.astype(np.complex64),
        "object": a.astype(object),
        "big_endian": a.astype(">f4"),
        "rank0": np.ones((), np.float32),
        "rank3": a[0],
        "rank5": a[None],
        "zero_batch": a[:0],
        "zero_dim1": a[:, :0],
        "zero_height": a[:, :, :0],
        "zero_width": a[:, :, :, :0],
        "transposed": a.transpose(0, 1, 3, 2),
        "strided": np.repeat(a, 2, axis=3)[..., ::2],
        "negative_strides": a[..., ::-1],
        "fortran": np.asfortranarray(a),
        "broadcast": np.broadcast_to(a[:, :1], shape),
        "unaligned": unaligned(shape),
        "nan": with_value(a, np.nan),
        "inf": with_value(a, np.inf),
        "neg_inf": with_value(a, -np.inf),
        "cuda_raises": RaisingCuda(),
        "cuda_not_dict": type("C", (), {"__cuda_array_interface__": [1, 2]})(),
        "cuda_no_shape": FakeCuda(shape=...),
        "cuda_no_data": FakeCuda(shape=shape, data=...),
        "cuda_shape_list": FakeCuda(shape=list(shape)),
        "cuda_shape_negative": FakeCuda(shape=(1, -shape[1]) + shape[2:]),
        "cuda_shape_float": FakeCuda(shape=(1, float(shape[1])) + shape[2:]),
        "cuda_shape_huge": FakeCuda(shape=shape[:2] + (2**40, shape[3])),
        "cuda_shape_overflow": FakeCuda(shape=(1, 2**62, 2**62, 10)),
        "cuda_shape_beyond_int64": FakeCuda(shape=shape[:2] + (2**70, shape[3])),
        "cuda_rank3": FakeCuda(shape=shape[1:]),
        "cuda_zero_size": FakeCuda(shape=(1, 0) + shape[2:]),
        "cuda_float64": FakeCuda(shape=shape, typestr="<f8"),
        "cuda_int32": FakeCuda(shape=shape, typestr="<i4"),
        "cuda_big_endian": FakeCuda(shape=shape, typestr=">f4"),
        "cuda_typestr_bytes": FakeCuda(shape=shape, typestr=b"<f4"),
        "cuda_null": FakeCuda(shape=shape, data=(0, False)),
        "cuda_misaligned": FakeCuda(shape=shape, data=(0x7F0000000001, False)),
        "cuda_data_not_tuple": FakeCuda(shape=shape, data=0x7F0000000000),
        "cuda_data_short": FakeCuda(shape=shape, data=(0x7F0000000000,)),
        "cuda_data_str": FakeCuda(shape=shape, data=("0x7f", False)),
        "cuda_strided": FakeCuda(shape=shape, strides=tuple(8 * x for x in np.empty(shape, np.float32).strides)),
        "cuda_strides_bad": FakeCuda(shape=shape, strides=(1, 2)),
        "cuda_masked": FakeCuda(shape=shape, mask=object()),
        "cuda_stream_str": FakeCuda(shape=shape, stream="s"),
    }


# Well-formed CUDA descriptions with a pointer that is not CUDA memory (or no GPU / no CUDA build).
FAKE_DEVICE = {
    "cuda_fake_pointer": FakeCuda(),
    "cuda_fake_strides_none": FakeCuda(strides=None, stream=None),
}


def bad_calls():
    """(name, thunk) for every malformed call."""
    for name, bad in bad_arrays(IMG).items():
        yield f"crops_image_{name}", crops(image=bad)
    for name, bad in bad_arrays(LOGITS).items():
        yield f"crops_logits_{name}", crops(logits=bad)
        yield f"sem_logits_{name}", sem(logits=bad)
        yield f"pool_logits_{name}", pool(logits=bad)
    for name, bad in bad_arrays(FEATS).items():
        yield f"pool_features_{name}", pool(feats=bad)
    for name, probs in {
        "rank2": PROBS[0],
        "wrong_q": PROBS[:, :3],
        "wrong_b": np.concatenate([PROBS] * 2),
        "nan": with_value(PROBS, np.nan, (0, 0, 0)),
        "float64": PROBS.astype(np.float64),
        "zero_k": PROBS[..., :0],
        "list": PROBS.tolist(),
    }.items():
        yield f"sem_probs_{name}", sem(probs=probs)
    yield "crops_batch_mismatch", crops(image=np.concatenate([IMG] * 2))
    yield "pool_batch_mismatch", pool(feats=np.concatenate([FEATS] * 2))
    for value in (0, -1, 4097, 2**70, 1.5, "224", None, -(2**63)):
        yield f"crops_crop_size_{value!r}", crops(crop_size=value)
    for value in (-2, 1025, 0.5):
        yield f"crops_sampling_ratio_{value!r}", crops(sampling_ratio=value)
    yield "crops_overflow", crops(crop_size=4096, logits=np.zeros((1, 64, 2, 2), np.float32))
    for value in (-1, 10**6, 2**80):
        yield f"threads_{value}", crops(num_threads=value)
    yield "crops_stream_str", crops(stream="0")
    for value in (
        (0, 40),
        (30, -1),
        (30,),
        (30, 40, 1),
        "ab",
        None,
        30,
        (30.0, 40),
        (True, 40),
        (2**17, 40),
        (2**64, 40),
        [object(), 4],
    ):
        yield f"sem_image_size_{value!r}", sem(image_size=value)
        yield f"sem_out_size_{value!r}", sem(out_size=value)
    yield "sem_image_exceeds_padded", sem(image_size=(33, 40))
    yield "sem_image_exceeds_given_padded", sem(padded_size=(20, 20))
    yield "sem_padded_bad", sem(padded_size=(0, 40))
    yield "sem_out_overflow", sem(out_size=(65536, 65536))
    yield "sem_scores_overflow", sem(out_size=(20000, 20000), return_scores=True)
    for name, mask in {
        "short": np.ones(5, bool),
        "float": np.ones(6, np.float32),
        "rank2": np.ones((1, 6), bool),
        "str": "abcdef",
        "int64": np.ones(6, np.int64),
    }.items():
        yield f"sem_calibrate_mask_{name}", sem(calibrate_mask=mask, calibrate=0.1)
    for value in (float("nan"), float("inf"), "0.1"):
        yield f"sem_calibrate_{value!r}", sem(calibrate_mask=np.ones(6, bool), calibrate=value)
    for mode in ("", "SOFT", "mean", None, 1):
        yield f"pool_mode_{mode!r}", pool(mode=mode)
    for name, fake in FAKE_DEVICE.items():
        yield f"crops_{name}", crops(image=FakeCuda(shape=(1, 3, 32, 40)), logits=fake)
        yield f"sem_{name}", sem(logits=fake, probs=FakeCuda(shape=(1, 4, 6)))
        yield f"pool_{name}", pool(feats=FakeCuda(shape=(1, 5, 6, 7)), logits=fake)
        yield f"mixed_host_device_{name}", crops(logits=fake)


CASES = list(bad_calls())


@pytest.mark.parametrize("name,call", CASES, ids=[c[0] for c in CASES])
def test_malformed_input_raises(name, call):
    expected = (TypeError, ValueError, OverflowError)
    if name.startswith(tuple(f"{op}_{fake}" for op, fake in itertools.product(("crops", "sem", "pool"), FAKE_DEVICE))):
        expected += (RuntimeError,)  # well-formed CUDA description: no GPU here, or not device memory
    with pytest.raises(expected):
        call()


def test_valid_calls_still_work_after_fuzzing():
    crops_out, boxes = K.masked_crops(IMG, LOGITS, 16)
    assert crops_out.shape == (1, 4, 3, 16, 16) and boxes.shape == (1, 4, 4)
    assert K.semantic_inference(LOGITS, PROBS, (30, 40), (30, 40)).shape == (1, 30, 40)
    assert K.mask_pool(FEATS, LOGITS).shape == (1, 4, 5)
