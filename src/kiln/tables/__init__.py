"""The `kiln fit data.csv` application: a table in, a trained model and its run directory out.

- `read.py`: reading CSV and Parquet files into columns.
- `kinds.py`: each column's kind (numeric, category, text), inferred.
- `spec.py`: the encoding of features and target (`TableSpec`).
- `model.py`: the network and the loss for a table.
- `metrics.py`: the metrics of a target.
- `train.py`: the whole run, from file to saved model.
"""
