import lightning as L
import pytest


@pytest.fixture(autouse=True)
def _seed():
    L.seed_everything(0, verbose=False)
