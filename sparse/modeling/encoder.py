"""The sparse encoder: an HF masked-LM for documents, IDF lookup (or the same MLM) for queries.

Document vector:
  1. MLM logits over the vocabulary for every real (attention-mask) token;
  2. ``log(1 + relu(logit))`` per token, pooled by max over tokens (default; equal to a
     masked max of the logits followed by the saturation) or by sum (SPLADE v1);
  3. the extra ``log(1 + .)`` of the l0 activations (see ``activations``);
  4. special tokens zeroed unless ``keep_special_tokens`` (they never match an inference-free
     query, so their weights would only cost index space and FLOPS);
  5. optional pruning: keep w_j > prune_ratio * max_j w_j of that document.

Inference-free query vector: every unique non-special token of
the query gets relu(idf[token]); all other entries are 0. Without an IDF every weight is 1.

Siamese (``inf_free: false``): queries go through the document path.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import pickle
import warnings
from dataclasses import asdict, dataclass, fields
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from sparse.errors import UserError, check_model_path, write_json
from sparse.modeling.activations import activation_depth, l0_transform, saturate
from sparse.modeling.idf import idf_vector, load_idf_file, save_idf
from sparse.modeling.screen import BF16Weights, cpu_has_native_bf16, screened_max
from sparse.modeling.vectors import SparseBatch

logger = logging.getLogger(__name__)

SETTINGS_FILE = "sparse_config.json"
IDF_FILE = "idf.json"


@dataclass
class SparseSettings:
    """Everything besides weights that decides what a checkpoint encodes (saved with it)."""

    inf_free: bool = True
    activation: str = "relu"
    pooling: str = "max"
    prune_ratio: Optional[float] = None
    keep_special_tokens: bool = False
    max_seq_length: int = 512
    query_max_seq_length: Optional[int] = None
    preprocess_func: Optional[str] = None
    decouple_activation: bool = False
    idf_requires_grad: bool = False

    @property
    def scoring_activation(self) -> str:
        """The activation of the vectors that are scored (decoupled: always plain relu)."""
        return "relu" if self.decouple_activation else self.activation

    @classmethod
    def from_dict(cls, data: dict) -> "SparseSettings":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise UserError(f"{SETTINGS_FILE} has unknown keys {sorted(unknown)}")
        return cls(**data)


POOLINGS = ("max", "sum")
PREPROCESS_FUNCS = {  # preprocess_func name -> what it does to a text before tokenization
    "to_lower": lambda t: t.lower(),
    "blank_prefix": lambda t: " " + t,
    "blank_prefix_lower": lambda t: " " + t.lower(),
}


def _preprocess(texts: Sequence[str], func: Optional[str]) -> list[str]:
    if func is None:
        return list(texts)
    if func not in PREPROCESS_FUNCS:
        raise UserError(f"unknown preprocess_func {func!r}")
    return [PREPROCESS_FUNCS[func](t) for t in texts]


class _PassThrough(nn.Module):
    def forward(self, x):
        return x


@contextlib.contextmanager
def vocab_projection_detached(mlm):
    """Run the MLM without its final vocabulary projection and hand that projection back.

    The model then returns the hidden states that would enter the projection, so the caller
    can project only the real tokens, in chunks, instead of a batch x length x vocab tensor.
    """
    decoder = mlm.get_output_embeddings()
    if decoder is None:
        raise UserError(f"{type(mlm).__name__} has no output embeddings; it is not a masked-LM")
    # swap the module in its parent directly: some set_output_embeddings also rewire biases
    name = next(n for n, mod in mlm.named_modules() if mod is decoder)
    parent_name, _, attr = name.rpartition(".")
    parent = mlm.get_submodule(parent_name) if parent_name else mlm
    setattr(parent, attr, _PassThrough())
    try:
        yield decoder
    finally:
        setattr(parent, attr, decoder)


def head_parameters(mlm) -> list[nn.Parameter]:
    """The MLM head's parameters: those outside the base model (a tied decoder weight is the body's embedding)."""
    body = {id(p) for p in mlm.base_model.parameters()}
    head = [p for p in mlm.parameters() if id(p) not in body]
    if mlm.base_model is mlm or not head:
        raise UserError(f"{type(mlm).__name__} has no MLM head apart from its base model")
    return head


def check_untie_supported() -> None:
    """Untied checkpoints reload as saved only with transformers 5: 4.x ties BERT's output bias back on load."""
    import transformers

    if int(transformers.__version__.split(".")[0]) < 5:
        raise UserError(f"untie_output_embeddings needs transformers >= 5 (this is {transformers.__version__})")


def untie_output_embeddings(mlm) -> bool:
    """Give the vocabulary projection its own weight (and bias) when it shares the word embeddings;
    returns whether it did. The bias is copied too: a bias shared with another parameter is saved
    under that one's name only, and an untied model would reload without it."""
    check_untie_supported()
    decoder = mlm.get_output_embeddings()
    if decoder is None:
        raise UserError(f"{type(mlm).__name__} has no output embeddings; it is not a masked-LM")
    if decoder.weight is not mlm.get_input_embeddings().weight:
        return False
    decoder.weight = nn.Parameter(decoder.weight.detach().clone())
    if getattr(decoder, "bias", None) is not None:
        decoder.bias = nn.Parameter(decoder.bias.detach().clone())
    mlm.config.tie_word_embeddings = False  # what save_pretrained writes, so the copy reloads as its own
    return True


ENCODE_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def encode_dtype(dtype) -> Optional[torch.dtype]:
    """The autocast dtype of an encode ``dtype``: None for exact fp32 ("fp32", None, torch.float32),
    else torch.bfloat16 / torch.float16 ("bf16", "fp16" or the torch dtype)."""
    if dtype is None or dtype == torch.float32:
        return None
    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.bfloat16, torch.float16):
            raise UserError(f"encode dtype must be fp32, bf16 or fp16, got {dtype}")
        return dtype
    if dtype not in ENCODE_DTYPES:
        raise UserError(f"encode dtype must be one of {sorted(ENCODE_DTYPES)}, got {dtype!r}")
    return ENCODE_DTYPES[dtype]


def _autocast(device: torch.device, dtype: Optional[torch.dtype]):
    """Mixed precision only when asked for: None is plain fp32, exact on every device."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def saved_settings(path: str) -> dict:
    """The sparse settings a checkpoint folder was saved with (``sparse_config.json``); {} for a plain model."""
    file = os.path.join(path, SETTINGS_FILE)
    if not os.path.isfile(file):
        return {}
    with open(file, encoding="utf-8") as f:
        return json.load(f)


class SparseEncoder(nn.Module):
    """A masked-LM as a sparse encoder: document vectors from the MLM, query vectors from the IDF or the MLM."""

    def __init__(self, mlm, tokenizer, settings: SparseSettings | None = None,
                 idf: Optional[torch.Tensor] = None):
        super().__init__()
        self.mlm = mlm
        self.tokenizer = tokenizer
        self.settings = settings or SparseSettings()
        activation_depth(self.settings.activation)  # validates the name
        out_emb = mlm.get_output_embeddings()
        self.vocab_size = int(out_emb.weight.shape[0]) if out_emb is not None else int(mlm.config.vocab_size)
        special = sorted(i for i in set(tokenizer.all_special_ids) if i is not None and i < self.vocab_size)
        self.register_buffer("special_ids", torch.tensor(special, dtype=torch.long), persistent=False)
        if idf is None:
            idf = torch.ones(self.vocab_size)
        if idf.shape != (self.vocab_size,):
            raise UserError(f"IDF vector has {idf.shape[0]} entries, the model's vocabulary {self.vocab_size}")
        self.idf = nn.Parameter(idf.float().clone(), requires_grad=self.settings.idf_requires_grad)
        self._id_to_token: Optional[list[str]] = None
        self._bf16 = BF16Weights()  # the screen's bf16 copy of the vocabulary projection

    # ---------------------------------------------------------------- properties
    @property
    def device(self) -> torch.device:
        return self.idf.device

    @property
    def id_to_token(self) -> list[str]:
        """Token string of every vocabulary id (ids beyond the tokenizer get ``[id_N]``)."""
        if self._id_to_token is None:
            toks = self.tokenizer.convert_ids_to_tokens(list(range(min(self.vocab_size, len(self.tokenizer)))))
            toks = [t if t is not None else f"[id_{i}]" for i, t in enumerate(toks)]
            toks += [f"[id_{i}]" for i in range(len(toks), self.vocab_size)]
            self._id_to_token = toks
        return self._id_to_token

    def query_max_length(self) -> int:
        return self.settings.query_max_seq_length or self.settings.max_seq_length

    # ---------------------------------------------------------------- tokenization
    def tokenize(self, texts: Sequence[str], max_length: Optional[int] = None) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(
            _preprocess(texts, self.settings.preprocess_func), padding=True, truncation=True,
            max_length=max_length or self.settings.max_seq_length, return_tensors="pt",
            return_token_type_ids=False,
        )
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def content_token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of whole texts: preprocessed, no special tokens, no truncation (for windows)."""
        enc = self.tokenizer(_preprocess(texts, self.settings.preprocess_func), add_special_tokens=False,
                             truncation=False, return_token_type_ids=False, verbose=False)
        return [list(ids) for ids in enc["input_ids"]]

    # ---------------------------------------------------------------- shared post-processing
    def finish_pooled(self, pooled: torch.Tensor, activation: str) -> torch.Tensor:
        """Steps 3-5 of the module docstring on pooled, saturated weights (n, V)."""
        out = l0_transform(pooled, activation_depth(activation) - 1)
        if not self.settings.keep_special_tokens and len(self.special_ids):
            out = out.index_fill(1, self.special_ids.to(out.device), 0.0)
        ratio = self.settings.prune_ratio
        if ratio:
            out = out * (out > ratio * out.amax(dim=1, keepdim=True))
        return out

    def sparsity_view(self, rep: torch.Tensor) -> torch.Tensor:
        """What the sparsity regularizer sees: the l0-activated weights when decoupled."""
        if self.settings.decouple_activation:
            return l0_transform(rep, activation_depth(self.settings.activation) - 1)
        return rep

    # ---------------------------------------------------------------- training forward (dense)
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, inf_free: bool = False) -> torch.Tensor:
        """Dense (B, V) representations with gradient, for training."""
        if inf_free:
            return self.inference_free_dense(input_ids, attention_mask)
        logits = self.mlm(input_ids=input_ids, attention_mask=attention_mask).logits
        weights = saturate(logits.float()) * attention_mask.unsqueeze(-1).to(torch.float32)
        pooled = weights.amax(dim=1) if self.settings.pooling == "max" else weights.sum(dim=1)
        return self.finish_pooled(pooled, self.settings.scoring_activation)

    def inference_free_dense(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """relu(idf) on the unique non-special tokens of each query; gradient flows into the IDF."""
        presence = torch.zeros(input_ids.shape[0], self.vocab_size, device=input_ids.device)
        ids = input_ids.masked_fill(attention_mask == 0, 0) if attention_mask is not None else input_ids
        presence.scatter_(1, ids, 1.0)
        if attention_mask is not None and (attention_mask == 0).any():
            # padding wrote token 0; clear it unless a real token is 0 (it is [PAD] in BERT: special)
            real_zero = ((input_ids == 0) & (attention_mask == 1)).any(dim=1)
            presence[~real_zero, 0] = 0.0
        if len(self.special_ids):
            presence = presence.index_fill(1, self.special_ids.to(presence.device), 0.0)
        return presence * torch.relu(self.idf)

    # ---------------------------------------------------------------- inference
    def _encode_mlm_batch(self, input_ids, attention_mask, token_chunk: int, projection: str) -> torch.Tensor:
        """Pooled weights (B, V) projecting only real tokens, ``token_chunk`` at a time."""
        with vocab_projection_detached(self.mlm) as decoder:
            hidden = self.mlm(input_ids=input_ids, attention_mask=attention_mask).logits
        mask = attention_mask.bool()
        if self.settings.pooling == "max" and projection == "screened" and isinstance(decoder, nn.Linear):
            return saturate(screened_max(hidden, mask, decoder.weight, decoder.bias, self._bf16)[0])
        flat = hidden[mask]
        row_of = torch.nonzero(mask, as_tuple=True)[0]
        n_rows = input_ids.shape[0]
        pooled = torch.zeros(n_rows, self.vocab_size, device=hidden.device, dtype=torch.float32)
        use_max = self.settings.pooling == "max"
        for start in range(0, flat.shape[0], token_chunk):
            logits = decoder(flat[start:start + token_chunk]).float()
            rows = row_of[start:start + token_chunk]
            if use_max:
                # max first, saturate once per document: log1p(relu(.)) is monotone, and the
                # zero start of ``pooled`` plays the relu
                _index_amax(pooled, rows, logits)
            else:
                pooled.index_add_(0, rows, saturate(logits))
        return saturate(pooled) if use_max else pooled

    @torch.inference_mode()
    def encode_documents(self, texts: Sequence[str], batch_size: int = 32, max_length: Optional[int] = None,
                         progress: bool = False, token_chunk: int = 4096, sort_block: int = 10000,
                         dtype: str | torch.dtype | None = "fp32", desc: str = "encode documents",
                         projection: str = "auto") -> SparseBatch:
        """Sparse vectors of ``texts`` in input order.

        Texts are tokenized in blocks, sorted by length inside a block so batches carry little
        padding, and only real tokens are projected onto the vocabulary, ``token_chunk`` at a time,
        so memory stays bounded by ``token_chunk x V`` whatever the batch or document length.

        ``dtype``: "fp32" (default) computes in fp32 on every device: exact. "bf16" / "fp16" run
        the model under autocast (faster on GPUs, approximate; bench/encode.py measures the
        difference).

        ``projection``: "exact" computes every logit in the model's dtype; "screened" (max
        pooling, CPU) finds the non-zero entries with a bf16 matmul and recomputes only those in
        fp32 (same result, see ``sparse.modeling.screen``); "auto" screens on CPUs with native bf16
        (avx512_bf16 / AMX) and is exact elsewhere.
        """
        max_length = max_length or self.settings.max_seq_length
        n = len(texts)
        parts: list[Optional[tuple]] = [None] * n
        with self._encoding(n, progress, desc, dtype, projection) as run:
            for block_start in range(0, n, sort_block):
                block = _preprocess(texts[block_start:block_start + sort_block], self.settings.preprocess_func)
                enc = self.tokenizer(block, truncation=True, max_length=max_length, return_token_type_ids=False)
                run(enc["input_ids"], parts, block_start, batch_size, token_chunk)
        return _stack_rows(parts, self.vocab_size)

    @torch.inference_mode()
    def encode_token_ids(self, ids: Sequence[Sequence[int]], batch_size: int = 32, progress: bool = False,
                         token_chunk: int = 4096, sort_block: int = 10000, dtype: str | torch.dtype | None = "fp32",
                         desc: str = "encode documents", projection: str = "auto") -> SparseBatch:
        """Sparse vectors of already tokenized inputs (special tokens included), in input order;
        the options are ``encode_documents``'."""
        n = len(ids)
        parts: list[Optional[tuple]] = [None] * n
        with self._encoding(n, progress, desc, dtype, projection) as run:
            for block_start in range(0, n, sort_block):
                run(list(ids[block_start:block_start + sort_block]), parts, block_start, batch_size, token_chunk)
        return _stack_rows(parts, self.vocab_size)

    @contextlib.contextmanager
    def _encoding(self, n: int, progress: bool, desc: str, dtype, projection: str):
        """Eval mode and a progress bar around ``run(ids, parts, offset, batch_size, token_chunk)``, which
        encodes one block of token id lists, longest first, into ``parts[offset + i]``."""
        autocast = encode_dtype(dtype)
        if projection not in ("auto", "exact", "screened"):
            raise UserError(f"projection must be auto, exact or screened, got {projection!r}")
        if projection == "auto":
            projection = "screened" if self.device.type == "cpu" and cpu_has_native_bf16() else "exact"
        bar = tqdm(total=n, desc=desc, unit="text", smoothing=0.1, disable=not progress)
        was_training = self.training
        self.eval()

        def run(ids, parts, offset: int, batch_size: int, token_chunk: int) -> None:
            order = np.argsort([-len(x) for x in ids], kind="stable")
            for s in range(0, len(order), batch_size):
                idx = order[s:s + batch_size]
                batch = self.tokenizer.pad({"input_ids": [ids[i] for i in idx]}, return_tensors="pt")
                input_ids = batch["input_ids"].to(self.device)
                attention = batch["attention_mask"].to(self.device)
                with _autocast(self.device, autocast):
                    pooled = self._encode_mlm_batch(input_ids, attention, token_chunk, projection)
                rows = SparseBatch.from_dense(self.finish_pooled(pooled, self.settings.scoring_activation))
                for j, i in enumerate(idx):
                    parts[offset + i] = _single_row(rows, j)
                bar.update(len(idx))

        try:
            yield run
        finally:
            bar.close()
            self.train(was_training)

    @torch.inference_mode()
    def encode_queries(self, texts: Sequence[str], batch_size: int = 32, progress: bool = False,
                       inf_free: Optional[bool] = None, **kwargs) -> SparseBatch:
        """Inference-free: IDF lookup of unique non-special tokens (no model run); else the MLM."""
        inf_free = self.settings.inf_free if inf_free is None else inf_free
        if not inf_free:
            return self.encode_documents(texts, batch_size=batch_size, max_length=self.query_max_length(),
                                         progress=progress, desc="encode queries", **kwargs)
        enc = self.tokenizer(_preprocess(texts, self.settings.preprocess_func), truncation=True,
                             max_length=self.query_max_length(), return_token_type_ids=False)
        special = set(self.special_ids.tolist())
        weights = torch.relu(self.idf.detach()).float().cpu().numpy()
        rows = []
        for ids in enc["input_ids"]:
            uniq = np.array(sorted(set(ids) - special), dtype=np.int64)
            rows.append((uniq, weights[uniq] if len(uniq) else np.zeros(0, np.float32)))
        return SparseBatch.from_rows(rows, self.vocab_size)

    # ---------------------------------------------------------------- checkpoints
    def save_pretrained(self, path: str, safe_serialization: bool = True) -> None:
        """A self-describing checkpoint: HF weights, tokenizer, idf.json and the sparse settings."""
        os.makedirs(path, exist_ok=True)
        self.mlm.save_pretrained(path, safe_serialization=safe_serialization)
        self.tokenizer.save_pretrained(path)
        save_idf(self.idf, self.tokenizer, os.path.join(path, IDF_FILE))
        write_json(os.path.join(path, SETTINGS_FILE), asdict(self.settings))

    @classmethod
    def from_pretrained(cls, path: str, settings: Optional[dict] = None, idf_path: Optional[str] = None,
                        tokenizer_name: Optional[str] = None, trust_remote_code: bool = False,
                        device: Optional[str | torch.device] = None) -> "SparseEncoder":
        """Load a checkpoint (self-describing) or a plain HF / OpenSearch model directory or id.

        ``settings`` override what the checkpoint says; for a plain model they are the settings
        (``activation_type``, the config's name, is accepted for ``activation``).
        ``idf_path`` overrides the checkpoint's ``idf.json`` (with a warning when they differ).
        """
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        check_model_path(path)
        local = os.path.isdir(path)
        if local:
            check_weight_files(path)
        bins = [n for n in os.listdir(path) if n.endswith(".bin") and n != "training_args.bin"] if local else []
        try:
            mlm, info = AutoModelForMaskedLM.from_pretrained(path, trust_remote_code=trust_remote_code,
                                                             output_loading_info=True)
        except (OSError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
            if bins and not isinstance(exc, ValueError):  # a pytorch_model.bin cut short or overwritten
                raise UserError(f"the weights in {os.path.join(path, bins[0])} are damaged "
                                f"({type(exc).__name__}: {str(exc)[:120]}): re-copy them from where the "
                                f"checkpoint came from") from None
            if isinstance(exc, (OSError, ValueError)):
                raise UserError(f"cannot load a masked-LM from {path!r}: {exc}") from None
            raise
        try:
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_name or path, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot load the tokenizer {tokenizer_name or path!r}: {exc}") from None
        check_vocab_size(tokenizer, mlm, path, tokenizer_name)
        # a model saved without its MLM head loads with a random one: vectors would be noise
        missing = [k for k in info.get("missing_keys", []) if not k.endswith("position_ids")]
        if missing:
            raise UserError(f"{path} has no masked-LM head ({len(missing)} weights missing, e.g. {missing[0]}): "
                            "the document encoder needs one; use a *ForMaskedLM checkpoint (e.g. a SPLADE model)")
        settings = dict(settings or {})
        if "activation_type" in settings:
            settings.setdefault("activation", settings.pop("activation_type"))
        stored = saved_settings(path)
        merged = {**stored, **(settings or {})}
        for key, value in (settings or {}).items():
            if key in stored and stored[key] != value:
                logger.warning("setting %s=%r overrides the checkpoint's %r", key, value, stored[key])
        sparse_settings = SparseSettings.from_dict(merged)
        model = cls(mlm, tokenizer, sparse_settings)
        own_idf = _find_idf(path, local) if local or not idf_path else None
        if idf_path and own_idf and os.path.isfile(idf_path) and not os.path.samefile(idf_path, own_idf):
            new, own = load_idf_file(idf_path), load_idf_file(own_idf)
            # absent tokens weigh 1.0; a saved table holds float32 values, so equal means equal to float32 precision
            differ = sum(not math.isclose(new.get(t, 1.0), own.get(t, 1.0), rel_tol=1e-6, abs_tol=1e-6)
                         for t in set(new) | set(own))
            if differ:
                logger.warning("idf_path %s replaces the checkpoint's own %s (%d tokens differ); drop idf_path to "
                               "use the checkpoint's", idf_path, own_idf, differ)
        idf_file = idf_path or own_idf
        if idf_file:
            model.idf.data = idf_vector(load_idf_file(idf_file), tokenizer, model.vocab_size, source=idf_file)
        elif sparse_settings.inf_free:
            logger.warning("no IDF for %s: inference-free queries get binary token weights", path)
        if device is not None:
            model.to(device)
        return model.eval()  # like HF from_pretrained: training code calls .train() itself


def check_weight_files(path: str) -> None:
    """Every ``*.safetensors`` file of a local model folder has a readable header that covers the
    whole file, every zip-format ``*.bin`` its central directory; a damaged one (garbage, cut short
    by a copy) is one error saying to re-copy it."""
    import zipfile

    for name in sorted(n for n in os.listdir(path) if n.endswith(".bin") and n != "training_args.bin"):
        file = os.path.join(path, name)  # torch.save's zip format: a cut file has no central directory
        try:
            with open(file, "rb") as f:
                zipped = f.read(4) == b"PK\x03\x04"
            if zipped:
                zipfile.ZipFile(file).close()
        except (OSError, zipfile.BadZipFile) as exc:
            raise UserError(f"the weights in {file} are damaged ({exc}): re-copy them from where the checkpoint "
                            f"came from") from None
    names = sorted(n for n in os.listdir(path) if n.endswith(".safetensors"))
    if not names:
        return
    from safetensors import safe_open

    for name in names:
        file = os.path.join(path, name)
        try:
            with safe_open(file, "pt") as f:
                f.keys()
        except Exception as exc:  # noqa: BLE001 - SafetensorError (rust), OSError: both mean a bad file
            raise UserError(f"the weights in {file} are damaged ({str(exc).strip()[:120]}): re-copy them from "
                            f"where the checkpoint came from") from None


def check_model_files(path: str, idf_path: Optional[str] = None, tokenizer_name: Optional[str] = None,
                      trust_remote_code: bool = False) -> None:
    """The checks of ``SparseEncoder.from_pretrained`` that need no weights loaded: the weight files'
    headers, the IDF file(s) and the tokenizer against the model's vocabulary size. Commands run
    this for every model before they write anything."""
    from transformers import AutoConfig, AutoTokenizer

    if not path or not os.path.isdir(path):
        return  # no path, a hub id: checked when loaded
    check_weight_files(path)
    for idf_file in (idf_path, os.path.join(path, IDF_FILE)):
        if idf_file and os.path.isfile(idf_file):
            load_idf_file(idf_file)
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError):
        return  # from_pretrained reports it, with its own message
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_name or path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load the tokenizer {tokenizer_name or path!r}: {exc}") from None
    size = getattr(config, "vocab_size", None)
    if isinstance(size, int) and len(tokenizer) != size:
        which = f"tokenizer {tokenizer_name}" if tokenizer_name else f"the tokenizer of {path}"
        raise UserError(f"{which} has {len(tokenizer)} tokens but the model {path} has {size} outputs: they are "
                        f"not a pair (set tokenizer_name to the model's own tokenizer, or drop it)")


def check_vocab_size(tokenizer, mlm, path: str, tokenizer_name: Optional[str] = None) -> None:
    """The tokenizer's ids must be the model's output dimensions: a tokenizer whose vocabulary size
    differs from the MLM head's would train and encode with wrong ids (or fail with an IndexError)."""
    head = mlm.get_output_embeddings()
    out_size = int(head.weight.shape[0]) if head is not None else int(mlm.config.vocab_size)
    n = len(tokenizer)
    if n != out_size:
        which = f"tokenizer {tokenizer_name}" if tokenizer_name else f"the tokenizer of {path}"
        raise UserError(f"{which} has {n} tokens but the model {path} has {out_size} outputs: they are not a pair "
                        f"(set tokenizer_name to the model's own tokenizer, or drop it)")


def _index_amax(target: torch.Tensor, rows: torch.Tensor, values: torch.Tensor) -> None:
    """target[rows[i]] = max(target[rows[i]], values[i]) in place."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # index_reduce is flagged beta
        target.index_reduce_(0, rows, values.to(target.dtype), "amax", include_self=True)


def _find_idf(path: str, local: bool) -> Optional[str]:
    if local:
        candidate = os.path.join(path, IDF_FILE)
        return candidate if os.path.isfile(candidate) else None
    try:  # OpenSearch hub models ship their idf.json next to the weights
        from huggingface_hub import hf_hub_download

        return hf_hub_download(path, IDF_FILE)
    except Exception:  # noqa: BLE001 - offline or no such file: the caller warns
        return None


def _single_row(rows: SparseBatch, j: int) -> tuple[np.ndarray, np.ndarray]:
    ids, vals = rows.row(j)
    return ids.copy(), vals.copy()


def _stack_rows(parts, vocab_size: int) -> SparseBatch:
    if not parts:
        return SparseBatch.empty(vocab_size)
    lengths = np.array([len(p[0]) for p in parts], dtype=np.int64)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    indices = np.concatenate([p[0] for p in parts]) if lengths.sum() else np.zeros(0, np.int32)
    values = np.concatenate([p[1] for p in parts]) if lengths.sum() else np.zeros(0, np.float32)
    return SparseBatch(indptr, indices, values, vocab_size)
