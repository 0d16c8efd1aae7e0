"""Still images as IOVQA media: which files are images, and their decoded copy in the frame cache.

An annotation row's medium is an image when PIL recognises the file's content
as one of :data:`IMAGE_FORMATS` (JPEG, PNG, WebP, BMP), whatever its name
says; anything else is read as a video by PyAV (``frames``), which reports a
file that is neither. An image is decoded in full once (a truncated or
corrupt image is an error naming the file) and its RGB copy goes to the
frame cache, like a video's sampled frames: LLaMA-Factory gets that copy as
the sample's one ``images`` entry. The copy's path is the plugin's own, so a
batch row whose image is one of the run's IOVQA samples is told apart from a
stock question/answer sample about the same picture.
"""

from __future__ import annotations

import os

IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP")
IMAGE = "image"
VIDEO = "video"
MEDIA_KINDS = (VIDEO, IMAGE)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")  # for messages only: the content decides
IMAGE_FILE = "image"  # the cached copy's file name (before the frame format's extension)


def image_format(path: str):
    """The PIL format name when the file's content is an image of :data:`IMAGE_FORMATS`, else None.

    Only the header is read (cheap on a video file: PIL gives up after a few bytes)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            found = image.format
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None
    return found if found in IMAGE_FORMATS else None


def media_kind(path: str) -> str:
    """``"image"`` when the file holds an image (by content, see :func:`image_format`), else ``"video"``."""
    return IMAGE if os.path.isfile(path) and image_format(path) else VIDEO


def decode_image(path: str):
    """The whole image as RGB. Raises ``frames.VideoError`` (the media error) when it does not decode."""
    from PIL import Image

    from .frames import VideoError

    try:
        with Image.open(path) as image:
            image.load()  # the header alone says nothing of a truncated or corrupt body
            return image.convert("RGB")
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError... for a body that does not decode
        raise VideoError(path, f"image does not decode ({type(err).__name__}: {err})") from None


def explain_unreadable(path: str, reason: str) -> str:
    """The reason a file named like an image failed as a video: say it is no image either (PyAV reads a broken
    ``.jpg`` as a one-frame video and its error says nothing of images)."""
    if os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS:
        return f"not an image PIL can read ({'/'.join(IMAGE_FORMATS)}), and read as a video: {reason}"
    return reason
