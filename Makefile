# Quick start: `make run` (install + serve config/example.yaml) and `make test` (install + all tests).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= config/example.yaml
# the modules mypyc compiles (setup.py's COMPILED list, read from there): a change rebuilds them
COMPILED := $(shell sed -n '/^COMPILED = \[/,/^\]/p' setup.py | grep -o '"[^"]*\.py"' | tr -d '"')

FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= parser digest lane framing sdp config rater

.PHONY: run test bench fuzz lint install dev clean check-config

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml setup.py registrar/_lane_c.c sipcore/_digest_c.c sipcore/_message_c.c sipcore/_ownership_c.c rating/_rater_c.c server/_group_commit_c.c $(COMPILED) | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.dev-installed: pyproject.toml setup.py registrar/_lane_c.c sipcore/_digest_c.c sipcore/_message_c.c sipcore/_ownership_c.c rating/_rater_c.c server/_group_commit_c.c $(COMPILED) | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $(VENV)/.installed $@

install: $(VENV)/.installed

dev: $(VENV)/.dev-installed

run: install
	$(BIN)/sipcore serve --config $(CONFIG) --demo-tls

check-config: install
	$(BIN)/sipcore check-config $(CONFIG)

# The whole suite on what the install built, then the tests of the SIP stack, the call controller, the
# registrar's lanes, the location store, the routing code and the call journal on their Python sources
# alone (the reference of the mypyc build and the C readers).
test: dev
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)
	SIPCORE_PURE_PYTHON=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/sipcore tests/calls \
		$(addprefix tests/registrar/test_,lane.py lane_c.py invite_lane.py answer_cache_cap.py guard.py) \
		$(addprefix tests/registrar/test_location_,rules.py memory.py replicated.py contract.py) \
		tests/routing $(addprefix tests/server/test_,call_journal.py call_journal_crash.py)

bench: dev
	$(BIN)/python -m benchmarks.run_all

# Coverage-guided fuzzing (atheris/libFuzzer), FUZZ_SECONDS per target; corpus and crashes in .fuzz/;
# then the four C readers built with AddressSanitizer/UBSan, on that corpus and mutations of it.
fuzz: dev
	@for t in $(FUZZ_TARGETS); do $(BIN)/python -m fuzz.run $$t --seconds $(FUZZ_SECONDS) || exit 1; done
	@if PYTHON=$(BIN)/python fuzz/build_asan.sh .fuzz/asan; then \
	  for t in lane digest rater parser; do \
	    LD_PRELOAD=$$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 \
	      $(BIN)/python -m fuzz.run $$t --asan .fuzz/asan --seconds $(FUZZ_SECONDS) || exit 1; \
	  done; \
	else echo "fuzz: no AddressSanitizer runtime for gcc here, sanitized C runs skipped"; fi

lint: dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .fuzz
