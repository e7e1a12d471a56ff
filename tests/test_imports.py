"""Every module of dicomql imports on its own: no module may rely on another having been
imported first (a Starlette convertor registered elsewhere, a deferred import that only works
in one order).

A fresh interpreter per module costs ~230 × the import of SQLAlchemy, pydicom, Starlette …
(minutes on two shared cores). So one fresh interpreter that has imported no dicomql module
first imports the third-party modules dicomql uses, untouched by dicomql, and then forks one
child per module; each child starts with no dicomql module and no state any of them left in a
library (Starlette's convertor registry, say), imports its module and exits.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
import textwrap

import dicomql

# Alembic's env script reads ``alembic.context.config``, which exists only while alembic runs it.
NOT_IMPORTABLE_ALONE = {"dicomql.store.migrations.env"}

# Run in a fresh interpreter: argv[1] is a JSON list of module names; prints a JSON object of
# the modules that failed, each with the last line of its traceback.
_FORK_EACH = textwrap.dedent(
    """
    import importlib, json, os, subprocess, sys, traceback

    modules = json.loads(sys.argv[1])
    # The libraries dicomql imports, found by importing all of it in a throwaway interpreter.
    listing = subprocess.run(
        [sys.executable, "-c", "import importlib, json, sys; before = set(sys.modules); "
         f"[importlib.import_module(m) for m in {modules!r}]; "
         "print(json.dumps(sorted(m for m in set(sys.modules) - before "
         "if m.split('.')[0] != 'dicomql')))"],
        capture_output=True, text=True, check=True,
    )
    for name in json.loads(listing.stdout):
        try:
            importlib.import_module(name)
        except Exception:
            pass  # a library's private alias; the child imports it if it must
    assert not [m for m in sys.modules if m.split(".")[0] == "dicomql"]

    failures = {}
    for module in modules:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            try:
                importlib.import_module(module)
                status = 0
            except BaseException:
                os.write(write, traceback.format_exc().strip().splitlines()[-1].encode())
                status = 1
            os._exit(status)
        os.close(write)
        with os.fdopen(read, "rb") as pipe:
            error = pipe.read().decode()
        _, status = os.waitpid(pid, 0)
        if status != 0:
            failures[module] = error or f"exit status {status}"
    print(json.dumps(failures))
    """
)


def _modules() -> list[str]:
    names = ["dicomql"]
    names += [
        info.name
        for info in pkgutil.walk_packages(dicomql.__path__, "dicomql.")
        if info.name not in NOT_IMPORTABLE_ALONE
    ]
    return sorted(names)


def test_every_module_imports_without_any_other_dicomql_module_imported_first() -> None:
    modules = _modules()
    assert "dicomql.service.dicomweb.retrieve" in modules and len(modules) > 100
    result = subprocess.run(
        [sys.executable, "-c", _FORK_EACH, json.dumps(modules)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert json.loads(result.stdout) == {}
