"""What `Trainer` calls for every batch: the path of one batch, file by file.

A training batch, in the order `Trainer._train_epoch` meets it:

1. `position.py`: where the pass starts (the first batch, or where a mid-epoch checkpoint left
   off), and the data order to resume.
2. `passes.py`: the batches of the pass (repeated passes, a dataset's `switch_state()`).
3. `data/batch.py` (beside this folder): the batch moved to the device.
4. `precision.py`: autocast for `bf16`/`fp16`.
5. `step_methods.py`: what the step method computes (`StepOutput`); the supervised computation
   when the model defines none.
6. `first_batch.py`: on the first batch of a pass, what goes wrong, explained.
7. `optimizer_step.py`: backward, gradient accumulation, unscaling, clipping, the optimizer
   update and the non-finite loss policy (`OptimizerStepper`).
8. `tracking.py`: the pass's sums of losses and metrics, on the device.
9. `signals.py`: SIGINT/SIGTERM ask the loop to stop after the current step.

Nothing here imports callbacks, persistence, tools or applications.
"""
