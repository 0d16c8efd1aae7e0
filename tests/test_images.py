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


# --- comparisons of images: two images, or an image and a video ----------------------------------------------

def image_pairs_dir(media_dir, tmp_path):
    """A dataset_dir with a pairs file comparing two images, an image with a video and a video with an image (the
    two MOS and their raters' stds given), its media in ``media_dir``."""
    data = tmp_path / "pairs_data"
    data.mkdir()
    pd.DataFrame({"video_a": ["still1.jpeg", "still2.webp", "clip2.mp4"],
                  "video_b": ["still0.dat", "clip1.mp4", "still3.bmp"],
                  "mos_a": [4.0, 2.0, 3.5], "mos_b": [2.5, 3.0, 3.4], "std_a": [0.5, 0.3, 0.2],
                  "std_b": [0.4, 0.6, 0.1]}).to_csv(data / "pairs.csv", index=False)
    (data / "dataset_info.json").write_text(json.dumps({"image_pairs": {"file_name": "pairs.csv",
                                                                        "formatting": "iovqa_pairs"}}))
    return str(data)


def test_image_pairs_show_each_medium_as_what_it_is_a_first(tmp_path, media_dir):
    from iovqa_plugin.data.pair_samples import load_pair_file
    from iovqa_plugin.data.pairs import PairColumns

    path = os.path.join(image_pairs_dir(media_dir, tmp_path), "pairs.csv")
    samples, issues, _ = load_pair_file(path, PairColumns(), IOVQAArguments(frame_cache_dir=str(tmp_path / "c")),
                                        media_dir, progress=False)
    assert not issues and [s.kinds for s in samples] == [(IMAGE, IMAGE), (IMAGE, VIDEO), (VIDEO, IMAGE)]
    two_images, image_video, video_image = samples
    assert two_images.prompt.startswith("A: <image>\nB: <image>\n") and "AI-generated images" in two_images.prompt
    assert "temporal" not in two_images.prompt and "text-image alignment" in two_images.prompt
    assert image_video.prompt.startswith("A: <image>\nB: <video>\n") and "images and videos" in image_video.prompt
    assert video_image.prompt.startswith("A: <video>\nB: <image>\n")
    assert [s.answer for s in samples] == ["A", "B", "A"] and image_video.stds == (0.3, 0.6)
    images, videos = two_images.media_lists()  # LLaMA-Factory's lists, A's first
    assert not videos and images == [two_images.frames[0][0], two_images.frames[1][0]] and images[0] != images[1]
    images, videos = video_image.media_lists()
    assert images == video_image.frames[1] and videos == [video_image.frames[0]] and len(videos[0]) == 2


def test_image_pairs_through_formatter_and_collator_mask_the_choice_and_carry_soft_targets(tiny_model, media_dir,
                                                                                        tmp_path):
    from scipy.stats import norm

    from iovqa_plugin.train.soft_targets import CHOICE_KEY

    data = image_pairs_dir(media_dir, tmp_path)
    features, batch, tokenizer = load_run(tiny_model, data, tmp_path, dataset="image_pairs", media_dir=media_dir,
                                          iovqa_num_frames=2, iovqa_pair_soft_targets=True)
    image_pad, video_pad = (tokenizer.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|video_pad|>"))
    kinds = []
    for feature in features:
        ids = feature["input_ids"]
        firsts = sorted((ids.index(pad), name) for pad, name in ((image_pad, IMAGE), (video_pad, VIDEO)) if pad in ids)
        kinds.append([name for _, name in firsts])
        assert len(feature["images"] or []) + len(feature["videos"] or []) == 2
    assert kinds == [[IMAGE], [IMAGE, VIDEO], [VIDEO, IMAGE]]  # in prompt order: A's tokens before B's
    two = tokenizer.decode(features[0]["input_ids"])
    assert two.index("A: <|vision_start|><|image_pad|>") < two.index("B: <|vision_start|><|image_pad|>")
    assert batch["image_grid_thw"].shape[0] == 4 and batch["video_grid_thw"].shape[0] == 2  # 2 + 1 + 1, 1 + 1
    assert [tokenizer.decode(row[row != -100]) for row in batch["labels"]] == ["A", "B", "A"]  # the choice only
    by_hand = [norm.cdf((a - b) / np.hypot(sa, sb)) for a, b, sa, sb in
               ((4.0, 2.5, 0.5, 0.4), (2.0, 3.0, 0.3, 0.6), (3.5, 3.4, 0.2, 0.1))]
    assert batch[CHOICE_KEY][:, 0].tolist() == pytest.approx(by_hand, abs=1e-6)
    assert (batch[CHOICE_KEY].sum(1) - 1).abs().max() < 1e-6


def test_scoring_image_pairs_gives_p_a_from_the_choice_tokens(scorer, media_dir, tmp_path):
    from iovqa_plugin.data.pair_samples import load_pair_file
    from iovqa_plugin.data.pairs import PairColumns
    from iovqa_plugin.score.comparisons import ComparisonScorer

    data = image_pairs_dir(media_dir, tmp_path)
    samples, _, _ = load_pair_file(os.path.join(data, "pairs.csv"), PairColumns(), scorer.iovqa_args, media_dir,
                                   progress=False)
    comparisons = ComparisonScorer(scorer)
    results = list(comparisons.score(samples, batch_size=3))
    assert all(r.error is None for r in results)
    for r in results:
        assert sum(r.probabilities) == pytest.approx(1.0, abs=1e-5) and r.choice in ("A", "B")
    # P(A) by hand: the softmax over "A" and "B" of the next-token logits after the prompt, each pair alone
    loaded = scorer.loaded
    ids = loaded.tokenizer.convert_tokens_to_ids(["A", "B"])
    for sample, result in zip(samples, results):
        with torch.no_grad():
            logits = loaded.model(**loaded.batch([comparisons.encode(sample)])).logits[0, -1].float()
        assert torch.softmax(logits[ids], dim=-1)[0].item() == pytest.approx(result.probabilities[0], abs=1e-4)


@pytest.mark.slow
def test_iovqa_score_on_image_pairs_writes_p_a_p_b_and_the_choice(scorer, tiny_model, media_dir, tmp_path):
    from iovqa_plugin.cli import main
    from iovqa_plugin.data.pair_samples import load_pair_file
    from iovqa_plugin.data.pairs import PairColumns
    from iovqa_plugin.score.comparisons import ComparisonScorer

    data = image_pairs_dir(media_dir, tmp_path)
    samples, _, _ = load_pair_file(os.path.join(data, "pairs.csv"), PairColumns(), scorer.iovqa_args, media_dir,
                                   progress=False)
    results = list(ComparisonScorer(scorer).score(samples, batch_size=3))
    # iovqa score on the pairs file (by path, with its layout): p_a, p_b, choice per pair, as the scorer gives them
    recipe = write_recipe(tmp_path / "r.yaml", base_recipe(tiny_model, data, str(tmp_path / "o"), media_dir=media_dir,
                                                           dataset="image_pairs"))
    out = tmp_path / "pred.csv"
    assert main(["score", "--recipe", recipe, "--adapter", "", "--data", os.path.join(data, "pairs.csv"),
                 "--layout", "iovqa_pairs", "--out", str(out)]) == 0
    written = pd.read_csv(out)
    assert written["video_a"].tolist() == ["still1.jpeg", "still2.webp", "clip2.mp4"]
    assert written["p_a"].tolist() == pytest.approx([r.probabilities[0] for r in results], abs=1e-4)
    assert ((written["p_a"] + written["p_b"] - 1).abs() < 1e-5).all() and written["error"].isna().all()
    assert written["choice"].tolist() == [r.choice for r in results]


@pytest.mark.slow
def test_a_run_on_image_pairs_with_soft_choice_targets_trains_the_choice_against_them(tiny_model, media_dir, tmp_path):
    from conftest import train_in_process

    data = image_pairs_dir(media_dir, tmp_path)
    recipe = base_recipe(tiny_model, data, str(tmp_path / "run"), dataset="image_pairs", media_dir=media_dir,
                         max_steps=1, save_steps=1, per_device_train_batch_size=3, iovqa_pair_soft_targets=True,
                         iovqa_frame_cache_dir=str(tmp_path / "cache"))
    log = train_in_process(recipe)
    assert "soft choice targets P(A) [" in log, log[-3000:]
    shown = log.split("soft choice targets P(A) [")[1].split("]")[0]
    assert sorted(round(float(p), 4) for p in shown.split(", ")) == [0.068, 0.6726, 0.9904]  # Φ by hand, any order
    with open(tmp_path / "run" / "trainer_state.json", encoding="utf-8") as handle:
        losses = [e["loss"] for e in json.load(handle)["log_history"] if "loss" in e]
    assert losses and all(np.isfinite(losses))
