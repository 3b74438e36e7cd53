"""The embedded chat LLM: SmolLM2-135M-Instruct as a plain-torch Llama, loaded from its GGUF file.

One readable file, top to bottom:

1. ``LlamaConfig`` and the transformer (RMSNorm, grouped-query attention with rotary positions, SwiGLU
   MLP, tied output head) with a preallocated KV cache so generation costs one token per step.
2. Loading: GGUF -> dequantised fp16 state dict (+ tokenizer tables) -> cached ``.pt`` in weights_dir.
3. ``ChatTokenizer``: byte-level BPE rebuilt from the GGUF's tokenizer tables, plus the ChatML template.
4. ``ChatLLM``: the public API the service codes against (``load``, ``stream_reply``, ``reply``).

``python -m model.llm chat "question"`` answers one question; ``python -m model.llm bench`` prints load
times, decode speed and time to first token.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gguf
import torch
import torch.nn.functional as F
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from torch import nn

from model.weights import atomic_write_path, smollm2_cache_path, smollm2_gguf_path

# ----------------------------------------------------------------------------------------------------
# 1. The model


@dataclass(frozen=True)
class LlamaConfig:
    """Hyper-parameters; the defaults are SmolLM2-135M's, but loading reads the GGUF's ``llama.*`` keys."""

    # GGUF key in brackets.
    n_layer: int = 30  # transformer blocks [llama.block_count]
    d_model: int = 576  # residual stream width [llama.embedding_length]
    n_head: int = 9  # query heads [llama.attention.head_count]
    n_kv_head: int = 3  # key/value heads, each shared by n_head / n_kv_head queries [...head_count_kv]
    d_ffn: int = 1536  # SwiGLU hidden width [llama.feed_forward_length]
    vocab_size: int = 49152  # tokens [llama.vocab_size; we count tokenizer.ggml.tokens]
    max_seq_len: int = 8192  # context length, tokens [llama.context_length]
    rope_theta: float = 100_000.0  # rotary base; slowest pair's period ~2*pi*theta tokens [rope.freq_base]
    rms_eps: float = 1e-5  # added to the mean square in RMSNorm [llama.attention.layer_norm_rms_epsilon]
    tie_embeddings: bool = True  # output head = token embedding [true when the GGUF has no output.weight]

    def __post_init__(self) -> None:
        if self.d_model % self.n_head or self.n_head % self.n_kv_head:
            raise ValueError(f"d_model must divide into n_head, and n_head into n_kv_head: {self}")
        if self.head_dim % 2:
            raise ValueError("rotary embeddings rotate pairs of channels: head_dim must be even")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head


class KVCache:
    """Keys and values of every layer for the tokens seen so far, preallocated to ``max_len`` tokens.

    Preallocating (instead of concatenating each step) keeps a decode step free of reallocation. The
    cached keys are stored *after* rotary encoding, so a past token's key never needs recomputing.
    """

    def __init__(
        self, config: LlamaConfig, batch: int, max_len: int, device: torch.device, dtype: torch.dtype
    ) -> None:
        shape = (config.n_layer, batch, config.n_kv_head, max_len, config.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)  # [L, B, Hkv, max_len, hd]
        self.v = torch.zeros(shape, device=device, dtype=dtype)  # [L, B, Hkv, max_len, hd]
        self.max_len = max_len
        self.length = 0  # tokens already stored; the next token's position

    def store(
        self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this step's ``k, v`` [B, Hkv, T, hd] at ``start`` and return all keys/values up to it."""
        end = start + k.shape[2]
        self.k[layer, :, :, start:end] = k
        self.v[layer, :, :, start:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]  # [B, Hkv, end, hd]


def rope_tables(
    config: LlamaConfig, positions: torch.Tensor, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin [T, hd] of the rotary angles for absolute ``positions`` [T].

    Channel pair (i, i + hd/2) of a head rotates by ``position * theta**(-2i/hd)`` radians (the
    "rotate-half" layout of the Hugging Face checkpoint; see ``unpermute_qk`` for GGUF's layout).
    Computed per forward instead of held as a buffer: it is [T, hd] floats, negligible next to a layer.
    """
    half = config.head_dim // 2
    inv_freq = config.rope_theta ** (-torch.arange(half, device=positions.device, dtype=torch.float32) / half)
    angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]  # [T, hd/2]
    angles = torch.cat([angles, angles], dim=-1)  # [T, hd]: both halves of a pair share an angle
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each channel pair (i, i + hd/2) of ``x`` [B, H, T, hd] by its angle."""
    first, second = x.chunk(2, dim=-1)  # [B, H, T, hd/2] each
    rotated = torch.cat([-second, first], dim=-1)  # the pair (a, b) -> (-b, a): a 90-degree turn
    return x * cos + rotated * sin


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps) * self.weight


class Attention(nn.Module):
    """Grouped-query self-attention: n_head query heads share n_kv_head key/value heads."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, config.head_dim
        self.q_proj = nn.Linear(config.d_model, config.n_head * config.head_dim, bias=False)
        self.k_proj = nn.Linear(config.d_model, config.n_kv_head * config.head_dim, bias=False)
        self.v_proj = nn.Linear(config.d_model, config.n_kv_head * config.head_dim, bias=False)
        self.o_proj = nn.Linear(config.n_head * config.head_dim, config.d_model, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        cache: KVCache | None,
        layer: int,
        start: int,
    ) -> torch.Tensor:
        B, T, _ = x.shape  # [B, T, D]
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # [B, H, T, hd]
        k = self.k_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # [B, Hkv, T, hd]
        v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # [B, Hkv, T, hd]
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.store(layer, start, k, v)  # [B, Hkv, S, hd], S = start + T
        # Query head h reads key/value head h // group, so repeat each kv head `group` times in place.
        group = self.n_head // self.n_kv_head
        k = k.repeat_interleave(group, dim=1)  # [B, H, S, hd]
        v = v.repeat_interleave(group, dim=1)  # [B, H, S, hd]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, H, T, hd]
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim))  # [B, T, D]


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.d_model, config.d_ffn, bias=False)
        self.up_proj = nn.Linear(config.d_model, config.d_ffn, bias=False)
        self.down_proj = nn.Linear(config.d_ffn, config.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))  # [B, T, D]


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(config.d_model, config.rms_eps)
        self.attn = Attention(config)
        self.ffn_norm = RMSNorm(config.d_model, config.rms_eps)
        self.mlp = MLP(config)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        cache: KVCache | None,
        layer: int,
        start: int,
    ) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin, mask, cache, layer, start)
        return x + self.mlp(self.ffn_norm(x))  # [B, T, D]


class Llama(nn.Module):
    """The decoder-only transformer, randomly initialised from ``seed`` (tests use tiny configs).

    Built under ``torch.device("meta")`` it allocates nothing and skips the init: that is how
    ``ChatLLM.from_checkpoint`` makes the skeleton its loaded weights are assigned into.
    """

    def __init__(self, config: LlamaConfig, seed: int = 0) -> None:
        super().__init__()
        self.config = config
        # An explicit empty weight skips nn.Embedding's own N(0, 1) init, whose first call on the meta
        # device costs ~1 s of one-off imports; _init_random below sets the values instead.
        self.tok_emb = nn.Embedding(
            config.vocab_size, config.d_model, _weight=torch.empty(config.vocab_size, config.d_model)
        )
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm = RMSNorm(config.d_model, config.rms_eps)
        # Tied: the head is F.linear with tok_emb.weight, so there is one tensor and nothing to re-tie
        # after load_state_dict(assign=True).
        self.lm_head = (
            None if config.tie_embeddings else nn.Linear(config.d_model, config.vocab_size, bias=False)
        )
        if not self.tok_emb.weight.is_meta:
            self._init_random(seed)

    @torch.no_grad()
    def _init_random(self, seed: int) -> None:
        """Unit-scale activations everywhere (std 1/sqrt(fan_in)), so every path visibly moves the logits.

        A private generator keeps the init reproducible without touching torch's global RNG.
        """
        generator = torch.Generator().manual_seed(seed)
        for name, param in self.named_parameters():
            if name.endswith("norm.weight"):
                param.fill_(1.0)
            else:
                std = 1.0 if name == "tok_emb.weight" else param.shape[1] ** -0.5
                param.copy_(torch.randn(param.shape, generator=generator) * std)

    def forward(
        self, idx: torch.Tensor, cache: KVCache | None = None, last_only: bool = False
    ) -> torch.Tensor:
        """Logits [B, T, V] for token ids ``idx`` [B, T] ([B, 1, V] with ``last_only``).

        With a cache, ``idx`` continues the cached sequence (positions start at ``cache.length``) and
        its keys/values are appended. ``last_only`` skips the vocab projection of the other positions,
        which during a prompt prefill is ~10% of the compute and wasted.
        """
        _, T = idx.shape
        start = cache.length if cache is not None else 0
        if start + T > (cache.max_len if cache is not None else self.config.max_seq_len):
            raise ValueError(f"sequence of {start + T} tokens exceeds the cache / context length")
        x = self.tok_emb(idx)  # [B, T, D]
        cos, sin = rope_tables(self.config, torch.arange(start, start + T, device=idx.device), x.dtype)
        # Causal mask over all S = start + T keys (True = may attend). A single new token may attend to
        # everything cached, so it needs none.
        mask = None
        if T > 1:
            query_pos = torch.arange(start, start + T, device=idx.device)[:, None]  # [T, 1]
            key_pos = torch.arange(start + T, device=idx.device)[None, :]  # [1, S]
            mask = key_pos <= query_pos  # [T, S]
        for layer, block in enumerate(self.layers):
            x = block(x, cos, sin, mask, cache, layer, start)
        if cache is not None:
            cache.length = start + T
        if last_only:
            x = x[:, -1:]  # [B, 1, D]
        x = self.norm(x)
        head = self.tok_emb.weight if self.lm_head is None else self.lm_head.weight  # [V, D]
        return F.linear(x, head)  # [B, T, V]


# ----------------------------------------------------------------------------------------------------
# 2. Loading from GGUF, and the converted cache

# Bump when the cache's layout or the conversion changes, so stale caches get rebuilt from the GGUF.
CACHE_FORMAT = 1

# GGUF tensor names -> ours; "{i}" is the layer index.
_GGUF_NAMES = {
    "token_embd.weight": "tok_emb.weight",
    "output_norm.weight": "norm.weight",
    "output.weight": "lm_head.weight",
    "blk.{i}.attn_norm.weight": "layers.{i}.attn_norm.weight",
    "blk.{i}.attn_q.weight": "layers.{i}.attn.q_proj.weight",
    "blk.{i}.attn_k.weight": "layers.{i}.attn.k_proj.weight",
    "blk.{i}.attn_v.weight": "layers.{i}.attn.v_proj.weight",
    "blk.{i}.attn_output.weight": "layers.{i}.attn.o_proj.weight",
    "blk.{i}.ffn_norm.weight": "layers.{i}.ffn_norm.weight",
    "blk.{i}.ffn_gate.weight": "layers.{i}.mlp.gate_proj.weight",
    "blk.{i}.ffn_up.weight": "layers.{i}.mlp.up_proj.weight",
    "blk.{i}.ffn_down.weight": "layers.{i}.mlp.down_proj.weight",
}


def unpermute_qk(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo llama.cpp's reordering of a Q or K projection's output rows [n_heads * hd, D].

    GGML's rope rotates *adjacent* channel pairs (2j, 2j+1), while the Hugging Face checkpoint (and
    ``apply_rope``) rotates (j, j + hd/2). So llama.cpp's converter interleaves each head's two halves
    when writing the GGUF: GGUF row 2j+s of a head is HF row s * hd/2 + j. We de-interleave them back.
    """
    rows, cols = weight.shape
    head_dim = rows // n_heads
    return weight.view(n_heads, head_dim // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def _field(reader: gguf.GGUFReader, key: str) -> Any:
    field = reader.get_field(key)
    if field is None:
        raise KeyError(f"GGUF metadata has no {key!r}")
    return field.contents()


def config_from_gguf(reader: gguf.GGUFReader) -> LlamaConfig:
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise ValueError(f"expected a llama-architecture GGUF, got {arch!r}")
    config = LlamaConfig(
        n_layer=int(_field(reader, "llama.block_count")),
        d_model=int(_field(reader, "llama.embedding_length")),
        n_head=int(_field(reader, "llama.attention.head_count")),
        n_kv_head=int(_field(reader, "llama.attention.head_count_kv")),
        d_ffn=int(_field(reader, "llama.feed_forward_length")),
        vocab_size=len(_field(reader, "tokenizer.ggml.tokens")),
        max_seq_len=int(_field(reader, "llama.context_length")),
        rope_theta=float(_field(reader, "llama.rope.freq_base")),
        rms_eps=float(_field(reader, "llama.attention.layer_norm_rms_epsilon")),
        tie_embeddings=all(t.name != "output.weight" for t in reader.tensors),
    )
    rope_dims = reader.get_field("llama.rope.dimension_count")
    if rope_dims is not None and int(rope_dims.contents()) != config.head_dim:
        raise ValueError("partial rotary embeddings (rope.dimension_count != head_dim) are not supported")
    return config


@dataclass(frozen=True)
class TokenizerSpec:
    """The GGUF's tokenizer tables: everything needed to rebuild the byte-level BPE."""

    tokens: list[str]  # id -> token string, in GPT-2's byte-to-unicode alphabet
    merges: list[str]  # "left right", highest priority first
    token_types: list[int]  # id -> gguf.TokenType
    bos_id: int
    eos_id: int
    pad_id: int


def tokenizer_spec_from_gguf(reader: gguf.GGUFReader) -> TokenizerSpec:
    model_kind = _field(reader, "tokenizer.ggml.model")
    if model_kind != "gpt2":
        raise ValueError(f"expected a byte-level BPE ('gpt2') tokenizer, got {model_kind!r}")
    eos_id = int(_field(reader, "tokenizer.ggml.eos_token_id"))
    pad_field = reader.get_field("tokenizer.ggml.padding_token_id")
    return TokenizerSpec(
        tokens=list(_field(reader, "tokenizer.ggml.tokens")),
        merges=list(_field(reader, "tokenizer.ggml.merges")),
        token_types=[int(t) for t in _field(reader, "tokenizer.ggml.token_type")],
        bos_id=int(_field(reader, "tokenizer.ggml.bos_token_id")),
        eos_id=eos_id,
        pad_id=int(pad_field.contents()) if pad_field is not None else eos_id,
    )


@dataclass(frozen=True)
class Checkpoint:
    """What a model load needs: config, fp16 weights (our names, HF q/k layout) and tokenizer tables."""

    config: LlamaConfig
    state_dict: dict[str, torch.Tensor]
    tokenizer: TokenizerSpec


def read_gguf(path: Path) -> Checkpoint:
    """Dequantise every tensor of a llama GGUF into an fp16 state dict in our naming and layout."""
    reader = gguf.GGUFReader(path)
    config = config_from_gguf(reader)
    patterns = {
        gguf_name.replace("{i}", str(i)): ours.replace("{i}", str(i))
        for gguf_name, ours in _GGUF_NAMES.items()
        for i in range(config.n_layer)
    }
    state_dict: dict[str, torch.Tensor] = {}
    for tensor in reader.tensors:
        name = patterns.get(tensor.name)
        if name is None:
            raise ValueError(f"unexpected tensor {tensor.name!r} in {path}")
        # dequantize returns float32 in torch's [out, in] order (GGUF lists dims innermost first).
        # torch.tensor copies: unquantised (F32) tensors come back as read-only views of the memory map.
        weight = torch.tensor(gguf.quants.dequantize(tensor.data, tensor.tensor_type))
        if name.endswith("q_proj.weight"):
            weight = unpermute_qk(weight, config.n_head)
        elif name.endswith("k_proj.weight"):
            weight = unpermute_qk(weight, config.n_kv_head)
        # fp16 halves the cache; Q4_1/Q8_0 values (fp16 scale * small int + fp16 offset) lose ~nothing.
        state_dict[name] = weight.to(torch.float16)
    return Checkpoint(config, state_dict, tokenizer_spec_from_gguf(reader))


def save_checkpoint(checkpoint: Checkpoint, path: Path) -> None:
    payload = {
        "format": CACHE_FORMAT,
        "config": asdict(checkpoint.config),
        "state_dict": checkpoint.state_dict,
        "tokenizer": asdict(checkpoint.tokenizer),
    }
    with atomic_write_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path) -> Checkpoint | None:
    """The cached checkpoint, or None when it was written by an older CACHE_FORMAT."""
    # weights_only: the cache holds only tensors and plain containers, so refuse to unpickle code.
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format") != CACHE_FORMAT:
        return None
    return Checkpoint(
        LlamaConfig(**payload["config"]), payload["state_dict"], TokenizerSpec(**payload["tokenizer"])
    )


def build_cache() -> Path:
    """Convert the SmolLM2 GGUF into the fp16 cache (overwriting any old one); return the cache path."""
    gguf_path, cache_path = smollm2_gguf_path(), smollm2_cache_path()
    print(f"[llm] dequantising {gguf_path}")
    save_checkpoint(read_gguf(gguf_path), cache_path)
    print(f"[llm] wrote {cache_path} ({cache_path.stat().st_size / 1e6:.1f} MB)")
    return cache_path


# ----------------------------------------------------------------------------------------------------
# 3. Tokenizer and chat template

# Used when a conversation has no system message, as the GGUF's own chat template does.
DEFAULT_SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
_ROLES = ("system", "user", "assistant")
_REPLACEMENT_CHAR = "\ufffd"  # what a byte-level decode yields for an incomplete UTF-8 sequence


def _bpe(spec: TokenizerSpec, with_special_tokens: bool) -> Tokenizer:
    """SmolLM2's tokenizer: every digit its own piece, then GPT-2 byte-level BPE without a prefix space."""
    vocab = {token: i for i, token in enumerate(spec.tokens)}
    # Byte-level tokens spell a space as "Ġ", so the single space in a merge line is the separator.
    merges = [(left, right) for left, right in (line.split(" ", 1) for line in spec.merges)]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    if with_special_tokens:
        control = [
            token
            for token, kind in zip(spec.tokens, spec.token_types, strict=True)
            if kind == gguf.TokenType.CONTROL
        ]
        tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])
    return tokenizer


class ChatTokenizer:
    """Text <-> token ids, and ChatML prompts built so user text can never forge a control token."""

    def __init__(self, spec: TokenizerSpec) -> None:
        self._tokenizer = _bpe(spec, with_special_tokens=True)
        # The same BPE without the added-token matcher: "<|im_end|>" typed by a user stays plain text.
        self._ordinary = _bpe(spec, with_special_tokens=False)
        self.bos_id, self.eos_id, self.pad_id = spec.bos_id, spec.eos_id, spec.pad_id
        self.im_start_id = self._special_id("<|im_start|>")
        self.im_end_id = self._special_id("<|im_end|>")
        # eos is <|im_end|> for the instruct model; <|endoftext|> ends documents in pre-training.
        self.stop_ids = frozenset({spec.eos_id, self.im_end_id, self._special_id("<|endoftext|>")})

    def _special_id(self, token: str) -> int:
        token_id = self._tokenizer.token_to_id(token)
        if token_id is None:
            raise ValueError(f"tokenizer has no {token!r} token")
        return token_id

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; control tokens written in it (``<|im_start|>``) become their single id."""
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Token ids of ``text`` treating control-token spellings as ordinary characters."""
        return self._ordinary.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``, dropping control tokens."""
        return self._tokenizer.decode(list(ids), skip_special_tokens=True)

    def encode_chat(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """Token ids of the ChatML prompt ``format_chat(messages)``, ready for the assistant's reply.

        Equal to ``encode(format_chat(messages))`` except that message contents are encoded with
        ``encode_ordinary`` (added tokens split the text into independently pre-tokenized pieces anyway,
        so concatenating per-piece ids is exact).
        """
        ids: list[int] = []
        for role, content in _with_system_prompt(messages):
            ids += [self.im_start_id, *self.encode_ordinary(f"{role}\n{content}"), self.im_end_id]
            ids += self.encode_ordinary("\n")
        return [*ids, self.im_start_id, *self.encode_ordinary("assistant\n")]


def _with_system_prompt(messages: Sequence[dict[str, str]]) -> list[tuple[str, str]]:
    """(role, content) pairs, validated, with the model's default system prompt when none leads."""
    turns = [(m["role"], m["content"]) for m in messages]
    for role, _ in turns:
        if role not in _ROLES:
            raise ValueError(f"unknown chat role {role!r}; expected one of {_ROLES}")
    if not turns or turns[0][0] != "system":
        turns.insert(0, ("system", DEFAULT_SYSTEM_PROMPT))
    return turns


def format_chat(messages: Sequence[dict[str, str]]) -> str:
    """ChatML: ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message, then the reply's header."""
    body = "".join(
        f"<|im_start|>{role}\n{content}<|im_end|>\n" for role, content in _with_system_prompt(messages)
    )
    return body + "<|im_start|>assistant\n"


class IncrementalDecoder:
    """Turns generated token ids into text deltas that never end inside a multi-byte UTF-8 character.

    A byte-level token can carry half of a character (an emoji often spans two or three tokens), and
    decoding it alone gives U+FFFD. So ids are held back until their text stops ending in U+FFFD. Once it
    does, the held bytes end on a character boundary and the later text decodes independently of them,
    so they can be dropped: each id is decoded a bounded number of times.
    """

    def __init__(self, tokenizer: ChatTokenizer) -> None:
        self._tokenizer = tokenizer
        self._pending: list[int] = []

    def push(self, token_id: int) -> str:
        """The new text that ``token_id`` completes ("" while a character is still incomplete)."""
        self._pending.append(token_id)
        text = self._tokenizer.decode(self._pending)
        if text.endswith(_REPLACEMENT_CHAR):
            return ""
        self._pending.clear()
        return text

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character at the end decodes as U+FFFD)."""
        text = self._tokenizer.decode(self._pending)
        self._pending.clear()
        return text


# ----------------------------------------------------------------------------------------------------
# 4. The public chat API


class ChatLLM:
    """SmolLM2-135M-Instruct, ready to chat.

    Thread-safety: the weights are only read and every call builds its own KV cache, so calls never
    share mutable state; the service still calls it from one worker thread at a time. Generation runs
    in the thread that iterates ``stream_reply``.
    """

    def __init__(self, model: Llama, tokenizer: ChatTokenizer) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype

    @classmethod
    def load(cls, device: str = "cpu") -> ChatLLM:
        """Load from the fp16 cache in weights_dir, else from the GGUF (and write the cache)."""
        cache_path = smollm2_cache_path()
        checkpoint = load_checkpoint(cache_path) if cache_path.is_file() else None
        if checkpoint is None:
            checkpoint = read_gguf(smollm2_gguf_path())
            save_checkpoint(checkpoint, cache_path)
        return cls.from_checkpoint(checkpoint, device)

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint, device: str = "cpu") -> ChatLLM:
        # Build on the meta device (no memory, no random init) and adopt the loaded tensors; both load
        # paths go through the same fp16 weights, so they generate identically. Compute is fp32: on CPU
        # fp16 matmuls are slow and for a 135M model fp32 costs little.
        with torch.device("meta"):
            model = Llama(checkpoint.config)
        weights = {
            name: t.to(device=device, dtype=torch.float32) for name, t in checkpoint.state_dict.items()
        }
        model.load_state_dict(weights, strict=True, assign=True)
        tokenizer = ChatTokenizer(checkpoint.tokenizer)
        if tokenizer.vocab_size != checkpoint.config.vocab_size:
            raise ValueError("tokenizer and model disagree on the vocabulary size")
        return cls(model, tokenizer)

    def new_cache(self, max_len: int) -> KVCache:
        """An empty KV cache for one sequence of up to ``max_len`` tokens."""
        return KVCache(self.model.config, batch=1, max_len=max_len, device=self.device, dtype=self.dtype)

    # inference_mode wraps each forward, not the generator: a mode held across ``yield`` would leak
    # into whatever the consumer runs between deltas.
    @torch.inference_mode()
    def next_logits(self, ids: list[int], cache: KVCache) -> torch.Tensor:
        """Next-token logits [V] after feeding ``ids`` on top of ``cache`` (which they extend)."""
        idx = torch.tensor([ids], dtype=torch.long, device=self.device)  # [1, T]
        return self.model(idx, cache, last_only=True)[0, -1]  # [V]

    def generate_ids(
        self, prompt: list[int], max_new_tokens: int, temperature: float = 0.0, seed: int | None = None
    ) -> Iterator[int]:
        """Yield up to ``max_new_tokens`` sampled ids after ``prompt``, stopping before a stop token."""
        if max_new_tokens <= 0:
            return
        if temperature < 0:
            raise ValueError("temperature must be >= 0 (0 means greedy)")
        total = len(prompt) + max_new_tokens
        if total > self.model.config.max_seq_len:
            raise ValueError(
                f"prompt ({len(prompt)}) + max_new_tokens ({max_new_tokens}) exceeds the "
                f"{self.model.config.max_seq_len}-token context"
            )
        generator = None
        if seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(seed)
        cache = self.new_cache(total)
        logits = self.next_logits(prompt, cache)
        for step in range(max_new_tokens):
            if temperature == 0.0:
                token = int(logits.argmax())
            else:
                probs = torch.softmax(logits / temperature, dim=-1)
                token = int(torch.multinomial(probs, 1, generator=generator))
            if token in self.tokenizer.stop_ids:
                return
            yield token
            if step + 1 < max_new_tokens:  # the last token needs no forward pass after it
                logits = self.next_logits([token], cache)

    def stream_reply(
        self,
        messages: list[dict[str, str]],
        max_new_tokens: int = 48,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> Iterator[str]:
        """Yield text deltas of the assistant's reply, greedy by default; stops at <|im_end|>/eos."""
        decoder = IncrementalDecoder(self.tokenizer)
        prompt = self.tokenizer.encode_chat(messages)
        for token in self.generate_ids(prompt, max_new_tokens, temperature, seed):
            delta = decoder.push(token)
            if delta:
                yield delta
        tail = decoder.flush()
        if tail:
            yield tail

    def reply(
        self,
        messages: list[dict[str, str]],
        max_new_tokens: int = 48,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> str:
        """The whole reply of ``stream_reply`` as one string."""
        return "".join(self.stream_reply(messages, max_new_tokens, temperature, seed))


# ----------------------------------------------------------------------------------------------------
# CLI: a quick chat, and the numbers that matter for a real-time service

_BENCH_DECODE_TOKENS = 64  # single-token decode steps timed
# A system + user prompt of about 60 tokens: a voice agent's typical first-turn size.
_BENCH_CHAT = [
    {
        "role": "system",
        "content": "You are a friendly voice assistant. Answer in one short sentence, "
        "without lists or markdown, because your reply is spoken aloud.",
    },
    {
        "role": "user",
        "content": "Hi there! I am planning a trip to Paris next month. What is one thing I should not miss?",
    },
]


def _bench(device: str, threads: int) -> None:
    # Set once, before any torch work: raising the thread count later in a process (or running two
    # intra-op threads on 2 cores while anything else is busy) makes OpenMP's spinning workers stall.
    torch.set_num_threads(threads)
    had_cache = smollm2_cache_path().is_file()
    t0 = time.perf_counter()
    llm = ChatLLM.load(device)  # first, so it pays the one-off costs a service start pays
    source = "fp16 cache" if had_cache else "GGUF, writing the cache"
    print(f"ChatLLM.load() from {source}, fresh process: {time.perf_counter() - t0:.2f} s")
    t0 = time.perf_counter()
    ChatLLM.from_checkpoint(read_gguf(smollm2_gguf_path()), device)
    print(f"load from GGUF (read + dequantise + build), warm process: {time.perf_counter() - t0:.2f} s")

    prompt = llm.tokenizer.encode_chat(_BENCH_CHAT)
    llm.reply(_BENCH_CHAT, max_new_tokens=4)  # warm-up: first-call allocations, kernel selection
    t0 = time.perf_counter()
    next(llm.stream_reply(_BENCH_CHAT))
    ttft_ms = (time.perf_counter() - t0) * 1e3
    # Decode speed alone: after the prefill, time fixed-count greedy steps, ignoring stop tokens.
    cache = llm.new_cache(len(prompt) + _BENCH_DECODE_TOKENS)
    logits = llm.next_logits(prompt, cache)
    t0 = time.perf_counter()
    for _ in range(_BENCH_DECODE_TOKENS):
        logits = llm.next_logits([int(logits.argmax())], cache)
    decode_tps = _BENCH_DECODE_TOKENS / (time.perf_counter() - t0)
    print(
        f"threads={threads}: time to first token {ttft_ms:.0f} ms ({len(prompt)}-token chat prompt), "
        f"decode {decode_tps:.1f} tokens/s"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m model.llm", description="SmolLM2-135M-Instruct in torch")
    parser.add_argument("--device", default="cpu")
    sub = parser.add_subparsers(dest="command", required=True)
    chat = sub.add_parser("chat", help="answer one question, streaming")
    chat.add_argument("question")
    chat.add_argument("--max-new-tokens", type=int, default=128)
    bench = sub.add_parser("bench", help="print load times, decode tokens/s and time to first token")
    bench.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    args = parser.parse_args(argv)
    if args.command == "bench":
        _bench(args.device, args.threads)
        return
    llm = ChatLLM.load(args.device)
    for delta in llm.stream_reply([{"role": "user", "content": args.question}], args.max_new_tokens):
        print(delta, end="", flush=True)
    print()


if __name__ == "__main__":
    main()
