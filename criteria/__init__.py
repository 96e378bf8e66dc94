"""Training criteria by name: `select(opt, n_classes)` builds the one named by `opt.loss`,
wrapped in the self-distillation of SPEC section 1 when `--PSD` is on."""
import inspect

from criteria import margin, miners, multisimilarity  # noqa: F401  (fill the registries)
from criteria.registry import CRITERIA, MINERS
from criteria.self_distillation import SelfDistilledCriterion, distillation_loss

# The paper's scripts name the self-distilled variant `<loss>_obd_sd`; the flags decide what it does.
PAPER_SUFFIX = "_obd_sd"

__all__ = ["CRITERIA", "MINERS", "SelfDistilledCriterion", "distillation_loss",
           "names", "base_name", "select", "check_miner"]


def names():
    """Every accepted --loss value."""
    return sorted(CRITERIA) + sorted(name + PAPER_SUFFIX for name in CRITERIA)


def base_name(loss):
    return loss[: -len(PAPER_SUFFIX)] if loss.endswith(PAPER_SUFFIX) else loss


def check_miner(loss, batch_mining):
    """The miner a criterion will use, or ValueError when it cannot use the one asked for."""
    name = base_name(loss)
    supported = getattr(CRITERIA[name], "miners", ())
    if batch_mining is None:
        return getattr(CRITERIA[name], "default_miner", None)
    if not supported:
        raise ValueError(f"{name} mines its own pairs and takes no --batch_mining; drop the flag")
    if batch_mining not in supported:
        raise ValueError(f"{name} works with --batch_mining {' or '.join(supported)}, not {batch_mining}")
    return batch_mining


def select(opt, n_classes=None):
    name = base_name(opt.loss)
    criterion_class = CRITERIA[name]
    kwargs = {param: getattr(opt, f"loss_{name}_{param}") for param in criterion_class.hyperparameters}
    miner_name = check_miner(opt.loss, opt.batch_mining)
    if miner_name is not None:
        miner_class = MINERS[miner_name]
        kwargs["miner"] = miner_class(**{param: getattr(opt, f"miner_{miner_name}_{param}")
                                         for param in miner_class.hyperparameters})
    if "n_classes" in inspect.signature(criterion_class).parameters:
        if n_classes is None:
            raise ValueError(f"{name} learns per-class parameters: pass n_classes")
        kwargs["n_classes"] = n_classes
    distillation = None
    if opt.PSD:
        distillation = {"kd_tau": opt.kd_tau, "kd_lambda": opt.kd_lambda, "n_epochs": opt.n_epochs,
                        "diffusion_w": opt.diffusion_w if opt.OBDP else 0.0,
                        "diffusion_tau": opt.diffusion_tau}
    return SelfDistilledCriterion(criterion_class(**kwargs), distillation)
