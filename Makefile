# rustyflag-agent: every target does its own setup (apt packages, the venv).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# Gateways run the distro's Python (a PGO/LTO build): build the venv from it where present.
BASE_PYTHON ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || command -v python3)
APT_PACKAGES := nftables iptables iproute2 conntrack libnetfilter-queue-dev libnfnetlink-dev \
	python3-venv python3-dev build-essential curl iputils-ping tcpdump systemd procps openssl make

.PHONY: deps venv test lint typecheck demo bench clean install uninstall

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
# setup.py and _lane.c: the fast lane is compiled at install (editable: in place).
$(VENV)/.installed: pyproject.toml setup.py agent/core/_lane.c | .deps-stamp
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
# (The demo copies the campaign into a root-owned temp dir: it also runs from a checkout
# owned by another user, which `run` and `check` would refuse as intel others can write.)
demo: venv
	$(PY) -m tests.lab.demo

bench: venv
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) .deps-stamp .mypy_cache .ruff_cache .pytest_cache

# ---- install / uninstall (root). The unit and config name PREFIX and CONFDIR, so a
# test can install into a temp dir: make install PREFIX=/tmp/x/opt CONFDIR=/tmp/x/etc
# UNITDIR=/tmp/x/units SYSTEMCTL=true. DESTDIR stages (the venv then names the staged path).
PREFIX ?= /opt/rustyflag-agent
CONFDIR ?= /etc/rustyflag-agent
UNITDIR ?= /etc/systemd/system
SYSTEMCTL ?= systemctl
UNIT := rustyflag-agent.service
INSTALL_PIP_OPTS ?= -q
# Type=notify-reload needs systemd >= 253; older ones get Type=notify + ExecReload=kill -HUP.
SYSTEMD_VERSION ?= $(shell systemctl --version 2>/dev/null | awk 'NR==1 {print $$2 + 0}')
MANIFEST := $(DESTDIR)$(PREFIX)/installed-config.sha256

install: .deps-stamp
	@test "$$(id -u)" = 0 || { echo "make install: run as root (the files it installs steer the firewall)"; exit 1; }
	install -d -m 0755 $(DESTDIR)$(PREFIX) $(DESTDIR)$(CONFDIR) $(DESTDIR)$(CONFDIR)/campaigns $(DESTDIR)$(UNITDIR)
	test -x $(DESTDIR)$(PREFIX)/venv/bin/python || $(BASE_PYTHON) -m venv $(DESTDIR)$(PREFIX)/venv
	$(DESTDIR)$(PREFIX)/venv/bin/pip install $(INSTALL_PIP_OPTS) --upgrade .
	install -m 0644 README.md $(DESTDIR)$(PREFIX)/README.md
	@# Config and campaign: never overwrite an operator's edits; record what we installed.
	@set -e; : > $(MANIFEST).new; \
	if [ ! -e $(DESTDIR)$(CONFDIR)/agent.toml ]; then \
		sed -e 's|^sources = \["embedded"\]|sources = ["$(CONFDIR)/campaigns"]|' configs/agent.toml \
			> $(DESTDIR)$(CONFDIR)/agent.toml; \
		chmod 0644 $(DESTDIR)$(CONFDIR)/agent.toml; \
		sha256sum $(DESTDIR)$(CONFDIR)/agent.toml >> $(MANIFEST).new; \
	else echo "kept existing $(DESTDIR)$(CONFDIR)/agent.toml"; fi; \
	for f in configs/campaigns/*; do \
		dest=$(DESTDIR)$(CONFDIR)/campaigns/$$(basename $$f); \
		if [ ! -e $$dest ]; then install -m 0644 $$f $$dest; sha256sum $$dest >> $(MANIFEST).new; \
		else echo "kept existing $$dest"; fi; \
	done; \
	if [ -e $(MANIFEST) ]; then cat $(MANIFEST) >> $(MANIFEST).new; fi; \
	sort -u -k2 $(MANIFEST).new > $(MANIFEST); rm -f $(MANIFEST).new
	chown -R root:root $(DESTDIR)$(CONFDIR)
	sed -e 's|/opt/rustyflag-agent|$(PREFIX)|g' -e 's|/etc/rustyflag-agent|$(CONFDIR)|g' \
		$(if $(shell test "$(SYSTEMD_VERSION)" -ge 253 2>/dev/null || echo old),\
		-e 's|^Type=notify-reload$$|Type=notify\nExecReload=/bin/kill -HUP $$MAINPID|') \
		systemd/$(UNIT) > $(DESTDIR)$(UNITDIR)/$(UNIT)
	chmod 0644 $(DESTDIR)$(UNITDIR)/$(UNIT)
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then $(SYSTEMCTL) daemon-reload; fi
	@echo "installed; check with: $(PREFIX)/venv/bin/rustyflag-agent check --config $(CONFDIR)/agent.toml"
	@echo "then: systemctl enable --now $(UNIT)"

uninstall:
	@test "$$(id -u)" = 0 || { echo "make uninstall: run as root"; exit 1; }
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then \
		$(SYSTEMCTL) disable --now $(UNIT) || true; fi
	rm -f $(DESTDIR)$(UNITDIR)/$(UNIT)
	@# Remove only config files still as installed; edited ones stay (and are named).
	@if [ -e $(MANIFEST) ]; then \
		while read -r sum path; do \
			if [ -e "$$path" ] && echo "$$sum  $$path" | sha256sum --quiet -c - >/dev/null 2>&1; then \
				rm -f "$$path"; \
			elif [ -e "$$path" ]; then echo "kept edited $$path"; fi; \
		done < $(MANIFEST); fi
	-rmdir $(DESTDIR)$(CONFDIR)/campaigns $(DESTDIR)$(CONFDIR) 2>/dev/null
	rm -rf $(DESTDIR)$(PREFIX)
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then $(SYSTEMCTL) daemon-reload; fi
