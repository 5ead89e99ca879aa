"""A trainer as one file, and back: `trainer.save`, `kiln.load`, `kiln.build`, `trainer.export`.

- `trainer_file.py`: the `.kiln` file (`save_trainer`, `load`).
- `recipe.py`: how to rebuild a model from the class and arguments recorded at save time.
- `components.py`: the loss, optimizer and metrics described by name, and rebuilt.
- `options_record.py`: the trainer's loop options as recorded in the file.
- `export.py`: the weights alone (`.safetensors`, `.pt`).
"""
