"""tools/tf_config.py: TF_CONFIG for a host list or a SLURM job."""

import json
import os
import subprocess
import sys

import pytest

from tf_lbsgd import distribute
from tool_loader import REPO_ROOT
from tool_loader import load_tool

tool = load_tool("tf_config")
SCRIPT = str(REPO_ROOT / "tools" / "tf_config.py")


def test_tf_config_for_hosts_passes_our_own_validation():
    config = tool.tf_config(["a:1", "b:2", "c:3"], 2)
    assert config == {"cluster": {"worker": ["a:1", "b:2", "c:3"]},
                      "task": {"type": "worker", "index": 2}}
    assert distribute.validate_tf_config({"TF_CONFIG": json.dumps(config)})


@pytest.mark.parametrize("hosts,index,message", [
    ([], 0, "no hosts"), (["a"], 0, "'a' is not of the form name:port"),
    (["a:1"], 1, "index 1 is out of range for 1 hosts")])
def test_bad_input(hosts, index, message):
    with pytest.raises(ValueError, match=message):
        tool.tf_config(hosts, index)


def test_slurm_tf_config():
    config = tool.slurm_tf_config(
        {"SLURM_JOB_NODELIST": "n[8-10]", "SLURM_NODEID": "1"}, 2222)
    assert config["cluster"]["worker"] == ["n8:2222", "n9:2222", "n10:2222"]
    assert config["task"]["index"] == 1
    with pytest.raises(ValueError, match="SLURM_NODEID is not set"):
        tool.slurm_tf_config({"SLURM_JOB_NODELIST": "n1"}, 1)
    with pytest.raises(ValueError, match=r"descending range '5-3'"):
        tool.slurm_tf_config(
            {"SLURM_JOB_NODELIST": "n[5-3]", "SLURM_NODEID": "0"}, 1)


def _run_slurm_tool(nodelist, node_id):
    env = dict(os.environ, SLURM_JOB_NODELIST=nodelist,
               SLURM_NODEID=str(node_id))
    return subprocess.run([sys.executable, SCRIPT, "--slurm", "--port=7000"],
                          capture_output=True, text=True, check=False,
                          env=env)


def test_command_line_slurm_with_several_bracket_groups():
    result = _run_slurm_tool("rack[1-2]-node[01-02]", 2)
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    assert config["cluster"]["worker"] == [
        "rack1-node01:7000", "rack1-node02:7000", "rack2-node01:7000",
        "rack2-node02:7000"]
    assert config["task"] == {"type": "worker", "index": 2}
    bad = _run_slurm_tool("rack[1-2", 0)
    assert bad.returncode != 0
    assert "unbalanced or nested brackets in 'rack[1-2'" in bad.stderr


def test_command_line():
    out = subprocess.run([sys.executable, SCRIPT, "--hosts=h1:5,h2:6",
                          "--index=0"], capture_output=True, text=True,
                         check=True).stdout
    assert json.loads(out)["cluster"]["worker"] == ["h1:5", "h2:6"]
    bad = subprocess.run([sys.executable, SCRIPT, "--hosts=h1:5",
                          "--index=4"], capture_output=True, text=True,
                         check=False)
    assert bad.returncode != 0 and "index 4 is out of range" in bad.stderr
