"""A local ledger of trades and transfers, and realised gains by FIFO, LIFO, HIFO or average cost."""
