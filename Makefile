# Branch Console: `make run` serves the demo on SQLite; `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 5000
export FLASK_APP := wsgi.py

.PHONY: run test setup setup-dev system-deps translations clean-demo

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@ $(VENV)/.runtime

setup: $(VENV)/.runtime

setup-dev: $(VENV)/.dev

system-deps:
	bash scripts/system-deps.sh

run: setup
	$(BIN)/flask db upgrade
	$(BIN)/flask console seed-demo --if-empty
	@echo
	@echo "Branch Console is starting: open http://localhost:$(PORT)/ (security keys need that name, not an IP address)"
	@echo "Sign in with an employee number and password above, then the 6-digit code from an"
	@echo "authenticator app holding that TOTP secret (or: $(BIN)/flask console demo-code T1001)."
	@echo "SMS to customers (codes, temporary passwords) arrive in instance/sms-outbox.log."
	@$(BIN)/flask console deliver-notifications --loop --interval 2 >instance/sms-worker.log 2>&1 & worker=$$!; \
	  trap 'kill $$worker 2>/dev/null' EXIT INT TERM; \
	  $(BIN)/flask run --host $(HOST) --port $(PORT)

test: setup-dev system-deps
	bash scripts/test.sh

translations: setup-dev
	$(BIN)/pybabel -q extract -F babel.cfg -k _l -k lazy_gettext -k N_ -o /tmp/branch-console.pot console templates
	$(BIN)/pybabel -q update -i /tmp/branch-console.pot -d console/translations -l zh_Hans_CN
	$(BIN)/pybabel compile -d console/translations

clean-demo:
	rm -f instance/console.db instance/console.db-wal instance/console.db-shm instance/demo-credentials.txt
