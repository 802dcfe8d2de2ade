"""pressor's one compiled part: durable-rules' C engine, built from third_party/durable-rules.

Everything else about the package is declared in pyproject.toml; this file exists only because
setuptools takes C extensions from setup.py. The engine is durable-rules 2.0.28's C code (MIT, its
licence and attribution in third_party/durable-rules/) with two patches
(third_party/durable-rules/patches/): one makes it compile and import on Python 3.13 and later, the
other lets one ruleset match more than 64 comparisons on one fact (so a pack needs fewer rulesets).
It is built into pressor's own package as ``pressor.engine.evaluation.durable_rules_engine``, so
nothing is fetched from durable-rules' sdist at install time and every Python gets the same code.
"""
import sys

from setuptools import Extension, setup

SRC = "third_party/durable-rules/src"

# The flags durable-rules' own setup.py compiles with, per platform. It sets them as CFLAGS, which current
# setuptools (84 here) puts in place of Python's own flags, so a PyPI install builds the engine unoptimised
# (-O0), and that is the build this project measured the engine on (the README's bare-match figures: about
# 49 µs here at -O0, 40 µs at -O3). -O0 comes last here and overrides Python's -O3, so the machine code is
# the same kind. At -O3 gcc warns of a dangling pointer in events.c's regex path (undefined behaviour that
# optimisation may turn into a wrong answer): optimising is a change to make on its own, if ever, with the
# differential tests run on it.
if sys.platform == "win32":
    FLAGS = []
elif sys.platform == "darwin":
    FLAGS = ["-std=c99", "-D_GNU_SOURCE", "-fcommon", "-O0"]
else:
    FLAGS = ["-std=c99", "-D_GNU_SOURCE", "-O0"]

setup(
    ext_modules=[
        Extension(
            # The last name must stay durable_rules_engine: rules.c defines PyInit_durable_rules_engine.
            "pressor.engine.evaluation.durable_rules_engine",
            sources=[f"{SRC}/rulespy/rules.c"]
            + [f"{SRC}/rules/{name}.c" for name in ("json", "rete", "state", "events", "regex")],
            include_dirs=[f"{SRC}/rules"],
            depends=[f"{SRC}/rules/{name}.h" for name in ("json", "regex", "rete", "rules", "state")],
            extra_compile_args=FLAGS,
        )
    ],
)
