import pytest

from siftlm.models.template import IGNORE, EncodeError, encode, encode_pair, encode_response_only
from tests.conftest import byte_tokenizer

MSGS = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]


def _resp(tok, enc):
    return tok.decode([t for t in enc.labels if t != IGNORE])


def _prompt(tok, enc):
    return tok.decode([t for t, lab in zip(enc.input_ids, enc.labels, strict=True) if lab == IGNORE])


def test_mask_covers_exactly_the_response_tokens(tokenizer):
    enc = encode(tokenizer, "a", MSGS)
    # by hand: <s> + "<|user|>\nhi</s>\n<|assistant|>\n" is prompt, "yo</s>\n" is response (byte tokens)
    prompt_text = "<|user|>\nhi</s>\n<|assistant|>\n"
    resp_text = "yo</s>\n"
    assert enc.input_ids[0] == tokenizer.bos_token_id
    expected_prompt = [tokenizer.bos_token_id] + tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    expected_resp = tokenizer(resp_text, add_special_tokens=False)["input_ids"]
    assert enc.input_ids == expected_prompt + expected_resp
    assert enc.labels == [IGNORE] * len(expected_prompt) + expected_resp
    assert enc.n_prompt == len(expected_prompt) and enc.n_response == len(expected_resp)
    assert _resp(tokenizer, enc) == resp_text


def test_every_assistant_turn_is_a_response(tokenizer):
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
            {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]
    enc = encode(tokenizer, "m", msgs)
    assert _resp(tokenizer, enc) == "a1</s>\na2</s>\n"
    assert "q2" in _prompt(tokenizer, enc) and "a1" not in _prompt(tokenizer, enc)


def test_alpaca_template_without_chat_template():
    tok = byte_tokenizer(chat_template=None)
    msgs = [{"role": "user", "content": "Add 2+2"}, {"role": "assistant", "content": "4"}]
    enc = encode(tok, "x", msgs)
    assert _resp(tok, enc) == "4</s>"
    assert _prompt(tok, enc).endswith("### Instruction:\nAdd 2+2\n\n### Response:\n")
    assert _prompt(tok, enc).startswith("<s>Below is an instruction")


def test_max_length_cuts_prompt_from_left(tokenizer):
    msgs = [{"role": "user", "content": "x" * 50}, {"role": "assistant", "content": "ok"}]
    full = encode(tokenizer, "a", msgs)
    enc = encode(tokenizer, "a", msgs, max_length=len(full.input_ids) - 10)
    assert enc.truncated == 10
    # BOS stays; the 10 oldest prompt tokens after it go
    assert enc.input_ids == full.input_ids[:1] + full.input_ids[11:] and enc.input_ids[0] == tokenizer.bos_token_id
    assert enc.labels == full.labels[:1] + full.labels[11:]
    assert enc.n_response == full.n_response


def test_response_that_does_not_fit_is_rejected(tokenizer):
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "y" * 100}]
    with pytest.raises(EncodeError, match="does not fit in max_length=50"):
        encode(tokenizer, "a", msgs, max_length=50)


def test_response_only_scores_the_same_tokens(tokenizer):
    enc = encode(tokenizer, "a", MSGS)
    unc = encode_response_only(tokenizer, "a", MSGS)
    assert [t for t in unc.labels if t != IGNORE] == [t for t in enc.labels if t != IGNORE]
    assert unc.input_ids[0] == tokenizer.bos_token_id and unc.n_prompt == 1


def test_chat_template_error_is_a_reject_not_a_crash():
    strict = ("{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
              "{{ raise_exception('Conversation roles must alternate') }}{% endif %}{{ m['content'] }}{% endfor %}")
    tok = byte_tokenizer(chat_template=strict)
    msgs = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}]
    with pytest.raises(EncodeError, match="roles must alternate"):
        encode(tok, "x", msgs)


def test_encode_pair_shares_the_prompt_and_labels_only_the_response(tokenizer):
    msgs = [{"role": "user", "content": "hello there"}]
    p = encode_pair(tokenizer, "x", msgs, "yes indeed", "no")
    c, r = p.sequences()
    assert c.input_ids[:len(p.prompt_ids)] == r.input_ids[:len(p.prompt_ids)] == p.prompt_ids
    assert tokenizer.decode(p.chosen_ids).startswith("yes indeed")
    assert c.labels == [IGNORE] * len(p.prompt_ids) + p.chosen_ids and r.n_response == len(p.rejected_ids)
    long = encode_pair(tokenizer, "x", msgs, "yes indeed", "no", max_length=len(p.prompt_ids) + len(p.chosen_ids) - 5)
    assert long.truncated == 5 and long.prompt_ids[0] == tokenizer.bos_token_id
    assert long.prompt_ids[1:] == p.prompt_ids[6:]            # both responses keep one shared, cut prompt
    with pytest.raises(EncodeError, match="does not fit"):
        encode_pair(tokenizer, "x", msgs, "yes indeed", "no", max_length=len(p.chosen_ids))


CHATML = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
          "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
          "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")   # SmolLM2-135M-Instruct's


def test_multi_turn_with_a_real_chat_template_labels_every_assistant_turn_and_nothing_else():
    tok = byte_tokenizer(chat_template=CHATML)
    msgs = [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
            {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]
    enc = encode(tok, "m", msgs)
    runs, cur = [], []
    for t, lab in zip(enc.input_ids, enc.labels, strict=True):          # maximal runs of labelled tokens
        if lab != IGNORE:
            cur.append(t)
        elif cur:
            runs, cur = runs + [cur], []
    runs += [cur] if cur else []
    assert [tok.decode(r) for r in runs] == ["a1<|im_end|>\n", "a2<|im_end|>\n"]
    prompt = _prompt(tok, enc)
    assert "q1" in prompt and "q2" in prompt and "You are a helpful AI assistant" in prompt
    assert "a1" not in prompt and "a2" not in prompt


def test_a_template_that_renders_earlier_turns_differently_is_a_reject():
    """Templates that rewrite earlier assistant turns once a later one exists (e.g. dropping reasoning from
    history) are not prefix-consistent: the response spans cannot be found by rendering prefixes."""
    rewriting = ("{% for m in messages %}{% if m['role'] == 'assistant' and not loop.last %}[old]"
                 "{% else %}{{ m['content'] }}{% endif %}|{% endfor %}")
    tok = byte_tokenizer(chat_template=rewriting)
    msgs = [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
            {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]
    with pytest.raises(EncodeError, match="not render conversations prefix-consistently"):
        encode(tok, "x", msgs)
    assert _resp(tok, encode(tok, "y", msgs[:2])) == "a1|"        # one turn is fine
