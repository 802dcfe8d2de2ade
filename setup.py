"""pressor's one compiled part: durable-rules' C engine, built from third_party/durable-rules.

Everything else about the package is declared in pyproject.toml; this file exists only because
setuptools takes C extensions from setup.py. The engine is durable-rules 2.0.28's C code (MIT, its
licence and attribution in third_party/durable-rules/) with three patches
(third_party/durable-rules/patches/): one makes it compile and import on Python 3.13 and later, one
lets one ruleset match more than 64 comparisons on one fact (so a pack needs fewer rulesets), one keeps
a buffer in scope for the optimised build.
It is built into pressor's own package as ``pressor.engine.evaluation.durable_rules_engine``, so
nothing is fetched from durable-rules' sdist at install time and every Python gets the same code.
"""
import sys

from setuptools import Extension, setup

SRC = "third_party/durable-rules/src"

# -O2 (Python's own flags give -O3 and -fwrapv; the last -O wins), measured against the -O0 build that
# durable-rules' own setup.py gives (it sets CFLAGS, which setuptools puts in place of Python's flags) in
# alternating processes: the match 213 -> 143 µs a state at 512 generated rules, 23.5 -> 17.6 at 32 (issue 21).
# -fno-strict-aliasing: the engine lays several types out in one buffer (regex.c's state machines), so the
# optimiser may not assume that pointers of different types never meet. The third patch (patches/0003-...) fixes
# the one fault gcc reports at -O2 (-Wdangling-pointer); -Wall -Wextra report nothing else but unused parameters,
# intended fall-throughs and a deliberate one-byte strncpy. tests/test_engine.py compares every firing with the
# plain-Python reference on each build.
if sys.platform == "win32":
    FLAGS = []  # MSVC: setuptools' release flags (optimised)
elif sys.platform == "darwin":
    FLAGS = ["-std=c99", "-D_GNU_SOURCE", "-fcommon", "-O2", "-fno-strict-aliasing"]
else:
    FLAGS = ["-std=c99", "-D_GNU_SOURCE", "-O2", "-fno-strict-aliasing"]

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
