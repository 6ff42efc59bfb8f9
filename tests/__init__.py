"""Python tests of reciprocity (see conftest.py). A package, so that test files in
different folders may share a base name and can `from tests.conftest import ...`."""
