"""The hook-point API every probe uses: list, read and edit sites by name."""

import pytest
import torch

import achilles

import toy_plugin


@pytest.fixture
def model():
    torch.manual_seed(0)
    return toy_plugin.TwoLayerToy()


def test_hook_points_are_named_by_their_place_in_the_model(model):
    assert model.hook_points() == ["layers.0.mix.out", "layers.0.out", "layers.1.mix.out", "layers.1.out",
                                   "resid.0", "resid.1"]
    assert model.hook_points("*.mix.out") == ["layers.0.mix.out", "layers.1.mix.out"]


def test_read_caches_values_without_changing_output(model):
    tokens = torch.randint(0, 8, (3, 5))
    plain = model(tokens)
    with model.hooks(read=["resid.*"]) as cache:
        hooked = model(tokens)
    assert torch.equal(plain, hooked)
    assert set(cache) == {"resid.0", "resid.1"} and cache["resid.1"].shape == (3, 5, 8)
    # the final residual through the unembedding is the output
    assert torch.allclose(model.unembed(cache["resid.1"]), plain)


def test_edit_replaces_a_value_and_hooks_are_removed_afterwards(model):
    tokens = torch.randint(0, 8, (2, 5))
    plain = model(tokens)

    def zero_last_position(value, site):
        value = value.clone()
        value[:, -1] = 0
        return value

    with model.hooks(edit={"layers.1.mix.out": zero_last_position}, read=["layers.1.mix.out"]) as cache:
        edited = model(tokens)
    assert torch.equal(cache["layers.1.mix.out"][:, -1], torch.zeros(2, 8))  # a read sees the edit
    assert torch.equal(edited[:, :-1], plain[:, :-1]) and not torch.equal(edited[:, -1], plain[:, -1])
    assert torch.equal(model(tokens), plain)
    assert not any(m.active for m in model.modules() if isinstance(m, achilles.HookPoint))


def test_unknown_site_lists_close_matches(model):
    with pytest.raises(achilles.UnknownNameError, match="layers.0.mix.out"):
        with model.hooks(read=["layers.0.mix.outt"]):
            pass


def test_gamma_init_draws_weights_with_std_fan_in_to_minus_gamma():
    torch.manual_seed(0)
    layer = torch.nn.Linear(256, 512)
    achilles.init_gamma_(layer, gamma=1.0)
    assert abs(layer.weight.std().item() - 1 / 256) < 0.05 / 256
    achilles.init_gamma_(layer, gamma=0.5)
    assert abs(layer.weight.std().item() - 1 / 16) < 0.05 / 16
