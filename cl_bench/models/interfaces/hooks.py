"""The typed interfaces between the engine and the components: what a model, an objective, an
arch builder or a dataset MAY declare, written down in one place (``typing.Protocol``s, checked
structurally: a component implements one by having the method or attribute, no base class needed).

Before, :mod:`cl_bench.obtain` and :mod:`cl_bench.extract` discovered these hooks with
``getattr(obj, "name", None)``; they now ask the functions below, and mypy checks the callers
against the declared signatures.

Capabilities: a method ``provides`` capabilities (``specs.Capability``) and a protocol
``requires`` one; :func:`check_provides` checks, once the model is built, that it implements the
interface each provided capability stands for (:data:`CAPABILITY_INTERFACES`), so a method that
claims a capability its model lacks fails in one line at obtain time, not deep inside a protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from cl_bench.errors import ClBenchError

# ----------------------------------------------------------------------------- models


@runtime_checkable
class ImageEncoder(Protocol):
    """``image_encoder``: images [B, C, H, W] -> embeddings [B, D] (any ``nn.Module`` forward)."""

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class SplitEmbedder(Protocol):
    """A model that embeds a whole split itself (text encoders, image-text models): rows in the
    split's order, float32 [N, D]."""

    def embed_split(self, split: Any, device: torch.device) -> np.ndarray: ...


@runtime_checkable
class ImageTextModel(SplitEmbedder, Protocol):
    """``image_text``: one embedding space for images and texts (and interleaved pairs)."""

    def embed_images(self, images: torch.Tensor) -> torch.Tensor: ...

    def embed_texts(self, texts: list[str]) -> torch.Tensor: ...


@runtime_checkable
class CausalLanguageModel(Protocol):
    """``causal_lm``: log-likelihoods of continuations (lm-evaluation-harness' request shape)."""

    def tok_encode(self, text: str) -> list[int]: ...

    def loglikelihood(self, requests: Sequence[Any]) -> list[tuple[float, bool]]: ...


@runtime_checkable
class SequenceModel(Protocol):
    """``sequence_model``: an in-context learner over token sequences or regression prompts."""

    input_kind: str


@runtime_checkable
class OwnCheckpointLoader(Protocol):
    """A model that reads its own checkpoint format (Hugging Face / open_clip directories); it
    may take the method's ``released`` layout as ``layout``. Returns the checkpoint report."""

    def load_checkpoint(self, path: Path) -> dict[str, Any]: ...


@runtime_checkable
class PreloadedWeights(Protocol):
    """A model whose builder already read its weights (a directory in its params, a bundled
    model): ``checkpoint_report`` says what was read."""

    checkpoint_report: dict[str, Any]


CAPABILITY_INTERFACES: dict[str, type] = {
    "image_encoder": ImageEncoder,
    "text_encoder": SplitEmbedder,
    "image_text": ImageTextModel,
    "causal_lm": CausalLanguageModel,
    "sequence_model": SequenceModel,
}


def check_provides(model: Any, provides: Sequence[str], method_id: str) -> None:
    """The built ``model`` implements the interface of every capability the method provides."""
    for capability in provides:
        interface = CAPABILITY_INTERFACES[capability]
        if not isinstance(model, interface):
            raise ClBenchError(
                f"method '{method_id}' provides {capability}, but its model ({type(model).__name__}) does not "
                f"implement {interface.__name__}; fix the method's provides: or its arch"
            )


@runtime_checkable
class PlannedEmbedder(Protocol):
    """A model that hands the extractor its own embedding plan for a split (streamed in blocks,
    :class:`cl_bench.extract.EmbedPlan`) instead of the image batches the extractor would feed it."""

    def embed_plan(self, split: Any, device: torch.device, feeder: Any = None) -> Any: ...


def embed_planner(model: Any) -> Callable[..., Any] | None:
    return model.embed_plan if isinstance(model, PlannedEmbedder) else None


def own_checkpoint_loader(model: Any) -> Callable[..., dict[str, Any]] | None:
    return model.load_checkpoint if isinstance(model, OwnCheckpointLoader) else None


def preloaded_report(model: Any) -> dict[str, Any] | None:
    return model.checkpoint_report if isinstance(model, PreloadedWeights) else None


@runtime_checkable
class ArchScoredModel(Protocol):
    """A model whose outputs depend on its arch params, not only its weights (a scoring rule over
    other models: contrastive decoding, DoLa, LOL): its fingerprint also covers the arch."""

    fingerprint_includes_arch: bool


@runtime_checkable
class MemberInitialised(Protocol):
    """A model that starts from another method's weights (a fine-tune of a cached member): its
    training cache entry is keyed on those weights too."""

    members_key: str | None


def fingerprint_covers_arch(model: Any) -> bool:
    return isinstance(model, ArchScoredModel) and bool(model.fingerprint_includes_arch)


def members_key(model: Any) -> str | None:
    return model.members_key if isinstance(model, MemberInitialised) else None


@runtime_checkable
class LanguageGuidedDense(Protocol):
    """An image encoder that builds its own segmenter on the dense protocol's trunk, guided by the
    class names' text embeddings (DenseCLIP); ``head_for(in_channels)`` builds the task's head."""

    def language_guided_segmenter(self, trunk: Any, class_names: list[str],
                                  head_for: Callable[[int], Any]) -> Any: ...


def language_guidance(model: Any) -> Callable[..., Any] | None:
    return model.language_guided_segmenter if isinstance(model, LanguageGuidedDense) else None


def split_embedder(model: Any) -> Callable[[Any, torch.device], np.ndarray] | None:
    return model.embed_split if isinstance(model, SplitEmbedder) else None


# ----------------------------------------------------------------------------- objectives


@runtime_checkable
class SelfTrainingObjective(Protocol):
    """An objective class that trains its model with its own ``train_model`` (every non-image
    objective, and image objectives with stages or dense views); the others are trained by
    :func:`cl_bench.methods.trainer.train_encoder`. All of them run on
    :func:`cl_bench.methods.trainer.fit`."""

    def train_model(self, model: Any, recipe: Any, split: Any, num_classes: int, seed: int,
                    device: torch.device, progress: bool = False) -> Any: ...


def own_trainer(objective_cls: Any) -> Callable[..., Any] | None:
    return objective_cls.train_model if isinstance(objective_cls, SelfTrainingObjective) else None


def needs_labels(objective_cls: Any) -> bool:
    """Whether the objective reads the training labels (a label-free one's checkpoint depends on
    the training images only). Declared as ``needs_labels`` (:class:`cl_bench.methods.objective.Objective`
    says False); an objective class that does not declare it is assumed to need them."""
    return bool(getattr(objective_cls, "needs_labels", True))


# ----------------------------------------------------------------------------- arch builders


@runtime_checkable
class CheckpointAwareBuilder(Protocol):
    """An arch builder that reads what it needs from a checkpoint before the model is built
    (``from_checkpoint(path, params) -> (params, weights file or None)``)."""

    def __call__(self, params: dict[str, Any], **inputs: Any) -> Any: ...

    def from_checkpoint(self, path: Path, params: dict[str, Any]) -> tuple[dict[str, Any], Path | None]: ...


def checkpoint_hook(builder: Any) -> Callable[[Path, dict[str, Any]], tuple[dict[str, Any], Path | None]] | None:
    return builder.from_checkpoint if isinstance(builder, CheckpointAwareBuilder) else None


# ----------------------------------------------------------------------------- data


@runtime_checkable
class ArchInputsData(Protocol):
    """A dataset that tells the arch builder what it needs (channels, image size, vocabulary)."""

    arch_inputs: dict[str, Any]


@runtime_checkable
class DenseImageSplit(Protocol):
    """A split whose images alone identify it for a label-free objective (dense splits: the
    fingerprint without the annotations)."""

    images_fingerprint: str


def data_arch_inputs(data: Any) -> dict[str, Any]:
    return dict(data.arch_inputs or {}) if isinstance(data, ArchInputsData) else {}


def images_fingerprint(split: Any) -> str:
    return split.images_fingerprint if isinstance(split, DenseImageSplit) else split.fingerprint
