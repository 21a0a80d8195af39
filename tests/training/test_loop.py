"""The loop's early stopping: stops on a plateau, and ends with the best or the last weights as asked."""

from __future__ import annotations

import pytest
import torch

from dxlab.training.loop import EarlyStopping, Trainer


def _trainer(scores: list[float], stopper: EarlyStopping, epochs: int) -> Trainer:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    x, y = torch.randn(16, 3), torch.randint(0, 2, (16,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    seen = iter(scores)
    return Trainer(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.5), scheduler=None,
                   train_loader=loader, validate=lambda m: {"val_auroc": next(seen)},
                   loss_fn=torch.nn.CrossEntropyLoss(), device=torch.device("cpu"), epochs=epochs, callbacks=[stopper])


class _Weights(EarlyStopping):
    """Records the weights after each epoch."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.after: list[torch.Tensor] = []

    def on_epoch_end(self, trainer, metrics) -> None:
        self.after.append(trainer.model.weight.detach().clone())
        super().on_epoch_end(trainer, metrics)


@pytest.mark.parametrize("restore, ends_with", [(True, 1), (False, 3)])
def test_the_run_ends_with_the_best_or_the_last_weights(restore, ends_with):
    stopper = _Weights(patience=5, stop=False, restore=restore)
    trainer = _trainer([0.6, 0.9, 0.7, 0.8], stopper, epochs=4)
    state = trainer.fit()
    assert state.epoch == 4 and state.best_epoch == 2 and state.best_metric == 0.9
    assert torch.equal(trainer.model.weight, stopper.after[ends_with])


def test_early_stopping_stops_after_patience_epochs_without_improvement():
    trainer = _trainer([0.7, 0.8, 0.75, 0.79, 0.6, 0.99], EarlyStopping(patience=3), epochs=6)
    state = trainer.fit()
    assert state.stop and state.epoch == 5 and state.best_epoch == 2
