"""zegformer-sdk: open-vocabulary semantic segmentation (ZegFormer) made deployable.

The compiled kernels in ``cpp_ext/`` are built by ``cpp_ext/build_support.py`` (C++ always,
CUDA when ``nvcc`` is found and ``ZEGFORMER_NO_CUDA`` is unset).
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

SDK_REQUIRES = ["numpy>=1.23", "onnxruntime>=1.16", "pillow>=9", "opencv-python-headless>=4.7", "tqdm"]
TORCH_REQUIRES = [
    "torch>=2.1",
    "torchvision>=0.16",
    "open_clip_torch>=2.20",
    "onnx>=1.14",
    "pyyaml>=6",
    "scipy>=1.9",
    "tensorboard>=2.12",  # torch.utils.tensorboard (train/engine.py)
]

setup(
    name="zegformer-sdk",
    version=_version(),
    description="ZegFormer open-vocabulary semantic segmentation: training, ONNX/TensorRT export, torch-free SDK",
    long_description=open(os.path.join(HERE, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    packages=find_packages(include=["sdk", "sdk.*", "export", "export.*", "train", "train.*"]),
    package_data={"sdk": ["resources/*"], "train": ["resources/*"]},
    install_requires=SDK_REQUIRES,
    extras_require={
        "train": TORCH_REQUIRES,
        "export": TORCH_REQUIRES,
        "dev": TORCH_REQUIRES + ["pytest>=7", "matplotlib>=3.5", "psutil>=5"],
        "gpu": ["onnxruntime-gpu>=1.16", "cupy-cuda12x"],  # cupy: the device arrays of sdk.arrays
        "tensorrt": ["tensorrt>=10", "pycuda>=2022.1"],
    },
    **ext_kwargs,
)
