"""The one compiled part, the facet pass (`search/_kernels.c`); everything else is in
pyproject.toml. It needs a C compiler and Python's headers: `make install` installs them
on Debian when they are missing."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "search._kernels",
            sources=["search/_kernels.c"],
            extra_compile_args=["-O2", "-Wall", "-Werror"],
        )
    ]
)
