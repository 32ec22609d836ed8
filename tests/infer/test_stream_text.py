"""``foxacp generate`` streams the tokenizer's decoding of the whole output, word boundaries included."""

import io

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

import foxacp.infer
from foxacp.cli import stream_generate
from foxacp.data.tokenizer import build_tokenizer


def _fake_generate(new_ids):
    """A stand-in for foxacp.infer.generate that emits ``new_ids`` through the callback (as decode_n_tokens)."""

    def generate(model, prompts, *, eos_token_id=None, callback=None, **kw):
        (p,) = prompts
        for t in new_ids:
            callback(torch.tensor([t]))
        return [torch.cat([torch.as_tensor(p), torch.tensor(new_ids)])]

    return generate


def test_stream_of_a_metaspace_tokenizer_keeps_the_space_before_the_first_new_word(tmp_path, monkeypatch):
    # A sentencepiece-style tokenizer.json (Metaspace), as most hub tokenizers with "</s>" are: "hf:PATH" loads it.
    vocab = {"<unk>": 0, "</s>": 1, "▁Hello": 2, "▁world": 3, "▁": 4}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    tokenizer = build_tokenizer(f"hf:{path}")

    prompt = "Hello"
    prompt_ids = tokenizer.encode(prompt)
    assert prompt_ids == [2]
    new = [3]  # "▁world": the model continues with " world"
    monkeypatch.setattr(foxacp.infer, "generate", _fake_generate(new))
    out = io.StringIO()
    stream_generate(None, tokenizer, prompt, out=out, max_new_tokens=1)
    full = tokenizer.decode(prompt_ids + new)
    assert full == "Hello world"
    assert out.getvalue() == full + "\n"  # not "Helloworld": sentencepiece drops a text's leading space
