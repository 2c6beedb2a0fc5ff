"""ClvpEncoderConfig, ClvpDecoderConfig and ClvpConfig: the architecture's numbers, as transformers has them.

ref: transformers/models/clvp/configuration_clvp.py. Field names and defaults are transformers' own, so
`ClvpConfig()` describes the same model as transformers' `ClvpConfig()` (the susnato/clvp_dev shape),
and the config.json that transformers' save_pretrained writes loads here unchanged.

Reading is strict about what it knows and lenient about what it does not:
- a known key with a value of the wrong type raises ConfigError naming the key;
- so does a value the model cannot run with: a size below 1, a hidden size that does not split into
  the heads, an epsilon that is not a finite positive number, a token id outside its vocabulary;
- an unknown key (transformers writes many generic ones: "architectures", "dtype", "id2label", ...)
  is kept in `.extra` and written back by to_dict(), but is otherwise ignored.
Both checks run on construction (`__post_init__`), so `ClvpConfig(...)` and `from_dict` agree.
"""
from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path

from .io.files import read_json, write_atomic

__all__ = ["ConfigError", "ClvpEncoderConfig", "ClvpDecoderConfig", "ClvpConfig"]

CONFIG_NAME = "config.json"


class ConfigError(ValueError):
    """A configuration value has the wrong type or an unusable value, or a config file cannot be read."""


def _matches(value, hint) -> bool:
    """Does `value` (parsed from JSON) fit the type hint? Ints are accepted for floats; bools are not ints."""
    origin = typing.get_origin(hint)
    if origin is typing.Union:
        return any(_matches(value, h) for h in typing.get_args(hint))
    if origin in (list, tuple):
        (item,) = typing.get_args(hint)[:1]
        return isinstance(value, (list, tuple)) and all(_matches(v, item) for v in value)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


class _Config:
    """from_dict / to_dict / from_pretrained / save_pretrained and the checks, shared by the three configs."""

    model_type: typing.ClassVar[str]
    _PYCLVP_KEYS: typing.ClassVar[tuple] = ()  # keys transformers does not have (to_dict skips them at default)

    def __post_init__(self):
        self._check_types()
        self._check_values()

    def _check_types(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name != "extra" and not _matches(value, hints[f.name]):
                raise ConfigError(f"{_key(self, f.name)}: expected {_hint_name(hints[f.name])}, got {value!r}")

    def _check_values(self) -> None:
        """Raise ConfigError naming the key of the first value the model cannot run with (types are checked)."""

    @classmethod
    def from_dict(cls, d: dict):
        if not isinstance(d, dict):
            raise ConfigError(f"{cls.__name__}: expected a dict, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls) if f.name != "extra"}
        known = {key: value for key, value in d.items() if key in names}
        return cls(**known, extra={key: value for key, value in d.items() if key not in names})

    def to_dict(self) -> dict:
        out = dict(self.extra)
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if f.name in self._PYCLVP_KEYS and value == f.default:
                continue  # pyclvp's own keys are written only when set, so transformers' dicts round-trip
            out[f.name] = value.to_dict() if isinstance(value, _Config) else (
                list(value) if isinstance(value, tuple) else value)
        out["model_type"] = self.model_type
        return out

    @classmethod
    def from_pretrained(cls, path):
        """A folder holding config.json, or the path of a JSON file."""
        path = Path(path)
        file = path / CONFIG_NAME if path.is_dir() else path
        try:
            d = read_json(file)
        except FileNotFoundError:
            raise ConfigError(f"no config file at {file}") from None
        except ValueError as e:
            raise ConfigError(str(e)) from None
        cls._check_recognised(d, file)
        return cls.from_dict(d)

    @classmethod
    def _check_recognised(cls, d, file) -> None:
        """Refuse a file that is not this kind of configuration (another model's, or none of its keys) instead
        of running on defaults: from_dict would keep unknown keys in `extra` and fill in every known one."""
        if not isinstance(d, dict):
            return  # from_dict says "expected a dict"
        names = {f.name for f in dataclasses.fields(cls) if f.name != "extra"}
        other = d.get("model_type")
        if isinstance(other, str) and other != cls.model_type:
            raise ConfigError(f"{file} is a {other!r} configuration, not {cls.model_type!r} ({cls.__name__})")
        if not names & d.keys():
            keys = ", ".join(list(d)[:5]) + (f" and {len(d) - 5} more" if len(d) > 5 else "") if d else "none"
            raise ConfigError(f"{file} is not a {cls.__name__}: none of its keys ({keys}) is one "
                              f"(expected e.g. {', '.join(sorted(names)[:3])})")

    def save_pretrained(self, directory) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        out = directory / CONFIG_NAME
        write_atomic(out, (json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n").encode())
        return out


def _hint_name(hint) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


# ----------------------------------------------------------------------------------------------
# Value checks (each raises ConfigError naming the key)


def _key(cfg, key: str) -> str:
    return f"{type(cfg).__name__}.{key}"


# Upper bounds, checked before anything is allocated or built per layer: orders of magnitude above any model of
# this family (Tortoise: 30 layers, 16 heads, 1024 wide, 8194 codes), and low enough that a config can never
# ask for gigabytes of specs or error messages.
MAX_COUNT = 1024  # layers, heads, blocks
MAX_SIZE = 1 << 20  # widths, vocabularies, position tables
_COUNT_KEYS = ("num_hidden_layers", "num_attention_heads", "num_mel_attn_blocks")


def _check_positive(cfg, *keys: str) -> None:
    """Sizes and counts: integers in [1, MAX_SIZE] (counts of layers and heads: [1, MAX_COUNT]); None is left
    alone: it means "derive it"."""
    for key in keys:
        value = getattr(cfg, key)
        top = MAX_COUNT if key in _COUNT_KEYS else MAX_SIZE
        if value is not None and value < 1:
            raise ConfigError(f"{_key(cfg, key)}: expected an integer >= 1, got {value!r}")
        if value is not None and value > top:
            raise ConfigError(f"{_key(cfg, key)}: expected an integer <= {top} (far above any real model), "
                              f"got {value!r}")


def _check_epsilon(cfg, key: str) -> None:
    value = getattr(cfg, key)
    try:
        ok = math.isfinite(value) and value > 0
    except OverflowError:  # an integer past float's range (1e400 written out): not an epsilon either
        ok = False
    if not ok:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise ConfigError(f"{_key(cfg, key)}: expected a finite number > 0, got {shown}")


def _check_heads(cfg) -> None:
    # ref: ClvpSelfAttention.__init__ and GPT2Attention.__init__: "embed_dim must be divisible by num_heads"
    if cfg.hidden_size % cfg.num_attention_heads:
        raise ConfigError(f"{_key(cfg, 'hidden_size')} ({cfg.hidden_size}) must be divisible by "
                          f"{_key(cfg, 'num_attention_heads')} ({cfg.num_attention_heads})")


def _check_token_id(where: str, value, vocab_size: int, vocab_key: str) -> None:
    """`value` is one id that the model embeds or compares: an int in [0, vocab_size)."""
    if not (isinstance(value, int) and 0 <= value < vocab_size):
        raise ConfigError(f"{where}: expected a token id in [0, {vocab_size}) ({vocab_key}), got {value!r}")


@dataclass
class ClvpEncoderConfig(_Config):
    """The text or speech encoder (ClvpEncoder): rotary pre-RMSNorm transformer + summary + projection."""

    model_type: typing.ClassVar[str] = "clvp_encoder"
    _PYCLVP_KEYS: typing.ClassVar[tuple] = ("rms_norm_style",)
    vocab_size: int = 256
    hidden_size: int = 768
    intermediate_size: int = 1536
    projection_dim: int = 768
    num_hidden_layers: int = 20
    num_attention_heads: int = 12
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5
    attention_dropout: float = 0.1
    dropout: float = 0.1
    use_rotary_embedding: bool = True
    use_attention_bias: bool = False
    summary_type: str = "mean"
    initializer_factor: float = 1.0
    bos_token_id: typing.Optional[int] = 255
    eos_token_id: typing.Union[int, typing.List[int], None] = 0
    pad_token_id: typing.Optional[int] = None
    # pyclvp's own key: "transformers" (ClvpRMSNorm: eps inside the square root, layer_norm_eps) or "tortoise"
    # (x-transformers' RMSNorm, which Tortoise's CLVP was trained with: the RMS clamped at 1e-8); convert-tortoise
    # writes "tortoise"; transformers ignores the key
    rms_norm_style: str = "transformers"
    extra: dict = field(default_factory=dict, repr=False, compare=False)

    def _check_values(self) -> None:
        if self.rms_norm_style not in ("transformers", "tortoise"):
            raise ConfigError(f"{_key(self, 'rms_norm_style')}: expected 'transformers' or 'tortoise', "
                              f"got {self.rms_norm_style!r}")
        # The token ids are checked by ClvpConfig: only the text encoder's are used (as text tokens), and
        # a Tortoise conversion gives the speech encoder the decoder's start/stop ids, outside its vocabulary.
        _check_positive(self, "vocab_size", "hidden_size", "intermediate_size", "projection_dim",
                        "num_hidden_layers", "num_attention_heads")
        _check_heads(self)
        _check_epsilon(self, "layer_norm_eps")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def rotary_dim(self) -> int:
        # ref: ClvpRotaryPositionalEmbedding.__init__
        return max(self.projection_dim // (self.num_attention_heads * 2), 32)


@dataclass
class ClvpDecoderConfig(_Config):
    """The autoregressive speech-token decoder (GPT-2 style) and its conditioning encoder."""

    model_type: typing.ClassVar[str] = "clvp_decoder"
    vocab_size: int = 8194
    max_position_embeddings: int = 608
    max_text_tokens: int = 404
    hidden_size: int = 1024
    num_hidden_layers: int = 30
    num_attention_heads: int = 16
    n_inner: typing.Optional[int] = None
    num_mel_attn_blocks: int = 6
    activation_function: str = "gelu_new"
    resid_pdrop: float = 0.1
    embd_pdrop: float = 0.1
    attention_dropout: float = 0.1
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    summary_type: str = "cls_index"
    summary_use_proj: bool = True
    summary_activation: typing.Optional[str] = None
    summary_proj_to_labels: bool = True
    summary_first_dropout: float = 0.1
    use_cache: bool = True
    bos_token_id: typing.Optional[int] = 8192
    eos_token_id: typing.Union[int, typing.List[int], None] = 8193
    pad_token_id: typing.Optional[int] = None
    feature_size: int = 80
    use_attention_bias: bool = True
    initializer_factor: float = 1.0
    decoder_fixing_codes: typing.List[int] = field(default_factory=lambda: [83, 45, 45, 248])
    add_cross_attention: bool = False
    extra: dict = field(default_factory=dict, repr=False, compare=False)

    def _check_values(self) -> None:
        _check_positive(self, "vocab_size", "max_position_embeddings", "max_text_tokens", "hidden_size",
                        "num_hidden_layers", "num_attention_heads", "n_inner", "num_mel_attn_blocks", "feature_size")
        _check_heads(self)
        _check_epsilon(self, "layer_norm_epsilon")
        for key in ("bos_token_id", "eos_token_id"):  # the start token embedded first; the stop token
            _check_token_id(_key(self, key), getattr(self, key), self.vocab_size, "vocab_size")
        # ref: ClvpModelForConditionalGeneration.fix_speech_decoder_output reads codes[0] and codes[1:]
        # (ClvpConfig checks the codes against the speech encoder's vocabulary, which embeds them)
        if not self.decoder_fixing_codes:
            raise ConfigError(f"{_key(self, 'decoder_fixing_codes')}: expected at least one token id, got []")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def inner_dim(self) -> int:
        return self.n_inner if self.n_inner is not None else 4 * self.hidden_size


@dataclass
class ClvpConfig(_Config):
    """The whole model: text encoder, speech encoder, decoder, and the shared projection settings."""

    model_type: typing.ClassVar[str] = "clvp"
    text_config: ClvpEncoderConfig = field(default_factory=ClvpEncoderConfig)
    speech_config: ClvpEncoderConfig = field(default_factory=ClvpEncoderConfig)
    decoder_config: ClvpDecoderConfig = field(default_factory=ClvpDecoderConfig)
    projection_dim: int = 768
    logit_scale_init_value: float = 2.6592
    initializer_factor: float = 1.0
    extra: dict = field(default_factory=dict, repr=False, compare=False)

    _SUB = {"text_config": ClvpEncoderConfig, "speech_config": ClvpEncoderConfig, "decoder_config": ClvpDecoderConfig}

    def __post_init__(self):
        for key, cls in self._SUB.items():
            setattr(self, key, self._sub_config(key, cls, getattr(self, key)))
        super().__post_init__()

    @staticmethod
    def _sub_config(key, cls, value):
        """A sub-config from None (the defaults), a dict or an instance; its errors say which sub-config."""
        if isinstance(value, cls):
            return value
        if value is not None and not isinstance(value, dict):
            raise ConfigError(f"ClvpConfig.{key}: expected a dict or {cls.__name__}, got {type(value).__name__}")
        try:
            return cls() if value is None else cls.from_dict(value)
        except ConfigError as e:
            raise ConfigError(f"{key}: {e}") from None

    def _check_values(self) -> None:
        _check_positive(self, "projection_dim")
        t, d = self.text_config, self.decoder_config
        for key in ("bos_token_id", "eos_token_id"):  # put around every text (conditioning and text encoder)
            _check_token_id(f"text_config: {_key(t, key)}", getattr(t, key), t.vocab_size, "vocab_size")
        for code in d.decoder_fixing_codes:  # they replace the decoder's output, then the speech encoder embeds them
            _check_token_id(f"decoder_config: {_key(d, 'decoder_fixing_codes')}", code,
                            self.speech_config.vocab_size, "speech_config.vocab_size")
