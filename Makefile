# Two entry points for a fresh machine: `make train` and `make test`.
PYTHON ?= python3
VENV := .venv
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install data train test clean

$(STAMP): setup.py
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

test: install
	$(VENV)/bin/python -m pytest -q tests

clean:
	rm -rf $(VENV) runs
