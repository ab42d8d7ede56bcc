"""BUILD names every Python file, with the dependencies its code uses.

`build_problems(root)` executes the Starlark of root/BUILD with stub rule
functions (no Bazel needed) and lists:
- each .py file of tf_lbsgd/, tests/ and tools/ in no srcs (or main) of a
  py_library / py_binary / py_test;
- srcs, data or main naming a file that does not exist, and deps naming no
  target;
- an import of a tf_lbsgd module (also `pytest.importorskip("...")` and
  `importlib.import_module("...")`) or of a sibling module (`from helpers
  import ...`) whose file is neither in the target's own srcs nor in those
  of a direct dep; a package __init__.py
  missing from the target's transitive srcs;
- a file named in the code ("launch_local.py", `"-m", "tf_lbsgd"`, the
  `tf-lbsgd` console script of pyproject.toml) missing from the target's runfiles
  (srcs, data and deps, transitively);
- a py_test without a size, or that does not run its test files through
  pytest (main tests/bazel_pytest_main.py, args = its tests/test_*.py).
"""

import ast
import functools
import glob as globlib
import os
import pathlib
import re
import shutil
import textwrap
import tomllib

import pytest

REPO_ROOT = pathlib.Path(os.path.abspath(__file__)).parents[1]
RUNNER = "tests/bazel_pytest_main.py"
PY_RULES = ("py_library", "py_binary", "py_test")
REQUIRED_GLOBS = ("tf_lbsgd/**/*.py", "tests/*.py", "tools/*.py",
                  "examples/*.py")


def load_build(root):
    """Returns {name: attributes (with "kind")} of the targets of root/BUILD."""
    root = pathlib.Path(root)
    targets = {}

    def rule(kind):
        def record(name, **attrs):
            targets[name] = dict(attrs, kind=kind, name=name)
        return record

    def glob(include, exclude=(), **_):
        found = set()
        for pattern in include:
            found.update(globlib.glob(pattern, root_dir=root, recursive=True))
        for pattern in exclude:
            found.difference_update(
                globlib.glob(pattern, root_dir=root, recursive=True))
        return sorted(f for f in found if (root / f).is_file())

    rules = {kind: rule(kind)
             for kind in PY_RULES + ("filegroup", "alias", "test_suite")}

    def load(label, *symbols):
        """Runs the .bzl file of `label` (//:path) with native.<rule>."""
        assert label.startswith("//:"), label
        path = root / label[3:]
        module = {"native": type("native", (), rules), "fail": _fail}
        exec(compile(path.read_text(), str(path), "exec"), module)  # pylint: disable=exec-used
        namespace.update({symbol: module[symbol] for symbol in symbols})

    namespace = dict(rules, glob=glob, load=load,
                     package=lambda **kwargs: None,
                     exports_files=lambda *args, **kwargs: None)
    path = root / "BUILD"
    exec(compile(path.read_text(), str(path), "exec"), namespace)  # pylint: disable=exec-used
    return targets


def _fail(message):
    raise ValueError(message)


def _label_name(label):
    return label[3:] if label.startswith("//:") else label.lstrip(":")


def _module_file(root, module):
    """Returns the file of dotted `module` under root, or None."""
    base = pathlib.Path(root, *module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate.relative_to(root).as_posix()
    return None


def _package_inits(root, path):
    """The __init__.py files of the packages that contain `path`."""
    inits = []
    directory = pathlib.PurePosixPath(path).parent
    while str(directory) != "." and (pathlib.Path(root) / directory
                                     / "__init__.py").is_file():
        inits.append((directory / "__init__.py").as_posix())
        directory = directory.parent
    return inits


def _console_scripts(root):
    """{"tf-lbsgd": "tf_lbsgd/cli.py"} from [project.scripts] of
    pyproject.toml."""
    pyproject = pathlib.Path(root, "pyproject.toml")
    if not pyproject.is_file():
        return {}
    entries = tomllib.loads(pyproject.read_text()).get("project", {}).get(
        "scripts", {})
    scripts = {}
    for name, entry in entries.items():
        path = _module_file(root, entry.split(":")[0])
        if path:
            scripts[name] = path
    return scripts


def _uses(root, path, scripts):
    """Returns (modules, referenced) of Python file `path`: the files that
    its imports need from its own target or a direct dep,
    and the files it names (scripts it runs or reads) that must be anywhere
    in its runfiles."""
    source = pathlib.Path(root, path).read_text()
    tree = ast.parse(source, filename=path)
    here = pathlib.PurePosixPath(path).parent
    modules, referenced = set(), set()

    def need_module(name):
        first = name.split(".")[0]
        if first == "tf_lbsgd":
            found = _module_file(root, name)
            if found:
                modules.add(found)
            return bool(found)
        sibling = here / f"{first}.py"
        if "." not in name and pathlib.Path(root, sibling).is_file():
            modules.add(sibling.as_posix())
        return False

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                need_module(alias.name)
        elif (isinstance(node, ast.ImportFrom) and node.module
              and not node.level):
            for alias in node.names:
                if not need_module(f"{node.module}.{alias.name}"):
                    need_module(node.module)
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            function = getattr(node.func, "id",
                               getattr(node.func, "attr", None))
            if function in ("importorskip", "import_module"):
                need_module(node.args[0].value)
        elif isinstance(node, (ast.List, ast.Tuple)):
            values = [e.value if isinstance(e, ast.Constant) else None
                      for e in node.elts]
            for flag, module in zip(values, values[1:]):
                if flag == "-m" and isinstance(module, str):
                    main = _module_file(root, module + ".__main__")
                    if main:
                        referenced.add(main)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            value = node.value
            if value in scripts:
                referenced.add(scripts[value])
            elif re.fullmatch(r"[\w/]+\.py", value):
                for candidate in (value, here / value, f"tools/{value}",
                                  f"tests/{value}"):
                    if pathlib.Path(root, candidate).is_file():
                        referenced.add(pathlib.PurePosixPath(
                            candidate).as_posix())
                        break
    return modules, referenced


def own_files(target):
    """The files of a target itself: its srcs and main."""
    files = list(target.get("srcs", []))
    if target.get("main"):
        files.append(target["main"])
    return files


def runfiles(targets, name, cache=None):
    """Files in the runfiles of target `name` (srcs, data, deps,
    transitively) among `targets` (load_build's)."""
    cache = {} if cache is None else cache
    if name not in cache:
        cache[name] = set()  # Cycles end here.
        target = targets[name]
        files = set(own_files(target))
        for attr in ("srcs", "data", "deps"):
            for label in target.get(attr, []):
                label_name = _label_name(label)
                if label_name in targets:
                    files |= runfiles(targets, label_name, cache)
                elif attr != "deps":
                    files.add(label_name)
        cache[name] = files
    return cache[name]


def build_problems(root):
    """Returns a list of messages, one per gap between root/BUILD and the
    Python files under root (empty when BUILD covers them)."""
    root = pathlib.Path(root)
    targets = load_build(root)
    problems = []
    py_targets = {n: t for n, t in targets.items() if t["kind"] in PY_RULES}
    scripts = _console_scripts(root)

    # Labels name existing targets or files.
    for name, target in targets.items():
        for attr in ("srcs", "data", "deps"):
            for label in target.get(attr, []):
                if label.startswith("@"):
                    continue
                label_name = _label_name(label)
                if label_name in targets:
                    continue
                if attr == "deps" or label.startswith(":"):
                    problems.append(f":{name}: {attr} names no target {label}")
                elif not (root / label_name).exists():
                    problems.append(
                        f":{name}: {attr} names a missing file {label}")
        main = target.get("main")
        if main and main not in target.get("srcs", []):
            problems.append(f":{name}: main {main} is not in its srcs")

    # Every Python file is in the srcs of a target.
    named = {f for t in py_targets.values() for f in own_files(t)}
    for pattern in REQUIRED_GLOBS:
        for path in sorted(p.relative_to(root).as_posix()
                           for p in root.glob(pattern)):
            if path not in named:
                problems.append(f"{path}: in the srcs of no py_library, "
                                "py_binary or py_test target")

    def dep_names(target):
        return [_label_name(d) for d in target.get("deps", [])
                if _label_name(d) in targets]

    closure = functools.partial(runfiles, targets, cache={})

    for name, target in sorted(py_targets.items()):
        direct = set(own_files(target))
        for dep in dep_names(target):
            direct.update(own_files(targets[dep]))
        everything = closure(name)
        for path in target.get("srcs", []):
            if not path.endswith(".py") or not (root / path).is_file():
                continue
            modules, referenced = _uses(root, path, scripts)
            for module in sorted(modules - direct):
                problems.append(f":{name}: {path} imports {module}, which is "
                                "in the srcs of no direct dep")
            inits = set(_package_inits(root, path))
            for module in modules:
                inits.update(_package_inits(root, module))
            for init in sorted(inits - everything):
                problems.append(f":{name}: {path} needs the package file "
                                f"{init} among its (transitive) deps")
            for ref in sorted(referenced - everything):
                problems.append(f":{name}: {path} runs or reads {ref}, which "
                                "is not in its runfiles (srcs, data, deps)")
        if target["kind"] == "py_test":
            tests = [s for s in target.get("srcs", [])
                     if re.fullmatch(r"tests/test_\w+\.py", s)]
            if not target.get("size"):
                problems.append(f":{name}: py_test without a size")
            if (target.get("main") != RUNNER or RUNNER not in target.get(
                    "srcs", []) or sorted(target.get("args", [])) != tests):
                problems.append(
                    f":{name}: not run through pytest: needs main = "
                    f'"{RUNNER}" (also in srcs) and args = {tests}')
    return problems


def test_real_build_covers_every_python_file():
    problems = build_problems(REPO_ROOT)
    assert not problems, "BUILD is out of date:\n" + "\n".join(problems)


def test_the_check_passes_in_its_own_bazel_runfiles(tmp_path):
    """Under Bazel this file sees only its target's runfiles: a file BUILD
    names that is not in them fails there alone (LICENSE once did). The
    check runs here on a copy of just those files."""
    for path in runfiles(load_build(REPO_ROOT), "test_build_targets"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO_ROOT / path, tmp_path / path)
    problems = build_problems(tmp_path)
    assert not problems, ("add these files to the data of "
                          ":test_build_targets:\n" + "\n".join(problems))


# A small tree in tmp_path: the checker passes it, then finds each gap.

_FILES = {
    "pyproject.toml": '[project.scripts]\ntf-lbsgd = "tf_lbsgd.cli:run"\n',
    "tf_lbsgd/__init__.py": "",
    "tf_lbsgd/base.py": "X = 1\n",
    "tf_lbsgd/cli.py": "from tf_lbsgd import base\n",
    "tf_lbsgd/__main__.py": "from tf_lbsgd.cli import run\n",
    "tf_lbsgd/data/__init__.py": "",
    "tf_lbsgd/data/reader.py": "from tf_lbsgd.base import X\n",
    "tools/probe.py": "from tf_lbsgd.data import reader\n",
    "tools/runner.py": 'import os\nPROBE = os.path.join("x", "probe.py")\n',
    "tests/conftest.py": "",
    "tests/bazel_pytest_main.py": "",
    "tests/helpers.py": "",
    "tests/test_base.py": textwrap.dedent("""\
        import subprocess, sys
        from helpers import REPO_ROOT
        from tf_lbsgd import base
        subprocess.run([sys.executable, "-m", "tf_lbsgd"])
        """),
}

_BUILD = textwrap.dedent("""\
    package(default_visibility = ["//visibility:public"])

    py_library(name = "tf_lbsgd", srcs = ["tf_lbsgd/__init__.py"])

    py_library(name = "base", srcs = ["tf_lbsgd/base.py"], deps = [":tf_lbsgd"])

    py_library(
        name = "cli",
        srcs = ["tf_lbsgd/cli.py"],
        deps = [":base", ":tf_lbsgd"],
    )

    py_library(
        name = "data",
        srcs = ["tf_lbsgd/data/__init__.py"],
        deps = [":tf_lbsgd"],
    )

    py_library(
        name = "reader",
        srcs = ["tf_lbsgd/data/reader.py"],
        deps = [":base", ":data"],
    )

    py_binary(
        name = "main",
        srcs = ["tf_lbsgd/__main__.py"],
        main = "tf_lbsgd/__main__.py",
        deps = [":cli"],
    )

    py_binary(name = "probe", srcs = ["tools/probe.py"], deps = [":reader"])

    py_binary(name = "runner", srcs = ["tools/runner.py"], deps = [":probe"])

    py_library(name = "support", srcs = ["tests/conftest.py"])

    py_library(name = "helpers", srcs = ["tests/helpers.py"])

    py_test(
        name = "test_base",
        size = "small",
        srcs = glob(["tests/bazel_pytest_main.py", "tests/test_base.py"]),
        main = "tests/bazel_pytest_main.py",
        args = ["tests/test_base.py"],
        deps = [":base", ":main", ":support", ":helpers"],
    )
    """)


def _problems(tmp_path, build=_BUILD, files=None):
    """The checker's messages for the sample tree, with `files` ({path:
    text}) added or replaced."""
    contents = dict(_FILES, BUILD=build)
    contents.update(files or {})
    for path, text in contents.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    return "\n".join(build_problems(tmp_path))


def test_sample_tree_passes(tmp_path):
    assert _problems(tmp_path) == ""


@pytest.mark.parametrize("path", [
    "tf_lbsgd/extra.py", "tf_lbsgd/data/extra.py", "tests/test_extra.py",
    "tests/helper.py", "tools/extra.py"])
def test_file_in_no_target(tmp_path, path):
    problems = _problems(tmp_path, files={path: "X = 1\n"})
    assert problems == (f"{path}: in the srcs of no py_library, py_binary "
                        "or py_test target")


def test_tool_without_binary(tmp_path):
    build = _BUILD.replace(
        'py_binary(name = "runner", srcs = ["tools/runner.py"], '
        'deps = [":probe"])', "")
    assert _problems(tmp_path, build=build) == (
        "tools/runner.py: in the srcs of no py_library, py_binary or py_test "
        "target")


def test_missing_direct_dep(tmp_path):
    build = _BUILD.replace('deps = [":base", ":tf_lbsgd"]', 'deps = [":tf_lbsgd"]')
    assert _problems(tmp_path, build=build) == (
        ":cli: tf_lbsgd/cli.py imports tf_lbsgd/base.py, which is in the "
        "srcs of no direct dep")


def test_transitive_dep_is_not_enough_for_an_import(tmp_path):
    # test_base imports tf_lbsgd.base, which :main brings only transitively.
    build = _BUILD.replace('deps = [":base", ":main",', 'deps = [":main",')
    assert _problems(tmp_path, build=build) == (
        ":test_base: tests/test_base.py imports tf_lbsgd/base.py, which is in "
        "the srcs of no direct dep")


def test_importorskip_is_an_import(tmp_path):
    # Without the dep the test would be skipped under Bazel, not failed.
    build = _BUILD.replace('deps = [":base", ":main",', 'deps = [":main",')
    test = _FILES["tests/test_base.py"].replace(
        "from tf_lbsgd import base",
        'import pytest\nbase = pytest.importorskip("tf_lbsgd.base")')
    assert _problems(tmp_path, build=build,
                     files={"tests/test_base.py": test}) == (
        ":test_base: tests/test_base.py imports tf_lbsgd/base.py, which is in "
        "the srcs of no direct dep")


def test_missing_package_init(tmp_path):
    build = _BUILD.replace('deps = [":base", ":data"]', 'deps = [":base"]')
    assert _problems(tmp_path, build=build).splitlines() == [
        ":probe: tools/probe.py needs the package file "
        "tf_lbsgd/data/__init__.py among its (transitive) deps",
        ":reader: tf_lbsgd/data/reader.py needs the package file "
        "tf_lbsgd/data/__init__.py among its (transitive) deps"]


def test_missing_sibling_module(tmp_path):
    build = _BUILD.replace('":main", ":support", ":helpers"',
                           '":main", ":support"')
    assert _problems(tmp_path, build=build).splitlines() == [
        ":test_base: tests/test_base.py imports tests/helpers.py, which "
        "is in the srcs of no direct dep"]


def test_missing_runfiles(tmp_path):
    build = (_BUILD.replace('":base", ":main", ":support"', '":base", ":support"')
             .replace('srcs = ["tools/runner.py"], deps = [":probe"]',
                      'srcs = ["tools/runner.py"]'))
    assert _problems(tmp_path, build=build).splitlines() == [
        ":runner: tools/runner.py runs or reads tools/probe.py, which is not "
        "in its runfiles (srcs, data, deps)",
        ":test_base: tests/test_base.py runs or reads tf_lbsgd/__main__.py, "
        "which is not in its runfiles (srcs, data, deps)"]


def test_console_script_needs_its_module(tmp_path):
    problems = _problems(tmp_path, files={
        "tools/runner.py": 'CMD = ["tf-lbsgd", "--help"]\n'})
    assert problems == (
        ":runner: tools/runner.py runs or reads tf_lbsgd/cli.py, which is not "
        "in its runfiles (srcs, data, deps)")


def test_stale_labels(tmp_path):
    build = (_BUILD.replace('srcs = ["tf_lbsgd/base.py"]',
                            'srcs = ["tf_lbsgd/base.py", "tf_lbsgd/gone.py"]')
             .replace('deps = [":reader"]', 'deps = [":reader", ":nothing"]'))
    assert _problems(tmp_path, build=build).splitlines() == [
        ":base: srcs names a missing file tf_lbsgd/gone.py",
        ":probe: deps names no target :nothing"]


def test_py_test_not_run_through_pytest(tmp_path):
    build = _BUILD.replace('    args = ["tests/test_base.py"],\n', "")
    assert _problems(tmp_path, build=build) == (
        ":test_base: not run through pytest: needs main = "
        '"tests/bazel_pytest_main.py" (also in srcs) and args = '
        "['tests/test_base.py']")


def test_py_test_without_size(tmp_path):
    build = _BUILD.replace('    size = "small",\n', "")
    assert _problems(tmp_path, build=build) == ":test_base: py_test without a size"
