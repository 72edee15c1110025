"""Builds prep's one optional native part, prep._kernels (see prep/_kernels.c and prep/kernels.py).

Everything else is in pyproject.toml. The extension is optional: without a C compiler the
install goes on, and prep reduces with PIL and torch instead (the same numbers, slower).
"""

import sys

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "prep._kernels",
            ["prep/_kernels.c", "prep/_kernels_api.c"],
            optional=True,
            extra_compile_args=[] if sys.platform == "win32" else ["-O3"],
        )
    ]
)
