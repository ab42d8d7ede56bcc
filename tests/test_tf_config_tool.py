"""tools/tf_config.py: TF_CONFIG for a host list or a SLURM job."""

import json
import subprocess
import sys

import pytest

from tf_lbsgd import distribute
from tool_loader import REPO_ROOT
from tool_loader import load_tool

tool = load_tool("tf_config")


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


def test_slurm_nodelist():
    assert tool.expand_slurm_nodelist("gpu[01-03,07],login1") == [
        "gpu01", "gpu02", "gpu03", "gpu07", "login1"]
    config = tool.slurm_tf_config(
        {"SLURM_JOB_NODELIST": "n[8-10]", "SLURM_NODEID": "1"}, 2222)
    assert config["cluster"]["worker"] == ["n8:2222", "n9:2222", "n10:2222"]
    assert config["task"]["index"] == 1
    with pytest.raises(ValueError, match="SLURM_NODEID is not set"):
        tool.slurm_tf_config({"SLURM_JOB_NODELIST": "n1"}, 1)


def test_command_line():
    script = str(REPO_ROOT / "tools" / "tf_config.py")
    out = subprocess.run([sys.executable, script, "--hosts=h1:5,h2:6",
                          "--index=0"], capture_output=True, text=True,
                         check=True).stdout
    assert json.loads(out)["cluster"]["worker"] == ["h1:5", "h2:6"]
    bad = subprocess.run([sys.executable, script, "--hosts=h1:5",
                          "--index=4"], capture_output=True, text=True,
                         check=False)
    assert bad.returncode != 0 and "index 4 is out of range" in bad.stderr
