"""Our own rewrites of Covalent 0.240.0's functional tests (tests/functional_tests of
https://github.com/AgnostiqHQ/covalent, Apache-2.0): the same workflows, checked as they check
them, written for scripts/compat.py, which runs them on Covalent's local executor and on oci."""
