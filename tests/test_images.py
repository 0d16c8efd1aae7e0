"""Images as IOVQA media: decided by content, the image prompt, rows mixed with videos through the formatter,
the collator (the mm plugin's image path, the mask, the head) and the scorer."""

import json
import os

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from iovqa_plugin.config import IOVQAArguments
from iovqa_plugin.data.annotations import AnnotationError, Columns, load_annotations
from iovqa_plugin.data.frames import FrameCache, FrameSpec, VideoError
from iovqa_plugin.data.images import IMAGE, VIDEO, media_kind
from iovqa_plugin.data.prompt import build_prompt
from iovqa_plugin.demo.ladder import write_video

from conftest import base_recipe, write_recipe

COLUMNS = Columns("video_name", "Prompt", "Overall_MOS")
FORMATS = ("PNG", "JPEG", "WEBP", "BMP")


def write_image(path, level, fmt="PNG", size=64):
    Image.fromarray(np.full((size, size, 3), level, dtype=np.uint8)).save(path, format=fmt)


def write_clip(path, level):
    write_video([Image.fromarray(np.full((64, 64, 3), level + 8 * j, dtype=np.uint8)) for j in range(8)], path, fps=8)


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory):
    """Four images (PNG under a name that says nothing, JPEG, WebP, BMP) and four videos, one CSV mixing them."""
    root = tmp_path_factory.mktemp("media")
    rows = []
    for i, fmt in enumerate(FORMATS):
        name = "still0.dat" if i == 0 else f"still{i}.{fmt.lower()}"
        write_image(str(root / name), 40 * i + 20, fmt)
        rows.append({"video_name": name, "Prompt": f"picture {i}", "Overall_MOS": 1.5 + i})
        write_clip(str(root / f"clip{i}.mp4"), 30 * i)
        rows.append({"video_name": f"clip{i}.mp4", "Prompt": f"clip {i}", "Overall_MOS": 2.0 + 0.5 * i})
    pd.DataFrame(rows).to_csv(root / "mixed.csv", index=False)
    info = {"mixed": {"file_name": "mixed.csv", "formatting": "iovqa"}}
    (root / "dataset_info.json").write_text(json.dumps(info))
    return str(root)


def test_the_medium_is_decided_by_the_file_not_its_name(media_dir, tmp_path):
    assert media_kind(os.path.join(media_dir, "still0.dat")) == IMAGE  # a PNG named .dat
    assert all(media_kind(os.path.join(media_dir, f"still{i}.{f.lower()}")) == IMAGE
               for i, f in enumerate(FORMATS) if i)
    os.symlink(os.path.join(media_dir, "clip0.mp4"), tmp_path / "clip.png")  # a video named .png
    assert media_kind(str(tmp_path / "clip.png")) == VIDEO
    cache = FrameCache(str(tmp_path / "cache"), FrameSpec(2))
    assert len(cache.get(str(tmp_path / "clip.png"))) == 2  # sampled as a video: two frames
    image = cache.get(os.path.join(media_dir, "still3.bmp"))  # one decoded RGB copy in the frame format
    assert len(image) == 1 and image[0].endswith("image.png")
    with Image.open(image[0]) as copy:
        assert copy.mode == "RGB" and copy.getpixel((0, 0)) == (140, 140, 140)
    assert cache.lookup(os.path.join(media_dir, "still3.bmp")) == image


def test_an_image_that_does_not_decode_is_named(media_dir, tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "whole.jpg", format="JPEG")
    data = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])  # a JPEG header, half a body
    (tmp_path / "text.jpg").write_text("not an image\n" * 20)
    cache = FrameCache(str(tmp_path / "cache"), FrameSpec(2))
    with pytest.raises(VideoError, match="image does not decode") as err:
        cache.get(str(tmp_path / "cut.jpg"))
    assert "cut.jpg" in str(err.value)
    with pytest.raises(VideoError, match="text.jpg: not an image PIL can read"):
        cache.get(str(tmp_path / "text.jpg"))
    # in an annotation file: file, row and field; under skip, reported with the reason
    rows = [{"video_name": "cut.jpg", "Prompt": "p", "Overall_MOS": 3}, {"video_name": "ok.png", "Prompt": "q",
                                                                          "Overall_MOS": 4}]
    write_image(str(tmp_path / "ok.png"), 90)
    pd.DataFrame(rows).to_csv(tmp_path / "a.csv", index=False)
    config = IOVQAArguments(frame_cache_dir=str(tmp_path / "cache"))
    with pytest.raises(AnnotationError) as err:
        load_annotations(str(tmp_path / "a.csv"), COLUMNS, config, str(tmp_path), progress=False)
    assert "a.csv: row 1 (line 2): field 'video_name' = 'cut.jpg'" in str(err.value)
    assert "image does not decode" in str(err.value)
    skip = IOVQAArguments(frame_cache_dir=str(tmp_path / "cache"), on_bad_row="skip")
    samples, issues, stats = load_annotations(str(tmp_path / "a.csv"), COLUMNS, skip, str(tmp_path), progress=False)
    assert [s.video for s in samples] == ["ok.png"] and [(i.row, i.field) for i in issues] == [(1, "video_name")]
    assert stats["skipped_rows"] == 1


def test_the_image_prompt_says_image():
    text = build_prompt("a red fox", media=IMAGE)
    assert text.startswith("<image>") and "<video>" not in text
    assert "AI-generated images" in text and "Text-image alignment" in text and "video" not in text.lower()
    assert "Output the word only" in build_prompt("x", "level", media=IMAGE)
    # a template of the user's is used as written for both media; the placeholder follows the medium
    assert build_prompt("x", template="Rate {video}: {prompt}", media=IMAGE) == "Rate <image>: x"
    from iovqa_plugin.data.dimensions import row_samples

    config = IOVQAArguments(dimensions="aesthetic,alignment", dimension_columns={"aesthetic": "a", "alignment": "b"})
    (_, first, _), (_, second, _) = row_samples("a fox", {"aesthetic": "30", "alignment": "40"}, config, IMAGE)
    assert first.startswith("<image>") and "AI-generated images" in first and "video" not in first.lower()
    assert "text-image alignment: how faithfully the image shows" in second
    own = IOVQAArguments(prompt_template="Score this video{video}: {prompt}",
                         image_prompt_template="Score this picture{video}: {prompt}")
    assert row_samples("p", {"overall": "30"}, own, IMAGE)[0][1] == "Score this picture<image>: p"
    assert row_samples("p", {"overall": "30"}, own)[0][1] == "Score this video<video>: p"


def test_one_file_mixes_images_and_videos(media_dir, tmp_path):
    config = IOVQAArguments(frame_cache_dir=str(tmp_path / "cache"))
    samples, issues, _ = load_annotations(os.path.join(media_dir, "mixed.csv"), COLUMNS, config, media_dir,
                                          progress=False)
    assert not issues and [s.media for s in samples] == [IMAGE, VIDEO] * 4
    assert [len(s.frames) for s in samples] == [1, 2] * 4
    assert [s.label for s in samples] == ["15", "20", "25", "25", "35", "30", "45", "35"]
    assert all(s.prompt.startswith("<image>") == (s.media == IMAGE) for s in samples)


def load_run(model, data_dir, tmp, **keys):
    """The training dataset and the collator LLaMA-Factory's run_sft builds for a recipe (plugin patches on)."""
    from llamafactory.train.sft import workflow

    from iovqa_plugin.patches import apply_all
    from iovqa_plugin.patches.preflight import training_args
    from iovqa_plugin.patches.run import run_scope

    apply_all()
    recipe = dict(stage="sft", do_train=True, model_name_or_path=model, template="qwen2_vl", finetuning_type="lora",
                  dataset_dir=data_dir, output_dir=str(tmp / "out"), cutoff_len=4096, overwrite_cache=True,
                  iovqa_frame_cache_dir=str(tmp / "cache"), **keys)
    with run_scope(None):
        model_args, data_args, train_args, _, _ = training_args(recipe)
        tokenizer_module = workflow.load_tokenizer(model_args)
        template = workflow.get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
        dataset = workflow.get_dataset(template, model_args, data_args, train_args, stage="sft", **tokenizer_module)
        collator = workflow.SFTDataCollatorWith4DAttentionMask(template=template, label_pad_token_id=-100,
                                                               **tokenizer_module)
        features = [dataset["train_dataset"][i] for i in range(len(dataset["train_dataset"]))]
        return features, collator([dict(f) for f in features]), tokenizer_module["tokenizer"]  # it pops media


def test_image_and_video_rows_in_one_batch_through_formatter_and_collator(tiny_model, media_dir, tmp_path):
    features, batch, tokenizer = load_run(tiny_model, media_dir, tmp_path, dataset="mixed", iovqa_num_frames=2)
    image_pad, video_pad = (tokenizer.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|video_pad|>"))
    for i, feature in enumerate(features):
        is_image = i % 2 == 0
        assert bool(feature["images"]) == is_image and bool(feature["videos"]) != is_image
        if is_image:
            assert len(feature["images"]) == 1 and feature["images"][0].endswith("image.png")  # the cached copy
        assert (image_pad in feature["input_ids"]) == is_image and (video_pad in feature["input_ids"]) != is_image
        assert ("images" in tokenizer.decode(feature["input_ids"])) == is_image
    # the mm plugin's image and video inputs side by side, one image grid per image row
    assert batch["image_grid_thw"].shape[0] == 4 and batch["video_grid_thw"].shape[0] == 4
    assert batch["pixel_values"].shape[0] == int(batch["image_grid_thw"].prod(dim=1).sum())
    kept = [tokenizer.decode(row[row != -100]) for row in batch["labels"]]
    assert kept == ["15", "20", "25", "25", "35", "30", "45", "35"]  # the digits only, images and videos alike


def test_the_head_reads_image_rows(tiny_model, media_dir, tmp_path):
    from iovqa_plugin.train.head import MOS_KEY

    features, batch, tokenizer = load_run(tiny_model, media_dir, tmp_path, dataset="mixed",
                                          iovqa_head="softmax_regression")
    label_id = tokenizer.convert_tokens_to_ids("<LABEL_1>")
    assert all(f["input_ids"].count(label_id) == 1 for f in features)
    assert batch[MOS_KEY].tolist() == pytest.approx([1.5, 2.0, 2.5, 2.5, 3.5, 3.0, 4.5, 3.5])


def test_level_words_on_image_rows(tiny_model, media_dir, tmp_path):
    from iovqa_plugin.train.head import MOS_KEY

    features, batch, tokenizer = load_run(tiny_model, media_dir, tmp_path, dataset="mixed", iovqa_label_format="level")
    assert "Output the word only" in tokenizer.decode(features[0]["input_ids"]) and features[0]["images"]
    kept = [tokenizer.decode(row[row != -100]) for row in batch["labels"]]
    assert kept == ["poor", "poor", "fair", "fair", "good", "fair", "excellent", "good"]  # round half up
    assert batch[MOS_KEY].tolist() == pytest.approx([1.5, 2.0, 2.5, 2.5, 3.5, 3.0, 4.5, 3.5])  # found by the image


@pytest.fixture(scope="module")
def scorer(tiny_model, media_dir, tmp_path_factory):
    from iovqa_plugin.score.scorer import Scorer
    from iovqa_plugin.score.settings import ScorerSettings

    tmp = tmp_path_factory.mktemp("score")
    recipe = base_recipe(tiny_model, media_dir, str(tmp / "none"), dataset="mixed",
                         iovqa_frame_cache_dir=str(tmp / "cache"))
    return Scorer(ScorerSettings.from_recipe(write_recipe(tmp / "r.yaml", recipe), adapter=""))


def test_the_scorer_reads_image_rows_as_trained(scorer, media_dir):
    rows = [(name, os.path.join(media_dir, name), "a picture") for name in ("still1.jpeg", "clip1.mp4", "still0.dat")]
    together = list(scorer.score_rows(rows, mode="both", batch_size=3))
    alone = [next(scorer.score_rows([row], mode="both", batch_size=1)) for row in rows]
    assert all(r.error is None for r in together)
    for a, b in zip(together, alone):  # an image beside a video is scored as alone
        assert a.expected_mos == pytest.approx(b.expected_mos, abs=1e-4) and 1.0 <= a.expected_mos <= 5.0
    feature = scorer.encode("a picture", scorer.cache.get(rows[0][1]), IMAGE)
    assert feature["images"] and not feature["videos"]
    assert scorer.loaded.tokenizer.decode(feature["input_ids"]).count("<|image_pad|>") > 0
    # the prompt is the training prompt of an image row
    assert scorer.prompts("a picture", IMAGE)[0][1] == build_prompt("a picture", media=IMAGE)
    probabilities, _ = scorer.distribution(scorer.batch([feature]))
    assert torch.isclose(probabilities.sum(), torch.tensor(1.0), atol=1e-4)
    # a row without a text prompt (a file without a prompt column) needs a prompt-free image template
    missing = next(scorer.score_rows([(rows[0][0], rows[0][1], None)], mode="expected"))
    assert missing.error and "no text prompt" in missing.error


PHOTO_TEMPLATE = "{video}Rate the technical quality of this photograph. Answer with {answer_format}."


def test_photographs_without_text_prompts_next_to_videos(tiny_model, media_dir, tmp_path):
    """`dataset: koniq_train,my_videos`: a KonIQ-style file (image, MOS, no prompt column) under a prompt-free
    image template, in one run with a video dataset; a video row without a prompt is still refused."""
    root = tmp_path / "data"
    root.mkdir()
    for name in os.listdir(media_dir):
        os.symlink(os.path.join(media_dir, name), root / name)
    pd.DataFrame({"image_name": ["still1.jpeg", "still2.webp"], "MOS": [2.25, 4.1]}).to_csv(root / "koniq.csv",
                                                                                           index=False)
    (root / "dataset_info.json").unlink()
    info = {"koniq_train": {"file_name": "koniq.csv", "formatting": "iovqa",
                            "columns": {"videos": "image_name", "response": "MOS"}},
            "my_videos": {"file_name": "mixed.csv", "formatting": "iovqa"}}
    (root / "dataset_info.json").write_text(json.dumps(info))
    features, batch, tokenizer = load_run(tiny_model, str(root), tmp_path, dataset="koniq_train,my_videos",
                                          iovqa_image_prompt_template=PHOTO_TEMPLATE)
    texts = [tokenizer.decode(f["input_ids"]) for f in features]
    assert "Rate the technical quality of this photograph. Answer with a single integer" in texts[0]
    assert "AI-generated videos" in texts[3]  # the video rows keep the video prompt and their text prompt
    assert [tokenizer.decode(row[row != -100]) for row in batch["labels"]][:3] == ["23", "41", "15"]
    # a video row in a file without a prompt column
    pd.DataFrame({"image_name": ["still1.jpeg", "clip1.mp4"], "MOS": [2.0, 3.0]}).to_csv(root / "bad.csv", index=False)
    config = IOVQAArguments(frame_cache_dir=str(tmp_path / "cache"), image_prompt_template=PHOTO_TEMPLATE)
    with pytest.raises(AnnotationError, match=r"bad.csv: row 2 \(line 3\): field 'Prompt' = 'null': no text prompt"):
        load_annotations(str(root / "bad.csv"), Columns("image_name", "Prompt", "MOS"), config, str(root),
                         progress=False)
    # without a prompt-free image template the prompt column stays required
    from iovqa_plugin.data.annotations import AnnotationFileError

    with pytest.raises(AnnotationFileError, match="missing column"):
        load_annotations(str(root / "bad.csv"), Columns("image_name", "Prompt", "MOS"),
                         IOVQAArguments(frame_cache_dir=str(tmp_path / "cache")), str(root), progress=False)
