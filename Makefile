# SinkRouter: the two commands of the README.
#   make run    set up everything, fetch the default model, run the main job
#   make test   set up everything, build, run every test (CUDA tests skip without a GPU)
# Other targets: deps, build, model, data, eval, bench, clean.

BUILD_DIR ?= build
BUILD_TYPE ?= Release
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_FLAGS ?=

# Debian packages the build and tests need (installed only when missing).
DEB_PACKAGES := build-essential cmake pkg-config python3 python3-pip unzip libpcre2-dev \
  libgtest-dev libgmock-dev libbenchmark-dev nlohmann-json3-dev libcli11-dev libfmt-dev \
  libopenblas-dev libssl-dev

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all run test deps build model data eval bench clean

all: build

deps:
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

build: deps
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(CMAKE_FLAGS)
	cmake --build $(BUILD_DIR) -j $(JOBS)

test: build data model
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) --no-tests=error

# The main job: a long real document (the first 6,000 tokens of The Adventures of Sherlock
# Holmes) and a question about it, answered under dense attention and under sinkrouter.
MODEL := models/SmolLM2-135M-Instruct.Q4_1.gguf
run: build data model
	$(BUILD_DIR)/apps/sinkrouter compare -m $(MODEL) -f data/texts/sherlock.txt --doc-tokens 6000 -n 40 \
	  -q "Who is the woman Sherlock Holmes always calls 'the woman'? Give her name."

model:
	bash tools/fetch_model.sh

data:
	python3 tools/fetch_data.py

# The committed example suite on the default model: eval/results/example/report.md + plots.
eval: build data model
	python3 -m pip install --quiet --disable-pip-version-check matplotlib || echo "matplotlib unavailable: no plots"
	$(BUILD_DIR)/apps/sinkrouter eval --suite eval/suites/example.json

bench: build
	mkdir -p bench/results
	$(BUILD_DIR)/bench/bench_cpu_attention --benchmark_out=bench/results/cpu_attention.json \
	  --benchmark_out_format=json --benchmark_repetitions=3 --benchmark_report_aggregates_only=true

clean:
	rm -rf $(BUILD_DIR)
