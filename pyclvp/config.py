"""ClvpEncoderConfig, ClvpDecoderConfig and ClvpConfig: the architecture's numbers, as transformers has them.

ref: transformers/models/clvp/configuration_clvp.py. Field names and defaults are transformers' own, so
`ClvpConfig()` describes the same model as transformers' `ClvpConfig()` (the susnato/clvp_dev shape),
and the config.json that transformers' save_pretrained writes loads here unchanged.

Reading is strict about what it knows and lenient about what it does not:
- a known key with a value of the wrong type raises ConfigError naming the key;
- an unknown key (transformers writes many generic ones: "architectures", "dtype", "id2label", ...)
  is kept in `.extra` and written back by to_dict(), but is otherwise ignored.
"""
from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ConfigError", "ClvpEncoderConfig", "ClvpDecoderConfig", "ClvpConfig"]

CONFIG_NAME = "config.json"


class ConfigError(ValueError):
    """A configuration value has the wrong type, or a config file cannot be read."""


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
    """from_dict / to_dict / from_pretrained / save_pretrained, shared by the three configs."""

    model_type: typing.ClassVar[str]

    @classmethod
    def _hints(cls):
        return typing.get_type_hints(cls)

    @classmethod
    def from_dict(cls, d: dict):
        if not isinstance(d, dict):
            raise ConfigError(f"{cls.__name__}: expected a dict, got {type(d).__name__}")
        hints, known, extra = cls._hints(), {}, {}
        names = {f.name for f in dataclasses.fields(cls) if f.name != "extra"}
        for key, value in d.items():
            if key not in names:
                extra[key] = value
            elif not _matches(value, hints[key]) and not cls._is_sub_config(key, value):
                raise ConfigError(f"{cls.__name__}.{key}: expected {_hint_name(hints[key])}, got {value!r}")
            else:
                known[key] = value
        return cls(**known, extra=extra)

    @classmethod
    def _is_sub_config(cls, key, value) -> bool:
        return False

    def to_dict(self) -> dict:
        out = dict(self.extra)
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
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
            d = json.loads(file.read_text())
        except FileNotFoundError:
            raise ConfigError(f"no config file at {file}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{file} is not valid JSON: {e}") from None
        return cls.from_dict(d)

    def save_pretrained(self, directory) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        out = directory / CONFIG_NAME
        out.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return out


def _hint_name(hint) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


@dataclass
class ClvpEncoderConfig(_Config):
    """The text or speech encoder (ClvpEncoder): rotary pre-RMSNorm transformer + summary + projection."""

    model_type: typing.ClassVar[str] = "clvp_encoder"
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
    extra: dict = field(default_factory=dict, repr=False, compare=False)

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
            value = getattr(self, key)
            if value is None:
                setattr(self, key, cls())
            elif isinstance(value, dict):
                setattr(self, key, cls.from_dict(value))
            elif not isinstance(value, cls):
                raise ConfigError(f"ClvpConfig.{key}: expected a dict or {cls.__name__}, got {type(value).__name__}")

    @classmethod
    def _is_sub_config(cls, key, value) -> bool:
        return key in cls._SUB and (value is None or isinstance(value, dict))
