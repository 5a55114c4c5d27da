"""Price catalog and cost model, checked against dollars and kWh worked out by hand."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from costsched.cost.prices import (
    compute_cost_usd,
    default_catalog_path,
    energy_kwh,
    load_catalog,
    storage_cost_usd,
)
from costsched.errors import ConfigError

CATALOG = load_catalog()


@pytest.mark.parametrize(
    ("name", "num_gpus"),
    [("local-cpu", 2), ("g4dn.12xlarge", 4), ("g5.xlarge", 1), ("g5.12xlarge", 4),
     ("p4d.24xlarge", 8), ("p5.48xlarge", 8)],
)
def test_catalog_has_the_required_instance_types(name, num_gpus):
    instance = CATALOG.instance(name)
    assert instance.num_gpus_per_node == num_gpus
    assert 0 < instance.spot_usd_per_hour <= instance.on_demand_usd_per_hour


@pytest.mark.parametrize(
    ("name", "spot", "kwargs", "expected_usd"),
    [
        # 3.912 $/h * 2/4 GPUs * 0.5 h
        ("g4dn.12xlarge", False, {"num_gpus": 2, "seconds": 1800}, 0.978),
        # spot 1.5648 $/h * 2/4 * 0.5 h
        ("g4dn.12xlarge", True, {"num_gpus": 2, "seconds": 1800}, 0.3912),
        # the whole node through its 4 GPUs equals 1 node: 3.912 * 1 h
        ("g4dn.12xlarge", False, {"num_gpus": 4, "seconds": 3600}, 3.912),
        ("g4dn.12xlarge", False, {"num_nodes": 1, "seconds": 3600}, 3.912),
        # 55.04 $/h * 2 nodes * 0.25 h
        ("p5.48xlarge", False, {"num_nodes": 2, "seconds": 900}, 27.52),
        # 22.016 $/h * 1/8 GPU * 2 h
        ("p5.48xlarge", True, {"num_gpus": 1, "seconds": 7200}, 5.504),
        ("g5.xlarge", True, {"num_nodes": 1, "seconds": 3600}, 0.4024),
        # local-cpu: 0.0893 $/h split over 2 slots, 1 slot for 1 h
        ("local-cpu", False, {"num_gpus": 1, "seconds": 3600}, 0.04465),
        ("p4d.24xlarge", False, {"num_gpus": 8, "seconds": 0}, 0.0),
    ],
)
def test_compute_cost_usd_matches_hand_computed_dollars(name, spot, kwargs, expected_usd):
    cost = compute_cost_usd(CATALOG.instance(name), spot=spot, **kwargs)
    assert cost == pytest.approx(expected_usd, rel=1e-12, abs=1e-15)


def test_spot_is_cheaper_than_on_demand_for_every_type():
    for name, instance in CATALOG.instance_types.items():
        on_demand = compute_cost_usd(instance, spot=False, seconds=3600, num_nodes=1)
        spot = compute_cost_usd(instance, spot=True, seconds=3600, num_nodes=1)
        assert spot < on_demand, name
        assert on_demand == pytest.approx(instance.on_demand_usd_per_hour)
        assert instance.gpu_usd_per_hour(spot=False) * instance.num_gpus_per_node == (
            pytest.approx(on_demand)
        )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"seconds": 10},  # neither
        {"seconds": 10, "num_nodes": 1, "num_gpus": 1},  # both
        {"seconds": -1, "num_gpus": 1},
        {"seconds": 10, "num_gpus": -1},
        {"seconds": 10, "num_nodes": -0.5},
    ],
)
def test_compute_cost_usd_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        compute_cost_usd(CATALOG.instance("g5.xlarge"), spot=False, **kwargs)


@pytest.mark.parametrize(
    ("name", "num_gpus", "utilisation", "seconds", "expected_kwh"),
    [
        # (70 W * 0.5 * 2 + 250 W * 2/4) * 1 h = 195 Wh
        ("g4dn.12xlarge", 2, 0.5, 3600, 0.195),
        # (400 W * 1.0 * 8 + 600 W) * 0.5 h = 1900 Wh
        ("p4d.24xlarge", 8, 1.0, 1800, 1.9),
        # idle accelerators still pay their share of the host: 60 W * 1 h
        ("g5.xlarge", 1, 0.0, 3600, 0.06),
        # local-cpu, one slot at 0.8: (20 * 0.8 + 10 / 2) W * 2 h = 42 Wh
        ("local-cpu", 1, 0.8, 7200, 0.042),
    ],
)
def test_energy_kwh_matches_hand_computed_values(name, num_gpus, utilisation, seconds,
                                                 expected_kwh):
    kwh = energy_kwh(CATALOG.instance(name), num_gpus=num_gpus, utilisation=utilisation,
                     seconds=seconds)
    assert kwh == pytest.approx(expected_kwh, rel=1e-12)


@pytest.mark.parametrize(
    "kwargs",
    [{"num_gpus": 1, "utilisation": 1.5, "seconds": 1},
     {"num_gpus": 1, "utilisation": -0.1, "seconds": 1},
     {"num_gpus": -1, "utilisation": 0.5, "seconds": 1},
     {"num_gpus": 1, "utilisation": 0.5, "seconds": -1}],
)
def test_energy_kwh_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        energy_kwh(CATALOG.instance("g5.xlarge"), **kwargs)


@pytest.mark.parametrize(
    ("num_bytes", "seconds", "expected_usd"),
    [
        (2**30, 30 * 86400, 0.023),  # 1 GiB for a 30-day month
        (10 * 2**30, 3 * 86400, 0.023),  # 10 GiB for a tenth of a month
        (0, 86400, 0.0),
    ],
)
def test_storage_cost_usd(num_bytes, seconds, expected_usd):
    assert storage_cost_usd(CATALOG, num_bytes=num_bytes, seconds=seconds) == (
        pytest.approx(expected_usd, rel=1e-12, abs=1e-15)
    )


@pytest.mark.parametrize("kwargs", [{"num_bytes": -1, "seconds": 1},
                                    {"num_bytes": 1, "seconds": -1}])
def test_storage_cost_usd_rejects_negatives(kwargs):
    with pytest.raises(ValueError):
        storage_cost_usd(CATALOG, **kwargs)


def test_unknown_instance_type_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"unknown instance type `p4d.24xlarg`; "
                                          r"did you mean `p4d.24xlarge`\?"):
        CATALOG.instance("p4d.24xlarg")


# -- catalog files -------------------------------------------------------------------------

def write_catalog(tmp_path: Path, edit) -> Path:
    data = yaml.safe_load(default_catalog_path().read_text())
    data = copy.deepcopy(data)
    edit(data)
    path = tmp_path / "prices.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_catalog_round_trips_through_a_file(tmp_path):
    catalog = load_catalog(write_catalog(tmp_path, lambda d: None))
    assert catalog == CATALOG


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda d: d["instance_types"]["g5.xlarge"].update(spot_usd_per_hur=0.1),
         r"unknown key `instance_types.g5.xlarge.spot_usd_per_hur`; "
         r"did you mean `spot_usd_per_hour`\?"),
        (lambda d: d.update(regoin="x"), r"unknown key `regoin`; did you mean `region`\?"),
        (lambda d: d["instance_types"]["g5.xlarge"].update(spot_usd_per_hour=2.0),
         r"`spot_usd_per_hour` is above `on_demand_usd_per_hour`"),
        (lambda d: d["instance_types"]["g5.xlarge"].update(num_gpus_per_node=0),
         r"`num_gpus_per_node` must be positive"),
        (lambda d: d["instance_types"]["g5.xlarge"].update(on_demand_usd_per_hour="cheap"),
         r"must be a number"),
        (lambda d: d.update(instance_types={}), r"`instance_types` is empty"),
        (lambda d: d["instance_types"]["g5.xlarge"].pop("gpu_power_w"),
         r"missing required key `instance_types.g5.xlarge.gpu_power_w`"),
    ],
)
def test_invalid_catalog_is_a_config_error_naming_the_file(tmp_path, edit, expected):
    path = write_catalog(tmp_path, edit)
    with pytest.raises(ConfigError, match=expected) as info:
        load_catalog(path)
    assert str(info.value).startswith(str(path))
