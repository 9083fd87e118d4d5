# hwnas: `make demo` and `make test` do all set-up on a fresh machine (venv, pinned deps, system
# packages, data). Other targets: lint, test-fast, test-slow, serve, dashboard, clean.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: setup demo test test-fast test-slow lint serve dashboard clean bench-compression \
	bench-probes bench-search bench-search-table bench-fidelity bench-service bench-faults bench-scale \
	bench-networks \
	compose-images compose-test tune-profile

$(STAMP): pyproject.toml  ## one line per step; the full output goes to build/setup.log
	@bash scripts/setup.sh $(PYTHON) $(VENV)
	@rm -f $(VENV)/.installed-* && touch $@

setup: $(STAMP)

demo: setup  ## the main job end to end on the embedded default (SQLite + local Ray + x86 CPU)
	$(PY) examples/demo.py

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test: setup lint  ## lint + every test (fast and slow); PostgreSQL tests on a private server
	bash scripts/with-postgres.sh $(PY) -m pytest -q -p no:cacheprovider

test-fast: setup
	bash scripts/with-postgres.sh $(PY) -m pytest -q -p no:cacheprovider -m "not slow"

test-slow: setup
	$(PY) -m pytest -q -p no:cacheprovider -m slow

bench-compression: setup  ## every compression technique alone and combined on Fashion-MNIST: accuracy, packed size, tuned latency per structure (~16 min on 2 cores)
	$(PY) bench/compression.py --out bench/results

bench-probes: setup  ## tuned TVM probe vs ONNX Runtime / PyTorch on 20 cnn_joint candidates (~45 min)
	$(PY) bench/probes.py --out bench/results

bench-search: setup  ## samplers on the surrogate of the committed table (5 seeds) + real confirmation runs (<= 80 min)
	$(PY) bench/search.py --out bench/results

TABLE ?= digits
ROWS ?= 300
bench-search-table: setup  ## grow the table of real evaluations behind bench-search (resumable; TABLE=digits|fashion ROWS=n)
	$(VENV)/bin/hwnas tune-profile x86/local --space $(if $(filter fashion,$(TABLE)),cnn_joint,small_joint) \
		--dataset $(if $(filter fashion,$(TABLE)),fashion_mnist_small,digits) --candidates 60 --budget-s 480
	$(PY) bench/search_table.py --table $(TABLE) --rows $(ROWS)

bench-networks: setup  ## your models compressed: a ResNet-18 layout and a MobileNetV2 trained, uploaded over the API, 16-trial jobs, fronts re-scored outside hwnas (<= 120 min)
	$(PY) bench/networks.py --out bench/results

bench-service: setup  ## 100 concurrent submits + 1000 concurrent reads, 4 schedulers, SQLite and PostgreSQL (~5 min)
	bash scripts/with-postgres.sh $(PY) bench/load.py --out bench/results

bench-faults: setup  ## every fault kind of tests/faults on a tiny real job -> bench/results/faults.json (~12 min)
	bash scripts/with-postgres.sh $(PY) bench/faults.py --out bench/results

bench-scale: setup  ## trials/h on 1-8 loopback Ray nodes, the real 1->2 node step, scheduler cost at 64/256 in flight (~15 min)
	$(PY) bench/scale.py --out bench/results

compose-images: setup  ## the images from Debian packages (debootstrap base, cached), needs root + dockerd
	bash scripts/build-images.sh

compose-test: setup  ## build, bring up the docker-compose stack (2 Ray workers), run a 4-trial job, pull and score its best model, tear down
	$(PY) -m pytest -q -p no:cacheprovider -s -rs tests/deploy/test_compose_stack.py

bench-fidelity: setup  ## demo + Fashion-MNIST jobs, every Pareto bundle re-measured without hwnas (~60 min)
	$(PY) bench/fidelity.py --out bench/results

PROFILE ?= x86/local
SPACE ?= cnn_joint
DATASET ?= fashion_mnist
tune-profile: setup  ## pre-tune a profile's MetaSchedule database for a space (resumable)
	$(VENV)/bin/hwnas tune-profile $(PROFILE) --space $(SPACE) --dataset $(DATASET)

serve: setup
	$(VENV)/bin/hwnas serve

dashboard: setup
	$(VENV)/bin/hwnas dashboard

clean:
	rm -rf hwnas-data hwnas-out .pytest_cache .mypy_cache .ruff_cache
