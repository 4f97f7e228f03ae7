"""The probes behind tests/e2e/test_ccxt_method_table.py: one per ccxt method, each calling it for
real against keyplane and checking the answer (probing.py has what they share)."""
