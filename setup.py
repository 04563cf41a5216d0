"""The one compiled part, the PostgreSQL engine's kernels
(`search/engines/postgres/_kernels.c`); everything else is in pyproject.toml.

Build requirements: a C compiler, Python's headers and PROJ (libproj-dev: `geodesic.h`
and `libproj`, the geodesic PostGIS computes its distances with, so the kernels' page
distances are PostGIS's to the bit). `make install` installs them on Debian when they
are missing; without PROJ's header the build stops here.

Before compiling, the record layout header (`record_layout.h`) is written from its one
definition (`record_layout.py`), so the C offsets always follow it."""

import importlib.util
import os
import sys
from pathlib import Path

from setuptools import Extension, setup

HERE = Path(__file__).resolve().parent
KERNELS = Path("search", "engines", "postgres")


def _geodesic_include() -> str:
    """The directory holding PROJ's geodesic.h (PROJ_INCLUDE_DIR first); exits with a
    message when there is none."""
    dirs = [os.environ.get("PROJ_INCLUDE_DIR", ""), "/usr/include", "/usr/local/include"]
    found = next((d for d in dirs if d and os.path.exists(os.path.join(d, "geodesic.h"))), None)
    if found is None:
        sys.exit(
            "setup.py: PROJ's geodesic.h was not found (looked in PROJ_INCLUDE_DIR,"
            " /usr/include, /usr/local/include). The search kernels need PROJ's geodesic:"
            " install libproj-dev (Debian/Ubuntu: apt-get install libproj-dev; `make install`"
            " does it as root), or set PROJ_INCLUDE_DIR to the directory holding geodesic.h."
        )
    return found


def _write_record_layout() -> None:
    """Write `record_layout.h` from `record_layout.py` (loaded from its file: the build
    environment has none of the project's dependencies)."""
    spec = importlib.util.spec_from_file_location(
        "_record_layout", HERE / KERNELS / "record_layout.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    target = HERE / KERNELS / "record_layout.h"
    text = module.header()
    if not target.exists() or target.read_text() != text:
        target.write_text(text)


GEODESIC = _geodesic_include()
_write_record_layout()

setup(
    ext_modules=[
        Extension(
            "search.engines.postgres._kernels",
            sources=[str(KERNELS / "_kernels.c")],
            depends=[str(KERNELS / "record_layout.h")],
            extra_compile_args=["-O2", "-Wall", "-Werror"],
            include_dirs=[GEODESIC, str(KERNELS)],
            libraries=["proj"],
        )
    ]
)
