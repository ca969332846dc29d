"""Packaging hook: the wheel carries the repository's shipped data files inside the package.

The topology files live at the top level (``topologies/*.yaml``) where users read and edit
them, the validation measurements under ``data/validation/``; a plain (non-editable)
``pip install .`` copies them under ``moesim/_data/`` so an installed moesim finds them
(:mod:`moesim.shipped`).
It also declares the optional C extension of the fluid network. Everything else is declared in
setup.cfg.
"""
import shutil
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_py import build_py

SHIPPED_DATA = {  # source glob (relative to this file) -> folder inside the installed package
    "topologies/*.yaml": "moesim/_data/topologies",
    "data/validation/h[12]00_measurements.json": "moesim/_data/data/validation",  # moesim validate's inputs
    "data/validation/layers/*.json": "moesim/_data/data/validation/layers",
}


class BuildPyWithData(build_py):
    """build_py that starts from an empty ``build/lib/moesim`` (modules deleted or moved to lab/
    since the last build would otherwise stay there and go into the wheel) and also copies
    :data:`SHIPPED_DATA` into the build tree."""

    def run(self) -> None:
        stale = Path(self.build_lib) / "moesim"
        if not getattr(self, "editable_mode", False) and stale.is_dir():
            shutil.rmtree(stale)
        super().run()
        root = Path(__file__).resolve().parent
        for pattern, folder in SHIPPED_DATA.items():
            target = Path(self.build_lib) / folder
            target.mkdir(parents=True, exist_ok=True)
            for src in sorted(root.glob(pattern)):
                self.copy_file(str(src), str(target / src.name))


# The fluid network's compiled event step (moesim.engine.compiled). Optional: where no C compiler
# is at hand the build goes on without it and moesim runs the numpy network, the same mechanism.
# No FMA contraction, so a machine's compiler cannot change the bits of a rate.
FLUID_CORE = Extension("moesim.engine._fluidcore", ["moesim/engine/_fluidcore.c"], optional=True,
                       extra_compile_args=["-O2", "-ffp-contract=off", "-fno-fast-math"])

setup(cmdclass={"build_py": BuildPyWithData}, ext_modules=[FLUID_CORE])
