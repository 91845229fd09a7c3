"""The CLI's plumbing: typer options built from the config dataclasses, ``--config`` YAML checked against the
commands, and known errors printed as one line.

``verb(app, configs={"cfg": RunConfig})`` turns every field of ``RunConfig`` (nested configs included) into
an option with the field's help, and calls the verb with a built ``RunConfig`` as ``cfg=``; the verb's own
parameters (arguments, output paths) are kept as written.
"""

from __future__ import annotations

import functools
import inspect
import os
import typing
from dataclasses import MISSING, fields, is_dataclass
from pathlib import Path

import typer
from rich.console import Console

from siftlm.config import UsageError, closest, parse_number
from siftlm.errors import SiftlmError
from siftlm.files import disk_error, read_yaml

err_console = Console(stderr=True)
# Errors of Python or a library that are the user's mistake, not siftlm's: a path that is not there or not a file,
# a place that cannot be read. They are said in one line like siftlm's own; everything else is a bug in siftlm and
# keeps its traceback.
KNOWN_MISTAKES = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


class Fail(SiftlmError):
    """A user-facing failure of the CLI itself: printed as ``error: <message>``, exit code 1."""


def fail(message: str, code: int = 1):
    err_console.print(f"[red]error:[/red] {message}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(code)


def _message(e: BaseException) -> str:
    if disk_error(e):
        return disk_error(e)
    if isinstance(e, OSError) and not isinstance(e, SiftlmError) and e.filename:     # "[Errno 2] No such file..."
        return f"{e.filename}: {e.strerror or type(e).__name__}"
    msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    return " ".join(str(msg).split()) if msg else type(e).__name__


def _say(e: BaseException):
    """``error: <one line>`` and the exit code (2 for a usage error, 1 otherwise); with SIFTLM_DEBUG set, the
    traceback instead."""
    if os.environ.get("SIFTLM_DEBUG"):
        raise e
    fail(_message(e), code=getattr(e, "exit_code", 1))


def _default(f):
    return f.default if f.default is not MISSING else f.default_factory()


def _flatten(cls, prefix: tuple = ()) -> list[tuple[tuple, object, object, type]]:
    """(path of field names, field, resolved type, owning config class) of every CLI-visible leaf field of a
    config, recursing into nested configs."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in fields(cls):
        if f.default_factory is not MISSING and is_dataclass(f.default_factory):
            out += _flatten(f.default_factory, prefix + (f.name,))
        elif not f.metadata.get("hidden"):
            out.append((prefix + (f.name,), f, hints[f.name], cls))
    return out


def _numeric(typ) -> bool:
    """int | float (| None): written on the command line as text, parsed by ``parse_number`` (10 vs 0.1 vs 1.0)."""
    args = set(typing.get_args(typ))
    return {int, float} <= args


def _option(f, typ, default, flag: str, why: str | None = None):
    help_ = f.metadata.get("help", "") + (f"; here {default}: {why}" if why else "")
    if f.metadata.get("argument"):
        optional = f.metadata["argument"] == "optional"
        return typer.Argument(None if optional else (... if default in ("", None) else default), help=help_,
                              show_default=False)
    if typ is bool:
        names = [flag, *f.metadata.get("aliases", ())]
        return typer.Option(default, *(f"--{n}/--no-{n}" for n in names), help=help_)
    return typer.Option(default, f"--{flag}", *(f"--{a}" for a in f.metadata.get("aliases", ())), help=help_)


def _build(cls, values: dict[tuple, object]):
    """A config from {field path: value}; fields not given keep their defaults."""
    kwargs = {}
    for f in fields(cls):
        if f.default_factory is not MISSING and is_dataclass(f.default_factory):
            sub = {path[1:]: v for path, v in values.items() if path[0] == f.name}
            kwargs[f.name] = _build(f.default_factory, sub)
        elif (f.name,) in values:
            kwargs[f.name] = values[(f.name,)]
    return cls(**kwargs)


def _given(ctx, pname: str) -> bool:
    """Whether option ``pname`` was set on the command line, by the environment or by a --config file."""
    source = ctx.get_parameter_source(pname)
    return source is not None and source.name != "DEFAULT"     # typer's click and click's own enums differ


def verb(parent: typer.Typer, name: str | None = None, *, configs: dict[str, type] | None = None,
         exclude: set[str] = frozenset(), defaults: dict | None = None, presets: dict | None = None,
         preset_help: str = ""):
    """Register ``fn`` as a command whose options include every field of ``configs`` (minus ``exclude``, with
    ``defaults`` overriding the config's own); the built configs are passed by their key. With ``presets``, a
    ``--preset`` option sets the preset's fields that were not given explicitly. siftlm's own errors
    (``SiftlmError``: bad data, missing files, wrong options) and the few library errors that are the user's
    mistake (``KNOWN_MISTAKES``, a full disk) are printed as one line (exit code 2 for a usage error, 1 otherwise);
    anything else keeps its traceback."""
    configs, defaults = configs or {}, defaults or {}

    def deco(fn):
        hints = typing.get_type_hints(fn)
        own = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in inspect.signature(fn).parameters.values()
               if p.name not in configs]
        names = {p.name for p in own}
        owners: dict[str, list[tuple[str, tuple]]] = {}
        sources: dict[str, tuple[str, str]] = {}        # option -> (config class, field): what a preset sets
        numeric: set[str] = set()                       # int | float options, parsed from their text
        fixed: list[tuple[str, tuple, object]] = []     # excluded options with a verb-specific default
        extra = []
        for key, cls in configs.items():
            for path, f, typ, owner in _flatten(cls):
                flag = f.metadata.get("cli") or f.name.replace("_", "-")
                pname = flag.replace("-", "_")
                default, why = defaults.get(pname, (_default(f), None)) if isinstance(defaults.get(pname), tuple) \
                    else (defaults.get(pname, _default(f)), None)
                if pname in exclude:
                    if pname in defaults:
                        fixed.append((key, path, default))
                    continue
                if pname in names:
                    raise TypeError(f"{fn.__name__}: option --{flag} of {cls.__name__} clashes with a parameter")
                if pname in owners:     # one option feeds every config that has it (e.g. --seed)
                    first = extra[[p.name for p in extra].index(pname)].default.default
                    if first != default:
                        raise TypeError(f"{fn.__name__}: --{flag} has defaults {first!r} and {default!r}")
                    owners[pname].append((key, path))
                    continue
                owners[pname] = [(key, path)]
                sources[pname] = owner.__name__, f.name
                if _numeric(typ):
                    numeric.add(pname)
                    typ, default = typing.Optional[str], None if default is None else str(default)
                extra.append(inspect.Parameter(pname, inspect.Parameter.KEYWORD_ONLY,
                                               default=_option(f, typ, default, flag, why), annotation=typ))

        def build(ctx, kw: dict) -> dict:
            """The verb's configs from the parsed options (preset values where an option was not given)."""
            values: dict[str, dict] = {key: {} for key in configs}
            for key, path, v in fixed:
                values[key][path] = v
            preset = kw.pop("preset", None) if presets else None
            if preset is not None and preset not in presets:
                raise UsageError(f"unknown preset {preset!r}{closest(preset, presets)}; known: {', '.join(presets)}")
            for pname, targets in owners.items():
                v = kw.pop(pname)
                if pname in numeric and v is not None:
                    v = parse_number(v)
                cls_name, fname = sources[pname]
                if preset and fname in presets[preset].get(cls_name, {}) and not _given(ctx, pname):
                    v = presets[preset][cls_name][fname]
                for key, path in targets:
                    values[key][path] = str(v) if isinstance(v, Path) else v
            return {key: _build(cls, values[key]) for key, cls in configs.items()}

        @functools.wraps(fn)
        def wrapper(**kw):
            ctx = kw.pop("siftlm_ctx")
            try:
                built = build(ctx, kw)
                return fn(**kw, **built)
            except SiftlmError as e:                    # siftlm's own: one line
                _say(e)
            except KNOWN_MISTAKES as e:                 # a library's, but the user's mistake: one line too
                _say(e)
            except OSError as e:                        # a full disk or a read-only place, whoever wrote: one line
                if not disk_error(e):
                    raise                               # anything else is a bug: its traceback is kept
                _say(e)

        # typer tells arguments from options by their default; all are passed by keyword
        if presets:
            extra.append(inspect.Parameter("preset", inspect.Parameter.KEYWORD_ONLY, annotation=typing.Optional[str],
                                           default=typer.Option(None, help=preset_help)))
        extra.append(inspect.Parameter("siftlm_ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context))
        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own + extra]
        wrapper.__signature__ = inspect.Signature(params)
        wrapper.__annotations__ = {p.name: p.annotation for p in params}    # resolved types, not strings
        del wrapper.__wrapped__
        return parent.command(name)(wrapper)
    return deco


def load_config(path: Path, group) -> dict:
    """``--config`` YAML as click's default_map: ``{command: {option: value}}`` (dashes or underscores), with
    ``{analyze: {dpo-length: {...}}}`` for sub-commands. An unknown command or option is an error naming it and
    the closest known one."""
    try:
        spec = read_yaml(path)
    except SiftlmError as e:
        raise Fail(str(e)) from e
    return _check(spec, group, str(path))


def _check(spec, command, where: str) -> dict:
    if not isinstance(spec, dict):
        raise Fail(f"{where}: expected a mapping, got {type(spec).__name__}")
    subcommands = getattr(command, "commands", None)
    out = {}
    if subcommands is not None:
        for key, value in spec.items():
            if key not in subcommands:
                raise Fail(f"{where}: unknown command {key!r}{closest(str(key), subcommands)}; known: "
                           f"{', '.join(subcommands)}")
            out[key] = _check(value, subcommands[key], f"{where}: {key}")
        return out
    params = {p.name for p in command.params}
    for key, value in spec.items():
        name = str(key).replace("-", "_")
        if name not in params:
            raise Fail(f"{where}: unknown option {key!r}{closest(name, params)}; known: {', '.join(sorted(params))}")
        out[name] = value
    return out
