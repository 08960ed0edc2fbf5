"""Builds the compiled core (src/, include/shmipc.h) into the extension shmipc._core, and the
C fast path of records (shmipc/_records.c) into shmipc._records.

Everything else about the package is in pyproject.toml.
"""

from setuptools import Extension, setup

CORE_SOURCES = ["src/channel.c", "src/header.c", "src/identity.c", "src/killpoint.c",
                "src/lock.c", "src/ready.c", "src/tasks.c", "src/wait.c"]

setup(
    ext_modules=[
        Extension(
            "shmipc._core",
            sources=["shmipc/_core.c", "shmipc/_msgpack.c", *CORE_SOURCES],
            include_dirs=["include", "src"],
            extra_compile_args=["-std=gnu11", "-O2", "-Wall", "-Wextra",
                                "-Wno-missing-field-initializers"],
            libraries=["pthread"],
        ),
        Extension(
            "shmipc._records",
            sources=["shmipc/_records.c"],
            extra_compile_args=["-std=gnu11", "-O2", "-Wall", "-Wextra"],
        ),
    ]
)
