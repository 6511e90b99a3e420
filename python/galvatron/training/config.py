"""The training job's typed configuration: sections, file loading (YAML or TOML), dotted
command-line overrides (``--optim.lr 3e-4``), and the resolved dump saved in the run directory.

Precedence: defaults < config file < dedicated flags (``--steps``, ``--model``, ...) < dotted
overrides. Every unknown key is an error that lists the accepted keys of its section.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from galvatron._io import parse_json_text
from galvatron._safe_yaml import load_yaml
from galvatron._validate import check_float, check_str, short

MAX_CONFIG_BYTES = 1 << 20


@dataclass
class ModelSection:
    name: str = "gpt2-mini"  # a zoo flavour (galvatron models): a small GPT of 4 layers x 128 wide
    seq_len: int = 128
    dtype: str = "fp32"  # fp32 | bf16 (bf16 compute with fp32 master weights and reductions)
    overrides: dict[str, Any] = field(default_factory=dict)  # model config fields to change


@dataclass
class DataSection:
    # "" (default): follows the model (images for ViT/Swin, builtin for the others) |
    # builtin (shipped corpus) | tokens (pre-tokenized .bin) | megatron (PREFIX.bin + PREFIX.idx) |
    # images (synthetic)
    kind: str = ""
    path: str = ""  # tokens: a .bin file or a directory made by `galvatron data prepare`; megatron: PREFIX
    token_dtype: str = "auto"  # auto (from meta.json) | uint16 | uint32
    eval_fraction: float = 0.05


@dataclass
class OptimSection:
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup_steps: int = 5
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0
    nonfinite_patience: int = 0  # consecutive steps with a NaN/inf loss or grad norm before the job stops


class ParallelMode(str, enum.Enum):
    """How the job obtains its plan (``parallel.mode``)."""

    SEARCH = "search"  # search the plan (the default)
    UNIFORM = "uniform"  # one strategy for every layer, from parallel.pp/tp/sp/dp_type/...
    PLAN = "plan"  # the plan file parallel.plan
    DATA_PARALLEL = "data_parallel"  # plain data parallelism, no search


@dataclass
class ParallelSection:
    # "search" | "uniform" | "plan" | "data_parallel" (ParallelMode); "" (not given): "plan" when
    # a plan file is given, else "uniform" when pp > 0 (the --pp flag), else "search" ("data_parallel"
    # with search = false). The resolved mode is saved in RUN/config.yaml.
    mode: str = ""
    plan: str = ""  # a plan JSON (ours or Galvatron-2's)
    search: bool = True  # search a plan when no plan file is given
    pp: int = 0  # uniform mode: the pipeline degree (0: 1); pp > 0 without a mode selects uniform
    tp: int = 1
    sp: int = 1
    sp_kind: str = ""
    dp_type: str = "ddp"
    checkpoint: bool = False
    schedule: str = "1f1b"
    num_microbatches: int = 0  # 0: searched / 1 in uniform mode

    def resolve_mode(self) -> ParallelMode:
        """The explicit mode (see ``mode``), written back into ``mode``."""
        if not self.mode:
            if self.plan:
                self.mode = ParallelMode.PLAN.value
            elif self.pp > 0:
                self.mode = ParallelMode.UNIFORM.value
            else:
                self.mode = (ParallelMode.SEARCH if self.search else ParallelMode.DATA_PARALLEL).value
        try:
            mode = ParallelMode(self.mode)
        except ValueError:
            accepted = ", ".join(repr(m.value) for m in ParallelMode)
            raise ValueError(f"parallel.mode: {self.mode!r} is not accepted; accepted: {accepted}") from None
        if mode is ParallelMode.PLAN and not self.plan:
            raise ValueError("parallel.plan (a plan file) is required with parallel.mode = 'plan'")
        if self.pp < 0:
            raise ValueError(f"parallel.pp must be >= 0, got {self.pp}")
        return mode
    memory_gb: float = 0.0  # search budget per device; 0: the hardware profile's memory
    hardware_preset: str = ""  # default: cpu-gloo on CPU, a100-80g-sxm on CUDA
    hardware: str = ""  # a measured hardware profile JSON


@dataclass
class CheckpointSection:
    every: int = 20  # steps between checkpoints (0: only at the end)
    keep: int = 2
    export_hf: bool = False  # also write a Hugging Face directory at the end


@dataclass
class LoggingSection:
    every: int = 1
    eval_every: int = 0  # 0: no periodic evaluation
    eval_batches: int = 2
    tensorboard: bool = False


@dataclass
class TrainConfig:
    steps: int = 100
    seed: int = 1234
    global_batch_size: int = 16
    nproc: int = 4
    run_dir: str = ""  # default: a fresh runs/<model>-<time> (runs/latest points at it)
    resume: bool = False
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    parallel: ParallelSection = field(default_factory=ParallelSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    logging: LoggingSection = field(default_factory=LoggingSection)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> TrainConfig:
        for name in ("steps", "global_batch_size", "nproc"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name, hi in (("steps", 2**40), ("global_batch_size", 2**31 - 1), ("nproc", 4096)):
            if getattr(self, name) > hi:
                raise ValueError(f"{name} must be at most {hi}, got {getattr(self, name)}")
        if self.model.seq_len > 2**31 - 1:
            raise ValueError(f"model.seq_len must be at most {2**31 - 1}, got {self.model.seq_len}")
        if not 0 <= self.data.eval_fraction < 1:
            raise ValueError(f"data.eval_fraction must be in [0, 1), got {self.data.eval_fraction}")
        if self.model.dtype not in ("fp32", "bf16"):
            raise ValueError(f"model.dtype: {self.model.dtype!r} is not accepted; accepted: 'fp32', 'bf16'")
        _resolve_data_kind(self)
        self.parallel.resolve_mode()
        if self.data.kind not in ("builtin", "tokens", "megatron", "images"):
            raise ValueError(f"data.kind: {self.data.kind!r} is not accepted; accepted: 'builtin', 'tokens', "
                             "'megatron', 'images'")
        if self.data.kind in ("tokens", "megatron") and not self.data.path:
            raise ValueError(f"data.path is required with data.kind = '{self.data.kind}'")
        if self.model.seq_len < 2:
            raise ValueError(f"model.seq_len must be >= 2, got {self.model.seq_len}")
        if self.checkpoint.keep < 1:
            raise ValueError(f"checkpoint.keep must be >= 1, got {self.checkpoint.keep}")
        if self.optim.nonfinite_patience < 0:
            raise ValueError(f"optim.nonfinite_patience must be >= 0, got {self.optim.nonfinite_patience}")
        if not 0 <= self.optim.min_lr <= self.optim.lr:
            raise ValueError("optim.min_lr must be between 0 and optim.lr")
        return self


def _resolve_data_kind(cfg: TrainConfig) -> None:
    """The data follows the model: images for vision models (ViT, Swin), text otherwise; a text
    kind for a vision model (or images for a text model) is refused naming both."""
    from galvatron import models

    family = models.get_config(cfg.model.name).family  # unknown names: ValueError listing the zoo
    vision = family in ("vit", "swin")
    if not cfg.data.kind:
        cfg.data.kind = "images" if vision else "builtin"
    elif vision != (cfg.data.kind == "images") and cfg.data.kind in ("builtin", "tokens", "megatron", "images"):
        wanted = "'images'" if vision else "'builtin', 'tokens' or 'megatron'"
        raise ValueError(f"data.kind: {cfg.data.kind!r} does not fit model {cfg.model.name!r} ({family}); "
                         f"accepted for it: {wanted} (or leave data.kind unset: it follows the model)")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a file or command-line value to the annotated type of `key`, checking the type
    before anything else: a list or mapping in a string field is an error, not text; 7.9 or
    true in an integer field is an error, not 7 or 1; NaN and Infinity are refused."""
    origin = typing.get_origin(tp)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"{key}: expected true or false, got {short(value)}")
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{key}: expected str (a string), got {short(value)}")
        return check_str(value, key)
    if tp is int:
        if isinstance(value, str):
            text = value.strip()
            if text.lstrip("+-").isdigit() and len(text) <= 20:
                value = int(text)
            else:
                try:  # "1e3" from a command line
                    value = float(text) if len(text) <= 40 else None
                except ValueError:
                    value = None
        if isinstance(value, float) and math.isfinite(value) and value.is_integer() and abs(value) < 2**63:
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or abs(value) >= 2**63:
            raise ValueError(f"{key}: expected int (an integer), got {short(value)}")
        return value
    if tp is float:
        if isinstance(value, str) and len(value) <= 40:
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{key}: expected float (a number), got {short(value)}")
        return check_float(value, key, -1e300, 1e300)
    if origin is dict or tp is dict:
        if isinstance(value, str):
            try:
                value = parse_json_text(value, key)
            except ValueError:
                raise ValueError(f"{key}: expected a JSON object, got {short(value)}") from None
        if not isinstance(value, dict):
            raise ValueError(f"{key}: expected a mapping, got {short(value)}")
        return dict(value)
    if isinstance(tp, types.UnionType):
        return value
    return value


def _apply(obj: Any, data: dict[str, Any], prefix: str) -> None:
    hints = typing.get_type_hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj)]
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise ValueError(f"unknown config key {full!r}; accepted in this section: {', '.join(names)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ValueError(f"{full}: expected a section (mapping), got {value!r}")
            _apply(current, value, f"{full}.")
        else:
            setattr(obj, key, _coerce(value, hints[key], full))


def load_file(path: str) -> dict[str, Any]:
    """Read a YAML (.yaml/.yml) or TOML (.toml) config file into a dict."""
    if not os.path.exists(path):
        raise ValueError(f"{path}: config file not found")
    ext = os.path.splitext(path)[1].lower()
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise ValueError(f"{path}: cannot read: {e.strerror or e}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ValueError(f"{path}: larger than {MAX_CONFIG_BYTES >> 10} KiB; not a configuration file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a UTF-8 text file") from None
    try:
        text = raw.decode("utf-8")
        if ext == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            try:
                data = tomllib.loads(text)
            except tomllib.TOMLDecodeError as e:  # a ValueError: name the file here
                raise ValueError(f"{path}: cannot parse TOML: {e}") from None
        elif ext in (".yaml", ".yml"):
            data = load_yaml(text, path) or {}  # no aliases, bounded
        else:
            raise ValueError(f"{path}: unknown config format {ext!r}; accepted: .yaml, .yml, .toml")
    except ValueError:
        raise
    except Exception as e:  # parser errors of either format
        raise ValueError(f"{path}: cannot parse: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the top level must be a mapping")
    return data


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """['--optim.lr', '3e-4', '--model.name=gpt2-debug'] -> nested dict."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(items):
        item = items[i]
        if not item.startswith("--") or "." not in item.split("=")[0]:
            raise ValueError(f"unrecognised argument {item!r}; overrides look like --section.key VALUE")
        if "=" in item:
            key, value = item[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(items):
                raise ValueError(f"{item}: missing value")
            key, value = item[2:], items[i + 1]
            i += 2
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def build_config(file: str | None = None, flags: dict[str, Any] | None = None,
                 overrides: list[str] | None = None) -> TrainConfig:
    cfg = TrainConfig()
    if file:
        data = load_file(file)
        try:
            _apply(cfg, data, "")
        except ValueError as e:
            raise ValueError(f"{file}: {e}") from None
    if flags:
        _apply(cfg, {k: v for k, v in flags.items() if v is not None and "." not in k}, "")
        for k, v in flags.items():
            if v is not None and "." in k:
                sec, key = k.split(".", 1)
                _apply(cfg, {sec: {key: v}}, "")
    if overrides:
        _apply(cfg, parse_overrides(overrides), "")
    try:
        return cfg.validate()
    except ValueError as e:
        if file and _file_alone_invalid(data):  # the file's own values are at fault: name it
            raise ValueError(f"{file}: {e}") from None
        raise


def _file_alone_invalid(data: dict[str, Any]) -> bool:
    alone = TrainConfig()
    _apply(alone, data, "")
    try:
        alone.validate()
    except ValueError:
        return True
    return False


def dump_yaml(cfg: TrainConfig) -> str:
    import yaml

    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
