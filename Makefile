# rustyflag-agent: every target does its own setup (apt packages, the venv).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# Gateways run the distro's Python (a PGO/LTO build): build the venv from it where present.
BASE_PYTHON ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || command -v python3)
APT_PACKAGES := nftables iptables iproute2 conntrack libnetfilter-queue-dev libnfnetlink-dev \
	python3-venv python3-dev build-essential curl iputils-ping tcpdump systemd procps

.PHONY: deps venv test lint typecheck demo bench clean

deps: .deps-stamp
.deps-stamp:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
		if [ -n "$$missing" ]; then \
			echo "installing:$$missing"; \
			apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null; \
		fi; \
	fi
	@touch $@

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml | .deps-stamp
	test -x $(PY) || $(BASE_PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

test: venv
	$(PY) -m ruff check agent tests bench
	$(PY) -m mypy
	$(PY) -m pytest -q

lint: venv
	$(PY) -m ruff check agent tests bench
	$(PY) -m mypy

# Builds the namespace lab, runs the agent on the embedded Rusty Flag campaign in the
# gateway namespace, sends benign and malicious traffic, prints the decisions, tears down.
demo: venv
	$(VENV)/bin/rustyflag-agent check --config configs/agent.toml
	$(PY) -m tests.lab.demo

bench: venv
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) .deps-stamp .mypy_cache .ruff_cache .pytest_cache
