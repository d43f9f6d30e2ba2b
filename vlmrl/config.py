"""Configs that say what they accept: every key of a composed config must mean something.

A node with ``_target_`` takes the keyword parameters of its target (a class's ``__init__``); a ``**kwargs``
parameter adds the keywords of the callables it is passed on to (``super().__init__(**kwargs)``,
``TimeLimit(PushEnv(**kwargs))``), read from the source. A ``**kwargs`` that is never passed on only swallows
keys, so it adds nothing; one passed to something unreadable (``gym.make(..., **kwargs)``) leaves the node open.
Plain sections of a job (``collect:``, ``relabel:``, the top level) take the keys their YAML declares.

    >>> from omegaconf import OmegaConf
    >>> cfg = OmegaConf.create({"labeler": {"_target_": "vlmrl.labelers.teacher.SimulatedTeacher", "bta": 1}})
    >>> try:
    ...     check_targets(cfg)
    ... except ConfigKeyError as err:
    ...     print(err)  # doctest: +ELLIPSIS
    unknown key labeler.bta for vlmrl.labelers.teacher.SimulatedTeacher; valid keys: beta, eps, ...
"""

from __future__ import annotations

import ast
import builtins
import functools
import inspect
import textwrap
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig
from omegaconf.errors import OmegaConfBaseException

HYDRA_KEYS = frozenset({"_target_", "_partial_", "_recursive_", "_convert_", "_args_"})
_KEYWORD = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
_MAX_FORWARDS = 4  # how many ``**kwargs`` hand-overs are followed before a target counts as open


class ConfigKeyError(ValueError):
    """A config key its node does not take, or a value of the wrong kind; the message is one line."""


@dataclass(frozen=True)
class Accepted:
    """The keyword arguments a ``_target_`` takes.

    Attributes:
        params: parameter name -> annotation (``inspect.Parameter.empty`` when there is none).
        open: True when a ``**kwargs`` goes to a callable whose keywords cannot be read, so any key may be valid.
    """

    params: dict[str, Any]
    open: bool


@functools.cache
def accepted_keys(target: str) -> Accepted | None:
    """The keywords ``target`` (a dotted path) takes; None when its module needs a package that is not installed.

    Raises:
        ConfigKeyError: ``target`` names nothing importable.
    """
    from hydra.utils import get_object

    try:
        obj = get_object(target)
    except Exception as err:
        missing = err.__cause__ if isinstance(err.__cause__, ModuleNotFoundError) else None
        if missing is not None and missing.name and not f"{target}.".startswith(f"{missing.name}."):
            return None  # an optional extra (nle, textworld ...): the job itself names the install
        raise ConfigKeyError(f"_target_ {target} cannot be imported: {_first_line(err.__cause__ or err)}") from None
    params, is_open = _accepted(obj, 0)
    return Accepted(params, is_open)


def _accepted(obj: Any, depth: int) -> tuple[dict[str, Any], bool]:
    if isinstance(obj, type):
        for owner in obj.__mro__:
            if "__init__" in vars(owner):
                return _accepted_init(obj, owner, depth)
        return {}, False
    return _accepted_function(obj, depth, skip_first=False, cls=None, owner=None)


def _accepted_init(cls: type, owner: type, depth: int) -> tuple[dict[str, Any], bool]:
    if owner is object:
        return {}, False
    return _accepted_function(vars(owner)["__init__"], depth, skip_first=True, cls=cls, owner=owner)


def _accepted_function(func: Any, depth: int, skip_first: bool, cls: type | None, owner: type | None):
    try:
        parameters = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return {}, True
    if skip_first:
        parameters = parameters[1:]
    params = {p.name: p.annotation for p in parameters if p.kind in _KEYWORD}
    var = next((p.name for p in parameters if p.kind is inspect.Parameter.VAR_KEYWORD), None)
    if var is None:
        return params, False
    if depth >= _MAX_FORWARDS:
        return params, True
    forwarded, is_open = _forwarded(func, var, depth, cls, owner)
    return {**params, **{k: v for k, v in forwarded.items() if k not in params}}, is_open


def _forwarded(func: Any, var: str, depth: int, cls: type | None, owner: type | None) -> tuple[dict[str, Any], bool]:
    """Keywords reached through ``**var`` inside ``func``: passed on to callees, or read by name."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    except (OSError, TypeError, SyntaxError):
        return {}, True
    parent = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    params: dict[str, Any] = {}
    is_open = False
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Name) and node.id == var and isinstance(node.ctx, ast.Load)):
            continue
        up = parent.get(node)
        if isinstance(up, ast.keyword) and up.arg is None:  # f(..., **var)
            call = parent[up]
            callee = _resolve(call.func, func, cls, owner)
            if callee is None:
                is_open = True
                continue
            got, callee_open = callee(depth + 1)
            taken = {kw.arg for kw in call.keywords if kw.arg} | set(list(got)[: len(call.args)])
            params.update({k: v for k, v in got.items() if k not in taken})
            is_open |= callee_open
        elif isinstance(up, ast.Attribute) and up.attr in ("pop", "get", "setdefault"):  # var.pop("key", ...)
            call = parent.get(up)
            if isinstance(call, ast.Call) and call.args and isinstance(call.args[0], ast.Constant):
                params.setdefault(str(call.args[0].value), inspect.Parameter.empty)
            else:
                is_open = True
        elif isinstance(up, ast.Subscript) and isinstance(up.slice, ast.Constant):  # var["key"]
            params.setdefault(str(up.slice.value), inspect.Parameter.empty)
        elif not isinstance(up, ast.Compare):  # "key" in var reads nothing
            is_open = True
    return params, is_open


def _resolve(expr: ast.expr, func: Any, cls: type | None, owner: type | None):
    """A function ``depth -> (params, open)`` for the callee ``expr`` of ``func``, or None when unreadable."""
    is_super = isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Call)
    if is_super and isinstance(expr.value.func, ast.Name) and expr.value.func.id == "super":
        if expr.attr != "__init__" or cls is None or owner is None:
            return None
        mro = cls.__mro__
        for nxt in mro[mro.index(owner) + 1 :]:
            if "__init__" in vars(nxt):
                return functools.partial(lambda depth, n: _accepted_init(cls, n, depth), n=nxt)
        return None
    names = []
    while isinstance(expr, ast.Attribute):
        names.append(expr.attr)
        expr = expr.value
    if not isinstance(expr, ast.Name):
        return None
    namespace = getattr(func, "__globals__", {})
    obj = namespace.get(expr.id, getattr(builtins, expr.id, None))
    for name in reversed(names):
        obj = getattr(obj, name, None)
    if obj is None or not callable(obj):
        return None
    return functools.partial(lambda depth, o: _accepted(o, depth), o=obj)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _join(path: str, key: Any) -> str:
    return f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else str(key))


def unknown_key(path: str, valid: Any, target: str | None = None) -> ConfigKeyError:
    """The one-line error for ``path``, which its node (of ``target``, if any) does not take."""
    where = f" for {target}" if target else ""
    names = sorted(str(k) for k in valid if k not in HYDRA_KEYS)
    choices = f"valid keys: {', '.join(names)}" if names else "it takes no keys"
    return ConfigKeyError(f"unknown key {path}{where}; {choices}")


def check_targets(cfg: Any, path: str = "") -> None:
    """Check every ``_target_`` node in ``cfg``: keys its target takes, and numbers where it wants numbers.

    Args:
        cfg: a composed config (any node of one); lists and nested nodes are walked.
        path: the dotted key of ``cfg`` in the whole config, for the message.

    Raises:
        ConfigKeyError: the first key that its target does not take, naming the keys it does take.
    """
    if isinstance(cfg, DictConfig) and not cfg._is_none() and not cfg._is_missing():
        if "_target_" in cfg:
            _check_target_node(cfg, path)
        children = [(key, cfg._get_node(key)) for key in cfg]
    elif isinstance(cfg, ListConfig) and not cfg._is_none() and not cfg._is_missing():
        children = [(i, cfg._get_node(i)) for i in range(len(cfg))]
    else:
        return
    for key, child in children:
        if isinstance(child, DictConfig | ListConfig):
            check_targets(child, _join(path, key))


def _check_target_node(node: DictConfig, path: str) -> None:
    target = str(node._target_)
    accepted = accepted_keys(target)
    if accepted is None:
        return
    for key in node:
        if key in HYDRA_KEYS:
            continue
        if key not in accepted.params:
            if accepted.open:
                continue
            raise unknown_key(_join(path, key), accepted.params, target)
        _check_value(node, key, accepted.params[key], _join(path, key), target)


_SCALARS = {"int", "float", "bool", "None"}


def _kinds(annotation: Any) -> set[str] | None:
    """The scalar kinds of an annotation made only of int/float/bool/None (else None: not checked)."""
    if isinstance(annotation, str):
        parts = {p.strip() for p in annotation.split("|")}
    elif isinstance(annotation, type):
        parts = {annotation.__name__}
    else:
        parts = {getattr(a, "__name__", str(a)) for a in getattr(annotation, "__args__", ())}
        parts = {"None" if p == "NoneType" else p for p in parts}
    return parts if parts and parts <= _SCALARS and parts != {"None"} else None


def _check_value(node: DictConfig, key: str, annotation: Any, path: str, target: str) -> None:
    kinds = _kinds(annotation)
    if kinds is None:
        return
    try:
        value = node[key]
    except OmegaConfBaseException:  # missing (???) or an interpolation that resolves only at run time
        return
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int) and kinds & {"int", "float", "bool"}:
        return
    if isinstance(value, float) and ("float" in kinds or ("int" in kinds and value.is_integer())):
        return
    wanted = " or ".join(k for k in ("int", "float", "bool") if k in kinds)
    raise ConfigKeyError(f"bad value {path}={value!r}: {target} takes {wanted}")


def check_plain_value(key: str, cfg: DictConfig, reference: DictConfig) -> None:
    """Check that ``key`` of a plain section (``seed``, ``collect.episodes``) has the kind of its YAML default.

    Args:
        key: the dotted key set on the command line.
        cfg: the composed config.
        reference: the same config composed without that setting (its value is the default).

    Raises:
        ConfigKeyError: the default is a number or a bool and the value is not one of that kind.
    """
    from omegaconf import OmegaConf

    try:
        value = OmegaConf.select(cfg, key, throw_on_missing=True)
        default = OmegaConf.select(reference, key, throw_on_missing=True)
    except OmegaConfBaseException:
        return
    if isinstance(default, bool):
        wanted = "bool" if not isinstance(value, bool) else None
    elif isinstance(default, int | float) and value is not None:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        integral = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        wanted = None if number and (isinstance(default, float) or integral) else type(default).__name__
    else:
        return
    if wanted is not None:
        shown = str(default).lower() if isinstance(default, bool) else repr(default)
        raise ConfigKeyError(f"bad value {key}={value!r}: {key} takes {wanted} (default {shown})")


def check_declared(cfg: Any, declared: Any, path: str = "", ignore: tuple[str, ...] = ()) -> None:
    """Check that the plain sections of ``cfg`` (no ``_target_`` on the way down) hold only keys of ``declared``.

    Args:
        cfg: the composed config (or a section of it).
        declared: the same config composed without the keys being checked (e.g. without ``+key=value``).
        path: the dotted key of ``cfg``, for the message.
        ignore: keys of ``cfg`` itself not to check (e.g. ``hydra``).

    Raises:
        ConfigKeyError: the first key ``declared`` lacks, naming the keys it has.
    """
    valid = list(declared) if isinstance(declared, DictConfig) and not declared._is_none() else []
    for key in cfg:
        if key in ignore:
            continue
        if key not in valid:
            raise unknown_key(_join(path, key), valid)
        child, ref = cfg._get_node(key), declared._get_node(key)
        if _is_plain(child) and (_is_plain(ref) or (ref is not None and ref._is_none())):
            check_declared(child, ref, _join(path, key))


def _is_plain(node: Any) -> bool:
    return isinstance(node, DictConfig) and not node._is_none() and not node._is_missing() and "_target_" not in node


def explain_struct_error(key: str, cfg: DictConfig) -> str:
    """One line for an override of ``key``, a key ``cfg`` (composed without that override) does not have."""
    parts = key.split(".")
    node, at = cfg, []
    for part in parts[:-1]:
        child = node._get_node(part) if isinstance(node, DictConfig) and part in node else None
        if not isinstance(child, DictConfig) or child._is_none():
            break
        node, at = child, [*at, part]
    missing = parts[len(at)]
    if "_target_" in node:
        target = str(node._target_)
        accepted = accepted_keys(target)
        if accepted is None or missing in accepted.params or accepted.open:
            return f"{key} is not in the config yet; add it with +{key}=..."
        return str(unknown_key(".".join([*at, missing]), accepted.params, target))
    return str(unknown_key(".".join([*at, missing]), list(node) if isinstance(node, DictConfig) else []))
