"""Every command of README.md runs here, or is checked statically for a reason
written in RULES: documentation that cannot drift (issue 15, item 10).

The commands come from README.md itself:
- each fenced ```sh / ```bash / ```shell block, one command per logical line
  (`\\` continuations joined, comments dropped);
- the container command of each ```yaml manifest (the Kubernetes example);
- each inline code span that is a whole command: a program (`tf-lbsgd` and
  its console scripts `tf-lbsgd-*`,
  `python`, `.venv/bin/...`, `tools/<name>.py`, `make`, `bazel`, `srun`,
  `kubectl`) and at least one argument.
Every fenced block must name its language, so that a block of commands
cannot escape the parser untagged (```text for anything else).

RULES maps each command, as the README writes it (whitespace collapsed), to
its check:
- run: `tf-lbsgd` jobs through the real CLI cut to a few steps (SHORT_JOB)
  with a temporary --model_dir, one run per job (two commands that are the
  same job once cut share it); tools/launch_local.py with its workers, cut
  the same way; tools with the README's flags, outputs redirected to a
  temporary directory, and --dry_run where the real run takes hours;
- static, with the reason it cannot run here (GPUs, ImageNet, a cluster,
  minutes of time): every gin file it names must exist and parse with the
  command's bindings into a whole job, every flag must be one the program
  defines, and the TF_CONFIG its shell line builds (run for real in bash,
  with a stand-in `tf-lbsgd` that records its arguments and environment)
  must be valid for the job's strategy;
- make targets: `make -n <target>` (they take minutes).
A README command without a rule fails, saying how to add one; so does a
rule whose command is no longer in the README.
"""

import ast
import dataclasses
import importlib.util
import json
import os
import pathlib
import re
import shlex
import subprocess
import sys
import textwrap
import tomllib

import gin
import pytest
import yaml
from absl import app  # noqa: F401  pylint: disable=unused-import (--help flags)
from absl import flags

from tf_lbsgd import cluster
from tf_lbsgd import config
from tf_lbsgd import distribute
from tf_lbsgd import netns_cluster
from tf_lbsgd import train_lib

# abspath, not resolve(): under Bazel the test file is a symlink into the
# checkout, and the tools must come from the runfiles next to it.
REPO_ROOT = pathlib.Path(os.path.abspath(__file__)).parents[1]

README = REPO_ROOT / "README.md"
SHELL_LANGUAGES = ("sh", "bash", "shell")
OTHER_LANGUAGES = ("text", "yaml",  # yaml: its container commands are read.
                   "python")  # Each python block is run as a script.
_FENCE = re.compile(r"^([ \t]*)```([\w+-]*)[ \t]*$")
_INLINE_COMMAND = re.compile(
    r"(tf-lbsgd(?:-[\w-]+)?|python3?|\.venv/bin/\S+|tools/\S+\.py|make|bazel|srun|kubectl)"
    r" \S")

# Appended to every `tf-lbsgd` job that runs here: 5 steps of the default
# kn = 256, evaluated once at the end; XLA off (its compilation would take
# longer than the steps; tests/test_precision.py covers it); no export (2-3 s
# a run; tests/test_cli_e2e.py and tests/test_export.py cover it).
SHORT_JOB = (
    "train_lib.run.epochs = 0.02",
    "train_lib.run.steps_per_loop = 2",
    "train_lib.run.eval_every_epochs = 0",
    "train_lib.run.jit_compile = False",
    "train_lib.run.export = False",
)
CLI_PROGRAMS = ("tf-lbsgd", ".venv/bin/tf-lbsgd")
PYTHON_PROGRAMS = ("python", "python3", ".venv/bin/python")
# Flags whose value is a path the command writes: redirected to a temporary
# directory when the command runs here.
OUTPUT_FLAGS = ("model_dir", "out", "out_png", "out_json", "report",
                "runs_dir")
DEFAULT_JOB = "experiments/fashion_mnist_default"
REQUIRED_JOB_PARAMETERS = ("train_lib.run.data", "train_lib.run.model_fn",
                           "train_lib.run.epochs")
# What the SLURM_* environment of task 1 of a 2-node job looks like.
SLURM_ENV = {"SLURM_JOB_NODELIST": "node[01-02]", "SLURM_NODELIST":
             "node[01-02]", "SLURM_NNODES": "2", "SLURM_NTASKS": "2",
             "SLURM_NODEID": "1", "SLURM_PROCID": "1", "SLURM_LOCALID": "0"}
RUN_TIMEOUT_SECONDS = 900
FASHION_MNIST_TRAIN = 60000
_RECORDER = """\
#!{python}
# A stand-in for tf-lbsgd: records its arguments and TF_CONFIG.
import json, os, sys
with open(os.environ["README_RECORD"], "a") as f:
    f.write(json.dumps({{"argv": sys.argv[1:],
                        "tf_config": os.environ.get("TF_CONFIG")}}) + "\\n")
"""


# ----------------------------------------------------------------------------
# Reading README.md.


@dataclasses.dataclass(frozen=True)
class Block:
    """A fenced block: its language, fence line numbers and content."""
    language: str
    start: int  # Line of the opening fence (1-based).
    lines: tuple

    @property
    def first_line(self):
        return self.start + 1


@dataclasses.dataclass(frozen=True)
class Command:
    """One README command (whitespace collapsed) and the lines it is on."""
    text: str
    lines: tuple


def fenced_blocks(text):
    """The fenced blocks of markdown `text`, indentation removed.

    Raises:
        ValueError: for a block that is never closed.
    """
    blocks, opening = [], None
    for number, line in enumerate(text.splitlines(), 1):
        fence = _FENCE.match(line)
        if opening is None:
            if fence:
                opening = (fence.group(2), number, len(fence.group(1)), [])
        elif fence and not fence.group(2):
            blocks.append(Block(opening[0], opening[1], tuple(opening[3])))
            opening = None
        else:
            indent = opening[2]
            opening[3].append(line[indent:] if not line[:indent].strip()
                              else line)
    if opening is not None:
        raise ValueError(f"README.md:{opening[1]}: ``` block never closed")
    return blocks


def strip_comment(line):
    """`line` without its shell comment: a # that starts a word, outside
    quotes and not escaped."""
    quote, escaped, word_start = None, False, True
    for i, char in enumerate(line):
        blank = False
        if escaped:
            escaped = False
        elif quote:
            escaped = char == "\\" and quote == '"'
            quote = None if char == quote else quote
        elif char == "\\":
            escaped = True
        elif char in "'\"":
            quote = char
        elif char == "#" and word_start:
            return line[:i]
        else:
            blank = char.isspace()
        word_start = blank
    return line


def _collapse(text):
    return " ".join(text.split())


def shell_commands(block):
    """[(line, command)] of a shell block: `\\` continuations joined,
    comments and blank lines dropped."""
    commands, pending, start = [], "", None
    for number, line in enumerate(block.lines, block.first_line):
        if not pending:
            start = number
        stripped = line.rstrip()
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        command = _collapse(strip_comment(pending + line))
        pending = ""
        if command:
            commands.append((start, command))
    return commands


def _containers(document):
    spec = (document or {}).get("spec", {}).get("template", {}).get("spec", {})
    return spec.get("containers", [])


def manifest_commands(block):
    """[(line, command)] of a yaml block: each container's command + args."""
    commands = []
    for document in yaml.safe_load_all("\n".join(block.lines)):
        for container in _containers(document):
            argv = list(container.get("command", [])) + list(
                container.get("args", []))
            if argv:
                commands.append((block.first_line, _collapse(shlex.join(argv))))
    return commands


def inline_commands(text, blocks):
    """[(line, command)] of the code spans outside fenced blocks that are
    whole commands (a known program and an argument)."""
    lines = text.splitlines()
    for block in blocks:  # Blank the blocks out, keeping line numbers.
        for index in range(block.start - 1, block.start + len(block.lines) + 1):
            lines[index] = ""
    prose = "\n".join(lines)
    commands = []
    for span in re.finditer(r"`([^`]+)`", prose):
        command = _collapse(span.group(1))
        if _INLINE_COMMAND.match(command):
            commands.append((prose.count("\n", 0, span.start()) + 1, command))
    return commands


def readme_commands(text):
    """Every command of README `text`, in order of first appearance."""
    blocks = fenced_blocks(text)
    found = inline_commands(text, blocks)
    for block in blocks:
        if block.language in SHELL_LANGUAGES:
            found += shell_commands(block)
        elif block.language == "yaml":
            found += manifest_commands(block)
    by_text = {}
    for line, command in sorted(found):
        by_text.setdefault(command, []).append(line)
    return [Command(text, tuple(lines)) for text, lines in by_text.items()]


README_TEXT = README.read_text(encoding="utf-8")
COMMANDS = readme_commands(README_TEXT)


# ----------------------------------------------------------------------------
# Flags and gin jobs, read without running the program.


def defined_flags(path):
    """The flags the Python source at `path` defines: absl's DEFINE_*
    calls (also through a local `define(kind, name, ...)` helper) and
    argparse's add_argument options; with `no<name>` for booleans."""
    names = set()
    for node in ast.walk(ast.parse(pathlib.Path(path).read_text())):
        if not isinstance(node, ast.Call):
            continue
        function = getattr(node.func, "attr", getattr(node.func, "id", ""))
        strings = [a.value for a in node.args if isinstance(a, ast.Constant)
                   and isinstance(a.value, str)]
        first = (node.args[0].value if node.args and isinstance(
            node.args[0], ast.Constant) else None)
        if function.startswith("DEFINE_") and isinstance(first, str):
            names.add(first)
            if function in ("DEFINE_bool", "DEFINE_boolean"):
                names.add("no" + first)
        elif function == "define" and len(node.args) >= 2 and strings[:2] == [
                getattr(a, "value", None) for a in node.args[:2]]:
            kind, name = strings[:2]  # define("integer", "loops", ...)
            names.add(name)
            if kind in ("bool", "boolean"):
                names.add("no" + name)
        elif function == "add_argument":
            names.update(s[2:] for s in strings if s.startswith("--"))
    return names


def absl_flags():
    """The flags absl adds to every absl program (--help, --verbosity...)."""
    names = {"flagfile", "undefok"}
    for module, module_flags in flags.FLAGS.flags_by_module_dict().items():
        if module in ("absl.app", "absl.logging"):
            for flag in module_flags:
                names.update({flag.name, flag.short_name} - {None})
                if flag.boolean:
                    names.add("no" + flag.name)
    return names


def flag_values(args):
    """[(name, value)] of the --flags in `args`: --name=value, --name value
    (the next argument when it is not a flag), or --name (value None)."""
    pairs = []
    for index, arg in enumerate(args):
        if not arg.startswith("--") or arg == "--":
            continue
        name, equals, value = arg[2:].partition("=")
        if not equals:
            following = args[index + 1] if index + 1 < len(args) else None
            value = (following if following is not None
                     and not following.startswith("-") else None)
        pairs.append((name, value))
    return pairs


def flag_source(script):
    """The file that defines the flags of `script`: the console-script
    module a thin tools/ wrapper imports (`from tf_lbsgd.scripts import x`
    -> tf_lbsgd/scripts/x.py), else `script` itself."""
    found = re.search(r"^from tf_lbsgd\.scripts import (\w+)$",
                      pathlib.Path(script).read_text(), re.MULTILINE)
    if found:
        return REPO_ROOT / "tf_lbsgd" / "scripts" / f"{found.group(1)}.py"
    return pathlib.Path(script)


def assert_flags_defined(args, script, program):
    """Every --flag of `args` is one that `script` defines (or absl's)."""
    script = flag_source(script)
    known = defined_flags(script)
    if "flags." in script.read_text():
        known |= absl_flags()
    unknown = [name for name, _ in flag_values(args) if name not in known]
    assert not unknown, (f"{program}: no such flag {unknown} (flags defined in "
                         f"{script.relative_to(REPO_ROOT)}: "
                         f"{sorted(defined_flags(script))})")


def parse_job(gin_files, bindings):
    """Parses a job as the CLI does; returns its strategy kind.

    Raises:
        AssertionError: if the files and bindings do not define a whole job
            (data, model and epochs).
    """
    gin.clear_config()
    config.parse(gin_files or [DEFAULT_JOB], bindings)
    for parameter in REQUIRED_JOB_PARAMETERS:
        try:
            gin.query_parameter(parameter)
        except ValueError as e:
            raise AssertionError(
                f"--gin_file {gin_files} with {bindings} does not bind "
                f"{parameter}: {e}") from e
    return gin.query_parameter("distribute.build_strategy.kind")


def cli_job(args):
    """(gin files, bindings, other flags) of tf-lbsgd arguments."""
    pairs = flag_values(args)
    return ([v for n, v in pairs if n == "gin_file"],
            [v for n, v in pairs if n == "gin_bindings"],
            [(n, v) for n, v in pairs if n not in ("gin_file", "gin_bindings")])


def check_cli_args_statically(args, tf_config=None):
    """tf-lbsgd `args`: real flags, a valid --mode, a whole gin job, and a
    strategy that accepts `tf_config`'s cluster."""
    cli = REPO_ROOT / "tf_lbsgd" / "cli.py"
    assert_flags_defined(args, cli, "tf-lbsgd")
    gin_files, bindings, others = cli_job(args)
    modes = _enum_values(cli, "mode")
    for name, value in others:
        assert name != "mode" or value in modes, f"--mode={value}: not in {modes}"
    kind = parse_job(gin_files, bindings)
    if tf_config is not None:
        distribute.check_cluster_kind(kind, {"TF_CONFIG": json.dumps(tf_config)})
    return kind


def check_batch_fits(num_replicas):
    """The parsed job's batch sizes agree on `num_replicas` replicas (as
    train_lib checks them when the strategy exists)."""
    def bound(name, default):
        try:
            return gin.query_parameter(f"train_lib.run.{name}")
        except ValueError:
            return default
    train_lib.resolve_batch_sizes(num_replicas,
                                  bound("per_replica_batch_size", 32),
                                  bound("global_batch_size", None))


def _enum_values(script, name):
    """The literal choices of absl enum flag `name` defined in `script`."""
    for node in ast.walk(ast.parse(flag_source(script).read_text())):
        if (isinstance(node, ast.Call)
                and getattr(node.func, "attr", "") == "DEFINE_enum"
                and ast.literal_eval(node.args[0]) == name):
            return ast.literal_eval(node.args[2])
    raise AssertionError(f"{script} defines no enum flag --{name}")


def tool_script(path):
    """The path of a tools/ script named as the README names it."""
    script = REPO_ROOT / path
    assert script.is_file() and script.parent.name == "tools", (
        f"{path}: no such script in tools/")
    return script


def console_script(name):
    """The module file of console script `name` of pyproject.toml's
    [project.scripts] (`tf-lbsgd-tf-config` -> tf_lbsgd/scripts/tf_config.py),
    or None."""
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())[
        "project"]["scripts"]
    if name not in scripts:
        return None
    module = scripts[name].split(":")[0]
    return REPO_ROOT.joinpath(*module.split(".")).with_suffix(".py")


def split_python_command(text):
    """(script path, args) of `python tools/x.py args`, `tools/x.py args`
    or a console script's `tf-lbsgd-x args` (its module, which runs as a
    script too)."""
    argv = shlex.split(text)
    if argv[0] in PYTHON_PROGRAMS:
        argv = argv[1:]
    return console_script(argv[0]) or tool_script(argv[0]), argv[1:]


def check_valid_tf_config(raw, hosts, index):
    """`raw` is a valid TF_CONFIG for worker `index` of `hosts`."""
    tf_config = cluster.validate_tf_config({"TF_CONFIG": raw})
    assert tf_config == {"cluster": {"worker": list(hosts)},
                         "task": {"type": "worker", "index": index}}, raw
    return tf_config


# ----------------------------------------------------------------------------
# Running commands here.


class Workspace:
    """Runs README commands in a temporary directory; one run per job."""

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.jobs = {}  # Job key -> (model_dir, CompletedProcess).
        self.bin = tmp_path / "recorder_bin"
        self.bin.mkdir()
        recorder = self.bin / "tf-lbsgd"
        recorder.write_text(_RECORDER.format(python=sys.executable))
        recorder.chmod(0o755)

    def env(self, **extra):
        """This interpreter's bin/ first on PATH (`python`, `tf-lbsgd`), no
        TF_CONFIG."""
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **extra)
        env.pop("TF_CONFIG", None)
        env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable),
                                       env.get("PATH", "")])
        return env

    def run(self, argv, env=None, timeout=RUN_TIMEOUT_SECONDS):
        """Runs `argv` in the repository; returns the CompletedProcess."""
        return subprocess.run(
            [str(a) for a in argv], cwd=REPO_ROOT, env=env or self.env(),
            capture_output=True, text=True, timeout=timeout, check=False)

    def output_path(self, value):
        """Where an output the README puts at `value` goes here."""
        path = self.tmp / "outputs" / value.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        return str(path)

    def redirect_outputs(self, args):
        """`args` with the values of OUTPUT_FLAGS moved under self.tmp."""
        return rewrite_flags(args, OUTPUT_FLAGS, self.output_path)

    def record(self, script, env):
        """Runs bash `script` with the recorder as tf-lbsgd; returns what it
        recorded (one dict per call)."""
        record = self.tmp / f"record{len(list(self.tmp.glob('record*')))}"
        env = dict(env, README_RECORD=str(record),
                   PATH=os.pathsep.join([str(self.bin), env["PATH"]]))
        result = self.run(["bash", "-c", script], env=env, timeout=120)
        assert result.returncode == 0, result.stderr
        assert record.exists(), f"the script never called tf-lbsgd: {script}"
        return [json.loads(line) for line in record.read_text().splitlines()]

    def train(self, args):
        """Runs tf-lbsgd `args` cut to SHORT_JOB, once per job; returns
        (model_dir, CompletedProcess)."""
        gin_files, bindings, others = cli_job(args + ["--gin_bindings=" + b
                                                      for b in SHORT_JOB])
        latest = {}
        for binding in bindings:  # The last binding of a parameter wins.
            name, _, value = binding.partition("=")
            latest[name.strip()] = value.strip()
        key = (tuple(gin_files or [DEFAULT_JOB]), tuple(sorted(latest.items())),
               tuple(sorted((n, v) for n, v in others if n != "model_dir")))
        if key not in self.jobs:
            model_dir = self.tmp / "runs" / f"job{len(self.jobs)}"
            argv = (rewrite_flags(args, ["model_dir"], lambda _: model_dir)
                    + [f"--gin_bindings={b}" for b in SHORT_JOB])
            if not any(a.startswith("--model_dir") for a in args):
                argv.append(f"--model_dir={model_dir}")  # A tool's own job.
            result = self.run([sys.executable, "-m", "tf_lbsgd", *argv])
            assert result.returncode == 0, result.stderr[-3000:]
            self.jobs[key] = (model_dir, result)
        return self.jobs[key]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return Workspace(tmp_path_factory.mktemp("readme"))


def rewrite_flags(args, names, rewrite):
    """`args` with the value of each --name of `names` (--name=value or
    --name value) replaced by rewrite(value), as --name=new."""
    rewritten, skip = [], False
    for index, arg in enumerate(args):
        if skip:
            skip = False
            continue
        name, equals, value = arg[2:].partition("=")
        if arg.startswith("--") and name in names:
            if not equals:
                value, skip = args[index + 1], True
            arg = f"--{name}={rewrite(value)}"
        rewritten.append(arg)
    return rewritten


def read_metrics(model_dir):
    with open(os.path.join(model_dir, "metrics.json"), encoding="utf-8") as f:
        return json.load(f)


# ----------------------------------------------------------------------------
# The checks: check(command_text, workspace). `run_*` run the command,
# `static_*` check it without running it.


def run_make_dry(text, workspace):
    """`make -n <target>`: the target exists and its recipe expands."""
    argv = shlex.split(text)
    assert argv[0] == "make" and len(argv) > 1, text
    for target in argv[1:]:
        result = workspace.run(["make", "-n", target], timeout=60)
        assert result.returncode == 0, (f"make -n {target}: "
                                        f"{result.stderr}")


def run_cli_job(text, workspace):
    """tf-lbsgd through the real CLI, cut to SHORT_JOB."""
    argv = shlex.split(text)
    assert argv[0] in CLI_PROGRAMS, text
    check_cli_args_statically(argv[1:])
    model_dir, result = workspace.train(argv[1:])
    metrics = read_metrics(model_dir)
    assert metrics["global_step"] == pytest.approx(
        0.02 * FASHION_MNIST_TRAIN / metrics["global_batch_size"], abs=1)
    if dict(cli_job(argv[1:])[2]).get("mode", "train_and_eval") != "train":
        assert metrics["eval"]["examples"] == 10000, metrics
        assert 0 <= metrics["eval"]["top1_accuracy"] <= 1
    assert "\nMetrics:     " in result.stdout  # The final summary.


def run_launch_local(text, workspace):
    """tools/launch_local.py with the README's workers, each running the
    README's worker command cut to SHORT_JOB."""
    _run_worker_launcher(text, workspace, "launch_local.py",
                         lambda flags_: int(flags_["workers"]))


def run_emulated_cluster(text, workspace):
    """tools/emulated_cluster.py (as root: network namespaces) with the
    README's hosts and links, each worker cut to SHORT_JOB; skipped, with
    the reason, where namespaces cannot be made."""
    try:
        netns_cluster.check_available()
    except netns_cluster.NamespacesUnavailable as e:
        pytest.skip(str(e))
    _run_worker_launcher(
        text, workspace, "emulated_cluster.py",
        lambda flags_: int(flags_.get("hosts", 2)) * int(
            flags_.get("workers_per_host", 1)))


def _run_worker_launcher(text, workspace, tool, count_workers):
    argv = shlex.split(text)
    split = argv.index("--")
    script, launcher_args = split_python_command(shlex.join(argv[:split]))
    assert_flags_defined(launcher_args, script, tool)
    worker = argv[split + 1:]
    assert worker[0] in CLI_PROGRAMS, worker
    workers = count_workers(dict(flag_values(launcher_args)))
    check_cli_args_statically(worker[1:])
    check_batch_fits(workers)
    worker_args = (workspace.redirect_outputs(worker[1:])
                   + [f"--gin_bindings={b}" for b in SHORT_JOB])
    result = workspace.run([sys.executable, script, *launcher_args, "--",
                            worker[0], *worker_args])
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr
    assert f"all {workers} workers finished" in result.stdout
    model_dir = dict(flag_values(worker_args))["model_dir"]
    metrics = read_metrics(model_dir)
    assert metrics["num_replicas"] == workers, metrics
    bindings = dict(b.replace(" ", "").split("=") for b in cli_job(worker)[1])
    global_batch = bindings.get("train_lib.run.global_batch_size")
    assert global_batch is None or metrics["global_batch_size"] == int(
        global_batch), metrics
    assert metrics["eval"]["examples"] == 10000, metrics


def run_cli_help(text, workspace):
    """`tf-lbsgd --helpfull` (and `python -m tf_lbsgd`, "the same"): exits 0
    and lists every flag tf_lbsgd/cli.py defines, both ways alike."""
    del text  # The same check for both commands.
    cli_flags = defined_flags(REPO_ROOT / "tf_lbsgd" / "cli.py")
    console_script = os.path.join(os.path.dirname(sys.executable), "tf-lbsgd")
    listed = []
    for program in ([sys.executable, "-m", "tf_lbsgd"], [console_script]):
        result = workspace.run([*program, "--helpfull"], timeout=120)
        assert result.returncode == 0, result.stderr
        names = set(re.findall(r"^\s+--(?:\[no\])?(\w+)", result.stdout, re.M))
        assert cli_flags - {"no" + n for n in names} <= names, result.stdout
        listed.append(names)
    assert listed[0] == listed[1], "python -m tf_lbsgd differs from tf-lbsgd"


def static_cli_synopsis(text, workspace):
    """A usage line: every flag it names is a flag of tf-lbsgd, and its
    --mode alternatives are the CLI's modes."""
    cli = REPO_ROOT / "tf_lbsgd" / "cli.py"
    named = set(re.findall(r"--(\w+)", text))
    assert named <= defined_flags(cli), named - defined_flags(cli)
    modes = re.search(r"--mode=([\w|]+)", text).group(1).split("|")
    assert sorted(modes) == sorted(_enum_values(cli, "mode"))
    del workspace


def static_cli_job(text, workspace):
    """A tf-lbsgd job that needs ImageNet, GPUs or a cluster: real flags, a
    whole job from its gin files and bindings, and a multi-worker strategy
    accepts a 2-worker TF_CONFIG."""
    argv = shlex.split(text)
    assert argv[0] in CLI_PROGRAMS, text
    kind = check_cli_args_statically(argv[1:])
    if kind == "multi_worker_mirrored":
        check_cli_args_statically(argv[1:], tf_config={
            "cluster": {"worker": ["node1:12345", "node2:12345"]},
            "task": {"type": "worker", "index": 1}})
    del workspace


def static_tool_flags(text, workspace):
    """A tools/ script not run here: it exists and defines every flag."""
    script, args = split_python_command(text)
    assert_flags_defined(args, script, script.name)
    del workspace


def static_example(text, workspace):
    """An examples/ script not run as written (minutes of training;
    tests/test_examples.py runs each on small data): it exists and its
    argparse defines every flag given."""
    argv = shlex.split(text)
    assert argv[0] in PYTHON_PROGRAMS, argv
    script = REPO_ROOT / argv[1]
    source = script.read_text()
    for name, _ in flag_values(argv[2:]):
        assert f'"--{name}"' in source, f"{argv[1]} defines no --{name}"
    del workspace


def run_export_tf_config(text, workspace):
    """`export TF_CONFIG=$(tf-lbsgd-tf-config ... --index=$I)` in
    bash for I = 0 and 1: a valid TF_CONFIG for each host."""
    hosts = re.search(r"--hosts=(\S+)", text).group(1).rstrip(")").split(",")
    for index in range(2):
        result = workspace.run(
            ["bash", "-c", f"I={index}\n{text}\nprintf %s \"$TF_CONFIG\""],
            env=workspace.env(), timeout=60)
        assert result.returncode == 0, result.stderr
        check_valid_tf_config(result.stdout, hosts, index)


def static_srun(text, workspace):
    """`srun bash -c '...'`: srun is not run; its bash script runs for real
    with the SLURM_* variables of task 1 of a 2-node job (node[01-02]) and
    the recorder as tf-lbsgd, which must get a valid TF_CONFIG for node02
    and a multi-worker job."""
    argv = shlex.split(text)
    assert argv[:3] == ["srun", "bash", "-c"] and len(argv) == 4, argv
    port = re.search(r"--port=(\d+)", argv[3]).group(1)
    (call,) = workspace.record(argv[3], workspace.env(**SLURM_ENV))
    tf_config = check_valid_tf_config(
        call["tf_config"], [f"node01:{port}", f"node02:{port}"], 1)
    kind = check_cli_args_statically(call["argv"], tf_config=tf_config)
    assert kind == "multi_worker_mirrored", kind


def kubernetes_statefulset():
    """The StatefulSet of README's yaml block."""
    for block in fenced_blocks(README_TEXT):
        if block.language == "yaml":
            for document in yaml.safe_load_all("\n".join(block.lines)):
                if document.get("kind") == "StatefulSet":
                    return document
    raise AssertionError("README.md has no StatefulSet manifest")


def static_kubernetes(text, workspace):
    """The StatefulSet's container command: kubectl is not run; its bash
    script runs for real in the pod lbsgd-2 of `replicas` pods, with the
    recorder as tf-lbsgd, which must get a valid TF_CONFIG naming every pod
    at the container port, index 2, and a multi-worker job."""
    argv = shlex.split(text)
    assert argv[:2] == ["bash", "-c"] and len(argv) == 3, argv
    statefulset = kubernetes_statefulset()
    spec = statefulset["spec"]
    (container,) = spec["template"]["spec"]["containers"]
    port = container["ports"][0]["containerPort"]
    hosts = [f"{statefulset['metadata']['name']}-{i}.{spec['serviceName']}:"
             f"{port}" for i in range(spec["replicas"])]
    (call,) = workspace.record(argv[2], workspace.env(HOSTNAME="lbsgd-2"))
    tf_config = check_valid_tf_config(call["tf_config"], hosts, 2)
    kind = check_cli_args_statically(call["argv"], tf_config=tf_config)
    assert kind == "multi_worker_mirrored", kind


def run_tf_config_synopsis(text, workspace):
    """`tf-lbsgd-tf-config --hosts=h1:...,h2:...,... --index=I`, run with
    the placeholders filled in (the hosts shown, I = 1)."""
    script, args = split_python_command(text)
    args = [a.replace(",...", "") if a.startswith("--hosts=") else
            a.replace("=I", "=1") for a in args]
    result = workspace.run([sys.executable, script, *args], timeout=60)
    assert result.returncode == 0, result.stderr
    hosts = dict(flag_values(args))["hosts"].split(",")
    check_valid_tf_config(result.stdout.strip(), hosts, 1)


def run_tf_config_slurm(text, workspace):
    """`tf-lbsgd-tf-config --slurm` in the SLURM environment of task 1 of a
    2-node job: the TF_CONFIG of node02 at the default port."""
    script, args = split_python_command(text)
    result = workspace.run([sys.executable, script, *args],
                           env=workspace.env(**SLURM_ENV), timeout=60)
    assert result.returncode == 0, result.stderr
    check_valid_tf_config(result.stdout.strip(),
                          ["node01:12345", "node02:12345"], 1)


def run_reproduce_dry(text, workspace):
    """tools/reproduce.py with the README's flags and --dry_run (the real
    runs take 10 min to hours): it lists CLI commands whose gin job parses."""
    script, args = split_python_command(text)
    result = workspace.run([sys.executable, script,
                            *workspace.redirect_outputs(args), "--dry_run"])
    assert result.returncode == 0, result.stderr[-3000:]
    points = [shlex.split(line) for line in result.stdout.splitlines()
              if " -m tf_lbsgd " in line]
    if not points and "--reuse=" in text:  # Every point recorded earlier.
        assert result.stdout.count(": recorded earlier") > 1, result.stdout
        return
    assert points, result.stdout
    gin_files, bindings, _ = cli_job(points[0])
    parse_job(gin_files, bindings)
    large_kn = dict(flag_values(args)).get("large_kn")
    if large_kn:
        assert f"e.g. {large_kn}:" in result.stdout, result.stdout[-2000:]


def run_summarize_runs(text, workspace):
    """tools/summarize_runs.py --out FILE DIR [DIR ...] over the default
    job's run here: the table has its row."""
    script, args = split_python_command(text)
    model_dir, _ = workspace.train([f"--gin_file={DEFAULT_JOB}"])
    args = [str(model_dir) if a == "DIR" else a for a in args
            if a not in ("[DIR", "...]")]
    args = workspace.redirect_outputs(args)
    result = workspace.run([sys.executable, script, *args], timeout=120)
    assert result.returncode == 0, result.stderr
    with open(dict(flag_values(args))["out"], encoding="utf-8") as f:
        assert f"| {model_dir.name} |" in f.read()


def run_make_fake_imagenet(text, workspace):
    """tools/make_fake_imagenet.py with the README's sizes, --out DIR here:
    both ILSVRC2012 tars are written."""
    script, args = split_python_command(text)
    out = workspace.output_path("fake_imagenet")
    args = [out if a == "DIR" else a for a in args]
    result = workspace.run([sys.executable, script, *args])
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"):
        assert os.path.getsize(os.path.join(out, name)) > 0


def run_comm_model(text, workspace):
    """tools/comm_model.py with the README's calibration, its plot here."""
    script, args = split_python_command(text)
    args = workspace.redirect_outputs(args)
    result = workspace.run([sys.executable, script, *args], timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert os.path.getsize(dict(flag_values(args))["out_png"]) > 0


def static_tensorboard(text, workspace):
    """TensorBoard is installed beside this interpreter and defines the
    flags used (a server that never exits is not run)."""
    argv = shlex.split(text)
    assert os.path.isfile(os.path.join(os.path.dirname(sys.executable),
                                       os.path.basename(argv[0])))
    plugin = importlib.util.find_spec("tensorboard.plugins.core.core_plugin")
    assert_flags_defined(argv[1:], plugin.origin, "tensorboard")
    del workspace


def static_pip_install(text, workspace):
    """`pip install .` or `pip install '.[extra]'` from the checkout: not
    run into this environment; the extra is one pyproject.toml defines
    (tests/test_packaging.py builds the wheel and installs it)."""
    argv = shlex.split(text)
    assert argv[:2] == ["pip", "install"] and len(argv) == 3, argv
    found = re.fullmatch(r"\.(?:\[([\w,-]+)\])?", argv[2])
    assert found, f"{argv[2]}: not the checkout"
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())[
        "project"]["optional-dependencies"]
    for extra in (found.group(1) or "").split(",") if found.group(1) else []:
        assert extra in extras, f"pyproject.toml has no extra {extra!r}"
    del workspace


def static_bazel(text, workspace):
    """Bazel is not run here (`make bazel-test`: ~20 min): the labels it is
    given are targets of BUILD."""
    argv = shlex.split(text)
    build = (REPO_ROOT / "BUILD").read_text()
    for label in argv[2:]:
        if label.startswith("//:"):
            assert f'name = "{label[3:]}"' in build, f"{label} not in BUILD"
        else:
            assert label in ("//...", "--expunge"), label
    del workspace


def static_unsupported(text, workspace):
    """Named in prose as not supported: nothing to run; the README must
    still say so where it names it."""
    prose = _collapse(README_TEXT)
    at = prose.index(f"`{text}`")
    assert "not supported" in prose[at:at + 80], prose[at:at + 80]
    del workspace


# ----------------------------------------------------------------------------
# The table: every README command and how it is checked.


@dataclasses.dataclass(frozen=True)
class Rule:
    """How one README command is checked; `reason` says why not run, or
    what is cut when it runs."""
    check: object
    reason: str


MAKE = Rule(run_make_dry, "make targets take minutes (install, training, "
            "the suite): `make -n` checks the target and its recipe")
CLI_RUN = Rule(run_cli_job, "runs through the CLI cut to SHORT_JOB")
IMAGENET = Rule(static_cli_job, "needs ImageNet and GPUs")
IMAGENET_CLUSTER = Rule(static_cli_job, "needs ImageNet and a cluster of "
                        "GPU hosts")
REPRODUCE = Rule(run_reproduce_dry, "trains for 10 min (quick) to 3 h "
                 "(full): run with --dry_run")
BENCHMARK = Rule(static_tool_flags, "a benchmark of 1-15 min; "
                 "tests/test_bench_*.py run each tool tiny")
BAZEL = Rule(static_bazel, "Bazel takes ~20 min here (make bazel-test)")
PIP_INSTALL = Rule(static_pip_install, "installs into your own environment; "
                   "tests/test_packaging.py builds and installs the wheel")
SCREENSHOT = Rule(static_tool_flags, "needs Chromium and finished runs; "
                  "tests/test_tensorboard.py reads the same dashboards "
                  "over HTTP")
EXAMPLE = Rule(static_example, "trains for minutes on 60,000 images; "
               "tests/test_examples.py runs it on 1,024")

RULES = {
    "make train": MAKE,
    "make test": MAKE,
    "make install": MAKE,
    "make bazel-test": MAKE,
    ".venv/bin/tf-lbsgd --gin_file=experiments/fashion_mnist_default "
    "--model_dir=runs/quick --gin_bindings='train_lib.run.epochs = 0.5'":
        CLI_RUN,
    "tf-lbsgd --gin_file=experiments/fashion_mnist_default "
    "--model_dir=runs/default": CLI_RUN,
    ".venv/bin/tf-lbsgd --gin_file=experiments/fashion_mnist_default "
    "--model_dir=runs/lars --gin_bindings='train_lib.run.optimizer_fn = @LARS' "
    "--gin_bindings='schedules.build_learning_rate_schedule.base_lr = 7.0' "
    "--gin_bindings=\"schedules.build_learning_rate_schedule.decay = "
    "'polynomial'\" --gin_bindings='LARS.use_ema = True' "
    "--gin_bindings='LARS.ema_momentum = 0.99'": CLI_RUN,
    ".venv/bin/tf-lbsgd --gin_file=experiments/imagenet/resnet50_kn32k_lars "
    "--gin_file=distribute/multi_worker_nccl "
    "--model_dir=/shared/runs/32k_lars": IMAGENET_CLUSTER,
    "tf-lbsgd --model_dir=DIR [--gin_file=F ...] [--gin_bindings='B' ...] "
    "[--mode=train|eval|train_and_eval|export]": Rule(
        static_cli_synopsis, "a usage line with placeholders"),
    "python -m tf_lbsgd ...": Rule(
        run_cli_help, "'...' is any arguments: run with --helpfull, as "
        "tf-lbsgd"),
    "tf-lbsgd --helpfull": Rule(run_cli_help, "runs as written"),
    ".venv/bin/tensorboard --logdir runs": Rule(
        static_tensorboard, "a server that runs until stopped"),
    ".venv/bin/python tools/build_imagenet_tfds.py --data_dir=/data/tfds "
    "--manual_dir=/data/ilsvrc": Rule(
        static_tool_flags, "needs the ILSVRC2012 tars (hours to build); "
        "tests/test_imagenet_e2e.py builds a fake one with the same builder"),
    "tf-lbsgd --gin_file=experiments/imagenet/resnet50_kn256 "
    "--model_dir=runs/r50_256 --gin_bindings=\"imagenet.data_dir = "
    "'/data/tfds'\" --gin_bindings=\"imagenet.manual_dir = '/data/ilsvrc'\"":
        IMAGENET,
    "tf-lbsgd --gin_file=experiments/imagenet/resnet50_kn8k "
    "--gin_file=distribute/multi_worker_nccl --model_dir=/shared/runs/r50_8k "
    "--gin_bindings=\"imagenet.data_dir = '/data/tfds'\"": IMAGENET_CLUSTER,
    "tf-lbsgd --gin_file=experiments/imagenet/resnet50_kn8k "
    "--gin_file=distribute/multi_worker_nccl --model_dir=/shared/runs/8k":
        IMAGENET_CLUSTER,
    "tf-lbsgd --model_dir=gs://BUCKET/runs/r50_kn8k "
    "--gin_file=experiments/imagenet/resnet50_kn8k --gin_file=distribute/tpu "
    "--gin_file=precision/mixed_bfloat16 --gin_bindings=\"imagenet.data_dir = "
    "'gs://BUCKET/tensorflow_datasets'\"": Rule(
        static_cli_job, "needs a Cloud TPU VM and ImageNet; "
        "tests/test_cli_errors.py runs distribute/tpu on this host without "
        "a TPU"),
    "tf-lbsgd-tf-config --hosts=h1:12345,h2:12345,... --index=I": Rule(
        run_tf_config_synopsis, "placeholders: run with the two hosts "
        "shown and I = 1"),
    "tools/summarize_runs.py --out table.md DIR [DIR ...]": Rule(
        run_summarize_runs, "placeholders: run over the default job's "
        "run here"),
    "tools/make_fake_imagenet.py --out DIR --classes 10 --train_per_class 20 "
    "--val 50 --corrupt 2": Rule(run_make_fake_imagenet,
                                 "placeholder DIR: a directory here"),
    ".venv/bin/python tools/launch_local.py --workers 2 --cores-per-worker 1 "
    "-- tf-lbsgd --gin_file=experiments/fashion_mnist_default "
    "--gin_file=distribute/multi_worker_ring "
    "--gin_bindings='train_lib.run.global_batch_size = 256' "
    "--gin_bindings='train_lib.run.per_replica_batch_size = None' "
    "--model_dir=runs/two_workers": Rule(
        run_launch_local, "runs with its 2 workers, cut to SHORT_JOB"),
    "export TF_CONFIG=$(tf-lbsgd-tf-config "
    "--hosts=node1:12345,node2:12345 --index=$I)": Rule(
        run_export_tf_config, "runs in bash for I = 0 and 1"),
    "tf-lbsgd-tf-config --slurm": Rule(
        run_tf_config_slurm, "runs in a SLURM job's environment"),
    "srun bash -c 'TF_CONFIG=$(tf-lbsgd-tf-config --slurm "
    "--port=12345) tf-lbsgd --gin_file=experiments/imagenet/resnet50_kn8k "
    "--gin_file=distribute/multi_worker_nccl --model_dir=/shared/runs/8k'":
        Rule(static_srun, "needs a SLURM cluster of GPU hosts and ImageNet: "
             "its script runs with a SLURM environment and the recorder"),
    "bash -c 'export TF_CONFIG=$(tf-lbsgd-tf-config "
    "--index=${HOSTNAME##*-} --hosts=lbsgd-0.lbsgd:12345,lbsgd-1.lbsgd:12345,"
    "lbsgd-2.lbsgd:12345,lbsgd-3.lbsgd:12345) && exec tf-lbsgd "
    "--gin_file=experiments/imagenet/resnet50_kn8k "
    "--gin_file=distribute/multi_worker_nccl --model_dir=/shared/runs/8k'":
        Rule(static_kubernetes, "needs Kubernetes with GPU nodes and "
             "ImageNet: its script runs in a pod's environment with the "
             "recorder"),
    "python tools/bench_train_step.py --model=resnet50 --rounds=2": BENCHMARK,
    "python tools/bench_train_step.py --model=small --rounds=3": BENCHMARK,
    "python tools/bench_input_pipeline.py": BENCHMARK,
    "tools/bench_train_step.py --precision=float32,mixed_bfloat16": BENCHMARK,
    "tools/bench_train_step.py --model=small --cpu_threads=default": BENCHMARK,
    "tools/bench_train_step.py --model=small --rounds=2 "
    "--precision=float32,mixed_bfloat16 --peers=ours,ours_xla,keras_fit":
        BENCHMARK,
    "tools/bench_train_step.py --model=small --rounds=3 "
    "--precision=float32,mixed_bfloat16 --peers=ours,keras_fit "
    "--cpu_threads=auto --pack_workers=auto "
    "--default_threads_peers=keras_fit": BENCHMARK,
    "tools/profile_train_step.py --model=resnet50 "
    "--precision=float32,mixed_bfloat16": BENCHMARK,
    "tools/profile_train_step.py --model=small --cpu_threads=auto":
        BENCHMARK,
    "python tools/bench_scaling.py --measure_compute": BENCHMARK,
    ".venv/bin/python tools/bench_links.py --rates_mbit=0,500,1000,2000 "
    "--out_json=docs/performance/links.json": BENCHMARK,
    ".venv/bin/python tools/bench_links.py --hosts=2 "
    "--rates_mbit=0,500,1000,2000 "
    "--bytes_per_pack=0,1048576,4194304,16777216 "
    "--out_json=docs/performance/links_2hosts_xeon.json": BENCHMARK,
    ".venv/bin/python tools/bench_links.py --hosts=4 "
    "--rates_mbit=0,250,500,1000 "
    "--bytes_per_pack=0,1048576,4194304,16777216 "
    "--out_json=docs/performance/links_4hosts.json": BENCHMARK,
    ".venv/bin/python tools/bench_scaling.py --models=resnet50 "
    "--bytes_per_pack=4194304 --interop_threads=1,2 --measure_compute "
    "--profile_dir=runs/overlap/local --sweep_sizes= "
    "--out_json=docs/performance/overlap_local.json": BENCHMARK,
    ".venv/bin/python tools/bench_scaling.py --models=resnet50 "
    "--bytes_per_pack=4194304 --interop_threads=1,2 --measure_compute "
    "--profile_dir=runs/overlap/link1g --sweep_sizes= --rate_mbit=1000 "
    "--out_json=docs/performance/overlap_link1g.json": BENCHMARK,
    ".venv/bin/python tools/emulated_cluster.py --hosts=2 --rate_mbit=1000 "
    "-- tf-lbsgd --gin_file=experiments/fashion_mnist_default "
    "--gin_file=distribute/multi_worker_ring "
    "--gin_bindings='train_lib.run.global_batch_size = 256' "
    "--gin_bindings='train_lib.run.per_replica_batch_size = None' "
    "--model_dir=runs/two_hosts": Rule(
        run_emulated_cluster, "runs as root with its 2 hosts, cut to "
        "SHORT_JOB"),
    "tools/launch_local.py --cores-per-worker 1": Rule(
        static_tool_flags, "a fragment (the launcher options of "
        "bench_scaling); the whole launch_local command runs above"),
    "python tools/comm_model.py "
    "--calibration_json=docs/performance/scaling.json "
    "--links_json=docs/performance/links.json "
    "--out_png=comm_model.png": Rule(run_comm_model, "runs, its plot here"),
    ".venv/bin/python tools/reproduce.py --preset=quick": REPRODUCE,
    ".venv/bin/python tools/reproduce.py --preset=full "
    "--report=docs/reproduction.md": REPRODUCE,
    ".venv/bin/python tools/reproduce.py --preset=full --large_kn=1024 "
    "--report=docs/reproduction_kn1024.md": REPRODUCE,
    ".venv/bin/python tools/reproduce.py --preset=past8k --seeds=0,1,2 "
    "--reuse=docs/reproduction_past8k/results.json "
    "--report=docs/reproduction_past8k.md": REPRODUCE,
    "pip install .": PIP_INSTALL,
    "pip install '.[gpu]'": PIP_INSTALL,
    "pip install '.[profile]'": PIP_INSTALL,
    ".venv/bin/python tools/tensorboard_screenshot.py --logdir=runs "
    "--output=docs/tensorboard_scalars.png": SCREENSHOT,
    ".venv/bin/python tools/tensorboard_screenshot.py --logdir=runs "
    "--dashboard=hparams --window_size=2400,470 "
    "--output=docs/tensorboard_hparams.png": SCREENSHOT,
    "bazel test //...": BAZEL,
    "bazel test //:test_schedules": BAZEL,
    "bazel clean --expunge": BAZEL,
    "bazel coverage": Rule(static_unsupported, "named as not supported"),
    ".venv/bin/python examples/own_cnn.py --model_dir=runs/own_cnn": EXAMPLE,
    ".venv/bin/python examples/keras_fit.py "
    "--model_path=runs/keras_fit.keras": EXAMPLE,
}

HOW_TO_CLASSIFY = textwrap.dedent("""\
    README.md:{lines}: the command
        {text}
    has no rule in RULES of tests/test_readme_commands.py. Add it there with
    the check that fits: CLI_RUN (a tf-lbsgd job that can run here: it runs
    cut to SHORT_JOB), a run_* check (a tool with a cheap real run),
    MAKE, or a static_* check with the reason it cannot run here (GPUs,
    ImageNet, a cluster, minutes of time); or write a new check.""")


# ----------------------------------------------------------------------------
# The tests.


def test_every_fenced_block_names_its_language():
    untagged = untagged_blocks(README_TEXT)
    assert not untagged, (
        f"README.md: the fenced blocks at lines {untagged} name no known "
        f"language; tag commands ```sh (this test then checks them) and "
        f"anything else ```text")


def test_every_rule_is_a_readme_command():
    stale = sorted(set(RULES) - {command.text for command in COMMANDS})
    assert not stale, (f"RULES names commands README.md no longer has (remove "
                       f"or update them): {stale}")


def rule_for(command):
    """The rule of `command`; fails saying how to add one if it has none."""
    rule = RULES.get(command.text)
    if rule is None:
        pytest.fail(HOW_TO_CLASSIFY.format(
            lines=",".join(map(str, command.lines)), text=command.text))
    return rule


def untagged_blocks(text):
    """Lines of the fenced blocks of `text` without a known language."""
    return [block.start for block in fenced_blocks(text)
            if block.language not in SHELL_LANGUAGES + OTHER_LANGUAGES]


@pytest.mark.parametrize("command", COMMANDS,
                         ids=[f"line{c.lines[0]}" for c in COMMANDS])
def test_readme_command(command, workspace):
    rule_for(command).check(command.text, workspace)


PYTHON_BLOCKS = [block for block in fenced_blocks(README_TEXT)
                 if block.language == "python"]


@pytest.mark.parametrize("block", PYTHON_BLOCKS,
                         ids=[f"line{b.start}" for b in PYTHON_BLOCKS])
def test_readme_python_block_runs(block, tmp_path):
    """Each ```python block is a complete script: it runs as written, in an
    empty directory, and exits 0."""
    script = tmp_path / "readme_example.py"
    script.write_text("\n".join(block.lines) + "\n")
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True,
        text=True, timeout=300, check=False,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode == 0, result.stderr[-3000:]


# Tests of the reading itself, on small markdown.

_SAMPLE = textwrap.dedent("""\
    Run `tf-lbsgd --model_dir=a` or `tf-lbsgd`; see `tools/` and
    `python tools/x.py
    --flag=1`.

    ```sh
    make train   # trains # more
    tf-lbsgd --a=1 \\
      --b='x # y'  # comment
    # only a comment
    ```

    1. Indented:

       ```bash
       echo ${HOSTNAME##*-}
       ```

    ```yaml
    kind: StatefulSet
    spec:
      template:
        spec:
          containers:
          - command: ["bash", "-c"]
            args: ["echo 'hi'"]
    ```

    ```
    untagged
    ```
    """)


def test_reading_commands_from_markdown():
    blocks = fenced_blocks(_SAMPLE)
    assert [(b.language, b.start) for b in blocks] == [
        ("sh", 5), ("bash", 14), ("yaml", 18), ("", 28)]
    assert blocks[1].lines == ("echo ${HOSTNAME##*-}",)
    commands = readme_commands(_SAMPLE)
    assert [(c.text, c.lines) for c in commands] == [
        ("tf-lbsgd --model_dir=a", (1,)),
        ("python tools/x.py --flag=1", (2,)),
        ("make train", (6,)),
        ("tf-lbsgd --a=1 --b='x # y'", (7,)),
        ("echo ${HOSTNAME##*-}", (15,)),
        ("bash -c 'echo '\"'\"'hi'\"'\"''", (19,)),
    ]


def test_reading_flags_and_comments():
    assert strip_comment("a 'b # c' \"d \\\" # e\" f\\ #g ${x##*-} # h") == (
        "a 'b # c' \"d \\\" # e\" f\\ #g ${x##*-} ")
    assert strip_comment("# all") == ""
    assert flag_values(["--a=1", "--b", "2", "--c", "--d", "-x", "pos"]) == [
        ("a", "1"), ("b", "2"), ("c", None), ("d", None)]
    assert rewrite_flags(["--out", "t.md", "--model_dir=r", "D", "--o=x"],
                         ["out", "model_dir"], str.upper) == [
        "--out=T.MD", "--model_dir=R", "D", "--o=x"]
    tf_config = flag_source(REPO_ROOT / "tools" / "tf_config.py")
    assert tf_config == console_script("tf-lbsgd-tf-config")
    assert {"hosts", "index", "slurm", "noslurm", "port"} <= defined_flags(
        tf_config)
    assert {"workers", "cores-per-worker"} <= defined_flags(
        flag_source(REPO_ROOT / "tools" / "launch_local.py"))
    assert console_script("tf-lbsgd-no-such-script") is None
    assert "measure_compute" in defined_flags(
        REPO_ROOT / "tools" / "bench_scaling.py")
    with pytest.raises(AssertionError, match="no such flag"):
        assert_flags_defined(["--hostz=a"], REPO_ROOT / "tools" /
                             "tf_config.py", "tf_config.py")


def test_a_new_command_without_a_rule_fails_saying_how_to_classify_it():
    assert rule_for(COMMANDS[0]) is RULES[COMMANDS[0].text]
    with pytest.raises(pytest.fail.Exception,
                       match=r"(?s)README.md:7: the command\n +tf-lbsgd "
                       r"--new\nhas no rule in RULES.*CLI_RUN.*static_"):
        rule_for(Command("tf-lbsgd --new", (7,)))
    assert untagged_blocks(_SAMPLE) == [28]


def test_the_commands_fixed_by_issue_15_would_fail():
    # The kn = 8k file is resnet50_kn8k, not resnet50_8k.
    with pytest.raises(FileNotFoundError, match="resnet50_8k"):
        static_cli_job("tf-lbsgd --gin_file=experiments/imagenet/resnet50_8k "
                       "--gin_file=distribute/multi_worker_nccl "
                       "--model_dir=/shared/runs/8k", None)
    # kn = 256 on 2 workers with the default job's n = 32.
    parse_job([DEFAULT_JOB, "distribute/multi_worker_ring"],
              ["train_lib.run.global_batch_size = 256"])
    with pytest.raises(ValueError, match="per_replica_batch_size is 32"):
        check_batch_fits(2)
    with pytest.raises(AssertionError, match="no such flag"):
        static_cli_job("tf-lbsgd --gin_fil=x --model_dir=y", None)


def test_a_job_without_an_experiment_file_is_refused():
    with pytest.raises(AssertionError, match="train_lib.run"):
        parse_job(["distribute/multi_worker_ring"], [])
    assert parse_job([], []) == "mirrored"
