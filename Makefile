# Two entry points for a fresh machine: `make train` and `make test`.
PYTHON ?= python3
VENV := .venv
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install data train test bazel bazel-config bazel-test clean

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
	$(PIP) install -q -e '.[test]' 2>&1 | grep -v "^WARNING: Location" || true
	$(VENV)/bin/python -c "import tf_lbsgd, tensorflow, keras, orbit, gin"
	touch $(STAMP)

install: $(STAMP) data

data:
	@[ -f $(FASHION_MNIST) ] || ($(SUDO) apt-get update -q && \
	  $(SUDO) apt-get install -y -q dataset-fashion-mnist)

train: install
	$(VENV)/bin/tf-lbsgd --gin_file=experiments/fashion_mnist_default \
	  --model_dir=runs/default

# Two pytest processes, a test file each at a time (--dist loadfile keeps a
# file's module fixtures in one process): the suite's subprocesses, imports
# and tracing leave a core idle about half the time in one process.
TEST_WORKERS ?= 2

test: install
	$(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile \
	  --durations=10 tests

# `bazel test //...` offline, with the venv's interpreter and the stand-ins of
# third_party/bazel/ for the repositories Bazel 4.2 would download. The
# absolute paths go to .bazelrc.local (imported by .bazelrc), so that plain
# `bazel test //:test_schedules` works afterwards.
BAZEL_STANDINS := rules_cc rules_java remote_coverage_tools

bazel:
	@command -v bazel >/dev/null || ($(SUDO) apt-get update -q && \
	  $(SUDO) apt-get install -y -q bazel-bootstrap)

bazel-config:
	@{ echo "# Written by make bazel-test: absolute paths of this checkout."; \
	  echo "build --python_path=$(abspath $(VENV))/bin/python"; \
	  for cmd in build query fetch; do for name in $(BAZEL_STANDINS); do \
	    echo "$$cmd --override_repository=$$name=$(abspath third_party/bazel)/$$name"; \
	  done; done; } > .bazelrc.local

bazel-test: install bazel bazel-config
	bazel test //...

clean:
	-command -v bazel >/dev/null && bazel clean --expunge
	rm -rf $(VENV) runs .bazelrc.local
