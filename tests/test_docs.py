"""The docs state facts the code also holds; these fail when the two drift apart: the package's
exports and docstring, the supported torch, the build options, the command-line options, and the
README's layout of the tree."""
import inspect
import os
import pathlib
import re

import pytest
import torch

import mmkernels

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PYPROJECT = (ROOT / "pyproject.toml").read_text()


def test_package_exports_and_docstring():
    for name in mmkernels.__all__:
        assert getattr(mmkernels, name) is not None, name
    packages = {p.name for p in (ROOT / "mmkernels").iterdir() if (p / "__init__.py").exists()}
    # mmkernels.ops is where the two functions live; they are exported at the top instead
    assert packages - {"ops"} == set(mmkernels._SUBPACKAGES) and set(mmkernels._SUBPACKAGES) <= set(mmkernels.__all__)
    plain = lambda text: re.sub(r"[\s'\"]", "", text)
    for fn in (mmkernels.cross_attention, mmkernels.concat_linear):  # the whole signature, defaults too
        args, star = [], False
        for p in inspect.signature(fn).parameters.values():
            if p.kind is p.KEYWORD_ONLY and not star:
                args, star = args + ["*"], True
            args.append(p.name + ("" if p.default is p.empty else f"={p.default}"))
        call = f"{fn.__name__}({', '.join(args)})"
        assert plain(call) in plain(mmkernels.__doc__), f"the docstring lacks {call}"
        assert plain(call) in plain(README), f"README lacks {call}"
    for name in ("nn", "models", "data", "bench", "examples", "integrations"):
        assert f"`{name}`" in mmkernels.__doc__, name


def test_supported_torch_is_stated_alike_and_installed():
    floor = re.search(r'"torch>=(\d+)\.(\d+)"', PYPROJECT)
    assert floor, "pyproject.toml must require torch>=X.Y"
    major, minor = int(floor.group(1)), int(floor.group(2))
    assert f"Supported\ntorch: {major}.{minor} to" in README or f"Supported torch: {major}.{minor} to" in README
    assert f"`torch>={major}.{minor}`" in README
    assert tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]) >= (major, minor)


def test_every_build_option_is_in_the_readme_table():
    cmake = (ROOT / "CMakeLists.txt").read_text()
    options = set(re.findall(r"^(MMKERNELS_[A-Z_]+) =", PYPROJECT, re.M)) | set(re.findall(r"ENV\{(MMKERNELS_[A-Z_]+)\}", cmake))
    assert options, "no build options found"
    table = {m for m in re.findall(r"^\| `(MMKERNELS_[A-Z_]+)` \|", README, re.M)}
    assert options <= table, f"build options missing from README's table: {sorted(options - table)}"


def _options(capsys, main):
    with pytest.raises(SystemExit):
        main(["--help"])
    return set(re.findall(r"(--[a-z][a-z-]+)", capsys.readouterr().out)) - {"--help"}


@pytest.mark.parametrize("cli", ["mmkernels.bench.__main__", "mmkernels.examples.avdigits"])
def test_every_command_line_option_is_documented(cli, capsys):
    import importlib

    module = importlib.import_module(cli)
    options = _options(capsys, module.main)
    assert options
    for where, text in (("docstring", module.__doc__), ("README", README)):
        missing = sorted(o for o in options if not re.search(re.escape(o) + r"\b", text))
        assert not missing, f"{cli}: options missing from the {where}: {missing}"


def test_readme_layout_names_every_part_of_the_tree():
    layout = README[README.index("## Layout"):]
    layout = layout[layout.index("```") + 3:]
    layout = layout[:layout.index("```")]
    ignored = {"__pycache__", "results", "__init__.py"}
    entries = [".ci/" + p.name for p in (ROOT / ".ci").iterdir()] if (ROOT / ".ci").is_dir() else []
    for folder in ("mmkernels", "benchmarks", "scripts", "tests"):
        for p in (ROOT / folder).iterdir():
            if p.name in ignored or p.name.startswith(".") or p.suffix in (".so", ".pyc"):
                continue
            if folder == "tests" and p.is_file():
                continue  # test files are many and self-describing; tests/ and its folders are listed
            entries.append(p.name + ("/" if p.is_dir() else ""))
    missing = sorted(e for e in entries if e not in layout)
    assert not missing, f"README's Layout section does not mention: {missing}"
