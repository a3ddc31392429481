"""zegformer-sdk: open-vocabulary semantic segmentation (ZegFormer) made deployable.

The compiled kernels in ``cpp_ext/`` are built by ``cpp_ext/build_support.py`` (C++ always,
CUDA when ``nvcc`` is found and ``ZEGFORMER_NO_CUDA`` is unset); a build reuses the checkout's
``sdk/_kernels*.so`` when it is newer than every kernel source and was built with the same settings.
The installed package is ``sdk``; ``train/`` and ``export/`` run from the checkout.
"""

import importlib.util
import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _load_build_support():
    path = os.path.join(HERE, "cpp_ext", "build_support.py")
    if not os.path.exists(path):
        return None
    spec = importlib.util.spec_from_file_location("zegformer_build_support", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _version() -> str:
    """The one version string, ``sdk/version.py``."""
    scope = {}
    with open(os.path.join(HERE, "sdk", "version.py"), encoding="utf-8") as f:
        exec(f.read(), scope)
    return scope["__version__"]


build_support = _load_build_support()
ext_kwargs = build_support.setup_kwargs() if build_support else {}

SDK_REQUIRES = ["numpy>=1.23", "onnxruntime>=1.16", "pillow>=9.1", "opencv-python-headless>=4.7", "tqdm"]
TORCH_REQUIRES = [
    "torch>=2.1",
    "torchvision>=0.16",
    "open_clip_torch>=2.20",
    "onnx>=1.14",
    "pyyaml>=6",
    "scipy>=1.9",
    "tensorboard>=2.12",  # torch.utils.tensorboard (train/engine.py)
    "scikit-image>=0.19",  # its sample photographs (in the wheel) are the default int8 calibration set
]

setup(
    name="zegformer-sdk",
    version=_version(),
    description="ZegFormer open-vocabulary semantic segmentation: training, ONNX/TensorRT export, torch-free SDK",
    long_description=open(os.path.join(HERE, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    # Only ``sdk`` is installed: ``train`` and ``export`` are generic names that would shadow an
    # application's own train.py/export.py; they run from the checkout (python -m export, python -m
    # train.quickstart, python train/train.py), and the [train]/[export] extras install what they need.
    packages=find_packages(include=["sdk", "sdk.*"]),
    package_data={"sdk": ["resources/*"]},
    install_requires=SDK_REQUIRES,
    extras_require={
        "train": TORCH_REQUIRES,
        "export": TORCH_REQUIRES,
        "dev": TORCH_REQUIRES
        + [
            "pytest>=7",
            "matplotlib>=3.5",
            "psutil>=5",
            "ruff==0.17.6",
            "mypy==2.4.1; python_version >= '3.10'",
        ],  # the linters CI runs, pinned
        # CUDA 13 wheels, as PyPI ships them today: onnxruntime-gpu >= 1.27 needs CUDA 13 (its [cuda,cudnn]
        # extras pull nvidia-cuda-runtime 13 / cudnn-cu13), cupy-cuda13x (>= 13.6) the device arrays of
        # sdk.arrays. CUDA 12 drivers: pip install "onnxruntime-gpu[cuda,cudnn]<1.27" cupy-cuda12x
        "gpu": ["onnxruntime-gpu[cuda,cudnn]>=1.27", "cupy-cuda13x>=13.6"],
        # TensorRT 10.13.3+ and 11.x metapackages pull the CUDA 13 wheels (tensorrt_cu13: driver >= 580);
        # cuda-python 13 likewise (the binding NVIDIA's samples use). CUDA 12 drivers: [tensorrt-cu12].
        "tensorrt": ["tensorrt>=10.13.3,<12", "cuda-python>=13,<14"],
        "tensorrt-cu12": ["tensorrt-cu12>=10.0,<12", "cuda-python>=12.6,<13"],
        # the fallback CUDA binding: built from source (needs the CUDA toolkit's headers and nvcc), so it is
        # kept out of [tensorrt], which must install on a machine with only the driver
        "pycuda": ["pycuda>=2022.1"],
        "demo": ["gradio>=6,<7"],  # python -m sdk demo (web page); pulls pillow<13
        "ray": ["ray[data]>=2.40", "pyarrow>=12"],
        "serve": ["nvidia-pytriton>=0.7", "tritonclient[http]>=2.40"],  # PyTriton pins numpy<2: own venv
        "coco": ["pycocotools>=2.0.7", "supervision>=0.20"],
        "openvino": ["openvino>=2024.0"],  # CPU backend: fp32, bf16, int8 (runs the bundle's QDQ graphs)
    },
    **ext_kwargs,
)
