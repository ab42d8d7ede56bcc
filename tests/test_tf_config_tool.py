"""TF_CONFIG: checked and written by tf_lbsgd.cluster, printed by
tools/tf_config.py for a host list or a SLURM job."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from tf_lbsgd import cluster

# abspath, not resolve(): under Bazel the tool comes from the runfiles.
SCRIPT = str(pathlib.Path(os.path.abspath(__file__)).parents[1] / "tools" /
             "tf_config.py")


def _validate(config):
    raw = config if isinstance(config, str) else json.dumps(config)
    return cluster.validate_tf_config({"TF_CONFIG": raw})


@pytest.mark.parametrize("raw,message", [
    ("{not json", "not valid JSON"),
    (json.dumps({"task": {"type": "worker", "index": 0}}), "no 'cluster'"),
    (json.dumps({"cluster": {"worker": ["a:1"]},
                 "task": {"type": "worker", "index": 3}}),
     "task index 3 is out of range for 1 'worker' tasks"),
    (json.dumps({"cluster": {"worker": ["a:1"]},
                 "task": {"type": "ps", "index": 0}}), "'ps'"),
    ("[1,2]", r"must be a JSON object .* got '\[1,2\]'"),
    (json.dumps({"cluster": {"worker": ["a:1"]}, "task": "worker"}),
     "'task' must be an object"),
    (json.dumps({"cluster": {"worker": ["a:1"]},
                 "task": {"type": "worker", "index": "a"}}),
     "task index must be an integer, got 'a'"),
    (json.dumps({"cluster": {"worker": ["a:1"]},
                 "task": {"type": "worker", "index": True}}),
     "task index must be an integer, got True"),
    (json.dumps({"cluster": {"worker": ["a:1", "b"]}}),
     r"job 'worker' must be a non-empty list of 'host:port' addresses, "
     r"got \['a:1', 'b'\]"),
    (json.dumps({"cluster": {"worker": "a:1"}}), "got 'a:1'"),
    (json.dumps({"cluster": {"worker": []}}), r"got \[\]"),
])
def test_bad_tf_config(raw, message):
    with pytest.raises(ValueError, match=message):
        _validate(raw)


def test_good_tf_config():
    config = {"cluster": {"worker": ["a:1", "[::1]:2"]},
              "task": {"type": "worker", "index": 1}}
    assert _validate(config) == config
    assert cluster.validate_tf_config({}) == {}
    assert cluster.validate_tf_config({"TF_CONFIG": " "}) == {}
    assert cluster.worker_count(config) == 2
    assert cluster.worker_count({}) == 0


@pytest.mark.parametrize("tf_config,chief", [
    ({}, True),
    ({"cluster": {"worker": ["a:1", "b:1"]},
      "task": {"type": "worker", "index": 0}}, True),
    ({"cluster": {"worker": ["a:1", "b:1"]},
      "task": {"type": "worker", "index": 1}}, False),
    ({"cluster": {"chief": ["c:1"], "worker": ["a:1"]},
      "task": {"type": "worker", "index": 0}}, False),
    ({"cluster": {"chief": ["c:1"], "worker": ["a:1"]},
      "task": {"type": "chief", "index": 0}}, True),
])
def test_is_chief_task(tf_config, chief):
    assert cluster.is_chief_task(tf_config) is chief


def test_for_hosts():
    assert cluster.for_hosts(["a:1", "b:2", "c:3"], 2) == {
        "cluster": {"worker": ["a:1", "b:2", "c:3"]},
        "task": {"type": "worker", "index": 2}}


@pytest.mark.parametrize("hosts,index,message", [
    ([], 0, r"got \[\]"), (["a"], 0, r"addresses, got \['a'\]"),
    (["a:1"], 1, "index 1 is out of range for 1 'worker' tasks")])
def test_for_hosts_refuses_bad_input(hosts, index, message):
    with pytest.raises(ValueError, match=message):
        cluster.for_hosts(hosts, index)


def test_for_slurm():
    config = cluster.for_slurm(
        {"SLURM_JOB_NODELIST": "n[8-10]", "SLURM_NODEID": "1"}, 2222)
    assert config["cluster"]["worker"] == ["n8:2222", "n9:2222", "n10:2222"]
    assert config["task"]["index"] == 1
    with pytest.raises(ValueError, match="SLURM_NODEID is not set"):
        cluster.for_slurm({"SLURM_JOB_NODELIST": "n1"}, 1)
    with pytest.raises(ValueError, match=r"descending range '5-3'"):
        cluster.for_slurm(
            {"SLURM_JOB_NODELIST": "n[5-3]", "SLURM_NODEID": "0"}, 1)


def _run_tool(*args, **env):
    return subprocess.run([sys.executable, SCRIPT, *args],
                          capture_output=True, text=True, check=False,
                          env=dict(os.environ, **env))


def test_command_line_slurm_with_several_bracket_groups():
    result = _run_tool("--slurm", "--port=7000",
                       SLURM_JOB_NODELIST="rack[1-2]-node[01-02]",
                       SLURM_NODEID="2")
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    assert config["cluster"]["worker"] == [
        "rack1-node01:7000", "rack1-node02:7000", "rack2-node01:7000",
        "rack2-node02:7000"]
    assert config["task"] == {"type": "worker", "index": 2}
    bad = _run_tool("--slurm", SLURM_JOB_NODELIST="rack[1-2",
                    SLURM_NODEID="0")
    assert bad.returncode != 0
    assert "unbalanced or nested brackets in 'rack[1-2'" in bad.stderr


def test_command_line():
    result = _run_tool("--hosts=h1:5,h2:6", "--index=0")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["cluster"]["worker"] == ["h1:5", "h2:6"]
    bad = _run_tool("--hosts=h1:5", "--index=4")
    assert bad.returncode != 0 and "index 4 is out of range" in bad.stderr
    missing = _run_tool("--index=0")
    assert missing.returncode != 0
    assert "--hosts is required (or use --slurm)" in missing.stderr
