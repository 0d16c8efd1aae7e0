"""iovqa-plugin: IOVQA video quality fine-tuning for LLaMA-Factory.

Importing this package is cheap (no torch, no LLaMA-Factory). Installing it
puts ``iovqa_plugin.pth`` in site-packages, which patches LLaMA-Factory the
moment LLaMA-Factory is imported, so the stock ``llamafactory-cli`` accepts
the plugin's ``iovqa_*`` recipe keys. ``apply()`` does the same explicitly,
for environments where ``.pth`` files are not processed.
"""

from .version import __version__


def apply():
    """Patch the installed LLaMA-Factory now (idempotent).

    Raises ``iovqa_plugin.patches.UnsupportedVersionError`` when the installed
    LLaMA-Factory is not a supported version.
    """
    from .patches import apply_all

    apply_all()


__all__ = ["__version__", "apply"]
