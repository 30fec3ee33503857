# Two commands do everything on a fresh machine with Python 3.11 and pip:
#   make run    create .venv if missing, install, start the app on the bundled default model
#   make test   create .venv if missing, install, run the whole suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PORT   ?= 8501
ADDRESS ?= 127.0.0.1

.PHONY: run test bench gpu-check install clean-venv browser postgres orthanc

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e . || $(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

run: install
	$(VENV)/bin/streamlit run app.py --server.address $(ADDRESS) --server.port $(PORT) \
		--server.headless true --browser.gatherUsageStats false --server.fileWatcherType none \
		--server.maxUploadSize $${CXR_MAX_UPLOAD_MB:-50}

browser:
	@bash scripts/ensure_chromium.sh

# PostgreSQL server binaries for the feedback-store tests (each test session starts its own
# throwaway server on 127.0.0.1 and stops it; scripts/pg_throwaway.sh)
postgres:
	@bash scripts/pg_throwaway.sh ensure

# Orthanc (with its DICOMweb plugin) and dicom3tools for the DICOM node tests (each test session
# starts its own throwaway Orthanc on 127.0.0.1 and stops it; scripts/orthanc_throwaway.sh)
orthanc:
	@bash scripts/orthanc_throwaway.sh ensure

test: install browser postgres orthanc
	$(PY) scripts/run_tests.py

bench: install
	$(PY) -m benchmarks.run_all

gpu-check: install
	$(PY) -m benchmarks.gpu_check

clean-venv:
	rm -rf $(VENV)
