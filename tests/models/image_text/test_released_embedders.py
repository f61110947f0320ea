"""MLLM embedders (#19 part 3): UniME (LLaVA-NeXT), LCO-Emb (Qwen2.5-Omni thinker) and the
generator->embedder paper's hierarchical prompt (Qwen2-VL), on tiny random models of those families
built offline. Each method's prompt is checked against the authors' format written out by hand, and
its embedding against the model run on that prompt alone (last token, L2-normalised)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cl_bench.models.image_text.vlm_prompts import IMAGE, item_pieces, render_plain, with_suffixes
from tests.models.weights.test_released_methods import obtain
from tests.vlm_helpers import save_tiny_llava_next, save_tiny_omni_thinker, save_tiny_qwen2_vl

SYSTEM = "Given an image, summarize the provided image in one word. Given only text, describe the text in one word."


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_qwen2_vl(tmp_path_factory.mktemp("vlm") / "Qwen2-VL-2B-Instruct")


@pytest.fixture(scope="module")
def omni_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_omni_thinker(tmp_path_factory.mktemp("vlm") / "LCO-Embedding-Omni-7B")


@pytest.fixture(scope="module")
def llava_next_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_llava_next(tmp_path_factory.mktemp("vlm") / "UniME-LLaVA-1.6-7B")


def images(n: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, 40, 32, generator=g) for _ in range(n)]


def u8(image: torch.Tensor) -> np.ndarray:
    return (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def alone(model: Any, prompt: str, image: torch.Tensor | None) -> torch.Tensor:
    """The independent reference: the processor and model on one prompt, its last token's final
    hidden state, L2-normalised (no batching, no padding)."""
    kwargs: dict[str, Any] = {"text": [prompt], "return_tensors": "pt"}
    if image is not None:
        kwargs["images"] = [u8(image)]
    enc = model.processor(**kwargs)
    with torch.no_grad():
        hidden = model.hf(**enc, output_hidden_states=True).hidden_states[-1][0, -1]
    return F.normalize(hidden.float(), dim=-1)


# ------------------------------------------------------------------------------------------ prompt pieces


def test_item_pieces_and_suffixes_by_hand() -> None:
    ph = "<|image_1|>"
    assert item_pieces(f"{ph}\nRepresent the given image.", True, ph) == ([IMAGE, "\nRepresent the given image."], "both")
    assert item_pieces(ph, True, ph) == ([IMAGE], "image")
    assert item_pieces("a red star", True, ph) == ([IMAGE, "\na red star"], "both")
    assert item_pieces(f"{ph} a dog {ph}", False, ph) == (["a dog"], "text")
    assert item_pieces(f"Find {ph} here {ph}", True, ph) == (["Find ", IMAGE, " here "], "both")
    lco = {"text": "\nSummarize the above text in one word:", "image": "\nSummarize the above image in one word:"}
    assert with_suffixes([IMAGE], "image", True, None, lco, False) == [IMAGE, "\nSummarize the above image in one word:"]
    assert with_suffixes(["a dog"], "text", False, "query", lco, False) == ["a dog\nSummarize the above text in one word:"]
    assert with_suffixes(["q"], "text", False, "query", {}, True) == ["q\nRepresent the given text in one word."]
    assert with_suffixes([IMAGE, "\nq"], "both", True, "query", {}, True) == [IMAGE, "\nq\nRepresent the given text/image in one word."]
    assert with_suffixes([IMAGE], "image", True, "candidate", {}, True) == [IMAGE]
    assert render_plain([IMAGE, "\nhi"], "<image>", "[INST] {text} [/INST]", None) == "[INST] <image>\nhi [/INST]"
    assert render_plain(["x {text}"], "<i>", "<s>{system}|{text}", "S") == "<s>S|x {text}"  # item text is not a template


# ------------------------------------------------------------------------------------------ hierarchical


def gen2embed_prompt(text: str) -> str:
    """src/model_utils.py::Qwen2_VL_process_fn's string with the system prompt."""
    return f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"


def test_hierarchical_prompt_is_gen2embeds_format(qwen_dir: Path, tmp_path: Path) -> None:
    got = obtain("hierarchical-qwen2-vl-2b", qwen_dir, tmp_path)
    model = got.model
    assert got.source == "checkpoint"
    q = "<|image_1|>\nRepresent the given image with the following question: what is red"
    want_q = gen2embed_prompt("<|image_pad|>\nRepresent the given image with the following question: what is red"
                              "\nRepresent the given text/image in one word.")
    assert model.prompt(q, True, "query") == want_q
    assert model.prompt("a red star", False, "candidate") == gen2embed_prompt("a red star")
    assert model.prompt("a red star", False, "query") == gen2embed_prompt("a red star\nRepresent the given text in one word.")
    # zero-shot / retrieval: captions are queries (their SugarCrepe prompt), images candidates
    assert model.prompt("Find me an image that matches the given caption: a red star", False, "query") == \
        gen2embed_prompt("Find me an image that matches the given caption: a red star\nRepresent the given text in one word.")
    imgs = images(2)
    with torch.no_grad():
        batch = model.embed_pairs([q, "a red star", None], [imgs[0], None, imgs[1]], role="query")
        caps = model.embed_texts(["a red star"])
        pics = model.embed_images(torch.stack(imgs))
    torch.testing.assert_close(batch[0], alone(model, want_q, imgs[0]), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(batch[1], alone(model, gen2embed_prompt("a red star\nRepresent the given text in one word."),
                                               None), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(batch[2], alone(model, gen2embed_prompt("<|image_pad|>\nRepresent the given text/image in "
                                                                       "one word."), imgs[1]), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(caps[0], alone(model, gen2embed_prompt(
        "Find me an image that matches the given caption: a red star\nRepresent the given text in one word."), None),
        rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(pics[1], alone(model, gen2embed_prompt("<|image_pad|>"), imgs[1]), rtol=1e-4, atol=1e-5)


def test_hierarchical_prompting_switches_on_for_any_embedder(qwen_dir: Path, tmp_path: Path) -> None:
    """--arch-param prompting=hierarchical on the generic embedder: the two levels through the
    model's own chat template (a system message; the query instruction after the user text)."""
    plain = obtain("hf-vlm-embedder", qwen_dir, tmp_path).model
    hier = obtain("hf-vlm-embedder", qwen_dir, tmp_path, prompting="hierarchical").model
    q = "<|image_1|>\nRepresent the given image with the following question: what is red"
    assert plain.prompt(q, True, "query") == "<|image_pad|>\nRepresent the given image with the following question: what is red"
    messages = [{"role": "system", "content": [{"type": "text", "text": SYSTEM}]},
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q.split("<|image_1|>")[1] +
                                                                 "\nRepresent the given text/image in one word."}]}]
    want = hier.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert hier.prompt(q, True, "query") == want
    assert want.startswith(f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|>")
    assert hier.settings_tag.tolist() != plain.settings_tag.tolist()  # another model for the feature cache


def test_mmeb_sides_are_roles(tmp_path: Path) -> None:
    """Query items are queries; candidates are candidates except in matching datasets (Gen2Embed:
    'matching' in the subset name makes the target side 'Q' too)."""
    from cl_bench.data.image_text.mmeb import load_mmeb
    from cl_bench.protocols.mmeb import MMEBProtocolParams, run_mmeb
    from tests.protocols.test_mmeb import TableModel, plain_ctx, png, write_mmeb

    rows = [{"qry_text": f"q{i}", "qry_img_path": f"m/q{i}.png", "tgt_text": [f"c{i}{j}" for j in range(2)],
             "tgt_img_path": [f"m/c{i}{j}.png" for j in range(2)]} for i in range(2)]
    pics = {f"m/q{i}.png": png(i) for i in range(2)} | {f"m/c{i}{j}.png": png(10 + 2 * i + j) for i in range(2) for j in range(2)}
    write_mmeb(tmp_path / "MMEB-eval", {"RefCOCO": rows, "RefCOCO-Matching": rows}, pics)
    data = load_mmeb({"datasets": ["RefCOCO", "RefCOCO-Matching"], "image_size": 16}, tmp_path)
    table = {t: np.random.default_rng(len(t)).normal(size=4).astype(np.float32) for r in rows
             for t in [r["qry_text"], *r["tgt_text"]]}
    model = TableModel(table)
    run_mmeb(model, data, MMEBProtocolParams(batch_size=8), plain_ctx())
    assert model.roles == ["query", "candidate", "query", "query"]
    qry, _ = data.datasets[0].pair_items("qry")
    tgt, _ = data.datasets[0].pair_items("tgt")
    assert (qry.role, tgt.role) == ("query", "candidate") and qry.fingerprint != tgt.fingerprint


# ------------------------------------------------------------------------------------------ LCO-Emb


def test_lco_emb_prompts_are_their_mieb_wrapper(omni_dir: Path, tmp_path: Path) -> None:
    got = obtain("lco-emb-omni-7b", omni_dir, tmp_path)
    model = got.model
    assert type(model.hf).__name__ == "Qwen2_5OmniThinkerForConditionalGeneration"
    proc = model.processor

    def chat(content: list[dict[str, Any]]) -> str:  # LCO_Embedding.py: one user message, generation prompt
        return proc.apply_chat_template([{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True)

    want_text = chat([{"type": "text", "text": "a red star\nSummarize the above text in one word:"}])
    want_image = chat([{"type": "image"}, {"type": "text", "text": "\nSummarize the above image in one word:"}])
    assert model.prompt("a red star", False, "query") == want_text
    assert model.prompt("<|image_1|>", True, "candidate") == want_image
    mmeb = "<|image_1|>\nRepresent the given image."
    assert model.prompt(mmeb, True, "query") == chat(
        [{"type": "image"}, {"type": "text", "text": "\nRepresent the given image.\nSummarize the above in one word:"}])
    imgs = images(2, seed=3)
    with torch.no_grad():
        t = model.embed_texts(["a red star", "a blue circle left of a red star"])
        i = model.embed_images(torch.stack(imgs))
    torch.testing.assert_close(t[0], alone(model, want_text, None), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(i[1], alone(model, want_image, imgs[1]), rtol=1e-4, atol=1e-5)
    assert obtain("lco-emb-omni-3b", omni_dir, tmp_path).model.prompt("a red star", False) == want_text


# ------------------------------------------------------------------------------------------ UniME


def test_unime_prompts_are_their_readme_and_vlm2vec(llava_next_dir: Path, tmp_path: Path) -> None:
    got = obtain("unime-llava-1.6-7b", llava_next_dir, tmp_path)
    model = got.model
    assert type(model.hf).__name__ == "LlavaNextForConditionalGeneration"
    img_prompt = "[INST] <image>\nSummary above image in one word: [/INST]"
    txt_prompt = "[INST] a red star\nSummary above sentence in one word: [/INST]"
    assert model.prompt(model.p.image_prompt, True, "candidate") == img_prompt
    assert model.prompt(model.p.text_prompt.replace("{}", "a red star"), False, "query") == txt_prompt
    mmeb = "<|image_1|>\nRepresent the given image with the following question: what is red"
    assert model.prompt(mmeb, True, "query") == "<image>\nRepresent the given image with the following question: what is red"
    imgs = images(2, seed=5)
    with torch.no_grad():
        i = model.embed_images(torch.stack(imgs))
        t = model.embed_texts(["a red star"])
        m = model.embed_pairs([mmeb], [imgs[0]], role="query")
    torch.testing.assert_close(i[0], alone(model, img_prompt, imgs[0]), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(t[0], alone(model, txt_prompt, None), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(m[0], alone(model, model.prompt(mmeb, True), imgs[0]), rtol=1e-4, atol=1e-5)
