"""The same-network static VQ of the core claim's fair ablation (issue 13, cause 3): PVQAE's
own network with the routing fixed to one level: identical architecture, one level used,
trained by the same budget-learning code, codes per image counted as for PVQAE."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pvqae.checkpoint import save_checkpoint
from pvqae.model import PVQAE, ModelConfig
from pvqae.settings import NOT_PARAMS, BudgetConfig, Params
from pvqae.stages.evaluate import codes_per_image
from pvqae.strict_config import ConfigError

CFG = ModelConfig(image_size=32, ch=8, ch_mult=(1, 1, 2), embed_dim=8, num_codes=16, router_hidden=16, groups=8)
G = 8


pytestmark = pytest.mark.usefixtures("isolated_training")


def _pair(level: int) -> tuple[PVQAE, PVQAE]:
    torch.manual_seed(0)
    pv = PVQAE(CFG)
    torch.manual_seed(0)
    st = PVQAE(CFG.replace(fixed_level=level))
    return pv, st


@pytest.mark.parametrize("level", [0, 1, 2])
def test_identical_architecture_one_level(level):
    pv, st = _pair(level)
    assert [(n, p.shape) for n, p in pv.named_parameters()] == [(n, p.shape) for n, p in st.named_parameters()]
    assert all(torch.equal(a, b) for a, b in zip(pv.state_dict().values(), st.state_dict().values()))
    x = torch.rand(2, 3, 32, 32)
    for mode in ("dynamic", "random"):
        out = st(x, mode=mode, generator=torch.Generator().manual_seed(1))
        assert out.routing.levels.shape == (2, G, G) and bool((out.routing.levels == level).all()), mode
        assert out.used_fraction[level] == 1.0
    # it is PVQAE decoding with that level everywhere: the same output as PVQAE given the constant map
    const = torch.full((2, G, G), level, dtype=torch.long)
    st.eval(), pv.eval()
    assert torch.allclose(st(x).recon, pv(x, mode="given", level_map=const).recon)
    # a caller's map still wins (the explorer's forced levels)
    other = torch.full((2, G, G), (level + 1) % 3, dtype=torch.long)
    assert bool((st(x, mode="given", level_map=other).routing.levels == (level + 1) % 3).all())


def test_codes_per_image_counts_like_pvqae():
    _, st = _pair(1)
    levels = torch.full((3, G, G), 1)
    assert codes_per_image(st, levels.numpy()) == 4 * G * G
    mixed = np.zeros((1, G, G), int)
    mixed[0, 0, 0] = 2
    assert codes_per_image(st, mixed) == G * G - 1 + 16
    static_vq = PVQAE(CFG.replace(levels=(1,)))
    assert codes_per_image(static_vq, None) == (2 * G) ** 2


def test_fixed_level_is_checked_and_not_a_params_key():
    with pytest.raises(ValueError, match="fixed_level must be 0, 1 or 2 on a three-level PVQAE"):
        PVQAE(CFG.replace(fixed_level=3))
    with pytest.raises(ValueError, match="fixed_level"):
        PVQAE(CFG.replace(levels=(1,), fixed_level=1))
    with pytest.raises(ConfigError, match="fixed_level"):
        Params.from_dict({"model": {"fixed_level": 1}})
    assert BudgetConfig().fixed_level is None
    assert [BudgetConfig(routing=r).fixed_level for r in ("coarse", "median", "fine")] == [0, 1, 2]
    with pytest.raises(ConfigError, match="budget.routing must be one of dynamic, coarse, median, fine"):
        BudgetConfig(routing="static")
    with pytest.raises(ConfigError, match="ablations.static_levels"):
        Params.from_dict({"ablations": {"static_levels": ["fine", "finest"]}})


def test_budget_learning_with_fixed_routing_trains_the_same_network(tmp_path):
    """``budget.routing: median`` starts from the pre-trained PVQAE, trains it with the routing
    fixed, and saves a model that routes every patch to the median level when loaded."""
    from pvqae.stages.budget import learn_budget

    torch.manual_seed(0)
    pre = PVQAE(CFG)
    path = tmp_path / "pvqae_pretrain.pt"
    save_checkpoint(path, {"model": pre.state_dict(), "config": pre.cfg.to_dict(), "train": {}, "steps": 0, "seed": 0})
    g = torch.Generator().manual_seed(0)
    train = {"image": torch.rand(8, 3, 32, 32, generator=g), "entropy": torch.rand(8, G, G, generator=g)}
    val = {"image": torch.rand(2, 3, 32, 32, generator=g)}
    cfg = Params.from_dict({"data": {"image_size": 32, "patch_size": 4},
                            "model": {k: v for k, v in CFG.to_dict().items()
                                      if k not in NOT_PARAMS},
                            "pretrain": {"batch_size": 4, "disc_ch": 8, "log_every": 1},
                            "budget": {"steps": 3, "routing": "median"}})
    model, summary = learn_budget(cfg, train, val, path, tmp_path / "out", 0, progress=False)
    assert summary["steps"] == 3 and model.cfg.fixed_level == 1
    loaded = PVQAE.from_checkpoint(tmp_path / "out" / "pvqae.pt")
    assert loaded.cfg.fixed_level == 1
    assert bool((loaded(train["image"][:2]).routing.levels == 1).all())
    changed = [n for n, p in loaded.named_parameters() if not torch.equal(p, dict(pre.named_parameters())[n])]
    assert changed and not any(n.startswith("router.") for n in changed)  # the router is not what learns


def test_fair_ablation_verdict_uses_the_main_setting_not_the_best_of_the_sweep():
    from pvqae.report import claim_same_network

    def r(auroc, std, codes):
        return {"mean": {"image_auroc": auroc}, "std": {"image_auroc": std}, "n_seeds": 3, "codes_per_image": codes}

    statics = {"coarse": r(0.70, 0.001, 64), "median": r(0.69, 0.006, 256), "fine": r(0.68, 0.006, 1024)}
    sweep = {0.75: r(0.64, 0.03, 170), 1.25: r(0.73, 0.02, 121), 1.75: r(0.79, 0.01, 96)}
    text = claim_same_network(statics, sweep, 1.25)
    assert "lambda_max 1.25 (121 codes / image)" in text and "static median (256)" in text
    assert "+4.0 image AUROC points; holds in this run" in text and "beyond one std" in text
    assert "spans 64.0-79.0" in text and "reported, not selected" in text
    few = {"fine": r(0.68, 0.006, 64)}  # every static level cheaper than PVQAE: no fair comparison
    assert "no comparison at equal or fewer codes" in claim_same_network(few, sweep, 1.25)
    assert "no verdict" in claim_same_network(statics, sweep, 1.0)  # never a sweep point picked in its place
