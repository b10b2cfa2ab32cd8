# The two commands of the README: `make book` and `make test`. Each creates .venv when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# the shipped reference run (results/reference/); PROFILE=quick recomputes a small profile from nothing (README: "Which profile, when")
PROFILE ?= reference
RESULTS ?= results/$(basename $(notdir $(PROFILE)))
STAMP := $(VENV)/.installed

.PHONY: venv test book figures clean benchmark archive

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

test: venv
	$(BIN)/python -m pytest -q --durations=30

# The main job: run what is missing of the profile, execute every figure notebook, build the book. The shipped
# reference is read as it is (`status` lists it and computes nothing; `fragility run --profile reference` computes
# what its data card lists as not yet computed).
book: venv
	$(BIN)/fragility $(if $(filter reference,$(PROFILE)),status,run) --profile $(PROFILE) --results $(RESULTS)
	$(BIN)/python -m fragility.book execute --results $(RESULTS) --profile $(PROFILE)
	$(BIN)/python -m fragility.launch --output _build/_config.yml   # launch buttons only if FRAGILITY_REPOSITORY_URL is set
	$(BIN)/jupyter-book build . --keep-going --config _build/_config.yml
	@echo "Book: _build/html/index.html"

benchmark: venv
	$(BIN)/python benchmarks/engine_vs_oracle.py
	$(BIN)/python benchmarks/quick_profile.py
	$(BIN)/python benchmarks/open_results.py

# A downloadable zip of the results (responses, ε, studies, weights, data card; never checkpoints)
archive: venv
	$(BIN)/fragility archive --results $(RESULTS) --out $(notdir $(RESULTS)).zip

clean:
	rm -rf _build book/_executed
