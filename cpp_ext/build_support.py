"""Build of ``sdk._kernels``: C++ (pybind11) always, CUDA when ``nvcc`` is found.

``setup.py`` loads this file by path and passes :func:`setup_kwargs` to ``setup()``.

Environment:
  ZEGFORMER_NO_CUDA=1        build the CPU-only module even when nvcc is present
  ZEGFORMER_CUDA_ARCHS       compute capabilities, e.g. "80;86;89;90+PTX" (the default);
                             "+PTX" also embeds PTX of that one for newer GPUs
  ZEGFORMER_REQUIRE_CUDA=1   fail instead of falling back to CPU-only if nvcc fails
  ZEGFORMER_BUILD_JOBS       parallel compiler processes (default: CPU count)
  CUDA_HOME / CUDA_PATH      where to look for nvcc when it is not on PATH
"""

from __future__ import annotations

import glob
import logging
import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

from pybind11.setup_helpers import ParallelCompile, Pybind11Extension
from pybind11.setup_helpers import build_ext as Pybind11BuildExt

log = logging.getLogger("zegformer.build")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_ARCHS = "80;86;89;90+PTX"
# no silent FMA: torch/torchvision rounding is matched explicitly
CXX_FLAGS = ["-O3", "-ffp-contract=off", "-Wno-psabi"]
NVCC_FLAGS = ["-O3", "-std=c++17", "--fmad=false", "-Xcompiler", "-fPIC", "-Xcompiler", "-fvisibility=hidden"]


def _rel(path: str) -> str:
    """Paths relative to the project root (setuptools wants relative source paths)."""
    return os.path.relpath(path, ROOT) if os.path.abspath(os.getcwd()) == ROOT else path


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def find_nvcc() -> str | None:
    """nvcc on PATH, else under CUDA_HOME / CUDA_PATH / /usr/local/cuda; None if absent or disabled."""
    if _truthy("ZEGFORMER_NO_CUDA"):
        return None
    found = shutil.which("nvcc")
    if found:
        return found
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root and os.access(os.path.join(root, "bin", "nvcc"), os.X_OK):
            return os.path.join(root, "bin", "nvcc")
    return None


def _run(cmd: list[str]) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def _dryrun_lines(nvcc: str) -> list[str]:
    cmd = [nvcc, "--dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull]
    return subprocess.run(cmd, capture_output=True, text=True).stderr.splitlines()


def cuda_lib_dir(nvcc: str) -> str:
    """The CUDA library directory, as nvcc itself resolves it (it may be a wrapper script)."""
    top, target = None, ""
    for line in _dryrun_lines(nvcc):
        m = re.match(r"#\$ (TOP|_TARGET_DIR_)=(.*)$", line.strip())
        if m and m.group(1) == "TOP":
            top = m.group(2).strip()
        elif m:
            target = m.group(2).strip()
    top = top or os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
    for candidate in (os.path.join(top, target, "lib"), os.path.join(top, "lib64"), os.path.join(top, "lib")):
        if os.path.exists(os.path.join(candidate, "libcudart_static.a")):
            return os.path.normpath(candidate)
    raise RuntimeError(f"libcudart_static.a not found near {top}")


def nvcc_version(nvcc: str) -> str:
    m = re.search(r"V(\d+\.\d+\.\d+)", _run([nvcc, "--version"]))
    return m.group(1) if m else "unknown"


def parse_archs(spec: str, supported: set[str]) -> tuple[list[str], list[str]]:
    """'80;86;90+PTX' -> (['80', '86', '90'], ['90']); drops what this nvcc cannot build."""
    sass, ptx = [], []
    for item in re.split(r"[;,\s]+", spec.strip()):
        if not item:
            continue
        want_ptx = item.upper().endswith("+PTX")
        cc = re.sub(r"^(sm_|compute_)", "", item[:-4] if want_ptx else item).replace(".", "")
        if not cc.isdigit():
            raise ValueError(f"bad entry {item!r} in ZEGFORMER_CUDA_ARCHS")
        if supported and f"compute_{cc}" not in supported:
            log.warning("nvcc cannot build compute_%s; skipped", cc)
            continue
        sass.append(cc)
        if want_ptx:
            ptx.append(cc)
    if not sass:
        raise ValueError("no buildable CUDA architecture in " + repr(spec))
    return sass, ptx


def gencode_flags(sass: list[str], ptx: list[str]) -> list[str]:
    flags = []
    for cc in sass:
        flags += ["-gencode", f"arch=compute_{cc},code=sm_{cc}"]
    for cc in ptx:
        flags += ["-gencode", f"arch=compute_{cc},code=compute_{cc}"]
    return flags


class CudaConfig:
    """nvcc, its version, the architectures to build and the CUDA library directory."""

    def __init__(self, nvcc: str):
        self.nvcc = nvcc
        self.version = nvcc_version(nvcc)
        supported = set(_run([nvcc, "--list-gpu-arch"]).split())
        self.sass, self.ptx = parse_archs(os.environ.get("ZEGFORMER_CUDA_ARCHS", DEFAULT_ARCHS), supported)
        self.lib_dir = cuda_lib_dir(nvcc)

    @property
    def arch_names(self) -> list[str]:
        return [f"sm_{cc}" for cc in self.sass] + [f"compute_{cc}" for cc in self.ptx]


def _jobs() -> int:
    return max(1, int(os.environ.get("ZEGFORMER_BUILD_JOBS", "0") or 0) or os.cpu_count() or 1)


class BuildExt(Pybind11BuildExt):
    """pybind11's build_ext, plus .cu sources compiled by nvcc and linked into the same module."""

    def build_extension(self, ext):
        if self._reuse_checkout_build(ext):
            return
        stamp = os.path.join(self.build_temp, f"{ext.name}.config")
        if _read(stamp) != _config(ext):
            self.force = True  # CUDA on/off or archs changed: nothing built before is reusable
        cuda = getattr(ext, "cuda_config", None)
        if cuda is not None and ext.cuda_sources:
            try:
                ext.extra_objects = list(ext.extra_objects or []) + self._compile_cuda(ext, cuda)
            except (OSError, subprocess.CalledProcessError) as err:
                if _truthy("ZEGFORMER_REQUIRE_CUDA"):
                    raise
                log.warning("nvcc failed (%s); building the CPU-only module", getattr(err, "stderr", err))
                _make_cpu_only(ext)
        super().build_extension(ext)
        os.makedirs(self.build_temp, exist_ok=True)
        with open(stamp, "w") as f:
            f.write(_config(ext))
        _write_checkout_stamp(ext, self.get_ext_filename(ext.name), self.get_ext_fullpath(ext.name))

    def _reuse_checkout_build(self, ext) -> bool:
        """Copy the checkout's module instead of compiling, when it is what this build would make.

        pip builds every install (``pip install -e ".[extra]"`` included) in a fresh temporary
        directory, so nothing compiled before is found there; the module in the checkout is reused
        when the stamp written beside it by an earlier build names the same settings and its sha256,
        and it is newer than every source. ``ZEGFORMER_REBUILD=1`` forces a build.
        """
        rel = self.get_ext_filename(ext.name)
        built, target = os.path.join(ROOT, rel), self.get_ext_fullpath(ext.name)
        if self.force or _truthy("ZEGFORMER_REBUILD") or not os.path.exists(built):
            return False
        newest = max(os.path.getmtime(p) for p in [*ext.sources, *ext.depends, *ext.cuda_sources])
        if _read(_stamp_path(rel)) != _stamp(ext, built) or os.path.getmtime(built) < newest:
            return False
        log.warning(
            "reusing %s (built with the same settings, newer than its sources; ZEGFORMER_REBUILD=1 rebuilds)", rel
        )
        if os.path.abspath(target) != os.path.abspath(built):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(built, target)
        return True

    def _compile_cuda(self, ext, cuda: CudaConfig) -> list[str]:
        out_dir = os.path.join(self.build_temp, "cuda")
        os.makedirs(out_dir, exist_ok=True)
        includes = [f"-I{os.path.join(HERE, 'include')}", f"-I{os.path.join(HERE, 'cuda')}"]
        flags = NVCC_FLAGS + includes + gencode_flags(cuda.sass, cuda.ptx)
        newest_dep = max(os.path.getmtime(p) for p in ext.depends + ext.cuda_sources)
        jobs = []
        for src in ext.cuda_sources:
            obj = os.path.join(out_dir, os.path.splitext(os.path.basename(src))[0] + ".o")
            if self.force or not os.path.exists(obj) or os.path.getmtime(obj) < newest_dep:
                jobs.append([cuda.nvcc, "-c", src, "-o", obj] + flags)
        log.info("nvcc: %d file(s) for %s with %d job(s)", len(jobs), ",".join(cuda.arch_names), _jobs())
        with ThreadPoolExecutor(max_workers=_jobs()) as pool:
            for result in pool.map(lambda cmd: subprocess.run(cmd, capture_output=True, text=True), jobs):
                if result.returncode != 0:
                    raise subprocess.CalledProcessError(result.returncode, result.args, result.stdout, result.stderr)
        return [os.path.join(out_dir, os.path.splitext(os.path.basename(s))[0] + ".o") for s in ext.cuda_sources]


def _config(ext) -> str:
    cuda = getattr(ext, "cuda_config", None)
    return repr((sorted(ext.define_macros), ext.extra_compile_args, cuda and cuda.arch_names))


def _stamp_path(rel: str) -> str:
    """``sdk/.<module file>.build``: the settings and sha256 of the module built in the checkout."""
    head, name = os.path.split(rel)
    return os.path.join(ROOT, head, f".{name}.build")


def _stamp(ext, module: str) -> str:
    import hashlib

    with open(module, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    return f"{_config(ext)}\n{digest}\n"


def _write_checkout_stamp(ext, rel: str, module: str) -> None:
    """Record what was built; the stamp only matches the checkout's module once it is this one
    (an editable install copies it there; a wheel build leaves the checkout's module as it was)."""
    try:
        with open(_stamp_path(rel), "w") as f:
            f.write(_stamp(ext, module))
    except OSError as err:  # a read-only checkout: no reuse next time, nothing else lost
        log.warning("cannot write the kernel build stamp: %s", err)


def _read(path: str) -> str | None:
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return f.read()


def _make_cpu_only(ext) -> None:
    ext.cuda_config = None
    ext.define_macros = [m for m in ext.define_macros if not m[0].startswith(("ZK_WITH_CUDA", "ZK_CUDA", "ZK_NVCC"))]
    ext.libraries = [lib for lib in ext.libraries if lib != "cudart_static"]


def _sources(pattern: str) -> list[str]:
    return sorted(_rel(p) for p in glob.glob(os.path.join(HERE, pattern)))


def kernels_extension() -> Pybind11Extension:
    """The ``sdk._kernels`` extension, with CUDA sources attached when nvcc is usable."""
    ext = Pybind11Extension(
        "sdk._kernels",
        sources=_sources("src/*.cpp"),
        include_dirs=[_rel(os.path.join(HERE, "include"))],
        # Headers, CUDA sources and this file: rebuild triggers, and what an sdist must carry.
        depends=_sources("include/zk/*.h")
        + _sources("src/*.h")
        + _sources("cuda/*.h")
        + _sources("cuda/*.cuh")
        + _sources("cuda/*.cu")
        + _sources("build_support.py"),
        extra_compile_args=list(CXX_FLAGS),
        cxx_std=17,
    )
    ext.cuda_sources, ext.cuda_config = [], None
    nvcc = find_nvcc()
    if nvcc is None:
        log.info("CUDA off (%s)", "ZEGFORMER_NO_CUDA" if _truthy("ZEGFORMER_NO_CUDA") else "nvcc not found")
        return ext
    try:
        cuda = CudaConfig(nvcc)
    except (OSError, ValueError, RuntimeError, subprocess.CalledProcessError) as err:
        if _truthy("ZEGFORMER_REQUIRE_CUDA"):
            raise
        log.warning("CUDA off: %s", err)
        return ext
    ext.cuda_sources, ext.cuda_config = _sources("cuda/*.cu"), cuda
    ext.define_macros += [
        ("ZK_WITH_CUDA", "1"),
        ("ZK_CUDA_ARCHS", '"' + ",".join(cuda.arch_names) + '"'),
        ("ZK_NVCC_VERSION", '"' + cuda.version + '"'),
    ]
    ext.library_dirs.append(cuda.lib_dir)
    ext.libraries += ["cudart_static", "rt", "dl", "pthread"]
    # Keep the static CUDA runtime private: never interpose on another libcudart in the process.
    ext.extra_link_args.append("-Wl,--exclude-libs,ALL")
    return ext


def setup_kwargs() -> dict:
    """Keyword arguments for ``setuptools.setup``: the extension and its build command."""
    ParallelCompile("ZEGFORMER_BUILD_JOBS", default=0).install()
    return {"ext_modules": [kernels_extension()], "cmdclass": {"build_ext": BuildExt}}
