"""Compiler / linker flags to embed this Python (python3-config --embed, without needing python3-config).

    python plugins/host/pyflags.py --cflags | --ldflags | --check

Run it with the venv's python: a venv has no python3-config, but its sysconfig names
the base interpreter's headers and libpython. --check exits 1 with a one-line message
when this Python cannot be embedded in a shared library (no headers, or only a static
libpython built without -fPIC).
"""
import os
import sys
import sysconfig


def _var(name: str) -> str:
    return str(sysconfig.get_config_var(name) or "")


def problem() -> str:
    inc = sysconfig.get_paths()["include"]
    if not os.path.exists(os.path.join(inc, "Python.h")):
        return f"{inc}/Python.h is missing | install the Python development headers (e.g. apt install python3-dev)"
    if _var("Py_ENABLE_SHARED") != "1":
        return (f"{sys.executable}: libpython is static ({_var('LIBRARY')}), it cannot go into libgt_host.so | "
                "use a Python built with --enable-shared (e.g. PYTHON_CONFIGURE_OPTS=--enable-shared pyenv install 3.11)")
    lib = os.path.join(_var("LIBDIR"), _var("LDLIBRARY"))
    if not os.path.exists(lib):
        return f"{lib} is missing | install the Python shared library (e.g. apt install libpython3-dev)"
    return ""


def cflags() -> str:
    inc = {sysconfig.get_paths()["include"], sysconfig.get_paths()["platinclude"]}
    return " ".join(f"-I{p}" for p in sorted(inc))


def ldflags() -> str:
    libdir = _var("LIBDIR")
    return f"-L{libdir} -Wl,-rpath,{libdir} -lpython{_var('LDVERSION')} {_var('LIBS')} {_var('SYSLIBS')}".strip()


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "--check"
    err = problem()
    if what == "--check":
        if err:
            print(f"make host: {err}", file=sys.stderr)
            sys.exit(1)
    elif what == "--cflags":
        print(cflags())
    elif what == "--ldflags":
        print(ldflags())
    else:
        sys.exit(f"usage: {sys.argv[0]} --cflags | --ldflags | --check")
