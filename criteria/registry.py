"""Name -> class tables for criteria and batch miners, filled by decorators.

Each registered class declares `hyperparameters` ({name: default}); parameters.py turns them
into `--loss_<criterion>_<name>` and `--miner_<miner>_<name>` flags.
"""
CRITERIA = {}
MINERS = {}


def register_criterion(name):
    def add(cls):
        CRITERIA[name] = cls
        return cls
    return add


def register_miner(name):
    def add(cls):
        MINERS[name] = cls
        return cls
    return add
