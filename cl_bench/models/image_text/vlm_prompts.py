"""How a vision-language embedder turns an item (text, image or both) into its prompt.

The MLLM embedders differ only here, and each paper fixes it exactly:

- VLM2Vec / MMEB (and UniME's MMEB evaluation through VLM2Vec's eval.py): the item's text as it
  is, the image token where MMEB writes ``<|image_1|>`` (``template: "{text}"``).
- UniME's own retrieval prompts (E5-V style): ``[INST] <image>\\nSummary above image in one word:
  [/INST]`` - an ``image_prompt`` / ``text_prompt`` around a plain template.
- LCO-Emb (its MIEB wrapper): the model's own chat template over a user message of content parts
  (image, then text) ending in "Summarize the above {text|image|} in one word:" (``chat_template``
  and ``item_suffix`` by the item's kind).
- The generator->embedder paper's hierarchical embedding prompt (arXiv 2508.00955, Gen2Embed): a
  task-level system instruction (level 1) and, on queries only, a representation instruction
  appended to the user text (level 2) - "Represent the given text in one word." for text-only
  queries, "Represent the given text/image in one word." when an image is present.

``item_pieces`` splits an item at the image placeholder into text pieces and the image;
``render_plain`` / ``render_chat`` make the prompt string. The role of an item (``query`` or
``candidate``) comes from the protocol (MMEB sides; embed_texts are queries and embed_images
candidates, as Gen2Embed's SugarCrepe evaluation).
"""

from __future__ import annotations

from typing import Any, Literal

# Level 1 of the hierarchical prompt: Gen2Embed's system prompt (README and cli/evaluate_sugarcrepe.py)
HIERARCHICAL_SYSTEM = ("Given an image, summarize the provided image in one word. "
                       "Given only text, describe the text in one word.")
# Level 2, appended to query items (src/model_utils.py::Qwen2_VL_process_fn, role 'Q')
HIERARCHICAL_QUERY_TEXT = "\nRepresent the given text in one word."
HIERARCHICAL_QUERY_IMAGE = "\nRepresent the given text/image in one word."
# Gen2Embed's Qwen2-VL prompt string (src/model_utils.py)
QWEN_SYSTEM_TEMPLATE = "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"

IMAGE = object()  # the image's place among an item's pieces
Kind = Literal["text", "image", "both"]


def item_pieces(text: str | None, has_image: bool, placeholder: str) -> tuple[list[Any], Kind]:
    """An item's content as text pieces and ``IMAGE``, and its kind.

    With an image: split at the first placeholder (later ones are dropped); no placeholder puts the
    image first, then a newline and the text. Without: placeholders removed, the text stripped.
    """
    text = text or ""
    if not has_image:
        return [text.replace(placeholder, "").strip()], "text"
    if placeholder in text:
        before, after = text.split(placeholder, 1)
        pieces = [before, IMAGE, after.replace(placeholder, "")]
    else:
        pieces = [IMAGE, "\n" + text] if text else [IMAGE]
    words = any(isinstance(p, str) and p.strip() for p in pieces)
    return [p for p in pieces if p is IMAGE or p], "both" if words else "image"


def with_suffixes(pieces: list[Any], kind: Kind, has_image: bool, role: str | None, item_suffix: dict[str, str],
                  hierarchical: bool) -> list[Any]:
    """Append the kind's ``item_suffix`` and, for a hierarchical query, the level-2 instruction."""
    out = list(pieces)
    if item_suffix.get(kind):
        out.append(item_suffix[kind])
    if hierarchical and role == "query":
        out.append(HIERARCHICAL_QUERY_IMAGE if has_image else HIERARCHICAL_QUERY_TEXT)
    return _merge_text(out)


def _merge_text(pieces: list[Any]) -> list[Any]:
    merged: list[Any] = []
    for p in pieces:
        if p is not IMAGE and merged and merged[-1] is not IMAGE:
            merged[-1] = merged[-1] + p
        else:
            merged.append(p)
    return merged


def render_plain(pieces: list[Any], image_token: str, template: str, system: str | None) -> str:
    """The pieces joined with ``image_token``, placed in ``template`` ({text}; {system} if any)."""
    user = "".join(image_token if p is IMAGE else p for p in pieces)
    return template.replace("{system}", system or "").replace("{text}", user)


def chat_messages(pieces: list[Any], system: str | None) -> list[dict[str, Any]]:
    """A system message (if any) and one user message whose content parts are the pieces."""
    content = [{"type": "image"} if p is IMAGE else {"type": "text", "text": p} for p in pieces]
    messages: list[dict[str, Any]] = []
    if system:
        messages.append({"role": "system", "content": [{"type": "text", "text": system}]})
    return messages + [{"role": "user", "content": content}]
