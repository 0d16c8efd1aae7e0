"""The digit-only label mask, with Qwen's real vocabulary and a digit-grouping tokenizer."""

import random

import pytest
import torch

from iovqa_plugin.data.labels import IGNORE_INDEX
from iovqa_plugin.train.mask import LabelMaskError, mask_labels, score_mask, token_tables


def labels_for(tokenizer, responses, prompt_len=5):
    """Rows shaped like LLaMA-Factory's: ignored prompt, response + <|im_end|> + newline, right padding."""
    rows = []
    for response in responses:
        ids = tokenizer.encode(response, add_special_tokens=False) + [tokenizer.convert_tokens_to_ids("<|im_end|>")]
        rows.append([IGNORE_INDEX] * prompt_len + ids + tokenizer.encode("\n", add_special_tokens=False))
    width = max(map(len, rows)) + 2
    return torch.tensor([row + [IGNORE_INDEX] * (width - len(row)) for row in rows])


def kept_text(tokenizer, labels):
    return [tokenizer.decode(row[row != IGNORE_INDEX]) for row in labels]


def test_qwen_splits_digits_and_the_mask_keeps_both(qwen_tokenizer):
    assert qwen_tokenizer.tokenize("37") == ["3", "7"]
    is_number, digits = token_tables(qwen_tokenizer)
    labels = labels_for(qwen_tokenizer, ["37", "10", "50", "42"])
    masked = mask_labels(labels, is_number, digits)
    assert kept_text(qwen_tokenizer, masked) == ["37", "10", "50", "42"]
    assert ((masked != IGNORE_INDEX).sum(dim=1) == 2).all()  # two digit tokens, no <|im_end|>, no newline
    im_end = qwen_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert (labels == im_end).any() and not (masked == im_end).any()


def test_grouping_tokenizer_keeps_the_integer_token(grouping_tokenizer):
    assert grouping_tokenizer.tokenize("37") == ["37"]
    assert grouping_tokenizer.tokenize("1234") == ["123", "4"]
    is_number, digits = token_tables(grouping_tokenizer)
    labels = labels_for(grouping_tokenizer, ["37", "10", "50"])
    masked = mask_labels(labels, is_number, digits)
    assert kept_text(grouping_tokenizer, masked) == ["37", "10", "50"]
    assert ((masked != IGNORE_INDEX).sum(dim=1) == 1).all()
    label_token = grouping_tokenizer.convert_tokens_to_ids("<LABEL_1>")
    assert not is_number[label_token]  # special tokens with digits in their name are not numbers


@pytest.mark.parametrize("fixture", ["qwen_tokenizer", "grouping_tokenizer"])
def test_decimal_labels_keep_the_whole_number(request, fixture):
    tokenizer = request.getfixturevalue(fixture)
    is_number, digits = token_tables(tokenizer, "decimal")
    masked = mask_labels(labels_for(tokenizer, ["3.7", "1.0", "5.0"]), is_number, digits)
    assert kept_text(tokenizer, masked) == ["3.7", "1.0", "5.0"]


def test_only_the_first_number_of_a_response_is_kept(qwen_tokenizer):
    is_number, digits = token_tables(qwen_tokenizer)
    masked = mask_labels(labels_for(qwen_tokenizer, ["37 because 12 frames"]), is_number, digits)
    assert kept_text(qwen_tokenizer, masked) == ["37"]


def test_tables_are_fast_and_match_decoding(qwen_tokenizer):
    import time

    from iovqa_plugin.train.mask import _TABLES

    _TABLES.clear()
    start = time.perf_counter()
    is_number, digits = token_tables(qwen_tokenizer)
    assert time.perf_counter() - start < 30  # generous: it must not decode 150k tokens one by one
    sample = list(range(0, len(qwen_tokenizer), 97)) + [15, 24, 151645]
    for token_id in sample:
        text = qwen_tokenizer.decode([token_id])
        expected = sum(c.isdigit() and c.isascii() for c in text)
        if token_id in qwen_tokenizer.all_special_ids:
            expected = 0
        assert digits[token_id] == expected, (token_id, text)


def test_a_response_without_score_is_an_error(qwen_tokenizer):
    is_number, digits = token_tables(qwen_tokenizer)
    labels = labels_for(qwen_tokenizer, ["37", "good", "21"])
    with pytest.raises(LabelMaskError, match=r"batch row\(s\) \[1\].*\[0\] score digit"):
        mask_labels(labels, is_number, digits)


def test_a_score_cut_by_cutoff_len_is_an_error(qwen_tokenizer):
    is_number, digits = token_tables(qwen_tokenizer)
    three = qwen_tokenizer.convert_tokens_to_ids("3")
    cut = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, three]])  # "37<|im_end|>\n" truncated after "3"
    with pytest.raises(LabelMaskError, match="cutoff_len"):
        mask_labels(cut, is_number, digits)
    nothing = torch.full((1, 6), IGNORE_INDEX)  # the whole response cut off
    with pytest.raises(LabelMaskError):
        mask_labels(nothing, is_number, digits)


def reference_mask(row, is_number):
    """Plain-Python statement of the rule: the first run of number tokens among labelled positions."""
    keep, started = [False] * len(row), False
    for i, token in enumerate(row):
        if token == IGNORE_INDEX:
            continue
        if is_number[token]:
            keep[i], started = True, True
        elif started:
            break
    return keep


def test_vectorized_mask_matches_the_reference(qwen_tokenizer):
    is_number, _ = token_tables(qwen_tokenizer)
    number_ids = is_number.nonzero().flatten().tolist()
    as_list, vocab_size = is_number.tolist(), is_number.numel()
    rng = random.Random(0)
    for _ in range(200):
        rows = []
        for _ in range(4):
            row = []
            for _ in range(rng.randint(1, 30)):
                kind = rng.random()
                if kind < 0.3:
                    row.append(IGNORE_INDEX)
                elif kind < 0.6:
                    row.append(rng.choice(number_ids))
                else:
                    row.append(rng.randrange(vocab_size))
            rows.append(row + [IGNORE_INDEX] * (30 - len(row)))
        labels = torch.tensor(rows)
        expected = torch.tensor([reference_mask(r, as_list) for r in rows])
        assert torch.equal(score_mask(labels, is_number), expected)
