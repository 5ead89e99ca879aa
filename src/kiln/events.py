"""The events of a training run: the moments at which callbacks are called.

What lives here: the `Event` enum, whose docstring is the training loop. What does not: the
loop itself (`trainer.py`) and the dispatch of events to callbacks (`callbacks/dispatch.py`).
"""

from __future__ import annotations

from enum import Enum


class Event(str, Enum):
    """A moment of `Trainer.fit` at which every callback's `on_<event>(trainer)` is called.

    The value of each member is the name of the callback method it calls. The loop, with each
    event where it fires (counters in `trainer.state` count completed work)::

        fit(train, val, epochs):
            FIT_START
            [pre_val: VALIDATION_START ... VALIDATION_END]   # state.epoch unchanged, no epoch
            while state.epoch < state.max_epochs and not state.should_stop:   # or a budget
                TRAIN_EPOCH_START                      # model.train(); state.logs is empty
                for state.batch_idx, batch in enumerate(train):   # kiln.repeat: n passes
                    TRAIN_BATCH_START                  # state.batch is on the device
                    output = trainer.training_step(batch, batch_idx)  # forward, loss (autocast)
                    check the loss; (loss / group size).backward()    # scaled with fp16
                    if the batch ends its group of `accumulate` batches:
                        unscale the gradients (fp16)
                        BEFORE_OPTIMIZER_STEP          # true gradients, ready to inspect
                        clip; optimizer.step(); optimizer.zero_grad()
                        state.step += 1
                    TRAIN_BATCH_END                    # state.output holds the batch's output
                    if the group ended and (state.should_stop or a budget is spent): break
                [a signal stopped it: save the unfinished epoch, skip validation]
                state.epoch += 1
                TRAIN_EPOCH_END                        # state.logs: loss, metrics, lr
                if val is not None (every val_every epochs, the last, a stopping one):
                    VALIDATION_START                   # model.eval(), inference mode
                    for state.batch_idx, batch in enumerate(val):     # kiln.repeat: n passes
                        output = trainer.validation_step(batch, batch_idx)
                        VALIDATION_BATCH_END
                    VALIDATION_END                     # state.logs gains val_loss, val_<metric>
                history.append(state.logs)
                EPOCH_END                              # the epoch's logs are complete
            on any exception: EXCEPTION (state.error is set), then the exception is re-raised
            FIT_END                                    # always, also after an exception

    Callbacks that add values to the epoch's logs do it at `TRAIN_EPOCH_END` or
    `VALIDATION_END`; callbacks that act on the complete logs (early stopping, checkpoints,
    loggers, the progress summary) listen to `EPOCH_END`.

    Example:
        >>> from kiln import Event
        >>> Event.EPOCH_END.value
        'on_epoch_end'
    """

    FIT_START = "on_fit_start"
    TRAIN_EPOCH_START = "on_train_epoch_start"
    TRAIN_BATCH_START = "on_train_batch_start"
    BEFORE_OPTIMIZER_STEP = "on_before_optimizer_step"
    TRAIN_BATCH_END = "on_train_batch_end"
    TRAIN_EPOCH_END = "on_train_epoch_end"
    VALIDATION_START = "on_validation_start"
    VALIDATION_BATCH_END = "on_validation_batch_end"
    VALIDATION_END = "on_validation_end"
    EPOCH_END = "on_epoch_end"
    EXCEPTION = "on_exception"
    FIT_END = "on_fit_end"


#: Events fired once per batch: the loop guards them so that an unused one costs nothing.
BATCH_EVENTS = frozenset(
    {
        Event.TRAIN_BATCH_START,
        Event.BEFORE_OPTIMIZER_STEP,
        Event.TRAIN_BATCH_END,
        Event.VALIDATION_BATCH_END,
    }
)
