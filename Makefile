# Two commands for a newcomer: `make course` (set up, then run the course) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROFILE ?= miniclip
# pytest-xdist workers for `make test` and `make answer-key` (tests/conftest.py keeps the
# notebooks on one worker). Each process computes on one thread: with two workers whose thread
# pools both spread over the two cores, 00's training cell took 231 s instead of about 40 s.
TEST_WORKERS ?= 2
ONE_THREAD := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

.PHONY: setup data course test answer-key test-nbgrader test-hostile lab features release clean-cache help

help:
	@echo "make course   set up .venv, install the data, run every notebook, print the results table"
	@echo "make test     set up, then run the unit tests and every notebook under nbval"
	@echo "make answer-key  run every correct variant and planted mistake against the checks (slow)"
	@echo "make test-nbgrader  grade 02/05 with real nbgrader (own venv .venv-nbgrader); no stderr in graded cells"
	@echo "make test-hostile   grade the hostile set (cheats and honest alternatives, issue 16) in the sandbox (slow)"
	@echo "make lab      open JupyterLab on notebooks/"
	@echo "make release  write student copies of the notebooks to release/"
	@echo "PROFILE=clip make course   the original CIFAR-100/CIFAR-10 setup (needs internet and a GPU)"

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

# Fashion-MNIST for the offline profile: Debian's package, installed when missing and possible.
data: setup
	@if $(BIN)/python -m ood_utils check-data >/dev/null 2>&1; then \
		$(BIN)/python -m ood_utils check-data; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "Installing Debian's dataset-fashion-mnist ..."; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist >/dev/null; }; \
		$(BIN)/python -m ood_utils check-data; \
	elif command -v apt-get >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
		echo "Installing Debian's dataset-fashion-mnist with sudo ..."; \
		sudo apt-get install -y -q dataset-fashion-mnist >/dev/null || \
		{ sudo apt-get update -q >/dev/null && sudo apt-get install -y -q dataset-fashion-mnist >/dev/null; }; \
		$(BIN)/python -m ood_utils check-data; \
	else \
		$(BIN)/python -m ood_utils check-data; exit 1; \
	fi
	@# bubblewrap: the grader's sandbox (`python -m ood_utils grade`; tests/test_sandbox.py)
	@if ! command -v bwrap >/dev/null 2>&1; then \
		if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
			echo "Installing Debian's bubblewrap (the grader's sandbox) ..."; \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q bubblewrap >/dev/null 2>&1 || \
			{ apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q bubblewrap >/dev/null; }; \
		elif command -v apt-get >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
			echo "Installing Debian's bubblewrap (the grader's sandbox) with sudo ..."; \
			sudo apt-get install -y -q bubblewrap >/dev/null || \
			{ sudo apt-get update -q >/dev/null && sudo apt-get install -y -q bubblewrap >/dev/null; }; \
		else \
			echo "note: bubblewrap (bwrap) is missing; the grader needs it (apt-get install bubblewrap)"; \
		fi; \
	fi

features: data
	$(BIN)/python -m ood_utils extract --profile $(PROFILE)

course: data
	$(BIN)/python -m ood_utils course --profile $(PROFILE)

test: data
	OOD_PROFILE=miniclip MPLBACKEND=Agg $(ONE_THREAD) $(BIN)/python -m pytest --nbval-lax --nbval-current-env \
		-n $(TEST_WORKERS) --dist loadscope --durations=12 --ignore=tests/answer_key --ignore=tests/grading tests notebooks

# The answer key judged both ways: correct variants a student may write pass, planted mistakes fail.
answer-key: data
	OOD_PROFILE=miniclip MPLBACKEND=Agg $(ONE_THREAD) $(BIN)/python -m pytest -q -n $(TEST_WORKERS) \
		--dist loadscope tests/answer_key

# nbgrader 0.9.6 in its own venv (.venv-nbgrader, reused), a kernelspec for .venv, and
# generate_assignment / validate / autograde on 02 and 05 (OOD_NBGRADER_NOTEBOOKS=...):
# tests/nbgrader/nbgrader_suite.py; beside it, every notebook's graded cells checked for
# stderr: tests/nbgrader/stderr_suite.py
test-nbgrader: data
	OOD_PROFILE=miniclip MPLBACKEND=Agg $(ONE_THREAD) $(BIN)/python -m pytest -n $(TEST_WORKERS) \
		--dist loadscope tests/nbgrader/nbgrader_suite.py tests/nbgrader/stderr_suite.py

# The hostile set of issue 16 (tests/grading/hostile/): cheating submissions in five families
# and honest alternatives, graded with `python -m ood_utils grade --jobs 2` in one run beside
# the instructor's solutions; every cheat must earn 0 on the parts it did not compute, every
# honest part full points. Needs the sandbox (bubblewrap, root). About 15 minutes on 2 cores.
test-hostile: data
	OOD_PROFILE=miniclip MPLBACKEND=Agg $(ONE_THREAD) $(BIN)/python -m pytest -q -rA -s \
		tests/grading/test_hostile.py tests/grading/test_grader_cheats.py tests/grading/test_verdicts.py

lab: data
	$(BIN)/jupyter lab notebooks/

release: setup
	$(BIN)/python -m ood_utils release --out release

clean-cache:
	rm -rf features/*/ results/
