"""Values the test files share. tests/ is on sys.path (pytest's prepend import mode puts the directory of
tests/conftest.py there), so a test imports them as `from helpers import ...`."""

# --set overrides that leave a recipe without its eval suite: for tests about the stream and the trainer
# (the suite, with its vLLM engines per model, is covered end to end by tests/e2e).
NO_EVAL = ("eval.in_distribution=[]", "eval.related=[]", "eval.difficulty_shift=[]", "eval.prompt_styles={}")
