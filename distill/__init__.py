"""distill: Ray-native reasoning distillation.

The source tree keeps `actors/`, `cluster/` and `pipelines/` beside `distill/` (the layout is fixed); an
install maps them under this package (`distill.actors`, ...: pyproject's package-dir), so installing the
project adds one top-level name. Imported from a source tree -- a checkout, or a Ray job's working_dir --
the same names resolve to the folders beside this one, so a submitted job runs the code it shipped.
"""

import importlib.abc
import importlib.util
import sys
from pathlib import Path

_BESIDE = ("actors", "cluster", "pipelines")
_ROOT = Path(__file__).resolve().parent.parent


class _BesideFinder(importlib.abc.MetaPathFinder):
    """`distill.<x>` for x in _BESIDE -> `<root>/<x>/` when this distill/ sits in a source tree. Written by hand:
    setuptools' editable finder maps them too, but to the install's source, not to a job's working_dir copy;
    appending the root to `__path__` would also make `distill.tests` or `distill.distill` importable."""

    def find_spec(self, fullname, path=None, target=None):
        pkg, _, name = fullname.partition(".")
        init = _ROOT / name / "__init__.py"
        if pkg != "distill" or name not in _BESIDE or not init.is_file():
            return None  # an installed wheel: distill/<x>/ is a plain subpackage, found the usual way
        return importlib.util.spec_from_file_location(fullname, init, submodule_search_locations=[str(init.parent)])


if (_ROOT / "actors" / "__init__.py").is_file() and not any(isinstance(f, _BesideFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _BesideFinder())
