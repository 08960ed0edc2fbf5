"""Builds the compiled core (src/, include/shmipc.h) into the extension shmipc._core.

Everything else about the package is in pyproject.toml.
"""

from setuptools import Extension, setup

CORE_SOURCES = ["src/channel.c", "src/header.c", "src/identity.c", "src/killpoint.c",
                "src/lock.c", "src/tasks.c", "src/wait.c"]

setup(
    ext_modules=[
        Extension(
            "shmipc._core",
            sources=["shmipc/_core.c", *CORE_SOURCES],
            include_dirs=["include", "src"],
            extra_compile_args=["-std=gnu11", "-O2", "-Wall", "-Wextra",
                                "-Wno-missing-field-initializers"],
            libraries=["pthread"],
        )
    ]
)
