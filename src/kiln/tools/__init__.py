"""Tools that look at a model or a run: the LR finder, the summary, plots of the history.

- `lr_finder.py`: the learning-rate range test (`kiln.lr_find`, `trainer.lr_find`).
- `summary.py` and `mult_adds.py`: a table of layers, shapes, parameters and multiply-adds.
- `plotting.py`: figures of a `History`.
"""
