import pytest

from siftlm.models.template import IGNORE, EncodeError, encode, encode_pair, encode_response_only, response_headers
from tests.conftest import byte_tokenizer

MSGS = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]


def _resp(tok, enc):
    return tok.decode([t for t in enc.labels if t != IGNORE])


def _prompt(tok, enc):
    return tok.decode([t for t, lab in zip(enc.input_ids, enc.labels, strict=True) if lab == IGNORE])


def test_mask_covers_exactly_the_response_tokens(tokenizer):
    enc = encode(tokenizer, "a", MSGS)
    # by hand: <s> + "<|user|>\nhi</s>\n<|assistant|>\n" is prompt, "yo</s>" is response (byte tokens), and the
    # template's "\n" after the end-of-turn marker is not response: the model never generates it
    prompt_text = "<|user|>\nhi</s>\n<|assistant|>\n"
    resp_text = "yo</s>"
    assert enc.input_ids[0] == tokenizer.bos_token_id
    expected_prompt = [tokenizer.bos_token_id] + tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    expected_resp = tokenizer(resp_text, add_special_tokens=False)["input_ids"]
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    assert enc.input_ids == expected_prompt + expected_resp + newline
    assert enc.labels == [IGNORE] * len(expected_prompt) + expected_resp + [IGNORE]
    assert enc.n_prompt == len(expected_prompt) + 1 and enc.n_response == len(expected_resp)
    assert _resp(tokenizer, enc) == resp_text


def test_every_assistant_turn_is_a_response(tokenizer):
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
            {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]
    enc = encode(tokenizer, "m", msgs)
    assert _resp(tokenizer, enc) == "a1</s>a2</s>"
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


def test_response_only_scores_the_same_tokens_after_the_response_header(tokenizer):
    enc = encode(tokenizer, "a", MSGS)
    unc = encode_response_only(tokenizer, "a", MSGS)
    assert [t for t in unc.labels if t != IGNORE] == [t for t in enc.labels if t != IGNORE]
    header = tokenizer("<|assistant|>\n", add_special_tokens=False)["input_ids"]        # the generation prompt
    assert unc.input_ids == [tokenizer.bos_token_id] + header + tokenizer("yo</s>", add_special_tokens=False)["input_ids"]
    assert unc.n_prompt == 1 + len(header)
    alpaca = encode_response_only(byte_tokenizer(chat_template=None), "a", MSGS)       # Cherry LLM's "### Response:"
    assert byte_tokenizer(None).decode(alpaca.input_ids) == "<s>### Response:\nyo</s>"


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


def _labelled_runs(tok, enc) -> list[str]:
    runs, cur = [], []
    for t, lab in zip(enc.input_ids, enc.labels, strict=True):          # maximal runs of labelled tokens
        if lab != IGNORE:
            cur.append(t)
        elif cur:
            runs, cur = runs + [cur], []
    return [tok.decode(r) for r in runs + ([cur] if cur else [])]


def test_multi_turn_with_a_real_chat_template_labels_every_assistant_turn_and_nothing_else():
    tok = byte_tokenizer(chat_template=CHATML)
    msgs = [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
            {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]
    enc = encode(tok, "m", msgs)
    assert _labelled_runs(tok, enc) == ["a1<|im_end|>", "a2<|im_end|>"]
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


LLAMA3 = ("{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
          "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
          "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")      # Meta-Llama-3-8B-Instruct's
GEMMA = ("{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
         "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
         "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
         "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
         "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
         "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}")            # gemma-2b-it's


@pytest.mark.parametrize("template,end,header", [
    (CHATML, "<|im_end|>", "<|im_start|>assistant\n"),
    (LLAMA3, "<|eot_id|>", "<|start_header_id|>assistant<|end_header_id|>\n\n"),
    (GEMMA, "<end_of_turn>", "<start_of_turn>model\n"),
], ids=["chatml", "llama3", "gemma"])
def test_real_templates_label_exactly_each_response_and_its_end_of_turn_marker(template, end, header):
    tok = byte_tokenizer(chat_template=template)
    msgs = [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
            {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2 b"}]
    enc = encode(tok, "m", msgs)
    assert _labelled_runs(tok, enc) == [f"a1{end}", f"a2 b{end}"]
    assert tok.decode(enc.input_ids).count("<s>") == 1                     # one BOS, whoever renders it
    assert response_headers(tok, msgs) == [header, header]
    unc = encode_response_only(tok, "m", msgs)
    assert _labelled_runs(tok, unc) == [f"a1{end}", f"a2 b{end}"]
    assert tok.decode(unc.input_ids) == f"<s>{header}a1{end}{header}a2 b{end}"
