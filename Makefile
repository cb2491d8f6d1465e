# Two commands: `make run` (set up and run the app with the demo shop group)
# and `make test` (set up and run the whole suite). Everything else is a step.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 5000
HOST ?= 127.0.0.1
SANDBOX_PORT ?= 8900
export OMS_SANDBOX_URL ?= http://127.0.0.1:$(SANDBOX_PORT)
WEB_WORKERS ?= 2
export FLASK_APP := run.py

.PHONY: run test setup venv translations fonts assets browser services worker scheduler web stop-redis clean

$(BIN)/python:
	@command -v $(PY) >/dev/null 2>&1 || { echo "需要 Python 3.11（$(PY)）"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Reinstall only when requirements.txt changes.
$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	touch $@

venv: $(VENV)/.installed

# Compile our zh catalogue (the .mo is built, never committed).
translations: venv
	$(BIN)/pybabel -q compile -f -d app/translations

# Printing (issue #6) needs a TrueType CJK font (Noto CJK's CFF outlines do not work
# with xhtml2pdf); the print tests decode barcodes with zbar on pages from pdftoppm.
CJK_FONT := /usr/share/fonts/truetype/wqy/wqy-microhei.ttc
APT_PACKAGES := fonts-wqy-microhei libzbar0 poppler-utils
fonts:
	@if [ ! -f $(CJK_FONT) ] || ! ldconfig -p | grep -q libzbar.so.0 || ! command -v pdftoppm >/dev/null; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(APT_PACKAGES) \
	  || { $$SUDO apt-get update -q && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(APT_PACKAGES); }; \
	fi

# The grid (Tabulator) comes from the npm registry and is served by the app itself:
# no CDN. Reinstalled only when package.json / package-lock.json change.
VENDOR := app/static/vendor
$(VENDOR)/.installed: package.json package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "需要 Node.js 的 npm 来安装前端库（Tabulator）"; exit 1; }
	npm ci --no-audit --no-fund --silent
	mkdir -p $(VENDOR)/tabulator
	cp node_modules/tabulator-tables/dist/js/tabulator.min.js \
	   node_modules/tabulator-tables/dist/css/tabulator_bootstrap3.min.css $(VENDOR)/tabulator/
	touch $@

assets: $(VENDOR)/.installed

# Browser tests drive Debian's Chromium through Python Playwright
# (`playwright install` cannot download browsers here).
browser:
	@if ! command -v chromium >/dev/null; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium \
	  || { $$SUDO apt-get update -q && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }; \
	fi

setup: fonts venv translations assets

# The demo shops sync from the local sandbox (platform stand-ins) started here too; the
# worker starts once the sandbox answers (the demo's first parcels are polled at once).
run: setup
	$(BIN)/flask oms init
	@if [ "$$($(BIN)/flask oms order-count 2>/dev/null | tail -n1)" = "0" ]; then $(BIN)/flask oms demo; fi
	@echo "店群订单管理：http://$(HOST):$(PORT)/   平台沙箱：$(OMS_SANDBOX_URL)/"
	@trap 'kill 0' EXIT INT TERM; \
	  $(BIN)/flask oms sandbox --port $(SANDBOX_PORT) & \
	  $(BIN)/python -c 'import socket, sys, time; next((1 for _ in range(150) if not socket.socket().connect_ex(("127.0.0.1", int(sys.argv[1]))) or time.sleep(0.2)), 0)' $(SANDBOX_PORT); \
	  $(BIN)/flask oms worker & \
	  $(BIN)/flask oms scheduler & \
	  $(BIN)/gunicorn --workers $(WEB_WORKERS) --bind $(HOST):$(PORT) --access-logfile - run:app

# PostgreSQL and Redis for the tests that need real servers (started if down).
services:
	@bash .ci/services

test: setup browser services
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

stop-redis:
	-@[ -S instance/redis.sock ] && $(VENV)/bin/python -c "import redis; redis.Redis(unix_socket_path='instance/redis.sock').shutdown(nosave=False)" || true

clean:
	rm -rf $(VENV) .pytest_cache
