"""Real images for int8 calibration and for measuring reduced-precision agreement at export.

The default set is the photographs that ship *inside* the scikit-image wheel (``skimage/data/*.png``,
no download — the fetcher is never called); ``--calibration DIR`` uses the user's images instead.
Everything here is deterministic: sorted files, a fixed seed for the crops drawn, no threads racing.

Bad calibration input is refused before any export work (``check_calibration``): a folder image that
does not decode stops the export with one line naming the file — it is not skipped, because a
silently smaller calibration set would change the int8 scales without anyone knowing. Remove or fix
the file, or point ``--calibration`` at a folder without it.

The graphs are calibrated on what they see in the SDK: the proposal graph on resized, mean-padded
images; the CLIP image graph on the *masked crops* the SDK makes from the FP32 proposal graph's own
masks (``sdk.kernels.masked_crops``); the dense CLIP graph on the whole image at its fixed size.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np

from .errors import ExportError

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# scikit-image's sample photographs (in the wheel): natural scenes, objects, textures
SKIMAGE_CALIBRATION = (
    "astronaut.png",
    "chelsea.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "camera.png",
    "hubble_deep_field.jpg",
    "grass.png",
    "gravel.png",
    "brick.png",
    "coins.png",
    "ihc.png",
)
SKIMAGE_VERIFICATION = ("coffee.png", "motorcycle_right.png")  # held out: agreement is measured on these
DEFAULT_SEED = 0


@dataclass
class CalibrationSet:
    """The images (RGB uint8) and where they came from (recorded in the manifest)."""

    source: str
    calibration: List[Path]
    verification: List[Path]
    seed: int = DEFAULT_SEED
    min_size: int = 320
    crops_per_image: int = 16
    record: Dict[str, Any] = field(default_factory=dict)

    def describe(self) -> Dict[str, Any]:
        return {
            "source": self.source,
            "images": len(self.calibration),
            "files": [p.name for p in self.calibration],
            "seed": self.seed,
            "min_size": self.min_size,
            "crops_per_image": self.crops_per_image,
            **self.record,
        }


def skimage_data_dir() -> Optional[Path]:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data"
    return path if path.is_dir() else None


def list_images(folder: Path) -> List[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


MIN_CALIBRATION_SIZE = 32  # one stride of the proposal network's coarsest feature map


def check_options(limit: Optional[int], min_size: int) -> None:
    """``--calibration-images`` and ``--calibration-size`` as numbers the exporter can use."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ExportError(f"--calibration-images {limit!r}: must be a whole number of images, at least 1")
    if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < MIN_CALIBRATION_SIZE:
        raise ExportError(
            f"--calibration-size {min_size!r}: must be a whole number of pixels, at least "
            f"{MIN_CALIBRATION_SIZE} (default 320)"
        )


def check_calibration(
    folder: Optional[Path] = None, limit: Optional[int] = None, min_size: int = 320
) -> CalibrationSet:
    """Validate the calibration options and decode every image that will be used, before any export
    work; an unreadable image is an :class:`ExportError` naming it (see the module docstring)."""
    from sdk.errors import ImageError

    cal = calibration_set(folder, limit, min_size=min_size)
    for path in dict.fromkeys(cal.calibration + cal.verification):
        try:
            read_rgb(path)
        except ImageError as e:
            raise ExportError(
                f"--calibration: {' '.join(str(e).split())}; remove or replace that file "
                "(calibration images are never skipped silently)"
            ) from e
    return cal


def calibration_set(
    folder: Optional[Path] = None, limit: Optional[int] = None, seed: int = DEFAULT_SEED, min_size: int = 320
) -> CalibrationSet:
    """The user's ``folder`` (every 5th image held out for verification when there are ≥ 5), or the
    scikit-image photographs (``pip install scikit-image``)."""
    check_options(limit, min_size)
    if folder is not None:
        folder = Path(folder)
        if not folder.is_dir():
            raise ExportError(f"--calibration {folder}: not a directory of images")
        files = list_images(folder)
        if not files:
            raise ExportError(f"--calibration {folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in it")
        held = [p for i, p in enumerate(files) if i % 5 == 4] if len(files) >= 5 else []
        cal = [p for p in files if p not in held]
        source = f"folder:{folder.resolve()}"
        verify = held or cal[:2]
    else:
        data = skimage_data_dir()
        if data is None:
            raise ExportError(
                "int8 calibration needs images: pip install scikit-image (its sample photographs "
                "ship in the wheel) or pass --calibration DIR"
            )
        cal = [data / n for n in SKIMAGE_CALIBRATION if (data / n).is_file()]
        verify = [data / n for n in SKIMAGE_VERIFICATION if (data / n).is_file()]
        if not cal:
            raise ExportError(f"no scikit-image sample photographs found in {data}; pass --calibration DIR")
        import skimage

        source = f"scikit-image {skimage.__version__} sample photographs"
    if limit is not None:
        cal = cal[:limit]
    return CalibrationSet(source, cal, verify, seed, min_size)


def read_rgb(path: Path) -> np.ndarray:
    """An image file → H×W×3 uint8 RGB (gray replicated, alpha dropped)."""
    from sdk.preprocess import load_image

    return load_image(path)


def prepared_images(paths: Sequence[Path], manifest: Dict[str, Any], min_size: int) -> Iterator[Any]:
    """``sdk.preprocess.Prepared`` for each path, at ``min_size`` (bounded by the bundle's max size)."""
    from sdk.preprocess import prepare

    inf, pre = manifest["inference"], manifest["preprocess"]
    for p in paths:
        yield prepare(
            read_rgb(p),
            min_size,
            int(inf.get("max_size", 2560)),
            int(inf.get("size_divisibility", 32)),
            pre["pixel_mean"],
        )


def graph_inputs(bundle_dir: Path, manifest: Dict[str, Any], cal: CalibrationSet) -> Dict[str, List[np.ndarray]]:
    """Calibration inputs of each graph (lists of arrays, in a fixed order)."""
    import onnxruntime as ort

    from sdk import kernels
    from sdk.preprocess import clip_input, dense_input

    pre, inf = manifest["preprocess"], manifest["inference"]
    crop = int(inf.get("crop_size", 224))
    dense = inf.get("dense_size") or [crop, crop]
    rng = np.random.default_rng(cal.seed)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    proposal = ort.InferenceSession(
        str(bundle_dir / manifest["graphs"]["proposal"]["file"]), opts, providers=["CPUExecutionProvider"]
    )
    inputs: Dict[str, List[np.ndarray]] = {"proposal": [], "clip_image": [], "clip_dense": []}
    for prep in prepared_images(cal.calibration, manifest, cal.min_size):
        inputs["proposal"].append(prep.model_input)
        masks = proposal.run(None, {proposal.get_inputs()[0].name: prep.model_input})[0]
        pick = np.sort(rng.choice(masks.shape[1], min(cal.crops_per_image, masks.shape[1]), replace=False))
        image = clip_input(prep.model_input, prep.resized, pre["clip_pixel_mean"], pre["clip_pixel_std"])
        crops = np.asarray(kernels.masked_crops(image, np.ascontiguousarray(masks[:, pick]), crop)[0])[0]
        for i in range(0, crops.shape[0], 8):
            inputs["clip_image"].append(np.ascontiguousarray(crops[i : i + 8], dtype=np.float32))
        inputs["clip_dense"].append(dense_input(prep, dense, pre["clip_pixel_mean"], pre["clip_pixel_std"]))
    return inputs
