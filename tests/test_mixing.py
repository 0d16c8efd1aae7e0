"""Question/answer datasets mixed into a scoring run (VQA²-style): stock labels for the questions, the digit mask
for the IOVQA samples, in one batch; yes/no answers on their word only."""

import json
import os

import pytest
import torch

from iovqa_plugin.train.answer_words import AnswerWords
from iovqa_plugin.data.labels import IGNORE_INDEX

from test_images import load_run, media_dir  # noqa: F401  (the module's media fixture)

QUESTIONS = [
    {"instruction": "<video>What happens in the video?", "output": "A grey square brightens over eight frames.",
     "videos": ["clip0.mp4"]},
    {"instruction": "<video>Is the motion pattern reasonable?", "output": "Yes", "videos": ["clip1.mp4"]},
    {"instruction": "<image>Is the picture blurred?", "output": "no.", "images": ["still1.jpeg"]},
    {"instruction": "<image>Describe the picture's colours.", "output": "Uniform grey, 37 percent bright.",
     "images": ["still2.webp"]},
]


@pytest.fixture(scope="module")
def mixed_dir(media_dir, tmp_path_factory):  # noqa: F811
    """The image+video IOVQA dataset next to an alpaca question/answer dataset about the same media."""
    root = tmp_path_factory.mktemp("mixed")
    for name in os.listdir(media_dir):
        os.symlink(os.path.join(media_dir, name), root / name)
    (root / "questions.json").write_text(json.dumps(QUESTIONS))
    info = {"mixed": {"file_name": "mixed.csv", "formatting": "iovqa"},
            "questions": {"file_name": "questions.json",
                          "columns": {"prompt": "instruction", "response": "output", "videos": "videos",
                                      "images": "images"}}}
    (root / "dataset_info.json").unlink()
    (root / "dataset_info.json").write_text(json.dumps(info))
    return str(root)


def stock_labels(tokenizer, feature):
    return tokenizer.decode([t for t in feature["labels"] if t != IGNORE_INDEX])


def test_questions_keep_their_labels_and_scores_are_masked_in_one_batch(tiny_model, mixed_dir, tmp_path):
    features, batch, tokenizer = load_run(tiny_model, mixed_dir, tmp_path, dataset="mixed,questions")
    assert len(features) == 12 and batch["labels"].shape[0] == 12  # one batch: 8 scored rows, 4 questions
    kept = [tokenizer.decode(row[row != IGNORE_INDEX]) for row in batch["labels"]]
    assert kept[:8] == ["15", "20", "25", "25", "35", "30", "45", "35"]
    for feature, row in zip(features[8:], batch["labels"][8:]):  # LLaMA-Factory's labels, untouched
        assert row[row != IGNORE_INDEX].tolist() == [t for t in feature["labels"] if t != IGNORE_INDEX]
    assert [stock_labels(tokenizer, f) for f in features[8:]] == [q["output"] + "<|im_end|>\n" for q in QUESTIONS]
    # the question's video is sampled by the plugin (frames, as the scored ones) but never one of theirs
    frames = features[8]["videos"][0]
    assert len(frames) == 2 and "mixed_datasets" in frames[0]
    scored_frames = {f["videos"][0][0] for f in features[:8] if f["videos"]}
    assert not scored_frames & {f["videos"][0][0] for f in features[8:] if f["videos"]}
    assert batch["video_grid_thw"].shape[0] == 6 and batch["image_grid_thw"].shape[0] == 6


def test_yes_no_answers_train_on_the_word(tiny_model, mixed_dir, tmp_path):
    features, batch, tokenizer = load_run(tiny_model, mixed_dir, tmp_path, dataset="mixed,questions",
                                          iovqa_yes_no_mask=True)
    kept = [tokenizer.decode(row[row != IGNORE_INDEX]) for row in batch["labels"]]
    assert kept[:8] == ["15", "20", "25", "25", "35", "30", "45", "35"]
    assert kept[8:] == [QUESTIONS[0]["output"] + "<|im_end|>\n", "Yes", "no", QUESTIONS[3]["output"] + "<|im_end|>\n"]


def test_a_head_run_refuses_question_rows(tiny_model, mixed_dir, tmp_path):
    with pytest.raises(ValueError, match=r"batch row\(s\) \[8, 9, 10, 11\] are samples of a dataset mixed into"):
        load_run(tiny_model, mixed_dir, tmp_path, dataset="mixed,questions", iovqa_head="softmax_regression")


def test_answer_words_of_the_qwen_template(qwen_tokenizer):
    from llamafactory.data import get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments

    from iovqa_plugin.patches.score_position import render_answer

    template = get_template_and_fix_tokenizer(qwen_tokenizer, DataArguments(template="qwen2_vl"))

    def render(answer):
        return render_answer(template, qwen_tokenizer, answer)[1]

    words = AnswerWords.from_template(render)
    answers = ["yes", "No.", "YES", "Yes, the motion is smooth.", "37", "nope"]
    rows = [render(a) for a in answers]
    width = max(len(r) for r in rows) + 3
    labels = torch.tensor([[IGNORE_INDEX] * 3 + r + [IGNORE_INDEX] * (width - 3 - len(r)) for r in rows])
    masked, found = words.mask(labels)
    assert found == [True, True, True, False, False, False]
    assert [qwen_tokenizer.decode(row[row != IGNORE_INDEX]) for row in masked[:3]] == ["yes", "No", "YES"]
    assert torch.equal(masked[3:], labels[3:])  # not a yes/no answer: untouched


def test_question_datasets_are_refused_as_evaluation_data(mixed_dir, clean_plugin_state):
    import llamafactory.train.tuner as tuner

    import iovqa_plugin
    from iovqa_plugin.config import PluginConfigError

    iovqa_plugin.apply()
    recipe = {"stage": "sft", "template": "qwen2_vl", "dataset_dir": mixed_dir, "dataset": "mixed,questions",
              "eval_dataset": "mixed,questions", "iovqa_label_mask": "digits"}
    with pytest.raises(PluginConfigError, match=r"eval_dataset \['questions'\] is not formatting 'iovqa'"):
        tuner.read_args(recipe)
    assert tuner.read_args({**recipe, "eval_dataset": "mixed"})["dataset"] == "mixed,questions"
