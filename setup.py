"""Builds the optional CPU selection kernel (an XLA FFI handler); metadata: pyproject.toml.

The kernel is a plain C++17 file compiled against the XLA FFI headers that jaxlib ships
(``jax.ffi.include_dir()``). If jaxlib or a C++ compiler is missing, the build is skipped
(``optional=True``) and hubjax uses its portable XLA selection everywhere.
"""

import os

from setuptools import Extension, setup


def ffi_headers():
    """The FFI headers of the jaxlib in the build environment, and its version (the kernel is
    only registered under a jaxlib at least as new: older runtimes refuse newer handler APIs)."""
    try:
        import jaxlib
        import jaxlib.version
    except ImportError:
        return [], []
    include = os.path.join(os.path.dirname(jaxlib.__file__), "include")
    if not os.path.isdir(include):
        return [], []
    return [include], [("HUBJAX_BUILD_JAXLIB", f'"{jaxlib.version.__version__}"')]


include_dirs, define_macros = ffi_headers()


setup(
    ext_modules=[
        Extension(
            "hubjax._src.kernels._cpu_select",
            ["hubjax/_src/kernels/_cpu_select.cc"],
            include_dirs=include_dirs,
            define_macros=define_macros,
            language="c++",
            extra_compile_args=[
                "-std=c++17",
                "-O3",
                "-ffp-contract=off",  # bitwise equal to XLA's sums: no fused multiply-adds
                "-fvisibility=hidden",
                "-Wno-psabi",
            ],
            depends=[
                "hubjax/_src/kernels/_cpu_select_kernels.inc",
                "hubjax/_src/kernels/_avx512_emulation.h",
            ],
            optional=True,
        )
    ]
)
