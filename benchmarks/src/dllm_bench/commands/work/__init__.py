"""The work of each ``dllmq`` sub-command, imported only when the command runs (after its arguments and
paths are checked), so ``dllmq --help`` and argument errors never wait for torch, numba or matplotlib."""
