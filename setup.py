"""The one compiled part, the facet pass (`search/_kernels.c`); everything else is in
pyproject.toml. It needs a C compiler and Python's headers: `make install` installs them
on Debian when they are missing, and PROJ's (libproj-dev: `geodesic.h`, the geodesic
PostGIS computes its distances with). Without PROJ's header the kernels are built
without `st_distance` (`_kernels.GEODESIC` is False) and PostgreSQL computes the page's
distances instead."""

import os

from setuptools import Extension, setup


def _geodesic_include() -> str | None:
    """The directory holding PROJ's geodesic.h (PROJ_INCLUDE_DIR first), or None."""
    dirs = [os.environ.get("PROJ_INCLUDE_DIR", ""), "/usr/include", "/usr/local/include"]
    return next((d for d in dirs if d and os.path.exists(os.path.join(d, "geodesic.h"))), None)


GEODESIC = _geodesic_include()
if GEODESIC is None:
    print("setup.py: PROJ's geodesic.h not found (apt-get install libproj-dev): the search"
          " kernels are built without st_distance, PostgreSQL computes page distances")  # fmt: skip

setup(
    ext_modules=[
        Extension(
            "search._kernels",
            sources=["search/_kernels.c"],
            extra_compile_args=["-O2", "-Wall", "-Werror"],
            define_macros=[("HAVE_GEODESIC", "1")] if GEODESIC else [],
            include_dirs=[GEODESIC] if GEODESIC else [],
            libraries=["proj"] if GEODESIC else [],
        )
    ]
)
